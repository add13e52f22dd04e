"""Winoground's metric on hand-made 2x2 matrices (rows = images, columns = captions)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.winoground import Winoground
from harness.metrics import winoground_outcome
from harness.api import Item
from harness.metrics import accuracy_row, bootstrap_ci


@pytest.mark.parametrize(
    "matrix, expected",
    [
        # both captions prefer their image and both images prefer their caption
        ([[0.9, 0.1], [0.2, 0.8]], (True, True, True)),
        # text right (each image's row prefers its caption), image wrong: column 0 prefers image 1
        ([[0.5, 0.4], [0.6, 0.9]], (True, False, False)),
        # image right (each caption's column prefers its image), text wrong: row 0 prefers caption 1
        ([[0.5, 0.6], [0.1, 0.7]], (False, True, False)),
        # a bag of words: the same score everywhere is a tie, and ties are wrong
        ([[0.5, 0.5], [0.5, 0.5]], (False, False, False)),
        # one tie in the text comparison of image 1; the image comparisons are fine
        ([[0.9, 0.1], [0.8, 0.8]], (False, True, False)),
        # one tie in the image comparison of caption 0, text still right
        ([[0.7, 0.1], [0.7, 0.9]], (True, False, False)),
        # everything swapped
        ([[0.1, 0.9], [0.8, 0.2]], (False, False, False)),
    ],
)
def test_outcome_uses_strict_inequalities(matrix, expected):
    o = winoground_outcome(np.array(matrix))
    assert (o["text"], o["image"], o["group"]) == expected


def _item(i: int, tag: str, preds: int) -> Item:
    return Item(id=str(i), images=(f"{i}:a", f"{i}:b"), texts=("x y", "y x"), truth=(0, 1),
                meta={"collapsed_tag": tag, "num_main_preds": preds, "tag": "t", "secondary_tag": ""})


def test_metric_rows_overall_and_per_breakdown_hand_computed():
    right = [[1.0, 0.0], [0.0, 1.0]]        # text, image, group
    text_only = [[0.5, 0.4], [0.6, 0.9]]    # text
    tie = [[0.5, 0.5], [0.5, 0.5]]          # nothing
    items = [_item(0, "Object", 1), _item(1, "Object", 2), _item(2, "Relation", 1), _item(3, "Both", 1)]
    scores = [np.array(m) for m in (right, text_only, tie, right)]
    rows = {(r.subset, r.metric): r for r in Winoground("/nonexistent").metrics(items, scores, seed=0)}

    assert rows[("all", "text")].value == pytest.approx(75.0)
    assert rows[("all", "image")].value == pytest.approx(50.0)
    assert rows[("all", "group")].value == pytest.approx(50.0)
    assert rows[("all", "group")].n == 4
    assert rows[("collapsed_tag=Object", "text")].value == pytest.approx(100.0)
    assert rows[("collapsed_tag=Object", "group")].value == pytest.approx(50.0)
    assert rows[("collapsed_tag=Object", "group")].n == 2
    assert rows[("collapsed_tag=Relation", "text")].value == 0.0
    assert rows[("collapsed_tag=Both", "group")].value == pytest.approx(100.0)
    assert rows[("num_main_preds=1", "image")].value == pytest.approx(200 / 3)
    assert rows[("num_main_preds=1", "image")].n == 3
    assert rows[("num_main_preds=2", "group")].value == 0.0
    assert {s for s, _ in rows} == {"all", "collapsed_tag=Object", "collapsed_tag=Relation", "collapsed_tag=Both",
                                    "num_main_preds=1", "num_main_preds=2"}
    for row in rows.values():
        assert row.ci_low <= row.value <= row.ci_high


def test_bootstrap_interval_is_seeded_and_covers_the_estimate():
    correct = np.array([1] * 30 + [0] * 70, dtype=bool)
    row = accuracy_row("all", "text", correct, seed=3)
    again = accuracy_row("all", "text", correct, seed=3)
    assert row.value == pytest.approx(30.0)
    assert (row.ci_low, row.ci_high) == (again.ci_low, again.ci_high)
    # binomial standard error is about 4.6 points, so the 95% interval spans roughly 21..39
    assert 18 < row.ci_low < 26 and 34 < row.ci_high < 42


def test_bootstrap_of_a_constant_is_that_constant_and_chunking_does_not_change_it():
    low, high = bootstrap_ci(lambda idx: np.ones(len(idx)), n=50_000, seed=0)
    assert (low, high) == (1.0, 1.0)
    x = np.random.default_rng(1).random(5000)
    small_chunks = bootstrap_ci(lambda idx: x[idx].mean(axis=1), n=5000, seed=7, resamples=1000)
    assert small_chunks[0] < x.mean() < small_chunks[1]

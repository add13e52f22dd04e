"""CLEVR (GDBench): its caption-file layout, accuracy per subtask computed by hand under both tie
rules, missing data and malformed records."""

from __future__ import annotations

import json

import numpy as np
import pytest
from benchmark_fixtures.clevr import SUBTASKS, image_name, write_scenes

from benchmarks.clevr import CLEVR
from harness.api import ScorerConfig
from harness.errors import BadRecordError, HarnessError, MissingDataError
from harness.runner import evaluate
from harness.store import ScoreStore
from models.clip import ClipScorer

N_SCENES = 3  # 6 items per subtask


@pytest.fixture()
def root(tmp_path):
    write_scenes(tmp_path, N_SCENES)
    return tmp_path


def test_reads_every_pair_as_one_item_true_caption_first(root):
    bench = CLEVR(root)
    items = bench.items()
    assert len(items) == 7 * 2 * N_SCENES and not bench.skipped
    first = items[0]
    assert first.id == f"pair_binding_size/{image_name(0)}/0" and first.meta["subset"] == "pair_binding_size"
    assert first.texts == ("A small cylinder and a large sphere.", "A large cylinder and a small sphere.")
    assert first.truth == (0,) and first.images == (image_name(0),)
    spatial = [i for i in items if i.meta["subset"] == "spatial"]
    assert spatial[1].texts == ("On the right is a red sphere.", "On the left is a red sphere.")
    image = bench.load_image(first.images[0])  # an RGBA render, decoded as RGB
    assert image.mode == "RGB" and image.size == (48, 32)
    assert [i.id for i in CLEVR(root, "spatial").items()] == [i.id for i in spatial]


def _hand_accuracy(matrices, rule):
    right = 0
    for m in matrices:
        true, false = m[0]
        right += true > false if rule == "strict" else true >= false  # argmax: a tie goes to index 0
    return 100.0 * right / len(matrices)


def test_accuracy_per_subtask_and_overall_by_hand_under_both_tie_rules(root):
    items = CLEVR(root).items()
    # subtask k gets pattern k: right, wrong or tied items, one tie in two subtasks
    patterns = {
        "pair_binding_size": [(0.9, 0.1), (0.2, 0.8), (0.5, 0.5), (0.7, 0.3), (0.6, 0.4), (0.1, 0.9)],
        "spatial": [(0.3, 0.3), (0.3, 0.3), (0.9, 0.2), (0.1, 0.2), (0.4, 0.1), (0.2, 0.25)],
    }
    default = [(0.6, 0.4), (0.4, 0.6), (0.7, 0.2), (0.8, 0.1), (0.3, 0.6), (0.5, 0.45)]
    counters = {s: 0 for s in SUBTASKS}
    scores = []
    for item in items:
        subtask = item.meta["subset"]
        scores.append(np.array([patterns.get(subtask, default)[counters[subtask]]]))
        counters[subtask] += 1
    for rule in ("strict", "official"):
        bench = CLEVR(root, ties=rule)
        rows = {(r.subset, r.metric): r for r in bench.metrics(items, scores, seed=0)}
        assert set(rows) == {(s, "accuracy") for s in SUBTASKS} | {("all", "accuracy")}
        for subtask in SUBTASKS:
            chosen = [s for item, s in zip(items, scores) if item.meta["subset"] == subtask]
            row = rows[(subtask, "accuracy")]
            assert row.value == pytest.approx(_hand_accuracy(chosen, rule)) and row.n == 6
            assert row.details["ties"] == rule and row.details["expected_n"] == 1148
            assert row.ci_low <= row.value <= row.ci_high
        assert rows[("all", "accuracy")].value == pytest.approx(_hand_accuracy(scores, rule))
        assert rows[("all", "accuracy")].n == 42 and rows[("all", "accuracy")].details["tied_items"] == 3
    strict = {r.subset: r.value for r in CLEVR(root).metrics(items, scores, seed=0)}
    lenient = {r.subset: r.value for r in CLEVR(root, ties="official").metrics(items, scores, seed=0)}
    # the tie rules part on the tied items only: 1 of 6 in pair_binding_size, 2 of 6 in spatial
    assert strict["pair_binding_size"] == pytest.approx(50.0) and lenient["pair_binding_size"] == pytest.approx(400 / 6)
    assert strict["spatial"] == pytest.approx(200 / 6) and lenient["spatial"] == pytest.approx(400 / 6)
    assert strict["recognition_color"] == lenient["recognition_color"] == pytest.approx(400 / 6)


def test_rows_from_a_real_run_match_the_hand_count(root, tiny_clip, tmp_path):
    scorer = ClipScorer(ScorerConfig(model=f"local-dir:{tiny_clip.local_dir}", options={"batch_size": 16}))
    result = evaluate(scorer, CLEVR(root, "recognition_shape"), ScoreStore(tmp_path / "s.sqlite"), workers=0,
                      progress=False)
    (row,) = result.rows
    assert (row.subset, row.n) == ("recognition_shape", 6)
    assert row.value == pytest.approx(_hand_accuracy(result.scores, "strict"))


def test_missing_data_says_what_and_where(root, tmp_path):
    with pytest.raises(MissingDataError, match=r"clevr/images not found\. Copy the caption files .*zenodo"):
        CLEVR(tmp_path / "nothing").items()
    (root / "clevr" / "captions" / "spatial.json").unlink()
    with pytest.raises(MissingDataError, match=r"CLEVR spatial: caption file .*spatial.json not found"):
        CLEVR(root, "spatial").items()
    bench = CLEVR(root)
    assert {i.meta["subset"] for i in bench.items()} == set(SUBTASKS) - {"spatial"}
    assert list(bench.skipped) == ["spatial"]
    with pytest.raises(HarnessError, match="ties.*expected one of strict, official"):
        CLEVR(root, ties="lenient")


def test_malformed_records_are_named(root):
    path = root / "clevr" / "captions" / "recognition_color.json"
    data = json.loads(path.read_text())
    data[image_name(1)][1] = ["A red object."]
    path.write_text(json.dumps(data))
    with pytest.raises(BadRecordError, match=rf"recognition_color.json: pair 1 of image '{image_name(1)}' should be"):
        CLEVR(root, "recognition_color").items()
    path.write_text("[]")
    with pytest.raises(BadRecordError, match="should hold a JSON object"):
        CLEVR(root, "recognition_color").items()


def test_describe_data_counts_the_images_present(root, tmp_path):
    (root / "clevr" / "images" / image_name(2)).unlink()
    requirements = CLEVR.describe_data(root)
    images = requirements[-1]
    assert images.found and "2 of the 3 images the caption files name are present" in images.what
    assert all(r.found for r in requirements[:-1]) and len(requirements) == 8
    assert not any(r.found for r in CLEVR.describe_data(tmp_path / "nothing"))

"""Winoground by Diwan et al.'s hardness tags: the shipped tag file, the subsets such as
``winoground:no-tag``, and the ``diwan_tag=...`` rows, checked against a hand computation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.winoground import DIWAN_TAGS_FILE, Winoground, read_diwan_tags
from harness.api import Item
from harness.errors import BadRecordError, MissingDataError
from harness.metrics import grouped_accuracy_rows, winoground_outcome


def _raw_tags() -> dict[str, list[str]]:
    """The shipped file read plainly, without the adapter's reader."""
    return json.loads(DIWAN_TAGS_FILE.read_text())["tags"]


def test_the_shipped_file_names_its_source_and_licence_and_holds_400_items():
    data = json.loads(DIWAN_TAGS_FILE.read_text())
    assert "ajd12342/why-winoground-hard" in data["source"] and data["license"][0] == "MIT License"
    tags = read_diwan_tags(DIWAN_TAGS_FILE)
    assert sorted(tags, key=int) == [str(i) for i in range(400)]
    counts: dict[str, int] = {}
    for item_tags in tags.values():
        for tag in item_tags:
            counts[tag] = counts.get(tag, 0) + 1
    # the counts of new_tag_assignments.json at the commit named in the file
    assert counts == {"NoTag": 172, "ComplexReasoning": 78, "UnusualImage": 56, "UnusualText": 50,
                      "AmbiguouslyCorrect": 46, "VisuallyDifficult": 38, "NonMinimal": 30}
    assert tags["3"] == ("AmbiguouslyCorrect",) and tags["0"] == ("NoTag",)


def test_the_authors_own_file_reads_the_same(tmp_path):
    original = tmp_path / "new_tag_assignments.json"
    original.write_text(json.dumps(_raw_tags()))
    assert read_diwan_tags(original) == read_diwan_tags(DIWAN_TAGS_FILE)


def test_subsets_choose_the_tagged_items_and_keep_their_ids(wino_parquet_root):
    raw = _raw_tags()
    whole = Winoground(wino_parquet_root).items()  # the fixture's ids are 0..23, real Winoground ids
    assert whole[4].meta["diwan_tags"] == ("VisuallyDifficult",)
    no_tag = Winoground(wino_parquet_root, "no-tag").items()
    assert [i.id for i in no_tag] == [i.id for i in whole if raw[i.id] == []]
    hard = Winoground(wino_parquet_root, "visually-difficult").items()
    assert [i.id for i in hard] == [i.id for i in whole if "Visually Difficult" in raw[i.id]] == ["4", "22", "23"]
    assert hard[0].texts == whole[4].texts and hard[0].images == whole[4].images


def test_a_whole_run_reports_tags_absent_from_partial_data(wino_parquet_root):
    bench = Winoground(wino_parquet_root)
    bench.items()
    present = {t for i in range(24) for t in _raw_tags()[str(i)]}
    # ids 0..23 carry neither "Unusual Image" (first at 31) nor "Non Minimal" (first at 72)
    assert present == {"Ambiguously Correct", "Visually Difficult", "Unusual Text", "Complex Reasoning"}
    assert set(bench.skipped) == {"unusual-image", "non-minimal"} and "NonMinimal" in bench.skipped["non-minimal"]
    with pytest.raises(MissingDataError, match="winoground:non-minimal: none of the 24 items .* NonMinimal"):
        Winoground(wino_parquet_root, "non-minimal").items()


def test_a_missing_or_malformed_tag_file_is_named(tmp_path, wino_parquet_root):
    with pytest.raises(MissingDataError, match="absent.json not found.*why-winoground-hard"):
        Winoground(wino_parquet_root, hardness_tags=tmp_path / "absent.json").items()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"0": [], "1": "Visually Difficult"}))
    with pytest.raises(BadRecordError, match="tags of Winoground id '1' should be a list of strings"):
        Winoground(wino_parquet_root, hardness_tags=bad).items()
    bad.write_text("[1, 2]")
    with pytest.raises(BadRecordError, match="should map Winoground ids to lists of tags"):
        read_diwan_tags(bad)


# -- the rows, by hand ----------------------------------------------------------------------------

def _hand(matrix: list[list[float]]) -> dict[str, bool]:
    """Winoground's strict rule written out (rows = images, columns = captions)."""
    (c0i0, c1i0), (c0i1, c1i1) = matrix
    text = c0i0 > c1i0 and c1i1 > c0i1
    image = c0i0 > c0i1 and c1i1 > c1i0
    return {"text": text, "image": image, "group": text and image}


RIGHT = [[0.9, 0.1], [0.2, 0.8]]
TEXT_ONLY = [[0.5, 0.4], [0.6, 0.9]]
# image 1's captions tie: an argmax over captions would pick caption 0 for image 1 (wrong anyway),
# and over images for caption 1 it picks image 1; the strict rule calls the text side wrong
TIE = [[0.7, 0.2], [0.3, 0.3]]
CASES = [  # id, tags (None: an id the tag file does not know), matrix
    ("0", ("NoTag",), RIGHT),
    ("1", ("NoTag",), TIE),
    ("2", ("VisuallyDifficult", "UnusualImage"), TEXT_ONLY),
    ("3", ("UnusualImage",), RIGHT),
    ("4", None, RIGHT),
]


def _items() -> list[Item]:
    return [Item(id=i, images=(f"{i}:0", f"{i}:1"), texts=("x y", "y x"), truth=(0, 1),
                 meta={"collapsed_tag": "Relation", "num_main_preds": 1, "tag": "t", "secondary_tag": "",
                       "diwan_tags": tags}) for i, tags, _ in CASES]


def test_diwan_rows_are_added_and_the_existing_rows_do_not_change(tmp_path):
    items, scores = _items(), [np.array(m) for _, _, m in CASES]
    assert _hand(TIE) == {"text": False, "image": True, "group": False}
    assert winoground_outcome(np.array(TIE)) == _hand(TIE)
    rows = Winoground(tmp_path).metrics(items, scores, seed=0)
    table = {(r.subset, r.metric): r for r in rows}

    # the rows every run had before, unchanged (same values, same order, at the front)
    outcomes = [_hand(m) for _, _, m in CASES]
    before = grouped_accuracy_rows({m: [o[m] for o in outcomes] for m in ("text", "image", "group")},
                                   {"collapsed_tag": ["Relation"] * 5, "num_main_preds": [1] * 5}, seed=0)
    assert rows[:len(before)] == before

    expected = {"NoTag": ["0", "1"], "VisuallyDifficult": ["2"], "UnusualImage": ["2", "3"]}  # "4" is untagged
    for tag, ids in expected.items():
        for metric in ("text", "image", "group"):
            values = [_hand(m)[metric] for i, _, m in CASES if i in ids]
            row = table[(f"diwan_tag={tag}", metric)]
            assert row.value == pytest.approx(100 * np.mean(values)) and row.n == len(ids)
            assert row.details == {"hardness_tags": "Diwan et al. 2022, winoground_diwan_tags.json"}
    assert table[("diwan_tag=NoTag", "text")].value == 50.0  # the tie is wrong
    diwan = [r.subset for r in rows[len(before):]][::3]
    assert diwan == ["diwan_tag=NoTag", "diwan_tag=VisuallyDifficult", "diwan_tag=UnusualImage"]  # in DIWAN_TAGS order


def test_a_subset_run_names_its_rows_by_the_subset(tmp_path):
    items, scores = _items()[:2], [np.array(m) for _, _, m in CASES[:2]]
    rows = {(r.subset, r.metric): r for r in Winoground(tmp_path, "no-tag").metrics(items, scores, seed=0)}
    assert set(s for s, _ in rows) == {"no-tag", "no-tag/collapsed_tag=Relation", "no-tag/num_main_preds=1"}
    assert rows[("no-tag", "text")].value == 50.0 and rows[("no-tag", "image")].value == 100.0
    assert rows[("no-tag", "group")].n == 2

"""What'sUp: the reference layout, per-caption / per-preposition / pair / set accuracies and the
macro rows, computed by hand from plain score matrices under the strict and the reference tie rule."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict

import numpy as np
import pytest
from benchmark_fixtures.whatsup import write_whatsup

from benchmarks.whatsup import SUBSETS, WhatsUp
from harness.errors import BadRecordError, MissingDataError


@pytest.fixture()
def root(tmp_path):
    write_whatsup(tmp_path, groups=2, per_qa=4)
    return tmp_path


def by_subset(items):
    out = defaultdict(list)
    for item in items:
        out[item.meta["subset"]].append(item)
    return out


def test_reads_every_subset_in_the_reference_layout(root):
    bench = WhatsUp(root)
    items = bench.items()
    groups = by_subset(items)
    assert list(groups) == list(SUBSETS) and not bench.skipped
    assert [len(groups[s]) for s in SUBSETS] == [8, 8, 4, 4, 4, 4]
    first = groups["controlled-a"][0]
    assert first.id == "controlled-a/0" and first.images == ("controlled_images/mug_on_table.jpeg",)
    assert first.texts[0] == "A mug on a table" and len(first.texts) == 4 and first.truth == (0,)
    assert [i.meta["preposition"] for i in groups["controlled-a"][:4]] == ["on", "under", "left_of", "right_of"]
    assert [i.meta["preposition"] for i in groups["controlled-b"][:4]] == ["in-front_of", "behind", "left_of",
                                                                           "right_of"]
    assert [i.meta["preposition"] for i in groups["coco-spatial-one"]] == ["left", "right", "top", "bottom"]
    assert [i.meta["preposition"] for i in groups["coco-spatial-two"]] == ["left", "right", "above", "below"]
    assert [i.meta["preposition"] for i in groups["gqa-spatial-two"]] == ["left", "front", "behind", "top"]
    assert groups["coco-spatial-one"][0].images == ("coco:000000000139.jpg",)
    assert groups["gqa-spatial-one"][0].images == ("gqa:2354786.jpg",)
    for item in (first, groups["controlled-b"][-1], groups["coco-spatial-two"][0], groups["gqa-spatial-one"][-1]):
        image = bench.load_image(item.images[0])
        assert image.mode == "RGB" and image.size == (32, 32)
    # one subset alone reads only its file, with the same ids
    assert [i.id for i in WhatsUp(root, "gqa-spatial-two").items()] == [i.id for i in groups["gqa-spatial-two"]]


RIGHT4, WRONG4, TIE4 = [[1.0, 0.0, 0.0, 0.0]], [[0.0, 1.0, 0.0, 0.0]], [[0.5, 0.5, 0.1, 0.1]]
RIGHT2, WRONG2, TIE2 = [[0.9, 0.1]], [[0.1, 0.9]], [[0.3, 0.3]]
# per subset, in item order; controlled sets: group 1 (on, under, left, right), then group 2
PLAN = {
    "controlled-a": [RIGHT4, RIGHT4, RIGHT4, TIE4, RIGHT4, WRONG4, RIGHT4, RIGHT4],
    "controlled-b": [WRONG4, RIGHT4, RIGHT4, RIGHT4, RIGHT4, RIGHT4, RIGHT4, RIGHT4],
    "coco-spatial-one": [RIGHT2, TIE2, WRONG2, RIGHT2],
    "coco-spatial-two": [RIGHT2, RIGHT2, RIGHT2, RIGHT2],
    "gqa-spatial-one": [WRONG2, WRONG2, WRONG2, WRONG2],
    "gqa-spatial-two": [RIGHT2, RIGHT2, WRONG2, TIE2],
}


def planned_scores(items):
    groups = by_subset(items)
    return [np.array(m) for s in SUBSETS for m in PLAN[s][:len(groups[s])]]


def rows_of(root, ties):
    bench = WhatsUp(root, ties=ties)
    items = bench.items()
    rows = bench.metrics(items, planned_scores(items), seed=0)
    for row in rows:
        assert row.ci_low <= row.value <= row.ci_high
    return {(r.subset, r.metric): r for r in rows}


def test_strict_rule_by_hand(root):
    rows = rows_of(root, "strict")
    value = {key: round(row.value, 4) for key, row in rows.items()}
    # controlled-a: right = [1,1,1,0 | 1,0,1,1] (the tie is wrong)
    assert value[("controlled-a", "accuracy")] == 75.0
    assert value[("controlled-a/preposition=on", "accuracy")] == 100.0
    assert value[("controlled-a/preposition=under", "accuracy")] == 50.0
    assert value[("controlled-a/preposition=right_of", "accuracy")] == 50.0
    # pairs: group 1 on/under right, left/right not (tie); group 2 left/right right, on/under not
    assert value[("controlled-a", "pair_accuracy")] == 50.0 and rows[("controlled-a", "pair_accuracy")].n == 4
    assert value[("controlled-a", "set_accuracy")] == 0.0 and rows[("controlled-a", "set_accuracy")].n == 2
    # controlled-b: only group 1's "in front of" is wrong
    assert value[("controlled-b", "accuracy")] == 87.5
    assert value[("controlled-b", "pair_accuracy")] == 75.0
    assert value[("controlled-b", "set_accuracy")] == 50.0
    assert value[("controlled-b/preposition=in-front_of", "accuracy")] == 50.0
    assert value[("controlled", "accuracy")] == 81.25  # (75 + 87.5) / 2
    # two-way subsets
    assert value[("coco-spatial-one", "accuracy")] == 50.0
    assert value[("coco-spatial-one/preposition=right", "accuracy")] == 0.0  # the tie
    assert value[("coco-spatial-two", "accuracy")] == 100.0
    assert value[("coco-spatial", "accuracy")] == 75.0
    assert value[("gqa-spatial-one", "accuracy")] == 0.0
    assert value[("gqa-spatial-two", "accuracy")] == 50.0
    assert value[("gqa-spatial-two/preposition=top", "accuracy")] == 0.0
    assert value[("gqa-spatial", "accuracy")] == 25.0
    assert rows[("gqa-spatial", "accuracy")].details == {"macro_over": ["gqa-spatial-one", "gqa-spatial-two"]}
    assert ("coco-spatial-one", "pair_accuracy") not in rows  # pairs and sets are the controlled sets' only


def test_official_rule_counts_a_tie_with_the_true_caption_as_right(root):
    value = {key: round(row.value, 4) for key, row in rows_of(root, "official").items()}
    assert value[("controlled-a", "accuracy")] == 87.5
    assert value[("controlled-a", "pair_accuracy")] == 75.0
    assert value[("controlled-a", "set_accuracy")] == 50.0
    assert value[("controlled", "accuracy")] == 87.5
    assert value[("coco-spatial-one", "accuracy")] == 75.0
    assert value[("coco-spatial-one/preposition=right", "accuracy")] == 100.0
    assert value[("gqa-spatial-two", "accuracy")] == 75.0


def reference_controlled(records, scores):
    """The reference's evaluate_scores for a controlled set, written out plainly: argmax
    predictions, images keyed by (first object, second object), pairs over N/2, sets over N/4."""
    preds = [int(np.argmax(np.asarray(s)[0])) for s in scores]
    table = defaultdict(dict)
    for record, pred in zip(records, preds):
        name = record["image_path"].split("/")[-1]
        table[(name.split("_")[0], name.split("_")[-1][:-5])][name.split("_")[1]] = pred == 0
    pair = sum(g["left"] and g["right"] for g in table.values())
    pair += sum((g["on"] and g["under"]) if "on" in g else (g["in-front"] and g["behind"]) for g in table.values())
    sets = sum(sum(g.values()) == 4 for g in table.values())
    n = len(records)
    return 100 * np.mean([p == 0 for p in preds]), 100 * pair / (n / 2), 100 * sets / (n / 4)


def test_official_rule_equals_the_reference_formula(root):
    rows = rows_of(root, "official")
    for subset, annotation in (("controlled-a", "controlled_images_dataset.json"),
                               ("controlled-b", "controlled_clevr_dataset.json")):
        records = json.loads((root / "whatsup" / annotation).read_text())
        accuracy, pair, sets = reference_controlled(records, PLAN[subset])
        assert rows[(subset, "accuracy")].value == pytest.approx(accuracy)
        assert rows[(subset, "pair_accuracy")].value == pytest.approx(pair)
        assert rows[(subset, "set_accuracy")].value == pytest.approx(sets)


def test_missing_files_are_named_and_skipped(root, tmp_path_factory):
    (root / "whatsup" / "vg_qa_two_obj.json").unlink()
    shutil.rmtree(root / "whatsup" / "controlled_clevr")
    bench = WhatsUp(root)
    assert {i.meta["subset"] for i in bench.items()} == set(SUBSETS) - {"gqa-spatial-two", "controlled-b"}
    assert "vg_qa_two_obj.json not found" in bench.skipped["gqa-spatial-two"]
    assert "image folder" in bench.skipped["controlled-b"] and "controlled_clevr" in bench.skipped["controlled-b"]
    with pytest.raises(MissingDataError, match="What'sUp gqa-spatial-two: annotation file .*vg_qa_two_obj.json "
                                               "not found.*amitakamath/whatsup_vlms"):
        WhatsUp(root, "gqa-spatial-two").items()
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(MissingDataError, match="(?s)What'sUp data not found.*controlled-a.*gqa-spatial-two"):
        WhatsUp(empty).items()


def test_malformed_records_are_named(root):
    path = root / "whatsup" / "controlled_images_dataset.json"
    records = json.loads(path.read_text())
    del records[1]["image_path"]
    path.write_text(json.dumps(records))
    with pytest.raises(BadRecordError, match="record 1 of .*controlled_images_dataset.json lacks field 'image_path'"):
        WhatsUp(root, "controlled-a").items()
    path = root / "whatsup" / "coco_qa_one_obj.json"
    path.write_text(json.dumps([{"image_id": 139, "caption": "A photo of a dog on the left"}]))
    with pytest.raises(BadRecordError, match=r"record 0 of .*coco_qa_one_obj.json should be \[image_id"):
        WhatsUp(root, "coco-spatial-one").items()


def test_coco_images_fall_back_to_the_shared_coco_folder(root):
    (root / "coco").mkdir()
    shutil.move(root / "whatsup" / "val2017", root / "coco" / "val2017")
    bench = WhatsUp(root, "coco-spatial-two")
    assert bench.load_image(bench.items()[0].images[0]).size == (32, 32)
    missing = WhatsUp(root, "gqa-spatial-one", gqa_images=root / "nowhere")
    with pytest.raises(MissingDataError, match="image folder .*nowhere not found"):
        missing.items()


def test_describe_data_lists_every_file(root, tmp_path_factory):
    found = WhatsUp.describe_data(root)
    assert len(found) == 12 and all(r.found for r in found)
    missing = WhatsUp.describe_data(tmp_path_factory.mktemp("empty"))
    assert not any(r.found for r in missing)
    assert "MIT" in missing[0].how_to_get and "drive.google.com" in missing[0].how_to_get

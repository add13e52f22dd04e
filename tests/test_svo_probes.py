"""SVO-Probes (as GDBench uses it): the official CSV plus a local image folder, items with a missing
image left out and counted, accuracy per negative type computed by hand under both tie rules."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from benchmark_fixtures.svo_probes import COLUMNS, write

from benchmarks.svo_probes import SVOProbes
from harness.api import ScorerConfig
from harness.errors import BadRecordError, HarnessError, MissingDataError
from harness.runner import evaluate
from harness.store import ScoreStore
from models.clip import ClipScorer


@pytest.fixture()
def root(tmp_path):
    write(tmp_path, 6)  # 7 rows: subj, verb, obj twice, then a subj row whose negative image is missing
    return tmp_path


def test_rows_become_items_and_those_missing_an_image_are_left_out(root):
    bench = SVOProbes(root)
    items = bench.items()
    assert [i.id for i in items] == ["subj/0", "verb/1", "obj/2", "subj/3", "verb/4", "obj/5"]
    first = items[0]
    assert first.images == ("10000", "10001") and first.texts == ("A man rides a horse in picture 0.",)
    assert first.meta == {"subset": "subj", "pos_triplet": "man,ride,horse", "neg_triplet": "woman,ride,horse"}
    assert bench.rows_in_file == {"subj": 3, "verb": 2, "obj": 2} and bench.left_out == {"subj": 1}
    assert not bench.skipped and bench.details()["rows_without_exactly_one_flag"] == 0
    image = bench.load_image(first.images[1])
    assert image.mode == "RGB" and image.size == (40, 40)
    assert [i.id for i in SVOProbes(root, "verb").items()] == ["verb/1", "verb/4"]


def test_columns_are_read_by_name_and_the_first_flag_set_decides_the_type(root):
    path = root / "svo" / "svo_probes.csv"
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    rows[1]["subj_neg"] = "True"  # verb and subj both set: GDBench's download.py calls it subj
    with open(path, "w", newline="") as f:  # another column order, and pandas' unnamed index column
        writer = csv.DictWriter(f, fieldnames=["", *reversed(COLUMNS)])
        writer.writeheader()
        writer.writerows({"": str(k), **r} for k, r in enumerate(rows))
    bench = SVOProbes(root)
    assert [i.id for i in bench.items()] == ["subj/0", "subj/1", "obj/2", "subj/3", "verb/4", "obj/5"]
    assert bench.details()["rows_without_exactly_one_flag"] == 1


def _hand_accuracy(matrices, rule):
    right = 0
    for m in matrices:
        positive, negative = m[:, 0]  # rows are images: [positive, negative]
        right += positive > negative if rule == "strict" else positive >= negative  # argmax: a tie goes to 0
    return 100.0 * right / len(matrices)


def test_accuracy_per_negative_type_by_hand_under_both_tie_rules(root):
    # subj/0 right, verb/1 tie, obj/2 wrong, subj/3 tie, verb/4 right, obj/5 right
    columns = [(0.9, 0.1), (0.4, 0.4), (0.2, 0.6), (0.3, 0.3), (0.8, 0.5), (0.7, 0.1)]
    scores = [np.array([[p], [n]]) for p, n in columns]
    for rule, expected in (("strict", {"subj": 50.0, "verb": 50.0, "obj": 50.0, "all": 50.0}),
                           ("official", {"subj": 100.0, "verb": 100.0, "obj": 50.0, "all": 500 / 6})):
        bench = SVOProbes(root, ties=rule)
        items = bench.items()
        rows = {r.subset: r for r in bench.metrics(items, scores, seed=0)}
        assert set(rows) == {"subj", "verb", "obj", "all"} and all(r.metric == "accuracy" for r in rows.values())
        for subset, value in expected.items():
            chosen = [s for item, s in zip(items, scores) if subset in ("all", item.meta["subset"])]
            assert rows[subset].value == pytest.approx(value) == pytest.approx(_hand_accuracy(chosen, rule))
        assert rows["subj"].n == 2 and rows["all"].n == 6
        assert rows["subj"].details == {"ties": rule, "tied_items": 1, "left_out_missing_images": 1,
                                        "rows_in_file": 3}
        assert rows["obj"].details["left_out_missing_images"] == 0
        assert rows["all"].details["left_out_missing_images"] == 1 and rows["all"].details["rows_in_file"] == 7
        assert rows["all"].details["tied_items"] == 2


def test_a_real_run_reports_on_how_many_items_and_matches_the_hand_count(root, tiny_clip, tmp_path):
    scorer = ClipScorer(ScorerConfig(model=f"local-dir:{tiny_clip.local_dir}", options={"batch_size": 8}))
    result = evaluate(scorer, SVOProbes(root), ScoreStore(tmp_path / "s.sqlite"), workers=0, progress=False)
    assert all(m.shape == (2, 1) for m in result.scores)
    rows = {r.subset: r for r in result.rows}
    assert rows["all"].n == 6 and rows["all"].value == pytest.approx(_hand_accuracy(result.scores, "strict"))
    subj = [s for item, s in zip(result.items, result.scores) if item.meta["subset"] == "subj"]
    assert rows["subj"].value == pytest.approx(_hand_accuracy(subj, "strict"))


def test_missing_data_says_what_where_and_how(root, tmp_path):
    with pytest.raises(MissingDataError, match=r"svo/svo_probes.csv not found\. Get svo_probes.csv .*svo_probes"):
        SVOProbes(tmp_path / "nothing").items()
    with pytest.raises(MissingDataError, match=r"image folder .*elsewhere not found\. The images exist only as"):
        SVOProbes(root, images=tmp_path / "elsewhere").items()
    for image_id in (10000, 10006, 10012):  # the subj rows 0, 3 and 6 lose their positive image
        (root / "svo" / "images" / f"{image_id}.jpg").unlink()
    with pytest.raises(MissingDataError, match=r"SVO-Probes subj: none of its 3 items has both images"):
        SVOProbes(root, "subj").items()
    bench = SVOProbes(root)
    assert {i.meta["subset"] for i in bench.items()} == {"verb", "obj"} and list(bench.skipped) == ["subj"]
    with pytest.raises(HarnessError, match=r"image_name='photo.jpg' .* must contain \{image_id\}"):
        SVOProbes(root, image_name="photo.jpg")


def test_malformed_rows_are_named(root):
    path = root / "svo" / "svo_probes.csv"
    text = path.read_text()
    path.write_text(text.replace("True", "yes please", 1))
    with pytest.raises(BadRecordError, match=r"row 0 of .*svo_probes.csv: column subj_neg should be True or False"):
        SVOProbes(root).items()
    path.write_text(text.replace("A girl throws a ball in picture 1.", ""))
    with pytest.raises(BadRecordError, match=r"row 1 of .*svo_probes.csv has no sentence"):
        SVOProbes(root).items()
    path.write_text(text.replace("neg_image_id", "negative_image", 1))
    with pytest.raises(BadRecordError, match=r"svo_probes.csv lacks the column\(s\) neg_image_id"):
        SVOProbes(root).items()


def test_harness_data_counts_the_images_present(root, tmp_path):
    csv_req, images_req = SVOProbes.describe_data(root)
    assert csv_req.found and images_req.found
    assert images_req.what == "SVO-Probes images, named {image_id}.jpg: 13 of 14 images present, 6 of 7 items usable"
    assert not any(r.found for r in SVOProbes.describe_data(tmp_path / "nothing"))

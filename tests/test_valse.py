"""VALSE: the repository layout, the official validation filter, image sources (including ARO's
Visual Genome folder), and acc_r by hand with ties."""

from __future__ import annotations

import json

import numpy as np
import pytest
from benchmark_fixtures import valse as fixture

from benchmarks.valse import VALSE
from harness.api import Item, ScorerConfig
from harness.errors import BadRecordError, MissingDataError
from harness.runner import evaluate
from harness.store import ScoreStore
from models.clip import ClipScorer


@pytest.fixture()
def root(tmp_path):
    fixture.write(tmp_path, 3)
    return tmp_path


def test_reads_the_layout_keeps_validated_samples_and_finds_every_source(root):
    bench = VALSE(root)
    items = bench.items()
    assert len(items) == 7 * 3  # the rejected sample of each instrument is left out
    assert set(bench.skipped) == {"plurals", "counting-hard", "counting-small-quant", "actant-swap"}
    first = items[0]
    assert first.id == "existence/existence_test_0" and first.truth == (0,)
    assert first.texts == ("There are exactly 2 dogs on the grass.", "There are exactly 3 dogs on the grass.")
    assert first.images == ("visual7w/v7w_2371044.jpg",) and first.meta["piece"] == "existence"
    refs = {i.meta["subset"]: i.images[0] for i in items}  # the last sample of each
    assert refs["coreference-hard"] == "visdial/VisualDialog_val2018_000000284026.jpg"
    assert refs["relations"] == "coco/val2017/000000462578.jpg" and refs["action-replacement"].startswith("swig/")
    assert {i.images[0].split("/")[1] for i in items if i.meta["subset"] == "coreference-standard"} == \
        {"val2014", "train2014"}
    for item in items:  # every source folder, and ARO's VG folder for counting-adversarial
        image = bench.load_image(item.images[0])
        assert image.mode == "RGB" and image.size == (64, 64)
    assert bench.image_path(refs["counting-adversarial"]) == root / "aro" / "images" / "2396745.jpg"
    assert bench.details()["samples"]["existence"] == {"records": 4, "kept": 3}

    everything = VALSE(root, "foil-it", validated_only=False)
    assert len(everything.items()) == 4 and everything.details()["filter"] == "none"


def test_describe_data_counts_the_images_the_samples_need(root):
    (root / "visual7w" / "images" / "v7w_2371045.jpg").unlink()
    found = {r.what.split(":")[0]: r for r in VALSE.describe_data(root)}
    visual7w = next(r for r in VALSE.describe_data(root) if r.what.startswith("Visual7W"))
    assert visual7w.what.endswith("5 of 6 needed present") and not visual7w.found  # 3 in visual7w/, 3 via aro/
    assert found["VALSE existence samples"].found and not found["VALSE plurals samples"].found
    assert "Heidelberg-NLP/VALSE" in found["VALSE plurals samples"].how_to_get
    with pytest.raises(MissingDataError, match=r"v7w_2371045.jpg nor .*aro/images/2371045.jpg not found"):
        VALSE(root).load_image("visual7w/v7w_2371045.jpg")


def test_missing_files_and_bad_samples_are_named(root, tmp_path):
    with pytest.raises(MissingDataError, match="plurals.json not found.*Heidelberg-NLP/VALSE"):
        VALSE(root, "plurals").items()
    with pytest.raises(MissingDataError, match="VALSE data not found"):
        VALSE(tmp_path / "nothing").items()
    path = root / "valse" / "data" / "relations.json"
    samples = json.loads(path.read_text())
    key = next(iter(samples))
    broken = {**samples, key: {k: v for k, v in samples[key].items() if k != "mturk"}}
    path.write_text(json.dumps(broken))
    with pytest.raises(BadRecordError, match=f"sample '{key}' of .*relations.json lacks field 'mturk'"):
        VALSE(root, "relations").items()
    relations = next(r for r in VALSE.describe_data(root) if r.path == str(path))
    assert not relations.found and "lacks field 'mturk'" in relations.what  # `harness data` still lists the rest
    path.write_text(json.dumps({**samples, key: {**samples[key], "dataset": "ImageNet"}}))
    with pytest.raises(BadRecordError, match="of dataset 'ImageNet' is from no source"):
        VALSE(root, "relations").items()
    path.write_text(json.dumps({**samples, key: {**samples[key], "foil": ["a", "b"]}}))
    with pytest.raises(BadRecordError, match="foil should be one sentence"):
        VALSE(root, "relations").items()


def test_acc_r_per_instrument_and_mean_hand_computed_with_a_strict_tie(tmp_path):
    def item(k, instrument):
        return Item(id=f"{instrument}/{k}", images=("x",), texts=("caption", "foil"), truth=(0,),
                    meta={"subset": instrument})

    cases = [("existence", [0.9, 0.1]), ("existence", [0.4, 0.4]), ("existence", [0.2, 0.8]),
             ("existence", [0.7, 0.3]), ("foil-it", [0.6, 0.5]), ("foil-it", [0.3, 0.1])]
    items = [item(k, instrument) for k, (instrument, _) in enumerate(cases)]
    scores = [np.array([s]) for _, s in cases]
    rows = {(r.subset, r.metric): r for r in VALSE(tmp_path).metrics(items, scores, seed=0)}
    assert rows[("existence", "acc_r")].value == pytest.approx(50.0)  # the tie counts as wrong
    lenient = 100 * np.mean([s[0] >= s[1] for i, s in cases if i == "existence"])
    assert lenient == pytest.approx(75.0)  # a >= rule would differ
    assert rows[("foil-it", "acc_r")].value == pytest.approx(100.0)
    assert rows[("mean", "acc_r")].value == pytest.approx(75.0)  # unweighted over instruments, not 4/6 items
    assert rows[("mean", "acc_r")].details == {"instruments": ["existence", "foil-it"]}
    assert rows[("existence", "acc_r")].details == {"piece": "existence", "expected_n": 505}
    assert rows[("existence", "acc_r")].ci_low <= 50.0 <= rows[("existence", "acc_r")].ci_high


def test_clip_rows_equal_the_rule_applied_to_its_scores(root, tiny_clip, tmp_path):
    scorer = ClipScorer(ScorerConfig(model=f"local-dir:{tiny_clip.local_dir}", options={"batch_size": 8}))
    result = evaluate(scorer, VALSE(root), ScoreStore(tmp_path / "s.sqlite"), workers=0, progress=False)
    rows = {(r.subset, r.metric): r.value for r in result.rows}
    per = {}
    for item, matrix in zip(result.items, result.scores):
        per.setdefault(item.meta["subset"], []).append(matrix[0, 0] > matrix[0, 1])
    for instrument, correct in per.items():
        assert rows[(instrument, "acc_r")] == pytest.approx(100 * np.mean(correct))
    assert rows[("mean", "acc_r")] == pytest.approx(np.mean([100 * np.mean(c) for c in per.values()]))

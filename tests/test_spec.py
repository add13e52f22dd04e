"""SPEC: its folders, the published data.zip and the hub cache; image-to-text and text-to-image
accuracy by the official argmax rule and by the strict rule, against a hand computation."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from benchmark_fixtures.spec import SUBSETS, spec_records, write_spec, write_spec_zip
from factories import photo

from benchmarks.spec import Spec, spec_correct
from harness.api import Item
from harness.errors import BadRecordError, MissingDataError

N = 4  # records a direction a subset


@pytest.fixture()
def root(tmp_path):
    write_spec(tmp_path / "spec", N, subsets=("absolute_size", "count"))
    return tmp_path


def _check_items(bench: Spec, subsets: tuple[str, ...]) -> None:
    items = bench.items()
    assert [i.meta["subset"] for i in items] == [s for s in subsets for _ in range(2 * N)]
    for subset in subsets:
        i2t, t2i, images = spec_records(subset, N)
        chosen = {i.id: i for i in items if i.meta["subset"] == subset}
        for k, record in enumerate(i2t):
            item = chosen[f"{subset}/i2t/{k}"]
            assert item.images == (f"{subset}/{record['query']}",) and item.texts == tuple(record["keys"])
            assert item.truth == (record["label"],) and item.meta["label"] == record["label"]
        for k, record in enumerate(t2i):
            item = chosen[f"{subset}/t2i/{k}"]
            assert item.images == tuple(f"{subset}/{p}" for p in record["keys"]) and item.texts == (record["query"],)
            assert item.meta["label"] == record["label"] and item.meta["direction"] == "t2i"
        ref = f"{subset}/{i2t[1]['query']}"  # the pixels written (JPEG, so compare loosely)
        written = np.asarray(photo(images[i2t[1]["query"]], 40), dtype=float)
        decoded = np.asarray(bench.load_image(ref), dtype=float)
        assert decoded.shape == written.shape and np.abs(decoded - written).mean() < 4


def test_unpacked_folders_and_skipped_subsets(root):
    bench = Spec(root)
    _check_items(bench, ("absolute_size", "count"))
    assert set(bench.skipped) == {"relative_size", "absolute_spatial", "relative_spatial", "existence"}
    assert "no relative_size/image2text.json in folder" in bench.skipped["relative_size"]
    assert bench.details() == {"source": "folders"}


@pytest.mark.parametrize("prefix", ["", "data/"])
def test_the_unopened_data_zip_with_or_without_a_top_folder(tmp_path, prefix):
    write_spec_zip(tmp_path / "spec" / "data.zip", N, subsets=("existence", "count"), prefix=prefix)
    bench = Spec(tmp_path)
    _check_items(bench, ("existence", "count"))
    assert bench.details() == {"source": "zip data.zip"}
    bench.load_image(bench.items()[0].images[0])  # opens the archive, which must not travel to workers
    clone = pickle.loads(pickle.dumps(bench))
    ref = bench.items()[-1].images[-1]
    assert np.array_equal(np.asarray(clone.load_image(ref)), np.asarray(bench.load_image(ref)))


def test_the_hub_cache_snapshot(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "datasets--wjpoom--SPEC"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    write_spec_zip(repo / "snapshots" / commit / "data.zip", N, subsets=("relative_spatial",))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    bench = Spec(tmp_path / "empty_root", "relative_spatial")
    assert len(bench.items()) == 2 * N and bench.details() == {"source": "zip data.zip"}
    assert [r.found for r in Spec.describe_data(tmp_path / "empty_root")] == [True]


def test_missing_data_lists_every_place_tried(tmp_path, root):
    with pytest.raises(MissingDataError) as err:
        Spec(tmp_path / "nothing").items()
    message = str(err.value)
    assert "spec/<subset>/image2text.json" in message and "data.zip" in message
    assert "no snapshot of wjpoom/SPEC" in message and "huggingface-cli download wjpoom/SPEC" in message
    with pytest.raises(MissingDataError, match="SPEC existence: no existence/image2text.json"):
        Spec(root, "existence").items()
    assert not any(r.found for r in Spec.describe_data(tmp_path / "nothing"))
    assert [r.found for r in Spec.describe_data(root)] == [True]


@pytest.mark.parametrize("file, change, message", [
    ("image2text.json", lambda r: r[2].update(label=3), r"record 2 of count/image2text.json .*'label' should index"),
    ("text2image.json", lambda r: r[1].pop("keys"), r"record 1 of count/text2image.json .* lacks field 'keys'"),
    ("text2image.json", lambda r: r[0].update(keys=["only-one.jpg"]), r"record 0 .* at least two image paths"),
    ("image2text.json", lambda r: r[0].update(label=True), r"'label' should index"),
])
def test_a_malformed_record_is_named(root, file, change, message):
    path = root / "spec" / "count" / file
    records = json.loads(path.read_text())
    change(records)
    path.write_text(json.dumps(records))
    with pytest.raises(BadRecordError, match=message):
        Spec(root, "count").items()


def test_a_missing_image_names_the_file(root):
    bench = Spec(root, "count")
    with pytest.raises(MissingDataError, match="count/images/nope.jpg not found"):
        bench.load_image("count/images/nope.jpg")


# -- the metric, by hand --------------------------------------------------------------------------

def _item(k: int, direction: str, subset: str, label: int, n: int) -> Item:
    meta = {"subset": subset, "direction": direction, "label": label}
    if direction == "i2t":
        return Item(id=f"{subset}/i2t/{k}", images=("q",), texts=tuple(f"t{j}" for j in range(n)), truth=(label,),
                    meta=meta)
    return Item(id=f"{subset}/t2i/{k}", images=tuple(f"i{j}" for j in range(n)), texts=("q",), truth=(0,) * n,
                meta=meta)


def _hand(candidates: list[float], label: int, ties: str) -> bool:
    """The prediction written out: the first index of the maximum (the official argmax), or the
    label strictly above every other candidate."""
    top = max(candidates)
    if ties == "official":
        return candidates.index(top) == label
    return candidates[label] == top and candidates.count(top) == 1


CASES = [  # direction, subset, label, the query's scores for its candidates
    ("i2t", "count", 0, [0.9, 0.1, 0.2]),   # right
    ("i2t", "count", 0, [0.5, 0.5, 0.1]),   # tie, label first among the tied: argmax right, strict wrong
    ("i2t", "count", 1, [0.5, 0.5, 0.1]),   # tie, label second: wrong under both
    ("i2t", "count", 2, [0.1, 0.3, 0.2]),   # wrong
    ("t2i", "count", 1, [0.2, 0.7, 0.1]),   # right
    ("t2i", "count", 0, [0.4, 0.1, 0.4]),   # tie, label first: argmax right, strict wrong
    ("i2t", "existence", 1, [0.3, 0.6]),    # right
    ("t2i", "existence", 1, [0.6, 0.3]),    # wrong
]


@pytest.mark.parametrize("ties", ["official", "strict"])
def test_accuracy_per_subset_and_mean_equal_a_hand_computation(tmp_path, ties):
    items = [_item(k, d, s, label, len(c)) for k, (d, s, label, c) in enumerate(CASES)]
    # image-to-text: one row (the image) over the captions; text-to-image: one column over the images
    scores = [np.array(c)[None, :] if d == "i2t" else np.array(c)[:, None] for d, _, _, c in CASES]
    rows = {(r.subset, r.metric): r for r in Spec(tmp_path, ties=ties).metrics(items, scores, seed=0)}

    expected: dict[tuple[str, str], list[bool]] = {}
    for direction, subset, label, candidates in CASES:
        expected.setdefault((subset, f"{direction}_accuracy"), []).append(_hand(candidates, label, ties))
    assert set(rows) == set(expected) | {("mean", "i2t_accuracy"), ("mean", "t2i_accuracy")}
    for key, values in expected.items():
        assert rows[key].value == pytest.approx(100 * np.mean(values)) and rows[key].n == len(values)
        assert rows[key].details == {"ties": ties}
    for direction in ("i2t", "t2i"):
        per_subset = [100 * np.mean(expected[(s, f"{direction}_accuracy")]) for s in ("count", "existence")]
        mean = rows[("mean", f"{direction}_accuracy")]
        assert mean.value == pytest.approx(np.mean(per_subset))  # the plain average over subsets, as eval.py
        assert mean.details == {"subsets": ["count", "existence"], "ties": ties}
        assert mean.ci_low <= mean.value <= mean.ci_high
    # the two rules differ exactly on the ties whose label comes first
    if ties == "official":
        assert rows[("count", "i2t_accuracy")].value == 50.0 and rows[("count", "t2i_accuracy")].value == 100.0
    else:
        assert rows[("count", "i2t_accuracy")].value == 25.0 and rows[("count", "t2i_accuracy")].value == 50.0


def test_correct_reads_the_row_for_i2t_and_the_column_for_t2i():
    t2i = _item(0, "t2i", "count", 2, 3)
    assert spec_correct(t2i, np.array([[0.1], [0.2], [0.9]]), "strict")
    assert not spec_correct(t2i, np.array([[0.1], [0.1], [0.1]]), "official")  # a three-way tie goes to image 0
    assert Spec("/nonexistent").outcome(t2i, np.array([[0.1], [0.2], [0.9]])) == {"correct": True, "label": 2,
                                                                                   "predicted": 2}
    i2t = _item(0, "i2t", "count", 1, 3)
    assert spec_correct(i2t, np.array([[0.1, 0.9, 0.2]]), "strict")
    assert not spec_correct(i2t, np.array([[0.1, 0.9, 0.9]]), "strict")


def test_strict_is_the_default_and_bad_rules_are_refused(tmp_path):
    from harness.errors import HarnessError

    assert Spec(tmp_path).ties == "strict"  # the harness default; ties=official is the reference rule
    with pytest.raises(HarnessError, match="ties='first'.*strict, official"):
        Spec(tmp_path, ties="first")


def test_official_subset_names():
    assert Spec.subsets == SUBSETS

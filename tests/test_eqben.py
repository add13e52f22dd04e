"""EqBen: the official 10% subset's layout, one row per sub-dataset, and Winoground's strict rule
checked against a hand computation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from benchmark_fixtures.eqben import ANNOTATION, SUBSETS, image_pixels, write_eqben

from benchmarks.eqben import EqBen
from harness.api import Item
from harness.errors import BadRecordError, MissingDataError, UnknownNameError


@pytest.fixture()
def root(tmp_path):
    write_eqben(tmp_path, 9, sources=("eqbenag", "eqbenyoucook2", "eqbensd"))
    return tmp_path


def test_reads_records_images_and_npy_frames(root):
    bench = EqBen(root)
    items = bench.items()
    assert [i.id for i in items[:4]] == ["eqbenag/0", "eqbenyoucook2/1", "eqbensd/2", "eqbenag/3"]
    assert items[1].images == ("eqbenyoucook2/clip_1/frame_0.npy", "eqbenyoucook2/clip_1/frame_1.npy")
    assert items[0].texts == ("a person opens the door, scene 0", "a person closes the door, scene 0")
    assert items[0].truth == (0, 1) and items[2].meta == {"subset": "eqbensd"}
    assert set(bench.skipped) == {"eqbengebc", "eqbenkubric_loc", "eqbenkubric_attr", "eqbenkubric_cnt"}
    assert "no record of" in bench.skipped["eqbengebc"]
    # a PNG frame and a YouCook2 .npy frame (stored BGR) both come back as the RGB pixels written
    for k in (0, 1):
        for j in (0, 1):
            image = bench.load_image(items[k].images[j])
            assert image.mode == "RGB" and np.array_equal(np.asarray(image), image_pixels(k, j))


def test_a_subset_run_keeps_the_whole_runs_ids(root):
    whole = {i.id for i in EqBen(root).items()}
    sd = EqBen(root, "eqbensd").items()
    assert [i.id for i in sd] == ["eqbensd/2", "eqbensd/5", "eqbensd/8"] and {i.id for i in sd} <= whole
    with pytest.raises(MissingDataError, match="eqbengebc: no record of .* has images under eqbengebc/"):
        EqBen(root, "eqbengebc").items()
    with pytest.raises(UnknownNameError):
        EqBen(root, "eqbenkubric")  # the official names split Kubric into _loc, _attr and _cnt


def test_missing_files_name_the_path_and_how_to_get_them(tmp_path, root):
    with pytest.raises(MissingDataError, match=f"annotation file .*{ANNOTATION} not found.*Wangt-CN/EqBen"):
        EqBen(tmp_path / "nothing").items()
    with pytest.raises(MissingDataError, match="image folder .*elsewhere not found"):
        EqBen(root, images=tmp_path / "elsewhere").items()
    bench = EqBen(root)
    with pytest.raises(MissingDataError, match="eqbenag/missing.png not found"):
        bench.load_image("eqbenag/missing.png")
    requirements = EqBen.describe_data(root)
    assert [r.found for r in requirements] == [True, True] and "10 GB" in requirements[1].what
    assert not any(r.found for r in EqBen.describe_data(tmp_path / "nothing"))


@pytest.mark.parametrize("change, message", [
    (lambda r: r[1].pop("caption1"), "record 1 of .* lacks the text field 'caption1'"),
    (lambda r: r[2].update(image1="eqbenag/clip_2/frame_1.png"), "record 2 of .* should both start with one of"),
    (lambda r: r[0].update(image0="somewhere/else.png", image1="somewhere/else2.png"), "record 0 of .*eqbenag"),
])
def test_a_malformed_record_is_named(root, change, message):
    path = root / "eqben" / ANNOTATION
    records = json.loads(path.read_text())
    change(records)
    path.write_text(json.dumps(records))
    with pytest.raises(BadRecordError, match=message):
        EqBen(root).items()


def test_not_a_list_is_refused(root):
    (root / "eqben" / ANNOTATION).write_text(json.dumps({"0": {}}))
    with pytest.raises(BadRecordError, match="should hold a JSON list"):
        EqBen(root).items()


# -- the metric, by hand --------------------------------------------------------------------------

def _hand(matrix: list[list[float]]) -> tuple[bool, bool, bool]:
    """Winoground's strict rule written out (rows = images, columns = captions)."""
    (c0i0, c1i0), (c0i1, c1i1) = matrix
    text = c0i0 > c1i0 and c1i1 > c0i1
    image = c0i0 > c0i1 and c1i1 > c1i0
    return text, image, text and image


def test_rows_per_subset_and_overall_equal_a_hand_computation(tmp_path):
    right = [[0.9, 0.1], [0.2, 0.8]]
    text_only = [[0.5, 0.4], [0.6, 0.9]]
    image_only = [[0.5, 0.6], [0.1, 0.7]]
    # a tie in image 0's row: a first-index argmax would pick caption 0 and call the text side right,
    # while the official strict '>' (kept here) calls it wrong
    tie = [[0.5, 0.5], [0.1, 0.7]]
    cases = [("eqbenag", right), ("eqbenag", tie), ("eqbenag", text_only), ("eqbensd", image_only),
             ("eqbensd", right), ("eqbenkubric_cnt", tie)]
    items = [Item(id=f"{s}/{k}", images=("a", "b"), texts=("x", "y"), truth=(0, 1), meta={"subset": s})
             for k, (s, _) in enumerate(cases)]
    rows = {(r.subset, r.metric): r for r in EqBen(tmp_path).metrics(items, [np.array(m) for _, m in cases], seed=0)}

    assert int(np.argmax(tie[0])) == 0 and _hand(tie) == (False, True, False)  # strict and lenient differ
    expected: dict[tuple[str, str], list[bool]] = {}
    for subset, matrix in cases:
        for group in (subset, "all"):
            for metric, value in zip(("text", "image", "group"), _hand(matrix)):
                expected.setdefault((group, metric), []).append(value)
    assert set(rows) == set(expected)
    for key, values in expected.items():
        assert rows[key].value == pytest.approx(100 * np.mean(values)) and rows[key].n == len(values)
        assert rows[key].ci_low <= rows[key].value <= rows[key].ci_high
    assert rows[("eqbenag", "text")].value == pytest.approx(200 / 3)  # right, tie (wrong), text_only
    assert rows[("eqbenkubric_cnt", "image")].value == 100.0
    # the subsets come out in the official order, after "all"
    assert [r.subset for r in EqBen(tmp_path).metrics(items, [np.array(m) for _, m in cases], 0)][::3] == [
        "all", "eqbenag", "eqbenkubric_cnt", "eqbensd"]


def test_a_single_subset_has_no_all_row(tmp_path):
    item = Item(id="eqbensd/0", images=("a", "b"), texts=("x", "y"), truth=(0, 1), meta={"subset": "eqbensd"})
    rows = EqBen(tmp_path).metrics([item], [np.array([[1.0, 0.0], [0.0, 1.0]])], seed=0)
    assert {r.subset for r in rows} == {"eqbensd"} and all(r.value == 100.0 for r in rows)


def test_official_subset_names():
    assert EqBen.subsets == SUBSETS

"""The Winoground adapter reads every real layout and the caches, and says clearly what is missing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from factories import photo, winoground_records, write_hub_snapshot, write_winoground_jsonl, write_winoground_parquet

from benchmarks.winoground import Winoground
from harness.errors import BadRecordError, MissingDataError

N = 10


def _pixels(bench: Winoground, ref: str) -> np.ndarray:
    return np.asarray(bench.load_image(ref))


def _check_matches_records(bench: Winoground) -> None:
    items = bench.items()
    records = winoground_records(len(items))
    assert [i.id for i in items] == [str(r["id"]) for r in records]
    for item, r in zip(items, records):
        assert item.texts == (r["caption_0"], r["caption_1"])
        assert item.truth == (0, 1)
        assert item.meta["collapsed_tag"] == r["collapsed_tag"]
        assert item.meta["num_main_preds"] == r["num_main_preds"]
    # images decode to the photographs that were written, for the first and the last item
    for item in (items[0], items[-1]):
        i = int(item.id)
        for k in (0, 1):
            expected = np.asarray(photo(2 * i + k))
            assert np.array_equal(_pixels(bench, item.images[k]), expected)


def test_parquet_layout_with_several_row_groups(tmp_path):
    write_winoground_parquet(tmp_path / "winoground", N, rows_per_group=3)
    bench = Winoground(tmp_path)
    _check_matches_records(bench)
    assert bench.details()["source"].startswith("parquet")


def test_jsonl_layout_with_images_folder(tmp_path):
    write_winoground_jsonl(tmp_path / "winoground", N)
    _check_matches_records(Winoground(tmp_path))


def test_jsonl_layout_with_unopened_images_zip_and_file_names(tmp_path):
    write_winoground_jsonl(tmp_path / "winoground", N, zipped=True, with_suffix=True)
    bench = Winoground(tmp_path)
    assert "images.zip" in bench.details()["source"]
    _check_matches_records(bench)


def test_hub_cache_snapshot_is_found_when_the_data_root_is_empty(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    write_hub_snapshot(cache, "facebook/winoground", N)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    bench = Winoground(tmp_path / "empty-data-root")
    _check_matches_records(bench)
    assert "snapshots" in bench.details()["source"]


def test_datasets_cache_fallback_reads_a_datasets_dataset(tmp_path, monkeypatch):
    # datasets.load_dataset on a folder goes through the same builder and arrow cache as a hub id
    repo = tmp_path / "winoground-repo"
    write_winoground_parquet(repo, N)
    bench = Winoground(tmp_path / "empty-data-root", hf_id=str(repo))
    assert bench.details()["source"] == f"datasets {repo}"
    _check_matches_records(bench)


def test_missing_data_names_every_place_tried_and_how_to_get_it(tmp_path):
    with pytest.raises(MissingDataError) as err:
        Winoground(tmp_path).items()
    message = str(err.value)
    assert str(tmp_path / "winoground" / "data") in message
    assert "hub cache" in message and "datasets.load_dataset('facebook/winoground')" in message
    assert "gated" in message and "huggingface-cli login" in message
    assert "https://huggingface.co/datasets/facebook/winoground" in message


def test_jsonl_without_images_says_which_folder_is_missing(tmp_path):
    data = tmp_path / "winoground" / "data"
    data.mkdir(parents=True)
    (data / "examples.jsonl").write_text(json.dumps(winoground_records(1)[0]) + "\n")
    with pytest.raises(MissingDataError, match="neither .*images/ nor .*images.zip"):
        Winoground(tmp_path).items()


def test_record_missing_a_field_is_named(tmp_path):
    write_winoground_jsonl(tmp_path / "winoground", 3)
    path = tmp_path / "winoground" / "data" / "examples.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    del lines[1]["collapsed_tag"]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    with pytest.raises(BadRecordError, match="record 1 .* lacks field 'collapsed_tag'"):
        Winoground(tmp_path).items()


def test_unknown_subset_is_refused(tmp_path):
    with pytest.raises(KeyError, match="unknown winoground subset 'hard'"):
        Winoground(tmp_path, subset="hard")


def test_describe_data_reports_found_and_missing(tmp_path, wino_parquet_root):
    missing = Winoground.describe_data(tmp_path)
    assert not any(r.found for r in missing)
    assert any(str(tmp_path / "winoground") == r.path for r in missing)
    found = Winoground.describe_data(wino_parquet_root)
    assert found[0].found


def test_adapter_is_picklable_for_loader_workers(wino_parquet_root):
    import pickle

    bench = Winoground(wino_parquet_root)
    items = bench.items()
    bench.load_image(items[0].images[0])  # fills the row-group cache, which must not travel
    clone = pickle.loads(pickle.dumps(bench))
    assert np.array_equal(np.asarray(clone.load_image(items[3].images[1])),
                          np.asarray(bench.load_image(items[3].images[1])))


def test_pathlike_data_root_strings_work(wino_jsonl_root):
    assert len(Winoground(str(wino_jsonl_root)).items()) == 24
    assert isinstance(Winoground(str(wino_jsonl_root)).data_root, Path)

"""ColorSwap: the hub parquet layout, the authors' json + images layouts, the caches, and the
Winoground scores computed by hand (a tie is wrong, where an argmax would call it right)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from benchmark_fixtures.colorswap import colorswap_records, write_colorswap_json, write_colorswap_parquet
from factories import photo

from benchmarks.colorswap import ColorSwap
from harness.errors import BadRecordError, MissingDataError

N = 6


def check_items(bench: ColorSwap, n: int = N, split: str = "test", start_id: int = 0) -> None:
    items = bench.items()
    records = colorswap_records(n, start_id)
    assert [i.id for i in items] == [f"{split}/{r['id']}" for r in records]
    for item, r in zip(items, records):
        assert item.texts == (r["caption_1"], r["caption_2"]) and item.truth == (0, 1)
        assert item.meta == {"image_source": r["image_source"], "caption_source": r["caption_source"]}
    for item in (items[0], items[-1]):
        rid = int(item.id.split("/")[1])
        for k in (0, 1):  # PNG: the decoded pixels are the photograph written
            assert np.array_equal(np.asarray(bench.load_image(item.images[k])), np.asarray(photo(2 * rid + k, 32)))


def test_hub_parquet_layout(tmp_path):
    write_colorswap_parquet(tmp_path / "colorswap", N)
    bench = ColorSwap(tmp_path)
    check_items(bench)
    assert bench.details()["source"].startswith("parquet") and bench.details()["split"] == "test"


def test_authors_json_layout_with_images_folder_and_with_the_zip(tmp_path):
    write_colorswap_json(tmp_path / "a" / "colorswap", N)
    check_items(ColorSwap(tmp_path / "a"))
    write_colorswap_json(tmp_path / "b" / "colorswap", N, zipped=True)
    bench = ColorSwap(tmp_path / "b")
    assert "images.zip" in bench.details()["source"]
    check_items(bench)


def test_split_option_reads_the_train_split(tmp_path):
    write_colorswap_json(tmp_path / "colorswap", N)
    write_colorswap_json(tmp_path / "colorswap", 4, split="train", start_id=100)
    check_items(ColorSwap(tmp_path, split="train"), n=4, split="train", start_id=100)
    check_items(ColorSwap(tmp_path))


def test_hub_snapshot_and_datasets_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "datasets--stanfordnlp--colorswap"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    write_colorswap_parquet(repo / "snapshots" / commit, N)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    bench = ColorSwap(tmp_path / "empty-data-root")
    check_items(bench)
    assert "snapshots" in bench.details()["source"]
    assert ColorSwap.describe_data(tmp_path / "empty-data-root")[0].found
    # datasets.load_dataset on a folder goes through the same builder and arrow cache as a hub id
    folder = tmp_path / "colorswap-repo"
    write_colorswap_parquet(folder, N)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    bench = ColorSwap(tmp_path / "empty-data-root", hf_id=str(folder))
    assert bench.details()["source"] == f"datasets {folder} (test)"
    check_items(bench)


def test_missing_data_says_where_it_looked_and_how_to_get_it(tmp_path):
    with pytest.raises(MissingDataError) as err:
        ColorSwap(tmp_path).items()
    message = str(err.value)
    assert str(tmp_path / "colorswap") in message and "hub cache" in message
    assert "datasets.load_dataset('stanfordnlp/colorswap'), split 'test'" in message
    assert "gated" in message and "huggingface-cli login" in message and "Top34051/colorswap" in message
    (tmp_path / "colorswap" / "data").mkdir(parents=True)
    (tmp_path / "colorswap" / "data" / "test.json").write_text("[]")
    with pytest.raises(MissingDataError, match="neither .*images/ nor .*images.zip"):
        ColorSwap(tmp_path).items()
    assert not any(r.found for r in ColorSwap.describe_data(tmp_path / "nothing"))


def test_a_record_without_a_field_is_named(tmp_path):
    path = write_colorswap_json(tmp_path / "colorswap", 3)
    records = json.loads(path.read_text())
    del records[2]["caption_2"]
    path.write_text(json.dumps(records))
    with pytest.raises(BadRecordError, match="ColorSwap record 2 .*test.json.* lacks field 'caption_2'"):
        ColorSwap(tmp_path).items()


def test_text_image_group_scores_by_hand(tmp_path):
    write_colorswap_json(tmp_path / "colorswap", N)
    bench = ColorSwap(tmp_path)
    items = bench.items()
    # rows = images, columns = captions; caption k belongs to image k
    matrices = [
        np.array([[0.9, 0.1], [0.2, 0.8]]),  # all right
        np.array([[0.9, 0.1], [0.95, 0.99]]),  # text right; caption 0 prefers image 1
        np.array([[0.5, 0.6], [0.1, 0.7]]),  # image right (0.5 > 0.1, 0.7 > 0.6); text wrong on image 0
        np.array([[0.1, 0.9], [0.9, 0.1]]),  # all wrong
        np.array([[0.7, 0.7], [0.1, 0.9]]),  # tie on image 0: text wrong, though an argmax would say right
        np.array([[0.6, 0.2], [0.6, 0.9]]),  # tie on caption 0: image wrong, text right
    ]

    def hand(s):
        text = s[0, 0] > s[0, 1] and s[1, 1] > s[1, 0]
        image = s[0, 0] > s[1, 0] and s[1, 1] > s[0, 1]
        return text, image, text and image

    def argmax_text(s):  # the lenient rule an argmax gives: ties go to the first caption
        return int(np.argmax(s[0])) == 0 and int(np.argmax(s[1])) == 1

    outcomes = [hand(s) for s in matrices]
    assert argmax_text(matrices[4]) and not outcomes[4][0]  # the data holds a case where the rules differ
    rows = {(r.subset, r.metric): r for r in bench.metrics(items, matrices, seed=0)}
    for k, metric in enumerate(("text", "image", "group")):  # the adapter's rows are the hand rule's means
        assert rows[("all", metric)].value == pytest.approx(100 * np.mean([o[k] for o in outcomes]))
    assert rows[("all", "text")].value == pytest.approx(50.0)
    assert rows[("all", "group")].value == pytest.approx(100 / 6)
    # breakdowns: image_source cycles midjourney, dalle3, stable-diffusion; caption_source gpt-4, human
    assert rows[("image_source=midjourney", "text")].value == pytest.approx(50.0)  # items 0 and 3
    assert rows[("image_source=dalle3", "image")].value == pytest.approx(50.0)  # items 1 and 4
    assert rows[("caption_source=human", "text")].value == pytest.approx(200 / 3)  # items 1, 3, 5
    assert rows[("caption_source=gpt-4", "group")].value == pytest.approx(100 / 3)  # items 0, 2, 4
    assert bench.outcome(items[4], matrices[4]) == {"text": False, "image": True, "group": False}
    for row in rows.values():
        assert row.ci_low <= row.value <= row.ci_high

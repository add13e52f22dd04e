"""leaderboard.csv: locked, atomic appends; pivots for people."""

from __future__ import annotations

import csv
import multiprocessing as mp

import pytest

from harness import results
from harness.results import COLUMNS, append_rows, pivot, read_leaderboard


def _row(run_id: str, i: int, **kw) -> dict:
    base = {"run_id": run_id, "date": f"2026-11-29T10:00:{i % 60:02d}", "scorer": "clip", "model": "ViT-B-32",
            "pretrained": "openai", "benchmark": "winoground", "subset": "all", "metric": f"m{i}",
            "value": float(i), "ci_low": None, "ci_high": None, "n": 400, "seed": 0, "details": {"k": "v"}}
    base.update(kw)
    return base


def _writer(results_dir, worker: int, appends: int) -> None:
    for a in range(appends):
        append_rows(results_dir, [_row(f"w{worker}-a{a}", i) for i in range(10)])


def test_concurrent_appends_lose_nothing_and_corrupt_nothing(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(tmp_path, w, 15)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with open(tmp_path / "leaderboard.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 * 15 * 10
    assert len({(r["run_id"], r["metric"]) for r in rows}) == len(rows)
    assert all(r["details"] == '{"k": "v"}' for r in rows)
    assert not list(tmp_path.glob(".leaderboard.csv.*.tmp"))


def test_a_crash_while_writing_leaves_the_old_file_intact(tmp_path, monkeypatch):
    append_rows(tmp_path, [_row("first", 0)])
    before = (tmp_path / "leaderboard.csv").read_bytes()

    def crash(fd):
        raise OSError("disk full")

    from harness import files

    monkeypatch.setattr(files.os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        append_rows(tmp_path, [_row("second", i) for i in range(100)])
    assert (tmp_path / "leaderboard.csv").read_bytes() == before
    assert not list(tmp_path.glob(".leaderboard.csv.*.tmp"))


def test_rows_have_the_documented_columns_and_unknown_columns_survive(tmp_path):
    append_rows(tmp_path, [_row("a", 0)])
    with open(tmp_path / "leaderboard.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header == COLUMNS
    # a leaderboard written by another version with an extra column keeps it
    text = (tmp_path / "leaderboard.csv").read_text().splitlines()
    text[0] += ",extra"
    text[1] += ",kept"
    (tmp_path / "leaderboard.csv").write_text("\n".join(text) + "\n")
    append_rows(tmp_path, [_row("b", 1)])
    df = read_leaderboard(tmp_path)
    assert list(df["extra"]) == ["kept", ""]


def test_pivot_keeps_the_newest_value_and_hides_breakdowns_by_default(tmp_path):
    append_rows(tmp_path, [
        _row("old", 1, metric="text", value=10.0, date="2026-11-01T00:00:00"),
        _row("new", 2, metric="text", value=30.75, date="2026-11-02T00:00:00"),
        _row("new", 3, metric="group", value=8.0, date="2026-11-02T00:00:00"),
        _row("new", 4, subset="collapsed_tag=Object", metric="text", value=40.0, date="2026-11-02T00:00:00"),
        _row("other", 5, model="RN50", metric="text", value=20.0),
    ])
    wide = pivot(read_leaderboard(tmp_path))
    assert list(wide.columns) == ["scorer", "model", "pretrained", "winoground/all/text", "winoground/all/group"]
    by_model = wide.set_index("model")
    assert by_model.loc["ViT-B-32", "winoground/all/text"] == 30.75
    assert by_model.loc["RN50", "winoground/all/text"] == 20.0
    with_breakdowns = pivot(read_leaderboard(tmp_path), breakdowns=True)
    assert "winoground/collapsed_tag=Object/text" in with_breakdowns.columns
    assert pivot(read_leaderboard(tmp_path), benchmarks=["aro"]).empty
    table = results.format_table(wide)
    assert "30.75" in table and "winoground/all/text" in table


def test_empty_leaderboard_reads_and_prints(tmp_path):
    assert read_leaderboard(tmp_path).empty
    assert results.format_table(pivot(read_leaderboard(tmp_path))) == "(no results yet)"


def test_numpy_numbers_are_written_as_plain_numbers(tmp_path):
    import numpy as np

    append_rows(tmp_path, [_row("np", 0, value=np.float64(30.75), ci_low=np.float32(20.5), n=np.int64(400))])
    text = (tmp_path / "leaderboard.csv").read_text()
    assert "np." not in text
    df = read_leaderboard(tmp_path)
    assert df["value"].tolist() == [30.75] and df["ci_low"].tolist() == [20.5] and df["n"].tolist() == [400]


def test_report_draws_each_benchmark_with_intervals_and_links_the_figures(tmp_path):
    from PIL import Image

    from harness.report import make_report

    rows = []
    for model, shift in (("ViT-B-32", 0.0), ("RN50", 5.0)):
        for metric, value in (("text", 30.0), ("image", 10.0), ("group", 8.0)):
            rows.append(_row(f"r-{model}", len(rows), model=model, metric=metric, value=value + shift,
                             ci_low=value + shift - 2, ci_high=value + shift + 2))
            rows.append(_row(f"r-{model}", len(rows), model=model, subset="collapsed_tag=Object", metric=metric,
                             value=value, ci_low=value - 3, ci_high=value + 3))
    rows.append(_row("r-aro", 99, benchmark="aro", subset="vg-relation", metric="macro_accuracy", value=60.0,
                     ci_low=58.0, ci_high=62.0))
    append_rows(tmp_path, rows)
    path = make_report(tmp_path)
    text = path.read_text()
    assert "![winoground](winoground.png)" in text and "![aro](aro.png)" in text
    assert "winoground-by-collapsed-tag.png" in text and "[33.00, 37.00]" in text  # RN50's text score 35 with its interval
    for name in ("winoground.png", "winoground-by-collapsed-tag.png", "aro.png"):
        with Image.open(path.parent / name) as image:
            assert image.format == "PNG" and image.size[0] > 300


def test_report_of_an_empty_leaderboard(tmp_path):
    from harness.report import make_report

    assert "No results yet" in make_report(tmp_path).read_text()

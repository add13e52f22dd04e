"""The `harness` command through typer's runner, and as a real process where it matters."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pandas as pd
import pytest
from factories import write_winoground_parquet
from typer.testing import CliRunner

from harness.cli import app

cli = CliRunner()


def test_ls_lists_plugins_without_importing_torch():
    code = ("import sys; from typer.testing import CliRunner; from harness.cli import app; "
            "r = CliRunner().invoke(app, ['ls']); print(r.output); "
            "print('HEAVY', [m for m in ('torch', 'numpy', 'pandas', 'open_clip') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "clip " in out and "winoground " in out
    assert "HEAVY []" in out


def test_run_prints_the_table_and_where_results_went_then_leaderboard(tiny_clip, wino_parquet_root, tmp_path):
    args = ["run", "--scorer", "clip", "--bench", "winoground", "--model", f"local-dir:{tiny_clip.local_dir}",
            "--data-root", str(wino_parquet_root), "--results-dir", str(tmp_path), "--limit", "6",
            "--workers", "0", "--no-progress", "--batch-size", "4"]
    result = cli.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "winoground" in result.output and "collapsed_tag=Object" in result.output
    assert "6 items (6 scored now, 0 from the score store)" in result.output
    assert f"rows appended to   {tmp_path / 'leaderboard.csv'}" in result.output
    assert "item_scores.jsonl" in result.output

    board = cli.invoke(app, ["leaderboard", "--results-dir", str(tmp_path), "--csv", str(tmp_path / "wide.csv")])
    assert board.exit_code == 0, board.output
    assert "winoground/all/text" in board.output and "clip" in board.output
    wide = pd.read_csv(tmp_path / "wide.csv")
    assert list(wide.columns[:3]) == ["scorer", "model", "pretrained"] and len(wide) == 1
    assert wide["winoground/all/text"].notna().all()  # numbers, not unparsable text
    assert "winoground/collapsed_tag=Object/text" not in wide.columns
    detailed = cli.invoke(app, ["leaderboard", "--results-dir", str(tmp_path), "--breakdowns"])
    assert "collapsed_tag=Object" in detailed.output


def test_data_command_reports_found_and_missing(wino_parquet_root, tmp_path):
    found = cli.invoke(app, ["data", "--data-root", str(wino_parquet_root)])
    assert found.exit_code == 0 and "winoground: all found" in found.output
    missing = cli.invoke(app, ["data", "--data-root", str(tmp_path)])
    assert "winoground: MISSING" in missing.output and "huggingface-cli login" in missing.output


def test_data_root_defaults_to_the_environment(wino_parquet_root, monkeypatch):
    monkeypatch.setenv("HARNESS_DATA", str(wino_parquet_root))
    assert "winoground: all found" in cli.invoke(app, ["data"]).output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--scorer", "clpi"], "unknown scorer 'clpi'. Did you mean 'clip'?"),
        (["--bench", "winogrund"], "unknown benchmark 'winogrund'. Did you mean 'winoground'?"),
        (["--data-root", "{empty}"], "Winoground data not found"),
        (["--model", "ViT-B-32", "--pretrained", "openai"], "cannot load ViT-B-32 with openai offline"),
        (["--opt", "precision"], "must look like key=value"),
    ],
)
def test_bad_input_exits_2_with_a_message_and_no_rows(tiny_clip, wino_parquet_root, tmp_path, monkeypatch,
                                                      args, message):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base = {"--scorer": "clip", "--bench": "winoground", "--model": f"local-dir:{tiny_clip.local_dir}",
            "--data-root": str(wino_parquet_root), "--results-dir": str(tmp_path / "results")}
    empty = tmp_path / "empty"
    args = [a.replace("{empty}", str(empty)) for a in args]
    for key, value in base.items():
        if key not in args:
            args += [key, value]
    result = cli.invoke(app, ["run", "--workers", "0", "--no-progress", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "results" / "leaderboard.csv").exists()


def _stored(db_path) -> int:
    if not db_path.exists():
        return 0
    try:
        with sqlite3.connect(db_path, timeout=1) as db:
            return db.execute("SELECT count(*) FROM scores").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _wait_for_stored(db_path, proc, at_least: int, timeout: float = 120) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        n = _stored(db_path)
        if n >= at_least:
            return n
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError("the run never stored scores")


def test_killed_and_interrupted_processes_resume(tiny_clip, tmp_path):
    """A real `python -m harness run`, killed (SIGKILL), then Ctrl-C'd (SIGINT), then finished."""
    n_items = 300
    write_winoground_parquet(tmp_path / "data" / "winoground", n_items, rows_per_group=50)
    results_dir = tmp_path / "results"
    db = results_dir / "scores.sqlite"
    cmd = [sys.executable, "-m", "harness", "run", "--scorer", "clip", "--bench", "winoground",
           "--model", f"local-dir:{tiny_clip.local_dir}", "--data-root", str(tmp_path / "data"),
           "--results-dir", str(results_dir), "--batch-size", "1", "--chunk-items", "1", "--workers", "0",
           "--no-progress"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    killed = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    _wait_for_stored(db, killed, 5)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    after_kill = _stored(db)
    assert 5 <= after_kill < n_items
    assert not (results_dir / "leaderboard.csv").exists()
    from harness.results import stale_runs

    assert [why for _, why in stale_runs(results_dir)] == [f"its process {killed.pid} on this host is gone"]

    interrupted = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    _wait_for_stored(db, interrupted, after_kill + 5)
    interrupted.send_signal(signal.SIGINT)
    _, err = interrupted.communicate(timeout=60)
    assert interrupted.returncode == 130, err
    assert "rerun the same command to resume" in err
    after_interrupt = _stored(db)
    assert after_kill + 5 <= after_interrupt < n_items
    assert not (results_dir / "leaderboard.csv").exists()

    finished = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert f"({n_items - after_interrupt} scored now, {after_interrupt} from the score store)" in finished.stdout
    board = pd.read_csv(results_dir / "leaderboard.csv")
    # 3 metrics x (all + 3 tags + 2 predicate counts + NoTag and the 6 hardness tags ids 0..299 carry)
    assert len(board) == 39 and (board["n"][board["subset"] == "all"] == n_items).all()


def test_run_whole_benchmark_reports_skipped_subsets_and_bench_options(tiny_clip, tmp_path):
    from factories import write_sugarcrepe

    write_sugarcrepe(tmp_path / "data")
    args = ["run", "--scorer", "clip", "--bench", "sugarcrepe", "--model", f"local-dir:{tiny_clip.local_dir}",
            "--data-root", str(tmp_path / "data"), "--results-dir", str(tmp_path / "r"), "--workers", "0",
            "--no-progress"]
    result = cli.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "skipped replace-att: annotation file" in result.output
    board = pd.read_csv(tmp_path / "r" / "leaderboard.csv")
    assert set(board["subset"]) == {"replace-obj", "swap-att", "mean"} and set(board["benchmark"]) == {"sugarcrepe"}

    bad = cli.invoke(app, [*args, "--bench-opt", "colour=red"])
    assert bad.exit_code == 2 and "--bench-opt colour: not an option of benchmark sugarcrepe" in bad.output
    assert "valid: annotations, images" in bad.output
    moved = cli.invoke(app, [*args, "--bench", "sugarcrepe:swap-att", "--bench-opt",
                             f"annotations={tmp_path / 'data' / 'sugarcrepe'}"])
    assert moved.exit_code == 0 and "(0 scored now, 4 from the score store)" in moved.output

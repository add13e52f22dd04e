"""Trust: no code runs from data files, no bad number is accepted silently, the leaderboard survives
hand edits, Ctrl-C always stops a run, killed runs are reported, first contact is clear. Each test
reproduces a problem a demanding user found."""

from __future__ import annotations

import csv
import json
import os
import pickle
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from factories import write_winoground_parquet
from typer.testing import CliRunner

from harness.cli import app
from harness.errors import BadRecordError

cli = CliRunner()


class Payload:
    """A pickle that, when loaded by an unrestricted unpickler, creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


# -- 1. no code from data -------------------------------------------------------------------------

def test_a_planted_cifar_batch_is_refused_by_name_and_its_payload_never_runs(tmp_path):
    from factories_zeroshot import write_zeroshot_fixture

    from benchmarks.zeroshot import ZeroShot

    write_zeroshot_fixture(tmp_path, n_per_class=1, imagenet=False)
    marker = tmp_path / "payload-ran"
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    with open(batch, "wb") as f:
        pickle.dump({"data": Payload(marker), "labels": [0]}, f, protocol=2)
    with pytest.raises(BadRecordError, match=r"test_batch is not a plain data pickle: it asks to load "):
        ZeroShot(tmp_path, "cifar10").items()
    assert not marker.exists()
    # the genuine layout still reads (numpy arrays, lists, Python-2 strings)
    assert len(ZeroShot(tmp_path, "cifar100").items()) > 0


# -- 2. no bad number accepted silently -----------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--batch-size", "0"], "--opt batch_size=0 for scorer clip: must be at least 1"),
    (["--batch-size", "-4"], "--opt batch_size=-4 for scorer clip: must be at least 1"),
    (["--workers", "-1"], "--workers must be 0"),
    (["--chunk-items", "0"], "--chunk-items must be at least 1"),
    (["--bench-opt", "n=abc"], "--bench-opt n='abc' for benchmark shapes: expected a whole number"),
    (["--scorer", "diffusion", "--timesteps", "100,abc"], "expected a count or a comma-separated list"),
    (["--scorer", "diffusion", "--timesteps", "100,500,100"], "timesteps repeat ([100])"),
    (["--scorer", "diffusion", "--timesteps", "0"], "a count of timesteps must be at least 1"),
    (["--opt", "precision=fp64"], "expected one of auto, fp32, fp16, bf16"),
])
def test_bad_numbers_exit_2_before_anything_loads_or_is_written(tmp_path, monkeypatch, args, message):
    import open_clip

    def no_loading(*a, **k):
        raise AssertionError("a model was loaded before the options were checked")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", no_loading)
    result = cli.invoke(app, ["run", "--bench", "shapes", "--model", str(tmp_path / "no-model-needed"),
                              "--results-dir", str(tmp_path / "results"), "--no-progress", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "results").exists()


def test_too_many_timesteps_are_refused_from_the_schedule_before_the_weights_load(tmp_path, monkeypatch):
    import diffusers
    from factories_diffusion import build_tiny_sd

    sd = build_tiny_sd(tmp_path / "sd")

    def no_loading(*a, **k):
        raise AssertionError("the UNet was loaded before the timesteps were checked")

    monkeypatch.setattr(diffusers.UNet2DConditionModel, "from_pretrained", no_loading)
    result = cli.invoke(app, ["run", "--scorer", "diffusion", "--model", str(sd), "--timesteps", "2000",
                              "--results-dir", str(tmp_path / "results"), "--no-progress", "--workers", "0"])
    assert result.exit_code == 2, result.output
    assert "timesteps=2000: the schedule has only 1000 timesteps" in result.output
    assert not (tmp_path / "results" / "leaderboard.csv").exists()


@pytest.mark.parametrize("args, message", [
    (["--lr", "-1e-5"], "--lr=-1e-05 for harness finetune: must be at least 0"),
    (["--head-lr", "-0.1"], "--head-lr=-0.1 for harness finetune: must be at least 0"),
    (["--lambda", "-1"], "--lambda=-1.0 for harness finetune: must be at least 0"),
    (["--lambda", "nan"], "--lambda=nan for harness finetune: must be a finite number"),
    (["--batch-size", "0"], "--batch-size=0 for harness finetune: must be at least 1"),
    (["--t-min", "500", "--t-max", "400"], "--t-min 500 must be below --t-max 400"),
])
def test_finetune_refuses_bad_numbers_before_loading(tmp_path, args, message):
    # the models named do not exist: the options must be refused before anyone looks for them
    result = cli.invoke(app, ["finetune", "--clip", "local-dir:/nowhere", "--sd", "/nowhere", "--out",
                              str(tmp_path / "out"), "--no-progress", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_results_dir_under_a_file_is_refused(tmp_path):
    (tmp_path / "afile").write_text("x")
    result = cli.invoke(app, ["run", "--results-dir", str(tmp_path / "afile" / "results"), "--no-progress"])
    assert result.exit_code == 2 and "is a file, not a folder" in result.output and "Traceback" not in result.output


# -- 4. the leaderboard survives hand edits --------------------------------------------------------

def _one_run(tiny_clip, data_root, results_dir, limit=2):
    return cli.invoke(app, ["run", "--bench", "winoground", "--model", f"local-dir:{tiny_clip.local_dir}",
                            "--data-root", str(data_root), "--results-dir", str(results_dir), "--limit", str(limit),
                            "--workers", "0", "--no-progress"])


def _stored(results_dir: Path) -> int:
    import sqlite3

    with sqlite3.connect(results_dir / "scores.sqlite") as db:
        return db.execute("SELECT count(*) FROM scores").fetchone()[0]


@pytest.fixture()
def board(tiny_clip, tmp_path):
    write_winoground_parquet(tmp_path / "data" / "winoground", 4)
    results_dir = tmp_path / "results"
    assert _one_run(tiny_clip, tmp_path / "data", results_dir).exit_code == 0
    return tmp_path / "data", results_dir, results_dir / "leaderboard.csv"


@pytest.mark.parametrize("bad_line, why", [
    (b'hand,2026-01-01,clip,"my model,,,winoground,all,text,50,,,4,1,0.1.0,x,cpu,0,k,{}\r\n',
     "a field runs over several lines"),
    (b"hand,2026-01-01,clip,m\xe9,,winoground,all,text,50,,,4,1,0.1.0,x,cpu,0,k,{}\r\n", "is not UTF-8"),
    (b"hand,2026-01-01,clip,m,,winoground,all,text,fifty,,,4,1,0.1.0,x,cpu,0,k,{}\r\n", "value is 'fifty'"),
])
def test_a_bad_hand_edit_is_refused_before_scoring_and_reported_by_the_leaderboard(tiny_clip, board, bad_line,
                                                                                     why):
    data_root, results_dir, path = board
    before = path.read_bytes()
    lines = before.splitlines(keepends=True)
    path.write_bytes(lines[0] + lines[1] + bad_line + b"".join(lines[2:]))  # a hand-added row in the middle
    edited = path.read_bytes()
    stored_before = _stored(results_dir)

    result = _one_run(tiny_clip, data_root, results_dir, limit=4)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "leaderboard.csv line 3: " in result.output and why in result.output
    assert "Nothing was scored" in result.output and "Edit or delete that line" in result.output
    assert path.read_bytes() == edited and _stored(results_dir) == stored_before == 2

    shown = cli.invoke(app, ["leaderboard", "--results-dir", str(results_dir)])
    assert shown.exit_code == 0 and "line 3 left out" in shown.output and why in shown.output
    assert "nan" not in shown.output.lower()


def test_an_append_never_changes_an_existing_row(tiny_clip, board):
    data_root, results_dir, path = board
    # a hand-added row in its own spelling (no trailing newline, unusual but valid numbers)
    hand = b"hand-row,2026-01-01,clip,my model,,winoground,all,text,50,,,4,1,0.1.0,x,cpu,0,k,{}"
    path.write_bytes(path.read_bytes() + hand)
    kept = path.read_bytes()
    assert _one_run(tiny_clip, data_root, results_dir, limit=3).exit_code == 0
    after = path.read_bytes()
    assert after.startswith(kept + b"\r\n")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["run_id"] for r in rows].count("hand-row") == 1 and len({r["run_id"] for r in rows}) == 3


def test_new_result_files_get_the_users_usual_permissions(tiny_clip, tmp_path):
    write_winoground_parquet(tmp_path / "data" / "winoground", 2)
    old = os.umask(0o022)
    try:
        result = _one_run(tiny_clip, tmp_path / "data", tmp_path / "results")
    finally:
        os.umask(old)
    assert result.exit_code == 0
    run_dir = next((tmp_path / "results" / "runs").iterdir())
    for path in (tmp_path / "results" / "leaderboard.csv", run_dir / "metrics.csv", run_dir / "config.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


# -- 5. interrupts and stale runs ------------------------------------------------------------------

SWALLOWED_CTRL_C = r"""
import os, signal, sys, time
from harness.cli import main

class Collected:
    def __del__(self):  # a Ctrl-C that lands in a destructor is printed and swallowed by Python
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)

from harness import interrupts
interrupts.install()
item = Collected()
del item
sys.argv = ["harness"] + sys.argv[1:]
main()
"""


def test_a_ctrl_c_that_python_swallowed_still_stops_the_run(tiny_clip, tmp_path):
    write_winoground_parquet(tmp_path / "data" / "winoground", 4)
    args = ["run", "--bench", "winoground", "--model", f"local-dir:{tiny_clip.local_dir}", "--data-root",
            str(tmp_path / "data"), "--results-dir", str(tmp_path / "results"), "--workers", "0", "--no-progress"]
    proc = subprocess.run([sys.executable, "-c", SWALLOWED_CTRL_C, *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert "Exception ignored" in proc.stderr  # the interrupt really was swallowed where it landed
    assert proc.returncode == 130, proc.stderr
    assert "interrupted" in proc.stderr
    assert not (tmp_path / "results" / "leaderboard.csv").exists()


def test_a_killed_run_is_reported_as_stale(tiny_clip, tmp_path):
    from harness.results import stale_runs

    write_winoground_parquet(tmp_path / "data" / "winoground", 4)
    results_dir = tmp_path / "results"
    assert _one_run(tiny_clip, tmp_path / "data", results_dir).exit_code == 0
    run_dir = next((results_dir / "runs").iterdir())
    config = json.loads((run_dir / "config.json").read_text())
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    config.update(status="running", pid=gone.pid)  # as a SIGKILL leaves it
    (run_dir / "config.json").write_text(json.dumps(config))
    assert stale_runs(results_dir) == [(run_dir.name, f"its process {gone.pid} on this host is gone")]
    shown = cli.invoke(app, ["leaderboard", "--results-dir", str(results_dir)])
    assert f"run {run_dir.name} never finished" in shown.output


# -- 6. first contact ------------------------------------------------------------------------------

def test_a_mistyped_scorer_without_a_model_is_named_as_unknown(tmp_path):
    result = cli.invoke(app, ["run", "--scorer", "clpi", "--results-dir", str(tmp_path), "--no-progress"])
    assert result.exit_code == 2 and "unknown scorer 'clpi'. Did you mean 'clip'?" in result.output


def test_a_plain_folder_is_an_open_clip_model_when_it_holds_one(tiny_clip, tmp_path):
    write_winoground_parquet(tmp_path / "data" / "winoground", 2)
    base = ["run", "--bench", "winoground", "--data-root", str(tmp_path / "data"), "--workers", "0", "--no-progress"]
    plain = cli.invoke(app, [*base, "--model", str(tiny_clip.local_dir), "--results-dir", str(tmp_path / "a")])
    prefixed = cli.invoke(app, [*base, "--model", f"local-dir:{tiny_clip.local_dir}", "--results-dir",
                                str(tmp_path / "b")])
    assert plain.exit_code == 0 and prefixed.exit_code == 0, plain.output
    values = [[r["value"] for r in csv.DictReader(open(tmp_path / d / "leaderboard.csv"))] for d in "ab"]
    assert values[0] == values[1]
    (tmp_path / "empty").mkdir()
    odd = cli.invoke(app, [*base, "--model", str(tmp_path / "empty"), "--results-dir", str(tmp_path / "c")])
    assert odd.exit_code == 2 and "is a folder, but not an open_clip model folder" in odd.output


def test_runs_look_in_local_caches_only_and_downloading_is_explicit(tmp_path, monkeypatch):
    import datasets
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    seen = {}

    def load_dataset(*args, **kwargs):
        seen["offline"] = (huggingface_hub.constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE,
                           os.environ.get("HF_HUB_OFFLINE"))
        raise ConnectionError("no network here")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    result = cli.invoke(app, ["run", "--bench", "winoground", "--data-root", str(tmp_path), "--results-dir",
                              str(tmp_path / "r"), "--no-progress"])
    assert result.exit_code == 2 and "Winoground data not found" in result.output
    assert seen["offline"] == (True, True, "1")

    fetched = []

    def snapshot_download(repo_id, **kwargs):
        fetched.append((repo_id, kwargs, huggingface_hub.constants.HF_HUB_OFFLINE))
        return kwargs.get("local_dir", "cache")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    got = cli.invoke(app, ["data", "--data-root", str(tmp_path), "--download", "winoground",
                           "--download", "diffusion:stabilityai/stable-diffusion-2-1-base"])
    assert got.exit_code == 0, got.output
    assert fetched[0] == ("facebook/winoground", {"repo_type": "dataset", "local_dir": str(tmp_path / "winoground")},
                          False)
    assert fetched[1][0] == "stabilityai/stable-diffusion-2-1-base" and fetched[1][2] is False
    by_hand = cli.invoke(app, ["data", "--data-root", str(tmp_path), "--download", "aro"])
    assert by_hand.exit_code == 2 and "aro cannot be downloaded by the harness; get it by hand" in by_hand.output


@pytest.mark.parametrize("bench, repo, folder", [
    ("colorswap", "stanfordnlp/colorswap", "colorswap"), ("mmvp-vlm", "MMVP/MMVP_VLM", "mmvp_vlm"),
    ("spec", "wjpoom/SPEC", "spec"), ("sugarcrepe-pp", "Aman-J/SugarCrepe_pp", "sugarcrepe_pp"),
])
def test_hub_published_benchmarks_download_into_the_folder_they_read(tmp_path, monkeypatch, bench, repo, folder):
    import huggingface_hub

    fetched = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda repo_id, **kwargs: fetched.append((repo_id, kwargs)) or kwargs["local_dir"])
    got = cli.invoke(app, ["data", "--data-root", str(tmp_path), "--download", bench])
    assert got.exit_code == 0, got.output
    assert fetched == [(repo, {"repo_type": "dataset", "local_dir": str(tmp_path / folder)})]

"""The GPU readiness check (tests/gpu/check.sh): its CPU smoke run passes through every stage, and its
parity verdicts, fine-tuning rate and exit status follow the rules it documents."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

GPU = Path(__file__).parent / "gpu"
sys.path.insert(0, str(GPU))

import gpu_check  # noqa: E402

from harness.metrics import winoground_outcome  # noqa: E402


def _outcome(item_id, matrix):
    return winoground_outcome(np.asarray(matrix))


def test_cpu_smoke_runs_every_stage(tmp_path):
    """What CI proves: the script's every stage runs on the CPU and passes, and writes its figures."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(GPU / "check.sh"), "--cpu-smoke", "--out", str(out), "--work",
                           str(tmp_path / "work")], capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "[FAIL]" not in done.stdout and "SUMMARY:" in done.stdout
    with open(out / "gpu_check.csv", newline="") as f:
        rows = list(csv.DictReader(f))

    def values(stage, metric):
        return {r["case"]: float(r["value"]) for r in rows if r["stage"] == stage and r["metric"] == metric}

    for stage in gpu_check.STAGES:
        assert values(stage, "seconds").get("stage", 0) > 0, f"stage {stage} did not run"
    for family in ("clip-parity", "diffusion-parity"):
        diffs = values(family, "max_abs_diff")
        assert {case.rsplit("/", 1)[1] for case in diffs} == set(gpu_check.PRECISIONS)
        assert all(case.endswith("/fp32") == (value == 0.0) for case, value in diffs.items())  # CPU against CPU
    assert len(values("clip-parity", "max_abs_diff")) == 6  # Winoground and zero-shot, three precisions
    assert all(v == 1 for v in values("processes", "rows_identical").values())
    assert len(values("processes", "rows_identical")) == 2  # the CLIP and the diffusion scorer
    assert set(values("finetune", "samples_per_s")) == {"full/batch4", "detached/batch4"}
    assert all(v > 0 for v in values("finetune", "samples_per_s").values())
    rates = values("throughput", "passes_per_s")
    assert {"tiny-unet/bf16/batch4", "tiny-unet/fp16/batch2", "projection/scorer/tiny-sd"} <= set(rates)
    assert values("throughput", "passes_per_item") == {"projection/scorer/tiny-sd": 60.0}  # the 24,000 / 400
    log = (out / "gpu_check.log").read_text().splitlines()
    for stage in gpu_check.STAGES:  # one summary line per stage, e.g. "[PASS] processes        == 2 passed: ..."
        assert sum(line[7:].startswith(f"{stage:<16} == ") for line in log) == 1, stage
    assert (out / "environment.json").is_file()


def test_parity_verdicts_follow_the_tolerance_and_the_decisions():
    reference = {"0": np.array([[0.30, 0.10], [0.20, 0.40]]), "1": np.array([[0.20, 0.21], [0.25, 0.30]])}
    close = {k: v + 1e-4 for k, v in reference.items()}
    same = gpu_check.compare_scores(reference, close, _outcome)
    assert (same.max_abs_diff, same.changed_items, same.items) == (pytest.approx(1e-4), 0, 2)
    assert same.status(1e-3) == "PASS" and same.status(1e-5) == "FAIL"

    # item 1's text decision hangs on 0.01: a 0.02 change flips it, within a loose tolerance
    flipped = {"0": reference["0"], "1": reference["1"] + np.array([[0.02, 0.0], [0.0, 0.0]])}
    verdict = gpu_check.compare_scores(reference, flipped, _outcome)
    assert verdict.changed_items == 1 and verdict.status(0.05) == "WARN" and verdict.status(0.01) == "FAIL"
    assert "1/2 items change a decision" in verdict.text(0.05)

    broken = {"0": reference["0"], "1": np.array([[np.nan, 0.2], [0.2, 0.3]])}
    assert gpu_check.compare_scores(reference, broken, _outcome).status(1.0) == "FAIL"
    assert gpu_check.compare_scores(reference, {"0": reference["0"]}, _outcome).status(1.0) == "FAIL"


def test_exit_status_is_one_only_when_a_check_failed_and_a_stage_takes_its_worst_check():
    line = gpu_check.Line
    fine = [line("PASS", "a", ""), line("WARN", "a", ""), line("SKIP", "a", ""), line("INFO", "a", "")]
    assert gpu_check.exit_status(fine) == 0
    assert gpu_check.exit_status([*fine, line("FAIL", "a", "")]) == 1
    assert gpu_check.stage_verdict(fine) == ("WARN", "1 passed, 1 warned, 1 skipped, 1 measured")
    assert gpu_check.stage_verdict([*fine, line("FAIL", "a", "")])[0] == "FAIL"
    assert gpu_check.stage_verdict([line("INFO", "a", "")]) == ("INFO", "1 measured")


def test_steady_samples_per_s_leaves_the_warm_up_steps_out():
    # batch 8; the first step takes 5 s (warm-up), every later one 0.5 s
    elapsed = [5.0 + 0.5 * k for k in range(6)]
    rows = [{"samples_per_s": str((k + 1) * 8 / t)} for k, t in enumerate(elapsed)]
    assert gpu_check.steady_samples_per_s(rows, 8) == pytest.approx(16.0)
    assert gpu_check.steady_samples_per_s(rows[:2], 8) == pytest.approx(16 / 5.5)  # too short to skip


def test_missing_packages_are_named_with_how_to_carry_them(monkeypatch, capsys):
    monkeypatch.setattr(gpu_check, "REQUIRED", {"no_such_module_for_the_check": "some-package"})
    for key in gpu_check.QUIET_OFFLINE:  # main() sets them; restore this process's environment after
        monkeypatch.setenv(key, os.environ[key]) if key in os.environ else monkeypatch.delenv(key, raising=False)
    assert gpu_check.main(["--cpu-smoke"]) == 3
    err = capsys.readouterr().err
    assert "some-package" in err and "tests/gpu/wheels.txt" in err and "--wheels" in err


def test_an_out_of_memory_is_recognised_through_the_harness_error_that_wraps_it():
    import torch

    from harness.errors import HarnessError

    try:
        try:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        except torch.OutOfMemoryError as err:
            raise HarnessError("the run stopped; try a smaller --batch-size") from err
    except HarnessError as wrapped:
        assert gpu_check.is_out_of_memory(wrapped)
    assert not gpu_check.is_out_of_memory(ValueError("bad value"))

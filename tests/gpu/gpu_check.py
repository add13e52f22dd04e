"""GPU readiness: one prepared run that proves the GPU paths of the harness and measures them.

    tests/gpu/check.sh                    on a CUDA machine: every stage (optional parts within a 450 s budget)
    tests/gpu/check.sh --quick            the same without torch.compile
    tests/gpu/check.sh --cpu-smoke        anywhere: the same stages on tiny models on the CPU (about a minute of CPU time)
    tests/gpu/check.sh --stages clip-parity,processes --out DIR

Nothing is downloaded: the tiny test models (tests/factories.py, tests/factories_diffusion.py),
open_clip's ViT-B-32 and Stable Diffusion 2.1-base's UNet, VAE and text encoder at their real
architecture sizes with random weights, and the benchmark fixtures in their real on-disk layouts
(tests/benchmark_fixtures/) are all built in a scratch folder. Everything runs through the
project's public functions: ``harness.runner.run`` / ``evaluate``, the scorers with their
``precision`` and ``compile`` options, and ``models.finetune.finetune``.

Stages (``--stages``), one line per result, ``[PASS]``, ``[FAIL]``, ``[WARN]``, ``[INFO]`` or
``[SKIP]``, and a summary line per stage (``== ...``: its worst check, its headline figure, its peak
GPU memory and time):

- ``clip-parity``: the CLIP scorer's scores on the Winoground and zero-shot fixtures on the GPU in
  fp32 and under bf16 and fp16 autocast, against the CPU in fp32: the largest score difference
  and the items whose decision changes;
- ``diffusion-parity``: the same for the diffusion scorer on the tiny pipeline (the scorer draws
  its noise on the CPU from the seed, so both sides use the same noise), per precision, and bf16
  with ``compile=true``;
- ``throughput``: UNet passes per second of SD 2.1-base's UNet at batch 8, 32 and 64 under fp16
  and bf16 autocast and bf16 + torch.compile, the projected time of a whole Winoground diffusion
  run at the scorer's defaults (400 items x 60 = 24,000 passes), and the scorer timed end to end;
- ``finetune``: ``finetune`` with ``--sds-grad full`` and ``detached`` at ViT-B-32 + SD 2.1-base
  size, 20 steps in bf16: samples per second and peak memory;
- ``processes``: two processes on one GPU (NCCL, which refuses two ranks on one GPU since NCCL
  2.5, then gloo) must store the scores one process stores;
- and the peak GPU memory of each stage.

A parity check fails (exit status 1) when a score differs from the CPU fp32 one by more than the
precision's tolerance (TOLERANCE), or when anything raises; changed decisions alone only warn.
Figures go to ``OUT/gpu_check.csv`` (stage, case, metric, value, unit, status) as they are
measured, the summary lines to ``OUT/gpu_check.log``, the machine's description to
``OUT/environment.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
for _path in (ROOT / "tests" / "perf", ROOT / "tests", ROOT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

# No network, and no progress bars from the libraries (set before they are imported).
QUIET_OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                 "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error",
                 "DIFFUSERS_VERBOSITY": "error"}

STAGES = ("clip-parity", "diffusion-parity", "processes", "finetune", "throughput")
PRECISIONS = ("fp32", "bf16", "fp16")
# Third-party modules the check needs, and the package that provides each: a bare GPU image may lack
# some (tests/gpu/wheels.txt). datasets is optional: without it the Winoground fixture is written in
# the dataset's older JSONL layout instead of parquet.
REQUIRED = {"torch": "torch", "torchvision": "torchvision", "numpy": "numpy", "PIL": "pillow",
            "open_clip": "open_clip_torch", "ftfy": "ftfy", "diffusers": "diffusers", "transformers": "transformers",
            "safetensors": "safetensors", "huggingface_hub": "huggingface_hub", "pandas": "pandas",
            "pyarrow": "pyarrow", "skimage": "scikit-image", "filelock": "filelock", "tqdm": "tqdm",
            "typer": "typer", "tabulate": "tabulate"}

# Largest |score difference| against CPU fp32 that still counts as the same computation. CLIP
# scores are cosines (within [-1, 1]); diffusion scores are differences of mean squared errors
# against unit-variance noise (order 1), so both are absolute. Chosen before any GPU run: about
# ten times the CPU autocast differences measured here on the tiny models (CLIP bf16 4.4e-3,
# fp16 5.9e-4; diffusion bf16 1.0e-3, fp16 1.4e-4), and for fp32 room for TF32 convolutions,
# which PyTorch uses on GPUs by default. Revise them with the first measured GPU figures.
TOLERANCE = {
    "clip": {"fp32": 2e-3, "fp16": 1e-2, "bf16": 5e-2},
    "diffusion": {"fp32": 2e-3, "fp16": 2e-3, "bf16": 1e-2},
}
# One process against two: the same computation in fp32 with TF32 off, only the items' batches
# differ, so anything beyond float rounding is a sharing-out bug.
PROCESS_TOLERANCE = 1e-5

# Seconds of the budget a compilation is allowed to start with (guesses: no GPU compile has been timed here).
COMPILE_NEEDS_S = {"tiny": 90.0, "sd21-base": 120.0}

WINOGROUND_ITEMS = 400  # the benchmark's size
# At the diffusion scorer's defaults a Winoground item costs 2 images x (2 captions + the empty
# prompt) x 10 timesteps = 60 UNet passes: 24,000 for the benchmark (README, "The diffusion scorer").
WINOGROUND_PASSES = 24_000

# Stable Diffusion 2.1-base's VAE and text encoder, at their real sizes (random weights).
# VAE: Stability-AI/stablediffusion configs/stable-diffusion/v2-inference.yaml (read in the copy at
# boringcrypto/stablediffusion), first_stage_config: ch 128, ch_mult [1, 2, 4, 4], num_res_blocks 2,
# z_channels 4, no attention resolutions, scale_factor 0.18215; diffusers names that
# block_out_channels (128, 256, 512, 512), layers_per_block 2, 4 latent channels, 32 norm groups
# (its default). Built here: 83.65 M parameters.
SD21_BASE_VAE_CONFIG = {
    "in_channels": 3, "out_channels": 3, "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4, "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2, "act_fn": "silu", "latent_channels": 4, "norm_num_groups": 32,
    "sample_size": 512, "scaling_factor": 0.18215,
}
# Text encoder: OpenCLIP ViT-H/14's text tower up to the penultimate layer, as SD 2.x uses it: the
# values of stabilityai/stable-diffusion-2-1's text_encoder/config.json as the Rust port
# LaurentMazare/diffusers-rs quotes them (src/transformers/clip.rs, Config::v2_1): width 1024,
# 23 layers, 16 heads, MLP 4096, GELU, 77 positions, projection 512, CLIP's 49,408-token
# vocabulary. Built here: 340.4 M parameters; the UNet (tests/perf/sd21_cost_model.py) 865.9 M.
SD21_TEXT_ENCODER_CONFIG = {
    "vocab_size": 49408, "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 23,
    "num_attention_heads": 16, "max_position_embeddings": 77, "hidden_act": "gelu", "projection_dim": 512,
    "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 49407,
}


# -- what a run is ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Settings:
    """Sizes of one run: the GPU run, or the CPU smoke run that proves the script itself."""

    smoke: bool
    device: str  # the side under test; the reference is always the CPU in fp32
    quick: bool = False
    budget_s: float = 450.0
    wino_items: int = 16
    zeroshot_bench: str = "zeroshot"
    diffusion_timesteps: int = 10  # the scorer's default
    unet_batches: tuple[int, ...] = (8, 32, 64)
    min_timing_s: float = 1.0
    min_calls: int = 3
    e2e_items: int = 32
    finetune_batch: int = 64  # FinetuneConfig's default global batch
    finetune_steps: int = 20
    process_timeout_s: float = 240.0
    workers: int | None = None  # image-decoding processes: the runner's default

    @classmethod
    def gpu(cls, quick: bool, budget_s: float) -> Settings:
        return cls(smoke=False, device="cuda", quick=quick, budget_s=budget_s)

    @classmethod
    def cpu_smoke(cls, budget_s: float) -> Settings:
        # small enough for about a minute of 2 CPU cores: CPU autocast kernels are slow, and only
        # the code paths matter here, not the figures
        return cls(smoke=True, device="cpu", quick=True, budget_s=budget_s, wino_items=4,
                   zeroshot_bench="zeroshot:folder:pets", diffusion_timesteps=1, unet_batches=(2, 4),
                   min_timing_s=0.0, min_calls=1, e2e_items=1, finetune_batch=4, finetune_steps=4,
                   process_timeout_s=300.0, workers=0)

    @property
    def compile(self) -> bool:
        return not self.quick and not self.smoke

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"


@dataclass
class Line:
    status: str  # PASS, FAIL, WARN, INFO, SKIP
    stage: str
    text: str


class Report:
    """Summary lines (printed and logged as they come) and the CSV of figures (rewritten after every
    figure, so a run stopped half-way still leaves what it measured)."""

    COLUMNS = ("stage", "case", "metric", "value", "unit", "status")

    def __init__(self, out: Path, settings: Settings) -> None:
        self.out = out
        self.settings = settings
        self.lines: list[Line] = []
        self.figures: list[dict[str, Any]] = []
        self.started = time.perf_counter()
        self.work = out  # the scratch folder, set by main()
        self.peaks: list[float] = []  # peaks of parts that reset the counter within a stage
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_check.log").write_text("")

    def line(self, status: str, stage: str, text: str) -> None:
        entry = Line(status, stage, text)
        self.lines.append(entry)
        shown = f"[{status}] {stage:<16} {text}"
        print(shown, flush=True)
        with open(self.out / "gpu_check.log", "a", encoding="utf-8") as f:
            f.write(shown + "\n")

    def figure(self, stage: str, case: str, metric: str, value: Any, unit: str = "", status: str = "") -> None:
        from harness.results import write_csv_atomic

        if isinstance(value, float) and math.isfinite(value):
            value = float(f"{value:.6g}")
        self.figures.append({"stage": stage, "case": case, "metric": metric, "value": value, "unit": unit,
                             "status": status})
        write_csv_atomic(self.out / "gpu_check.csv", self.figures, self.COLUMNS)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def left(self) -> float:
        return self.settings.budget_s - self.elapsed()

    def summary(self) -> str:
        results = [line for line in self.lines if not line.text.startswith("== ")]  # not the stage summaries
        counts = {s: sum(line.status == s for line in results) for s in ("PASS", "FAIL", "WARN", "INFO", "SKIP")}
        return (", ".join(f"{n} {s}" for s, n in counts.items() if n) + f" in {self.elapsed():.0f} s; figures in "
                f"{self.out / 'gpu_check.csv'}")


def stage_verdict(lines: Sequence[Line]) -> tuple[str, str]:
    """A stage's status (its worst check; INFO when it only measured) and its counts."""
    count = {status: sum(line.status == status for line in lines) for status in ("PASS", "WARN", "FAIL", "SKIP")}
    status = next((s for s in ("FAIL", "WARN", "PASS") if count[s]), "INFO")
    words = {"PASS": "passed", "WARN": "warned", "FAIL": "failed", "SKIP": "skipped"}
    parts = [f"{n} {words[s]}" for s, n in count.items() if n]
    measured = sum(line.status == "INFO" for line in lines)
    if measured:
        parts.append(f"{measured} measured")
    return status, ", ".join(parts) or "nothing run"


def exit_status(lines: Sequence[Line]) -> int:
    """1 when any check failed, else 0 (warnings, information and skipped parts do not fail a run)."""
    return 1 if any(line.status == "FAIL" for line in lines) else 0


# -- comparing scores -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Comparison:
    max_abs_diff: float
    spread: float  # standard deviation of the reference scores, for scale
    changed_items: int  # items whose benchmark outcome (text/image/group, top1/top5/prediction) differs
    items: int
    finite: bool
    same_items: bool

    def status(self, tolerance: float) -> str:
        if not (self.finite and self.same_items) or not self.max_abs_diff <= tolerance:
            return "FAIL"
        return "WARN" if self.changed_items else "PASS"

    def text(self, tolerance: float) -> str:
        if not self.same_items:
            return "the two runs scored different items"
        if not self.finite:
            return "non-finite scores"
        relative = f" ({self.max_abs_diff / self.spread:.2g}x the scores' spread)" if self.spread > 0 else ""
        return (f"max|d| {self.max_abs_diff:.2e} {'<=' if self.max_abs_diff <= tolerance else '>'} tol "
                f"{tolerance:.1e}{relative}; {self.changed_items}/{self.items} items change a decision")


def compare_scores(reference: dict[str, Any], other: dict[str, Any],
                   outcome: Callable[[str, Any], dict[str, Any]]) -> Comparison:
    """Compare two runs' score matrices, keyed by item id. ``outcome(item_id, matrix)`` is the
    benchmark's per-item decision record (``Benchmark.outcome``)."""
    import numpy as np

    same = set(reference) == set(other) and all(np.shape(reference[k]) == np.shape(other[k]) for k in reference)
    if not same:
        return Comparison(float("nan"), float("nan"), 0, len(reference), True, False)
    ids = sorted(reference)
    a = np.concatenate([np.ravel(reference[k]) for k in ids]).astype(float) if ids else np.zeros(0)
    b = np.concatenate([np.ravel(other[k]) for k in ids]).astype(float) if ids else np.zeros(0)
    finite = bool(np.isfinite(a).all() and np.isfinite(b).all())
    diff = float(np.max(np.abs(a - b))) if len(a) else 0.0
    changed = sum(outcome(k, reference[k]) != outcome(k, other[k]) for k in ids)
    return Comparison(diff, float(np.std(a)) if len(a) else 0.0, changed, len(ids), finite, True)


# -- builders: everything local, random weights ----------------------------------------------------

def ensure_plugins() -> None:
    """Register the built-in scorers and benchmarks in code when the checkout is not installed (a
    bare GPU machine runs the check from a copy of the tree, without the package's entry points)."""
    from benchmarks import PLUGINS as bench_plugins
    from harness.registry import BENCHMARKS, SCORERS
    from models import PLUGINS as model_plugins

    for registry, table, key in ((SCORERS, model_plugins, "scorers"), (BENCHMARKS, bench_plugins, "benchmarks")):
        known = set(registry.names())
        for name, (target, summary) in table[key].items():
            if name not in known:
                registry.add(name, target, summary, origin="tests/gpu/gpu_check.py")


class Builds:
    """Models and fixtures, each built on first use in the scratch folder ``work``."""

    def __init__(self, work: Path, settings: Settings, report: Report) -> None:
        self.work, self.settings, self.report = work, settings, report
        self._done: dict[str, Any] = {}

    def _once(self, key: str, build: Callable[[], Any]) -> Any:
        if key not in self._done:
            started = time.perf_counter()
            with _quiet():
                self._done[key] = build()
            self.report.figure("build", key, "seconds", time.perf_counter() - started, "s")
        return self._done[key]

    def tiny_clip(self) -> str:
        from factories import build_tiny_clip

        return self._once("tiny-clip", lambda: f"local-dir:{build_tiny_clip(self.work / 'tiny-clip').local_dir}")

    def tiny_sd(self) -> str:
        from factories_diffusion import build_tiny_sd

        return self._once("tiny-sd", lambda: str(build_tiny_sd(self.work / "tiny-sd")))

    def vit_b_32(self) -> str:
        """open_clip's ViT-B-32 architecture, random weights, as a local-dir: model."""
        def build() -> str:
            import open_clip
            import torch

            from models.clip import save_local_dir

            torch.manual_seed(0)
            model = open_clip.create_model("ViT-B-32")
            return f"local-dir:{save_local_dir(self.work / 'vit-b-32', model, open_clip.get_model_config('ViT-B-32'))}"

        return self._once("vit-b-32", build)

    def sd21_base(self) -> str:
        """A Stable Diffusion pipeline folder with SD 2.1-base's UNet, VAE and text encoder at real size
        (random weights, stored in fp16 as released checkpoints are; the loader reads them as fp32).
        Built on the GPU where there is one: initialising 1.3 billion parameters there takes seconds."""
        def build() -> str:
            import torch
            from diffusers import AutoencoderKL, UNet2DConditionModel
            from sd21_cost_model import SD21_BASE_UNET_CONFIG
            from transformers import CLIPTextConfig, CLIPTextModel

            from models.clip_tokenizer import build_clip_tokenizer
            from models.stable_diffusion import save_pipeline

            with torch.device(self.settings.device):
                torch.manual_seed(0)
                unet = UNet2DConditionModel(**SD21_BASE_UNET_CONFIG)
                vae = AutoencoderKL(**SD21_BASE_VAE_CONFIG)
                text_encoder = CLIPTextModel(CLIPTextConfig(**SD21_TEXT_ENCODER_CONFIG))
            for name, module in (("unet", unet), ("vae", vae), ("text_encoder", text_encoder)):
                self.report.figure("build", f"sd21-base/{name}", "parameters", sum(p.numel() for p in module.parameters()))
            folder = save_pipeline(self.work / "sd21-base", vae.cpu(), text_encoder.cpu(), build_clip_tokenizer(),
                                   unet.cpu(), half=True)
            return str(folder)

        return self._once("sd21-base", build)

    def data(self, bench: str, n: int) -> Path:
        """A data root holding ``bench``'s fixture (tests/benchmark_fixtures/) with ``n`` items."""
        from factories import write_benchmark_data, write_winoground_jsonl

        name = bench.partition(":")[0]

        def build() -> Path:
            root = self.work / f"data-{name}-{n}"
            if name == "winoground" and not datasets_importable():
                # the parquet writer needs `datasets`; the repository's older layout is as real
                write_winoground_jsonl(root / "winoground", n)
                self.report.line("INFO", "build", "no `datasets` here: the Winoground fixture uses the dataset's "
                                                  "older JSONL layout")
            else:
                write_benchmark_data(name, root, n)
            return root

        return self._once(f"fixture-{name}-{n}", build)

    def coco(self, n_images: int) -> Path:
        from factories import write_coco_captions

        def build() -> Path:
            root = self.work / f"coco-{n_images}"
            write_coco_captions(root, n_images=n_images)
            return root

        return self._once(f"fixture-coco-{n_images}", build)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Builders log warnings meant for users (open_clip: "No pretrained weights loaded"): hide them."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


# -- GPU helpers ------------------------------------------------------------------------------------

def _torch():
    import torch

    return torch


def synchronize(settings: Settings) -> None:
    if settings.cuda:
        _torch().cuda.synchronize()


def reset_peak(settings: Settings) -> None:
    torch = _torch()
    gc.collect()
    if settings.cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(settings: Settings) -> float:
    return _torch().cuda.max_memory_allocated() / 2 ** 30 if settings.cuda else float("nan")


@contextlib.contextmanager
def tf32_off(settings: Settings) -> Iterator[None]:
    """Full fp32 for matrix products and convolutions (PyTorch's GPU default lets convolutions use
    TF32), so that two runs differ only by how their items were batched."""
    torch = _torch()
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def is_out_of_memory(err: BaseException) -> bool:
    torch = _torch()
    while err is not None:
        if isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower():
            return True
        err = err.__cause__ or err.__context__
    return False


def environment(settings: Settings) -> dict[str, Any]:
    """What the figures were measured on."""
    import platform

    torch = _torch()
    from harness.results import git_commit

    env: dict[str, Any] = {
        "mode": "cpu-smoke" if settings.smoke else ("gpu-quick" if settings.quick else "gpu"),
        "python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "harness_commit": git_commit(),
    }
    for module in ("open_clip", "diffusers", "transformers", "huggingface_hub", "datasets"):
        with contextlib.suppress(Exception):  # version, and where it came from (carried wheels or the image)
            imported = __import__(module)
            env[module] = f"{imported.__version__} ({Path(imported.__file__).parent.parent})"
    if settings.cuda:
        props = torch.cuda.get_device_properties(0)
        env.update({
            "gpu": torch.cuda.get_device_name(0), "gpu_count": torch.cuda.device_count(),
            "capability": f"sm_{props.major}{props.minor}", "gpu_memory_gib": round(props.total_memory / 2 ** 30, 1),
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "bf16_supported": torch.cuda.is_bf16_supported(),
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        })
        with contextlib.suppress(Exception):
            version = torch.cuda.nccl.version()  # a tuple, or one number in older torch
            env["nccl"] = ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
    return env


# -- stage: parity ----------------------------------------------------------------------------------

def _scores_of(result) -> dict[str, Any]:
    return {item.id: matrix for item, matrix in zip(result.evaluation.items, result.evaluation.scores)}


def _outcome_function(bench: str, data_root: Path) -> Callable[[str, Any], dict[str, Any]]:
    from harness.registry import BENCHMARKS
    from harness.runner import parse_bench

    name, subset = parse_bench(bench)
    benchmark = BENCHMARKS.get(name)(data_root, subset)
    items = {item.id: item for item in benchmark.items()}
    return lambda item_id, matrix: benchmark.outcome(items[item_id], matrix)


def _parity_case(report: Report, stage: str, case: str, family: str, precision: str, reference: dict[str, Any],
                 result, outcome, seconds: float) -> tuple[float, str]:
    """One parity line and its figures; returns (share of the tolerance used, what)."""
    tolerance = TOLERANCE[family][precision.split("+")[0]]
    comparison = compare_scores(reference, _scores_of(result), outcome)
    status = comparison.status(tolerance)
    report.line(status, stage, f"{case} {precision}: {comparison.text(tolerance)} ({seconds:.1f} s)")
    for metric, value, unit in (("max_abs_diff", comparison.max_abs_diff, ""), ("tolerance", tolerance, ""),
                                ("reference_spread", comparison.spread, ""),
                                ("items_changed", comparison.changed_items, "items"),
                                ("items", comparison.items, "items"), ("seconds", seconds, "s")):
        report.figure(stage, f"{case}/{precision}", metric, value, unit, status if metric == "max_abs_diff" else "")
    return comparison.max_abs_diff / tolerance, f"{case} {precision}"


def _parity(report: Report, settings: Settings, stage: str, family: str,
            cases: Sequence[tuple[str, str, str, Path, dict[str, Any]]], precisions: Sequence[str]) -> str:
    """Each case (label, model, bench, data root, options): CPU fp32 once, then the device per precision.
    A precision written ``bf16+compile`` sets the scorer's ``compile`` option too. Returns the
    headline: the case that came closest to its tolerance."""
    from harness.runner import run

    used: list[tuple[float, str]] = []
    for label, model, bench, data_root, options in cases:
        case = f"{label} {bench}"
        common = {"scorer": family, "bench": bench, "model": model, "data_root": data_root,
                  "workers": settings.workers, "progress": False}
        try:
            reference = _scores_of(run(**common, device="cpu", options={**options, "precision": "fp32"},
                                       results_dir=report.work / stage / f"{label}-{bench}-cpu"))
            outcome = _outcome_function(bench, data_root)
        except Exception as err:  # noqa: BLE001 - a stage reports its failure and the run goes on
            _fail(report, stage, f"{case}: CPU fp32 reference", err)
            continue
        for precision in precisions:
            precision_only, _, extra = precision.partition("+")
            if extra == "compile" and report.left() < COMPILE_NEEDS_S["tiny"]:
                report.line("SKIP", stage, f"{case} {precision}: {report.left():.0f} s of the budget left")
                continue
            started = time.perf_counter()
            try:
                opts = {**options, "precision": precision_only, **({"compile": True} if extra == "compile" else {})}
                result = run(**common, device=settings.device, options=opts,
                             results_dir=report.work / stage / f"{label}-{bench}-{precision}")
            except Exception as err:  # noqa: BLE001
                _fail(report, stage, f"{case} {precision}", err)
                continue
            used.append(_parity_case(report, stage, case, family, precision, reference, result, outcome,
                                     time.perf_counter() - started))
    finite = [u for u in used if math.isfinite(u[0])]
    if not finite:
        return "nothing compared"
    share, what = max(finite)
    return f"closest to its tolerance: {what}, max|d| at {share:.2g} of it"


def stage_clip_parity(report: Report, settings: Settings, builds: Builds) -> str:
    models = [("tiny-clip", builds.tiny_clip())]
    if not settings.smoke:
        models.append(("vit-b-32", builds.vit_b_32()))
    benches = [("winoground", builds.data("winoground", settings.wino_items)),
               (settings.zeroshot_bench, builds.data("zeroshot", 2))]
    cases = [(label, model, bench, root, {"batch_size": 32}) for label, model in models for bench, root in benches]
    return _parity(report, settings, "clip-parity", "clip", cases, PRECISIONS)


def stage_diffusion_parity(report: Report, settings: Settings, builds: Builds) -> str:
    cases = [("tiny-sd", builds.tiny_sd(), "winoground", builds.data("winoground", settings.wino_items),
              {"timesteps": settings.diffusion_timesteps})]
    precisions = [*PRECISIONS, *(["bf16+compile"] if settings.compile else [])]
    if not settings.compile:
        report.line("SKIP", "diffusion-parity", "bf16+compile: " + ("off in --cpu-smoke" if settings.smoke else "--quick"))
    return _parity(report, settings, "diffusion-parity", "diffusion", cases, precisions)


# -- stage: throughput ------------------------------------------------------------------------------

def time_unet(unet, batch: int, settings: Settings, dtype, min_seconds: float) -> dict[str, float]:
    """UNet passes per second (one pass = one sample of a batch, as the scorer counts them) under
    autocast ``dtype``, with inputs shaped as the diffusion scorer feeds them."""
    torch = _torch()
    from harness.devices import autocast

    device = torch.device(settings.device)
    generator = torch.Generator().manual_seed(0)
    size, width = unet.config.sample_size, unet.config.cross_attention_dim
    latents = torch.randn(batch, unet.config.in_channels, size, size, generator=generator).to(device)
    timesteps = torch.full((batch,), 500, dtype=torch.long).to(device)
    text = torch.randn(batch, 77, width, generator=generator).to(device)
    with torch.inference_mode(), autocast(device, dtype):
        started = time.perf_counter()
        out = unet(latents, timesteps, encoder_hidden_states=text).sample
        synchronize(settings)
        first = time.perf_counter() - started
        if not bool(torch.isfinite(out).all()):
            raise FloatingPointError(f"the UNet gave non-finite outputs at batch {batch} under {dtype}")
        unet(latents, timesteps, encoder_hidden_states=text)  # a second warm-up call
        synchronize(settings)
        calls, started = 0, time.perf_counter()
        while calls < settings.min_calls or time.perf_counter() - started < min_seconds:
            unet(latents, timesteps, encoder_hidden_states=text)
            synchronize(settings)
            calls += 1
        elapsed = time.perf_counter() - started
    return {"passes_per_s": batch * calls / elapsed, "seconds_per_call": elapsed / calls, "first_call_s": first}


def _build_unet(settings: Settings):
    """SD 2.1-base's UNet on the device (the tiny test UNet in the smoke run), fp32 weights as the
    scorer loads them: autocast supplies the precision."""
    torch = _torch()
    from diffusers import UNet2DConditionModel

    if settings.smoke:
        from factories_diffusion import tiny_unet_kwargs

        config, label = tiny_unet_kwargs(), "tiny-unet"
    else:
        from sd21_cost_model import SD21_BASE_UNET_CONFIG

        config, label = SD21_BASE_UNET_CONFIG, "sd21-base-unet"
    with torch.device(settings.device):
        torch.manual_seed(0)
        unet = UNet2DConditionModel(**config)
    return unet.eval().requires_grad_(False), label


def stage_throughput(report: Report, settings: Settings, builds: Builds) -> str:
    torch = _torch()
    stage = "throughput"
    unet, label = _build_unet(settings)
    dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16}
    measured: dict[tuple[str, int], dict[str, float]] = {}

    def measure(name: str, model, batch: int, dtype) -> None:
        try:
            timing = time_unet(model, batch, settings, dtype, settings.min_timing_s)
        except Exception as err:  # noqa: BLE001
            _fail(report, stage, f"{label} {name} batch {batch}", err)
            return
        measured[(name, batch)] = timing
        extra = f", first call {timing['first_call_s']:.1f} s (compiling)" if "compile" in name else ""
        report.line("INFO", stage, f"{label} {name} batch {batch}: {timing['passes_per_s']:.1f} UNet passes/s "
                                   f"({timing['seconds_per_call'] * 1000:.1f} ms per call{extra})")
        for metric, unit in (("passes_per_s", "1/s"), ("seconds_per_call", "s"), ("first_call_s", "s")):
            report.figure(stage, f"{label}/{name}/batch{batch}", metric, timing[metric], unit)

    for name in ("fp16", "bf16"):
        for batch in settings.unet_batches:
            measure(name, unet, batch, dtypes[name])
    # the projected whole Winoground run at the scorer's defaults (batch 64, 10 timesteps, auto precision)
    batch = max(settings.unet_batches)
    # precision=auto: bf16 autocast where the GPU has it, else fp16 (fp32 on the CPU, not measured here)
    default_precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if settings.cuda else "bf16"

    def project(name: str) -> None:
        timing = measured.get((name, batch))
        if timing:
            seconds = WINOGROUND_PASSES / timing["passes_per_s"]
            default = " (the scorer's default)" if name == default_precision and settings.cuda else ""
            report.line("INFO", stage, f"projected Winoground diffusion run, {WINOGROUND_PASSES:,} UNet passes at "
                                       f"batch {batch}, {name}{default}: {_duration(seconds)} from the passes alone")
            report.figure(stage, f"projection/unet-only/{name}", "winoground_seconds", seconds, "s")

    for name in (default_precision, *(n for n in ("bf16", "fp16") if n != default_precision)):
        project(name)
    end_to_end = _end_to_end(report, settings, builds)
    headline = (f"{label} {default_precision} batch {batch}: {measured[(default_precision, batch)]['passes_per_s']:.1f} "
                f"passes/s" if (default_precision, batch) in measured else f"{label}: not measured")
    if end_to_end is not None:
        headline += f"; Winoground at the defaults, scorer end to end: {_duration(end_to_end)}"

    # compilation last: it may take minutes (never timed on a GPU here), and the budget decides how much runs
    if not settings.compile:
        report.line("SKIP", stage, "bf16+compile: " + ("off in --cpu-smoke" if settings.smoke else "--quick"))
        return headline
    compiled = torch.compile(unet)  # what the scorer's compile=true does
    # largest batch first: the scorer's full batches compile statically, a smaller one recompiles
    # once with a dynamic batch dimension, and the third size reuses that
    for batch_size in sorted(settings.unet_batches, reverse=True):
        if report.left() < COMPILE_NEEDS_S["sd21-base"]:
            report.line("SKIP", stage, f"{label} bf16+compile batch {batch_size}: {report.left():.0f} s of the "
                                       "budget left")
            continue
        measure("bf16+compile", compiled, batch_size, torch.bfloat16)
    project("bf16+compile")
    if ("bf16+compile", batch) in measured:
        headline += f"; bf16+compile batch {batch}: {measured[('bf16+compile', batch)]['passes_per_s']:.1f} passes/s"
    return headline


def _end_to_end(report: Report, settings: Settings, builds: Builds) -> float | None:
    """The diffusion scorer itself at its defaults on the Winoground fixture (VAE, text encoder, noise,
    UNet, transfers), timed after a warm-up pass over a few items; returns the projected seconds of a
    whole Winoground run. Images decode inline: the fixture's are tiny, and decoding workers would
    add a start-up that a whole run pays once but these few items would be charged for 25 times over."""
    from harness.api import ScorerConfig
    from harness.registry import BENCHMARKS, SCORERS
    from harness.runner import evaluate
    from harness.store import ScoreStore

    stage = "throughput"
    n = settings.e2e_items
    try:
        model = builds.tiny_sd() if settings.smoke else builds.sd21_base()
        label = "tiny-sd" if settings.smoke else "sd21-base"
        scorer = SCORERS.get("diffusion")(ScorerConfig(model=model, device=settings.device))
        benchmark = BENCHMARKS.get("winoground")(builds.data("winoground", max(n, settings.wino_items)))
        items = benchmark.items()[:n]
        evaluate(scorer, benchmark, ScoreStore(report.work / stage / "warm.sqlite"), items=items[:4], workers=0,
                 progress=False)
        before = scorer.unet_passes
        synchronize(settings)
        started = time.perf_counter()
        evaluate(scorer, benchmark, ScoreStore(report.work / stage / "timed.sqlite"), items=items, workers=0,
                 progress=False)
        synchronize(settings)
        seconds = time.perf_counter() - started
        passes = scorer.unet_passes - before
    except Exception as err:  # noqa: BLE001
        _fail(report, stage, "diffusion scorer end to end", err)
        return None
    rate = passes / seconds
    projected = WINOGROUND_ITEMS * (seconds / n)
    per_item = passes / n
    status = "INFO" if settings.smoke or per_item == WINOGROUND_PASSES / WINOGROUND_ITEMS else "WARN"
    report.line(status, stage, f"diffusion scorer end to end on {label} at its defaults: {n} Winoground item{'s' * (n != 1)}, "
                               f"{passes} UNet passes ({per_item:g} per item) in {seconds:.2f} s = {rate:.1f} "
                               f"passes/s; a whole Winoground run projects to {_duration(projected)}")
    report.figure(stage, f"projection/scorer/{label}", "passes_per_s", rate, "1/s")
    report.figure(stage, f"projection/scorer/{label}", "passes_per_item", per_item, "passes", status)
    report.figure(stage, f"projection/scorer/{label}", "winoground_seconds", projected, "s")
    return projected


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


# -- stage: fine-tuning -----------------------------------------------------------------------------

def steady_samples_per_s(rows: Sequence[dict[str, str]], batch: int, skip: int = 2) -> float:
    """Samples per second after the first ``skip`` steps, from losses.csv's running average (step k's
    ``samples_per_s`` is (k + 1) x batch over the seconds since the loop started)."""
    if len(rows) <= skip:
        skip = 0
    elapsed = [(k + 1) * batch / float(row["samples_per_s"]) for k, row in enumerate(rows)]
    if skip == 0:
        return len(rows) * batch / elapsed[-1]
    return (len(rows) - skip) * batch / (elapsed[-1] - elapsed[skip - 1])


def stage_finetune(report: Report, settings: Settings, builds: Builds) -> str:
    from models.finetune import FinetuneConfig, finetune, iter_losses

    stage = "finetune"
    if settings.smoke:
        clip, sd, label = builds.tiny_clip(), builds.tiny_sd(), "tiny-clip + tiny-sd"
    else:
        clip, sd, label = builds.vit_b_32(), builds.sd21_base(), "vit-b-32 + sd21-base"
    data = builds.coco(settings.finetune_batch)
    rates: list[str] = []
    for mode in ("full", "detached"):
        batch = settings.finetune_batch
        while True:
            out = report.work / stage / f"{mode}-{batch}"
            config = FinetuneConfig(clip=clip, sd=sd, out=str(out), data_root=str(data), batch_size=batch,
                                    epochs=10 ** 4, max_steps=settings.finetune_steps, sds_grad=mode,
                                    precision="bf16", device=settings.device, grad_norm_every=0,
                                    workers=4 if settings.cuda else 0)
            report.peaks.append(peak_gib(settings))  # before the counter restarts
            reset_peak(settings)
            started = time.perf_counter()
            error: str | None = None
            out_of_memory = False
            try:
                finetune(config, progress=False)
            except Exception as err:  # noqa: BLE001
                # keep text only: the exception's frames hold the failed run's models on the GPU
                error, out_of_memory = _error_text(err), is_out_of_memory(err)
            seconds = time.perf_counter() - started
            if error is not None and settings.cuda and out_of_memory and batch > 8:
                report.line("WARN", stage, f"{mode}: batch {batch} ran out of GPU memory; trying {batch // 2}")
                report.figure(stage, f"{mode}/batch{batch}", "out_of_memory", 1, "", "WARN")
                batch //= 2
                continue
            break
        case = f"{mode} {label}, batch {batch}, {settings.finetune_steps} steps, bf16"
        if error is not None:
            _fail(report, stage, case, error)
            continue
        rows = list(iter_losses(out))
        rate = steady_samples_per_s(rows, batch)
        peak = peak_gib(settings)
        report.peaks.append(peak)
        finite = all(math.isfinite(float(r["clip"])) and math.isfinite(float(r["sds"])) for r in rows)
        status = "PASS" if finite and len(rows) == settings.finetune_steps else "FAIL"
        memory = f", peak {peak:.1f} GiB" if settings.cuda else ""
        report.line(status, stage, f"{case}: {rate:.1f} samples/s after 2 warm-up steps{memory}, "
                                   f"L_SDS {float(rows[-1]['sds']):.4f} at the last step ({seconds:.0f} s with loading)")
        report.figure(stage, f"{mode}/batch{batch}", "samples_per_s", rate, "1/s", status)
        rates.append(f"{mode} {rate:.1f} samples/s at batch {batch}" + (f", {peak:.1f} GiB" if settings.cuda else ""))
        report.figure(stage, f"{mode}/batch{batch}", "peak_gpu_memory", peak, "GiB")
        report.figure(stage, f"{mode}/batch{batch}", "seconds_with_loading", seconds, "s")
    return "; ".join(rates) or "nothing measured"


# -- stage: several processes -----------------------------------------------------------------------

PROCESS_RUNS = ("clip", "diffusion")


def _process_runs(settings: Settings, builds: Builds) -> list[dict[str, Any]]:
    return [
        {"scorer": "clip", "model": builds.tiny_clip(), "options": {"precision": "fp32", "batch_size": 8}},
        {"scorer": "diffusion", "model": builds.tiny_sd(),
         "options": {"precision": "fp32", "batch_size": 16, "timesteps": settings.diffusion_timesteps}},
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(report: Report, settings: Settings, spec: dict[str, Any], folder: Path) -> tuple[bool, str, list[dict]]:
    """Start two ranks of this file's child mode, as torchrun would, but both on GPU 0 (LOCAL_RANK 0:
    there is one GPU). Returns (both succeeded, the error text, each rank's output)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.json").write_text(json.dumps(spec))
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        if settings.smoke:
            env["OMP_NUM_THREADS"] = "1"
        log_file = open(folder / f"rank{rank}.log", "w")
        procs.append((subprocess.Popen([sys.executable, __file__, "--child", str(folder / "spec.json")],
                                       stdout=log_file, stderr=subprocess.STDOUT, env=env), log_file))
    # NCCL refuses two ranks on one GPU at once; a short limit bounds the cost if it hangs instead
    limit = min(90.0, settings.process_timeout_s) if spec["backend"] == "nccl" else settings.process_timeout_s
    deadline = time.perf_counter() + limit
    codes = []
    for proc, log_file in procs:
        try:
            codes.append(proc.wait(timeout=max(1.0, deadline - time.perf_counter())))
        except subprocess.TimeoutExpired:
            for other, _ in procs:
                other.kill()
            codes.append(None)
        log_file.close()
    outputs = []
    for rank in range(2):
        path = folder / f"rank{rank}.json"
        outputs.append(json.loads(path.read_text()) if path.is_file() else {})
    if all(code == 0 for code in codes):
        return True, "", outputs
    text = "\n".join((folder / f"rank{r}.log").read_text(errors="replace") for r in range(2))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    key = next((line for line in lines if "Duplicate GPU" in line), None)
    reason = key or (lines[-1] if lines else "no output")
    if None in codes:
        reason = f"timed out after {limit:.0f} s; {reason}"
    return False, reason[:400], outputs


def stage_processes(report: Report, settings: Settings, builds: Builds) -> str:
    from harness.runner import run

    stage = "processes"
    torch = _torch()
    data = builds.data("winoground", settings.wino_items)
    runs = _process_runs(settings, builds)
    outcome = _outcome_function("winoground", data)
    single: dict[str, dict[str, Any]] = {}
    rows_single: dict[str, list] = {}
    try:
        with tf32_off(settings):
            for spec in runs:
                result = run(scorer=spec["scorer"], bench="winoground", model=spec["model"], data_root=data,
                             device=settings.device, options=spec["options"], workers=settings.workers,
                             results_dir=report.work / stage / "one", progress=False)
                single[spec["scorer"]] = _scores_of(result)
                rows_single[spec["scorer"]] = [(r["subset"], r["metric"], r["value"]) for r in result.rows]
    except Exception as err:  # noqa: BLE001
        _fail(report, stage, "one process", err)
        return "the one-process reference failed"

    backends = ["gloo"]
    verdicts: list[str] = []
    if settings.cuda:
        if torch.distributed.is_nccl_available():
            backends.insert(0, "nccl")
        else:
            report.line("INFO", stage, "nccl: not in this torch build; gloo on the GPU")
    peaks = []
    for backend in backends:
        spec = {"backend": backend, "device": settings.device, "runs": runs, "data_root": str(data),
                "results_dir": str(report.work / stage / f"two-{backend}"), "workers": settings.workers,
                "out": str(report.work / stage / f"two-{backend}")}
        started = time.perf_counter()
        ok, reason, outputs = _launch(report, settings, spec, report.work / stage / f"two-{backend}")
        seconds = time.perf_counter() - started
        peaks += [o.get("peak_gib", float("nan")) for o in outputs if o]
        where = "on one GPU" if settings.cuda else "on the CPU"
        if not ok:
            if backend == "nccl":
                # expected: NCCL 2.5 and later refuse two ranks on one GPU ("Duplicate GPU detected")
                expected = "Duplicate GPU" in reason
                report.line("INFO" if expected else "WARN", stage,
                            f"nccl: 2 processes {where} did not run ({reason}); "
                            + ("NCCL refuses two ranks on one GPU, so gloo follows" if expected else "gloo follows"))
                report.figure(stage, "two/nccl", "ran", 0, "", "INFO" if expected else "WARN")
                verdicts.append("nccl refused two ranks on one GPU" if expected else "nccl failed")
                continue
            report.line("FAIL", stage, f"{backend}: 2 processes {where} failed: {reason}")
            report.figure(stage, f"two/{backend}", "ran", 0, "", "FAIL")
            verdicts.append(f"{backend} failed")
            continue
        worst = 0.0
        rank0 = outputs[0]
        for scorer in PROCESS_RUNS:
            comparison = compare_scores(single[scorer], {k: _array(v) for k, v in rank0["scores"][scorer].items()},
                                        outcome)
            same_rows = [tuple(r) for r in rank0["rows"][scorer]] == rows_single[scorer]
            status = comparison.status(PROCESS_TOLERANCE)
            if status == "PASS" and not same_rows:
                status = "WARN"
            report.line(status, stage, f"{backend}, 2 processes {where}, tiny {scorer} fp32 (TF32 off), Winoground "
                                       f"fixture: {comparison.text(PROCESS_TOLERANCE)} against 1 process; result rows "
                                       f"{'identical' if same_rows else 'differ'} ({seconds:.0f} s for both scorers)")
            report.figure(stage, f"two/{backend}/{scorer}", "max_abs_diff", comparison.max_abs_diff, "", status)
            report.figure(stage, f"two/{backend}/{scorer}", "items_changed", comparison.changed_items, "items")
            report.figure(stage, f"two/{backend}/{scorer}", "rows_identical", int(same_rows), "")
            worst = max(worst, comparison.max_abs_diff) if comparison.same_items else float("nan")
        report.figure(stage, f"two/{backend}", "seconds", seconds, "s")
        verdicts.append(f"{backend}: 2 processes against 1, max|d| {worst:.1e}")
        break  # NCCL where possible, gloo otherwise: one backend that ran is the check
    finite = [p for p in peaks if math.isfinite(p)]
    if finite:
        report.line("INFO", stage, f"peak GPU memory of each of the 2 processes: {max(finite):.2f} GiB at most")
        report.figure(stage, "two", "peak_gpu_memory_per_process", max(finite), "GiB")
    return "; ".join(verdicts)


def _array(value: Any):
    import numpy as np

    return np.asarray(value, dtype=float)


def child(spec_path: Path) -> int:
    """One rank of the processes stage: join the group, score, write what this rank saw."""
    import torch
    import torch.distributed as dist

    from harness.runner import run

    ensure_plugins()
    spec = json.loads(Path(spec_path).read_text())
    rank = int(os.environ["RANK"])
    if spec["backend"] == "gloo" and spec["device"] != "cpu":
        # the harness picks NCCL for GPU processes; joining the group first makes it gloo on the GPU
        dist.init_process_group("gloo")
    cuda = spec["device"] != "cpu"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    settings = Settings(smoke=not cuda, device=spec["device"])
    out: dict[str, Any] = {"rank": rank, "scores": {}, "rows": {}}
    with tf32_off(settings):
        for r in spec["runs"]:
            result = run(scorer=r["scorer"], bench="winoground", model=r["model"], data_root=Path(spec["data_root"]),
                         device=spec["device"], options=r["options"], workers=spec["workers"],
                         results_dir=Path(spec["results_dir"]), progress=False)
            if rank == 0:  # rank 0 read every rank's scores back from the shared store
                out["scores"][r["scorer"]] = {k: v.tolist() for k, v in _scores_of(result).items()}
                out["rows"][r["scorer"]] = [(row["subset"], row["metric"], row["value"]) for row in result.rows]
    out["peak_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else float("nan")
    (Path(spec["out"]) / f"rank{rank}.json").write_text(json.dumps(out))
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return 0


# -- running the stages -----------------------------------------------------------------------------

def _error_text(err: BaseException) -> str:
    """The error's first line, then its whole traceback."""
    first = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {first[:300]}\n" + "".join(traceback.format_exception(err))


def _fail(report: Report, stage: str, case: str, err: BaseException | str) -> None:
    """A FAIL line with the error's first line; its traceback goes to the log file only."""
    text = err if isinstance(err, str) else _error_text(err)
    first, _, trace = text.partition("\n")
    report.line("FAIL", stage, f"{case}: {first}")
    with open(report.out / "gpu_check.log", "a", encoding="utf-8") as f:
        f.write(trace)


STAGE_FUNCTIONS = {
    "clip-parity": stage_clip_parity,
    "diffusion-parity": stage_diffusion_parity,
    "processes": stage_processes,
    "finetune": stage_finetune,
    "throughput": stage_throughput,
}


def missing_modules() -> list[str]:
    """Packages whose module does not import here (a wrong version can fail to import too)."""
    import importlib

    missing = []
    for module, package in REQUIRED.items():
        try:
            importlib.import_module(module)
        except Exception as err:  # noqa: BLE001 - ImportError, or a version clash raising anything
            missing.append(f"{package} ({type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''})")
    return missing


def datasets_importable() -> bool:
    try:
        import datasets  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--cpu-smoke", action="store_true", help="the same stages on tiny models on the CPU")
    parser.add_argument("--quick", action="store_true", help="no torch.compile (compilation takes minutes; not timed here yet)")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, from {', '.join(STAGES)}")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "gpu-check",
                        help="where gpu_check.csv, gpu_check.log and environment.json go")
    parser.add_argument("--work", type=Path, default=None,
                        help="scratch folder for models and fixtures (default: a temporary folder, removed after)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="optional parts (compilation) are skipped when less than they need is left of this "
                             "many seconds (default 450 on a GPU, 600 for --cpu-smoke)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    for key, value in QUIET_OFFLINE.items():
        os.environ.setdefault(key, value)
    if args.child:
        return child(args.child)
    missing = missing_modules()
    if missing:
        print(f"missing Python packages: {', '.join(missing)}. Carry them as wheels (tests/gpu/wheels.txt lists "
              "versions) and pass --wheels DIR to check.sh; README.md, 'Tests and measurements', says how.",
              file=sys.stderr)
        return 3
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        parser.error(f"unknown stage(s) {unknown}; choose from {', '.join(STAGES)}")
    torch = _torch()
    if args.cpu_smoke:
        settings = Settings.cpu_smoke(args.budget_s or 600.0)
    else:
        if not torch.cuda.is_available():
            print("torch sees no CUDA device here; run with --cpu-smoke to check the script on the CPU",
                  file=sys.stderr)
            return 2
        settings = Settings.gpu(args.quick, args.budget_s or 450.0)

    ensure_plugins()
    report = Report(args.out, settings)
    env = environment(settings)
    from harness.results import write_json

    write_json(args.out / "environment.json", env)
    described = (f"{env['gpu']} ({env['capability']}, {env['gpu_memory_gib']} GiB), CUDA {env['cuda']}, NCCL "
                 f"{env.get('nccl', '?')}, TF32 matmul {env['tf32_matmul']} / cuDNN {env['tf32_cudnn']}"
                 if settings.cuda else f"CPU only ({env['cpu_count']} cores), parity 'GPU' side = CPU")
    report.line("INFO", "environment", f"{env['mode']}: {described}; torch {env['torch']}, harness "
                                       f"{env['harness_commit']}")
    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gpu-check-")))
        work.mkdir(parents=True, exist_ok=True)
        report.work = work
        builds = Builds(work, settings, report)
        for stage in [s for s in STAGES if s in stages]:
            reset_peak(settings)
            report.peaks = []
            first = len(report.lines)
            started = time.perf_counter()
            try:
                headline = STAGE_FUNCTIONS[stage](report, settings, builds)
            except Exception as err:  # noqa: BLE001 - one stage's crash must not hide the others
                _fail(report, stage, "stage", err)
                headline = "crashed"
            seconds = time.perf_counter() - started
            report.figure(stage, "stage", "seconds", seconds, "s")
            if settings.cuda:
                peak = max([peak_gib(settings), *[p for p in report.peaks if math.isfinite(p)]])
                memory = f"peak GPU memory {peak:.2f} GiB (this process)"
                report.figure(stage, "stage", "peak_gpu_memory", peak, "GiB")
            else:
                memory = "no GPU memory on the CPU"
            status, counts = stage_verdict(report.lines[first:])
            report.line(status, stage, f"== {counts}: {headline}; {memory}; {seconds:.0f} s")
    print(f"SUMMARY: {report.summary()}", flush=True)
    with open(report.out / "gpu_check.log", "a", encoding="utf-8") as f:
        f.write(f"SUMMARY: {report.summary()}\n")
    return exit_status(report.lines)


if __name__ == "__main__":
    sys.exit(main())

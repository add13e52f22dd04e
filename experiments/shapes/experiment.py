"""The SDS-CLIP experiment in miniature, on the shapes world with the toy models (``harness toy experiment``).

Questions (Basu et al., arXiv 2307.09233):
(a) the premise: does the diffusion score beat CLIP on relation and attribute swaps?
(b) the claim: does CLIP fine-tuned with L_CLIP + lambda L_SDS beat the lambda = 0 control?

Runs: the toy CLIP and the toy diffusion score once each; for every seed the control
(lambda 0) and, for every h_w design and SDS gradient mode, SDS-CLIP; all fine-tuned from the
toy CLIP and the toy pipeline on the same freshly rendered training split, and scored by the
ordinary runner on every shapes subset. Everything lands in ``<out>/`` (its own leaderboard.csv,
runs/ and score store; the fine-tuned folders in ``<out>/models/``, not meant for git).

Paired comparisons come from ``harness.compare``, written to ``<out>/comparisons.csv`` (and
``comparisons/``, which ``harness report --results-dir <out>`` links to the items): per seed, every
SDS-CLIP arm against the control of that seed on the same items (one comparison per seed, so Holm's
correction runs over the arms), and the toy diffusion score against the toy CLIP. Across seeds
``summary.csv`` aggregates them: per subset and metric, the mean over seeds with a t-interval; for
each arm the mean of its per-seed paired differences to the control with a t-interval over seeds
(the fine-tuning run is the unit that varies between seeds, so the interval is over seeds, not
items), and how many seeds' item-level tests (exact McNemar, Holm over the arms) reach p < 0.05 in
each direction. Rerunning skips finished fine-tunings, scorings and comparisons.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import shapes
from harness.errors import HarnessError

log = logging.getLogger("harness")

# two-sided 95% Student t quantiles by degrees of freedom (for intervals across a few seeds)
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


@dataclass(frozen=True)
class ExperimentPlan:
    seeds: tuple[int, ...] = (0, 1, 2)
    heads: tuple[str, ...] = ("linear", "normalised", "frozen-fit")
    grads: tuple[str, ...] = ("full", "detached")
    lam: float = 1.0
    steps: int = 150
    batch_size: int = 64
    lr: float = 1e-3  # LayerNorms of a small model trained from scratch: larger than for a pretrained CLIP
    head_lr: float = 1e-2
    items: int = 400  # per shapes subset
    data_seed: int = 100  # the training split rendered for the fine-tuning (not the toy models' seed 0)


@dataclass(frozen=True)
class Arm:
    """One fine-tuning configuration; the control has lam 0 (and no head or gradient mode)."""

    name: str
    lam: float
    head: str
    grad: str


def arms(plan: ExperimentPlan) -> list[Arm]:
    out = [Arm("control", 0.0, "linear", "full")]
    out += [Arm(f"sds-{head}-{grad}", plan.lam, head, grad) for head in plan.heads for grad in plan.grads]
    return out


def run_experiment(out: Path, plan: ExperimentPlan = ExperimentPlan(), toy_root: Path | None = None,
                   device: str = "auto", progress: bool = True) -> Path:
    """Fine-tune, score and summarise; returns the summary CSV's path."""
    from harness.runner import run as run_benchmark
    from models.finetune import HEADS, FinetuneConfig, finetune
    from models.toy_models import toy_folder

    bad = [h for h in plan.heads if h not in HEADS] + [g for g in plan.grads if g not in ("full", "detached")]
    if bad or not plan.seeds:
        raise HarnessError(f"experiment plan: {bad or 'no seeds'} not valid; --heads takes {', '.join(HEADS)}, "
                           "--grads full and/or detached, --seeds at least one seed")
    out = Path(out)
    clip, sd = f"local-dir:{toy_folder('toy:clip', toy_root)}", str(toy_folder("toy:sd", toy_root))
    _check_same_plan(out / "plan.json", plan)
    data = out / "data" / "captions.csv"
    if not data.is_file():
        shapes.write_training_set(out / "data", n=plan.steps * plan.batch_size, seed=plan.data_seed)
    (out / "plan.json").write_text(json.dumps(asdict(plan), indent=2) + "\n", encoding="utf-8")

    singles: dict[str, str] = {}  # arm -> run id, for the single runs
    arm_runs: dict[tuple[str, int], str] = {}  # (arm, seed) -> run id

    def score(scorer: str, model: str) -> list[dict[str, Any]]:
        done = _rows_of(out, scorer, model)
        if done:
            return done
        result = run_benchmark(scorer=scorer, bench="shapes", model=model, results_dir=out, device=device,
                               bench_options={"n": plan.items}, progress=progress, workers=0)
        return list(result.rows)

    per_run: list[dict[str, Any]] = []
    for scorer, model, name in (("clip", clip, "toy clip"), ("diffusion", sd, "toy diffusion score")):
        rows = score(scorer, model)
        singles[name] = rows[0]["run_id"]
        per_run += [{**row, "arm": name, "seed": ""} for row in rows]
    for seed in plan.seeds:
        for arm in arms(plan):
            folder = out / "models" / f"{arm.name}-seed{seed}"
            if not _finished(folder):
                config = FinetuneConfig(
                    clip=clip, sd=sd, out=str(folder), captions=str(data), lam=arm.lam, head=arm.head,
                    sds_grad=arm.grad, lr=plan.lr, head_lr=plan.head_lr, batch_size=plan.batch_size, epochs=1,
                    warmup_steps=max(1, plan.steps // 10), max_steps=plan.steps, save_every=plan.steps,
                    grad_norm_every=10, workers=0, device=device, seed=seed)
                finetune(config, resume=(folder / "trainer_state.pt").exists(), progress=progress)
            rows = score("sds-clip", str(folder))
            arm_runs[(arm.name, seed)] = rows[0]["run_id"]
            per_run += [{**row, "arm": arm.name, "seed": seed} for row in rows]
    _write_csv(out / "per_run.csv", per_run,
               ["arm", "seed", "subset", "metric", "value", "ci_low", "ci_high", "n", "run_id"])
    comparisons = paired_comparisons(out, singles, arm_runs, plan)
    summary = summarise(per_run, comparisons)
    path = out / "summary.csv"
    _write_csv(path, summary, list(summary[0]))
    _write_csv(out / "shortcut.csv", shortcut_table(out / "models"), list(SHORTCUT_COLUMNS))
    from experiments.shapes.figures import shapes_experiment_figure, shapes_experiment_table
    from harness.files import atomic_write_text

    shapes_experiment_figure(path, out / "shapes_experiment.png")
    atomic_write_text(out / "summary.md", "# The shapes experiment\n\n![shapes experiment](shapes_experiment.png)\n\n"
                      + shapes_experiment_table(path) + "\n")
    return path


# what every run of a folder must share; seeds, heads and gradient modes may be added later
SHARED_PLAN = ("lam", "steps", "batch_size", "lr", "head_lr", "items", "data_seed")


def _check_same_plan(path: Path, plan: ExperimentPlan) -> None:
    """A rerun reuses the finished fine-tunings and scores in ``out``: refuse if they were made
    with other settings, rather than mixing them."""
    if not path.is_file():
        return
    saved = json.loads(path.read_text(encoding="utf-8"))
    changed = [f"{k}: {saved.get(k)} -> {getattr(plan, k)}" for k in SHARED_PLAN if saved.get(k) != getattr(plan, k)]
    if changed:
        raise HarnessError(f"{path.parent} holds an experiment with other settings ({'; '.join(changed)}); "
                           "pass another --out, or delete that folder to start over")


def _finished(folder: Path) -> bool:
    manifest = folder / "finetune_config.json"
    if not manifest.is_file():
        return False
    extra = json.loads(manifest.read_text(encoding="utf-8")).get("extra", {})
    return extra.get("step") == extra.get("total_steps")


def _rows_of(out: Path, scorer: str, model: str) -> list[dict[str, Any]]:
    """The rows of the newest finished run of ``scorer`` on ``model`` in ``out`` (found by the model
    path each run's config.json keeps), so that a rerun does not score it again."""
    wanted = str(Path(model.removeprefix("local-dir:")).resolve())
    newest = None
    for config_path in sorted((out / "runs").glob("*/config.json")):
        config = json.loads(config_path.read_text(encoding="utf-8"))
        given = str(config.get("scorer_config", {}).get("model", ""))
        if (config.get("status") == "done" and config.get("scorer") == scorer
                and str(Path(given.removeprefix("local-dir:")).resolve()) == wanted):
            newest = config_path.parent
    if newest is None:
        return []
    with open(newest / "metrics.csv", newline="", encoding="utf-8") as f:
        return [{k: (float(v) if k in ("value", "ci_low", "ci_high") else v) for k, v in r.items()}
                for r in csv.DictReader(f)]


def paired_comparisons(out: Path, singles: dict[str, str], arm_runs: dict[tuple[str, int], str],
                       plan: ExperimentPlan) -> list[dict[str, Any]]:
    """The experiment's paired comparisons, from ``harness.compare`` (appended to
    ``<out>/comparisons.csv``): the toy diffusion score against the toy CLIP, and for each seed
    every SDS-CLIP arm against the control of that seed. A comparison of the same runs already in
    the file is reused. Each row gains ``arm`` (the run B's arm) and ``seed``."""
    from harness.compare import compare, read_comparisons

    diffusion = singles["toy diffusion score"]
    jobs: list[tuple[Any, list[str], dict[str, str]]] = [("", [singles["toy clip"], diffusion],
                                                          {diffusion: "toy diffusion score"})]
    for seed in plan.seeds:
        names = {arm_runs[(arm.name, seed)]: arm.name for arm in arms(plan) if arm.name != "control"}
        jobs.append((seed, [arm_runs[("control", seed)], *names], names))
    existing = read_comparisons(out)
    rows = []
    for seed, runs, names in jobs:
        found = _finished_comparison(existing, runs) or compare(runs, out).rows
        rows += [{**row, "arm": names[row["run_b"]], "seed": seed} for row in found]
    return rows


def _finished_comparison(existing: list[dict[str, str]], runs: list[str]) -> list[dict[str, str]]:
    """The rows of the newest comparison in comparisons.csv of exactly these runs (the first against
    each other one), or [] when there is none."""
    wanted = {(runs[0], b) for b in runs[1:]}
    by_id: dict[str, list[dict[str, str]]] = {}
    for row in existing:
        by_id.setdefault(row["comparison_id"], []).append(row)
    for rows in reversed(list(by_id.values())):
        if {(r["run_a"], r["run_b"]) for r in rows} == wanted:
            return rows
    return []


def t_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and 95% Student-t interval of a few values (nan bounds for a single value)."""
    x = np.asarray(values, dtype=float)
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    half = T_975.get(len(x) - 1, 1.96) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return mean, mean - half, mean + half


def summarise(per_run: list[dict[str, Any]], comparisons: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per arm, subset and metric: mean over seeds with a t-interval. For fine-tuned arms also the
    mean over seeds of the paired difference to the control of the same seed, as ``comparisons``
    (``harness.compare``'s rows with ``arm`` and ``seed``) give it, with a t-interval over seeds,
    and how many seeds' Holm-corrected item-level p-values are below 0.05 with the arm above
    (seeds_better) or below (seeds_worse) the control. Single runs (toy CLIP, diffusion) keep
    their bootstrap interval over items."""
    keys = sorted({(r["subset"], r["metric"]) for r in per_run})
    names = list(dict.fromkeys(r["arm"] for r in per_run))
    paired: dict[tuple[str, str, str], list[tuple[float, float | None]]] = {}
    for c in comparisons:
        if str(c["seed"]) != "":  # the per-seed comparisons against the control
            p = c.get("p_holm")
            paired.setdefault((c["arm"], c["subset"], c["metric"]), []).append(
                (float(c["difference"]), None if p in (None, "") else float(p)))
    out = []
    for arm in names:
        mine = [r for r in per_run if r["arm"] == arm]
        seeds = sorted({str(r["seed"]) for r in mine})
        for subset, metric in keys:
            rows = [r for r in mine if (r["subset"], r["metric"]) == (subset, metric)]
            if not rows:
                continue
            if seeds == [""]:
                row = rows[0]
                mean, low, high = float(row["value"]), float(row["ci_low"]), float(row["ci_high"])
                interval = "bootstrap over items"
            else:
                mean, low, high = t_interval([float(r["value"]) for r in rows])
                interval = f"t over {len(rows)} seeds"
            entry = {"arm": arm, "subset": subset, "metric": metric, "mean": round(mean, 3),
                     "ci_low": round(low, 3), "ci_high": round(high, 3), "interval": interval, "runs": len(rows),
                     "diff_vs_control": "", "diff_ci_low": "", "diff_ci_high": "", "seeds_better": "",
                     "seeds_worse": ""}
            pairs = paired.get((arm, subset, metric), [])
            if pairs:
                d, d_low, d_high = t_interval([diff for diff, _ in pairs])
                entry.update(diff_vs_control=round(d, 3), diff_ci_low=round(d_low, 3), diff_ci_high=round(d_high, 3),
                             seeds_better=sum(p is not None and p < 0.05 and diff > 0 for diff, p in pairs),
                             seeds_worse=sum(p is not None and p < 0.05 and diff < 0 for diff, p in pairs))
            out.append(entry)
    return out


SHORTCUT_COLUMNS = ("run", "steps", "clip_first", "clip_last", "sds_first", "sds_last", "grad_norm_clip_mean",
                    "grad_norm_sds_mean", "sds_to_clip_grad_ratio")


def shortcut_table(models_dir: Path) -> list[dict[str, Any]]:
    """From each run's losses.csv: both loss terms at the start and the end (mean of the first and
    last 10 steps), and the mean gradient norm each term sends into CLIP's trained LayerNorms."""
    from models.finetune import iter_losses

    def mean(history: list[dict[str, str]], key: str, part: slice) -> float:
        """Mean of a column over some steps, skipping steps that did not log it (empty or nan)."""
        vals = [float(r[key]) for r in history[part] if r.get(key) not in (None, "")]
        vals = [v for v in vals if not math.isnan(v)]
        return round(float(np.mean(vals)), 5) if vals else math.nan

    rows = []
    for folder in sorted(p for p in Path(models_dir).iterdir() if (p / "losses.csv").is_file()):
        history = list(iter_losses(folder))
        clip_norm = mean(history, "grad_norm_clip", slice(None))
        sds_norm = mean(history, "grad_norm_sds", slice(None))
        rows.append({
            "run": folder.name, "steps": len(history),
            "clip_first": mean(history, "clip", slice(0, 10)), "clip_last": mean(history, "clip", slice(-10, None)),
            "sds_first": mean(history, "sds", slice(0, 10)), "sds_last": mean(history, "sds", slice(-10, None)),
            "grad_norm_clip_mean": clip_norm, "grad_norm_sds_mean": sds_norm,
            "sds_to_clip_grad_ratio": round(sds_norm / clip_norm, 5) if clip_norm else math.nan,
        })
    return rows


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    from harness.results import write_csv_atomic

    if not rows:
        raise HarnessError(f"nothing to write to {path}")
    write_csv_atomic(path, rows, columns)

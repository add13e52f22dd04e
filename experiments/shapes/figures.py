"""Figures and tables of the shapes experiment and of the toy models' training, drawn with the
report's plotting helper (harness.report.pyplot)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from harness.report import pyplot

# chance levels of the shapes subsets: 1x2 swaps, Winoground's strict 2x2 metrics, 8 shapes
SHAPES_CHANCE = {("relation", "accuracy"): 50.0, ("attribute", "accuracy"): 50.0, ("winoground", "text"): 25.0,
                 ("winoground", "image"): 25.0, ("winoground", "group"): 16.67, ("zeroshot", "accuracy"): 12.5}


def shapes_experiment_figure(summary_csv: Path, path: Path) -> Path:
    """One panel per shapes subset and metric, one bar per arm of the experiment (toy CLIP, toy
    diffusion score, the lambda = 0 control, each SDS-CLIP design), with 95% intervals: across
    seeds for fine-tuned arms, over items for the single runs."""
    plt = pyplot()
    import numpy as np
    import pandas as pd

    df = pd.read_csv(summary_csv)
    df = df[~df["subset"].astype(str).str.contains("=", regex=False)]
    panels = list(dict.fromkeys(zip(df["subset"], df["metric"])))
    arms = list(dict.fromkeys(df["arm"]))
    colours = plt.get_cmap("tab10")
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, (subset, metric) in zip(axes.flat, panels):
        mine = df[(df["subset"] == subset) & (df["metric"] == metric)].set_index("arm").reindex(arms)
        values = mine["mean"].to_numpy(dtype=float)
        low = np.nan_to_num(np.clip(values - mine["ci_low"].to_numpy(dtype=float), 0, None))
        high = np.nan_to_num(np.clip(mine["ci_high"].to_numpy(dtype=float) - values, 0, None))
        ax.bar(range(len(arms)), values, yerr=np.vstack([low, high]), capsize=2,
               color=[colours(k % 10) for k in range(len(arms))])
        ax.set_xticks(range(len(arms)), arms, rotation=60, ha="right", fontsize=7)
        chance = SHAPES_CHANCE.get((subset, metric))
        if chance is not None:
            ax.axhline(chance, color="gray", lw=0.8, ls="--")
        ax.set_title(f"shapes:{subset} {metric}" + (f" (chance {chance:g})" if chance is not None else ""), fontsize=9)
        ax.set_ylim(0, 105)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle("Shapes world: toy CLIP, toy diffusion score, lambda=0 control and SDS-CLIP (95% intervals)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def continued_steps(log):
    """A training log (pandas) whose "unet-extended" steps count on from the last "unet" step: the
    second stage of a two-stage design continues its first."""
    log = log.copy()
    first, second = log["stage"] == "unet", log["stage"] == "unet-extended"
    if first.any():
        log.loc[second, "step"] += log.loc[first, "step"].max()
    return log


def toy_training_figure(log_csv: Path, path: Path) -> Path:
    """The toy models' learning curves from ``training_log.csv``: each stage's loss, and the swap
    accuracies of CLIP and of the diffusion model on held-out validation scenes."""
    plt = pyplot()
    import pandas as pd

    df = continued_steps(pd.read_csv(log_csv))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for stage, rows in df[df["metric"] == "loss"].groupby("stage", sort=False):
        left.plot(rows["step"], rows["value"], marker="o", label=stage)
    left.set_yscale("log")
    left.set(xlabel="step", ylabel="training loss (mean since last point)", title="losses")
    left.legend(fontsize=8)
    colour = {stage: f"C{k}" for k, stage in enumerate(dict.fromkeys(df["stage"]))}  # as in the loss panel
    for (stage, metric), rows in df[df["metric"].str.endswith("_acc")].groupby(["stage", "metric"], sort=False):
        kind = metric.removesuffix("_acc")
        right.plot(rows["step"], 100 * rows["value"], marker="o", color=colour[stage],
                   ls="-" if kind == "relation" else ":", label=f"{stage}: {kind} swaps")
    right.axhline(50, color="gray", lw=0.8, ls="--")
    right.set(xlabel="step", ylabel="% caption beats its swap", ylim=(0, 100),
              title="held-out validation scenes")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def shapes_experiment_table(summary_csv: Path) -> str:
    """The summary as a markdown table: one row per arm, one column per subset/metric, each cell
    "mean [low, high]"; for SDS-CLIP arms a second line per cell with the paired difference to
    the control, and how many seeds' item-level tests found the arm above (▲) or below (▼) the
    control at p < 0.05 (Holm over the arms), where any did."""
    import csv

    from tabulate import tabulate

    with open(summary_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    columns = list(dict.fromkeys((r["subset"], r["metric"]) for r in rows))
    table = []
    for arm in dict.fromkeys(r["arm"] for r in rows):
        cells = {(r["subset"], r["metric"]): r for r in rows if r["arm"] == arm}
        line = [arm]
        for key in columns:
            r = cells.get(key)
            if r is None:
                line.append("")
                continue
            text = f"{float(r['mean']):.1f} [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]"
            if r["diff_vs_control"] != "":
                text += (f"<br>Δ {float(r['diff_vs_control']):+.1f} "
                         f"[{_fmt(r['diff_ci_low'])}, {_fmt(r['diff_ci_high'])}]")
                better, worse = int(r.get("seeds_better") or 0), int(r.get("seeds_worse") or 0)
                if better or worse:
                    text += f" {'▲' * better}{'▼' * worse}"
            line.append(text)
        table.append(line)
    return tabulate(table, headers=["arm", *[f"{s} {m}" for s, m in columns]], tablefmt="github")


def _fmt(value: str) -> str:
    return "–" if value in ("", "nan") else f"{float(value):.1f}"


def layout_tries_figure(curves: Sequence[tuple[str, Path, int]], path: Path) -> Path:
    """Each toy-pipeline design's validation relation accuracy over its UNet steps, from the
    ``training_log.csv`` its training wrote. ``curves``: (label, log, steps trained before this log
    began: a further-trained pipeline continues its base's curve)."""
    plt = pyplot()
    import pandas as pd

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    for k, (label, log_csv, offset) in enumerate(curves):
        df = pd.read_csv(log_csv)
        denoiser = continued_steps(df[df["stage"].str.startswith("unet")])
        for axis, metric in ((left, "relation_acc"), (right, "attribute_acc")):
            rows = denoiser[denoiser["metric"] == metric]
            axis.plot(rows["step"] + offset, 100 * rows["value"], marker="o", ms=3, color=f"C{k % 10}",
                      ls="-" if k < 10 else "--", label=label)
    for axis, kind in ((left, "relation"), (right, "attribute")):
        axis.axhline(50, color="gray", lw=0.8, ls="--")
        axis.set(xlabel="UNet + text encoder steps", title=f"{kind} swaps, held-out validation scenes", ylim=(0, 102))
    left.set_ylabel("% caption beats its swap")
    right.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

"""`harness report`: the leaderboard as figures and a markdown page people would rather look at.

For every benchmark: one bar chart of its main metrics (subsets without a ``field=value``
breakdown) for each scorer/model, with the 95% bootstrap intervals as error bars; for Winoground
also the scores by ``collapsed_tag``; the shapes experiment's figure and table when
``<results-dir>/shapes-experiment/summary.csv`` exists. The newest run of each (scorer, model,
benchmark, subset, metric) is shown. Output: PNG files and ``report.md`` linking them, in
``<results-dir>/report/``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from harness import results

if TYPE_CHECKING:
    import pandas as pd


def _newest(df: pd.DataFrame) -> pd.DataFrame:
    keys = ["scorer", "model", "pretrained", "benchmark", "subset", "metric"]
    return df.sort_values("date", kind="stable").drop_duplicates(keys, keep="last")


def _label(row: pd.Series) -> str:
    model = str(row["model"])
    model = model if len(model) <= 40 else "..." + model[-37:]
    pretrained = f" {row['pretrained']}" if row["pretrained"] and len(str(row["pretrained"])) <= 30 else ""
    return f"{row['scorer']}: {model}{pretrained}"


def _pyplot():
    """matplotlib's pyplot on the Agg backend: files only, no display needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _bars(df: pd.DataFrame, title: str, path: Path) -> None:
    """Grouped bars: one group per subset/metric column, one bar per scorer/model, CI whiskers."""
    plt = _pyplot()
    import numpy as np

    df = df.assign(column=df["subset"].astype(str) + "\n" + df["metric"], label=df.apply(_label, axis=1))
    columns = list(dict.fromkeys(df["column"]))
    labels = list(dict.fromkeys(df["label"]))
    width = 0.8 / max(1, len(labels))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(columns) * max(1, len(labels)) ** 0.5 + 2), 4.2))
    x = np.arange(len(columns))
    for k, label in enumerate(labels):
        mine = df[df["label"] == label].set_index("column").reindex(columns)
        values = mine["value"].to_numpy(dtype=float)
        low = np.clip(values - mine["ci_low"].to_numpy(dtype=float), 0, None)
        high = np.clip(mine["ci_high"].to_numpy(dtype=float) - values, 0, None)
        errors = np.nan_to_num(np.vstack([low, high]))
        ax.bar(x + (k - (len(labels) - 1) / 2) * width, values, width, yerr=errors, capsize=2, label=label)
    ax.set_xticks(x, columns, fontsize=8)
    ax.set_ylabel("%  (95% bootstrap interval)")
    ax.set_ylim(0, 105)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# chance levels of the shapes subsets: 1x2 swaps, Winoground's strict 2x2 metrics, 8 shapes
SHAPES_CHANCE = {("relation", "accuracy"): 50.0, ("attribute", "accuracy"): 50.0, ("winoground", "text"): 25.0,
                 ("winoground", "image"): 25.0, ("winoground", "group"): 16.67, ("zeroshot", "accuracy"): 12.5}


def shapes_experiment_figure(summary_csv: Path, path: Path) -> Path:
    """One panel per shapes subset and metric, one bar per arm of the experiment (toy CLIP, toy
    diffusion score, the lambda = 0 control, each SDS-CLIP design), with 95% intervals: across
    seeds for fine-tuned arms, over items for the single runs."""
    plt = _pyplot()
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


def toy_training_figure(log_csv: Path, path: Path) -> Path:
    """The toy models' learning curves from ``training_log.csv``: each stage's loss, and the swap
    accuracies of CLIP and of the diffusion model on held-out validation scenes."""
    plt = _pyplot()
    import pandas as pd

    df = pd.read_csv(log_csv)
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
    the control."""
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
            line.append(text)
        table.append(line)
    return tabulate(table, headers=["arm", *[f"{s} {m}" for s, m in columns]], tablefmt="github")


def _fmt(value: str) -> str:
    return "–" if value in ("", "nan") else f"{float(value):.1f}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def make_report(results_dir: Path, out_dir: Path | None = None) -> Path:
    """Write the figures and report.md; returns the markdown file's path."""
    from tabulate import tabulate

    results_dir = Path(results_dir)
    out_dir = Path(out_dir or results_dir / "report")
    out_dir.mkdir(parents=True, exist_ok=True)
    df = results.read_leaderboard(results_dir)
    lines = ["# Results", "", f"From `{results_dir / results.LEADERBOARD}`: the newest run of each scorer, "
             "model, benchmark, subset and metric. Values are percentages; whiskers and brackets are 95% "
             "bootstrap intervals over items.", ""]
    if df.empty:
        lines.append("No results yet: run `harness run ...` first.")
    else:
        df = _newest(df)
        for benchmark in sorted(df["benchmark"].unique()):
            rows = df[df["benchmark"] == benchmark]
            main = rows[~rows["subset"].astype(str).str.contains("=", regex=False)]
            lines += [f"## {benchmark}", ""]
            if not main.empty:
                figure = f"{_slug(benchmark)}.png"
                _bars(main, benchmark, out_dir / figure)
                lines += [f"![{benchmark}]({figure})", ""]
                table = [[_label(r), r["subset"], r["metric"], f"{r['value']:.2f}",
                          f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}]" if r["ci_low"] == r["ci_low"] else "", r["n"]]
                         for _, r in main.iterrows()]
                lines += [tabulate(table, headers=["scorer: model", "subset", "metric", "value", "95% CI", "n"],
                                   tablefmt="github"), ""]
            tags = rows[rows["subset"].astype(str).str.startswith("collapsed_tag=")]
            if benchmark == "winoground" and not tags.empty:
                figure = "winoground-by-tag.png"
                _bars(tags, "winoground by collapsed_tag", out_dir / figure)
                lines += ["### By tag", "", f"![winoground by tag]({figure})", ""]
    experiment = results_dir / "shapes-experiment" / "summary.csv"
    if experiment.is_file():
        shapes_experiment_figure(experiment, out_dir / "shapes-experiment.png")
        lines += ["## The shapes experiment", "", f"From `{experiment}` (`harness toy experiment`): means over seeds "
                  "with t-intervals for fine-tuned arms, bootstrap intervals over items for single runs.", "",
                  "![shapes experiment](shapes-experiment.png)", "", shapes_experiment_table(experiment), ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path

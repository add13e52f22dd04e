"""`harness report`: the leaderboard as figures, a markdown page, and a browsable HTML report.

For every benchmark: one bar chart of its main metrics (subsets without a ``field=value``
breakdown) for each scorer/model, with the 95% bootstrap intervals as error bars, and one chart per
breakdown field (Winoground's ``collapsed_tag=...``, ARO's ``vg-relation/relation=...``). The
newest run of each (scorer, model, benchmark, subset, metric) is shown. Output: PNG files and
``report.md`` linking them, in ``<results-dir>/report/``, beside ``index.html``: the sortable
leaderboard, the paired comparisons and an item browser per benchmark (``harness.report_html``).
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


def pyplot():
    """matplotlib's pyplot on the Agg backend: files only, no display needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _bars(df: pd.DataFrame, title: str, path: Path) -> None:
    """Grouped bars: one group per subset/metric column, one bar per scorer/model, CI whiskers."""
    plt = pyplot()
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


def _value(row: pd.Series) -> str:
    """A row's value for the table; a metric the run could not compute says why (its bar is absent)."""
    why = results.not_computed_reason(row.get("details", ""))
    if why:
        return f"not computed: {why}"
    return f"{row['value']:.2f}" if row["value"] == row["value"] else ""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def make_report(results_dir: Path, out_dir: Path | None = None, html: bool = True, max_items: int | None = None,
                thumbnails: bool = True) -> Path:
    """Write the figures, report.md and (``html``) index.html with its data and thumbnails; returns
    the markdown file's path. ``max_items``: items per benchmark in the browser (default
    ``harness.report_html.MAX_ITEMS``; items that comparisons point at are always there)."""
    from tabulate import tabulate

    results_dir = Path(results_dir)
    out_dir = Path(out_dir or results_dir / "report")
    out_dir.mkdir(parents=True, exist_ok=True)
    df = results.read_leaderboard(results_dir)
    lines = ["# Results", "", f"From `{results_dir / results.LEADERBOARD}`: the newest run of each scorer, "
             "model, benchmark, subset and metric. Values are percentages; whiskers and brackets are 95% "
             "bootstrap intervals over items.", ""]
    if html:
        lines += ["Open [index.html](index.html) in a browser (from disk, no server) for the sortable leaderboard, "
                  "the paired comparisons (`harness compare`) and an item browser per benchmark.", ""]
    figures: list[tuple[str, str]] = []
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
                figures.append((benchmark, figure))
                lines += [f"![{benchmark}]({figure})", ""]
                table = [[_label(r), r["subset"], r["metric"], _value(r),
                          f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}]" if r["ci_low"] == r["ci_low"] else "", r["n"]]
                         for _, r in main.iterrows()]
                lines += [tabulate(table, headers=["scorer: model", "subset", "metric", "value", "95% CI", "n"],
                                   tablefmt="github"), ""]
            breakdowns = rows[rows["subset"].astype(str).str.contains("=", regex=False)]
            fields = dict.fromkeys(breakdowns["subset"].astype(str).str.rsplit("=", n=1).str[0])
            for field in fields:
                mine = breakdowns[breakdowns["subset"].astype(str).str.startswith(f"{field}=")]
                figure = f"{_slug(benchmark)}-by-{_slug(field)}.png"
                _bars(mine, f"{benchmark} by {field}", out_dir / figure)
                figures.append((f"{benchmark} by {field}", figure))
                lines += [f"### By {field}", "", f"![{benchmark} by {field}]({figure})", ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    if html:
        from harness.report_html import MAX_ITEMS, write_html

        write_html(results_dir, out_dir, None if df.empty else df, figures,
                   MAX_ITEMS if max_items is None else max_items, thumbnails)
    return path

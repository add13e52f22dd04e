"""Tidy result rows: the append-only ``leaderboard.csv``, per-run folders, and readable pivots.

``leaderboard.csv`` holds one row per (run, scorer, model, benchmark, subset, metric). Appends
are locked (concurrent runs lose nothing) and atomic (a temp file replaces the old one, so a crash
never leaves half a row). Each run also gets ``runs/<run_id>/`` with its resolved configuration,
its rows and its per-item scores.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock

import harness
from harness.files import atomic_write, atomic_write_text

if TYPE_CHECKING:
    import pandas as pd

LEADERBOARD = "leaderboard.csv"

COLUMNS = [
    "run_id", "date", "scorer", "model", "pretrained", "benchmark", "subset", "metric",
    "value", "ci_low", "ci_high", "n", "benchmark_version", "harness_version", "git_commit",
    "device", "seed", "scorer_key", "details",
]


@functools.cache
def git_commit() -> str:
    """The commit of this harness checkout, with "+dirty" when tracked files differ; else "unknown"."""
    repo = Path(harness.__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def portable_model_name(name: str, weights: str = "") -> str:
    """A model as result rows show it, the same on every machine: an architecture, tag, hub id or
    ``toy:`` name as given; a local folder or file by its name and the hash of its weights, where
    known (``local-dir:sds-clip@1a2b3c4d5e6f``). The full path stays in the run's config.json."""
    prefix = "local-dir:" if name.startswith("local-dir:") else ""
    text = name[len(prefix):]
    path = Path(text).expanduser()
    if not (prefix or path.is_absolute() or text.startswith((".", "~")) or path.exists()):
        return name
    return f"{prefix}{path.name}" + (f"@{weights[:12]}" if weights else "")


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):  # numpy floats too: their repr would be "np.float64(...)"
        return "" if value != value else repr(float(value))  # NaN -> empty cell
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Rows as CSV text with a header, values formatted for people and for pandas alike."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: _fmt(row.get(c)) for c in columns})
    return buffer.getvalue()


def write_csv_atomic(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Write a whole CSV atomically (a crash leaves the old file or the new one, never half)."""
    atomic_write_text(Path(path), csv_text(rows, columns))


def append_rows(results_dir: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Append rows to ``<results_dir>/leaderboard.csv`` under a lock, atomically."""
    path = Path(results_dir) / LEADERBOARD
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=120):
        existing: list[dict[str, str]] = []
        columns = list(COLUMNS)
        if path.exists():
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                existing = list(reader)
                # keep columns a newer or older harness wrote, after ours
                columns += [c for c in (reader.fieldnames or []) if c not in columns]
        write_csv_atomic(path, [*existing, *rows], columns)
    return path


def write_run_files(
    run_dir: Path,
    rows: Sequence[Mapping[str, Any]],
    item_records: Iterable[Mapping[str, Any]],
) -> None:
    """The run's metrics.csv and item_scores.jsonl (config.json is written by the runner)."""
    write_csv_atomic(run_dir / "metrics.csv", rows, COLUMNS)

    def write_items(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            for record in item_records:
                f.write(json.dumps(record, default=_json_default) + "\n")

    atomic_write(run_dir / "item_scores.jsonl", write_items)


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    atomic_write_text(Path(path), json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_leaderboard(results_dir: Path) -> pd.DataFrame:
    import pandas as pd

    path = Path(results_dir) / LEADERBOARD
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS)
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    for column in ("value", "ci_low", "ci_high"):
        df[column] = pd.to_numeric(df[column], errors="coerce")
    df["n"] = pd.to_numeric(df["n"], errors="coerce").astype("Int64")
    return df


def pivot(
    df: pd.DataFrame,
    benchmarks: Sequence[str] | None = None,
    breakdowns: bool = False,
) -> pd.DataFrame:
    """Scorer x model rows, benchmark/subset/metric columns, the newest value of each cell.

    Breakdown subsets (``field=value``) are left out unless ``breakdowns`` is set.
    """
    import pandas as pd

    if df.empty:
        return pd.DataFrame()
    df = df.copy()
    if benchmarks:
        df = df[df["benchmark"].isin(benchmarks) | df["benchmark"].str.split(":").str[0].isin(benchmarks)]
    if not breakdowns:
        df = df[~df["subset"].astype(str).str.contains("=", regex=False)]
    if df.empty:
        return pd.DataFrame()
    df["column"] = df["benchmark"] + "/" + df["subset"].astype(str) + "/" + df["metric"]
    df = df.sort_values("date", kind="stable").drop_duplicates(
        ["scorer", "model", "pretrained", "column"], keep="last"
    )
    wide = df.pivot(index=["scorer", "model", "pretrained"], columns="column", values="value")
    wide = wide[list(dict.fromkeys(df["column"]))]  # columns in the order the benchmarks wrote them
    wide.columns.name = None
    return wide.reset_index()


def format_table(wide: pd.DataFrame, floatfmt: str = ".2f") -> str:
    """The wide table for people; a cell without a number (never run, or not computed) shows "-"."""
    from tabulate import tabulate

    if wide.empty:
        return "(no results yet)"
    shown = wide.astype(object).where(wide.notna(), None)
    return tabulate(shown, headers="keys", tablefmt="github", showindex=False, floatfmt=floatfmt, missingval="-")


def not_computed_reason(details: Any) -> str | None:
    """Why a row has no value (its ``details["not_computed"]``), from a row dict or a leaderboard
    cell holding the details as JSON; None for a computed row."""
    if isinstance(details, str):
        try:
            details = json.loads(details) if details else {}
        except json.JSONDecodeError:
            return None
    return details.get("not_computed") if isinstance(details, Mapping) else None


def format_metric_rows(rows: Sequence[Mapping[str, Any]]) -> str:
    """The table `harness run` prints at the end of a run; rows that could not be computed say
    so, and why, under it."""
    from tabulate import tabulate

    table, notes = [], []
    for r in rows:
        ci = f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}]" if r.get("ci_low") is not None else ""
        why = not_computed_reason(r.get("details"))
        if why:
            notes.append(f"not computed: {r['benchmark']} {r['subset']} {r['metric']}: {why}")
        table.append([r["benchmark"], r["subset"], r["metric"], "not computed" if why else f"{r['value']:.2f}", ci,
                      r["n"]])
    text = tabulate(table, headers=["benchmark", "subset", "metric", "value (%)", "95% CI", "n"], tablefmt="github")
    return "\n".join([text, *dict.fromkeys(notes)])

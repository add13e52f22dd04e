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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock

import harness
from harness.errors import HarnessError
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


@dataclass
class ParsedLeaderboard:
    """A leaderboard file read record by record: the good rows, and the bad ones with why."""

    columns: list[str]
    rows: list[dict[str, str]]
    bad: list[tuple[int, str]]  # (line number where the record starts, what is wrong)
    raw: bytes


NUMERIC_COLUMNS = ("value", "ci_low", "ci_high", "n")
HOW_TO_FIX = ("Edit or delete that line (every row needs {n} comma-separated fields; a field with a comma or quote "
              "must be quoted, with quotes doubled inside), or move the file away to start a new one.")


def parse_leaderboard(path: Path) -> ParsedLeaderboard:
    """Read ``leaderboard.csv`` strictly: the header must hold every column this harness writes,
    and each record must have as many fields as the header, no line break inside a field (which is
    what an unclosed quote makes of the following rows) and numbers where numbers belong."""
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        return ParsedLeaderboard([], [], [(line, f"byte 0x{raw[err.start]:02x} is not UTF-8 text")], raw)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, [])
    except csv.Error as err:
        return ParsedLeaderboard([], [], [(1, f"the header does not parse: {err}")], raw)
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        return ParsedLeaderboard(header, [], [(1, f"the header lacks the column(s) {', '.join(missing)}")], raw)
    rows, bad = [], []
    start = reader.line_num + 1
    while True:
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            bad.append((start, f"does not parse as CSV: {err}"))
            break
        problem = _record_problem(header, record)
        if problem:
            bad.append((start, problem))
        elif record:
            rows.append(dict(zip(header, record)))
        start = reader.line_num + 1
    return ParsedLeaderboard(header, rows, bad, raw)


def _record_problem(header: list[str], record: list[str]) -> str:
    if not record:
        return ""  # an empty line
    if any("\n" in field or "\r" in field for field in record):
        return "a field runs over several lines (an unclosed quote?), swallowing the rows after it"
    if len(record) != len(header):
        return f"{len(record)} fields where the header has {len(header)}"
    row = dict(zip(header, record))
    for column in NUMERIC_COLUMNS:
        value = row[column].strip()
        if value:
            try:
                float(value)
            except ValueError:
                return f"{column} is {value!r}, not a number"
    if not row["run_id"] or not row["benchmark"] or not row["metric"]:
        return "run_id, benchmark or metric is empty"
    return ""


def check_leaderboard(results_dir: Path) -> None:
    """Refuse a leaderboard a new run could not append to (or that has lost rows), naming the
    line; called before any scoring starts."""
    path = Path(results_dir) / LEADERBOARD
    if not path.is_file():
        return
    parsed = parse_leaderboard(path)
    if parsed.bad:
        line, why = parsed.bad[0]
        more = f" ({len(parsed.bad) - 1} more bad line(s) after it)" if len(parsed.bad) > 1 else ""
        raise HarnessError(f"{path} line {line}: {why}{more}. Nothing was scored or written. "
                           + HOW_TO_FIX.format(n=len(parsed.columns) or len(COLUMNS)))


def append_rows(results_dir: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Append rows to ``<results_dir>/leaderboard.csv`` under a lock, atomically. The bytes already
    there are kept exactly (a hand edit is never rewritten); the new rows follow the file's own
    column order."""
    path = Path(results_dir) / LEADERBOARD
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=120):
        if not path.exists():
            atomic_write_text(path, csv_text(rows, COLUMNS))
            return path
        check_leaderboard(results_dir)
        parsed = parse_leaderboard(path)
        body = csv_text(rows, parsed.columns).split("\r\n", 1)[1]  # without the header
        existing = parsed.raw.decode("utf-8")
        if existing and not existing.endswith(("\n", "\r")):
            existing += "\r\n"
        atomic_write_text(path, existing + body)
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


def process_stamp() -> dict[str, Any]:
    """Who runs this: host, process id and its start time (so a reused process id is not
    mistaken for the run's process)."""
    import os
    import socket

    return {"host": socket.gethostname(), "pid": os.getpid(), "pid_started": _process_start(os.getpid())}


def _process_start(pid: int) -> str | None:
    """The start time of a process in clock ticks since boot (Linux), or None where unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[19]  # field 22 of stat, counted after the command name
    except (OSError, IndexError):
        return None


def stale_runs(results_dir: Path) -> list[tuple[str, str]]:
    """Runs in ``results_dir`` whose config.json still says "running" although their process is
    gone (killed, or the machine went down): (run id, why we think so)."""
    import json
    import os
    import socket

    out = []
    for config_path in sorted((Path(results_dir) / "runs").glob("*/config.json")):
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if config.get("status") != "running":
            continue
        host, pid = config.get("host"), config.get("pid")
        if host is None or pid is None:
            out.append((config_path.parent.name, "it says 'running' but records no process (an older harness)"))
        elif host == socket.gethostname():
            alive = True
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                alive = False
            except PermissionError:
                pass  # someone else's process of that id
            if not alive or _process_start(int(pid)) != config.get("pid_started"):
                out.append((config_path.parent.name, f"its process {pid} on this host is gone"))
    return out


def read_leaderboard(results_dir: Path, bad_lines: list[tuple[int, str]] | None = None) -> pd.DataFrame:
    """The leaderboard's rows as a DataFrame (value, intervals and n as numbers). Lines that do not
    parse are left out and, when ``bad_lines`` is a list, reported there as (line, why)."""
    import pandas as pd

    path = Path(results_dir) / LEADERBOARD
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS)
    parsed = parse_leaderboard(path)
    if bad_lines is not None:
        bad_lines.extend(parsed.bad)
    df = pd.DataFrame(parsed.rows, columns=parsed.columns or COLUMNS, dtype=str)
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

"""The browsable part of `harness report`: ``index.html`` in the report folder, which opens from
disk in any browser with no server and no network.

The page (plain JavaScript and CSS in ``harness/report_assets/``, no library) shows:

- the leaderboard (the newest row of each scorer, model, benchmark, subset and metric), sortable
  by any column, each value with its 95% interval drawn and written;
- the paired comparisons of ``comparisons.csv`` (``harness compare``), each row linking to the
  items where A is right and B wrong, and the reverse (from ``comparisons/<id>.json``);
- an item browser per benchmark: each item's images as thumbnails written into the folder, its
  captions, and every run's score matrix with the decision of each image row marked right or
  wrong, filtered by subset, by tag (any field of the items' meta), by run A right and run B wrong
  on any outcome, and by comparison; paginated, with lazily loaded thumbnails;
- the figures of the markdown report.

Data reach the page as JavaScript files (``data/*.js``) loaded by ``<script>`` tags, because a
page opened from ``file://`` may not fetch JSON. Items come from each run's ``item_scores.jsonl``;
thumbnails from the benchmark rebuilt from the run's ``config.json`` (when the data is gone the
browser shows the captions and says so).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.metrics import unit_items

ASSETS = Path(__file__).parent / "report_assets"
THUMB_SIZE = 128  # longest side of a thumbnail, in pixels (smaller images are kept as they are)
MAX_ITEMS = 2000  # items per benchmark in the browser, beyond those that comparisons point at
RECORD_FIELDS = {"item_id", "truth", "truth_texts", "images", "meta", "texts", "scores", "best5"}


@dataclass
class _RunData:
    run_id: str
    config: dict[str, Any]
    label: str
    records: dict[str, dict[str, Any]]  # item id -> item_scores.jsonl record


@dataclass
class _Benchmark:
    name: str
    runs: list[_RunData] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "x"


def _clean(value: Any) -> Any:
    """JSON for the page: NaN and infinities become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _js(variable: str, key: str | None, data: Any) -> str:
    """A script that sets ``window.<variable>`` (or one key of it) to ``data``."""
    text = json.dumps(_clean(data), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").replace("</", "<\\/")
    if key is None:
        return f"window.{variable} = {text};\n"
    return f"window.{variable} = window.{variable} || {{}};\nwindow.{variable}[{json.dumps(key)}] = {text};\n"


def _number(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _read_records(path: Path) -> dict[str, dict[str, Any]]:
    out = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                record = json.loads(line)
                out[str(record["item_id"])] = record
    return out


def _label(config: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str:
    model = rows[0]["model"] if rows else config.get("scorer_config", {}).get("model", "")
    return f"{config.get('scorer', '?')}: {model}"


def _decisions(scores: Sequence[Sequence[float]]) -> list[int]:
    """Per image row, the index of the strictly best text, or -1 where the best is tied."""
    out = []
    for row in scores:
        best = max(row)
        winners = [j for j, v in enumerate(row) if v == best]
        out.append(winners[0] if len(winners) == 1 else -1)
    return out


def _round(value: float) -> float:
    return float(f"{value:.5g}")


def _run_entry(run: _RunData, record: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if record is None:
        return None
    entry: dict[str, Any] = {"o": {k: v for k, v in record.items() if k not in RECORD_FIELDS and isinstance(v, bool)}}
    extra = {k: v for k, v in record.items() if k not in RECORD_FIELDS and not isinstance(v, bool)}
    if extra:
        entry["x"] = extra  # e.g. zero-shot's predicted class
    if record.get("scores") is None and "scores" in record:
        entry["n"] = "not computed: this scorer cannot score this item (e.g. no text-to-text score)"
    elif "scores" in record:
        entry["s"] = [[_round(v) for v in row] for row in record["scores"]]
        entry["d"] = _decisions(record["scores"])
    elif "best5" in record:
        entry["b"] = [[[label, _round(score)] for label, score in row] for row in record["best5"]]
    return entry


class _Thumbnails:
    """Thumbnails of a benchmark's images, from the benchmark rebuilt from a run's config.json."""

    def __init__(self, out_dir: Path, benchmark: str, runs: Sequence[_RunData]) -> None:
        self.folder = out_dir / "thumbs" / _slug(benchmark)
        self.benchmark = benchmark
        self.runs = list(reversed(runs))  # the newest run's configuration first
        self._built: dict[str, Any] = {}
        self.problem = ""
        self.failed = 0

    def _benchmarks(self) -> Iterable[tuple[str, Any]]:
        from harness import hub
        from harness.registry import BENCHMARKS

        for run in self.runs:
            config = run.config
            key = json.dumps([config.get("benchmark"), config.get("data_root"), config.get("bench_options")],
                             sort_keys=True, default=str)
            if key not in self._built:
                try:
                    cls = BENCHMARKS.get(self.benchmark)
                    subset = str(config.get("benchmark", "")).partition(":")[2] or None
                    with hub.local_only():
                        self._built[key] = cls(Path(config.get("data_root", "data")), subset,
                                               **(config.get("bench_options") or {}))
                except Exception as err:  # a benchmark that cannot be rebuilt: captions only
                    self._built[key] = None
                    self.problem = f"{type(err).__name__}: {err}"
            if self._built[key] is not None:
                yield key, self._built[key]

    def get(self, ref: str) -> list[Any] | None:
        """[relative path, width, height] of the thumbnail of ``ref``, made on first use."""
        from harness import hub

        for key, bench in self._benchmarks():
            name = hashlib.sha1(f"{key}|{ref}".encode()).hexdigest()[:20]
            for suffix in (".png", ".jpg"):
                path = self.folder / (name + suffix)
                if path.is_file():
                    from PIL import Image

                    with Image.open(path) as image:
                        return [path.relative_to(self.folder.parent.parent).as_posix(), *image.size]
            try:
                with hub.local_only():
                    image = bench.load_image(ref).convert("RGB")
            except Exception as err:
                self.problem = f"{type(err).__name__}: {err}"
                continue
            image.thumbnail((THUMB_SIZE, THUMB_SIZE))
            self.folder.mkdir(parents=True, exist_ok=True)
            small = max(image.size) <= 64  # drawn scenes stay lossless; photographs become JPEG
            path = self.folder / (name + (".png" if small else ".jpg"))
            image.save(path, **({} if small else {"quality": 85}))
            return [path.relative_to(self.folder.parent.parent).as_posix(), *image.size]
        self.failed += 1
        return None


def _benchmarks(results_dir: Path, run_ids: Iterable[str]) -> tuple[dict[str, _Benchmark], list[str]]:
    """The runs to show, by benchmark name, with their items; notes about runs that are missing."""
    import csv

    found: dict[str, _Benchmark] = {}
    notes = []
    for run_id in dict.fromkeys(run_ids):
        folder = results_dir / "runs" / run_id
        config_path, records_path = folder / "config.json", folder / "item_scores.jsonl"
        if not config_path.is_file() or not records_path.is_file():
            notes.append(run_id)
            continue
        config = json.loads(config_path.read_text(encoding="utf-8"))
        rows = []
        if (folder / "metrics.csv").is_file():
            with open(folder / "metrics.csv", newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
        name = str(config.get("benchmark", "?")).partition(":")[0]
        bench = found.setdefault(name, _Benchmark(name))
        bench.runs.append(_RunData(run_id, config, _label(config, rows), _read_records(records_path)))
    for bench in found.values():
        bench.runs.sort(key=lambda r: (r.config.get("started", 0.0), r.run_id))  # oldest first
    return found, notes


def _comparisons(results_dir: Path) -> list[dict[str, Any]]:
    """comparisons.csv's rows, each with the items behind it from comparisons/<id>.json."""
    from harness.compare import COMPARISON_ITEMS, read_comparisons

    rows = read_comparisons(results_dir)
    sidecars: dict[str, dict[tuple[str, ...], dict[str, Any]]] = {}
    out = []
    for row in rows:
        cid = row.get("comparison_id", "")
        if cid not in sidecars:
            sidecars[cid] = {}
            path = results_dir / COMPARISON_ITEMS / f"{cid}.json"
            if path.is_file():
                for entry in json.loads(path.read_text(encoding="utf-8")).get("rows", []):
                    key = (entry["benchmark"], entry["subset"], entry["metric"], entry["run_a"], entry["run_b"])
                    sidecars[cid][key] = entry
        entry = sidecars[cid].get((row.get("benchmark"), row.get("subset"), row.get("metric"), row.get("run_a"),
                                   row.get("run_b")), {})
        shown = {k: row.get(k, "") for k in ("comparison_id", "date", "benchmark", "subset", "metric", "run_a",
                                              "run_b", "model_a", "model_b", "test")}
        for k in ("n", "n_common", "only_a", "only_b", "value_a", "value_b", "difference", "diff_ci_low",
                  "diff_ci_high", "a_right_b_wrong", "a_wrong_b_right", "p_value", "p_holm", "pairs"):
            shown[k] = _number(row.get(k))
        shown["a_better"] = entry.get("a_better")
        shown["b_better"] = entry.get("b_better")
        out.append(shown)
    return out


def _leaderboard(df: Any) -> list[dict[str, Any]]:
    columns = ["run_id", "date", "scorer", "model", "pretrained", "benchmark", "subset", "metric", "value",
               "ci_low", "ci_high", "n"]
    out = []
    for _, r in df.iterrows():
        row = {c: r.get(c) for c in columns}
        for c in ("value", "ci_low", "ci_high", "n"):
            row[c] = _number(row[c])
        for c in ("run_id", "date", "scorer", "model", "pretrained", "benchmark", "subset", "metric"):
            row[c] = "" if row[c] is None or row[c] != row[c] else str(row[c])
        out.append(row)
    return out


def _item_payload(bench: _Benchmark, out_dir: Path, wanted: set[str], max_items: int,
                  thumbnails: bool) -> dict[str, Any]:
    """The item browser's data for one benchmark."""
    order: list[str] = []
    seen: set[str] = set()
    for run in bench.runs:
        for item_id in run.records:
            if item_id not in seen:
                seen.add(item_id)
                order.append(item_id)
    total = len(order)
    shown = [i for k, i in enumerate(order) if k < max_items or i in wanted]
    thumbs = _Thumbnails(out_dir, bench.name, bench.runs) if thumbnails else None
    items = []
    meta_values: dict[str, set[str]] = {}
    outcome_keys: dict[str, None] = {}
    no_refs = 0
    for item_id in shown:
        first = next(run.records[item_id] for run in bench.runs if item_id in run.records)
        labels = first.get("texts") or [label for label, _ in (first.get("best5") or [[]])[0]]
        meta = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in (first.get("meta") or {}).items()}
        for key, value in meta.items():
            meta_values.setdefault(key, set()).add(value)
        refs = first.get("images")
        if refs is None:
            no_refs += 1
        images = [thumbs.get(ref) if thumbs else None for ref in refs] if refs else []
        runs = []
        for run in bench.runs:
            entry = _run_entry(run, run.records.get(item_id))
            if entry:
                outcome_keys.update(dict.fromkeys(entry["o"]))
            runs.append(entry)
        item = {"id": item_id, "t": labels, "y": first.get("truth", []), "im": images, "m": meta,
                "n": len(refs or []) or len(first.get("truth", [])), "r": runs}
        if "truth_texts" in first:
            item["tt"] = first["truth_texts"]
        items.append(item)
    notes = list(bench.notes)
    if total > len(shown):
        notes.append(f"showing {len(shown)} of {total} items (`harness report --max-items N` shows more)")
    if no_refs:
        notes.append(f"{no_refs} item(s) come from runs that did not record their image refs (an older harness): "
                     "captions only")
    if thumbs is not None and thumbs.failed:
        notes.append(f"{thumbs.failed} image(s) could not be loaded from the data the runs used, so only their "
                     f"captions are shown ({thumbs.problem})")
    if not thumbnails:
        notes.append("thumbnails were not written (--no-thumbnails)")
    filters = {k: sorted(v) for k, v in meta_values.items() if 1 < len(v) <= 100}
    return {
        "benchmark": bench.name, "total": total, "notes": notes,
        "runs": [{"id": r.run_id, "label": r.label, "benchmark": r.config.get("benchmark", "")} for r in bench.runs],
        "outcomes": list(outcome_keys), "filters": filters, "items": items,
    }


def write_html(results_dir: Path, out_dir: Path, leaderboard: Any, figures: Sequence[tuple[str, str]],
               max_items: int = MAX_ITEMS, thumbnails: bool = True) -> Path:
    """Write ``index.html``, its scripts and styles, the data files and the thumbnails; returns
    the page's path. ``leaderboard``: the newest leaderboard rows (a DataFrame); ``figures``:
    (title, PNG file name) pairs already in ``out_dir``."""
    import datetime as dt

    results_dir, out_dir = Path(results_dir), Path(out_dir)
    if max_items < 0:
        raise HarnessError(f"--max-items must be 0 or more, got {max_items}")
    data_dir = out_dir / "data"
    if data_dir.exists():
        shutil.rmtree(data_dir)  # data of a benchmark no longer shown must not linger
    data_dir.mkdir(parents=True)
    board = _leaderboard(leaderboard) if leaderboard is not None and len(leaderboard) else []
    comparisons = _comparisons(results_dir)
    run_ids = [r["run_id"] for r in board] + [r[k] for r in comparisons for k in ("run_a", "run_b")]
    benches, missing = _benchmarks(results_dir, [r for r in run_ids if r])
    wanted: dict[str, set[str]] = {}
    for row in comparisons:
        units = (row["a_better"] or []) + (row["b_better"] or [])
        # a unit that is not one item (a What'sUp pair, a retrieval caption query) brings its items
        wanted.setdefault(str(row["benchmark"]), set()).update({*units, *(i for u in units for i in unit_items(u))})
    index_benches = []
    for name in sorted(benches):
        payload = _item_payload(benches[name], out_dir, wanted.get(name, set()), max_items, thumbnails)
        file = f"data/items-{_slug(name)}.js"
        (out_dir / file).write_text(_js("HARNESS_ITEMS", name, payload), encoding="utf-8")
        index_benches.append({"name": name, "file": file, "items": len(payload["items"]), "total": payload["total"],
                              "runs": len(payload["runs"])})
    notes = []
    if missing:
        notes.append(f"{len(missing)} run(s) named by the leaderboard or the comparisons have no folder with "
                     f"item_scores.jsonl in {results_dir / 'runs'} (e.g. {missing[0]}): their items are not shown")
    index = {
        "title": f"Results in {results_dir.name or results_dir}", "generated": dt.datetime.now().isoformat(
            timespec="seconds"), "leaderboard": board, "comparisons": comparisons, "benchmarks": index_benches,
        "figures": [{"title": t, "file": f} for t, f in figures], "notes": notes,
    }
    (data_dir / "index.js").write_text(_js("HARNESS_REPORT", None, index), encoding="utf-8")
    for name in ("report.js", "report.css"):
        shutil.copyfile(ASSETS / name, out_dir / name)
    page = (ASSETS / "index.html").read_text(encoding="utf-8")
    path = out_dir / "index.html"
    path.write_text(page, encoding="utf-8")
    return path

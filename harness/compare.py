"""`harness compare A B [C ...]`: is run B better than run A, and on which items?

Two models scored on the same items are compared item by item, not by the overlap of their two
intervals. For each benchmark both runs evaluated, the benchmark is rebuilt from the first run's
``config.json``, both runs' score matrices are read from the score store (only items whose texts
are unchanged: the store's texts hash), and ``Benchmark.metrics`` is computed on the items both
scored. A ranking benchmark (retrieval) is read as its own runs left it: each run's ranking
records of the gallery it ranked, then ``Benchmark.ranking_metrics``; runs that ranked different
galleries of one subset are refused (a rank depends on every candidate). Each metric row then
carries its units' values (``MetricRow.item_ids`` / ``item_values`` / ``item_groups``; a unit is
an item, or what the row counts when that is not an item: a What'sUp pair, a retrieval query),
and per (subset, metric):

- the paired difference B - A, with a paired percentile bootstrap interval: items are resampled
  with the same indices for both runs (within each group for macro-averaged rows, as
  ``harness.metrics.macro_accuracy_row`` does);
- for binary per-item values, the exact McNemar test: a two-sided binomial test with p = 1/2 on
  the discordant items (A right and B wrong, and the reverse), which it counts (McNemar 1947;
  the same p-value as ``mcnemar(table, exact=True)`` in statsmodels/statsmodels,
  ``statsmodels/stats/contingency_tables.py``: twice the binomial CDF at the smaller count, at most 1);
- with more than two runs, every run against the first, and Holm's step-down correction of the
  p-values over those pairs, row by row (Holm 1979). Many rows and subsets are many more tests,
  which nothing here corrects for; the output says so.

Runs are refused, naming what differs, when their benchmark or its version differs, when the
facts that identify the data differ (``Benchmark.details`` outside ``scope_details``, and any
``*sha256`` / ``*hash`` detail of a row, such as ARO's frozen perturbations), when an item of the
same id differs between them, or when they share no scored item. Results go to the terminal, to
``<results-dir>/comparisons.csv`` (one tidy row per pair x subset x metric) and, with the ids of
the items each run got right and the other wrong, to ``<results-dir>/comparisons/<id>.json``,
which ``harness report`` links to its item browser.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.api import Benchmark, Item, MetricRow
from harness.errors import HarnessError
from harness.files import atomic_write_text
from harness.metrics import BOOTSTRAP_RESAMPLES, CONFIDENCE, bootstrap_ci, value_from_items

COMPARISONS = "comparisons.csv"
COMPARISON_ITEMS = "comparisons"  # folder of <comparison_id>.json: the items behind each row

COLUMNS = [
    "comparison_id", "date", "benchmark", "benchmark_version", "subset", "metric", "run_a", "run_b", "model_a",
    "model_b", "n_common", "only_a", "only_b", "n", "value_a", "value_b", "difference", "diff_ci_low",
    "diff_ci_high", "a_right_b_wrong", "a_wrong_b_right", "test", "p_value", "p_holm", "pairs", "seed",
    "resamples", "caveat",
]

CAVEAT = ("p_holm is corrected over the pairs against the first run, row by row; the rows and subsets "
          "shown are many more tests, not corrected for: read a single small p-value among many with care")


# -- statistics -----------------------------------------------------------------------------------

def mcnemar_exact(a_right_b_wrong: int, a_wrong_b_right: int) -> float:
    """Exact two-sided McNemar p-value: under the null each discordant item is as likely to favour
    A as B, so the smaller count is Binomial(discordant, 1/2); p = min(1, 2 P(X <= smaller))."""
    m = a_right_b_wrong + a_wrong_b_right
    k = min(a_right_b_wrong, a_wrong_b_right)
    if m == 0:
        return 1.0
    # log-space terms: exact enough for a p-value and safe for tens of thousands of items
    log_half = m * math.log(0.5)
    terms = [math.exp(math.lgamma(m + 1) - math.lgamma(j + 1) - math.lgamma(m - j + 1) + log_half)
             for j in range(k + 1)]
    return min(1.0, 2.0 * math.fsum(terms))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given: the i-th smallest of m is multiplied
    by (m - i + 1), then made non-decreasing and capped at 1."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adjusted = [0.0] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def paired_bootstrap_ci(
    a: np.ndarray, b: np.ndarray, groups: Sequence[str] | None, seed: int, resamples: int = BOOTSTRAP_RESAMPLES
) -> tuple[float, float]:
    """Percentile interval of the difference B - A (in percentage points) over resampled items,
    the same indices for both runs. With ``groups`` (a macro-averaged row) items are resampled
    within each group, groups in order of first appearance, and the statistic is the mean over
    groups of the group means."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if groups is None:
        return bootstrap_ci(lambda idx: 100.0 * (b[idx].mean(axis=1) - a[idx].mean(axis=1)), len(a), seed, resamples)
    labels = np.asarray(groups, dtype=object)
    names = list(dict.fromkeys(labels.tolist()))
    if not names:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    total = np.zeros(resamples)
    for name in names:
        members = np.flatnonzero(labels == name)
        ga, gb, n = a[members], b[members], len(members)
        chunk = max(1, min(resamples, 250_000 // n))
        for start in range(0, resamples, chunk):
            stop = min(start + chunk, resamples)
            idx = rng.integers(0, n, size=(stop - start, n))
            total[start:stop] += gb[idx].mean(axis=1) - ga[idx].mean(axis=1)
    dist = 100.0 * total / len(names)
    alpha = (1 - CONFIDENCE) / 2
    low, high = np.quantile(dist, [alpha, 1 - alpha])
    return float(low), float(high)


# -- runs -----------------------------------------------------------------------------------------

@dataclass
class Run:
    """A finished run folder: its config.json, its metrics.csv rows and the ids of its items."""

    run_id: str
    folder: Path
    config: dict[str, Any]
    rows: list[dict[str, str]]

    @property
    def benchmark(self) -> str:
        return str(self.config["benchmark"]).partition(":")[0]

    @property
    def subset(self) -> str | None:
        return str(self.config["benchmark"]).partition(":")[2] or None

    @property
    def version(self) -> str:
        return str(self.config.get("benchmark_version", ""))

    @property
    def label(self) -> str:
        """"scorer: model pretrained", with the portable model name of the rows where there are rows."""
        model = self.rows[0]["model"] if self.rows else self.config.get("scorer_config", {}).get("model", "")
        pretrained = self.rows[0].get("pretrained", "") if self.rows else ""
        return f"{self.config.get('scorer', '?')}: {model}" + (f" {pretrained}" if pretrained else "")

    @property
    def scorer_key(self) -> str:
        from harness.store import scorer_key

        if self.rows and self.rows[0].get("scorer_key"):
            return self.rows[0]["scorer_key"]
        return scorer_key(self.config["scorer_fingerprint"])

    def item_ids(self) -> list[str]:
        """The ids of the items this run evaluated, in its order (from item_scores.jsonl)."""
        path = self.folder / "item_scores.jsonl"
        if not path.is_file():
            raise HarnessError(f"run {self.run_id} has no {path.name} in {self.folder}; rerun its command "
                               f"({' '.join(self.config.get('argv', [])) or 'harness run ...'}) to complete it")
        with open(path, encoding="utf-8") as f:
            return [json.loads(line)["item_id"] for line in f if line.strip()]

    def matches(self, scorer: str, model: str) -> bool:
        """Whether this run is of ``scorer`` on ``model``, as config.json recorded the model (the path
        or name given), or as its rows name it (portable), optionally followed by :PRETRAINED."""
        if self.config.get("scorer") != scorer:
            return False
        given = self.config.get("scorer_config", {})
        names = {str(given.get("model", ""))} | {r.get("model", "") for r in self.rows[:1]}
        names.discard("")
        pretrained = {str(given.get("pretrained") or "")} | {r.get("pretrained", "") for r in self.rows[:1]}
        pretrained.discard("")
        return model in names or any(model == f"{n}:{p}" for n in names for p in pretrained)


def load_run(results_dir: Path, run_id: str) -> Run:
    folder = Path(results_dir) / "runs" / run_id
    path = folder / "config.json"
    if not path.is_file():
        raise HarnessError(f"no run {run_id!r} in {folder.parent} (looked for {path})")
    config = json.loads(path.read_text(encoding="utf-8"))
    if config.get("status") != "done":
        raise HarnessError(f"run {run_id} did not finish (status: {config.get('status')!r}); rerun its command "
                           "to complete it before comparing")
    rows: list[dict[str, str]] = []
    if (folder / "metrics.csv").is_file():
        with open(folder / "metrics.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    return Run(run_id, folder, config, rows)


def finished_runs(results_dir: Path) -> list[Run]:
    """Every finished run in ``<results_dir>/runs/``, oldest first (by start time; run ids begin
    with their second)."""
    found = []
    for path in sorted((Path(results_dir) / "runs").glob("*/config.json")):
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if config.get("status") == "done":
            found.append((config.get("started", 0.0), path.parent.name))
    return [load_run(results_dir, run_id) for _, run_id in sorted(found)]


def resolve(spec: str, results_dir: Path, bench: str | None = None) -> dict[str, Run]:
    """benchmark name -> run for one argument of `harness compare`: a run id, or SCORER:MODEL for
    the newest finished run of that scorer and model on each benchmark."""
    if (Path(results_dir) / "runs" / spec / "config.json").is_file():
        run = load_run(results_dir, spec)
        return {run.benchmark: run} if bench in (None, run.benchmark) else {}
    scorer, colon, model = spec.partition(":")
    if not colon or not model:
        raise HarnessError(f"{spec!r} is neither a run in {Path(results_dir) / 'runs'} nor SCORER:MODEL "
                           "(e.g. clip:toy:clip, clip:ViT-B-32:openai)")
    runs = [r for r in finished_runs(results_dir) if r.matches(scorer, model) and bench in (None, r.benchmark)]
    if not runs:
        raise HarnessError(f"no finished run of {spec!r} in {Path(results_dir) / 'runs'}" +
                           (f" on {bench}" if bench else "") + "; `harness leaderboard` lists the scorers and "
                           "models there (write SCORER:MODEL as a row names them, or as --model was given)")
    newest: dict[str, Run] = {}
    for run in runs:  # oldest first: the newest of each benchmark wins
        newest[run.benchmark] = run
    for name, run in newest.items():
        others = {r.scorer_key: r for r in runs if r.benchmark == name and r.scorer_key != run.scorer_key}
        if others:
            choices = ", ".join(f"{r.run_id} ({r.label})" for r in [run, *others.values()])
            raise HarnessError(f"{spec!r} names runs of several scorer configurations on {name}: {choices}. "
                               "Name the run id instead, or add :PRETRAINED to the model.")
    return newest


# -- comparing ------------------------------------------------------------------------------------

@dataclass
class PairSummary:
    """What two runs share on one benchmark."""

    benchmark: str
    run_a: Run
    run_b: Run
    n_common: int
    only_a: int  # items run A evaluated and run B did not
    only_b: int
    notes: list[str] = field(default_factory=list)


@dataclass
class ComparisonResult:
    comparison_id: str
    rows: list[dict[str, Any]]
    pairs: list[PairSummary]
    items: list[dict[str, Any]]  # per row: its keys and the ids of the items favouring each run
    csv_path: Path | None = None
    items_path: Path | None = None

    @property
    def caveat(self) -> str:
        return CAVEAT


def new_comparison_id() -> str:
    return dt.datetime.now().strftime("cmp-%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def compare(
    runs: Sequence[str],
    results_dir: Path = Path("results"),
    bench: str | None = None,
    seed: int = 0,
    resamples: int = BOOTSTRAP_RESAMPLES,
    data_root: Path | None = None,
    write: bool = True,
) -> ComparisonResult:
    """Compare every run in ``runs`` (run ids or SCORER:MODEL specs) with the first, item by item.

    Returns the tidy rows (the columns of ``COLUMNS``) and, when ``write``, appends them to
    ``<results_dir>/comparisons.csv`` and writes the items behind each row to
    ``<results_dir>/comparisons/<comparison_id>.json``. ``data_root`` replaces the data root the
    runs recorded (data moved since). Raises HarnessError, saying why, when runs cannot be compared.
    """
    from harness.store import ScoreStore

    results_dir = Path(results_dir)
    if len(runs) < 2:
        raise HarnessError("compare needs at least two runs (run ids or SCORER:MODEL)")
    resolved = [resolve(spec, results_dir, bench) for spec in runs]
    for spec, found in zip(runs, resolved):
        if not found:
            raise HarnessError(f"{spec!r} has no finished run on {bench}")
    pairs: list[tuple[Run, Run]] = []
    for spec, other in zip(runs[1:], resolved[1:]):
        shared = sorted(set(resolved[0]) & set(other))
        if not shared:
            if len(resolved[0]) == 1 and len(other) == 1:
                (a,), (b,) = resolved[0].values(), other.values()
                raise HarnessError(f"run {a.run_id} is on {a.benchmark} and run {b.run_id} on {b.benchmark}: "
                                   "different benchmarks cannot be compared")
            raise HarnessError(f"{runs[0]!r} (on {', '.join(sorted(resolved[0]))}) and {spec!r} (on "
                               f"{', '.join(sorted(other))}) share no benchmark")
        pairs += [(resolved[0][name], other[name]) for name in shared]

    store_path = results_dir / "scores.sqlite"
    if not store_path.is_file():
        raise HarnessError(f"no score store at {store_path}: compare reads each item's scores from it (rerun the "
                           "runs' commands to score them again)")
    store = ScoreStore(store_path)
    comparison_id = new_comparison_id()
    date = dt.datetime.now().isoformat(timespec="seconds")
    problems: list[str] = []
    done: list[tuple[PairSummary, list[tuple[MetricRow, MetricRow]], list[str]]] = []
    for a, b in pairs:
        try:
            done.append(_compare_pair(a, b, store, seed, data_root))
        except HarnessError as err:
            problems.append(f"{a.benchmark}: {err}")
    if problems:
        hint = "" if bench or len({a.benchmark for a, _ in pairs}) < 2 else \
            "\n(--bench NAME compares one benchmark only)"
        raise HarnessError("cannot compare:\n  - " + "\n  - ".join(problems) + hint)

    rows: list[dict[str, Any]] = []
    items: list[dict[str, Any]] = []
    summaries = []
    for summary, matched, _ in done:
        summaries.append(summary)
        a, b = summary.run_a, summary.run_b
        for ra, rb in matched:
            stats = _row_statistics(ra, rb, seed, resamples)
            rows.append({
                "comparison_id": comparison_id, "date": date, "benchmark": summary.benchmark,
                "benchmark_version": a.version, "subset": ra.subset, "metric": ra.metric, "run_a": a.run_id,
                "run_b": b.run_id, "model_a": a.label, "model_b": b.label, "n_common": summary.n_common,
                "only_a": summary.only_a, "only_b": summary.only_b, "n": len(ra.item_values or ()),
                "pairs": 1, "seed": seed, "resamples": resamples, "caveat": CAVEAT,
                **{k: v for k, v in stats.items() if k not in ("a_better", "b_better")},
            })
            items.append({"benchmark": summary.benchmark, "subset": ra.subset, "metric": ra.metric,
                          "run_a": a.run_id, "run_b": b.run_id, "binary": stats["test"] == "mcnemar-exact",
                          "a_better": stats["a_better"], "b_better": stats["b_better"]})
    _holm_over_pairs(rows)
    result = ComparisonResult(comparison_id, rows, summaries, items)
    if write and rows:
        result.csv_path = append_comparisons(results_dir, rows)
        result.items_path = results_dir / COMPARISON_ITEMS / f"{comparison_id}.json"
        result.items_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(result.items_path, json.dumps(
            {"comparison_id": comparison_id, "runs": list(runs), "rows": items}) + "\n")
    return result


def _rebuild(run: Run, data_root: Path | None) -> Benchmark:
    from harness import hub
    from harness.registry import BENCHMARKS

    cls = BENCHMARKS.get(run.benchmark)
    root = Path(data_root) if data_root is not None else Path(run.config.get("data_root", "data"))
    try:
        with hub.local_only():
            return cls(root, run.subset, **(run.config.get("bench_options") or {}))
    except HarnessError as err:
        raise HarnessError(f"rebuilding the benchmark of run {run.run_id} from its config.json: {err}") from err


def _items_of(run: Run, benchmark: Benchmark) -> dict[str, Item]:
    wanted = run.item_ids()
    try:
        from harness import hub

        with hub.local_only():
            by_id = {item.id: item for item in benchmark.items()}
    except HarnessError as err:
        raise HarnessError(f"the items of run {run.run_id} ({benchmark.key}) could not be rebuilt: {err}. "
                           "compare needs the benchmark's data where the run found it (or pass --data-root)"
                           ) from err
    return {i: by_id[i] for i in wanted if i in by_id}


def _check_same_data(a: Run, b: Run, benchmark: Benchmark) -> None:
    if a.version != b.version:
        raise HarnessError(f"runs {a.run_id} and {b.run_id} used {a.benchmark} version {a.version} and "
                           f"{b.version}: scores of different benchmark versions cannot be compared")
    scope = set(getattr(benchmark, "scope_details", ()))
    da, db = a.config.get("benchmark_details") or {}, b.config.get("benchmark_details") or {}
    differ = [k for k in sorted(set(da) | set(db)) if k not in scope and da.get(k) != db.get(k)]
    if differ:
        said = "; ".join(f"{k}: {da.get(k)!r} in {a.run_id}, {db.get(k)!r} in {b.run_id}" for k in differ)
        raise HarnessError(f"runs {a.run_id} and {b.run_id} evaluated different {a.benchmark} data ({said})")
    rows_b = {(r["subset"], r["metric"]): r for r in b.rows}
    for row in a.rows:
        other = rows_b.get((row["subset"], row["metric"]))
        if other is None:
            continue
        ha, hb = _hashes(row.get("details", "")), _hashes(other.get("details", ""))
        for k in sorted(set(ha) & set(hb)):
            if ha[k] != hb[k]:
                raise HarnessError(f"runs {a.run_id} and {b.run_id} differ in {k} for {row['subset']} "
                                   f"({ha[k]} against {hb[k]}): they saw different frozen data")


def _hashes(details: str | Mapping[str, Any] | None) -> dict[str, str]:
    """The details of a row that identify files by hash (ARO's order_options_sha256, ...)."""
    if isinstance(details, str):
        try:
            details = json.loads(details) if details else {}
        except ValueError:
            return {}
    return {k: str(v) for k, v in (details or {}).items() if "sha256" in k or "hash" in k}


def _same_item(x: Item, y: Item) -> bool:
    """Same images, truth and texts, query texts included (the store's own test of a stored score)."""
    from harness.store import item_hash

    return (x.images, x.truth) == (y.images, y.truth) and item_hash(x) == item_hash(y)


def _compare_pair(a: Run, b: Run, store: Any, seed: int, data_root: Path | None
                  ) -> tuple[PairSummary, list[tuple[MetricRow, MetricRow]], list[str]]:
    if a.benchmark != b.benchmark:
        raise HarnessError(f"run {a.run_id} is on {a.benchmark} and run {b.run_id} on {b.benchmark}")
    benchmark = _rebuild(a, data_root)
    _check_same_data(a, b, benchmark)
    items_a = _items_of(a, benchmark)
    same_build = (a.config.get("benchmark"), a.config.get("bench_options"), a.config.get("data_root")) == \
        (b.config.get("benchmark"), b.config.get("bench_options"), b.config.get("data_root"))
    items_b = _items_of(b, benchmark if same_build else _rebuild(b, data_root))
    changed = [i for i in items_a if i in items_b and not _same_item(items_a[i], items_b[i])]
    if changed:
        raise HarnessError(f"{len(changed)} item(s) of the same id differ between runs {a.run_id} and {b.run_id} "
                           f"(texts, images or truth), e.g. {changed[0]!r}: their item sets differ")
    ids_a, ids_b = a.item_ids(), b.item_ids()
    set_a, set_b = set(ids_a), set(ids_b)
    notes = []
    for run, ids, rebuilt in ((a, ids_a, items_a), (b, ids_b, items_b)):
        gone = len([i for i in ids if i not in rebuilt])
        if gone:
            notes.append(f"{gone} item(s) of run {run.run_id} are no longer in the benchmark")
    candidates = [items_a[i] for i in ids_a if i in set_b and i in items_b]
    ranking = benchmark.comparisons == "ranking"
    records: dict[str, dict[str, np.ndarray]] = {}
    if ranking:  # per-query records of each run's gallery, not score matrices
        _check_same_galleries(a, b, items_a, items_b, benchmark)
        for run, items in ((a, items_a), (b, items_b)):
            records[run.run_id] = _stored_records(run, benchmark, items, store)
    scored = {}
    for run in (a, b):
        if ranking:
            stored = {item.id for item in candidates if item.id in records[run.run_id]}
        else:
            stored = store.stored_ids(run.scorer_key, run.benchmark, run.version, candidates)
        missing = len(candidates) - len(stored)
        if missing:
            notes.append(f"{missing} shared item(s) of run {run.run_id} are not in the score store " +
                         ("with a ranking record of the gallery it ranked" if ranking else "with their current texts"))
        scored[run.run_id] = stored
    common = [item for item in candidates if item.id in scored[a.run_id] and item.id in scored[b.run_id]]
    summary = PairSummary(a.benchmark, a, b, len(common), len(set_a - set_b), len(set_b - set_a), notes)
    if not common:
        raise HarnessError(f"runs {a.run_id} ({len(ids_a)} items) and {b.run_id} ({len(ids_b)} items) have no "
                           f"scored item in common ({len(set_a & set_b)} shared ids; {'; '.join(notes) or 'none'})")
    rows = []
    for run in (a, b):
        if ranking:
            rows.append(benchmark.ranking_metrics(common, [records[run.run_id][item.id] for item in common], seed))
            continue
        got = store.get(run.scorer_key, run.benchmark, run.version, (item.id for item in common))
        rows.append(benchmark.metrics(common, [got[item.id] for item in common], seed))
    _check_recomputed_hashes(a, rows[0])
    by_key = {(r.subset, r.metric): r for r in rows[1]}
    matched = []
    for ra in rows[0]:
        rb = by_key.get((ra.subset, ra.metric))
        if rb is None or not (ra.per_item and rb.per_item):
            notes.append(f"{ra.subset}/{ra.metric}: no per-item values, not compared")
            continue
        if set(ra.item_ids) != set(rb.item_ids):
            notes.append(f"{ra.subset}/{ra.metric}: the two rows hold different items, not compared")
            continue
        if not ra.item_ids or math.isnan(ra.value) or math.isnan(rb.value):
            continue
        matched.append((ra, rb))
    return summary, matched, notes


def _check_same_galleries(a: Run, b: Run, items_a: Mapping[str, Item], items_b: Mapping[str, Item],
                          benchmark: Benchmark) -> None:
    """A ranking benchmark's records rank each query among its whole gallery, so two runs' queries
    pair only where both ranked the same gallery (a ``--limit`` makes a smaller one)."""
    from harness.ranking import galleries

    ranked_b = {g.name: g for g in galleries(list(items_b.values()), benchmark)}
    for gallery in galleries(list(items_a.values()), benchmark):
        other = ranked_b.get(gallery.name)
        if other is not None and other.digest != gallery.digest:
            raise HarnessError(
                f"runs {a.run_id} and {b.run_id} ranked different {gallery.name or benchmark.name} galleries "
                f"({len(gallery.items)} and {len(other.items)} images): a query's rank depends on every candidate, "
                "so their queries cannot be paired (run both on the same items)")


def _stored_records(run: Run, benchmark: Benchmark, items: Mapping[str, Item], store: Any) -> dict[str, np.ndarray]:
    """item id -> the ranking record ``run`` stored for it, for each gallery its items form (the
    records of one gallery are the same whatever number of best candidates they keep)."""
    from harness.ranking import galleries

    stored = store.ranked_galleries(run.scorer_key, run.benchmark, run.version)
    out: dict[str, np.ndarray] = {}
    for gallery in galleries(list(items.values()), benchmark):
        keys = sorted(key for key in stored if key.startswith(f"{gallery.digest}/"))
        if keys:
            got = store.get_rankings(run.scorer_key, run.benchmark, run.version, keys[0],
                                     (item.id for item in gallery.items))
            out.update({item_id: record for item_id, (_, record) in got.items()})
    return out


def _check_recomputed_hashes(run: Run, rows: list[MetricRow]) -> None:
    """The data's hashes now must be those the run recorded (e.g. ARO's frozen options file)."""
    recorded = {(r["subset"], r["metric"]): _hashes(r.get("details", "")) for r in run.rows}
    for row in rows:
        now, then = _hashes(row.details), recorded.get((row.subset, row.metric), {})
        for k in sorted(set(now) & set(then)):
            if now[k] != then[k]:
                raise HarnessError(f"{row.subset}: {k} is {now[k]} now but was {then[k]} when run {run.run_id} "
                                   "scored it: the frozen data changed since")


def _row_statistics(ra: MetricRow, rb: MetricRow, seed: int, resamples: int) -> dict[str, Any]:
    ids = list(ra.item_ids)
    b_of = dict(zip(rb.item_ids, rb.item_values))
    a = np.asarray(ra.item_values, dtype=float)
    b = np.asarray([b_of[i] for i in ids], dtype=float)
    groups = list(ra.item_groups) if ra.item_groups is not None else None
    value_a, value_b = value_from_items(a, groups), value_from_items(b, groups)
    for row, value in ((ra, value_a), (rb, value_b)):
        if not math.isclose(row.value, value, rel_tol=1e-9, abs_tol=1e-9):
            raise HarnessError(f"{row.subset}/{row.metric}: the row's value {row.value} is not what its per-item "
                               f"values give ({value}); the benchmark's metric fills them inconsistently")
    low, high = paired_bootstrap_ci(a, b, groups, seed, resamples)
    binary = bool(np.isin(a, (0.0, 1.0)).all() and np.isin(b, (0.0, 1.0)).all())
    a_better = [i for i, x, y in zip(ids, a, b) if x > y]
    b_better = [i for i, x, y in zip(ids, a, b) if y > x]
    out: dict[str, Any] = {
        "value_a": value_a, "value_b": value_b, "difference": value_b - value_a, "diff_ci_low": low,
        "diff_ci_high": high, "a_better": a_better, "b_better": b_better,
        "a_right_b_wrong": "", "a_wrong_b_right": "", "test": "", "p_value": None, "p_holm": None,
    }
    if binary:
        out.update(a_right_b_wrong=len(a_better), a_wrong_b_right=len(b_better), test="mcnemar-exact",
                   p_value=mcnemar_exact(len(a_better), len(b_better)))
    return out


def _holm_over_pairs(rows: list[dict[str, Any]]) -> None:
    """Holm over the pairs (each run against the first) of every benchmark/subset/metric row;
    ``pairs`` says how many pairs share that row."""
    families: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        families.setdefault((row["benchmark"], row["subset"], row["metric"]), []).append(row)
    for members in families.values():
        for row in members:
            row["pairs"] = len(members)
        tested = [row for row in members if row["p_value"] is not None]
        for row, adjusted in zip(tested, holm([r["p_value"] for r in tested])):
            row["p_holm"] = adjusted


# -- files and tables -----------------------------------------------------------------------------

def append_comparisons(results_dir: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Append rows to ``<results_dir>/comparisons.csv`` under a lock, atomically (the bytes already
    there are kept; new rows follow the file's own column order)."""
    from filelock import FileLock

    from harness.results import csv_text

    path = Path(results_dir) / COMPARISONS
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=120):
        if not path.is_file() or not path.read_text(encoding="utf-8").strip():
            atomic_write_text(path, csv_text(rows, COLUMNS))
            return path
        existing = path.read_text(encoding="utf-8")
        header = next(csv.reader([existing.splitlines()[0]]))
        body = csv_text(rows, header).split("\r\n", 1)[1]
        if not existing.endswith(("\n", "\r")):
            existing += "\r\n"
        atomic_write_text(path, existing + body)
    return path


def read_comparisons(results_dir: Path) -> list[dict[str, str]]:
    """The rows of ``<results_dir>/comparisons.csv`` (empty when there is none)."""
    path = Path(results_dir) / COMPARISONS
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _p(value: Any) -> str:
    if value in (None, ""):
        return ""
    value = float(value)
    return f"{value:.2g}" if value < 0.001 else f"{value:.3f}"


def format_comparison(result: ComparisonResult) -> str:
    """The terminal's view: who is compared with whom on how many items, then one line per row."""
    from tabulate import tabulate

    lines = []
    for pair in result.pairs:
        lines.append(f"{pair.benchmark}: A = {pair.run_a.run_id} ({pair.run_a.label})")
        lines.append(f"{' ' * len(pair.benchmark)}  B = {pair.run_b.run_id} ({pair.run_b.label})")
        lines.append(f"{' ' * len(pair.benchmark)}  {pair.n_common} items in common; A has {pair.only_a} that B "
                     f"lacks, B has {pair.only_b} that A lacks")
        lines += [f"{' ' * len(pair.benchmark)}  note: {note}" for note in pair.notes]
    several = len({r["run_b"] for r in result.rows}) > 1  # then each line names its B
    # by its model where that tells the runs apart, else by its run id
    labels = {r["run_b"]: r["model_b"] for r in result.rows}
    name_b = labels if len(set(labels.values())) == len(labels) else {k: k for k in labels}
    table = []
    for r in result.rows:
        table.append([r["benchmark"], r["subset"], r["metric"], *([name_b[r["run_b"]][:40]] if several else []),
                      f"{r['value_a']:.2f}", f"{r['value_b']:.2f}",
                      f"{r['difference']:+.2f} [{r['diff_ci_low']:+.2f}, {r['diff_ci_high']:+.2f}]",
                      r["a_right_b_wrong"], r["a_wrong_b_right"], _p(r["p_value"]), _p(r["p_holm"]), r["n"]])
    headers = ["benchmark", "subset", "metric", *(["B"] if several else []), "A (%)", "B (%)",
               "B - A [95% paired CI]", "A right B wrong", "A wrong B right", "p", "p Holm", "n"]
    lines += ["", tabulate(table, headers=headers, tablefmt="github")]
    lines += ["", f"p: exact McNemar test on the discordant items; intervals: paired bootstrap over items "
                  f"({result.rows[0]['resamples'] if result.rows else BOOTSTRAP_RESAMPLES} resamples)."
                  f" Caveat: {CAVEAT}."]
    return "\n".join(lines)

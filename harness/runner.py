"""The engine: evaluate(scorer, benchmark) and run(...) which adds result files.

It knows no particular scorer or benchmark: both come from the registries by name.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

import harness
from harness import distributed, hub, interrupts, results
from harness.api import Benchmark, Item, MetricRow, Scorer, ScorerConfig
from harness.defaults import DEFAULT_RESULTS_DIR, default_data_root
from harness.devices import resolve_device
from harness.errors import HarnessError, NonFiniteScoreError
from harness.images import default_workers, stream_images
from harness.registry import BENCHMARKS, SCORERS
from harness.store import ScoreStore

log = logging.getLogger("harness")


@dataclass
class Evaluation:
    """What evaluate() returns: the items, their score matrices (from the store) and the metrics."""

    items: list[Item]
    scores: list[np.ndarray | None]  # None: a text-query item the scorer cannot score
    rows: list[MetricRow]
    scorer_key: str
    scored_now: int  # items this call scored; the rest came from the store (resume) or were not computed
    rankings: list[np.ndarray] | None = None  # ranking benchmarks: each item's record (harness.ranking)
    not_computed: dict[str, int] = field(default_factory=dict)  # why -> how many items were not scored


def evaluate(
    scorer: Scorer,
    benchmark: Benchmark,
    store: ScoreStore,
    items: Sequence[Item] | None = None,
    seed: int = 0,
    workers: int | None = None,
    chunk_items: int = 64,
    progress: bool = True,
) -> Evaluation:
    """Score every item not yet in the store, chunk by chunk, then compute metrics from the store.

    Each chunk of ``chunk_items`` items is committed to the store as soon as it is scored: an
    interrupted evaluation resumes from there when called again with the same scorer and
    benchmark. (How many images or texts go through the model at once is the scorer's own
    ``batch_size`` option.)

    Text-query items (``Item.query_texts``) go to the scorer only when it ``compares_texts``;
    otherwise they are neither scored nor stored, the benchmark's ``metrics`` receives None in
    their place, and ``Evaluation.not_computed`` counts them with the reason.
    """
    items = list(benchmark.items() if items is None else items)
    _check_unique_ids(items, benchmark)  # for every path: ids key the score store
    if chunk_items < 1:
        raise HarnessError(f"chunk_items must be at least 1, got {chunk_items}")
    special = _special_path(scorer, benchmark)
    if special is not None:  # a ranking benchmark or a shortlist: their own modules, same contract
        return special(scorer, benchmark, store, items=items, seed=seed, workers=workers, chunk_items=chunk_items,
                       progress=progress)
    key = store.register_scorer(scorer.fingerprint())
    kept_back = {item.id for item in items if item.query_texts and not scorer.compares_texts}
    computable = [item for item in items if item.id not in kept_back]
    not_computed: dict[str, int] = {}
    if kept_back:
        not_computed[f"scorer {scorer.family} has no text-to-text score (compares_texts is False)"] = len(kept_back)
    # Under a distributed launch each rank scores every size-th pending item. The ranks must split
    # one list: rank 0 reads what is stored and tells the others, before any of them writes (a rank
    # reading the store after another had stored its first chunk would split a different list, and
    # an item would fall between the shares).
    rank, size = distributed.world()
    done = distributed.broadcast(store.stored_ids(key, benchmark.name, benchmark.version, computable)
                                 if rank == 0 else None)
    all_pending = [item for item in computable if item.id not in done]
    pending = all_pending[rank::size]
    scorer.prepare(benchmark.comparisons)
    workers = default_workers() if workers is None else workers

    # Every image the pending items need, in first-use order: the loader streams them in that
    # order, so a chunk's images are always among the next ones to arrive.
    first_user: dict[str, str] = {}
    for item in pending:
        for ref in item.images:
            first_user.setdefault(ref, item.id)
    scorer.clear_images()
    images = stream_images(
        list(first_user), benchmark.load_image, scorer.image_transform(), scorer.image_batch_size, workers,
        describe_ref=lambda ref: f"{ref!r} of {benchmark.key} item {first_user[ref]!r}",
    )

    where = f" (rank 0 of {size}, its share)" if size > 1 else ""
    bar = tqdm(total=len(computable) if size == 1 else len(pending),
               initial=len(computable) - len(pending) if size == 1 else 0,
               unit="item", desc=f"{scorer.family} on {benchmark.key}{where}", disable=not progress or rank != 0,
               dynamic_ncols=True)
    try:
        for start in range(0, len(pending), chunk_items):
            interrupts.check()  # a Ctrl-C that a library swallowed still stops the run here
            chunk = pending[start:start + chunk_items]
            for ref in (r for item in chunk for r in item.images):
                while not scorer.has_image(ref):
                    batch = next(images, None)
                    if batch is None:  # only a scorer that drops images it was given gets here
                        raise HarnessError(f"scorer {scorer.family} lost image {ref!r} before scoring it")
                    scorer.add_images(*batch)
            matrices = scorer.score(chunk)
            _check_scores(chunk, matrices, scorer)
            store.put(key, benchmark.name, benchmark.version, zip(chunk, matrices))
            bar.update(len(chunk))
    finally:
        bar.close()
        images.close()
        scorer.clear_images()

    distributed.barrier()  # every rank's scores are in the store before anyone reads them
    stored = store.get(key, benchmark.name, benchmark.version, (i.id for i in computable))
    scores = [None if i.id in kept_back else stored[i.id] for i in items]
    rows = benchmark.metrics(items, scores, seed)
    return Evaluation(items=items, scores=scores, rows=rows, scorer_key=key, scored_now=len(all_pending),
                      not_computed=not_computed)


def _special_path(scorer: Scorer, benchmark: Benchmark) -> Any:
    """The evaluate() of a ranking benchmark (harness.ranking) or of a shortlist scorer
    (harness.shortlist), or None for the plain item-by-item path above."""
    if benchmark.comparisons == "ranking":
        from harness.ranking import evaluate_ranking

        return evaluate_ranking
    from harness.shortlist import ShortlistScorer, evaluate_shortlisted

    return evaluate_shortlisted if isinstance(scorer, ShortlistScorer) else None


def _check_unique_ids(items: Sequence[Item], benchmark: Benchmark) -> None:
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise HarnessError(f"{benchmark.key}: item id {item.id!r} occurs twice; ids key the score store")
        seen.add(item.id)


def _check_scores(chunk: Sequence[Item], matrices: Sequence[np.ndarray], scorer: Scorer) -> None:
    if len(matrices) != len(chunk):
        raise HarnessError(f"scorer {scorer.family} returned {len(matrices)} matrices for {len(chunk)} items")
    for item, m in zip(chunk, matrices):
        shape = (item.matrix_rows, len(item.texts))
        if np.shape(m) != shape:
            rows = "query texts" if item.query_texts else "images"
            raise HarnessError(f"scorer {scorer.family} returned shape {np.shape(m)} for item {item.id!r}, "
                               f"expected {shape} ({rows} x texts)")
        if not np.all(np.isfinite(m)):
            small = np.size(m) <= 8  # a zero-shot item has a thousand candidates: do not print them
            what = f"{np.asarray(m).tolist()} for texts {list(item.texts)}" if small else \
                f"({int(np.sum(~np.isfinite(m)))} of {np.size(m)})"
            raise NonFiniteScoreError(
                f"scorer {scorer.family} produced non-finite scores {what} for item {item.id!r}. "
                "Nothing of this chunk was stored and no result "
                "rows were written. Mixed precision overflow is a common cause: try --device cpu, or "
                "check the weights."
            )


def check_results_dir(results_dir: Path) -> None:
    """Refuse a results folder that cannot be one (it, or a folder above it, is a file)."""
    for folder in (results_dir, *results_dir.parents):
        if folder.exists():
            if not folder.is_dir():
                raise HarnessError(f"--results-dir {results_dir}: {folder} is a file, not a folder; pass a folder "
                                   "path (it is created if missing)")
            return


def parse_bench(bench: str) -> tuple[str, str | None]:
    """"aro:vg-relation" -> ("aro", "vg-relation"); "winoground" -> ("winoground", None)."""
    name, _, subset = bench.partition(":")
    return name, (subset or None)


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    leaderboard: Path
    rows: list[dict[str, Any]]
    evaluation: Evaluation = field(repr=False)
    skipped: dict[str, str] = field(default_factory=dict)  # subsets left out, and why
    report: dict[str, Any] = field(default_factory=dict)  # the scorer's counts (e.g. UNet passes)


MAX_CANDIDATES_IN_RECORD = 16
PER_ITEM_FIELDS = ("item_ids", "item_values", "item_groups")


def _row_fields(row: MetricRow) -> dict[str, Any]:
    """A metric row's fields for the result files, without the per-item values (those stay in
    memory, for `harness compare`)."""
    return {f.name: getattr(row, f.name) for f in fields(row) if f.name not in PER_ITEM_FIELDS}


def _item_record(item: Item, scores: np.ndarray | None, benchmark: Benchmark) -> dict[str, Any]:
    """One line of item_scores.jsonl. Items with many candidates (a zero-shot item has a thousand
    classes of 80 prompts) keep their five best candidates per image (best5); the store has all.
    A text-query item carries its query texts (the matrix rows); one the scorer could not score
    has ``"scores": null``."""
    labels = [t if isinstance(t, str) else t.label for t in item.texts]
    # the image refs and meta let `harness report` show the item (thumbnails, tags) beside its scores
    record: dict[str, Any] = {"item_id": item.id, "truth": list(item.truth), "images": list(item.images),
                              "meta": _json_safe(dict(item.meta))}
    if item.query_texts:
        record["query_texts"] = list(item.query_texts)
    if scores is None:
        return {**record, "texts": labels, "scores": None}
    if len(labels) <= MAX_CANDIDATES_IN_RECORD:
        record.update(texts=labels, scores=scores)
    else:
        best = np.argsort(-scores, axis=1, kind="stable")[:, :5]
        record["truth_texts"] = [labels[t] for t in item.truth]
        record["best5"] = [[[labels[j], float(row[j])] for j in order] for row, order in zip(scores, best)]
    return {**record, **benchmark.outcome(item, scores)}


def _shortlist_spec(shortlist: str | None) -> Any:
    """The parsed ``--shortlist`` (checked before anything loads), or None."""
    if not shortlist:
        return None
    from harness.shortlist import parse_shortlist

    return parse_shortlist(shortlist)


def _json_safe(value: Any) -> Any:
    """Plain JSON values: numpy scalars become numbers, tuples lists, anything else its text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return str(value)


def new_run_id() -> str:
    return dt.datetime.now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def run(
    scorer: str = "clip",
    bench: str = "shapes",
    model: str | None = None,
    pretrained: str | None = None,
    data_root: Path | None = None,
    results_dir: Path = Path(DEFAULT_RESULTS_DIR),
    limit: int | None = None,
    device: str = "auto",
    seed: int = 0,
    workers: int | None = None,
    chunk_items: int = 64,
    options: dict[str, Any] | None = None,
    bench_options: dict[str, Any] | None = None,
    progress: bool = True,
    shortlist: str | None = None,
) -> RunResult:
    """Evaluate a registered scorer on a registered benchmark and record the results.

    Names and options are checked first, then the benchmark's data, and only then is the model
    loaded, so a typo or a missing dataset fails fast. Without ``model`` the scorer's own default
    (its ``default_model``) is used. Result rows reach ``leaderboard.csv`` only after every metric
    was computed. ``shortlist`` (``clip:ViT-B-32:openai:k=10``, see harness.shortlist) has the scorer
    re-rank only a cheap scorer's k best candidates.
    """
    data_root = Path(data_root) if data_root is not None else default_data_root()
    results_dir = Path(results_dir)
    bench_name, subset = parse_bench(bench)
    scorer_cls = SCORERS.get(scorer)
    benchmark_cls = BENCHMARKS.get(bench_name)
    scorer_options = scorer_cls.resolve_options(options)
    benchmark_cls.resolve_options(bench_options)
    spec = _shortlist_spec(shortlist)
    if limit is not None and limit < 1:
        raise HarnessError(f"--limit must be at least 1, got {limit}")
    if workers is not None and workers < 0:
        raise HarnessError(f"--workers must be 0 (decode in this process) or more, got {workers}")
    if chunk_items < 1:
        raise HarnessError(f"--chunk-items must be at least 1, got {chunk_items}")
    check_results_dir(results_dir)
    results.check_leaderboard(results_dir)  # a hand-edited file that will not parse fails now, not after scoring
    if model is None:
        model = scorer_cls.default_model
        if model is None:
            raise HarnessError(f"scorer {scorer!r} has no default model; pass --model")
    rank, _ = distributed.init_from_env(device)
    resolved_device = resolve_device(device)
    if rank == 0:
        for run_id, why in results.stale_runs(results_dir):
            log.warning("run %s in %s never finished: %s. Its scores are in the store: rerun its command to "
                        "resume.", run_id, results_dir, why)

    with hub.local_only():  # data and weights come from local files and caches only
        benchmark: Benchmark = benchmark_cls(data_root, subset, **(bench_options or {}))
        items = benchmark.items()
        if limit is not None:
            items = items[:limit]
        config = ScorerConfig(model=model, pretrained=pretrained, device=str(resolved_device), seed=seed,
                              options=scorer_options)
        cheap = spec.build(str(resolved_device), seed) if spec is not None else None  # usually the faster to load
        scorer_obj: Scorer = scorer_cls(config)
    interrupts.check()
    shortlisted = None
    if cheap is not None:
        from harness.shortlist import ShortlistScorer

        shortlisted = scorer_obj = ShortlistScorer(scorer_obj, cheap, spec.k)

    run_id = distributed.broadcast(new_run_id())
    run_dir = results_dir / "runs" / run_id
    resolved = {
        "run_id": run_id, "status": "running", "argv": sys.argv, "scorer": scorer, "bench": bench,
        "benchmark": benchmark.key, "benchmark_version": benchmark.version, "data_root": str(data_root),
        "results_dir": str(results_dir), "bench_options": benchmark.options, "limit": limit,
        "n_items": len(items), "workers": workers, "chunk_items": chunk_items, "processes": distributed.world()[1],
        "scorer_config": asdict(config), "scorer_fingerprint": scorer_obj.fingerprint(),
        "benchmark_details": benchmark.details(), "skipped_subsets": benchmark.skipped,
        "harness_version": harness.__version__,
        "git_commit": results.git_commit(), "device": scorer_obj.device_name,
        "started": dt.datetime.now().timestamp(),  # orders runs started within the same second
        **results.process_stamp(),  # lets a later run tell that a killed run is not running any more
    }
    if spec is not None:
        resolved["shortlist"] = shortlist
    if rank == 0:  # one set of run files however many processes score
        results.write_json(run_dir / "config.json", resolved)

    try:
        with hub.local_only():
            evaluation = evaluate(scorer_obj, benchmark, ScoreStore(results_dir / "scores.sqlite"), items=items,
                                  seed=seed, workers=workers, chunk_items=chunk_items, progress=progress)
    except BaseException as err:
        if rank == 0:
            resolved["status"] = f"failed: {type(err).__name__}: {err}"
            results.write_json(run_dir / "config.json", resolved)
        raise
    if rank != 0:
        return RunResult(run_id=run_id, run_dir=run_dir, leaderboard=results_dir / results.LEADERBOARD, rows=[],
                         evaluation=evaluation, skipped=dict(benchmark.skipped))

    described = scorer_obj.describe()
    common = {
        "run_id": run_id, "date": dt.datetime.now().isoformat(timespec="seconds"), "scorer": scorer,
        "model": described.get("model", model), "pretrained": described.get("pretrained", pretrained or ""),
        "benchmark": benchmark.name, "benchmark_version": benchmark.version,
        "harness_version": harness.__version__, "git_commit": results.git_commit(),
        "device": scorer_obj.device_name, "seed": seed, "scorer_key": evaluation.scorer_key,
    }
    details = benchmark.details()
    if shortlisted is not None:  # rows name both scorers and k
        common["scorer"] = shortlisted.label(scorer)
        details = {**details, **shortlisted.row_details()}
    rows = [{**common, **_row_fields(r), "details": {**details, **(r.details or {})}} for r in evaluation.rows]
    item_records = (_item_record(item, m, benchmark) for item, m in zip(evaluation.items, evaluation.scores))
    results.write_run_files(run_dir, rows, item_records)
    leaderboard = results.append_rows(results_dir, rows)
    resolved["status"] = "done"
    resolved["scored_now"] = evaluation.scored_now
    resolved["not_computed"] = evaluation.not_computed
    resolved["scorer_report"] = scorer_obj.report()  # this rank's counts
    results.write_json(run_dir / "config.json", resolved)
    return RunResult(run_id=run_id, run_dir=run_dir, leaderboard=leaderboard, rows=rows, evaluation=evaluation,
                     skipped=dict(benchmark.skipped), report=resolved["scorer_report"])

"""`harness compare` covers every row of every benchmark: each registered benchmark
is run by two tiny CLIPs with different weights, and every row that has a value comes out of
compare as a paired result (none skipped for lack of per-item values), its per-item values giving
its value."""

from __future__ import annotations

import math

import pytest
from factories import build_tiny_clip, write_benchmark_data
from factories_ranking import TableScorer, eighths_table

from benchmarks.retrieval import Retrieval
from harness.compare import compare
from harness.errors import HarnessError
from harness.metrics import unit_items, value_from_items
from harness.registry import BENCHMARKS
from harness.runner import evaluate, run
from harness.store import ScoreStore


# every registered benchmark: test_contracts fails for one without a fixture, so none is left out here
WITH_FIXTURE = BENCHMARKS.names()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two tiny CLIPs of the same architecture with other weights (seeds 0 and 1)."""
    root = tmp_path_factory.mktemp("coverage-models")
    return [f"local-dir:{build_tiny_clip(root / f'clip-{seed}', seed=seed).local_dir}" for seed in (0, 1)]


@pytest.mark.parametrize("name", WITH_FIXTURE)
def test_compare_pairs_every_row_that_has_a_value(name, models, tmp_path):
    data_root, results_dir = tmp_path / "data", tmp_path / "results"
    options = write_benchmark_data(name, data_root)
    runs = [run(scorer="clip", bench=name, model=model, data_root=data_root, results_dir=results_dir,
                bench_options=options, workers=0, progress=False) for model in models]

    valued = [r for r in runs[0].evaluation.rows if not math.isnan(r.value)]
    assert valued
    items = {item.id for item in runs[0].evaluation.items}
    for row in valued:
        assert row.per_item, f"{row.subset}/{row.metric} has no per-item values"
        assert len(row.item_ids) == len(set(row.item_ids)) == len(row.item_values) == row.n
        assert row.value == pytest.approx(value_from_items(row.item_values, row.item_groups), abs=1e-9)
        assert all(set(unit_items(unit)) <= items for unit in row.item_ids), (row.subset, row.metric)

    out = compare([r.run_id for r in runs], results_dir, write=False)
    (pair,) = out.pairs
    assert not [note for note in pair.notes if "not compared" in note], pair.notes
    compared = {(r["subset"], r["metric"]): r for r in out.rows}
    missing = [(r.subset, r.metric) for r in valued if (r.subset, r.metric) not in compared]
    assert not missing, f"rows with a value that compare did not pair: {missing}"
    rows_b = {(r.subset, r.metric): r for r in runs[1].evaluation.rows}
    for row_a in valued:
        row_b, got = rows_b[(row_a.subset, row_a.metric)], compared[(row_a.subset, row_a.metric)]
        assert (got["value_a"], got["value_b"]) == pytest.approx((row_a.value, row_b.value), abs=1e-9)
        assert got["n"] == row_a.n
        assert got["difference"] == pytest.approx(row_b.value - row_a.value, abs=1e-9)


def test_retrieval_pairs_queries_only_within_one_gallery(models, tmp_path):
    """A query's rank depends on its whole gallery: a run on the first 3 COCO images is not paired
    with one on all 6, and compare says why."""
    data_root, results_dir = tmp_path / "data", tmp_path / "results"
    write_benchmark_data("retrieval", data_root)
    common = {"bench": "retrieval:coco", "data_root": data_root, "results_dir": results_dir, "workers": 0,
              "progress": False}
    whole = run(scorer="clip", model=models[0], **common)
    part = run(scorer="clip", model=models[1], limit=3, **common)
    with pytest.raises(HarnessError, match=r"ranked different coco galleries \(6 and 3 images\)"):
        compare([whole.run_id, part.run_id], results_dir, write=False)
    out = compare([whole.run_id, run(scorer="clip", model=models[1], **common).run_id], results_dir, write=False)
    t2i = next(r for r in out.items if r["metric"] == "t2i_recall@10")
    assert all(unit_items(u)[0].startswith("coco/") and "|caption " in u for u in t2i["a_better"] + t2i["b_better"])


def test_rankings_made_without_embeddings_are_kept_for_compare(tmp_path):
    """The pair-by-pair path (and a shortlist) rebuild their records from stored scores; a copy
    under the scorer's own key is what compare reads."""
    write_benchmark_data("retrieval", tmp_path)
    bench = Retrieval(tmp_path, "coco")
    scorer = TableScorer(eighths_table(bench.items()), embeds=False)
    store = ScoreStore(tmp_path / "s.sqlite")
    result = evaluate(scorer, bench, store, workers=0, progress=False)
    (gallery,) = store.ranked_galleries(result.scorer_key, "retrieval", bench.version)
    kept = store.get_rankings(result.scorer_key, "retrieval", bench.version, gallery, [i.id for i in result.items])
    assert len(kept) == len(result.items)
    for item, own, record in zip(result.items, result.scores, result.rankings):
        assert (kept[item.id][0] == own).all() and (kept[item.id][1] == record).all()


def test_a_shortlist_run_is_compared_on_the_matrices_it_was_scored_by(models, tmp_path):
    """A shortlist run's composite matrices are made from two other stores; compare reads the copy
    kept under the shortlist's own key, and gives the run's own numbers."""
    common = {"bench": "shapes:relation", "bench_options": {"n": 6}, "data_root": tmp_path,
              "results_dir": tmp_path / "results", "workers": 0, "progress": False}
    plain = run(scorer="clip", model=models[0], **common)
    shortlisted = run(scorer="clip", model=models[1], shortlist=f"clip:{models[0]}:k=1", **common)
    (row,) = compare([plain.run_id, shortlisted.run_id], tmp_path / "results", write=False).rows
    assert (row["value_a"], row["value_b"]) == pytest.approx((plain.rows[0]["value"], shortlisted.rows[0]["value"]))

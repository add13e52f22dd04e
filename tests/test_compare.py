"""`harness compare`: paired differences, exact McNemar tests and Holm's correction on runs whose
item outcomes the test fixes, each number computed here by hand; and the refusals."""

from __future__ import annotations

import csv
import json
import math
import shutil

import numpy as np
import pytest
from factories import build_tiny_clip, write_benchmark_data
from typer.testing import CliRunner

from harness.api import Item
from harness.cli import app
from harness.compare import compare, holm, mcnemar_exact, paired_bootstrap_ci
from harness.errors import HarnessError
from harness.metrics import value_from_items
from harness.registry import BENCHMARKS
from harness.runner import run
from harness.store import ScoreStore

N = 12  # shapes:relation items per run

# Which relation items each run gets right (the rest wrong). A against B: A right and B wrong on
# 5, 6, 7, 8; A wrong and B right on 9; both right on 0-4; both wrong on 10 and 11 (B ties on 10:
# a tie is wrong under the strict rule, right under an argmax that favours the first caption).
RIGHT = {
    "a": set(range(9)),
    "b": {0, 1, 2, 3, 4, 9},
    "c": {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11},
}
TIED = {"b": {10}}


def _matrix(run: str, k: int) -> np.ndarray:
    if k in TIED.get(run, ()):
        return np.array([[0.5, 0.5]], dtype=np.float32)
    return np.array([[0.9, 0.1]] if k in RIGHT[run] else [[0.2, 0.8]], dtype=np.float32)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Three real runs of three tiny CLIPs on shapes:relation, whose stored scores the test then
    replaces with matrices of known outcomes (the store is what compare reads)."""
    root = tmp_path_factory.mktemp("compare")
    runs = {}
    for seed, name in enumerate("abc"):
        tiny = build_tiny_clip(root / f"clip-{name}", seed=seed)
        result = run(scorer="clip", bench="shapes:relation", model=f"local-dir:{tiny.local_dir}",
                     results_dir=root / "results", bench_options={"n": N}, workers=0, progress=False)
        runs[name] = result
        items = result.evaluation.items
        ScoreStore(root / "results" / "scores.sqlite").put(
            result.evaluation.scorer_key, "shapes", "1",
            [(item, _matrix(name, int(item.id.split("/")[1]))) for item in items])
    return root / "results", runs


def test_the_known_case_by_hand(results):
    results_dir, runs = results
    a, b = runs["a"].run_id, runs["b"].run_id
    out = compare([a, b], results_dir, seed=7, write=False)
    (row,) = out.rows
    assert (row["subset"], row["metric"], row["n"], row["n_common"]) == ("relation", "accuracy", N, N)
    assert (row["only_a"], row["only_b"]) == (0, 0)
    assert row["value_a"] == pytest.approx(100 * 9 / 12) and row["value_b"] == pytest.approx(100 * 6 / 12)
    assert row["difference"] == pytest.approx(-25.0)
    assert (row["a_right_b_wrong"], row["a_wrong_b_right"]) == (4, 1)

    # exact McNemar: 5 discordant items, the smaller count 1; p = 2 * P(Binomial(5, 1/2) <= 1)
    p = 2 * (math.comb(5, 0) + math.comb(5, 1)) / 2 ** 5
    assert p == 0.375 and row["p_value"] == pytest.approx(p) and row["p_holm"] == pytest.approx(p)

    # the paired bootstrap written out: one draw of 1,000 x 12 indices, the same for both runs
    correct_a = [1.0 if k in RIGHT["a"] else 0.0 for k in range(N)]
    correct_b = [1.0 if k in RIGHT["b"] else 0.0 for k in range(N)]
    draws = np.random.default_rng(7).integers(0, N, size=(1000, N))
    diffs = []
    for indices in draws:
        diffs.append(100 * (sum(correct_b[i] for i in indices) - sum(correct_a[i] for i in indices)) / N)
    low, high = np.quantile(diffs, [0.025, 0.975])
    assert row["diff_ci_low"] == pytest.approx(low) and row["diff_ci_high"] == pytest.approx(high)
    assert low < -25 < high

    # the items behind the row
    (items,) = out.items
    assert items["a_better"] == [f"relation/{k}" for k in (5, 6, 7, 8)] and items["b_better"] == ["relation/9"]


def test_a_tie_is_wrong_by_the_strict_rule_and_the_comparison_follows_it(results):
    """Item 10: B ties its two captions. Strictly that is wrong, so A (wrong there too) and B agree
    on it; had an argmax sent the tie to the first (true) caption, B would be right and the
    discordant counts would be 4 and 2, with another p-value."""
    results_dir, runs = results
    row = compare([runs["a"].run_id, runs["b"].run_id], results_dir, write=False).rows[0]
    strict = (row["a_right_b_wrong"], row["a_wrong_b_right"])
    argmax_b = RIGHT["b"] | TIED["b"]
    lenient = (len(RIGHT["a"] - argmax_b), len(argmax_b - RIGHT["a"]))
    assert strict == (4, 1) and lenient == (4, 2)
    assert row["p_value"] == pytest.approx(mcnemar_exact(*strict)) != pytest.approx(mcnemar_exact(*lenient))
    assert mcnemar_exact(*lenient) == pytest.approx(2 * (1 + 6 + 15) / 2 ** 6)


def test_three_runs_every_one_against_the_first_with_holm(results):
    results_dir, runs = results
    out = compare([runs["a"].run_id, runs["b"].run_id, runs["c"].run_id], results_dir, write=False)
    by_b = {r["run_b"]: r for r in out.rows}
    ab, ac = by_b[runs["b"].run_id], by_b[runs["c"].run_id]
    # A against C: C is right wherever A is, and on 9, 10, 11: 0 and 3 discordant items
    assert (ac["a_right_b_wrong"], ac["a_wrong_b_right"]) == (0, 3)
    p_ab, p_ac = 0.375, 2 * 1 / 2 ** 3
    assert ac["p_value"] == pytest.approx(p_ac)
    # Holm over two pairs: the smaller p times 2, the larger times 1 but never below the first
    assert ac["p_holm"] == pytest.approx(2 * p_ac)
    assert ab["p_holm"] == pytest.approx(max(2 * p_ac, p_ab))
    assert {r["pairs"] for r in out.rows} == {2} and "many more tests" in ab["caveat"]


def test_holm_and_mcnemar_against_plain_formulas():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(0, 10) == pytest.approx(2 / 2 ** 10)
    # large counts stay finite and agree with the normal approximation's order of magnitude
    assert 0 < mcnemar_exact(4000, 4300) < 0.05


def test_a_macro_row_is_resampled_within_groups():
    """Two groups of unequal size: the value is the mean of group means, and the interval draws
    within each group, group by group, with the same indices for both runs."""
    a = np.array([1, 0, 1, 1, 0, 0, 1], dtype=float)
    b = np.array([1, 1, 1, 0, 1, 1, 1], dtype=float)
    groups = ["x", "x", "x", "y", "y", "y", "y"]
    assert value_from_items(a, groups) == pytest.approx(100 * (2 / 3 + 2 / 4) / 2)
    low, high = paired_bootstrap_ci(a, b, groups, seed=3, resamples=500)
    rng = np.random.default_rng(3)
    draws_x, draws_y = rng.integers(0, 3, size=(500, 3)), rng.integers(0, 4, size=(500, 4))
    diffs = []
    for ix, iy in zip(draws_x, draws_y):
        x = (sum(b[i] for i in ix) - sum(a[i] for i in ix)) / 3
        y = (sum(b[3 + i] for i in iy) - sum(a[3 + i] for i in iy)) / 4
        diffs.append(100 * (x + y) / 2)
    assert (low, high) == pytest.approx(tuple(np.quantile(diffs, [0.025, 0.975])))


@pytest.mark.parametrize("name", ["winoground", "aro", "sugarcrepe", "shapes", "zeroshot"])
def test_every_row_carries_per_item_values_that_give_its_value(name, tmp_path):
    """The benchmarks' metrics keep each row's items (ids, values, groups for macro rows), and
    those reproduce the row's value; scores are random matrices, so no model is needed."""
    write_benchmark_data(name, tmp_path)
    bench = BENCHMARKS.get(name)(tmp_path)
    items: list[Item] = bench.items()
    rng = np.random.default_rng(0)
    scores = [rng.normal(size=(len(i.images), len(i.texts))) for i in items]
    rows = bench.metrics(items, scores, seed=0)
    known = {item.id for item in items}
    for row in rows:
        if row.n == 0:
            continue
        assert row.per_item, (row.subset, row.metric)
        assert len(row.item_ids) == len(row.item_values) == row.n and set(row.item_ids) <= known
        assert value_from_items(row.item_values, row.item_groups) == pytest.approx(row.value), row


def test_specs_name_the_newest_run_of_a_model_and_the_cli_writes_rows(results, tmp_path):
    results_dir, runs = results
    work = tmp_path / "results"
    shutil.copytree(results_dir, work)
    model_a = json.loads((runs["a"].run_dir / "config.json").read_text())["scorer_config"]["model"]
    portable_b = runs["b"].rows[0]["model"]
    out = CliRunner().invoke(app, ["compare", f"clip:{model_a}", f"clip:{portable_b}", "--results-dir", str(work),
                                   "--seed", "7"])
    assert out.exit_code == 0, out.output
    assert f"{N} items in common; A has 0 that B lacks, B has 0 that A lacks" in out.output
    assert "-25.00" in out.output and "0.375" in out.output
    with open(work / "comparisons.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert (row["run_a"], row["run_b"], row["a_right_b_wrong"], row["test"]) == \
        (runs["a"].run_id, runs["b"].run_id, "4", "mcnemar-exact")
    assert float(row["p_holm"]) == pytest.approx(0.375)
    sidecar = json.loads((work / "comparisons" / f"{row['comparison_id']}.json").read_text())
    assert sidecar["rows"][0]["b_better"] == ["relation/9"]
    again = CliRunner().invoke(app, ["compare", runs["a"].run_id, runs["b"].run_id, "--results-dir", str(work)])
    assert again.exit_code == 0
    with open(work / "comparisons.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 2  # appended, the first row kept


def _copy_run(results_dir, run_id, new_id, edit_config=None, edit_rows=None):
    src, dst = results_dir / "runs" / run_id, results_dir / "runs" / new_id
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    config["run_id"] = new_id
    if edit_config:
        edit_config(config)
    (dst / "config.json").write_text(json.dumps(config))
    if edit_rows:
        with open(dst / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        for row in rows:
            edit_rows(row)
        with open(dst / "metrics.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return new_id


@pytest.fixture
def work(results, tmp_path):
    results_dir, runs = results
    target = tmp_path / "results"
    shutil.copytree(results_dir, target)
    return target, {k: v.run_id for k, v in runs.items()}


def test_refuses_another_benchmark_version(work):
    results_dir, ids = work
    old = _copy_run(results_dir, ids["b"], "old", lambda c: c.update(benchmark_version="0"))
    with pytest.raises(HarnessError, match=r"shapes version 1 and 0.*different benchmark versions"):
        compare([ids["a"], old], results_dir, write=False)


def test_refuses_other_data_but_pairs_runs_that_only_drew_fewer_items(work):
    results_dir, ids = work
    bigger = _copy_run(results_dir, ids["b"], "bigger",
                       lambda c: c["benchmark_details"].update(image_size=64))
    with pytest.raises(HarnessError, match=r"different shapes data \(image_size: 32 in .*, 64 in bigger\)"):
        compare([ids["a"], bigger], results_dir, write=False)
    # n is a scope detail: a run of the first 8 items pairs with one of 12 on those 8
    lines = (results_dir / "runs" / ids["b"] / "item_scores.jsonl").read_text().splitlines()[:8]

    def fewer_items(config):
        config["benchmark_details"]["n"] = 8
        config["bench_options"]["n"] = 8

    fewer = _copy_run(results_dir, ids["b"], "fewer", fewer_items)
    (results_dir / "runs" / fewer / "item_scores.jsonl").write_text("\n".join(lines) + "\n")
    out = compare([ids["a"], fewer], results_dir, write=False)
    assert (out.pairs[0].n_common, out.pairs[0].only_a, out.pairs[0].only_b) == (8, 4, 0)
    assert out.rows[0]["n"] == 8


def test_refuses_other_frozen_data(work):
    results_dir, ids = work

    def stamp(value):
        def edit(row):
            row["details"] = json.dumps({**json.loads(row["details"]), "order_options_sha256": value})
        return edit

    one = _copy_run(results_dir, ids["a"], "one", edit_rows=stamp("aaaa"))
    two = _copy_run(results_dir, ids["b"], "two", edit_rows=stamp("bbbb"))
    with pytest.raises(HarnessError, match=r"differ in order_options_sha256 for relation \(aaaa against bbbb\)"):
        compare([one, two], results_dir, write=False)


def test_refuses_runs_with_no_item_in_common_and_says_how_many_each_has(work, tmp_path):
    results_dir, ids = work
    tiny = build_tiny_clip(tmp_path / "clip-d", seed=3)
    other = run(scorer="clip", bench="shapes:attribute", model=f"local-dir:{tiny.local_dir}", results_dir=results_dir,
                bench_options={"n": 5}, workers=0, progress=False)
    with pytest.raises(HarnessError,
                       match=rf"\({N} items\) and {other.run_id} \(5 items\) have no scored item in common"):
        compare([ids["a"], other.run_id], results_dir, write=False)


def test_refuses_other_benchmarks_unfinished_runs_and_unknown_names(work):
    results_dir, ids = work
    elsewhere = _copy_run(results_dir, ids["b"], "elsewhere", lambda c: c.update(benchmark="winoground"))
    with pytest.raises(HarnessError, match="on shapes and run elsewhere on winoground: different benchmarks"):
        compare([ids["a"], elsewhere], results_dir, write=False)
    running = _copy_run(results_dir, ids["b"], "running", lambda c: c.update(status="running"))
    with pytest.raises(HarnessError, match="run running did not finish"):
        compare([ids["a"], running], results_dir, write=False)
    with pytest.raises(HarnessError, match="no finished run of 'clip:nothing-here'"):
        compare([ids["a"], "clip:nothing-here"], results_dir, write=False)
    with pytest.raises(HarnessError, match="neither a run in .* nor SCORER:MODEL"):
        compare([ids["a"], "no-such-run"], results_dir, write=False)
    result = CliRunner().invoke(app, ["compare", ids["a"], "no-such-run", "--results-dir", str(results_dir)])
    assert result.exit_code == 2 and "error:" in result.output and not (results_dir / "comparisons.csv").exists()

"""Every registered scorer on every registered benchmark honours the contracts in harness.api."""

from __future__ import annotations

import json

import numpy as np
import pytest
from factories import scorer_config, write_benchmark_data

from harness.api import Benchmark, DataRequirement, MetricRow, Scorer
from harness.registry import BENCHMARKS, SCORERS
from harness.runner import evaluate
from harness.store import ScoreStore


@pytest.fixture(scope="module")
def scorers(tmp_path_factory):
    built = {}
    for name in SCORERS.names():
        built[name] = SCORERS.get(name)(scorer_config(name, tmp_path_factory.mktemp(name)))
    return built


@pytest.mark.parametrize("name", BENCHMARKS.names())
def test_benchmark_contract(name, tmp_path):
    options = write_benchmark_data(name, tmp_path)
    cls = BENCHMARKS.get(name)
    assert issubclass(cls, Benchmark) and cls.name == name and cls.version
    whole = cls(tmp_path, **options)
    whole.items()
    present = [s for s in cls.subsets if s not in whole.skipped]
    assert set(whole.skipped) <= set(cls.subsets)
    for subset in (None, *present):
        bench = cls(tmp_path, subset, **options)
        items = bench.items()
        assert items and len({i.id for i in items}) == len(items)
        for item in items[:3]:
            assert (item.images or item.query_texts) and item.texts
        with_images = [item for item in items if item.images]
        assert with_images  # every benchmark has image items; text-query items come beside them
        image = bench.load_image(with_images[0].images[0])
        assert image.mode == "RGB" and image.size[0] > 0
        json.dumps(bench.details())
    requirements = cls.describe_data(tmp_path)
    assert requirements and all(isinstance(r, DataRequirement) for r in requirements)
    assert any(r.found for r in requirements)


@pytest.mark.parametrize("scorer_name", SCORERS.names())
@pytest.mark.parametrize("bench_name", BENCHMARKS.names())
def test_scorer_on_benchmark(scorer_name, bench_name, scorers, tmp_path):
    scorer: Scorer = scorers[scorer_name]
    assert isinstance(scorer, Scorer) and scorer.family
    options = write_benchmark_data(bench_name, tmp_path)
    bench = BENCHMARKS.get(bench_name)(tmp_path, **options)
    fingerprint = scorer.fingerprint()
    assert json.loads(json.dumps(fingerprint)) == fingerprint and fingerprint == scorer.fingerprint()
    assert "model" in scorer.describe()
    result = evaluate(scorer, bench, ScoreStore(tmp_path / "s.sqlite"), workers=0, progress=False)
    for item, matrix in zip(result.items, result.scores):
        if item.query_texts and not scorer.compares_texts:
            assert matrix is None  # a scorer without a text-to-text score is never given text-query items
            continue
        assert matrix.shape == (len(item.query_texts) or len(item.images), len(item.texts))
        assert np.isfinite(matrix).all()
    assert result.rows and all(isinstance(r, MetricRow) for r in result.rows)
    not_computed = [r for r in result.rows if (r.details or {}).get("not_computed")]
    assert all(np.isnan(r.value) and r.n == 0 and r.ci_low is None for r in not_computed)
    assert all(r.n > 0 and (np.isnan(r.value) or 0 <= r.value <= 100) for r in result.rows if r not in not_computed)
    text_items = sum(bool(item.query_texts) for item in result.items)
    if text_items and not scorer.compares_texts:  # the run and its rows say what was left out
        assert sum(result.not_computed.values()) == text_items and not_computed
    else:
        assert not result.not_computed and not not_computed
    first_image = next(ref for item in result.items for ref in item.images)
    assert not scorer.has_image(first_image)  # cleared after the run


@pytest.mark.parametrize("scorer_name", SCORERS.names())
def test_a_duplicated_candidate_ties_exactly_and_is_never_correct(scorer_name, scorers, tmp_path):
    """Two identical candidate texts get bit-identical scores, so an item whose wrong option equals
    the right one can never count as right (ARO's COCO-Order has such items)."""
    from factories import PhotoBenchmark

    from harness.api import Item
    from harness.metrics import strictly_first, winoground_outcome

    items = [Item("one", ("0",), ("a dog on a couch", "a couch on a dog", "a dog on a couch"), (0,)),
             Item("many", ("1",), tuple(f"caption {k}" for k in range(20)) + ("caption 3",), (3,)),
             Item("pair", ("2", "3"), ("two cats", "two cats"), (0, 1))]
    result = evaluate(scorers[scorer_name], PhotoBenchmark.make(items), ScoreStore(tmp_path / "s.sqlite"),
                      workers=0, progress=False)
    one, many, pair = result.scores
    assert one[0, 0] == one[0, 2] and not strictly_first(one, 0)
    assert many[0, 3] == many[0, 20] and not strictly_first(many, 3)
    assert pair[0, 0] == pair[0, 1] and pair[1, 0] == pair[1, 1] and not winoground_outcome(pair)["text"]

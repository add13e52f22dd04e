"""pytest-benchmark: the batched diffusion scorer against the plain reference loop (one pair and
one timestep per UNet call), tiny pipeline, Winoground fixture, default settings, same scores.
Run with `pytest -m perf tests/perf -s`."""

from __future__ import annotations

import numpy as np
import pytest
from diffusion_reference import PlainDiffusionScore
from factories import write_winoground_parquet
from factories_diffusion import build_tiny_sd

from benchmarks.winoground import Winoground
from harness.api import ScorerConfig
from harness.runner import evaluate
from harness.store import ScoreStore
from models.diffusion import DiffusionScorer

TIMES: dict[str, float] = {}
N_ITEMS = 12


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("diffusion_perf")
    write_winoground_parquet(tmp / "data" / "winoground", N_ITEMS)
    folder = build_tiny_sd(tmp / "sd")
    bench = Winoground(tmp / "data")
    scorer = DiffusionScorer(ScorerConfig(model=str(folder), options={"batch_size": 120}))  # defaults: 10 timesteps
    reference = PlainDiffusionScore(folder, scorer.timesteps, draws=1, seed=0)
    return scorer, reference, bench, tmp


def plain_loop(reference, bench):
    return [reference.scores([bench.load_image(r) for r in item.images], item.texts) for item in bench.items()]


def test_plain_reference_loop(benchmark, setup):
    _, reference, bench, _ = setup
    benchmark.pedantic(plain_loop, args=(reference, bench), rounds=3, iterations=1)
    TIMES["plain"] = benchmark.stats.stats.min


def test_batched_scorer(benchmark, setup):
    scorer, reference, bench, tmp = setup
    counter = iter(range(1000))

    def fresh_run():
        scorer._conditions.clear()
        return evaluate(scorer, bench, ScoreStore(tmp / f"s{next(counter)}.sqlite"), progress=False)

    result = benchmark.pedantic(fresh_run, rounds=3, iterations=1)
    for ours, plain in zip(result.scores, plain_loop(reference, bench)):
        np.testing.assert_allclose(ours, plain, rtol=0, atol=1e-6)
    TIMES["batched"] = benchmark.stats.stats.min
    if "plain" in TIMES:
        ratio = TIMES["plain"] / TIMES["batched"]
        benchmark.extra_info["speedup_vs_plain"] = ratio
        print(f"\n[diffusion] {N_ITEMS} Winoground items, {scorer.unet_passes // 3} UNet passes a run: plain "
              f"{TIMES['plain']:.3f} s, batched {TIMES['batched']:.3f} s, speed-up {ratio:.2f}x")

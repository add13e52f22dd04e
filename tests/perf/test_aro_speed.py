"""pytest-benchmark: COCO-Order scoring by the runner against a naive loop that re-encodes the
image for every caption (five times per COCO image). Same tiny CLIP, same fixture, same scores.
Run with `pytest -m perf tests/perf -s`.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from factories import build_tiny_clip, toy_tagger, write_aro

from benchmarks.aro import ARO
from harness.api import ScorerConfig
from harness.runner import evaluate
from harness.store import ScoreStore
from models.clip import ClipScorer

TIMES: dict[str, float] = {}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("aro_perf")
    write_aro(tmp, n_images=60, unique_captions=True)  # 300 COCO-Order items, no caption repeated
    scorer = ClipScorer(ScorerConfig(model=f"local-dir:{build_tiny_clip(tmp / 'clip').local_dir}", options={"batch_size": 64}))
    bench = ARO(tmp, "coco-order", tagger=toy_tagger)
    return scorer, bench, bench.items(), tmp


def naive_loop(scorer, bench, items):
    out = []
    with torch.inference_mode():
        for item in items:
            image = scorer.preprocess(bench.load_image(item.images[0]))[None]
            img = F.normalize(scorer.model.encode_image(image), dim=-1)
            txt = F.normalize(scorer.model.encode_text(scorer.tokenizer(list(item.texts))), dim=-1)
            out.append((img @ txt.T).numpy())
    return out


def test_naive_coco_order(benchmark, setup):
    scorer, bench, items, _ = setup
    benchmark.pedantic(naive_loop, args=(scorer, bench, items), rounds=3, iterations=1)
    TIMES["naive"] = benchmark.stats.stats.min


def test_runner_coco_order(benchmark, setup):
    scorer, bench, items, tmp = setup
    counter = iter(range(1000))

    def fresh_run():
        scorer._text_cache.clear()
        return evaluate(scorer, bench, ScoreStore(tmp / f"s{next(counter)}.sqlite"), progress=False)

    result = benchmark.pedantic(fresh_run, rounds=3, iterations=1)
    for a, b in zip(result.scores, naive_loop(scorer, bench, items)):
        assert abs(a - b).max() < 1e-4
    TIMES["runner"] = benchmark.stats.stats.min
    if "naive" in TIMES:
        ratio = TIMES["naive"] / TIMES["runner"]
        benchmark.extra_info["speedup_vs_naive"] = ratio
        print(f"\n[coco-order] {len(items)} items: naive {TIMES['naive']:.3f} s, runner {TIMES['runner']:.3f} s, "
              f"speed-up {ratio:.2f}x")

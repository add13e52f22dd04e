"""pytest-benchmark: the runner against a naive item-by-item loop, same model, same fixture.

Run with `pytest -m perf tests/perf -s`; the ratio is printed and stored in the benchmark's
extra_info. Two models: the tiny test CLIP, and ViT-B-32's real architecture with random weights
(no download needed), where compute rather than per-call overhead dominates.
"""

from __future__ import annotations

import open_clip
import pytest
import torch
import torch.nn.functional as F
from factories import build_tiny_clip, write_winoground_parquet
from safetensors.torch import save_file

from benchmarks.winoground import Winoground
from harness.api import ScorerConfig
from harness.runner import evaluate
from harness.store import ScoreStore
from models.clip import ClipScorer

TIMES: dict[str, dict[str, float]] = {}


def naive_loop(scorer: ClipScorer, bench: Winoground, items) -> list:
    """What a first script does: decode, encode and compare one item at a time, no caching."""
    model, preprocess, tokenizer = scorer.model, scorer.preprocess, scorer.tokenizer
    out = []
    with torch.inference_mode():
        for item in items:
            images = torch.stack([preprocess(bench.load_image(r)) for r in item.images])
            img = F.normalize(model.encode_image(images), dim=-1)
            txt = F.normalize(model.encode_text(tokenizer(list(item.texts))), dim=-1)
            out.append((img @ txt.T).double().numpy())
    return out


def _vit_b_32_local_dir(folder):
    """ViT-B-32's architecture with random weights, saved as a local-dir: model."""
    import json

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32")
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "open_clip_model.safetensors")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": open_clip.get_model_config("ViT-B-32")}))
    return folder


@pytest.fixture(scope="module", params=["tiny", "vit-b-32"])
def setup(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    n = 200 if request.param == "tiny" else 60
    write_winoground_parquet(tmp / "data" / "winoground", n, rows_per_group=100)
    if request.param == "tiny":
        local = build_tiny_clip(tmp / "clip").local_dir
    else:
        local = _vit_b_32_local_dir(tmp / "vit")
    scorer = ClipScorer(ScorerConfig(model=f"local-dir:{local}", options={"batch_size": 64}))
    bench = Winoground(tmp / "data")
    return request.param, scorer, bench, bench.items(), tmp


def test_naive_item_by_item_loop(benchmark, setup):
    name, scorer, bench, items, _ = setup
    benchmark.pedantic(naive_loop, args=(scorer, bench, items), rounds=3, iterations=1)
    TIMES.setdefault(name, {})["naive"] = benchmark.stats.stats.min


def test_runner(benchmark, setup):
    name, scorer, bench, items, tmp = setup
    counter = iter(range(1000))

    def fresh_run():
        # a new store each round, so every round scores everything
        scorer._text_cache.clear()
        return evaluate(scorer, bench, ScoreStore(tmp / f"s{next(counter)}.sqlite"), progress=False)

    result = benchmark.pedantic(fresh_run, rounds=3, iterations=1)
    reference = naive_loop(scorer, bench, items)
    for a, b in zip(result.scores, reference):
        assert abs(a - b).max() < 1e-4
    TIMES.setdefault(name, {})["runner"] = benchmark.stats.stats.min
    times = TIMES[name]
    if "naive" in times:
        ratio = times["naive"] / times["runner"]
        benchmark.extra_info["speedup_vs_naive"] = ratio
        print(f"\n[{name}] {len(items)} items: naive {times['naive']:.3f} s, runner {times['runner']:.3f} s, "
              f"speed-up {ratio:.2f}x")

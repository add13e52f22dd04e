"""The diffusion scorer against a plain one-pair-one-timestep reference, and its invariances."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
from diffusion_reference import PlainDiffusionScore
from factories import PhotoBenchmark, write_winoground_parquet
from factories_diffusion import build_tiny_sd

from benchmarks.winoground import Winoground
from harness.metrics import winoground_outcome
from harness.api import Item, ScorerConfig
from harness.errors import HarnessError, MissingWeightsError
from harness.runner import evaluate
from harness.store import ScoreStore
from models.diffusion import DiffusionScorer, even_timesteps


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory):
    return build_tiny_sd(tmp_path_factory.mktemp("tiny_sd"))


@pytest.fixture(scope="session")
def tiny_sd_v(tmp_path_factory):
    return build_tiny_sd(tmp_path_factory.mktemp("tiny_sd_v"), prediction_type="v_prediction")


@pytest.fixture(scope="session")
def wino6(tmp_path_factory):
    root = tmp_path_factory.mktemp("wino6")
    write_winoground_parquet(root / "winoground", 6)
    return root


def _scores(folder, bench, tmp_path, name="s", **options):
    batch_size = options.pop("batch_size", 16)
    scorer = DiffusionScorer(ScorerConfig(model=str(folder),
                                          options={"batch_size": batch_size, "timesteps": 3, **options}))
    result = evaluate(scorer, bench, ScoreStore(tmp_path / f"{name}.sqlite"), workers=0, progress=False)
    return scorer, result


@pytest.mark.parametrize("which", ["tiny_sd", "tiny_sd_v"])
def test_matches_the_plain_reference(which, request, wino6, tmp_path):
    folder = request.getfixturevalue(which)
    bench = Winoground(wino6)
    scorer, result = _scores(folder, bench, tmp_path, noise_samples=2)
    reference = PlainDiffusionScore(folder, scorer.timesteps, draws=2, seed=0)
    for item, matrix in zip(result.items, result.scores):
        expected = reference.scores([bench.load_image(r) for r in item.images], item.texts)
        np.testing.assert_allclose(matrix, expected, rtol=1e-4, atol=1e-6)
    assert scorer.prediction_type == ("v_prediction" if which == "tiny_sd_v" else "epsilon")
    # 6 items x 2 images x (2 captions + the empty prompt) x 3 timesteps x 2 draws
    assert scorer.report() == {"unet_passes": 6 * 2 * 3 * 3 * 2}


def test_batch_size_does_not_change_scores(tiny_sd, wino6, tmp_path):
    bench = Winoground(wino6)
    _, one = _scores(tiny_sd, bench, tmp_path, "a", batch_size=1)
    _, many = _scores(tiny_sd, bench, tmp_path, "b", batch_size=64)
    # scores are differences of two errors of about 1 computed in float32, so compare absolutely
    for a, b in zip(one.scores, many.scores):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_seed_decides_the_noise(tiny_sd, wino6, tmp_path):
    bench = Winoground(wino6)
    a = DiffusionScorer(ScorerConfig(model=str(tiny_sd), seed=0, options={"timesteps": 2}))
    b = DiffusionScorer(ScorerConfig(model=str(tiny_sd), seed=1, options={"timesteps": 2}))
    assert a.fingerprint() != b.fingerprint()
    sa = evaluate(a, bench, ScoreStore(tmp_path / "a.sqlite"), workers=0, progress=False).scores
    sb = evaluate(b, bench, ScoreStore(tmp_path / "b.sqlite"), workers=0, progress=False).scores
    assert max(np.abs(x - y).max() for x, y in zip(sa, sb)) > 0


def test_unconditional_normalisation_moves_image_side_never_text_side_decisions(tiny_sd, tmp_path):
    write_winoground_parquet(tmp_path / "data" / "winoground", 24)
    bench = Winoground(tmp_path / "data")
    _, on = _scores(tiny_sd, bench, tmp_path, "on", uncond="on")
    _, off = _scores(tiny_sd, bench, tmp_path, "off", uncond="off")
    image_changed = 0
    for a, b in zip(on.scores, off.scores):
        shift = a - b
        np.testing.assert_allclose(shift[:, 0], shift[:, 1], atol=1e-9)  # one constant per image (row)
        assert winoground_outcome(a)["text"] == winoground_outcome(b)["text"]
        image_changed += winoground_outcome(a)["image"] != winoground_outcome(b)["image"]
    assert image_changed > 0


def test_adaptive_mode_keeps_the_argmax_where_margins_are_clear_and_saves_passes(tiny_sd, tmp_path):
    # one image against five captions; ARO-like, so only the best caption matters
    texts = ("a dog on a couch", "a couch on a dog", "a red car", "two birds in the sky", "")
    items = [Item(id=str(k), images=(str(k),), texts=texts, truth=(0,)) for k in range(8)]
    full_scorer = DiffusionScorer(ScorerConfig(model=str(tiny_sd), options={"timesteps": 8}))
    adaptive_scorer = DiffusionScorer(ScorerConfig(model=str(tiny_sd), options={
        "timesteps": 8, "adaptive": "on", "adaptive_first": 3, "adaptive_keep": 2}))
    results = {}
    for name, scorer in (("full", full_scorer), ("adaptive", adaptive_scorer)):
        bench = PhotoBenchmark.make(items)
        bench.comparisons = "text_argmax"
        results[name] = evaluate(scorer, bench, ScoreStore(tmp_path / f"{name}.sqlite"), workers=0,
                                 progress=False).scores
    clear = 0
    for full, adaptive in zip(results["full"], results["adaptive"]):
        ranked = np.sort(full[0])[::-1]
        if ranked[0] - ranked[1] > 0.1 * abs(ranked[0] - ranked[-1]):  # a clear winner
            clear += 1
            assert full[0].argmax() == adaptive[0].argmax()
    assert clear >= 3
    assert adaptive_scorer.unet_passes < full_scorer.unet_passes
    # 8 items x 5 captions x 3 first-stage timesteps + 8 items x 2 kept x 5 remaining timesteps
    assert adaptive_scorer.unet_passes == 8 * 5 * 3 + 8 * 2 * 5


def test_even_timesteps():
    assert even_timesteps(4, 1000) == [125, 375, 625, 875]


def test_bad_options_and_missing_pipelines(tiny_sd, tmp_path, monkeypatch):
    with pytest.raises(HarnessError, match="--opt steps: not an option of scorer diffusion; valid: batch_size, timesteps"):
        DiffusionScorer(ScorerConfig(model=str(tiny_sd), options={"steps": 3}))
    with pytest.raises(HarnessError, match=r"timesteps: \[2000\] outside 0..999"):
        DiffusionScorer(ScorerConfig(model=str(tiny_sd), options={"timesteps": "10,2000"}))
    with pytest.raises(HarnessError, match="distance='cosine' for scorer diffusion: expected one of l2, l1"):
        DiffusionScorer(ScorerConfig(model=str(tiny_sd), options={"distance": "cosine"}))
    with pytest.raises(HarnessError, match="--pretrained is not used"):
        DiffusionScorer(ScorerConfig(model=str(tiny_sd), pretrained="x"))
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "unet").mkdir()
    with pytest.raises(MissingWeightsError, match=r"lacks \['vae', 'text_encoder', 'tokenizer', 'scheduler'\]"):
        DiffusionScorer(ScorerConfig(model=str(tmp_path / "half")))
    with pytest.raises(MissingWeightsError, match="no such pipeline folder"):
        DiffusionScorer(ScorerConfig(model=str(tmp_path / "absent")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError, match="stabilityai/stable-diffusion-2-1-base.*offline.*huggingface-cli"):
        DiffusionScorer(ScorerConfig(model="stabilityai/stable-diffusion-2-1-base"))


def _stored(db) -> dict[str, bytes]:
    with sqlite3.connect(db) as con:
        return dict(con.execute("SELECT item_id, scores FROM scores"))


def test_two_processes_give_the_scores_of_one(tiny_sd, wino6, tmp_path):
    """torchrun with 2 gloo processes: items are shared out, rank 0 writes one set of rows."""
    import io

    common = ["--scorer", "diffusion", "--bench", "winoground", "--model", str(tiny_sd),
              "--data-root", str(wino6), "--timesteps", "3", "--workers", "0", "--no-progress",
              "--batch-size", "5"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "harness", "run", *common, "--results-dir",
                             str(tmp_path / "one")], capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr
    double = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "harness", "run", *common, "--results-dir", str(tmp_path / "two")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert double.returncode == 0, double.stderr
    assert double.stdout.count("rows appended to") == 1  # rank 0 reports, once
    one, two = _stored(tmp_path / "one" / "scores.sqlite"), _stored(tmp_path / "two" / "scores.sqlite")
    assert set(one) == set(two) == {str(i) for i in range(6)}
    for item_id in one:
        a, b = (np.load(io.BytesIO(x[item_id])) for x in (one, two))
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    import pandas as pd

    rows_one = pd.read_csv(tmp_path / "one" / "leaderboard.csv")
    rows_two = pd.read_csv(tmp_path / "two" / "leaderboard.csv")
    assert len(rows_two) == len(rows_one) == 27  # 3 overall, per collapsed_tag, num_main_preds, diwan_tag
    assert list(rows_two["value"]) == list(rows_one["value"])

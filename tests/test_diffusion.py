"""The diffusion scorer against a plain one-pair-one-timestep reference, and its invariances."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
import torch
from diffusion_reference import PlainDiffusionScore
from factories import PhotoBenchmark, photo, write_winoground_parquet
from factories_diffusion import build_tiny_sd

from benchmarks.winoground import Winoground
from harness.metrics import winoground_outcome
from harness.api import Benchmark, Item, ScorerConfig
from harness.errors import HarnessError, MissingWeightsError
from harness.runner import evaluate
from harness.store import ScoreStore
from models.diffusion import DiffusionScorer, denoising_error, even_timesteps, first_stage, timestep_grid


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


def _scores(folder, bench, tmp_path, name="s", items=None, **options):
    batch_size = options.pop("batch_size", 16)
    scorer = DiffusionScorer(ScorerConfig(model=str(folder),
                                          options={"batch_size": batch_size, "timesteps": 3, **options}))
    result = evaluate(scorer, bench, ScoreStore(tmp_path / f"{name}.sqlite"), items=items, workers=0, progress=False)
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
    with pytest.raises(HarnessError, match="--opt steps: not an option of scorer diffusion; valid: protocol, batch_size, "
                                           "timesteps"):
        DiffusionScorer(ScorerConfig(model=str(tiny_sd), options={"steps": 3}))
    with pytest.raises(HarnessError, match=r"timesteps: \[2000\] outside 0..999"):
        DiffusionScorer(ScorerConfig(model=str(tiny_sd), options={"timesteps": "10,2000"}))
    with pytest.raises(HarnessError, match="distance='cosine' for scorer diffusion: expected one of l2, l1, huber, "
                                           "l2-norm"):
        DiffusionScorer(ScorerConfig(model=str(tiny_sd), options={"distance": "cosine"}))
    with pytest.raises(HarnessError, match="protocol='itm' for scorer diffusion: expected one of harness, "
                                           "diffusion-itm, diffusion-classifier"):
        DiffusionScorer(ScorerConfig(model=str(tiny_sd), options={"protocol": "itm"}))
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


# -- protocols --------------------------------------------------------------------------------------

class _WidePhotos(Benchmark):
    """2x2 items of wide photographs, where squashing and centre-cropping give different pixels."""

    name = "wide-photos"
    version = "1"
    TEXTS = ("a dog on a couch", "a couch on a dog")

    def items(self):
        return [Item(id=str(k), images=(str(2 * k), str(2 * k + 1)), texts=self.TEXTS, truth=(0, 1)) for k in range(2)]

    def load_image(self, ref):
        return photo(int(ref), 64).resize((96, 48))

    def metrics(self, items, scores, seed):
        return []

    @classmethod
    def describe_data(cls, data_root):
        return []


def _by_hand(folder, bench, result, timesteps, **reference_options):
    """Each item's score matrix from the plain reference, next to the scorer's."""
    reference = PlainDiffusionScore(folder, timesteps, seed=0, **reference_options)
    for item, matrix in zip(result.items, result.scores):
        expected = reference.scores([bench.load_image(r) for r in item.images], item.texts, refs=list(item.images))
        yield matrix, expected


def test_diffusion_itm_protocol_matches_the_reference_by_hand(tiny_sd, tmp_path):
    bench = _WidePhotos(tmp_path)
    scorer, result = _scores(tiny_sd, bench, tmp_path, protocol="diffusion-itm", uncond="on", timesteps=2)
    # DiffusionITM's grid for 2 timesteps: range(10, 990, 1000 // 2)
    assert scorer.timesteps == [10, 510]
    fingerprint = scorer.fingerprint()
    assert {k: fingerprint[k] for k in ("protocol", "distance", "vae_latent", "preprocess", "uncond", "precision")} == {
        "protocol": "diffusion-itm", "distance": "l2-norm", "vae_latent": "sample-per-pass", "preprocess": "squash",
        "uncond": True, "precision": "fp32"}  # fp16 from a protocol means fp32 on the CPU
    assert scorer.describe()["pretrained"] == "protocol=diffusion-itm,timesteps=2,uncond=true"
    for matrix, expected in _by_hand(tiny_sd, bench, result, [10, 510], uncond=True, distance="l2-norm",
                                     latent="sample-per-pass", preprocess="squash"):
        np.testing.assert_allclose(matrix, expected, rtol=1e-5, atol=1e-5)
    # the per-pass samples differ per caption, so the empty prompt's error is no longer one
    # constant per image, and the posterior samples are not the mean
    mean_reference = PlainDiffusionScore(tiny_sd, [10, 510], seed=0, uncond=True, distance="l2-norm",
                                         latent="mean", preprocess="squash")
    item = result.items[0]
    at_mean = mean_reference.scores([bench.load_image(r) for r in item.images], item.texts)
    assert np.abs(result.scores[0] - at_mean).max() > 1e-4
    # 2 items x 2 images x 2 captions x (the caption + the empty prompt on that caption's samples) x 2 timesteps
    assert scorer.unet_passes == 2 * 2 * 2 * 2 * 2


def test_diffusion_classifier_protocol_matches_the_reference_by_hand(tiny_sd, wino6, tmp_path):
    bench = Winoground(wino6)
    scorer, result = _scores(tiny_sd, bench, tmp_path, items=bench.items()[:3], protocol="diffusion-classifier")
    # Diffusion Classifier's grid for 3 timesteps: range(1000 // 3 // 2, 1000, 1000 // 3)
    assert scorer.timesteps == [166, 499, 832]
    assert scorer.describe()["pretrained"] == "protocol=diffusion-classifier,timesteps=3"
    for matrix, expected in _by_hand(tiny_sd, bench, result, [166, 499, 832], uncond=False, distance="l2",
                                     latent="mean", preprocess="crop"):
        np.testing.assert_allclose(matrix, expected, rtol=1e-5, atol=1e-6)
    assert scorer.unet_passes == 3 * 2 * 2 * 3  # no unconditional passes


def test_explicit_options_win_over_the_protocol_and_are_named(tiny_sd, tmp_path):
    bench = _WidePhotos(tmp_path)
    scorer, result = _scores(tiny_sd, bench, tmp_path, protocol="diffusion-itm", timesteps="100,600",
                             vae_latent="mean", distance="huber")
    assert scorer.timesteps == [100, 600]
    fingerprint = scorer.fingerprint()
    assert (fingerprint["vae_latent"], fingerprint["distance"], fingerprint["preprocess"]) == ("mean", "huber", "squash")
    assert scorer.describe()["pretrained"] == "protocol=diffusion-itm,timesteps=100,600,distance=huber,vae_latent=mean"
    for matrix, expected in _by_hand(tiny_sd, bench, result, [100, 600], uncond=False, distance="huber",
                                     latent="mean", preprocess="squash"):
        np.testing.assert_allclose(matrix, expected, rtol=1e-5, atol=1e-6)
    # naming the default protocol, or giving its own values, changes nothing
    plain = DiffusionScorer(ScorerConfig(model=str(tiny_sd)))
    named = DiffusionScorer(ScorerConfig(model=str(tiny_sd), options={"protocol": "harness", "distance": "l2",
                                                                       "timesteps": 10}))
    assert plain.fingerprint() == named.fingerprint()
    assert plain.describe()["pretrained"] == named.describe()["pretrained"] == "protocol=harness"
    assert plain.timesteps == even_timesteps(10, 1000)
    assert plain.fingerprint()["protocol"] == "harness" and plain.fingerprint() != scorer.fingerprint()


def test_vae_sample_per_image_by_hand_and_unchanged_by_batch_size_and_resume(tiny_sd, wino6, tmp_path):
    bench = Winoground(wino6)
    options = {"vae_latent": "sample", "timesteps": 2}
    items = bench.items()[:3]
    one_go, result = _scores(tiny_sd, bench, tmp_path, "one", items=items, batch_size=64, **options)
    for matrix, expected in _by_hand(tiny_sd, bench, result, one_go.timesteps, latent="sample"):
        np.testing.assert_allclose(matrix, expected, rtol=1e-5, atol=1e-6)
    # another process state: one item first, then the rest resumed, batch 1, one item per chunk
    store = ScoreStore(tmp_path / "resumed.sqlite")
    config = ScorerConfig(model=str(tiny_sd), options={**options, "batch_size": 1})
    evaluate(DiffusionScorer(config), bench, store, items=items[:1], workers=0, progress=False)
    resumed = evaluate(DiffusionScorer(config), bench, store, items=items, workers=0, chunk_items=1, progress=False)
    assert resumed.scored_now == 2
    for a, b in zip(result.scores, resumed.scores):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_timestep_grids_of_the_protocols():
    assert timestep_grid(10, 1000, "even") == [50, 150, 250, 350, 450, 550, 650, 750, 850, 950]
    assert timestep_grid(10, 1000, "diffusion-itm") == [10, 110, 210, 310, 410, 510, 610, 710, 810, 910]
    assert timestep_grid(50, 1000, "diffusion-itm") == list(range(10, 990, 20))  # 49 timesteps, as theirs
    assert len(timestep_grid(50, 1000, "diffusion-itm")) == 49
    assert timestep_grid(1000, 1000, "diffusion-classifier") == list(range(1000))  # --t_interval 1
    assert timestep_grid(200, 1000, "diffusion-classifier")[:3] == [2, 7, 12]  # --t_interval 5
    assert timestep_grid(500, 1000, "diffusion-classifier")[-2:] == [997, 999]
    assert timestep_grid(3, 1000, "diffusion-classifier") == [166, 499, 832]
    # the adaptive first stage: Diffusion Classifier takes t_to_eval[n // k // 2 :: n // k][:k]
    assert first_stage(500, 50, "diffusion-classifier") == list(range(5, 500, 10))
    assert first_stage(10, 3, "diffusion-classifier") == [1, 4, 7]
    assert first_stage(10, 3, "even") == [1, 5, 8]


def test_distances_by_hand():
    pred = torch.tensor([[[[0.5, -2.0], [1.0, 0.0]]]])
    target = torch.zeros_like(pred)
    # differences 0.5, -2, 1, 0
    assert denoising_error(pred, target, "l2").item() == pytest.approx((0.25 + 4 + 1 + 0) / 4)
    assert denoising_error(pred, target, "l1").item() == pytest.approx((0.5 + 2 + 1 + 0) / 4)
    assert denoising_error(pred, target, "huber").item() == pytest.approx((0.125 + 1.5 + 0.5 + 0) / 4)
    assert denoising_error(pred, target, "l2-norm").item() == pytest.approx(5.25 ** 0.5)


def test_ls_lists_the_protocol_options():
    from typer.testing import CliRunner

    from harness.cli import app

    out = CliRunner().invoke(app, ["ls", "diffusion"]).output
    for word in ("protocol", "diffusion-itm", "diffusion-classifier", "vae_latent", "sample-per-pass",
                 "timestep_grid", "preprocess", "l2-norm"):
        assert word in out

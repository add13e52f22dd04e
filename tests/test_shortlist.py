"""Shortlist re-ranking: the --shortlist spec, zero-shot and retrieval with and without a shortlist on
the tiny models, results against hand computations, the expensive scorer's work, and reuse."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from benchmark_fixtures.retrieval import write as write_retrieval
from factories_diffusion import build_tiny_sd
from factories_ranking import TableScorer, eighths_table, full_matrix
from factories_zeroshot import write_cifar10
from typer.testing import CliRunner

from benchmarks.retrieval import Retrieval
from benchmarks.zeroshot import ZeroShot
from harness.api import Item, ScorerConfig
from harness.cli import app
from harness.compare import compare
from harness.errors import HarnessError, UnknownNameError
from harness.runner import evaluate, run
from harness.shortlist import ShortlistScorer, parse_shortlist
from harness.store import ScoreStore
from models.clip import ClipScorer
from models.diffusion import DiffusionScorer


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return build_tiny_sd(tmp_path_factory.mktemp("tiny_sd"))


def _clip(tiny_clip):
    return ClipScorer(ScorerConfig(model=f"local-dir:{tiny_clip.local_dir}", options={"batch_size": 16}))


def _sd(tiny_sd, timesteps=2):
    return DiffusionScorer(ScorerConfig(model=str(tiny_sd), options={"timesteps": timesteps, "batch_size": 64}))


def test_the_spec_names_a_scorer_its_model_k_and_options():
    spec = parse_shortlist("clip:ViT-B-32:openai:k=10")
    assert (spec.scorer, spec.model, spec.pretrained, spec.k, spec.options["batch_size"]) == \
           ("clip", "ViT-B-32", "openai", 10, 64)
    spec = parse_shortlist("clip:local-dir:/models/my clip:k=10:batch_size=8")
    assert (spec.model, spec.pretrained, spec.k, spec.options["batch_size"]) == ("local-dir:/models/my clip", None,
                                                                               10, 8)
    assert (parse_shortlist("clip:toy:clip:k=5").model, parse_shortlist("clip:toy:clip:k=5").k) == ("toy:clip", 5)
    assert parse_shortlist("clip:ViT-B-32:/w/ViT-B-32.pt:k=3").pretrained == "/w/ViT-B-32.pt"
    assert parse_shortlist("clip:k=2").model is None  # the cheap scorer's default model
    with pytest.raises(HarnessError, match="k=N"):
        parse_shortlist("clip:ViT-B-32:openai")
    with pytest.raises(HarnessError, match="k must be at least 1"):
        parse_shortlist("clip:toy:clip:k=0")
    with pytest.raises(HarnessError, match="--shortlist quick: not an option of shortlist scorer clip; valid: batch_size"):
        parse_shortlist("clip:toy:clip:k=3:quick=1")
    with pytest.raises(UnknownNameError, match="clap"):
        parse_shortlist("clap:toy:clip:k=3")


def _shortlist_ahead(cheap, expensive, positives, k_short):
    """By hand: how many candidates the composite order puts ahead of the best positive, ties
    against it. The shortlist is the cheap scorer's k best (ties to the lower index), ranked by the
    expensive scores; everything else follows in cheap order."""
    kept = list(np.argsort(-cheap, kind="stable")[:k_short])
    inside = [p for p in positives if p in kept]
    if inside:
        best = max(expensive[p] for p in inside)
        return sum(expensive[j] >= best for j in kept if j not in positives)
    best = max(cheap[p] for p in positives)
    return len(kept) + sum(cheap[j] >= best for j in range(len(cheap)) if j not in positives and j not in kept)


def test_zeroshot_with_and_without_a_shortlist(tiny_clip, tiny_sd, tmp_path):
    write_cifar10(tmp_path, n_per_class=2)
    bench = ZeroShot(tmp_path, "cifar10")
    items = bench.items()
    cheap = evaluate(_clip(tiny_clip), bench, ScoreStore(tmp_path / "clip.db"), workers=0, progress=False)
    plain_sd = _sd(tiny_sd)
    plain = evaluate(plain_sd, bench, ScoreStore(tmp_path / "sd.db"), workers=0, progress=False)
    assert plain_sd.unet_passes == 20 * 10 * 2  # 20 images x 10 classes x 2 timesteps

    sd = _sd(tiny_sd)
    short = evaluate(ShortlistScorer(sd, _clip(tiny_clip), 3), bench, ScoreStore(tmp_path / "short.db"), workers=0,
                     progress=False)
    assert sd.unet_passes == 20 * 3 * 2  # only each image's three best classes

    ahead = np.array([_shortlist_ahead(c[0], d[0], [item.truth[0]], 3)
                      for item, c, d in zip(items, cheap.scores, plain.scores)])
    rows = {r.metric: r.value for r in short.rows}
    assert rows["top1"] == pytest.approx(100 * np.mean(ahead < 1))
    assert rows["top5"] == pytest.approx(100 * np.mean(ahead < 5))
    # k = 3 <= 5: the first five are the cheap scorer's (the tiny CLIP's scores have no ties)
    assert rows["top5"] == pytest.approx({r.metric: r.value for r in cheap.rows}["top5"])

    # the composite is a Scorer too: scoring in memory gives the same matrices
    direct = ShortlistScorer(_sd(tiny_sd), _clip(tiny_clip), 3)
    transform = direct.image_transform()
    for item in items:
        direct.add_images(list(item.images), [transform(bench.load_image(r)) for r in item.images])
    for a, b in zip(direct.score(items), short.scores):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert json.loads(json.dumps(direct.fingerprint()))["k"] == 3


def test_retrieval_with_a_shortlist_equals_a_hand_computation(tiny_sd, tmp_path):
    write_retrieval(tmp_path, 6)
    bench = Retrieval(tmp_path, "flickr30k")
    items = bench.items()
    table = eighths_table(items, seed=1)
    cheap_scores, image_positives, text_positives = full_matrix(items, table)

    # the expensive scorer on every pair, as plain items: an image against every text, a text
    # against every image (its image-side correction then applies, as in a shortlist's items)
    reference = _sd(tiny_sd)
    refs, texts = [item.images[0] for item in items], [t for item in items for t in item.texts]
    transform = reference.image_transform()
    reference.add_images(refs, torch.stack([transform(bench.load_image(r)) for r in refs]))
    by_image = np.stack([reference.score([Item("i", (r,), tuple(texts), (0,))])[0][0] for r in refs])
    by_text = np.stack([reference.score([Item("t", tuple(refs), (t,), (0,) * len(refs))])[0][:, 0] for t in texts])

    sd = _sd(tiny_sd)
    asked = []
    original = sd.score
    sd.score = lambda chunk: (asked.extend(chunk), original(chunk))[1]
    result = evaluate(ShortlistScorer(sd, TableScorer(table), 3), bench, ScoreStore(tmp_path / "s.db"), workers=0,
                      progress=False)
    rows = {r.metric: r.value for r in result.rows}
    for k in (1, 5, 10):
        i2t = [_shortlist_ahead(c, e, p, 3) < k for c, e, p in zip(cheap_scores, by_image, image_positives)]
        t2i = [_shortlist_ahead(c, e, p, 3) < k for c, e, p in zip(cheap_scores.T, by_text, text_positives)]
        assert rows[f"i2t_recall@{k}"] == pytest.approx(100 * np.mean(i2t))
        assert rows[f"t2i_recall@{k}"] == pytest.approx(100 * np.mean(t2i))
    # the expensive scorer saw only shortlists: three texts per image, three images per text
    assert asked and all(len(i.texts) == 3 if len(i.images) == 1 else len(i.images) == 3 and len(i.texts) == 1
                         for i in asked)
    # at most 3 of 30 texts per image, 3 of 6 images per text (and each image's empty prompt), x 2
    # timesteps, against every pair in both directions for the reference
    assert sd.unet_passes <= (6 * 3 + 30 * 3 + 6) * 2 < reference.unet_passes / 4


def test_run_names_both_scorers_and_reuses_the_cheap_ranks(tiny_clip, tiny_sd, tmp_path, monkeypatch):
    write_retrieval(tmp_path / "data", 6)
    common = dict(bench="retrieval:flickr30k", data_root=tmp_path / "data", results_dir=tmp_path / "results",
                  workers=0, progress=False)
    shortlist = f"clip:local-dir:{tiny_clip.local_dir}:k=3"
    first = run(scorer="diffusion", model=str(tiny_sd), options={"timesteps": 2}, shortlist=shortlist, **common)
    row = first.rows[0]
    assert row["scorer"].startswith("diffusion+shortlist(clip:local-dir:local@") and row["scorer"].endswith(":k=3)")
    assert str(tmp_path) not in row["scorer"]  # portable: the folder's name and weights hash, not its path
    assert row["details"]["shortlist"]["k"] == 3 and row["details"]["shortlist"]["scorer"] == "clip"
    assert json.loads((first.run_dir / "config.json").read_text())["shortlist"] == shortlist

    encoded = []
    original = ClipScorer.add_images
    monkeypatch.setattr(ClipScorer, "add_images", lambda self, refs, pixels: (encoded.extend(refs),
                                                                               original(self, refs, pixels))[1])
    second = run(scorer="diffusion", model=str(tiny_sd), options={"timesteps": 1}, shortlist=shortlist, **common)
    assert encoded == []  # another expensive scorer: the cheap scorer's ranks came from the store
    assert second.evaluation.scored_now == 6 and second.rows[0]["scorer_key"] != row["scorer_key"]
    plain = run(scorer="clip", model=f"local-dir:{tiny_clip.local_dir}", **common)
    assert plain.evaluation.scored_now == 0 and encoded == []  # and a plain CLIP run reuses them too
    # harness compare reads each run's records from the store: every row of every run, paired query by query
    out = compare([first.run_id, second.run_id, plain.run_id], tmp_path / "results", write=False)
    for other in (second, plain):
        got = {r["metric"]: (r["value_a"], r["value_b"]) for r in out.rows if r["run_b"] == other.run_id}
        assert got == {r["metric"]: pytest.approx((first.evaluation.rows[k].value, r["value"]))
                       for k, r in enumerate(other.rows)}
    with pytest.raises(HarnessError, match="k=N"):
        run(scorer="diffusion", model=str(tiny_sd), shortlist="clip:toy:clip", **common)

    args = ["run", "--scorer", "diffusion", "--model", str(tiny_sd), "--timesteps", "2", "--bench", "retrieval:flickr30k",
            "--data-root", str(tmp_path / "data"), "--results-dir", str(tmp_path / "results"), "--workers", "0",
            "--no-progress"]
    again = CliRunner().invoke(app, [*args, "--shortlist", shortlist])
    assert again.exit_code == 0, again.output
    assert "t2i_recall@10" in again.output and "(0 scored now, 6 from the score store)" in again.output
    bad = CliRunner().invoke(app, [*args, "--shortlist", "clip:toy:clip:k=three"])
    assert bad.exit_code == 2 and "k expected a whole number, got 'three'" in bad.output


def test_a_shortlist_refuses_items_whose_ids_occur_twice(tiny_clip, tiny_sd, tmp_path):
    """Ids key the score store: a shortlist run checks them as a plain run does (it used to mix two
    items of the same id)."""
    write_cifar10(tmp_path, n_per_class=1)
    bench = ZeroShot(tmp_path, "cifar10")
    first, second = bench.items()[:2]
    twice = [first, Item(id=first.id, images=second.images, texts=second.texts, truth=second.truth)]
    for scorer in (_clip(tiny_clip), ShortlistScorer(_sd(tiny_sd), _clip(tiny_clip), 3)):
        with pytest.raises(HarnessError, match=f"item id {first.id!r} occurs twice"):
            evaluate(scorer, bench, ScoreStore(tmp_path / "s.db"), items=twice, workers=0, progress=False)

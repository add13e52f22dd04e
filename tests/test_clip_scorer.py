"""The CLIP scorer against a plain open_clip computation, through every way of naming weights."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from factories import ASSETS, PhotoBenchmark, build_tiny_clip, count_encoder_inputs, photo, register_tiny_arch

from benchmarks.winoground import Winoground
from harness.api import Item, ScorerConfig
from harness.errors import CheckpointMismatchError, HarnessError, MissingWeightsError, UnknownNameError
from harness.runner import evaluate
from harness.store import ScoreStore
from models.clip import ClipScorer, expected_quick_gelu


def plain_scores(model_name: str, pretrained: str | None, bench: Winoground, **kwargs) -> list[np.ndarray]:
    """Reference: open_clip's own loading and encoding, one item at a time."""
    model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=pretrained, **kwargs)
    tokenizer = open_clip.get_tokenizer(model_name)
    model.eval()
    out = []
    with torch.no_grad():
        for item in bench.items():
            images = torch.stack([preprocess(bench.load_image(r)) for r in item.images])
            img = F.normalize(model.encode_image(images), dim=-1)
            txt = F.normalize(model.encode_text(tokenizer(list(item.texts))), dim=-1)
            out.append((img @ txt.T).numpy())
    return out


def harness_scores(config: ScorerConfig, bench, tmp_path, **kwargs) -> list[np.ndarray]:
    scorer = ClipScorer(config)
    return evaluate(scorer, bench, ScoreStore(tmp_path / "scores.sqlite"), workers=0, progress=False,
                    **kwargs).scores


def test_local_dir_matches_plain_open_clip(tiny_clip, wino_parquet_root, tmp_path):
    bench = Winoground(wino_parquet_root)
    name = f"local-dir:{tiny_clip.local_dir}"
    ours = harness_scores(ScorerConfig(model=name, options={"batch_size": 5}), bench, tmp_path)
    ref = plain_scores(name, None, bench)
    assert len(ours) == len(ref) == 24
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("weights", ["safetensors", "pt", "bin"])
def test_arch_plus_weights_file_matches_plain_open_clip(tiny_clip, wino_jsonl_root, tmp_path, weights):
    bench = Winoground(wino_jsonl_root)
    path = str(getattr(tiny_clip, weights, None) or shutil.copy(tiny_clip.pt, tmp_path / "tiny.bin"))
    ours = harness_scores(ScorerConfig(model=tiny_clip.arch, pretrained=path, options={"batch_size": 7}), bench, tmp_path,
                          chunk_items=5)
    ref = plain_scores(tiny_clip.arch, path, bench)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_batch_size_does_not_change_scores(tiny_clip, wino_parquet_root, tmp_path):
    bench = Winoground(wino_parquet_root)
    name = f"local-dir:{tiny_clip.local_dir}"
    a = harness_scores(ScorerConfig(model=name, options={"batch_size": 1}), bench, tmp_path / "a")
    b = harness_scores(ScorerConfig(model=name, options={"batch_size": 64}), bench, tmp_path / "b")
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, atol=1e-5)


def test_each_unique_image_and_text_is_encoded_once(tiny_clip, tmp_path):
    # six items over three images and four texts, in a pattern that spans several chunks
    items = [Item(id=str(k), images=(str(k % 3),), texts=(f"t{k % 4}", f"t{(k + 1) % 4}"), truth=(0,))
             for k in range(6)]
    bench = PhotoBenchmark.make(items)
    scorer = ClipScorer(ScorerConfig(model=f"local-dir:{tiny_clip.local_dir}", options={"batch_size": 2}))
    seen = count_encoder_inputs(scorer.model)
    result = evaluate(scorer, bench, ScoreStore(tmp_path / "s.sqlite"), workers=0, chunk_items=2, progress=False)
    assert seen == {"images": 3, "texts": 4}
    # the same image gives the same row wherever it appears
    np.testing.assert_allclose(result.scores[0][0, 0], result.scores[3][0, 1])  # image 0 with text t0


def _register_tag(monkeypatch, arch: str, tag: str, path, quick_gelu: bool) -> None:
    from open_clip import pretrained as pretrained_table

    table = dict(pretrained_table._PRETRAINED)
    table[arch] = {tag: {"file": str(path), "quick_gelu": quick_gelu, "mean": open_clip.OPENAI_DATASET_MEAN,
                         "std": open_clip.OPENAI_DATASET_STD}}
    monkeypatch.setattr(pretrained_table, "_PRETRAINED", table)


def test_quickgelu_weights_into_gelu_architecture_are_fixed_and_said(tmp_path, monkeypatch, caplog,
                                                                        wino_parquet_root):
    trained = build_tiny_clip(tmp_path / "qg", seed=1, quick_gelu=True)
    _register_tag(monkeypatch, trained.arch, "fake_openai", trained.safetensors, quick_gelu=True)
    with caplog.at_level(logging.WARNING, logger="harness"):
        scorer = ClipScorer(ScorerConfig(model=trained.arch, pretrained="fake_openai"))
    assert scorer.quick_gelu is True and scorer.fingerprint()["quick_gelu"] is True
    assert "QuickGELU fixed" in caplog.text and "trained with QuickGELU" in caplog.text
    bench = Winoground(wino_parquet_root)
    ours = evaluate(scorer, bench, ScoreStore(tmp_path / "s.sqlite"), workers=0, progress=False).scores
    right = plain_scores(trained.arch, str(trained.safetensors), bench, force_quick_gelu=True)
    wrong = plain_scores(trained.arch, str(trained.safetensors), bench)
    for a, b in zip(ours, right):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert max(np.abs(a - b).max() for a, b in zip(ours, wrong)) > 1e-4  # the mismatch is not harmless


def test_gelu_weights_into_quickgelu_architecture_are_fixed(tmp_path, monkeypatch, caplog):
    register_tiny_arch()
    config = json.loads((ASSETS / "tiny-clip.json").read_text())
    config["quick_gelu"] = True
    (tmp_path / "tiny-clip-quickgelu.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / "tiny-clip-quickgelu.json")
    plain = build_tiny_clip(tmp_path / "gelu", seed=2)
    _register_tag(monkeypatch, "tiny-clip-quickgelu", "laion_like", plain.safetensors, quick_gelu=False)
    with caplog.at_level(logging.WARNING, logger="harness"):
        scorer = ClipScorer(ScorerConfig(model="tiny-clip-quickgelu", pretrained="laion_like"))
    assert scorer.quick_gelu is False
    assert "QuickGELU fixed" in caplog.text


def test_quickgelu_override_is_respected_and_recorded(tiny_clip):
    scorer = ClipScorer(ScorerConfig(model=tiny_clip.arch, pretrained=str(tiny_clip.safetensors),
                                     options={"quick_gelu": "true"}))
    assert scorer.quick_gelu is True
    default = ClipScorer(ScorerConfig(model=tiny_clip.arch, pretrained=str(tiny_clip.safetensors)))
    assert scorer.fingerprint() != default.fingerprint()


def test_quickgelu_detection_of_files(tmp_path):
    module = torch.jit.script(torch.nn.Linear(2, 2))
    torch.jit.save(module, tmp_path / "model.pt")
    assert expected_quick_gelu("ViT-B-32", str(tmp_path / "model.pt"))[0] is True
    (tmp_path / "ViT-B-32.pt").write_bytes(b"named like OpenAI's release")
    assert expected_quick_gelu("ViT-B-32", str(tmp_path / "ViT-B-32.pt"))[0] is True
    (tmp_path / "mine.safetensors").write_bytes(b"")
    assert expected_quick_gelu("ViT-B-32", str(tmp_path / "mine.safetensors"))[0] is None
    assert expected_quick_gelu("ViT-B-32", "openai")[0] is True
    assert expected_quick_gelu("ViT-B-32", "laion2b_s34b_b79k")[0] is False


def test_checkpoint_that_does_not_fit_is_refused(tiny_clip, tmp_path):
    from safetensors.torch import load_file, save_file

    state = load_file(tiny_clip.safetensors)
    state["text_projection"] = torch.zeros(64, 16)  # embed_dim 16 instead of 32
    save_file(state, tmp_path / "other.safetensors")
    with pytest.raises(CheckpointMismatchError, match="do not fit tiny-clip.*size mismatch.*architecture"):
        ClipScorer(ScorerConfig(model=tiny_clip.arch, pretrained=str(tmp_path / "other.safetensors")))


def test_missing_tag_weights_offline_say_where_they_were_looked_for(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError) as err:
        ClipScorer(ScorerConfig(model="ViT-B-32", pretrained="openai"))
    message = str(err.value)
    assert "ViT-B-32/openai" in message and "timm/vit_base_patch32_clip_224.openai" in message
    assert "--pretrained /path/to/weights" in message


def test_missing_hub_repo_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError, match="hub repo someone/nothing-here.*local-dir"):
        ClipScorer(ScorerConfig(model="hf-hub:someone/nothing-here"))


def test_bad_model_names(tiny_clip, tmp_path):
    with pytest.raises(UnknownNameError, match="Did you mean 'ViT-B-32'"):
        ClipScorer(ScorerConfig(model="ViT-B-32x", pretrained="openai"))
    with pytest.raises(UnknownNameError, match="pretrained tag for ViT-B-32 'opnai'.*Did you mean 'openai'"):
        ClipScorer(ScorerConfig(model="ViT-B-32", pretrained="opnai"))
    with pytest.raises(MissingWeightsError, match="does not exist"):
        ClipScorer(ScorerConfig(model=tiny_clip.arch, pretrained=str(tmp_path / "nope.safetensors")))
    with pytest.raises(HarnessError, match="--pretrained is required"):
        ClipScorer(ScorerConfig(model=tiny_clip.arch))
    with pytest.raises(HarnessError, match="cannot be combined"):
        ClipScorer(ScorerConfig(model=f"local-dir:{tiny_clip.local_dir}", pretrained="openai"))
    with pytest.raises(HarnessError, match="--opt temperature: not an option of scorer clip; valid: batch_size"):
        ClipScorer(ScorerConfig(model=f"local-dir:{tiny_clip.local_dir}", options={"temperature": "2"}))


def test_local_dir_problems_are_named(tiny_clip, tmp_path):
    with pytest.raises(MissingWeightsError, match="does not exist"):
        ClipScorer(ScorerConfig(model=f"local-dir:{tmp_path / 'absent'}"))
    empty = tmp_path / "no-weights"
    empty.mkdir()
    shutil.copy(tiny_clip.local_dir / "open_clip_config.json", empty)
    with pytest.raises(MissingWeightsError, match="no weights file.*random weights"):
        ClipScorer(ScorerConfig(model=f"local-dir:{empty}"))
    (tmp_path / "no-config").mkdir()
    with pytest.raises(MissingWeightsError, match="no open_clip_config.json"):
        ClipScorer(ScorerConfig(model=f"local-dir:{tmp_path / 'no-config'}"))


def test_fingerprint_tracks_weights_not_names(tiny_clip, tmp_path):
    other = build_tiny_clip(tmp_path / "other", seed=5)
    a = ClipScorer(ScorerConfig(model=tiny_clip.arch, pretrained=str(tiny_clip.safetensors)))
    b = ClipScorer(ScorerConfig(model=f"local-dir:{tiny_clip.local_dir}"))
    c = ClipScorer(ScorerConfig(model=f"local-dir:{other.local_dir}"))
    assert a.fingerprint()["weights"] == b.fingerprint()["weights"] != c.fingerprint()["weights"]
    assert json.dumps(a.fingerprint())  # JSON-serialisable, it keys the store
    weights = a.fingerprint()["weights"][:12]  # rows name a weights file portably: its name and weights hash
    assert a.describe() == {"model": tiny_clip.arch, "pretrained": f"tiny.safetensors@{weights}"}
    assert b.describe() == {"model": f"local-dir:{tiny_clip.local_dir.name}@{weights}", "pretrained": ""}


def test_device_errors_are_clear(tiny_clip):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(HarnessError, match="no GPU"):
        ClipScorer(ScorerConfig(model=f"local-dir:{tiny_clip.local_dir}", device="cuda"))
    with pytest.raises(HarnessError, match="not a torch device"):
        ClipScorer(ScorerConfig(model=f"local-dir:{tiny_clip.local_dir}", device="gpu0"))


def test_photo_helper_gives_distinct_images():
    assert not np.array_equal(np.asarray(photo(0)), np.asarray(photo(15)))


def _fake_hub_repo(cache, repo_id: str, files: dict) -> None:
    """A model repo in the Hugging Face hub cache, laid out as huggingface_hub writes it."""
    commit = "fedcba9876543210fedcba9876543210fedcba98"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        shutil.copy(source, snapshot / name)


def test_hf_hub_model_loads_offline_from_the_hub_cache(tiny_clip, tmp_path, monkeypatch, wino_parquet_root):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    _fake_hub_repo(tmp_path / "hub", "someone/tiny-clip", {
        "open_clip_config.json": tiny_clip.local_dir / "open_clip_config.json",
        "open_clip_model.safetensors": tiny_clip.local_dir / "open_clip_model.safetensors",
    })
    scorer = ClipScorer(ScorerConfig(model="hf-hub:someone/tiny-clip"))
    local = ClipScorer(ScorerConfig(model=f"local-dir:{tiny_clip.local_dir}"))
    assert scorer.fingerprint()["weights"] == local.fingerprint()["weights"]


def test_pretrained_tag_is_looked_up_in_the_hub_cache_offline(tiny_clip, tmp_path, monkeypatch):
    """ViT-B-32/openai resolves to open_clip's hub repo in the local cache, without network.

    The cached file here holds tiny weights, so loading ends in a clear mismatch error: proof that
    the cached file was found and read, without shipping 600 MB of real weights.
    """
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = open_clip.get_pretrained_cfg("ViT-B-32", "openai")["hf_hub"].rstrip("/")
    _fake_hub_repo(tmp_path / "hub", repo, {"open_clip_model.safetensors": tiny_clip.safetensors})
    with pytest.raises(CheckpointMismatchError, match="do not fit ViT-B-32 with openai"):
        ClipScorer(ScorerConfig(model="ViT-B-32", pretrained="openai"))


def test_prompt_ensembles_match_open_clips_zero_shot_classifier(tiny_clip, tmp_path):
    from harness.api import Prompts

    classes = ["dog", "cat", "rocket"]
    templates = [lambda c: f"a photo of a {c}.", lambda c: f"a drawing of a {c}.", lambda c: f"itap of a {c}."]
    candidates = tuple(Prompts(c, tuple(t(c) for t in templates)) for c in classes)
    items = [Item(id=str(k), images=(str(k),), texts=candidates, truth=(k % 3,)) for k in range(4)]
    scorer = ClipScorer(ScorerConfig(model=f"local-dir:{tiny_clip.local_dir}", options={"batch_size": 4}))
    ours = evaluate(scorer, PhotoBenchmark.make(items), ScoreStore(tmp_path / "s.sqlite"), workers=0,
                    progress=False).scores

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tiny_clip.local_dir}")
    model.eval()
    tokenizer = open_clip.get_tokenizer(f"local-dir:{tiny_clip.local_dir}")
    with torch.no_grad():
        classifier = open_clip.build_zero_shot_classifier(model, tokenizer, classes, templates, device="cpu",
                                                          use_tqdm=False)
        for k, matrix in enumerate(ours):
            image = F.normalize(model.encode_image(preprocess(photo(k))[None]), dim=-1)
            np.testing.assert_allclose(matrix, (image @ classifier).numpy(), atol=1e-5)


def test_trimmed_text_positions_match_full_length_encoding(tiny_clip):
    scorer = ClipScorer(ScorerConfig(model=f"local-dir:{tiny_clip.local_dir}", options={"batch_size": 3}))
    assert scorer.fingerprint()["text_positions"] == "trimmed"
    texts = ["a dog", "a very long caption " + "with many words " * 6, "cat", "a dog on a couch", "x " * 90]
    scorer.encode_texts(texts)
    with torch.no_grad():
        full = F.normalize(scorer.model.encode_text(scorer.tokenizer(texts)), dim=-1)
    for text, reference in zip(texts, full):
        np.testing.assert_allclose(scorer._text_cache[text].numpy(), reference.numpy(), atol=1e-5)


def test_a_planted_pretrained_file_is_refused_by_name_and_never_runs(tiny_clip, tmp_path):
    import torch
    from test_trust import Payload

    marker = tmp_path / "payload-ran"
    planted = tmp_path / "weights.pt"
    torch.save({"state_dict": Payload(marker)}, planted)
    with pytest.raises(CheckpointMismatchError, match=r"refused to load .*weights.pt: it is not a plain weights file"):
        ClipScorer(ScorerConfig(model=tiny_clip.arch, pretrained=str(planted)))
    assert not marker.exists()

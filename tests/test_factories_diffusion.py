"""The tiny Stable Diffusion factory: its folder loads back offline, whole and by component, and its
tokenizer is CLIP's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from factories_diffusion import (
    BOS_ID,
    EOS_ID,
    TINY_SD_IMAGE_SIZE,
    build_tiny_sd,
    build_tiny_sd_components,
)

PROMPTS = ["a photo of a dog", "Two cats, sleeping on a red couch!", "an astronaut riding a horse in 1969"]


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("tiny_sd"))


def test_pipeline_loads_offline_and_generates(tiny_sd):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd, local_files_only=True)
    assert pipe.safety_checker is None and pipe.feature_extractor is None
    pipe.set_progress_bar_config(disable=True)
    out = pipe("a photo of a dog", num_inference_steps=2, height=TINY_SD_IMAGE_SIZE, width=TINY_SD_IMAGE_SIZE,
               output_type="np", generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (1, TINY_SD_IMAGE_SIZE, TINY_SD_IMAGE_SIZE, 3)


def test_components_load_offline(tiny_sd):
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    vae = AutoencoderKL.from_pretrained(tiny_sd, subfolder="vae")
    unet = UNet2DConditionModel.from_pretrained(tiny_sd, subfolder="unet")
    text_encoder = CLIPTextModel.from_pretrained(tiny_sd, subfolder="text_encoder")
    tokenizer = CLIPTokenizer.from_pretrained(tiny_sd, subfolder="tokenizer")
    scheduler = DDPMScheduler.from_pretrained(tiny_sd, subfolder="scheduler")

    assert unet.config.sample_size == 8 and unet.config.in_channels == unet.config.out_channels == 4
    assert unet.config.cross_attention_dim == text_encoder.config.hidden_size
    assert sum(p.numel() for p in unet.parameters()) <= 1_000_000
    assert vae.config.latent_channels == 4 and vae.config.scaling_factor == pytest.approx(0.18215)
    assert 2 ** (len(vae.config.block_out_channels) - 1) == 8
    assert (text_encoder.config.bos_token_id, text_encoder.config.eos_token_id) == (BOS_ID, EOS_ID)
    assert tokenizer.pad_token_id == EOS_ID and tokenizer.model_max_length == 77
    assert (scheduler.config.num_train_timesteps, scheduler.config.beta_schedule) == (1000, "scaled_linear")
    assert (scheduler.config.beta_start, scheduler.config.beta_end) == (0.00085, 0.012)
    assert scheduler.config.prediction_type == "epsilon"
    size = sum(f.stat().st_size for f in tiny_sd.rglob("*") if f.is_file())
    assert size < 25 * 2 ** 20


def test_tokenizer_matches_open_clip(tiny_sd, tmp_path):
    import open_clip
    from transformers import CLIPTokenizer

    # Both the saved tokenizer.json and the vocab.json/merges.txt pair alone must give CLIP's ids.
    bpe_only = tmp_path / "bpe_only"
    bpe_only.mkdir()
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy(tiny_sd / "tokenizer" / name, bpe_only / name)
    reference = open_clip.tokenize(PROMPTS)
    for tokenizer in (CLIPTokenizer.from_pretrained(tiny_sd, subfolder="tokenizer"),
                      CLIPTokenizer.from_pretrained(bpe_only)):
        assert len(tokenizer) == 49408
        for prompt, ref in zip(PROMPTS, reference.tolist()):
            ids = tokenizer(prompt).input_ids
            assert ids == ref[:ref.index(EOS_ID) + 1]
        padded = tokenizer(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
        assert padded.input_ids.shape == (len(PROMPTS), 77)
        assert padded.input_ids[0, 0] == BOS_ID and padded.input_ids[0, -1] == EOS_ID


def test_v_prediction_build(tmp_path):
    folder = build_tiny_sd(tmp_path / "v", prediction_type="v_prediction")
    config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert config["prediction_type"] == "v_prediction"
    with pytest.raises(ValueError):
        build_tiny_sd(tmp_path / "bad", prediction_type="sample")


def test_vae_and_unet_shapes(tiny_sd):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    vae = AutoencoderKL.from_pretrained(tiny_sd, subfolder="vae")
    unet = UNet2DConditionModel.from_pretrained(tiny_sd, subfolder="unet")
    text_encoder = CLIPTextModel.from_pretrained(tiny_sd, subfolder="text_encoder")
    tokenizer = CLIPTokenizer.from_pretrained(tiny_sd, subfolder="tokenizer")
    image = torch.rand(1, 3, TINY_SD_IMAGE_SIZE, TINY_SD_IMAGE_SIZE) * 2 - 1
    with torch.inference_mode():
        latents = vae.encode(image).latent_dist.sample() * vae.config.scaling_factor
        assert latents.shape == (1, 4, 8, 8)
        ids = tokenizer(["a photo of a dog"], padding="max_length", max_length=77, return_tensors="pt").input_ids
        hidden = text_encoder(ids).last_hidden_state
        assert hidden.shape == (1, 77, 32)
        noise_pred = unet(latents, torch.tensor([500]), encoder_hidden_states=hidden).sample
    assert noise_pred.shape == (1, 4, 8, 8)
    assert torch.isfinite(noise_pred).all()


def test_deterministic_from_seed():
    def weights(seed):
        parts = build_tiny_sd_components(seed=seed)
        return [parts[name].state_dict() for name in ("unet", "vae", "text_encoder")]

    a, b, c = weights(0), weights(0), weights(1)
    for sa, sb in zip(a, b):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(a[0]["conv_in.weight"], c[0]["conv_in.weight"])

"""Stable Diffusion pieces shared by the diffusion scorer, SDS-CLIP fine-tuning, the toy models and
the tests: loading a pipeline offline, tokenising prompts, SD's training noise schedule, the VAE's
image transform, and writing a pipeline folder.

Noising a latent and the v-prediction target come from the diffusers scheduler itself
(``scheduler.add_noise``, ``scheduler.get_velocity``), not from formulas of our own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.errors import HarnessError, MissingWeightsError

# Stable Diffusion 1.x / 2.x(-base) training noise schedule (their scheduler configs).
SD_SCHEDULE = {"num_train_timesteps": 1000, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
               "beta_end": 0.012}
PIPELINE_PARTS = ("vae", "text_encoder", "tokenizer", "unet", "scheduler")


@dataclass
class Pipeline:
    """The parts of a Stable Diffusion pipeline that scoring and fine-tuning use."""

    vae: Any  # diffusers AutoencoderKL
    text_encoder: Any  # transformers CLIPTextModel
    tokenizer: Any  # transformers CLIPTokenizer
    unet: Any  # diffusers UNet2DConditionModel
    scheduler: Any  # diffusers DDPMScheduler with the pipeline's training schedule

    @property
    def vae_factor(self) -> int:
        """How much the VAE downsamples: 8 for SD."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def prediction_type(self) -> str:
        return self.scheduler.config.prediction_type

    def modules(self) -> tuple[torch.nn.Module, ...]:
        return self.vae, self.text_encoder, self.unet


def training_scheduler(prediction_type: str = "epsilon"):
    """A DDPMScheduler with Stable Diffusion's training schedule."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(**SD_SCHEDULE, prediction_type=prediction_type, clip_sample=False, steps_offset=1)


def token_ids(tokenizer: Any, texts: Sequence[str]) -> torch.Tensor:
    """Prompt token ids as an SD pipeline feeds its text encoder: padded to the tokenizer's length."""
    return tokenizer(list(texts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


class VaeImageTransform:
    """PIL image -> (3, r, r) tensor in [-1, 1]: shorter side resized to r (bicubic), centre crop.
    A class (not a lambda) so that data-loader workers can pickle it."""

    def __init__(self, resolution: int) -> None:
        self.resolution = resolution

    def __call__(self, image: Any) -> torch.Tensor:
        from torchvision.transforms import functional as TF

        image = image.convert("RGB")
        image = TF.resize(image, self.resolution, interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
        image = TF.center_crop(image, [self.resolution, self.resolution])
        return TF.to_tensor(image) * 2.0 - 1.0


def _source(model: str) -> str:
    """A pipeline folder's path, or a hub id; refuses what is neither."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        missing = [s for s in PIPELINE_PARTS if not (folder / s).is_dir()]
        if missing:
            raise MissingWeightsError(f"{folder} is not a Stable Diffusion pipeline folder: it lacks {missing} "
                                      "(a folder written by StableDiffusionPipeline.save_pretrained has them all)")
        return str(folder)
    if model.startswith(("/", ".", "~")) or "/" not in model or model.count("/") > 1:
        raise MissingWeightsError(f"--model {model!r}: no such pipeline folder, and not a hub id like "
                                  "stabilityai/stable-diffusion-2-1-base")
    return model


def _offline_error(model: str, err: Exception) -> MissingWeightsError:
    from huggingface_hub import constants

    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    where = "that folder" if Path(model).expanduser().is_dir() else f"the Hugging Face cache {constants.HF_HUB_CACHE}"
    return MissingWeightsError(
        f"cannot load the pipeline {model!r} offline ({first[:300]}). Looked in {where}. Download it once "
        f"(`harness data --download diffusion:{model}`, or `huggingface-cli download {model}` where there is "
        "network), or pass a folder written by StableDiffusionPipeline.save_pretrained.")


def load_scheduler(model: str):
    """The pipeline's training noise schedule as a DDPMScheduler, read from its scheduler config
    alone (cheap: options that depend on the schedule are checked before any weights load)."""
    import diffusers

    source = _source(model)
    try:
        config = diffusers.DDPMScheduler.load_config(source, subfolder="scheduler", local_files_only=True)
    except (OSError, ValueError, EnvironmentError) as err:
        raise _offline_error(model, err) from err
    try:
        # the training schedule, whatever sampler class the pipeline's folder names
        return diffusers.DDPMScheduler.from_config(config)
    except (ValueError, NotImplementedError) as err:
        raise HarnessError(f"{model}: its scheduler config cannot make a DDPM training schedule: {err}") from err


def load_pipeline(model: str, scheduler: Any = None) -> Pipeline:
    """A Stable Diffusion pipeline's parts from a folder or a hub id in the local cache, never from
    the network (``scheduler``: one load_scheduler already read). Parameters load in fp32 whatever
    the stored precision (fp16 weights, as the toy models keep, would otherwise load as fp16 and
    fail on the CPU); mixed precision comes from autocast at run time."""
    import diffusers
    import transformers

    scheduler = scheduler if scheduler is not None else load_scheduler(model)
    source = _source(model)
    try:
        vae = diffusers.AutoencoderKL.from_pretrained(source, subfolder="vae", local_files_only=True,
                                                      torch_dtype=torch.float32)
        unet = diffusers.UNet2DConditionModel.from_pretrained(source, subfolder="unet", local_files_only=True,
                                                              torch_dtype=torch.float32)
        text_encoder = transformers.CLIPTextModel.from_pretrained(source, subfolder="text_encoder",
                                                                  local_files_only=True, dtype=torch.float32)
        tokenizer = transformers.CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", local_files_only=True)
    except (OSError, ValueError, EnvironmentError) as err:
        raise _offline_error(model, err) from err
    if unet.config.cross_attention_dim != text_encoder.config.hidden_size:
        raise HarnessError(f"{model}: the UNet attends to width {unet.config.cross_attention_dim} but the text "
                           f"encoder gives {text_encoder.config.hidden_size}; the components do not belong together")
    if unet.config.in_channels != vae.config.latent_channels:
        raise HarnessError(f"{model}: the UNet takes {unet.config.in_channels} channels but the VAE makes "
                           f"{vae.config.latent_channels}")
    return Pipeline(vae, text_encoder, tokenizer, unet, scheduler)


def save_pipeline(folder: Path, vae: Any, text_encoder: Any, tokenizer: Any, unet: Any,
                  prediction_type: str = "epsilon", half: bool = False, vocab_words: Iterable[str] | None = None,
                  ) -> Path:
    """Write a ``StableDiffusionPipeline.save_pretrained`` folder (SD's training scheduler, no safety
    checker) with the BPE files beside tokenizer.json, as SD checkpoints have them. ``half`` stores
    the weights in fp16; ``vocab_words`` as in clip_tokenizer.write_clip_vocab_files."""
    from diffusers import StableDiffusionPipeline

    from models.clip_tokenizer import write_clip_vocab_files

    parts = [m.eval() for m in (vae, text_encoder, unet)]
    if half:
        parts = [m.half() for m in parts]
    pipe = StableDiffusionPipeline(
        vae=parts[0], text_encoder=parts[1], tokenizer=tokenizer, unet=parts[2],
        scheduler=training_scheduler(prediction_type), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(folder)
    write_clip_vocab_files(folder / "tokenizer", words=vocab_words)
    return folder

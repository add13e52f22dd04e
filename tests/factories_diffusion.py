"""A tiny Stable Diffusion stack with random weights, built offline and saved in the diffusers layout.

`build_tiny_sd(folder)` writes what `StableDiffusionPipeline.save_pretrained` writes (model_index.json,
unet/, vae/, text_encoder/, tokenizer/, scheduler/), so code that loads a real SD checkpoint from a
folder, whole or by component, can be exercised without a download. The models are standard
diffusers/transformers classes, only small: 64x64 images, 8x8x4 latents, a 2-layer 32-wide text
encoder. The tokenizer is the real CLIP BPE tokenizer, rebuilt from the vocabulary file that
open_clip ships, so prompts tokenize to the same ids as with SD's own tokenizer.
"""

from __future__ import annotations

from pathlib import Path

from models.clip_tokenizer import (  # noqa: F401  (re-exported for the tests)
    BOS_ID, BOS_TOKEN, CLIP_CONTEXT_LENGTH, CLIP_VOCAB_SIZE, EOS_ID, EOS_TOKEN, build_clip_tokenizer,
    clip_vocab_and_merges, write_clip_vocab_files,
)

# The pixel size whose latents are 8x8 (the VAE downsamples by 8, as SD's 512 -> 64).
TINY_SD_IMAGE_SIZE = 64
TINY_SD_LATENT_SIZE = TINY_SD_IMAGE_SIZE // 8

# SD 1.x VAE latent scaling factor.
SD_VAE_SCALING_FACTOR = 0.18215

TEXT_HIDDEN_SIZE = 32


# -- the models -----------------------------------------------------------------------------------

def tiny_text_encoder_config():
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=CLIP_VOCAB_SIZE,
        hidden_size=TEXT_HIDDEN_SIZE,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=CLIP_CONTEXT_LENGTH,
        hidden_act="quick_gelu",
        projection_dim=32,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=EOS_ID,
    )


def tiny_unet_kwargs() -> dict:
    return {
        "sample_size": TINY_SD_LATENT_SIZE,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
        "block_out_channels": (32, 64),
        "layers_per_block": 1,
        "attention_head_dim": 8,
        "norm_num_groups": 16,
        "cross_attention_dim": TEXT_HIDDEN_SIZE,
    }


def tiny_vae_kwargs() -> dict:
    # Four encoder blocks downsample three times: a factor of 2**3 = 8, as SD's VAE.
    return {
        "sample_size": TINY_SD_IMAGE_SIZE,
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4,
        "block_out_channels": (8, 16, 16, 16),
        "layers_per_block": 1,
        "norm_num_groups": 8,
        "latent_channels": 4,
        "scaling_factor": SD_VAE_SCALING_FACTOR,
    }


def build_tiny_sd_components(prediction_type: str = "epsilon", seed: int = 0) -> dict:
    """The tiny pipeline's parts in memory (vae, text_encoder, tokenizer, unet), random weights from `seed`."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', not {prediction_type!r}")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**tiny_unet_kwargs())
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**tiny_vae_kwargs())
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(tiny_text_encoder_config())
    return {"vae": vae.eval(), "text_encoder": text_encoder.eval(), "tokenizer": build_clip_tokenizer(),
            "unet": unet.eval()}


def build_tiny_sd(folder: Path, prediction_type: str = "epsilon", seed: int = 0) -> Path:
    """Save a tiny random-weight Stable Diffusion pipeline to `folder` and return it.

    Loads back offline with `StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)`
    or component by component (subfolders vae, unet, text_encoder, tokenizer, scheduler). About 15 MB.
    """
    from models.stable_diffusion import save_pipeline

    return save_pipeline(Path(folder), **build_tiny_sd_components(prediction_type, seed),
                         prediction_type=prediction_type)

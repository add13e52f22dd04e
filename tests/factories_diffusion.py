"""A tiny Stable Diffusion stack with random weights, built offline and saved in the diffusers layout.

`build_tiny_sd(folder)` writes what `StableDiffusionPipeline.save_pretrained` writes (model_index.json,
unet/, vae/, text_encoder/, tokenizer/, scheduler/), so code that loads a real SD checkpoint from a
folder, whole or by component, can be exercised without a download. The models are standard
diffusers/transformers classes, only small: 64x64 images, 8x8x4 latents, a 2-layer 32-wide text
encoder. The tokenizer is the real CLIP BPE tokenizer, rebuilt from the vocabulary file that
open_clip ships, so prompts tokenize to the same ids as with SD's own tokenizer.
"""

from __future__ import annotations

import functools
import gzip
from pathlib import Path

# The pixel size whose latents are 8x8 (the VAE downsamples by 8, as SD's 512 -> 64).
TINY_SD_IMAGE_SIZE = 64
TINY_SD_LATENT_SIZE = TINY_SD_IMAGE_SIZE // 8

# CLIP's text context length and special tokens (the ids are the last two of its 49408-entry vocab).
CLIP_CONTEXT_LENGTH = 77
CLIP_VOCAB_SIZE = 49408
BOS_TOKEN, EOS_TOKEN = "<|startoftext|>", "<|endoftext|>"
BOS_ID, EOS_ID = 49406, 49407

# Stable Diffusion's training noise schedule (the scheduler config of SD 1.x and 2.x checkpoints).
SD_SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "beta_end": 0.012,
}
# SD 1.x VAE latent scaling factor.
SD_VAE_SCALING_FACTOR = 0.18215

TEXT_HIDDEN_SIZE = 32


# -- the CLIP tokenizer, rebuilt from open_clip's BPE file -----------------------------------------

def _byte_alphabet() -> list[str]:
    """The 256 characters that stand for the bytes 0..255 in byte-level BPE, in vocabulary order.

    Bytes whose Latin-1 character is printable and not a space ('!'..'~', '¡'..'¬', '®'..'ÿ') stand
    for themselves and come first, in byte order; every other byte b gets chr(256 + k), where k
    counts those other bytes in byte order, and they follow.
    """
    visible = [b for b in range(256)
               if ord("!") <= b <= ord("~") or ord("¡") <= b <= ord("¬") or ord("®") <= b <= ord("ÿ")]
    hidden = [b for b in range(256) if b not in set(visible)]
    return [chr(b) for b in visible] + [chr(256 + k) for k in range(len(hidden))]


def _bpe_file() -> Path:
    import open_clip

    return Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"


@functools.lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's vocabulary (token -> id) and ranked merges, derived from open_clip's BPE file.

    The file holds a header line and then merge rules, best first; CLIP uses the first
    49152 - 256 - 2 of them. Its vocabulary is the byte alphabet, the same with the end-of-word
    marker "</w>", the result of each merge, and then the two special tokens: 49408 entries.
    """
    with gzip.open(_bpe_file(), "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    n_merges = 49152 - 256 - 2
    merges = [tuple(line.split()) for line in lines[1:1 + n_merges]]
    alphabet = _byte_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in merges] + [BOS_TOKEN, EOS_TOKEN]
    vocab = {token: i for i, token in enumerate(tokens)}
    if len(vocab) != CLIP_VOCAB_SIZE or vocab[BOS_TOKEN] != BOS_ID or vocab[EOS_TOKEN] != EOS_ID:
        raise RuntimeError(f"unexpected CLIP vocabulary from {_bpe_file()}: {len(vocab)} entries")
    return vocab, merges


def build_clip_tokenizer():
    """transformers' CLIPTokenizer with CLIP's real vocabulary, as SD 1.x ships it (pad = <|endoftext|>)."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges()
    # The vocabulary and merges go in as objects: this transformers' CLIPTokenizer takes `vocab`
    # (dict) and `merges` (list of pairs); given file paths under other names it silently falls back
    # to a placeholder vocabulary of the special tokens alone.
    tokenizer = CLIPTokenizer(
        vocab=dict(vocab), merges=list(merges),
        unk_token=EOS_TOKEN, bos_token=BOS_TOKEN, eos_token=EOS_TOKEN, pad_token=EOS_TOKEN,
        model_max_length=CLIP_CONTEXT_LENGTH,
    )
    if len(tokenizer) != CLIP_VOCAB_SIZE:
        raise RuntimeError(f"CLIPTokenizer built with {len(tokenizer)} tokens, expected {CLIP_VOCAB_SIZE}")
    return tokenizer


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


def build_tiny_sd_pipeline(prediction_type: str = "epsilon", seed: int = 0):
    """The tiny StableDiffusionPipeline in memory, random weights drawn from `seed`."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDPMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel

    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', not {prediction_type!r}")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**tiny_unet_kwargs())
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**tiny_vae_kwargs())
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(tiny_text_encoder_config())
    scheduler = DDPMScheduler(**SD_SCHEDULE, prediction_type=prediction_type,
                              clip_sample=False, steps_offset=1)
    for model in (unet, vae, text_encoder):
        model.eval()
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=build_clip_tokenizer(), unet=unet,
        scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def build_tiny_sd(folder: Path, prediction_type: str = "epsilon", seed: int = 0) -> Path:
    """Save a tiny random-weight Stable Diffusion pipeline to `folder` and return it.

    Loads back offline with `StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)`
    or component by component (subfolders vae, unet, text_encoder, tokenizer, scheduler). About 15 MB.
    """
    pipe = build_tiny_sd_pipeline(prediction_type, seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(folder)
    write_clip_vocab_files(folder / "tokenizer")
    return folder


def write_clip_vocab_files(tokenizer_dir: Path) -> None:
    """Add vocab.json and merges.txt beside tokenizer.json, as SD checkpoints' tokenizer folders have
    them, so loaders that read the BPE files rather than tokenizer.json find them too."""
    import json

    vocab, merges = clip_vocab_and_merges()
    tokenizer_dir = Path(tokenizer_dir)
    (tokenizer_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (tokenizer_dir / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")

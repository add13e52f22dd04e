"""`harness finetune`, the command of the SDS-CLIP fine-tuning routine (models/finetune.py).

Declared in this package's plug-in table (models/__init__.py); importing this module is cheap, and
torch loads only when the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from harness.cli_support import user_errors
from harness.defaults import default_data_root


def finetune(
    clip: Annotated[str, typer.Option(help="open_clip architecture (ViT-B-32), local-dir:/path or hf-hub:org/repo.")],
    sd: Annotated[str, typer.Option(help="Stable Diffusion pipeline: a hub id in the local cache or a folder.")],
    out: Annotated[Path, typer.Option(help="Output folder: an open_clip local-dir model plus h_w, config, losses.")],
    pretrained: Annotated[Optional[str], typer.Option(help="open_clip pretrained tag or weights file.")] = None,
    data_root: Annotated[Optional[Path], typer.Option(
        help="Holds coco/annotations/captions_train2017.json and coco/train2017/. Default: $HARNESS_DATA, else ./data.")
    ] = None,
    captions: Annotated[Optional[Path], typer.Option(help="Instead of COCO: a JSONL/CSV of image,caption rows.")] = None,
    lam: Annotated[float, typer.Option("--lambda", help="Weight of L_SDS; 0 is the contrastive-only control.")] = 1.0,
    lr: Annotated[float, typer.Option(help="Learning rate of CLIP's trained parameters.")] = 1e-5,
    head_lr: Annotated[float, typer.Option(help="Learning rate of h_w (trained from scratch).")] = 1e-3,
    batch_size: Annotated[int, typer.Option(help="Global batch size (all processes together).")] = 64,
    epochs: Annotated[int, typer.Option(help="Passes over the images (one random caption per image each).")] = 5,
    warmup_steps: Annotated[int, typer.Option(help="Linear warm-up steps before cosine decay.")] = 50,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 0.0,
    t_min: Annotated[int, typer.Option(help="Smallest timestep of L_SDS.")] = 20,
    t_max: Annotated[int, typer.Option(help="Largest timestep of L_SDS (exclusive).")] = 980,
    train: Annotated[str, typer.Option(help="Trained CLIP parameters: image-ln, text-ln, both-ln or all.")] = "image-ln",
    sds_grad: Annotated[str, typer.Option(help="full (through the UNet) or detached (no UNet Jacobian).")] = "full",
    head: Annotated[str, typer.Option(
        help="h_w: linear (the paper), normalised (each z rescaled to unit variance) or frozen-fit (fitted to "
             "the VAE latents once, then fixed).")] = "linear",
    grad_accum: Annotated[int, typer.Option(help="Micro-batches per optimizer step.")] = 1,
    grad_checkpointing: Annotated[bool, typer.Option(help="Recompute UNet activations to save memory.")] = False,
    max_steps: Annotated[Optional[int], typer.Option(help="Stop after this many optimizer steps.")] = None,
    save_every: Annotated[int, typer.Option(help="Steps between checkpoints.")] = 500,
    on_bad_image: Annotated[str, typer.Option(help="skip (counted) or fail on an image that will not decode.")] = "skip",
    seed: Annotated[int, typer.Option(help="Seed of h_w's initialisation, data order, timesteps and noise.")] = 0,
    device: Annotated[str, typer.Option(help="auto (cuda if available), cpu, cuda, ...")] = "auto",
    precision: Annotated[str, typer.Option(
        help="auto (bf16, else fp16, autocast on GPU; fp32 on CPU), fp32, fp16 (with loss scaling) or bf16.")
                         ] = "auto",
    workers: Annotated[int, typer.Option(help="Image-decoding processes per rank.")] = 2,
    resume: Annotated[bool, typer.Option(help="Continue the run saved in --out.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Fine-tune CLIP's LayerNorms and a linear map with L_CLIP + lambda * L_SDS (SDS-CLIP).

    The output folder loads with plain open_clip as local-dir:OUT, and with
    `harness run --scorer sds-clip --model OUT`.
    """
    from models.finetune import FinetuneConfig
    from models.finetune import finetune as run_finetune

    with user_errors("the last checkpoint in --out is kept; rerun with --resume to continue."):
        config = FinetuneConfig(
            clip=clip, sd=sd, out=str(out), pretrained=pretrained, captions=str(captions) if captions else None,
            data_root=str(data_root or default_data_root()), lam=lam, lr=lr, head_lr=head_lr,
            batch_size=batch_size, epochs=epochs, warmup_steps=warmup_steps, weight_decay=weight_decay,
            t_min=t_min, t_max=t_max, train=train, sds_grad=sds_grad, head=head, grad_accum=grad_accum,
            grad_checkpointing=grad_checkpointing, max_steps=max_steps, save_every=save_every,
            on_bad_image=on_bad_image, seed=seed, device=device, precision=precision, workers=workers)
        folder = run_finetune(config, resume=resume, progress=progress)
    from harness import distributed

    if distributed.world()[0] == 0:
        typer.echo(f"fine-tuned model in {folder} (losses.csv, finetune_config.json); evaluate it with "
                   f"`harness run --scorer sds-clip --model {folder} --bench winoground`")

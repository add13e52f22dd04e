"""Train the toy models of the shapes world from scratch on the CPU (``harness toy train --out DIR``).

Four stages, each on the shapes training split only (held-out object pairs never appear):

1. CLIP: an open_clip ``CLIP`` built from ``TOY_CLIP_CONFIG``, symmetric InfoNCE with a learned
   temperature.
2. VAE: a diffusers ``AutoencoderKL`` (32 px -> 8x8x4 latents), reconstruction + a small KL term;
   its ``scaling_factor`` is set so that the latents have unit variance, as SD's 0.18215 does.
3. UNet + text encoder: a ``UNet2DConditionModel`` and a transformers ``CLIPTextModel`` trained
   together with SD's epsilon objective and noise schedule, dropping the caption 10% of the time
   (the unconditional prediction the diffusion scorer subtracts), by the design ``SD_RECIPE``
   names: since the first design never learned where objects go, half the steps at high noise,
   those steps' loss weighted up, a larger text encoder and 5,600 steps (README, shapes world).
4. SDS-CLIP: ``harness finetune`` from the toy CLIP and the toy pipeline, with its defaults.

The results are ordinary model folders (open_clip ``local-dir:``, ``save_pretrained``, a
``harness finetune`` output), so they go through the same loading code as real checkpoints. Weights
are stored in fp16 to keep the folders small; they load into fp32 models. Every stage logs its loss
and, every few hundred steps, its accuracy on relation and attribute swaps of held-out validation
scenes (a seed the benchmarks do not use) to ``training_log.csv``.

Training writes only where it is told (``--out``); the shipped models in models/toy/ are replaced
only when that folder is named explicitly.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from benchmarks import shapes
from harness.files import atomic_write_text
from harness.results import write_csv_atomic
from models.clip import save_local_dir
from models.stable_diffusion import save_pipeline, token_ids, training_scheduler

log = logging.getLogger("harness")

IMAGE_SIZE = 32
CONTEXT_LENGTH = 32  # the longest shapes caption is 16 tokens with its start and end tokens
VALIDATION_SEED = 7919  # held-out scenes for the learning curves; the benchmarks use seeds 0..3 (x1000)

TOY_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": IMAGE_SIZE, "layers": 4, "width": 96, "head_width": 24, "patch_size": 4},
    "text_cfg": {"context_length": CONTEXT_LENGTH, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 3},
}


@dataclass(frozen=True)
class ToyBudget:
    """Steps per stage. ``full`` is what the shipped weights were trained with (a design may set
    its own UNet steps: ``SdRecipe.unet_steps``); ``smoke`` only checks that the chain runs."""

    pool: int  # rendered training scenes, sampled with replacement
    clip_steps: int
    clip_batch: int
    vae_steps: int
    vae_batch: int
    unet_steps: int
    unet_batch: int
    sds_steps: int
    eval_every: int
    eval_items: int


BUDGETS = {
    "full": ToyBudget(pool=40_000, clip_steps=1400, clip_batch=64, vae_steps=800, vae_batch=32,
                      unet_steps=2800, unet_batch=64, sds_steps=100, eval_every=400, eval_items=200),
    "smoke": ToyBudget(pool=256, clip_steps=4, clip_batch=16, vae_steps=4, vae_batch=8,
                       unet_steps=4, unet_batch=16, sds_steps=2, eval_every=2, eval_items=8),
}


@dataclass(frozen=True)
class SdRecipe:
    """The toy pipeline's design and how its UNet stage trains. ``RECIPES`` names each design
    tried for the relation problem (README, shapes world); ``SD_RECIPE`` is what `harness toy
    train` makes. Fields left at their defaults are the first shipped design."""

    vae_factor: int = 4  # 32 px -> 8x8 latents; 2 gives 16x16
    unet_channels: tuple[int, ...] = (48, 96)  # per UNet level, finest first
    cross_attention: tuple[bool, ...] = (True, True)  # which levels have cross-attention (the mid block always)
    layers_per_block: int = 1
    text_layers: int = 3
    text_width: int = 64
    jitter: float = 0.0  # training scenes: each object shifted by up to this share of the side, both axes
    high_noise_share: float = 0.0  # share of training timesteps drawn from [high_noise_from, 1000)
    high_noise_from: int = 500
    noise_weight_cap: float = 1.0  # each step's epsilon loss weighted by min(1 / abar_t, cap); 1: unweighted
    text_lr_scale: float = 1.0  # the text encoder's learning rate, as a multiple of the UNet's
    caption_dropout: float = 0.1
    unet_steps: int | None = None  # the design's own UNet + text encoder steps under the full budget
    # a second stage after the first: (recipe, steps) trains that recipe's choices for that many more
    # steps on fresh scenes, with a new warm-up and cosine schedule, as `harness toy extend-sd` does
    then: tuple[str, int] | None = None


def named_budget(name: str) -> ToyBudget:
    from harness.errors import HarnessError

    if name not in BUDGETS:
        raise HarnessError(f"--budget {name!r} is not one of {', '.join(BUDGETS)}")
    return BUDGETS[name]


def named_recipe(name: str) -> SdRecipe:
    from harness.errors import HarnessError

    if name not in RECIPES:
        raise HarnessError(f"--recipe {name!r} is not one of {', '.join(RECIPES)}")
    return RECIPES[name]


def full_plan(plan: ToyBudget, budget: str, design: SdRecipe) -> ToyBudget:
    """The budget's plan, with the design's own UNet step count when it has one and the budget is
    the full one (the smoke budget stays a few steps whatever the design)."""
    if budget == "full" and design.unet_steps is not None:
        return replace(plan, unet_steps=design.unet_steps)
    return plan


RECIPES: dict[str, SdRecipe] = {
    "v1": SdRecipe(),  # the first shipped design
    # one change each against v1
    "high-noise": SdRecipe(high_noise_share=0.5),  # half the steps where the caption decides the layout
    "jitter": SdRecipe(jitter=0.1),  # positional variety: layout as a rule, not a template
    "text-6x96": SdRecipe(text_layers=6, text_width=96),  # text encoder capacity
    "noise-weight": SdRecipe(noise_weight_cap=20.0),  # the loss of high-noise steps weighted up to 20x
    # on top of high-noise, which taught the axis of each relation but not which object goes first
    "high-noise+text": SdRecipe(high_noise_share=0.5, text_layers=6, text_width=96),
    "v-weight": SdRecipe(high_noise_share=0.5, noise_weight_cap=1000.0),  # the full v-prediction weighting
    # everything that pushes toward layout at once, to learn whether binding is learnable at all here
    "all-in": SdRecipe(high_noise_share=0.5, noise_weight_cap=20.0, text_layers=6, text_width=96, text_lr_scale=4.0),
    "high-noise+latent16": SdRecipe(high_noise_share=0.5, vae_factor=2, unet_channels=(32, 48, 96),
                                    cross_attention=(True, True, True)),
    "latent16": SdRecipe(vae_factor=2, unet_channels=(32, 48, 96), cross_attention=(False, True, True)),
    "latent16-xattn16": SdRecipe(vae_factor=2, unet_channels=(32, 48, 96), cross_attention=(True, True, True)),
    # all-in with twice the steps: in one run its validation relation accuracy jumped from chance to
    # 99.5% between steps 2,400 and 2,800; a second run, same seed, stayed at chance (README, shapes world)
    "all-in-5600": SdRecipe(high_noise_share=0.5, noise_weight_cap=20.0, text_layers=6, text_width=96,
                            text_lr_scale=4.0, unet_steps=5600),
}
# high-noise, then 1,200 steps of the v-weight loss: the one design whose layout accuracy rose
# twice, in two separate runs (README, shapes world)
RECIPES["high-noise+v-weight"] = replace(RECIPES["high-noise"], then=("v-weight", 1200))
SD_RECIPE = "high-noise+v-weight"


# -- data -----------------------------------------------------------------------------------------

def _render(scenes: list[shapes.Scene]) -> torch.Tensor:
    """Scenes as uint8 images (n, 3, 32, 32)."""
    images = np.stack([np.asarray(shapes.render(scene, IMAGE_SIZE)) for scene in scenes])
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def render_pool(n: int, seed: int, jitter: float = 0.0) -> tuple[torch.Tensor, list[str]]:
    """``n`` training scenes as images and their captions; with ``jitter``, each object shifted by
    up to that share of the side on both axes (the same scenes and captions, other positions)."""
    pairs = shapes.training_pairs(n, seed)
    if not jitter:
        return _render([scene for scene, _ in pairs]), [caption for _, caption in pairs]
    offsets = np.random.default_rng([seed, 5]).uniform(-jitter, jitter, size=(n, 4))
    images = np.stack([np.asarray(shapes.render(scene, IMAGE_SIZE, offsets=o)) for (scene, _), o in zip(pairs, offsets)])
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), [caption for _, caption in pairs]


@dataclass
class SwapSet:
    """Validation scenes of held-out pairs, each with its caption and two same-word negatives."""

    images: torch.Tensor  # uint8 (n, 3, 32, 32)
    true: list[str]
    relation: list[str]  # objects swapped
    attribute: list[str]  # colours swapped


def swap_set(n: int) -> SwapSet:
    pool = shapes.scenes(n, VALIDATION_SEED, test=True)
    return SwapSet(_render(pool), [s.caption() for s in pool],
                   [s.swapped_objects().caption() for s in pool], [s.swapped_colours().caption() for s in pool])


def clip_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> CLIP's input, normalised as open_clip's preprocess does for the toy CLIP."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    mean = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std


def vae_pixels(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 127.5 - 1


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int, total: int):
    """Linear warm-up, then cosine decay to zero (diffusers' schedule, as fine-tuning uses)."""
    from diffusers.optimization import get_cosine_schedule_with_warmup

    return get_cosine_schedule_with_warmup(optimizer, warmup, total)


class TrainingLog:
    """Rows of (stage, step, seconds, metric, value), rewritten to the CSV at each evaluation so
    that a crash keeps what was logged."""

    def __init__(self, path: Path) -> None:
        self.path, self.rows = path, []

    def add(self, stage: str, step: int, seconds: float, **values: float) -> None:
        for metric, value in values.items():
            self.rows.append({"stage": stage, "step": step, "seconds": round(seconds, 1), "metric": metric,
                              "value": round(float(value), 5)})

    def flush(self) -> None:
        write_csv_atomic(self.path, self.rows, ["stage", "step", "seconds", "metric", "value"])


def _loop(stage: str, steps: int, step_fn: Callable[[int], float], evaluate: Callable[[], dict[str, float]],
          budget: ToyBudget, log_: TrainingLog, progress: bool) -> None:
    """Run ``step_fn`` ``steps`` times; log the running loss and ``evaluate()`` every eval_every steps."""
    started, running = time.perf_counter(), []
    bar = tqdm(range(steps), desc=f"toy {stage}", disable=not progress, dynamic_ncols=True)
    for step in bar:
        running.append(step_fn(step))
        bar.set_postfix(loss=f"{running[-1]:.4f}")
        if (step + 1) % budget.eval_every == 0 or step + 1 == steps:
            log_.add(stage, step + 1, time.perf_counter() - started, loss=float(np.mean(running)), **evaluate())
            log_.flush()
            running = []


# -- 1. CLIP --------------------------------------------------------------------------------------

def clip_swap_accuracy(model, tokenizer, swaps: SwapSet) -> dict[str, float]:
    """Share of validation scenes whose caption beats its relation / attribute swap (strictly)."""
    model.eval()
    with torch.no_grad():
        image = F.normalize(model.encode_image(clip_pixels(swaps.images)), dim=-1)
        true = F.normalize(model.encode_text(tokenizer(swaps.true)), dim=-1)
        out = {}
        for kind in ("relation", "attribute"):
            wrong = F.normalize(model.encode_text(tokenizer(getattr(swaps, kind))), dim=-1)
            out[f"{kind}_acc"] = float(((image * true).sum(-1) > (image * wrong).sum(-1)).float().mean())
    model.train()
    return out


def train_clip(out: Path, budget: ToyBudget, seed: int, pool: tuple[torch.Tensor, list[str]], swaps: SwapSet,
               log_: TrainingLog, progress: bool) -> Path:
    import open_clip
    from open_clip.loss import ClipLoss
    from open_clip.tokenizer import SimpleTokenizer

    torch.manual_seed(seed)
    model = open_clip.CLIP(**TOY_CLIP_CONFIG)
    tokenizer = SimpleTokenizer(context_length=CONTEXT_LENGTH)
    images, captions = pool
    pixels = clip_pixels(images)
    tokens = tokenizer(captions)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    schedule = warmup_cosine(optimizer, 100, budget.clip_steps)
    contrastive = ClipLoss()
    rng = np.random.default_rng([seed, 1])

    def step(k: int) -> float:
        idx = torch.from_numpy(rng.choice(len(captions), budget.clip_batch, replace=False))
        image = F.normalize(model.encode_image(pixels[idx]), dim=-1)
        text = F.normalize(model.encode_text(tokens[idx]), dim=-1)
        loss = contrastive(image, text, model.logit_scale.exp().clamp(max=100))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        return loss.item()

    model.train()
    _loop("clip", budget.clip_steps, step, lambda: clip_swap_accuracy(model, tokenizer, swaps), budget, log_,
          progress)
    return save_local_dir(out, model.eval(), TOY_CLIP_CONFIG, half=True)


# -- 2. VAE ---------------------------------------------------------------------------------------

def toy_vae(factor: int = 4):
    """32 px -> (32 / factor)^2 x 4 latents; each halving of the side is one more encoder level."""
    from diffusers import AutoencoderKL

    channels = {4: (16, 32, 32), 2: (16, 32)}[factor]
    return AutoencoderKL(
        in_channels=3, out_channels=3, sample_size=IMAGE_SIZE, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * len(channels), up_block_types=("UpDecoderBlock2D",) * len(channels),
        block_out_channels=channels, layers_per_block=1, norm_num_groups=8,
    )


def train_vae(budget: ToyBudget, seed: int, pool: tuple[torch.Tensor, list[str]], log_: TrainingLog,
              progress: bool, factor: int = 4):
    torch.manual_seed(seed)
    vae = toy_vae(factor).train()
    images = pool[0]
    optimizer = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    schedule = warmup_cosine(optimizer, 50, budget.vae_steps)
    rng = np.random.default_rng([seed, 2])
    probe = vae_pixels(images[:256])

    def step(k: int) -> float:
        x = vae_pixels(images[torch.from_numpy(rng.choice(len(images), budget.vae_batch, replace=False))])
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample()).sample
        loss = F.mse_loss(recon, x) + 1e-6 * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        return loss.item()

    def evaluate() -> dict[str, float]:
        vae.eval()
        with torch.no_grad():
            mean = vae.encode(probe).latent_dist.mean
            mse = F.mse_loss(vae.decode(mean).sample, probe).item()
        vae.train()
        return {"recon_mse": mse, "latent_std": float(mean.std())}

    _loop("vae", budget.vae_steps, step, evaluate, budget, log_, progress)
    vae.eval()
    with torch.no_grad():  # SD scales latents to unit variance (0.18215 for its VAE); so do we
        std = float(vae.encode(probe).latent_dist.mean.std())
    vae.register_to_config(scaling_factor=1.0 / std)
    return vae


# -- 3. UNet + text encoder -----------------------------------------------------------------------

def shapes_words() -> list[str]:
    """Every word the shapes world writes, for the toy pipeline's reduced CLIP vocabulary."""
    text = " ".join([*shapes.TEMPLATES, *shapes.ZEROSHOT_TEMPLATES, *shapes.COLOURS, *shapes.SHAPES, *shapes.SIZES,
                     *shapes.RELATIONS])
    return sorted(set(text.replace("{", " ").replace("}", " ").split()))


def toy_text_encoder(vocab_size: int, recipe: SdRecipe = SdRecipe()):
    from transformers import CLIPTextConfig, CLIPTextModel

    # the reduced vocabulary puts the start and end tokens last
    width = recipe.text_width
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=width, intermediate_size=4 * width, num_hidden_layers=recipe.text_layers,
        num_attention_heads=4, max_position_embeddings=CONTEXT_LENGTH, hidden_act="quick_gelu", projection_dim=64,
        bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1))


def toy_unet(recipe: SdRecipe = SdRecipe()):
    from diffusers import UNet2DConditionModel

    down = tuple("CrossAttnDownBlock2D" if x else "DownBlock2D" for x in recipe.cross_attention)
    up = tuple("CrossAttnUpBlock2D" if x else "UpBlock2D" for x in reversed(recipe.cross_attention))
    return UNet2DConditionModel(
        sample_size=IMAGE_SIZE // recipe.vae_factor, in_channels=4, out_channels=4,
        down_block_types=down, up_block_types=up, block_out_channels=recipe.unet_channels,
        layers_per_block=recipe.layers_per_block, attention_head_dim=4, norm_num_groups=16,
        cross_attention_dim=recipe.text_width,
    )


def diffusion_swap_accuracy(unet, text_encoder, tokenizer, latents: torch.Tensor, swaps: SwapSet,
                            scheduler) -> dict[str, float]:
    """Share of validation scenes whose caption gives a lower denoising error than its swap, with
    five fixed timesteps and one shared noise draw (a cheap version of the diffusion scorer)."""
    unet.eval(), text_encoder.eval()
    timesteps = torch.tensor([100, 300, 500, 700, 900])
    g = torch.Generator().manual_seed(0)
    eps = torch.randn((len(timesteps), *latents.shape[1:]), generator=g)

    def errors(captions: list[str]) -> torch.Tensor:
        out = []
        with torch.no_grad():
            ids = token_ids(tokenizer, captions)
            cond = text_encoder(ids)[0]
            for z, c in zip(latents, cond):
                x_t = scheduler.add_noise(z.expand_as(eps), eps, timesteps)
                pred = unet(x_t, timesteps, encoder_hidden_states=c.expand(len(timesteps), -1, -1)).sample
                out.append(((pred - eps) ** 2).mean())
        return torch.stack(out)

    true = errors(swaps.true)
    result = {f"{kind}_acc": float((true < errors(getattr(swaps, kind))).float().mean())
              for kind in ("relation", "attribute")}
    unet.train(), text_encoder.train()
    return result


def train_sd(out: Path, budget: ToyBudget, seed: int, pool: tuple[torch.Tensor, list[str]], swaps: SwapSet,
             log_: TrainingLog, progress: bool, recipe: SdRecipe = SdRecipe(), vae=None) -> Path:
    """The VAE (unless one is given: a design that keeps the latents reuses it), then UNet + text
    encoder by ``recipe``."""
    from models.clip_tokenizer import build_clip_tokenizer

    if vae is None:
        vae = train_vae(budget, seed, pool, log_, progress, factor=recipe.vae_factor)
    tokenizer = build_clip_tokenizer(CONTEXT_LENGTH, words=shapes_words())
    torch.manual_seed(seed)
    unet, text_encoder = toy_unet(recipe), toy_text_encoder(len(tokenizer), recipe)
    if recipe.jitter:
        pool = render_pool(budget.pool, seed, jitter=recipe.jitter)
    _train_denoiser("unet", budget.unet_steps, vae, unet, text_encoder, tokenizer, budget, seed, pool, swaps, log_,
                    progress, recipe)
    if recipe.then is not None:
        second, steps = RECIPES[recipe.then[0]], min(recipe.then[1], budget.unet_steps)  # smoke: a few steps
        # fresh scenes from seed + 1, as extend-sd's default seed 1 is for a chain of seed 0
        _train_denoiser("unet-extended", steps, vae, unet, text_encoder, tokenizer, budget, seed + 1,
                        render_pool(budget.pool, seed + 1, jitter=second.jitter), swaps, log_, progress, second)
    return save_pipeline(out, vae, text_encoder, tokenizer, unet, half=True, vocab_words=shapes_words())


def train_pipeline(out: Path, recipe: str = SD_RECIPE, vae_from: Path | None = None, budget: str = "full",
                   steps: int | None = None, seed: int = 0, progress: bool = True) -> Path:
    """The toy pipeline alone by a named recipe (``harness toy train-sd``), for comparing designs at
    equal budgets: on the VAE of ``vae_from`` (a pipeline folder) when the design keeps the latents,
    else a new VAE; ``steps`` overrides the budget's UNet steps. Writes ``out`` (a pipeline folder),
    its ``training_log.csv`` and ``recipe.json`` (the design, the budget and the minutes taken)."""
    from harness.errors import HarnessError
    from models.stable_diffusion import load_pipeline

    design = named_recipe(recipe)
    plan = full_plan(named_budget(budget), budget, design)
    if steps is not None:
        plan = replace(plan, unet_steps=steps)
    vae = None
    if vae_from is not None:  # checked before anything is written
        given = load_pipeline(str(vae_from))
        if given.vae_factor != design.vae_factor:
            raise HarnessError(f"--vae-from {vae_from}: its VAE downsamples by {given.vae_factor}, the recipe "
                               f"{recipe!r} needs {design.vae_factor}; pick a pipeline of that design or train "
                               "a new VAE (leave --vae-from out)")
        vae = given.vae
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log_ = TrainingLog(out / "training_log.csv")
    started = time.perf_counter()
    train_sd(out, plan, seed, render_pool(plan.pool, seed), swap_set(plan.eval_items), log_, progress, design, vae)
    info = {"recipe": recipe, "design": asdict(design), "budget": budget, "plan": asdict(plan), "seed": seed,
            "vae_from": "given" if vae_from is not None else "trained",
            "minutes": round((time.perf_counter() - started) / 60, 1), "torch_threads": torch.get_num_threads()}
    atomic_write_text(out / "recipe.json", json.dumps(info, indent=2) + "\n")
    return out


def extend_sd(sd_dir: Path, out: Path, steps: int, seed: int = 1, budget: str = "full", progress: bool = True,
              recipe: str = "v1") -> Path:
    """Train a toy pipeline's UNet and text encoder ``steps`` more (fresh scenes from ``seed``, a new
    warm-up and cosine schedule); a larger training budget, logged to ``out/training_log.csv``. The
    recipe's training choices apply (timesteps, loss weight, caption dropout, jitter), not its
    architecture: that is the given pipeline's."""
    from models.stable_diffusion import load_pipeline

    plan, design = named_budget(budget), named_recipe(recipe)
    pipeline = load_pipeline(str(sd_dir))
    vae, text_encoder, tokenizer, unet = pipeline.vae, pipeline.text_encoder, pipeline.tokenizer, pipeline.unet
    out = Path(out)
    log_ = TrainingLog(out / "training_log.csv")
    _train_denoiser("unet-extended", steps, vae, unet, text_encoder, tokenizer, plan, seed,
                    render_pool(plan.pool, seed, jitter=design.jitter), swap_set(plan.eval_items), log_, progress,
                    design)
    return save_pipeline(out, vae, text_encoder, tokenizer, unet, half=True, vocab_words=shapes_words())


def _train_denoiser(stage: str, steps: int, vae, unet, text_encoder, tokenizer, budget: ToyBudget, seed: int,
                    pool: tuple[torch.Tensor, list[str]], swaps: SwapSet, log_: TrainingLog, progress: bool,
                    recipe: SdRecipe = SdRecipe()) -> None:
    """SD's epsilon objective on the frozen VAE's latents, UNet and text encoder trained together;
    the recipe's caption dropout, share of high-noise timesteps and loss weight per timestep."""
    images, captions = pool
    vae.eval()
    with torch.no_grad():  # the VAE is frozen here: encode the pool once
        latents = torch.cat([vae.encode(vae_pixels(images[i:i + 512])).latent_dist.mean
                             for i in range(0, len(images), 512)]) * vae.config.scaling_factor
        swap_latents = vae.encode(vae_pixels(swaps.images)).latent_dist.mean * vae.config.scaling_factor
    ids = token_ids(tokenizer, captions)
    empty = token_ids(tokenizer, [""])[0]
    unet.train(), text_encoder.train()
    scheduler = training_scheduler()
    params = list(unet.parameters()) + list(text_encoder.parameters())
    if recipe.text_lr_scale == 1:
        optimizer = torch.optim.AdamW(params, lr=5e-4, weight_decay=0.0)
    else:
        optimizer = torch.optim.AdamW([{"params": list(unet.parameters())},
                                       {"params": list(text_encoder.parameters()), "lr": 5e-4 * recipe.text_lr_scale}],
                                      lr=5e-4, weight_decay=0.0)
    schedule = warmup_cosine(optimizer, 200, steps)
    rng = np.random.default_rng([seed, 3])
    generator = torch.Generator().manual_seed(seed)

    def step(k: int) -> float:
        idx = torch.from_numpy(rng.choice(len(captions), budget.unet_batch, replace=False))
        z, batch_ids = latents[idx], ids[idx].clone()
        batch_ids[torch.rand(len(idx), generator=generator) < recipe.caption_dropout] = empty  # condition dropout
        t = torch.randint(0, 1000, (len(idx),), generator=generator)
        if recipe.high_noise_share:  # where the caption has to decide the layout
            high = torch.randint(recipe.high_noise_from, 1000, (len(idx),), generator=generator)
            t = torch.where(torch.rand(len(idx), generator=generator) < recipe.high_noise_share, high, t)
        eps = torch.randn(z.shape, generator=generator)
        x_t = scheduler.add_noise(z, eps, t)
        pred = unet(x_t, t, encoder_hidden_states=text_encoder(batch_ids)[0]).sample
        if recipe.noise_weight_cap > 1:
            # 1 / abar_t is the weight that turns the epsilon loss into the v-prediction loss: it spends
            # the gradient where the image is mostly noise and the caption has to decide the layout
            weight = (1 / scheduler.alphas_cumprod[t]).clamp(max=recipe.noise_weight_cap)
            loss = (weight * ((pred - eps) ** 2).flatten(1).mean(1)).sum() / weight.sum()
        else:
            loss = F.mse_loss(pred, eps)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        return loss.item()

    _loop(stage, steps, step,
          lambda: diffusion_swap_accuracy(unet, text_encoder, tokenizer, swap_latents, swaps, scheduler),
          budget, log_, progress)


# -- 4. SDS-CLIP ----------------------------------------------------------------------------------

def train_sds_clip(out: Path, clip_dir: Path, sd_dir: Path, budget: ToyBudget, seed: int, progress: bool) -> Path:
    """``harness finetune`` with its defaults (lambda 1, full SDS gradient) from the two toy models,
    then stored in fp16 like them. Its losses.csv is the log. Its manifest names the base models by
    their toy names (toy:clip, toy:sd), not by this machine's paths."""
    from safetensors.torch import load_file, save_file

    from models.finetune import FinetuneConfig, finetune

    with tempfile.TemporaryDirectory() as tmp:
        captions = shapes.write_training_set(Path(tmp) / "data", n=budget.sds_steps * 64 + 64, seed=seed + 1)
        config = FinetuneConfig(clip=f"local-dir:{clip_dir}", sd=str(sd_dir), out=str(Path(tmp) / "run"),
                                captions=str(captions), batch_size=64, epochs=1, lr=1e-3, head_lr=1e-2,
                                warmup_steps=max(1, budget.sds_steps // 10), max_steps=budget.sds_steps,
                                save_every=budget.sds_steps, workers=0, device="cpu", seed=seed)
        run = finetune(config, progress=progress)
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(run, out, ignore=shutil.ignore_patterns("trainer_state.pt", "*.tmp"))
    manifest = json.loads((out / "finetune_config.json").read_text(encoding="utf-8"))
    manifest.update(clip="toy:clip", sd="toy:sd", captions="shapes training split", out="toy:sds-clip")
    manifest["extra"]["base_clip"] = manifest["clip"]
    atomic_write_text(out / "finetune_config.json", json.dumps(manifest, indent=2) + "\n")
    weights = out / "open_clip_model.safetensors"
    save_file({k: v.half() for k, v in load_file(str(weights)).items()}, str(weights))
    return out


# -- all of it ------------------------------------------------------------------------------------

ARTIFACTS = ("clip", "sd", "sds-clip", "training_log.csv", "training_curves.png", "toy_manifest.json")


def train_toy_models(out: Path, budget: str = "full", seed: int = 0, progress: bool = True,
                     recipe: str = SD_RECIPE) -> dict[str, Path]:
    """Train the toy CLIP, the toy SD pipeline and the toy SDS-CLIP into ``out``; returns their folders
    (named as models.toy_models names them: clip, sd, sds-clip).

    Everything is trained in a staging folder inside ``out`` and moved into place only at the end,
    so a crash leaves the previous models whole (and the staging folder, with its log, for a look).
    """
    plan = full_plan(named_budget(budget), budget, named_recipe(recipe))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".toy-train-", dir=out))
    log_ = TrainingLog(staging / "training_log.csv")
    started = time.perf_counter()
    try:
        pool = render_pool(plan.pool, seed)
        swaps = swap_set(plan.eval_items)
        clip_dir = train_clip(staging / "clip", plan, seed, pool, swaps, log_, progress)
        sd_dir = train_sd(staging / "sd", plan, seed, pool, swaps, log_, progress, RECIPES[recipe])
        train_sds_clip(staging / "sds-clip", clip_dir, sd_dir, plan, seed, progress)
    except BaseException:
        log.error("toy training stopped; the models in %s are unchanged, the partial run is in %s", out, staging)
        raise
    manifest = {"budget": budget, "seed": seed, "plan": asdict(plan), "clip_config": TOY_CLIP_CONFIG,
                "sd_recipe": recipe, "sd_design": asdict(RECIPES[recipe]),
                "minutes": round((time.perf_counter() - started) / 60, 1), "torch_threads": torch.get_num_threads()}
    atomic_write_text(staging / "toy_manifest.json", json.dumps(manifest, indent=2) + "\n")
    from experiments.shapes.figures import toy_training_figure

    toy_training_figure(staging / "training_log.csv", staging / "training_curves.png")
    for name in ARTIFACTS:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(staging / name, target)
    shutil.rmtree(staging, ignore_errors=True)
    log.info("toy models written to %s in %.1f min", out, manifest["minutes"])
    return {name: out / name for name in ("clip", "sd", "sds-clip")}


def adopt_sd(sd_dir: Path, toy_dir: Path, seed: int = 0, progress: bool = True) -> dict[str, Path]:
    """Make a pipeline trained by ``harness toy train-sd`` the toy set's ``sd/`` and fine-tune the
    set's ``sds-clip/`` again from its ``clip/`` and the new pipeline (``harness toy adopt-sd``).

    The set's training log keeps its CLIP rows (and its VAE rows when the pipeline reused the set's
    VAE) and takes the pipeline's own rows; the manifest records the pipeline's recipe.json. As in
    ``train_toy_models``, everything is made in a staging folder and moved into place at the end."""
    import csv

    from harness.errors import HarnessError

    sd_dir, toy_dir = Path(sd_dir), Path(toy_dir)
    missing = [str(p) for p in (sd_dir / "model_index.json", sd_dir / "recipe.json", sd_dir / "training_log.csv",
                                toy_dir / "clip", toy_dir / "toy_manifest.json", toy_dir / "training_log.csv")
               if not p.exists()]
    if missing:
        raise HarnessError("adopt-sd needs a pipeline made by `harness toy train-sd` and a toy set made by "
                           f"`harness toy train`; missing: {', '.join(missing)}")
    info = json.loads((sd_dir / "recipe.json").read_text(encoding="utf-8"))
    manifest = json.loads((toy_dir / "toy_manifest.json").read_text(encoding="utf-8"))
    plan = BUDGETS[manifest.get("budget", "full")]
    staging = Path(tempfile.mkdtemp(prefix=".toy-adopt-", dir=toy_dir))
    try:
        shutil.copytree(sd_dir, staging / "sd", ignore=shutil.ignore_patterns("training_log.csv", "recipe.json",
                                                                              "diag", "*.tmp"))
        started = time.perf_counter()
        train_sds_clip(staging / "sds-clip", toy_dir / "clip", staging / "sd", plan, seed, progress)
        sds_minutes = (time.perf_counter() - started) / 60
        with open(sd_dir / "training_log.csv", newline="", encoding="utf-8") as f:
            new_rows = list(csv.DictReader(f))
        with open(toy_dir / "training_log.csv", newline="", encoding="utf-8") as f:
            old_rows = list(csv.DictReader(f))
        new_stages = {r["stage"] for r in new_rows}
        kept = [r for r in old_rows if r["stage"] == "clip" or (r["stage"] == "vae" and "vae" not in new_stages)]
        write_csv_atomic(staging / "training_log.csv", kept + new_rows, ["stage", "step", "seconds", "metric", "value"])
        manifest.update(sd_recipe=info["recipe"], sd_design=info["design"],
                        sd_trained_by={"command": "harness toy train-sd", "recipe": info["recipe"],
                                       "vae": info["vae_from"], "unet_steps": info["plan"]["unet_steps"],
                                       "seed": info["seed"], "minutes": info["minutes"]},
                        sds_clip_minutes=round(sds_minutes, 1))
        manifest["plan"]["unet_steps"] = info["plan"]["unet_steps"]
        atomic_write_text(staging / "toy_manifest.json", json.dumps(manifest, indent=2) + "\n")
        from experiments.shapes.figures import toy_training_figure

        toy_training_figure(staging / "training_log.csv", staging / "training_curves.png")
    except BaseException:
        log.error("adopt-sd stopped; the toy set in %s is unchanged, the partial one is in %s", toy_dir, staging)
        raise
    for name in ("sd", "sds-clip", "training_log.csv", "training_curves.png", "toy_manifest.json"):
        target = toy_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(staging / name, target)
    shutil.rmtree(staging, ignore_errors=True)
    return {name: toy_dir / name for name in ("clip", "sd", "sds-clip")}

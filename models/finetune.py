"""SDS-CLIP fine-tuning (Basu et al., arXiv 2307.09233): CLIP's LayerNorms and a linear map h_w
trained with L_CLIP + lambda * L_SDS, with gradients from a frozen Stable Diffusion UNet.

    L_CLIP  symmetric InfoNCE over the global batch, with CLIP's (frozen) logit scale
    L_SDS   E_{t,eps} || eps_theta(sqrt(abar_t) z + sqrt(1 - abar_t) eps, t, c) - eps ||^2,
            z = h_w(f(x)): f CLIP's image embedding, h_w a linear map into the UNet's latent
            shape, c the frozen diffusion text encoder's conditioning of the caption.

``sds_grad="full"`` backpropagates L_SDS through the UNet (the paper). ``"detached"`` gives z the
score-distillation gradient without the UNet's Jacobian (DreamFusion's trick, the authors' next
step for larger batches): d/dz = w(t) (eps_hat - eps) / B with w(t) = 2 sqrt(abar_t) / D, D the
latent size; that is exactly the full gradient of the same mean squared error with the Jacobian
replaced by the identity, so lambda means the same in both modes. No UNet backward runs then.

Everything random (data order, caption choice, timesteps, noise) is drawn from the seed and the
(epoch, step) counters for the whole global batch and then sliced per process, so a resumed run
repeats an uninterrupted one and N processes repeat one process with the same global batch.
Several processes (torchrun, accelerate launch) each take a slice of every global batch; the
gradients of the few trained tensors are summed across processes after each step. L_CLIP is
open_clip's ClipLoss over the gathered global batch (each process keeps the gradient of its own
rows); the learning rate follows diffusers' warm-up + cosine schedule; latents are noised by the
pipeline's own scheduler.

The paper's hyperparameters are not public: the defaults in FinetuneConfig say why they are what
they are.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from harness import distributed, interrupts
from harness.devices import PRECISIONS, autocast, autocast_dtype, resolve_device
from harness.errors import BadRecordError, HarnessError, MissingDataError
from harness.files import atomic_write, atomic_write_text
from harness.images import decode_image
from harness.options import Choice, Float, Int, Option, resolve_options
from harness.results import csv_text
from models.clip import load_open_clip, save_local_dir
from models.stable_diffusion import VaeImageTransform, load_pipeline, token_ids

log = logging.getLogger("harness")

TRAINABLE = ("image-ln", "text-ln", "both-ln", "all")
# h_w designs. "linear": the paper's free linear map. The others guard against the shortcut of a
# free map that finds a latent the UNet denoises easily whatever the image, so that L_SDS falls
# and almost no gradient reaches CLIP: "normalised" rescales each z to zero mean and unit
# variance (the VAE latents' statistics); "frozen-fit" fits h_w once by least squares to map CLIP
# embeddings onto the VAE latents of training images and keeps it fixed.
HEADS = ("linear", "normalised", "frozen-fit")
FIT_IMAGES = 1024  # training images used to fit a frozen-fit head


@dataclass
class FinetuneConfig:
    """Every knob of a run; saved beside each checkpoint. Defaults and why:"""

    clip: str  # open_clip architecture, local-dir:/path or hf-hub:org/repo
    sd: str  # Stable Diffusion pipeline: hub id in the local cache, or a save_pretrained folder
    out: str  # output folder (checkpoint, logs)
    pretrained: str | None = None  # open_clip tag or weights file, with an architecture name
    data_root: str = "data"  # holds coco/annotations/captions_train2017.json + coco/train2017/
    captions: str | None = None  # or: a JSONL/CSV of image,caption rows (image paths relative to it)
    lam: float = 1.0  # weight of L_SDS; the paper's value is unpublished: 1 puts both terms on a par
    lr: float = 1e-5  # LayerNorm-only tuning of a pretrained CLIP: small, like CLIP fine-tuning recipes
    head_lr: float = 1e-3  # h_w starts from scratch, so it gets a larger rate than the LayerNorms
    batch_size: int = 64  # global batch; the paper trains on COCO with modest GPUs (value unpublished)
    epochs: int = 5  # a later paper reports 5 epochs following SDS-CLIP's recipe (unconfirmed)
    warmup_steps: int = 50  # same source as epochs: 50 warm-up steps
    weight_decay: float = 0.0  # LayerNorm gains and biases are conventionally not decayed
    t_min: int = 20  # timestep range for L_SDS: DreamFusion samples U[0.02, 0.98] x 1000 ...
    t_max: int = 980  # ... avoiding the nearly noiseless and the pure-noise ends
    train: str = "image-ln"  # which CLIP parameters move: image-ln (default), text-ln, both-ln, all
    sds_grad: str = "full"  # full (through the UNet, the paper) or detached (no UNet Jacobian)
    head: str = "linear"  # h_w design: linear (the paper), normalised or frozen-fit (see HEADS)
    grad_accum: int = 1  # micro-batches per optimizer step (the global batch is split further)
    grad_checkpointing: bool = False  # recompute UNet activations in backward to save memory
    max_steps: int | None = None  # stop after this many optimizer steps (smoke tests, budgets)
    save_every: int = 500  # steps between checkpoints (and at the end)
    on_bad_image: str = "skip"  # skip (counted and reported) or fail
    grad_norm_every: int = 10  # log each term's gradient norm into CLIP every N steps (costs a backward)
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # auto = bf16 (or fp16) autocast on GPU, fp32 on CPU; fp32, fp16, bf16
    workers: int = 2  # image-decoding processes per rank (they prefetch the next steps)
    extra: dict[str, Any] = field(default_factory=dict)  # filled in: base model, data hash, commit


# The type of every knob a user sets, checked in one place before anything loads (a negative
# learning rate would train by gradient ascent; a NaN lambda would poison every step).
CONFIG_TYPES: dict[str, tuple[Any, str | None]] = {  # field -> (option type, command-line flag if not --field)
    "lam": (Float(0), "--lambda"), "lr": (Float(0), None), "head_lr": (Float(0), None),
    "batch_size": (Int(1), None), "epochs": (Int(1), None), "warmup_steps": (Int(0), None),
    "weight_decay": (Float(0), None), "t_min": (Int(0, 999), None), "t_max": (Int(1, 1000), None),
    "train": (Choice(*TRAINABLE), None), "sds_grad": (Choice("full", "detached"), None),
    "head": (Choice(*HEADS), None), "grad_accum": (Int(1), None), "max_steps": (Int(1), None),
    "save_every": (Int(1), None), "on_bad_image": (Choice("skip", "fail"), None), "grad_norm_every": (Int(0), None),
    "seed": (Int(0), None), "precision": (Choice(*PRECISIONS), None), "workers": (Int(0), None),
}


def validate_config(config: FinetuneConfig) -> None:
    """Refuse a configuration with a value of the wrong type or range, naming the flag and the value."""
    declared = [Option(name, kind, None, f"see `harness finetune --help` ({flag or '--' + name.replace('_', '-')})",
                       cli=flag) for name, (kind, flag) in CONFIG_TYPES.items()]
    resolve_options(declared, {name: getattr(config, name) for name in CONFIG_TYPES}, "harness finetune", None)
    if config.t_min >= config.t_max:
        raise HarnessError(f"--t-min {config.t_min} must be below --t-max {config.t_max} (L_SDS draws timesteps "
                           "from [t_min, t_max))")


# -- data -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sample:
    image: Path
    captions: tuple[str, ...]


def read_samples(config: FinetuneConfig) -> list[Sample]:
    """COCO 2017 train captions, or a plain JSONL/CSV of image,caption rows (grouped by image)."""
    if config.captions:
        path = Path(config.captions)
        if not path.is_file():
            raise MissingDataError(f"caption file {path} not found")
        rows = _read_caption_rows(path)
        base = path.parent
    else:
        path = Path(config.data_root) / "coco" / "annotations" / "captions_train2017.json"
        if not path.is_file():
            raise MissingDataError(
                f"COCO captions not found at {path}. Put MS-COCO 2017's annotations (captions_train2017.json) "
                f"in {path.parent}/ and its train images in {Path(config.data_root) / 'coco' / 'train2017'}/, "
                "or pass --captions with a JSONL/CSV of image,caption rows.")
        data = json.loads(path.read_text(encoding="utf-8"))
        names = {img["id"]: img["file_name"] for img in data.get("images", [])}
        rows = [(names.get(a["image_id"]), a["caption"]) for a in data.get("annotations", [])]
        if any(name is None for name, _ in rows):
            raise BadRecordError(f"{path}: an annotation names an image id missing from 'images'")
        base = Path(config.data_root) / "coco" / "train2017"
    grouped: dict[str, list[str]] = {}
    for image, caption in rows:
        grouped.setdefault(str(image), []).append(str(caption).strip())
    samples = [Sample(base / image, tuple(c)) for image, c in sorted(grouped.items())]
    if not samples:
        raise BadRecordError(f"{path} holds no image-caption pairs")
    missing = [s.image for s in samples if not s.image.is_file()]
    if missing:
        raise MissingDataError(
            f"{len(missing)} of {len(samples)} images named in {path} are missing, e.g. {missing[0]}. "
            f"Images are looked for under {base}.")
    return samples


def _read_caption_rows(path: Path) -> list[tuple[str, str]]:
    rows = []
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"image", "caption"} <= set(reader.fieldnames):
                raise BadRecordError(f"{path} needs the columns image and caption, has {reader.fieldnames}")
            rows = [(r["image"], r["caption"]) for r in reader]
    else:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise BadRecordError(f"{path} line {n} is not JSON ({err.msg} at column {err.colno}); write "
                                         'one object per line like {"image": "a.jpg", "caption": "a dog"}') from None
                if not isinstance(record, dict) or "image" not in record or "caption" not in record:
                    raise BadRecordError(f"{path} line {n} lacks 'image' or 'caption'")
                rows.append((record["image"], record["caption"]))
    return rows


def data_hash(samples: Sequence[Sample]) -> str:
    """A hash of the image names and captions the run trains on."""
    h = hashlib.sha256()
    for s in samples:
        h.update(f"{s.image.name}\x1f{'|'.join(s.captions)}\n".encode())
    return h.hexdigest()[:16]


def batch_indices(seed: int, step: int, n_samples: int, batch_size: int) -> list[int]:
    """The samples of global batch ``step``: a fresh permutation per epoch, from the seed."""
    steps_per_epoch = n_samples // batch_size
    epoch, within = divmod(step, steps_per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n_samples)
    return order[within * batch_size:(within + 1) * batch_size].tolist()


class _StepImages(torch.utils.data.Dataset):
    """Item ``step``: this process's slice of that step's global batch, decoded and transformed
    (worker processes prefetch the next steps). Undecodable images come back as error strings."""

    def __init__(self, samples: Sequence[Sample], seed: int, batch_size: int, rank: int, world: int,
                 transform) -> None:
        self.samples, self.seed, self.batch_size = samples, seed, batch_size
        self.rank, self.world, self.transform = rank, world, transform

    def __len__(self) -> int:
        return 1 << 40  # indexed by step; the sampler decides which steps are read

    def __getitem__(self, step: int) -> list[tuple[int, Any]]:
        indices = batch_indices(self.seed, step, len(self.samples), self.batch_size)
        per_rank = self.batch_size // self.world
        out = []
        for i in indices[self.rank * per_rank:(self.rank + 1) * per_rank]:
            path = self.samples[i].image
            try:
                out.append((i, self.transform(decode_image(path, str(path)))))
            except BadRecordError as err:
                out.append((i, str(err)))
        return out


# -- the model parts ------------------------------------------------------------------------------

class LatentHead(torch.nn.Module):
    """h_w: a linear map from CLIP's embedding to the UNet's latent shape."""

    def __init__(self, embed_dim: int, latent_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.latent_shape = latent_shape
        self.linear = torch.nn.Linear(embed_dim, math.prod(latent_shape))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features).view(-1, *self.latent_shape)


def trainable_parameters(clip: torch.nn.Module, which: str) -> list[tuple[str, torch.nn.Parameter]]:
    """The CLIP parameters a run trains: LayerNorms of the image tower, the text tower, both, or all."""
    if which not in TRAINABLE:
        raise HarnessError(f"--train {which!r} is not one of {', '.join(TRAINABLE)}")
    if which == "all":
        return list(clip.named_parameters())
    chosen = []
    for module_name, module in clip.named_modules():
        if not isinstance(module, torch.nn.LayerNorm):
            continue
        image_side = module_name.startswith("visual.")
        if (which == "image-ln" and image_side) or (which == "text-ln" and not image_side) or which == "both-ln":
            chosen += [(f"{module_name}.{n}", p) for n, p in module.named_parameters()]
    return chosen


# -- one training run -----------------------------------------------------------------------------

class Trainer:
    def __init__(self, config: FinetuneConfig) -> None:
        validate_config(config)  # before anything loads or is written
        self.config = config
        self.rank, self.world = distributed.init_from_env(config.device)
        if config.batch_size % (self.world * config.grad_accum):
            raise HarnessError(f"--batch-size {config.batch_size} must divide into {self.world} processes x "
                               f"{config.grad_accum} accumulation steps")
        self.device = resolve_device(config.device)
        self.amp = autocast_dtype(self.device, config.precision)
        # fp16 gradients can underflow: scale the loss (bf16 and fp32 need no scaling)
        self.grad_scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)

        self.clip, self.preprocess, self.tokenizer, quick_gelu, _ = load_open_clip(config.clip, config.pretrained)
        self.model_cfg = _model_config(config.clip, self.clip, quick_gelu)
        pipeline = load_pipeline(config.sd)
        self.vae, self.text_encoder, self.sd_tokenizer, self.unet = (
            pipeline.vae, pipeline.text_encoder, pipeline.tokenizer, pipeline.unet)
        self.scheduler = pipeline.scheduler
        if pipeline.prediction_type != "epsilon":
            raise HarnessError(f"{config.sd} predicts {pipeline.prediction_type}; L_SDS as written needs an "
                               "epsilon-prediction model (e.g. SD 1.x or stable-diffusion-2-1-base)")
        latent = self.unet.config.sample_size
        factor = 2 ** (len(self.unet.config.block_out_channels) - 1)
        if latent % factor:
            raise HarnessError(f"{config.sd}: its UNet's sample size {latent} is not divisible by its {factor}x "
                               "downsampling, so no latent fits it")
        self.latent_shape = (self.unet.config.in_channels, latent, latent)
        torch.manual_seed(config.seed)  # h_w's initialisation
        self.head = LatentHead(int(self.model_cfg["embed_dim"]), self.latent_shape)

        for module in (self.vae, self.text_encoder, self.unet):
            module.requires_grad_(False).eval().to(self.device)
        self.clip.requires_grad_(False).eval().to(self.device)  # eval: no dropout in a frozen-statistics model
        self.trained = trainable_parameters(self.clip, config.train)
        for _, p in self.trained:
            p.requires_grad_(True)
        self.head.to(self.device)
        if config.grad_checkpointing:
            self.unet.enable_gradient_checkpointing()
        self.samples = read_samples(config)
        if config.head == "frozen-fit" and config.lam != 0:
            self._fit_head()
        self.head_trained = config.lam != 0 and config.head != "frozen-fit"
        self.head.requires_grad_(self.head_trained)
        self.optimizer = torch.optim.AdamW([
            {"params": [p for _, p in self.trained], "lr": config.lr},
            {"params": list(self.head.parameters()) if self.head_trained else [], "lr": config.head_lr},
        ], weight_decay=config.weight_decay)
        from diffusers.optimization import get_cosine_schedule_with_warmup
        from open_clip.loss import ClipLoss

        # Linear warm-up, then cosine decay to zero over the planned epochs (``max_steps`` only stops
        # a run early: the schedule, like the data order, does not depend on it).
        self.lr_schedule = get_cosine_schedule_with_warmup(self.optimizer, config.warmup_steps,
                                                           self.steps_per_epoch * config.epochs)
        # the global batch's InfoNCE; gathered features keep the gradient of this process's rows only
        self.clip_loss = ClipLoss(local_loss=False, gather_with_grad=False, rank=self.rank, world_size=self.world)
        self.out = Path(config.out)
        self.step, self.skipped_images = 0, 0
        self.history: list[dict[str, float]] = []

    # -- schedule ---------------------------------------------------------------------------------
    @property
    def steps_per_epoch(self) -> int:
        return len(self.samples) // self.config.batch_size

    @property
    def total_steps(self) -> int:
        total = self.steps_per_epoch * self.config.epochs
        return min(total, self.config.max_steps) if self.config.max_steps else total

    def global_batch(self, step: int) -> dict[str, Any]:
        """Everything random about optimizer step ``step``, for the whole global batch."""
        indices = batch_indices(self.config.seed, step, len(self.samples), self.config.batch_size)
        epoch, within = divmod(step, self.steps_per_epoch)
        rng = np.random.default_rng([self.config.seed, epoch, within, 1])
        captions = [self.samples[i].captions[rng.integers(len(self.samples[i].captions))] for i in indices]
        generator = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
        t = torch.randint(self.config.t_min, self.config.t_max, (len(indices),), generator=generator)
        eps = torch.randn((len(indices), *self.latent_shape), generator=generator)
        return {"indices": indices, "captions": captions, "t": t, "eps": eps}

    def batch(self, step: int, decoded: list[tuple[int, Any]] | None = None) -> dict[str, Any]:
        """This process's share of global batch ``step``, ready for ``losses``: pixels, CLIP
        tokens, SD token ids, timesteps and noise (``decoded``: its images, if already decoded)."""
        if decoded is None:
            decoded = _StepImages(self.samples, self.config.seed, self.config.batch_size, self.rank, self.world,
                                  self.preprocess)[step]
        batch = self.global_batch(step)
        per_rank = self.config.batch_size // self.world
        mine = slice(self.rank * per_rank, (self.rank + 1) * per_rank)
        captions = batch["captions"][mine]
        return {"pixels": self._pixels(decoded), "tokens": self.tokenizer(captions),
                "sd_ids": token_ids(self.sd_tokenizer, captions), "t": batch["t"][mine], "eps": batch["eps"][mine]}

    # -- losses -----------------------------------------------------------------------------------
    def latents(self, image_features: torch.Tensor) -> torch.Tensor:
        """z = h_w(f(x)), rescaled to zero mean and unit variance per latent for ``--head normalised``."""
        z = self.head(image_features.float())
        if self.config.head == "normalised":
            flat = z.flatten(1)
            z = ((flat - flat.mean(1, keepdim=True)) / (flat.std(1, keepdim=True) + 1e-6)).view_as(z)
        return z

    def losses(self, pixels, tokens, sd_ids, t, eps) -> dict[str, torch.Tensor]:
        """This rank's share: L_CLIP over the gathered global batch (gradient through the local
        rows), and L_SDS over the local rows divided by the process count, so that summing
        gradients over processes gives the gradient of the global-batch loss. Returns the terms
        ("clip", "sds", "total") and, when lambda is not 0, the latents "z" the UNet denoised."""
        with autocast(self.device, self.amp):
            image = self.clip.encode_image(pixels)
            text = self.clip.encode_text(tokens)
        image_n, text_n = F.normalize(image.float(), dim=-1), F.normalize(text.float(), dim=-1)
        clip_loss = self.clip_loss(image_n, text_n, self.clip.logit_scale.exp().detach())
        out = {"clip": clip_loss}
        if self.config.lam == 0:  # the control: h_w and the UNet are not touched at all
            out["sds"] = torch.zeros((), device=self.device)
            out["total"] = clip_loss
            return out
        z = self.latents(image)
        x_t = self.scheduler.add_noise(z, eps, t)
        with torch.no_grad():
            cond = self.text_encoder(sd_ids)[0]
        if self.config.sds_grad == "full":
            with autocast(self.device, self.amp):
                eps_hat = self.unet(x_t, t, encoder_hidden_states=cond).sample
            sds = F.mse_loss(eps_hat.float(), eps)
            surrogate = sds
        else:
            with torch.no_grad(), autocast(self.device, self.amp):
                eps_hat = self.unet(x_t.detach(), t, encoder_hidden_states=cond).sample
            eps_hat = eps_hat.float()
            sds = F.mse_loss(eps_hat, eps)
            # d(surrogate)/dz = w(t) (eps_hat - eps) / B, w(t) = 2 sqrt(abar_t) / D (see the module doc)
            abar = self.scheduler.alphas_cumprod.to(z.device)[t].view(-1, 1, 1, 1)
            weight = 2 * abar.sqrt() / math.prod(self.latent_shape)
            surrogate = (weight * (eps_hat - eps)).detach().mul(z).sum() / len(z)
        out["z"] = z
        out["sds"] = sds.detach()
        out["total"] = clip_loss + self.config.lam * surrogate / self.world
        return out

    # -- the loop ---------------------------------------------------------------------------------
    def train(self, resume: bool = False, progress: bool = True) -> Path:
        if resume:
            self._load_state()
        elif (self.out / "trainer_state.pt").exists():
            raise HarnessError(f"{self.out} already holds a run; pass --resume to continue it, or another --out")
        if self.total_steps == 0:
            raise HarnessError(f"{len(self.samples)} images make no full batch of {self.config.batch_size}")
        bar = tqdm(total=self.total_steps, initial=self.step, unit="step", disable=not progress or self.rank != 0,
                   desc=f"sds-clip lambda={self.config.lam} {self.config.sds_grad}", dynamic_ncols=True)
        started, seen = time.perf_counter(), 0
        images = iter(torch.utils.data.DataLoader(
            _StepImages(self.samples, self.config.seed, self.config.batch_size, self.rank, self.world, self.preprocess),
            batch_size=None, sampler=range(self.step, self.total_steps), num_workers=self.config.workers,
            prefetch_factor=2 if self.config.workers else None))
        try:
            while self.step < self.total_steps:
                interrupts.check()  # a Ctrl-C that a library swallowed still stops training here
                record = self._optimizer_step(next(images))
                seen += self.config.batch_size
                record["samples_per_s"] = seen / (time.perf_counter() - started)
                self.history.append(record)
                self.step += 1
                bar.set_postfix(clip=f"{record['clip']:.4f}", sds=f"{record['sds']:.4f}",
                                sps=f"{record['samples_per_s']:.1f}")
                bar.update(1)
                if self.step % self.config.save_every == 0 or self.step == self.total_steps:
                    self.save()
        finally:
            bar.close()
        return self.out

    def _optimizer_step(self, decoded: list[tuple[int, Any]]) -> dict[str, float]:
        batch = self.batch(self.step, decoded)
        micro = len(batch["pixels"]) // self.config.grad_accum
        self.optimizer.zero_grad(set_to_none=True)
        totals = {"clip": 0.0, "sds": 0.0, "grad_norm_clip": float("nan"), "grad_norm_sds": float("nan")}
        lr = self.optimizer.param_groups[0]["lr"]
        for k in range(self.config.grad_accum):
            part = slice(k * micro, (k + 1) * micro)
            inputs = {name: value[part].to(self.device) for name, value in batch.items()}
            losses = self.losses(inputs["pixels"], inputs["tokens"], inputs["sd_ids"], inputs["t"], inputs["eps"])
            terms = {name: losses[name] for name in ("clip", "sds", "total")}
            if not all(torch.isfinite(v).all() for v in terms.values()):
                raise HarnessError(
                    f"the loss became non-finite at step {self.step} (L_CLIP {losses['clip'].item()}, L_SDS "
                    f"{float(losses['sds'])}); stopped without saving, the last good checkpoint in {self.out} is "
                    "kept. Lower --lr or --lambda, or try --precision fp32.")
            if self.config.grad_norm_every and self.step % self.config.grad_norm_every == 0:
                totals.update(self._grad_norms(losses))
            self.grad_scaler.scale(losses["total"] / self.config.grad_accum).backward()
            totals["clip"] += losses["clip"].item() / self.config.grad_accum
            totals["sds"] += losses["sds"].item() / self.config.grad_accum
        self._sum_gradients_across_processes()
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()
        self.lr_schedule.step()
        return {"step": self.step, **totals, "lr": lr}

    def _grad_norms(self, losses) -> dict[str, float]:
        """The gradient norm each loss term sends into the trained CLIP parameters (logged to see
        whether L_SDS reaches CLIP at all, or h_w absorbs it: h_w can learn a z that the UNet denoises
        easily whatever the image, and then almost no gradient reaches CLIP)."""
        params = [p for _, p in self.trained]
        norms = {}
        for name in ("clip", "sds"):
            if name == "sds" and self.config.lam == 0:
                norms["grad_norm_sds"] = 0.0
                continue
            term = losses["clip"] if name == "clip" else losses["total"] - losses["clip"]
            grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
            norms[f"grad_norm_{name}"] = float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None)
                                                        or torch.zeros(())))
        return norms

    def _pixels(self, decoded: list[tuple[int, Any]]) -> torch.Tensor:
        """Stack this rank's decoded images; one that failed to decode is replaced by another good
        image of the slice and counted (``skip``), or stops the run (``fail``)."""
        bad = [value for _, value in decoded if isinstance(value, str)]
        if bad and self.config.on_bad_image == "fail":
            raise BadRecordError(f"{bad[0]} (--on-bad-image fail)")
        good = [value for _, value in decoded if not isinstance(value, str)]
        if not good:
            raise BadRecordError(f"no image of the batch at step {self.step} decodes, e.g. {bad[0]}")
        if bad:
            self.skipped_images += len(bad)
            log.warning("skipped %d undecodable image(s) at step %d, e.g. %s", len(bad), self.step, bad[0])
        return torch.stack([good[0] if isinstance(value, str) else value for _, value in decoded])

    def _sum_gradients_across_processes(self) -> None:
        if self.world == 1:
            return
        # with lambda 0 (or a frozen h_w) no process gives h_w a gradient, and it must stay untouched
        head = list(self.head.parameters()) if self.head_trained else []
        for p in [p for _, p in self.trained] + head:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            torch.distributed.all_reduce(p.grad)

    def _fit_head(self) -> None:
        """frozen-fit: least squares from CLIP image embeddings to the scaled VAE latent means of
        up to FIT_IMAGES training images (the first ones of the seed's order), with a small ridge."""
        order = np.random.default_rng([self.config.seed, 99]).permutation(len(self.samples))[:FIT_IMAGES]
        resolution = self.latent_shape[1] * 2 ** (len(self.vae.config.block_out_channels) - 1)
        to_vae = VaeImageTransform(resolution)
        features, targets = [], []
        with torch.no_grad():
            for start in range(0, len(order), 64):
                images = [decode_image(self.samples[i].image, str(self.samples[i].image))
                          for i in order[start:start + 64]]
                clip_in = torch.stack([self.preprocess(im) for im in images]).to(self.device)
                vae_in = torch.stack([to_vae(im) for im in images]).to(self.device)
                features.append(self.clip.encode_image(clip_in).float())
                latent = self.vae.encode(vae_in).latent_dist.mean * self.vae.config.scaling_factor
                targets.append(latent.float().flatten(1))
        x, y = torch.cat(features), torch.cat(targets)
        x1 = torch.cat([x, torch.ones(len(x), 1, device=x.device)], dim=1)
        ridge = 1e-3 * torch.eye(x1.shape[1], device=x.device) * x1.pow(2).mean()
        solution = torch.linalg.solve(x1.T @ x1 + ridge, x1.T @ y)  # (embed + 1, latent)
        with torch.no_grad():
            self.head.linear.weight.copy_(solution[:-1].T)
            self.head.linear.bias.copy_(solution[-1])
        residual = float(((x1 @ solution - y) ** 2).mean() / y.var())
        log.info("frozen-fit h_w: fitted on %d images, relative residual %.3f", len(x), residual)
        self.head_fit_residual = residual

    # -- checkpoints ------------------------------------------------------------------------------
    def save(self) -> None:
        """The run's folder: a local-dir: open_clip model, h_w, config, losses, resumable state."""
        if self.rank != 0:
            distributed.barrier()
            return
        from safetensors.torch import save_file

        from harness.results import git_commit

        save_local_dir(self.out, self.clip, self.model_cfg)
        head = {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
        atomic_write(self.out / "sds_head.safetensors", lambda p: save_file(head, str(p)))
        extra = {"base_clip": self.config.clip, "base_pretrained": self.config.pretrained,
                 "data_hash": data_hash(self.samples), "n_images": len(self.samples), "git_commit": git_commit(),
                 "step": self.step, "total_steps": self.total_steps, "processes": self.world,
                 "skipped_images": self.skipped_images, "latent_shape": list(self.latent_shape),
                 "trained_parameters": [n for n, _ in self.trained],
                 "head_fit_residual": getattr(self, "head_fit_residual", None)}
        config = dataclasses.asdict(self.config) | {"extra": extra}
        atomic_write_text(self.out / "finetune_config.json", json.dumps(config, indent=2, default=str) + "\n")
        atomic_write_text(self.out / "losses.csv", csv_text(self.history, list(self.history[0])) if self.history else "")
        # plain tensors, numbers and lists only: it loads back with torch.load(weights_only=True)
        trainer_state = {"step": self.step, "optimizer": self.optimizer.state_dict(), "history": self.history,
                         "skipped_images": self.skipped_images, "head": head,
                         "lr_schedule": self.lr_schedule.state_dict(), "grad_scaler": self.grad_scaler.state_dict(),
                         "trained": {n: p.detach().cpu() for n, p in self.trained}}
        atomic_write(self.out / "trainer_state.pt", lambda p: torch.save(trainer_state, p))
        distributed.barrier()

    def _load_state(self) -> None:
        path = self.out / "trainer_state.pt"
        if not path.is_file():
            raise HarnessError(f"--resume: {path} not found; nothing to resume in {self.out}")
        saved = json.loads((self.out / "finetune_config.json").read_text())
        mine = dataclasses.asdict(self.config)
        changed = [k for k in mine if k not in ("max_steps", "save_every", "workers", "device", "extra")
                   and saved.get(k) != mine[k]]
        if changed:
            raise HarnessError(f"--resume with different settings than the saved run: {changed}; "
                               "resume with the same options, or start a new --out")
        try:  # weights_only: a planted file cannot run code while it loads
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise HarnessError(f"--resume: {path} is not a trainer state this harness wrote ({type(err).__name__}: "
                               f"{str(err).splitlines()[0] if str(err) else ''}); start a new --out") from None
        names = dict(self.trained)
        with torch.no_grad():
            for name, value in state["trained"].items():
                names[name].copy_(value)
        self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_schedule.load_state_dict(state["lr_schedule"])
        self.grad_scaler.load_state_dict(state["grad_scaler"])
        self.step, self.history, self.skipped_images = state["step"], state["history"], state["skipped_images"]


def finetune(config: FinetuneConfig, resume: bool = False, progress: bool = True) -> Path:
    """Run (or resume) an SDS-CLIP fine-tuning; returns the output folder."""
    try:
        return Trainer(config).train(resume=resume, progress=progress)
    except torch.OutOfMemoryError as err:
        raise HarnessError(
            f"out of memory ({str(err).splitlines()[0]}). Try a smaller --batch-size with --grad-accum to keep "
            "the global batch, --sds-grad detached (no UNet backward), --grad-checkpointing, or bf16 on GPU."
        ) from err


# -- helpers --------------------------------------------------------------------------------------

def _model_config(name: str, model: torch.nn.Module, quick_gelu: bool) -> dict[str, Any]:
    """The open_clip model config to save beside the weights, activation included."""
    import open_clip

    if name.startswith("local-dir:"):
        cfg = json.loads((Path(name[len("local-dir:"):]) / "open_clip_config.json").read_text())["model_cfg"]
    else:  # hf-hub:org/repo, or an architecture name (open_clip spells ViT-B/32 as ViT-B-32)
        cfg = open_clip.get_model_config(name if name.startswith("hf-hub:") else name.replace("/", "-"))
    if cfg is None:
        raise HarnessError(f"cannot find the open_clip config of {name} to save with the fine-tuned weights")
    return {**cfg, "quick_gelu": bool(quick_gelu)}


def iter_losses(folder: Path) -> Iterator[dict[str, str]]:
    with open(Path(folder) / "losses.csv", newline="", encoding="utf-8") as f:
        yield from csv.DictReader(f)

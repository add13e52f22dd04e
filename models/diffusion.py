"""Diffusion scorer: Stable Diffusion's denoising error as an image-text matching score.

score(x, c) = - mean over timesteps t and noise draws eps of d(eps_theta(x_t, t, c), target),
x_0 = the VAE latent of the image (distribution mean, times the VAE's scaling factor),
x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, abar from the pipeline's scheduler config, and the
target eps (epsilon-prediction models) or v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0
(v-prediction models). d is the mean squared error over latent elements by default ("l2"), or
the mean absolute error ("l1").

The noise is shared: one eps per (timestep, draw), generated from the seed and used for every
image and caption of the run, or comparisons drown in variance (Li et al. 2023; Krojer et al.
2023). For items with several images (Winoground), each image's unconditional error (empty
prompt, same timestep and noise) is subtracted, as DiffusionITM does: some images are easier to
denoise whatever the caption, which would otherwise decide every image-side comparison. Within
one image the subtracted error is the same for every caption, so text-side decisions never change.

Speed: each image's latent and each caption's conditioning are computed once; (latent, caption,
timestep) triples from many items are batched into large UNet calls. For benchmarks whose metric
needs only the best caption per image (ARO, SugarCrepe, zero-shot), ``adaptive`` mode scores all
candidates on a few timesteps, keeps the best ``adaptive_keep`` and scores those on the rest
(Diffusion Classifier's pruning). In that mode only the order of an item's scores is meaningful.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.api import Comparisons, Item, Scorer, ScorerConfig, Text
from harness.errors import HarnessError, MissingWeightsError
from models.clip import autocast_dtype, device_description, resolve_device, weights_hash

log = logging.getLogger("harness")

OPTIONS = {
    "timesteps": "number of evenly spaced timesteps (default 10), or a list like 100,300,500",
    "noise_samples": "noise draws per timestep (default 1)",
    "distance": "l2 (mean squared error, default) or l1",
    "uncond": "on (default): subtract the empty-prompt error on items with several images; off",
    "adaptive": "off (default) or on: prune candidates after a first stage (argmax benchmarks only)",
    "adaptive_first": "timesteps of the first adaptive stage (default 3)",
    "adaptive_keep": "candidates kept for the second stage (default 2)",
    "resolution": "image size fed to the VAE (default: the UNet's sample size x the VAE factor)",
    "precision": "auto (fp16/bf16 autocast on GPU, fp32 on CPU), fp32, fp16, bf16",
    "compile": "true to torch.compile the UNet (default false)",
    "text_cache": "caption conditionings kept in memory (default 4096)",
}


def even_timesteps(count: int, train_steps: int) -> list[int]:
    """``count`` timesteps at the centres of equal slices of [0, train_steps)."""
    return [int((k + 0.5) * train_steps / count) for k in range(count)]


def _first_stage(count: int, first: int) -> list[int]:
    """Indices of ``first`` timesteps spread over a grid of ``count``, for the adaptive stage 1."""
    first = max(1, min(first, count))
    return sorted({int((k + 0.5) * count / first) for k in range(first)})


class _ImageTransform:
    """PIL image -> (3, r, r) tensor in [-1, 1]: shorter side resized to r, centre crop.
    A class (not a lambda) so that data-loader workers can pickle it."""

    def __init__(self, resolution: int) -> None:
        self.resolution = resolution

    def __call__(self, image: Any) -> torch.Tensor:
        from torchvision.transforms import functional as TF

        image = image.convert("RGB")
        image = TF.resize(image, self.resolution, interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
        image = TF.center_crop(image, [self.resolution, self.resolution])
        return TF.to_tensor(image) * 2.0 - 1.0


class DiffusionScorer(Scorer):
    """Options (``--opt key=value``): see OPTIONS. ``--model``: a diffusers Stable Diffusion
    pipeline, as a hub id in the local cache or a folder written by ``save_pretrained``."""

    family = "diffusion"

    def __init__(self, config: ScorerConfig) -> None:
        super().__init__(config)
        options = dict(config.options)
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise HarnessError(f"unknown diffusion scorer option(s) {unknown}; valid: {', '.join(OPTIONS)}")
        if config.pretrained:
            raise HarnessError("--pretrained is not used by the diffusion scorer: --model names the whole "
                               "pipeline (a hub id or a save_pretrained folder)")
        self.device = resolve_device(config.device)
        self.amp_dtype = autocast_dtype(self.device, str(options.get("precision", "auto")))
        self.vae, self.text_encoder, self.tokenizer, self.unet, scheduler = load_pipeline(config.model)
        self.prediction_type = scheduler.get("prediction_type", "epsilon")
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise HarnessError(f"{config.model}: prediction_type {self.prediction_type!r} is not supported "
                               "(epsilon and v_prediction are)")
        betas = _betas(scheduler)
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        train_steps = len(betas)
        self.timesteps = _parse_timesteps(options.get("timesteps", 10), train_steps)
        self.noise_samples = _positive_int(options.get("noise_samples", 1), "noise_samples")
        self.distance = str(options.get("distance", "l2"))
        if self.distance not in ("l2", "l1"):
            raise HarnessError(f"distance {self.distance!r} is not one of l2, l1")
        self.uncond = _on_off(options.get("uncond", "on"), "uncond")
        self.adaptive = _on_off(options.get("adaptive", "off"), "adaptive")
        self.adaptive_first = _positive_int(options.get("adaptive_first", 3), "adaptive_first")
        self.adaptive_keep = _positive_int(options.get("adaptive_keep", 2), "adaptive_keep")
        self.vae_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        default_resolution = self.unet.config.sample_size * self.vae_factor
        self.resolution = _positive_int(options.get("resolution", default_resolution), "resolution")
        if self.resolution % self.vae_factor:
            raise HarnessError(f"resolution {self.resolution} is not a multiple of the VAE's factor {self.vae_factor}")
        self._weights = hashlib.sha256("".join(
            weights_hash(m) for m in (self.unet, self.vae, self.text_encoder)).encode()).hexdigest()[:24]
        for module in (self.vae, self.text_encoder, self.unet):
            module.to(self.device).eval().requires_grad_(False)
        if str(options.get("compile", "false")).lower() in ("1", "true", "yes", "on"):
            self.unet = torch.compile(self.unet)
        self._latents: dict[str, torch.Tensor] = {}
        self._conditions: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._text_cache_size = _positive_int(options.get("text_cache", 4096), "text_cache")
        self._noise: torch.Tensor | None = None  # (timesteps, draws, C, H, W), made on first use
        self._comparisons: Comparisons = "matrix"
        self.unet_passes = 0

    # -- identity ---------------------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        return {
            "family": self.family, "model": self.config.model, "weights": self._weights,
            "prediction_type": self.prediction_type, "timesteps": self.timesteps,
            "noise_samples": self.noise_samples, "seed": self.config.seed, "distance": self.distance,
            "uncond": self.uncond, "resolution": self.resolution,
            "adaptive": [self.adaptive_first, self.adaptive_keep] if self.adaptive else False,
            "precision": str(self.amp_dtype).replace("torch.", "amp-") if self.amp_dtype else "fp32",
        }

    def describe(self) -> dict[str, str]:
        return {"model": self.config.model, "pretrained": ""}

    @property
    def device_name(self) -> str:
        return device_description(self.device)

    def report(self) -> dict[str, Any]:
        return {"unet_passes": self.unet_passes}

    def prepare(self, comparisons: Comparisons) -> None:
        self._comparisons = comparisons
        if self.adaptive and comparisons != "text_argmax":
            log.warning("adaptive mode needs a benchmark that only takes the best text per image; this one "
                        "compares whole matrices, so every candidate gets the full schedule")

    # -- encoding ---------------------------------------------------------------------------------
    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def image_transform(self) -> Callable[[Any], torch.Tensor]:
        return _ImageTransform(self.resolution)

    def add_images(self, refs: Sequence[str], pixels: torch.Tensor) -> None:
        with torch.inference_mode(), self._autocast():
            latents = self.vae.encode(pixels.to(self.device)).latent_dist.mean
        latents = latents.float() * self.vae.config.scaling_factor
        for ref, latent in zip(refs, latents.cpu()):
            self._latents[ref] = latent

    def has_image(self, ref: str) -> bool:
        return ref in self._latents

    def clear_images(self) -> None:
        self._latents.clear()

    def _condition_texts(self, texts: Sequence[str]) -> None:
        """Text-encoder hidden states of the texts not yet cached (a bounded cache: COCO-Order has
        125,000 captions and each conditioning is 77 x width floats)."""
        new = [t for t in dict.fromkeys(texts) if t not in self._conditions]
        for start in range(0, len(new), self.config.batch_size):
            batch = new[start:start + self.config.batch_size]
            ids = self.tokenizer(batch, padding="max_length", max_length=self.tokenizer.model_max_length,
                                 truncation=True, return_tensors="pt").input_ids.to(self.device)
            with torch.inference_mode(), self._autocast():
                hidden = self.text_encoder(ids)[0]
            for text, h in zip(batch, hidden.float()):
                self._conditions[text] = h
        for text in texts:
            self._conditions.move_to_end(text)
        keep = max(self._text_cache_size, len(set(texts)) + 1)
        while len(self._conditions) > keep:
            self._conditions.popitem(last=False)

    def _noise_for(self, shape: tuple[int, ...]) -> torch.Tensor:
        """The run's shared noise, one draw per (timestep, sample), from the seed alone."""
        if self._noise is None or tuple(self._noise.shape[2:]) != shape:
            generator = torch.Generator().manual_seed(self.config.seed)
            self._noise = torch.randn((len(self.timesteps), self.noise_samples, *shape), generator=generator)
        return self._noise

    # -- scoring ----------------------------------------------------------------------------------
    def _errors(self, pairs: list[tuple[str, str]], steps: list[int]) -> torch.Tensor:
        """Denoising error of each (image ref, text) pair at each timestep index in ``steps``,
        averaged over noise draws: a (len(pairs), len(steps)) tensor. UNet calls batch
        ``batch_size`` triples of (pair, timestep, draw) whatever items they come from."""
        out = torch.zeros(len(pairs), len(steps), dtype=torch.float64)
        if not pairs:
            return out
        shape = tuple(self._latents[pairs[0][0]].shape)
        noise = self._noise_for(shape)
        triples = [(p, k, s) for p in range(len(pairs)) for k in range(len(steps)) for s in range(self.noise_samples)]
        for start in range(0, len(triples), self.config.batch_size):
            batch = triples[start:start + self.config.batch_size]
            x0 = torch.stack([self._latents[pairs[p][0]] for p, _, _ in batch])
            eps = torch.stack([noise[steps[k], s] for _, k, s in batch])
            t = torch.tensor([self.timesteps[steps[k]] for _, k, _ in batch])
            abar = self.alphas_cumprod[t].float().view(-1, 1, 1, 1)
            x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
            target = eps if self.prediction_type == "epsilon" else abar.sqrt() * eps - (1 - abar).sqrt() * x0
            cond = torch.stack([self._conditions[pairs[p][1]] for p, _, _ in batch])
            with torch.inference_mode(), self._autocast():
                pred = self.unet(x_t.to(self.device), t.to(self.device), encoder_hidden_states=cond.to(self.device)).sample
            diff = pred.float().cpu() - target
            err = diff.pow(2) if self.distance == "l2" else diff.abs()
            per_triple = err.flatten(1).mean(dim=1).double()
            for (p, k, _), e in zip(batch, per_triple):
                out[p, k] += e / self.noise_samples
            self.unet_passes += len(batch)
        return out

    def score(self, items: Sequence[Item]) -> list[np.ndarray]:
        texts = {item_text: _prompt(item_text) for item in items for item_text in item.texts}
        self._condition_texts([*dict.fromkeys(texts.values()), ""])
        all_steps = list(range(len(self.timesteps)))
        adaptive = [self._adaptive_applies(item) for item in items]

        # stage 1 (or the only stage): every pair needed, on all timesteps or the first-stage ones
        first = _first_stage(len(self.timesteps), self.adaptive_first)
        full_pairs, first_pairs = {}, {}
        for item, pruned in zip(items, adaptive):
            target = first_pairs if pruned else full_pairs
            for ref in item.images:
                for t in item.texts:
                    target[(ref, texts[t])] = None
                if self.uncond and len(item.images) > 1:
                    full_pairs[(ref, "")] = None
        full = dict(zip(full_pairs, self._errors(list(full_pairs), all_steps).mean(dim=1)))
        staged = self._errors(list(first_pairs), first)
        first_errors = dict(zip(first_pairs, staged.mean(dim=1)))
        first_rows = dict(zip(first_pairs, staged))

        # stage 2: the survivors of each adaptive item on the remaining timesteps
        rest = [k for k in all_steps if k not in first]
        survivors: dict[tuple[str, str], None] = {}
        for item, pruned in zip(items, adaptive):
            if pruned:
                ranked = sorted(item.texts, key=lambda t: first_errors[(item.images[0], texts[t])])
                for t in ranked[:self.adaptive_keep]:
                    survivors[(item.images[0], texts[t])] = None
        second = dict(zip(survivors, self._errors(list(survivors), rest)))

        out = []
        for item, pruned in zip(items, adaptive):
            if not pruned:
                matrix = np.array([[-float(full[(ref, texts[t])]) for t in item.texts] for ref in item.images])
                if self.uncond and len(item.images) > 1:
                    matrix += np.array([[float(full[(ref, "")])] for ref in item.images])
                out.append(matrix)
            else:
                out.append(self._adaptive_row(item, texts, first_errors, first_rows, second, len(first))[None])
        return out

    def _adaptive_applies(self, item: Item) -> bool:
        return (self.adaptive and self._comparisons == "text_argmax" and len(item.images) == 1
                and len(item.texts) > self.adaptive_keep and len(self.timesteps) > 1)

    def _adaptive_row(self, item, texts, first_errors, first_rows, second, n_first) -> np.ndarray:
        """Survivors carry minus their error over the whole schedule; pruned candidates sit below
        every survivor, in their first-stage order (their distance below the worst survivor is
        their first-stage deficit)."""
        ref = item.images[0]
        scores = {}
        for t in item.texts:
            pair = (ref, texts[t])
            if pair in second:
                total = first_rows[pair].sum() + second[pair].sum()
                scores[t] = -float(total) / (n_first + len(second[pair]))
        worst = min(scores.values())
        best_first = min(float(first_errors[(ref, texts[t])]) for t in scores)
        row = []
        for t in item.texts:
            if t in scores:
                row.append(scores[t])
            else:
                deficit = float(first_errors[(ref, texts[t])]) - best_first
                row.append(worst - deficit - 1e-6)
        return np.array(row)


def _prompt(text: Text) -> str:
    """A Prompts ensemble is scored by its first prompt: every prompt would multiply the cost."""
    return text if isinstance(text, str) else text.texts[0]


def _betas(scheduler: dict[str, Any]) -> torch.Tensor:
    """The noise schedule of a diffusers scheduler config."""
    steps = int(scheduler.get("num_train_timesteps", 1000))
    kind = scheduler.get("beta_schedule", "linear")
    start, end = float(scheduler.get("beta_start", 0.0001)), float(scheduler.get("beta_end", 0.02))
    if scheduler.get("trained_betas") is not None:
        return torch.tensor(scheduler["trained_betas"], dtype=torch.float64)
    if kind == "linear":
        return torch.linspace(start, end, steps, dtype=torch.float64)
    if kind == "scaled_linear":  # Stable Diffusion's
        return torch.linspace(start ** 0.5, end ** 0.5, steps, dtype=torch.float64) ** 2
    raise HarnessError(f"beta_schedule {kind!r} is not supported (linear, scaled_linear)")


def _parse_timesteps(value: Any, train_steps: int) -> list[int]:
    text = str(value).strip()
    if "," in text or text.startswith("["):
        steps = [int(v) for v in text.strip("[]").split(",") if v.strip()]
        bad = [t for t in steps if not 0 <= t < train_steps]
        if bad or not steps:
            raise HarnessError(f"timesteps {bad or text} outside 0..{train_steps - 1}")
        return steps
    return even_timesteps(_positive_int(text, "timesteps"), train_steps)


def _positive_int(value: Any, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError) as err:
        raise HarnessError(f"{name} must be a positive integer, got {value!r}") from err
    if number < 1:
        raise HarnessError(f"{name} must be a positive integer, got {value!r}")
    return number


def _on_off(value: Any, name: str) -> bool:
    text = str(value).strip().lower()
    if text in ("on", "true", "1", "yes"):
        return True
    if text in ("off", "false", "0", "no"):
        return False
    raise HarnessError(f"{name} must be on or off, got {value!r}")


def load_pipeline(model: str):
    """(vae, text encoder, tokenizer, unet, scheduler config) of a Stable Diffusion pipeline, from
    a folder or a hub id in the local cache, never from the network."""
    import diffusers
    import transformers
    from huggingface_hub import constants

    folder = Path(model).expanduser()
    source = str(folder) if folder.is_dir() else model
    if folder.is_dir():
        missing = [s for s in ("vae", "text_encoder", "tokenizer", "unet", "scheduler") if not (folder / s).is_dir()]
        if missing:
            raise MissingWeightsError(f"{folder} is not a Stable Diffusion pipeline folder: it lacks {missing} "
                                      "(a folder written by StableDiffusionPipeline.save_pretrained has them all)")
    elif model.startswith(("/", ".", "~")) or "/" not in model or model.count("/") > 1:
        raise MissingWeightsError(f"--model {model!r}: no such pipeline folder, and not a hub id like "
                                  "stabilityai/stable-diffusion-2-1-base")
    # fp32 parameters whatever the stored precision (fp16 weights, as the toy models keep, would
    # otherwise load as fp16 and fail on CPU); mixed precision comes from autocast at run time.
    try:
        vae = diffusers.AutoencoderKL.from_pretrained(source, subfolder="vae", local_files_only=True,
                                                      torch_dtype=torch.float32)
        unet = diffusers.UNet2DConditionModel.from_pretrained(source, subfolder="unet", local_files_only=True,
                                                              torch_dtype=torch.float32)
        text_encoder = transformers.CLIPTextModel.from_pretrained(source, subfolder="text_encoder",
                                                                  local_files_only=True, dtype=torch.float32)
        tokenizer = transformers.CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", local_files_only=True)
        scheduler = dict(diffusers.DDPMScheduler.load_config(source, subfolder="scheduler", local_files_only=True))
    except (OSError, ValueError, EnvironmentError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MissingWeightsError(
            f"cannot load the pipeline {model!r} offline ({first[:300]}). Looked in "
            f"{'that folder' if folder.is_dir() else f'the Hugging Face cache {constants.HF_HUB_CACHE}'}. Download it "
            f"once where there is network (`huggingface-cli download {model}`), or pass a folder written by "
            "StableDiffusionPipeline.save_pretrained."
        ) from err
    if unet.config.cross_attention_dim != text_encoder.config.hidden_size:
        raise HarnessError(f"{model}: the UNet attends to width {unet.config.cross_attention_dim} but the text "
                           f"encoder gives {text_encoder.config.hidden_size}; the components do not belong together")
    if unet.config.in_channels != vae.config.latent_channels:
        raise HarnessError(f"{model}: the UNet takes {unet.config.in_channels} channels but the VAE makes "
                           f"{vae.config.latent_channels}")
    return vae, text_encoder, tokenizer, unet, scheduler

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
from typing import Any

import numpy as np
import torch

from harness.api import Comparisons, Item, Scorer, ScorerConfig, Text
from harness.devices import (
    PRECISIONS, autocast, autocast_dtype, device_description, precision_label, resolve_device, weights_hash,
)
from harness.errors import HarnessError
from harness.options import Bool, Choice, Int, Option
from harness.results import portable_model_name
from models import toy_models
from models.stable_diffusion import VaeImageTransform, load_pipeline, load_scheduler, token_ids

log = logging.getLogger("harness")


class Timesteps:
    """``N`` (that many evenly spaced timesteps) or a list ``t1,t2,...`` of distinct timesteps."""

    label = "N or t1,t2,..."

    def __call__(self, value: Any) -> int | tuple[int, ...]:
        if isinstance(value, int) and not isinstance(value, bool):
            values: list[Any] = [value]
            listed = False
        elif isinstance(value, (list, tuple)):
            values, listed = list(value), True
        else:
            text = str(value).strip().strip("[]")
            listed = "," in text
            values = [v.strip() for v in text.split(",") if v.strip()] if listed else [text]
        try:
            numbers = [int(v) for v in values]
        except (TypeError, ValueError):
            raise ValueError(f"expected a count or a comma-separated list of whole numbers, got {value!r}") from None
        if not numbers:
            raise ValueError("expected at least one timestep")
        if not listed:
            if numbers[0] < 1:
                raise ValueError(f"a count of timesteps must be at least 1, got {numbers[0]}")
            return numbers[0]
        if any(t < 0 for t in numbers):
            raise ValueError(f"timesteps must be >= 0, got {[t for t in numbers if t < 0]}")
        if len(set(numbers)) != len(numbers):
            raise ValueError(f"timesteps repeat ({sorted({t for t in numbers if numbers.count(t) > 1})}): each "
                             "would be scored twice")
        return tuple(numbers)


def even_timesteps(count: int, train_steps: int) -> list[int]:
    """``count`` timesteps at the centres of equal slices of [0, train_steps)."""
    return [int((k + 0.5) * train_steps / count) for k in range(count)]


def _first_stage(count: int, first: int) -> list[int]:
    """Indices of ``first`` timesteps spread over a grid of ``count``, for the adaptive stage 1."""
    first = max(1, min(first, count))
    return sorted({int((k + 0.5) * count / first) for k in range(first)})


class DiffusionScorer(Scorer):
    """``--model``: a diffusers Stable Diffusion pipeline, as a hub id in the local cache or a folder
    written by ``save_pretrained``. Options: ``harness ls diffusion``."""

    family = "diffusion"
    default_model = "toy:sd"
    OPTIONS = (
        Option("batch_size", Int(1), 64, "UNet passes per call (also images per VAE call and captions per "
                                         "text-encoder call)"),
        Option("timesteps", Timesteps(), 10, "N evenly spaced timesteps, or a list like 100,500,900"),
        Option("noise_samples", Int(1), 1, "noise draws per timestep"),
        Option("distance", Choice("l2", "l1"), "l2", "error per timestep: mean squared (l2) or mean absolute (l1)"),
        Option("uncond", Bool(), True, "subtract the empty-prompt error on items with several images"),
        Option("adaptive", Bool(), False, "prune candidates after a first stage (benchmarks that only need "
                                          "the best text per image)"),
        Option("adaptive_first", Int(1), 3, "timesteps of the first adaptive stage"),
        Option("adaptive_keep", Int(1), 2, "candidates kept for the second adaptive stage"),
        Option("resolution", Int(8), None, "image size fed to the VAE (default: the UNet's sample size x the "
                                           "VAE's factor)"),
        Option("precision", Choice(*PRECISIONS), "auto", "auto (bf16/fp16 autocast on GPU, fp32 on CPU), fp32, "
                                                         "fp16, bf16"),
        Option("compile", Bool(), False, "torch.compile the UNet"),
        Option("text_cache", Int(1), 4096, "caption conditionings kept in memory"),
    )

    def __init__(self, config: ScorerConfig) -> None:
        super().__init__(config)
        options = self.options
        if config.pretrained:
            raise HarnessError("--pretrained is not used by the diffusion scorer: --model names the whole "
                               "pipeline (a hub id or a save_pretrained folder)")
        self.device = resolve_device(config.device)
        self.amp_dtype = autocast_dtype(self.device, options["precision"])
        source = str(toy_models.toy_folder(config.model)) if toy_models.is_toy(config.model) else config.model
        # the schedule first: options that depend on it fail before any weights load
        self.scheduler = load_scheduler(source)
        self.prediction_type = self.scheduler.config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise HarnessError(f"{config.model}: prediction_type {self.prediction_type!r} is not supported "
                               "(epsilon and v_prediction are)")
        self.timesteps = _timesteps(options["timesteps"], self.scheduler.config.num_train_timesteps)
        self.pipeline = load_pipeline(source, self.scheduler)
        self.vae, self.text_encoder, self.tokenizer, self.unet = (
            self.pipeline.vae, self.pipeline.text_encoder, self.pipeline.tokenizer, self.pipeline.unet)
        self.noise_samples = options["noise_samples"]
        self.batch_size = options["batch_size"]
        self.distance = options["distance"]
        self.uncond = options["uncond"]
        self.adaptive = options["adaptive"]
        self.adaptive_first = options["adaptive_first"]
        self.adaptive_keep = options["adaptive_keep"]
        self.vae_factor = self.pipeline.vae_factor
        self.resolution = options["resolution"] or self.unet.config.sample_size * self.vae_factor
        if self.resolution % self.vae_factor:
            raise HarnessError(f"resolution {self.resolution} is not a multiple of the VAE's factor {self.vae_factor}")
        self._weights = hashlib.sha256("".join(weights_hash(m) for m in self.pipeline.modules()).encode()
                                       ).hexdigest()[:24]
        for module in self.pipeline.modules():
            module.to(self.device).eval().requires_grad_(False)
        if options["compile"]:
            self.unet = torch.compile(self.unet)
        self._latents: dict[str, torch.Tensor] = {}
        self._conditions: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._text_cache_size = options["text_cache"]
        self._noise: torch.Tensor | None = None  # (timesteps, draws, C, H, W), made on first use
        self._comparisons: Comparisons = "matrix"
        self.unet_passes = 0

    @classmethod
    def download(cls, spec: str) -> list[str]:
        """A pipeline's hub id (e.g. stabilityai/stable-diffusion-2-1-base) into the hub cache."""
        from harness import hub

        return hub.download_model_repo(spec)

    # -- identity ---------------------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        return {
            "family": self.family, "model": self.config.model, "weights": self._weights,
            "prediction_type": self.prediction_type, "timesteps": self.timesteps,
            "noise_samples": self.noise_samples, "seed": self.config.seed, "distance": self.distance,
            "uncond": self.uncond, "resolution": self.resolution,
            "adaptive": [self.adaptive_first, self.adaptive_keep] if self.adaptive else False,
            "precision": precision_label(self.amp_dtype),
        }

    def describe(self) -> dict[str, str]:
        return {"model": portable_model_name(self.config.model, self._weights), "pretrained": ""}

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
        return autocast(self.device, self.amp_dtype)

    def image_transform(self) -> Callable[[Any], torch.Tensor]:
        return VaeImageTransform(self.resolution)

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
        for start in range(0, len(new), self.batch_size):
            batch = new[start:start + self.batch_size]
            ids = token_ids(self.tokenizer, batch).to(self.device)
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
        for start in range(0, len(triples), self.batch_size):
            batch = triples[start:start + self.batch_size]
            x0 = torch.stack([self._latents[pairs[p][0]] for p, _, _ in batch])
            eps = torch.stack([noise[steps[k], s] for _, k, s in batch])
            t = torch.tensor([self.timesteps[steps[k]] for _, k, _ in batch])
            x_t = self.scheduler.add_noise(x0, eps, t)
            target = eps if self.prediction_type == "epsilon" else self.scheduler.get_velocity(x0, eps, t)
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


def _timesteps(value: int | tuple[int, ...], train_steps: int) -> list[int]:
    """The timesteps of a ``timesteps`` option for a schedule of ``train_steps`` steps."""
    if isinstance(value, int):
        if value > train_steps:
            raise HarnessError(f"--opt timesteps={value}: the schedule has only {train_steps} timesteps, so some "
                               f"would repeat; ask for at most {train_steps}")
        return even_timesteps(value, train_steps)
    outside = [t for t in value if not 0 <= t < train_steps]
    if outside:
        raise HarnessError(f"--opt timesteps: {outside} outside 0..{train_steps - 1}")
    return list(value)

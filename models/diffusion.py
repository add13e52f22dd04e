"""Diffusion scorer: Stable Diffusion's denoising error as an image-text matching score.

score(x, c) = - mean over timesteps t and noise draws eps of d(eps_theta(x_t, t, c), target),
x_0 = the VAE latent of the image (times the VAE's scaling factor), x_t = sqrt(abar_t) x_0 +
sqrt(1 - abar_t) eps with abar from the pipeline's scheduler config, and the target eps
(epsilon-prediction models) or v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 (v-prediction models).

How x_0, t, d, the unconditional term, the image transform and the precision are chosen is a
*protocol* (``--opt protocol=...``), each a published recipe read from its authors' code:

- ``harness`` (default): x_0 the VAE posterior mean; 10 timesteps at the centres of equal slices
  of the schedule; d the mean squared error; on items with several images the empty prompt's
  error is subtracted; shorter side resized and centre-cropped; autocast on GPU.
- ``diffusion-itm``: DiffusionITM (Krojer et al. 2023; github.com/McGill-NLP/diffusion-itm, whose
  scoring loop is in its diffusers fork McGill-NLP/diffusers @ 8ad50fd,
  src/diffusers/pipelines/stable_diffusion/pipeline_stable_diffusion_img2img.py): a fresh VAE
  posterior sample for every UNet pass (``prepare_latents``, l. 571, runs once per timestep in
  ``__call__``, l. 731-734, and ``diffusion_itm.py`` calls the pipeline once per caption, l. 34-40);
  timesteps ``range(10, 990, 1000 // N)`` (l. 729-730); d the Euclidean norm of eps - eps_hat,
  not squared (l. 751-757); no unconditional term unless ``--img_retrieval`` (diffusion_itm.py
  l. 40, 212); images squashed to 512 x 512 (datasets_loading.py l. 278-281, 64-72); fp16 (diffusion_itm.py
  l. 56, 59).
- ``diffusion-classifier``: Diffusion Classifier (Li et al. 2023;
  github.com/diffusion-classifier/diffusion-classifier): x_0 the posterior mean
  (run_winoground.py l. 174-177, eval_prob_adaptive.py l. 239-240); timesteps
  ``range(T // N // 2, T, T // N)`` (run_winoground.py l. 36, eval_prob_adaptive.py l. 58-59),
  N = 1000 as its README's Winoground command (``--t_interval 1``); d the mean squared error
  (run_winoground.py l. 67, eval_prob_adaptive.py l. 112-113); no unconditional term; shorter side
  resized (bicubic) and centre-cropped (eval_prob_adaptive.py l. 28-36); fp16 (l. 142).

A protocol only fills the options the user did not give: an explicit option always wins
(``--opt protocol=diffusion-itm --opt vae_latent=mean``). The resolved values, not the protocol
name alone, are what the fingerprint records; result rows name the protocol and every explicit
departure from it in their ``pretrained`` column (``protocol=diffusion-itm,vae_latent=mean``).

The noise is shared in every protocol: one eps per (timestep, draw), generated from the seed and
used for every image and caption of the run, or comparisons drown in variance (both reference
codes share theirs the same way). A VAE posterior sample, where a protocol asks for one, is
``scaling_factor * (mean + std * n)`` with n drawn from a ``torch.Generator`` seeded by
``vae_sample_seed(seed, ref, ...)``: a hash of the run's seed and the image's ref (and, per pass,
the caption, the timestep and the draw), so resuming, batch size and process count never change it.

For items with several images (Winoground) the harness protocol subtracts each image's
unconditional error (empty prompt, same timestep, noise and latent): some images are easier to
denoise whatever the caption, which would otherwise decide every image-side comparison. With a
latent shared by an image's captions the subtracted error is the same for every caption, so
text-side decisions never change.

Speed: each image's latent and each caption's conditioning are computed once; (latent, caption,
timestep) triples from many items are batched into large UNet calls. For benchmarks whose metric
needs only the best caption per image (ARO, SugarCrepe, zero-shot), ``adaptive`` mode scores all
candidates on a few timesteps, keeps the best ``adaptive_keep`` and scores those on the rest
(Diffusion Classifier's two-stage pruning, eval_prob_adaptive.py l. 61-89). In that mode only the
order of an item's scores is meaningful.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
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

DISTANCES = ("l2", "l1", "huber", "l2-norm")
GRIDS = ("even", "diffusion-itm", "diffusion-classifier")
VAE_LATENTS = ("mean", "sample", "sample-per-pass")
PREPROCESSING = ("crop", "squash")

# What each protocol sets unless the user gives the option. Sources: the module docstring.
PROTOCOLS: dict[str, dict[str, Any]] = {
    "harness": {"timesteps": 10, "timestep_grid": "even", "distance": "l2", "vae_latent": "mean",
                "uncond": True, "preprocess": "crop", "precision": "auto"},
    "diffusion-itm": {"timesteps": 10, "timestep_grid": "diffusion-itm", "distance": "l2-norm",
                      "vae_latent": "sample-per-pass", "uncond": False, "preprocess": "squash",
                      "precision": "fp16"},
    "diffusion-classifier": {"timesteps": 1000, "timestep_grid": "diffusion-classifier", "distance": "l2",
                             "vae_latent": "mean", "uncond": False, "preprocess": "crop", "precision": "fp16"},
}
PROTOCOL_OPTIONS = tuple(PROTOCOLS["harness"])


class Timesteps:
    """``N`` (that many timesteps on the protocol's grid) or a list ``t1,t2,...`` of distinct timesteps."""

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


def timestep_grid(count: int, train_steps: int, grid: str) -> list[int]:
    """The timesteps a count means on each protocol's grid.

    - ``even``: centres of equal slices (the harness).
    - ``diffusion-itm``: ``range(10, 990, 1000 // count)``, DiffusionITM's grid (its diffusers fork,
      pipeline_stable_diffusion_img2img.py l. 729-730), written for any schedule length T as
      ``range(T // 100, T - T // 100, T // count)``. It need not hold ``count`` timesteps: 50 gives 49.
    - ``diffusion-classifier``: ``range(T // count // 2, T, T // count)[:count]``, Diffusion
      Classifier's grid (eval_prob_adaptive.py l. 58-59; run_winoground.py l. 36 with
      t_interval = T / count).
    """
    if grid == "even":
        return even_timesteps(count, train_steps)
    stride = train_steps // count
    if grid == "diffusion-itm":
        return list(range(train_steps // 100, train_steps - train_steps // 100, stride))
    if grid == "diffusion-classifier":
        return list(range(stride // 2, train_steps, stride))[:count]
    raise HarnessError(f"unknown timestep grid {grid!r}; one of {', '.join(GRIDS)}")


def first_stage(count: int, first: int, grid: str) -> list[int]:
    """Indices into a grid of ``count`` timesteps of the ``first`` scored in the adaptive stage 1.
    Diffusion Classifier's grid takes its own choice (eval_prob_adaptive.py l. 65); the others
    spread them evenly."""
    first = max(1, min(first, count))
    if grid == "diffusion-classifier":
        stride = count // first
        return list(range(count))[stride // 2::stride][:first]
    return sorted({int((k + 0.5) * count / first) for k in range(first)})


def vae_sample_seed(seed: int, *parts: str | int) -> int:
    """The generator seed of one VAE posterior sample: the first 8 bytes (little-endian, top bit
    cleared) of the SHA-256 of the run's seed and ``parts`` (the image's ref; per pass also the
    caption, the timestep and the draw), joined by the unit separator U+001F."""
    text = "\x1f".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little") & (2 ** 63 - 1)


def denoising_error(pred: torch.Tensor, target: torch.Tensor, distance: str) -> torch.Tensor:
    """Per-sample error between a batch of UNet outputs and their targets (float32, on one device)."""
    diff = pred - target
    if distance == "l2":
        return diff.pow(2).flatten(1).mean(dim=1)
    if distance == "l1":
        return diff.abs().flatten(1).mean(dim=1)
    if distance == "huber":  # Diffusion Classifier's --loss huber: F.huber_loss, delta 1, mean
        return torch.nn.functional.huber_loss(pred, target, reduction="none", delta=1.0).flatten(1).mean(dim=1)
    if distance == "l2-norm":  # DiffusionITM: torch.norm(noise - noise_pred, p=2) over the flat latent
        return diff.flatten(1).norm(dim=1)
    raise HarnessError(f"unknown distance {distance!r}; one of {', '.join(DISTANCES)}")


@dataclass(frozen=True)
class ProtocolSettings:
    """A protocol's settings merged with the options a user gave (explicit wins)."""

    protocol: str
    values: dict[str, Any]  # every name in PROTOCOL_OPTIONS -> its resolved value
    departures: dict[str, Any]  # the explicit options whose value differs from the protocol's

    @property
    def label(self) -> str:
        """How result rows name it: ``protocol=NAME`` and each departure, ``,key=value``."""
        parts = [f"protocol={self.protocol}"]
        for key, value in self.departures.items():
            shown = ",".join(str(t) for t in value) if isinstance(value, tuple) else \
                str(value).lower() if isinstance(value, bool) else str(value)
            parts.append(f"{key}={shown}")
        return ",".join(parts)


def protocol_settings(protocol: str, options: Mapping[str, Any]) -> ProtocolSettings:
    """Fill the protocol-governed options the user left unset (None) from ``PROTOCOLS[protocol]``."""
    if protocol not in PROTOCOLS:
        raise HarnessError(f"--opt protocol={protocol!r}: one of {', '.join(PROTOCOLS)}")
    defaults = PROTOCOLS[protocol]
    values, departures = {}, {}
    for key in PROTOCOL_OPTIONS:
        given = options.get(key)
        values[key] = defaults[key] if given is None else given
        if given is not None and given != defaults[key]:
            departures[key] = given
    return ProtocolSettings(protocol, values, departures)


class SquashTransform:
    """PIL image -> (3, r, r) tensor in [-1, 1], resized to r x r whatever its aspect (bicubic, PIL's
    default for RGB images): DiffusionITM's ``img.resize((512, 512))`` then ``diffusers_preprocess``
    (datasets_loading.py l. 278-281, 64-72). A class so that data-loader workers can pickle it."""

    def __init__(self, resolution: int) -> None:
        self.resolution = resolution

    def __call__(self, image: Any) -> torch.Tensor:
        from PIL import Image
        from torchvision.transforms import functional as TF

        image = image.convert("RGB").resize((self.resolution, self.resolution), Image.Resampling.BICUBIC)
        return TF.to_tensor(image) * 2.0 - 1.0


# A pair's key in the error tables: (image ref, prompt, sample tag). The tag names the caption
# whose per-pass VAE samples the pass uses ("" unless vae_latent is sample-per-pass).
Pair = tuple[str, str, str]


class DiffusionScorer(Scorer):
    """``--model``: a diffusers Stable Diffusion pipeline, as a hub id in the local cache or a folder
    written by ``save_pretrained``. Options: ``harness ls diffusion``; protocols: the module docstring."""

    family = "diffusion"
    default_model = "toy:sd"
    OPTIONS = (
        Option("protocol", Choice(*PROTOCOLS), "harness",
               "a published recipe: it sets every option whose help ends '(protocol: ...)', there listed "
               "for harness, diffusion-itm, diffusion-classifier in that order, unless the option is given "
               "(README: Diffusion score protocols)"),
        Option("batch_size", Int(1), 64, "UNet passes per call (also images per VAE call and captions per "
                                         "text-encoder call)"),
        Option("timesteps", Timesteps(), None, "N timesteps on the grid of timestep_grid, or a list like "
                                               "100,500,900 (protocol: 10, 10, 1000)"),
        Option("timestep_grid", Choice(*GRIDS), None, "where N timesteps fall: even (centres of equal slices), "
                                                      "diffusion-itm, diffusion-classifier (protocol: even, diffusion-itm, "
                                                      "diffusion-classifier)"),
        Option("noise_samples", Int(1), 1, "noise draws per timestep"),
        Option("distance", Choice(*DISTANCES), None, "error per timestep: l2 = mean squared, l1 = mean absolute, "
                                                     "huber = mean Huber (delta 1), l2-norm = Euclidean norm "
                                                     "(protocol: l2, l2-norm, l2)"),
        Option("vae_latent", Choice(*VAE_LATENTS), None, "image latent: posterior mean, one posterior sample "
                                                         "per image, or a fresh one per UNet pass, drawn from "
                                                         "the seed (protocol: mean, sample-per-pass, mean)"),
        Option("uncond", Bool(), None, "subtract the empty-prompt error (on items with several images; on every "
                                       "item with sample-per-pass) (protocol: true, false, false)"),
        Option("preprocess", Choice(*PREPROCESSING), None, "crop: shorter side resized, centre crop; squash: "
                                                           "resized to a square (protocol: crop, squash, crop)"),
        Option("adaptive", Bool(), False, "prune candidates after a first stage (benchmarks that only need "
                                          "the best text per image)"),
        Option("adaptive_first", Int(1), 3, "timesteps of the first adaptive stage"),
        Option("adaptive_keep", Int(1), 2, "candidates kept for the second adaptive stage"),
        Option("resolution", Int(8), None, "image size fed to the VAE (default: the UNet's sample size x the "
                                           "VAE's factor)"),
        Option("precision", Choice(*PRECISIONS), None, "auto (bf16/fp16 autocast on GPU, fp32 on CPU), fp32, "
                                                       "fp16, bf16 (protocol: auto, fp16, fp16; fp16 from a "
                                                       "protocol means fp32 on the CPU)"),
        Option("compile", Bool(), False, "torch.compile the UNet"),
        Option("text_cache", Int(1), 4096, "caption conditionings kept in memory"),
    )

    def __init__(self, config: ScorerConfig) -> None:
        super().__init__(config)
        options = self.options
        if config.pretrained:
            raise HarnessError("--pretrained is not used by the diffusion scorer: --model names the whole "
                               "pipeline (a hub id or a save_pretrained folder)")
        self.settings = protocol_settings(options["protocol"], options)
        chosen = self.settings.values
        self.device = resolve_device(config.device)
        precision = chosen["precision"]
        if precision == "fp16" and options["precision"] is None and self.device.type != "cuda":
            # the references run fp16 weights on GPUs; on a CPU that is slow and no closer to them
            log.info("protocol %s asks for fp16, which it ran on GPUs; fp32 on %s", self.settings.protocol,
                     self.device)
            precision = "fp32"
        self.amp_dtype = autocast_dtype(self.device, precision)
        source = str(toy_models.toy_folder(config.model)) if toy_models.is_toy(config.model) else config.model
        # the schedule first: options that depend on it fail before any weights load
        self.scheduler = load_scheduler(source)
        self.prediction_type = self.scheduler.config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise HarnessError(f"{config.model}: prediction_type {self.prediction_type!r} is not supported "
                               "(epsilon and v_prediction are)")
        train_steps = self.scheduler.config.num_train_timesteps
        self.timestep_grid = chosen["timestep_grid"]
        self.timesteps = _timesteps(chosen["timesteps"], train_steps, self.timestep_grid)
        self.pipeline = load_pipeline(source, self.scheduler)
        self.vae, self.text_encoder, self.tokenizer, self.unet = (
            self.pipeline.vae, self.pipeline.text_encoder, self.pipeline.tokenizer, self.pipeline.unet)
        self.noise_samples = options["noise_samples"]
        self.batch_size = options["batch_size"]
        self.distance = chosen["distance"]
        self.uncond = chosen["uncond"]
        self.vae_latent = chosen["vae_latent"]
        self.preprocess = chosen["preprocess"]
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
        # scaled posterior mean per image (vae_latent=sample: the image's one sample instead)
        self._latents: dict[str, torch.Tensor] = {}
        self._stds: dict[str, torch.Tensor] = {}  # scaled posterior std, kept for sample-per-pass
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
            "prediction_type": self.prediction_type, "protocol": self.settings.protocol,
            "timesteps": self.timesteps, "timestep_grid": self.timestep_grid,
            "noise_samples": self.noise_samples, "seed": self.config.seed, "distance": self.distance,
            "vae_latent": self.vae_latent, "uncond": self.uncond, "preprocess": self.preprocess,
            "resolution": self.resolution,
            "adaptive": [self.adaptive_first, self.adaptive_keep] if self.adaptive else False,
            "precision": precision_label(self.amp_dtype),
        }

    def describe(self) -> dict[str, str]:
        return {"model": portable_model_name(self.config.model, self._weights), "pretrained": self.settings.label}

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
        if self.preprocess == "squash":
            return SquashTransform(self.resolution)
        return VaeImageTransform(self.resolution)

    def add_images(self, refs: Sequence[str], pixels: torch.Tensor) -> None:
        with torch.inference_mode(), self._autocast():
            posterior = self.vae.encode(pixels.to(self.device)).latent_dist
        scale = self.vae.config.scaling_factor
        latents = posterior.mean.float() * scale
        stds = posterior.std.float().cpu() * scale if self.vae_latent != "mean" else None
        for i, (ref, latent) in enumerate(zip(refs, latents.cpu())):
            if self.vae_latent == "sample":  # one sample per image, from the seed and the ref alone
                self._latents[ref] = latent + stds[i] * _standard_normal(latent.shape, self.config.seed, ref)
            else:
                self._latents[ref] = latent
                if stds is not None:
                    self._stds[ref] = stds[i]

    def has_image(self, ref: str) -> bool:
        return ref in self._latents

    def clear_images(self) -> None:
        self._latents.clear()
        self._stds.clear()

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

    def _x0(self, pair: Pair, t: int, draw: int) -> torch.Tensor:
        """The latent a pass starts from: the image's latent, or for sample-per-pass a fresh posterior
        sample keyed by (ref, the pair's sample tag, timestep, draw)."""
        ref, _, tag = pair
        if self.vae_latent != "sample-per-pass":
            return self._latents[ref]
        mean = self._latents[ref]
        return mean + self._stds[ref] * _standard_normal(mean.shape, self.config.seed, ref, tag, t, draw)

    def _pair(self, ref: str, prompt: str) -> Pair:
        return ref, prompt, prompt if self.vae_latent == "sample-per-pass" else ""

    def _uncond_pair(self, ref: str, prompt: str) -> Pair:
        """The empty prompt's pass that goes with (ref, prompt): the same latent as that pair's."""
        return ref, "", prompt if self.vae_latent == "sample-per-pass" else ""

    # -- scoring ----------------------------------------------------------------------------------
    def _errors(self, pairs: list[Pair], steps: list[int]) -> torch.Tensor:
        """Denoising error of each pair at each timestep index in ``steps``, averaged over noise
        draws: a (len(pairs), len(steps)) tensor. UNet calls batch ``batch_size`` triples of
        (pair, timestep, draw) whatever items they come from."""
        out = torch.zeros(len(pairs), len(steps), dtype=torch.float64)
        if not pairs:
            return out
        shape = tuple(self._latents[pairs[0][0]].shape)
        noise = self._noise_for(shape)
        triples = [(p, k, s) for p in range(len(pairs)) for k in range(len(steps)) for s in range(self.noise_samples)]
        for start in range(0, len(triples), self.batch_size):
            batch = triples[start:start + self.batch_size]
            x0 = torch.stack([self._x0(pairs[p], self.timesteps[steps[k]], s) for p, k, s in batch])
            eps = torch.stack([noise[steps[k], s] for _, k, s in batch])
            t = torch.tensor([self.timesteps[steps[k]] for _, k, _ in batch])
            x_t = self.scheduler.add_noise(x0, eps, t)
            target = eps if self.prediction_type == "epsilon" else self.scheduler.get_velocity(x0, eps, t)
            cond = torch.stack([self._conditions[pairs[p][1]] for p, _, _ in batch])
            with torch.inference_mode(), self._autocast():
                pred = self.unet(x_t.to(self.device), t.to(self.device), encoder_hidden_states=cond.to(self.device)).sample
            per_triple = denoising_error(pred.float().cpu(), target, self.distance).double()
            for (p, k, _), e in zip(batch, per_triple):
                out[p, k] += e / self.noise_samples
            self.unet_passes += len(batch)
        return out

    def _needs_uncond(self, item: Item) -> bool:
        """With a latent shared by an image's captions the empty prompt's error is one constant per
        image, so only items with several images need it; per-pass samples differ per caption."""
        return self.uncond and (len(item.images) > 1 or self.vae_latent == "sample-per-pass")

    def score(self, items: Sequence[Item]) -> list[np.ndarray]:
        texts = {item_text: _prompt(item_text) for item in items for item_text in item.texts}
        self._condition_texts([*dict.fromkeys(texts.values()), ""])
        all_steps = list(range(len(self.timesteps)))
        adaptive = [self._adaptive_applies(item) for item in items]

        # stage 1 (or the only stage): every pair needed, on all timesteps or the first-stage ones
        first = first_stage(len(self.timesteps), self.adaptive_first, self.timestep_grid)
        full_pairs: dict[Pair, None] = {}
        first_pairs: dict[Pair, None] = {}
        for item, pruned in zip(items, adaptive):
            target = first_pairs if pruned else full_pairs
            for ref in item.images:
                for t in item.texts:
                    target[self._pair(ref, texts[t])] = None
                    if self._needs_uncond(item):
                        full_pairs[self._uncond_pair(ref, texts[t])] = None
        full = dict(zip(full_pairs, self._errors(list(full_pairs), all_steps).mean(dim=1)))
        staged = self._errors(list(first_pairs), first)
        first_errors = dict(zip(first_pairs, staged.mean(dim=1)))
        first_rows = dict(zip(first_pairs, staged))

        # stage 2: the survivors of each adaptive item on the remaining timesteps
        rest = [k for k in all_steps if k not in first]
        survivors: dict[Pair, None] = {}
        for item, pruned in zip(items, adaptive):
            if pruned:
                ref = item.images[0]
                ranked = sorted(item.texts, key=lambda t: first_errors[self._pair(ref, texts[t])])
                for t in ranked[:self.adaptive_keep]:
                    survivors[self._pair(ref, texts[t])] = None
        second = dict(zip(survivors, self._errors(list(survivors), rest)))

        out = []
        for item, pruned in zip(items, adaptive):
            if not pruned:
                matrix = np.array([[-float(full[self._pair(ref, texts[t])]) for t in item.texts]
                                   for ref in item.images])
                if self._needs_uncond(item):
                    matrix += np.array([[float(full[self._uncond_pair(ref, texts[t])]) for t in item.texts]
                                        for ref in item.images])
                out.append(matrix)
            else:
                out.append(self._adaptive_row(item, texts, first_errors, first_rows, second, len(first))[None])
        return out

    def _adaptive_applies(self, item: Item) -> bool:
        return (self.adaptive and self._comparisons == "text_argmax" and len(item.images) == 1
                and len(item.texts) > self.adaptive_keep and len(self.timesteps) > 1
                and not self._needs_uncond(item))

    def _adaptive_row(self, item, texts, first_errors, first_rows, second, n_first) -> np.ndarray:
        """Survivors carry minus their error over the whole schedule; pruned candidates sit below
        every survivor, in their first-stage order (their distance below the worst survivor is
        their first-stage deficit)."""
        ref = item.images[0]
        scores = {}
        for t in item.texts:
            pair = self._pair(ref, texts[t])
            if pair in second:
                total = first_rows[pair].sum() + second[pair].sum()
                scores[t] = -float(total) / (n_first + len(second[pair]))
        worst = min(scores.values())
        best_first = min(float(first_errors[self._pair(ref, texts[t])]) for t in scores)
        row = []
        for t in item.texts:
            if t in scores:
                row.append(scores[t])
            else:
                deficit = float(first_errors[self._pair(ref, texts[t])]) - best_first
                row.append(worst - deficit - 1e-6)
        return np.array(row)


def _standard_normal(shape: torch.Size | tuple[int, ...], seed: int, *parts: str | int) -> torch.Tensor:
    """n ~ N(0, I) for one VAE posterior sample, from its own generator (see vae_sample_seed)."""
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(vae_sample_seed(seed, *parts)))


def _prompt(text: Text) -> str:
    """A Prompts ensemble is scored by its first prompt: every prompt would multiply the cost."""
    return text if isinstance(text, str) else text.texts[0]


def _timesteps(value: int | tuple[int, ...], train_steps: int, grid: str = "even") -> list[int]:
    """The timesteps of a ``timesteps`` option for a schedule of ``train_steps`` steps."""
    if isinstance(value, int):
        if value > train_steps:
            raise HarnessError(f"--opt timesteps={value}: the schedule has only {train_steps} timesteps, so some "
                               f"would repeat; ask for at most {train_steps}")
        return timestep_grid(value, train_steps, grid)
    outside = [t for t in value if not 0 <= t < train_steps]
    if outside:
        raise HarnessError(f"--opt timesteps: {outside} outside 0..{train_steps - 1}")
    return list(value)

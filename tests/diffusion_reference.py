"""A plain diffusion-score reference for tests and benchmarks: one (image, text) pair and one
timestep at a time, written from the formulas, sharing nothing with models/diffusion.py but two
documented layouts: the noise (one torch.randn of shape (timesteps, draws, C, H, W) from the seed)
and the generator seed of a VAE posterior sample (SHA-256 of the seed and the parts, see
``sample_seed``).

Every protocol's ingredients are here, each written out: the distances (mean squared, mean
absolute, mean Huber, Euclidean norm), the latent (posterior mean, one sample per image, a fresh
sample per pass), the image transform (crop or squash) and the unconditional term."""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from PIL import Image
from torchvision.transforms import functional as TF
from transformers import CLIPTextModel, CLIPTokenizer


def sample_seed(seed: int, *parts) -> int:
    """First 8 bytes, little-endian, top bit cleared, of SHA-256("seed<US>part<US>...")."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in (seed, *parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & (2 ** 63 - 1)


def distance(pred: torch.Tensor, target: torch.Tensor, kind: str) -> float:
    d = (pred - target).double()
    if kind == "l2":
        return float((d ** 2).mean())
    if kind == "l1":
        return float(d.abs().mean())
    if kind == "huber":  # delta 1: quadratic inside, linear outside
        a = d.abs()
        return float(torch.where(a <= 1, 0.5 * a ** 2, a - 0.5).mean())
    if kind == "l2-norm":
        return float((d ** 2).sum().sqrt())
    raise ValueError(kind)


class PlainDiffusionScore:
    def __init__(self, folder, timesteps: list[int], draws: int = 1, seed: int = 0, uncond: bool = True,
                 distance: str = "l2", latent: str = "mean", preprocess: str = "crop"):
        self.vae = AutoencoderKL.from_pretrained(folder, subfolder="vae").eval()
        self.unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet").eval()
        self.text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder").eval()
        self.tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
        self.scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
        self.timesteps, self.draws, self.uncond, self.seed = timesteps, draws, uncond, seed
        self.distance, self.latent_kind, self.preprocess = distance, latent, preprocess
        self.size = self.unet.config.sample_size * 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.shape = (self.unet.config.in_channels, self.unet.config.sample_size, self.unet.config.sample_size)
        self.noise = torch.randn((len(timesteps), draws, *self.shape), generator=torch.Generator().manual_seed(seed))

    def gaussian(self, *parts) -> torch.Tensor:
        return torch.randn(self.shape, generator=torch.Generator().manual_seed(sample_seed(self.seed, *parts)))

    def pixels(self, image) -> torch.Tensor:
        image = image.convert("RGB")
        if self.preprocess == "squash":  # the whole image onto a square, aspect ignored
            square = np.asarray(image.resize((self.size, self.size), Image.Resampling.BICUBIC), dtype=np.float32)
            return torch.from_numpy(square / 255.0).permute(2, 0, 1)[None] * 2 - 1
        image = TF.resize(image, self.size, interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
        return TF.to_tensor(TF.center_crop(image, [self.size, self.size]))[None] * 2 - 1

    @torch.no_grad()
    def posterior(self, image) -> tuple[torch.Tensor, torch.Tensor]:
        dist = self.vae.encode(self.pixels(image)).latent_dist
        return dist.mean[0], dist.std[0]

    @torch.no_grad()
    def condition(self, text: str) -> torch.Tensor:
        ids = self.tokenizer([text], padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids
        return self.text_encoder(ids)[0]

    def x0(self, ref: str, mean: torch.Tensor, std: torch.Tensor, caption: str, t: int, s: int) -> torch.Tensor:
        factor = self.vae.config.scaling_factor
        if self.latent_kind == "mean":
            return mean * factor
        if self.latent_kind == "sample":  # one sample per image
            return (mean + std * self.gaussian(ref)) * factor
        return (mean + std * self.gaussian(ref, caption, t, s)) * factor  # a fresh one per pass

    @torch.no_grad()
    def error(self, ref: str, posterior, text: str, sample_caption: str) -> float:
        """Mean over timesteps and draws of the distance between the UNet's prediction and its target.
        ``sample_caption`` names the caption whose per-pass samples the passes use."""
        cond = self.condition(text)
        abar_all = self.scheduler.alphas_cumprod
        total = 0.0
        for k, t in enumerate(self.timesteps):
            abar = abar_all[t]
            for s in range(self.draws):
                x0 = self.x0(ref, *posterior, sample_caption, t, s)
                eps = self.noise[k, s]
                x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
                if self.scheduler.config.prediction_type == "v_prediction":
                    target = abar.sqrt() * eps - (1 - abar).sqrt() * x0
                else:
                    target = eps
                pred = self.unet(x_t[None], torch.tensor([t]), encoder_hidden_states=cond).sample[0]
                total += distance(pred, target, self.distance)
        return total / (len(self.timesteps) * self.draws)

    def scores(self, images, texts, refs=None) -> np.ndarray:
        """The images x texts score matrix of one item (``refs`` key the VAE samples)."""
        refs = refs or [str(i) for i in range(len(images))]
        posteriors = [self.posterior(image) for image in images]
        out = np.array([[-self.error(r, p, t, t) for t in texts] for r, p in zip(refs, posteriors)])
        if self.uncond and self.latent_kind == "sample-per-pass":  # the empty prompt on each pass's latent
            out += np.array([[self.error(r, p, "", t) for t in texts] for r, p in zip(refs, posteriors)])
        elif self.uncond and len(images) > 1:
            out += np.array([[self.error(r, p, "", "")] for r, p in zip(refs, posteriors)])
        return out

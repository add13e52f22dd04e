"""A plain diffusion-score reference for tests and benchmarks: one (image, text) pair and one
timestep at a time, written from the formula, sharing nothing with models/diffusion.py but the
documented noise layout (one torch.randn of shape (timesteps, draws, C, H, W) from the seed)."""

from __future__ import annotations

import numpy as np
import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from torchvision.transforms import functional as TF
from transformers import CLIPTextModel, CLIPTokenizer


class PlainDiffusionScore:
    def __init__(self, folder, timesteps: list[int], draws: int = 1, seed: int = 0, uncond: bool = True):
        self.vae = AutoencoderKL.from_pretrained(folder, subfolder="vae").eval()
        self.unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet").eval()
        self.text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder").eval()
        self.tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
        self.scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
        self.timesteps, self.draws, self.uncond = timesteps, draws, uncond
        self.size = self.unet.config.sample_size * 2 ** (len(self.vae.config.block_out_channels) - 1)
        shape = (self.unet.config.in_channels, self.unet.config.sample_size, self.unet.config.sample_size)
        self.noise = torch.randn((len(timesteps), draws, *shape), generator=torch.Generator().manual_seed(seed))

    @torch.no_grad()
    def latent(self, image) -> torch.Tensor:
        image = TF.resize(image.convert("RGB"), self.size, interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
        pixels = TF.to_tensor(TF.center_crop(image, [self.size, self.size]))[None] * 2 - 1
        return self.vae.encode(pixels).latent_dist.mean[0] * self.vae.config.scaling_factor

    @torch.no_grad()
    def condition(self, text: str) -> torch.Tensor:
        ids = self.tokenizer([text], padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids
        return self.text_encoder(ids)[0]

    @torch.no_grad()
    def error(self, x0: torch.Tensor, cond: torch.Tensor) -> float:
        """Mean over timesteps and draws of the mean squared error of the UNet's prediction."""
        abar_all = self.scheduler.alphas_cumprod
        total = 0.0
        for k, t in enumerate(self.timesteps):
            abar = abar_all[t]
            for s in range(self.draws):
                eps = self.noise[k, s]
                x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
                if self.scheduler.config.prediction_type == "v_prediction":
                    target = abar.sqrt() * eps - (1 - abar).sqrt() * x0
                else:
                    target = eps
                pred = self.unet(x_t[None], torch.tensor([t]), encoder_hidden_states=cond).sample[0]
                total += float(((pred - target) ** 2).mean())
        return total / (len(self.timesteps) * self.draws)

    def scores(self, images, texts) -> np.ndarray:
        """The images x texts score matrix of one item."""
        latents = [self.latent(image) for image in images]
        out = np.array([[-self.error(x0, self.condition(t)) for t in texts] for x0 in latents])
        if self.uncond and len(images) > 1:
            out += np.array([[self.error(x0, self.condition(""))] for x0 in latents])
        return out

"""Cost model of one Stable Diffusion 2.1-base UNet call on this machine's CPU.

Builds the UNet from its architecture config with random weights (nothing is downloaded; the
speed of a forward pass does not depend on the weights' values), then times batched forward
passes on 64x64 latents (512x512 images) in float32 under torch.inference_mode(), and prints
one JSON object: parameter count, seconds per pass at each batch size, and seconds per UNet
sample (pass time / batch). A diffusion-based scorer's cost is then about
(UNet calls per image-text pair) x (seconds per UNet sample).

Run: `python tests/perf/sd21_cost_model.py [--batches 1 4] [--budget-s 240]`.
Not a pytest test (pytest collects test_*.py only); it takes about 2 minutes on 2 cores and ~5 GiB of memory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

# The UNet of stabilityai/stable-diffusion-2-1-base (unet/config.json in diffusers format).
# Sources for these facts:
# - Stability-AI/stablediffusion, configs/stable-diffusion/v2-inference.yaml (the config of the
#   512px "base" v2 models; read in the copy at boringcrypto/stablediffusion): model_channels 320,
#   channel_mult [1, 2, 4, 4], num_res_blocks 2, attention_resolutions [4, 2, 1],
#   num_head_channels 64, use_linear_in_transformer True, transformer_depth 1, context_dim 1024,
#   in/out_channels 4, latent image_size 64.
# - diffusers' own converter of such configs (diffusers/pipelines/stable_diffusion/convert_from_ckpt.py,
#   create_unet_diffusers_config) maps them to: block_out_channels = 320 x channel_mult; a
#   CrossAttn block at each of the first three resolutions (attention_resolutions 4, 2, 1) and a
#   plain block at the last; attention_head_dim = (320 / 64) x channel_mult = (5, 10, 20, 20)
#   (diffusers' name for the number of heads here: every head is 64 wide); use_linear_projection;
#   sample_size = 512 / 8 = 64.
# - The same UNet values are in the diffusers-format SD 2.1 config as quoted in public ports
#   (e.g. the Rust diffusers-rs pipeline configs, which cite stabilityai/stable-diffusion-2-1's
#   unet/config.json: blocks 320/640/1280/1280 with heads 5/10/20/20, cross_attention_dim 1024,
#   use_linear_projection true, layers_per_block 2). 2.1 and 2.1-base differ only in sample_size.
SD21_BASE_UNET_CONFIG = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "attention_head_dim": (5, 10, 20, 20),
    "cross_attention_dim": 1024,
    "use_linear_projection": True,
}
TEXT_TOKENS = 77  # CLIP context length; the OpenCLIP ViT-H/14 text encoder's hidden size is 1024


def high_water_gib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 2 ** 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--budget-s", type=float, default=240.0,
                        help="skip a batch size whose predicted pass time would overrun this many seconds "
                             "of timing in all (predicted from batch 1 scaled linearly)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    from diffusers import UNet2DConditionModel

    started = time.perf_counter()
    torch.manual_seed(args.seed)
    unet = UNet2DConditionModel(**SD21_BASE_UNET_CONFIG).eval()
    build_s = time.perf_counter() - started
    n_params = sum(p.numel() for p in unet.parameters())
    size = SD21_BASE_UNET_CONFIG["sample_size"]
    generator = torch.Generator().manual_seed(args.seed)

    def inputs(batch: int):
        latents = torch.randn(batch, 4, size, size, generator=generator)
        timesteps = torch.full((batch,), 500, dtype=torch.long)
        text = torch.randn(batch, TEXT_TOKENS, SD21_BASE_UNET_CONFIG["cross_attention_dim"], generator=generator)
        return latents, timesteps, text

    def one_pass(batch: int) -> float:
        latents, timesteps, text = inputs(batch)
        t0 = time.perf_counter()
        out = unet(latents, timesteps, encoder_hidden_states=text).sample
        elapsed = time.perf_counter() - t0
        assert out.shape == latents.shape and torch.isfinite(out).all()
        return elapsed

    results, skipped = [], []
    timing_started = time.perf_counter()
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode():
        # the warm-up pass also counts the floating-point operations of one UNet sample, which
        # turns into a time on other hardware once its sustained throughput is known
        counter = FlopCounterMode(display=False)
        with counter:
            warmup_s = one_pass(1)
        flops_per_sample = counter.get_total_flops()
        per_sample_guess = None
        for batch in args.batches:
            spent = time.perf_counter() - timing_started
            if per_sample_guess is not None and spent + batch * per_sample_guess > args.budget_s:
                skipped.append({"batch": batch, "predicted_seconds_per_pass": round(batch * per_sample_guess, 2)})
                continue
            seconds = one_pass(batch)
            per_sample_guess = seconds / batch if per_sample_guess is None else per_sample_guess
            results.append({
                "batch": batch,
                "seconds_per_pass": round(seconds, 3),
                "seconds_per_unet_sample": round(seconds / batch, 3),
            })

    print(json.dumps({
        "model": "stable-diffusion-2-1-base UNet2DConditionModel (random weights, architecture config)",
        "parameters": n_params,
        "dtype": "float32",
        "device": "cpu",
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "latent_shape_per_sample": [4, size, size],
        "encoder_hidden_states_per_sample": [TEXT_TOKENS, SD21_BASE_UNET_CONFIG["cross_attention_dim"]],
        "build_seconds": round(build_s, 2),
        "warmup_seconds_batch_1": round(warmup_s, 3),
        "flops_per_unet_sample": flops_per_sample,
        "tflops_per_unet_sample": round(flops_per_sample / 1e12, 3),
        "timings": results,
        "skipped_over_budget": skipped,
        "peak_rss_gib": round(high_water_gib(), 2),
        "total_seconds": round(time.perf_counter() - started, 1),
    }, indent=2))


if __name__ == "__main__":
    main()

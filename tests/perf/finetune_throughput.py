"""Samples/s and peak memory of `--sds-grad full` against `detached` at the same batch.

Two stacks, each run in fresh processes so that peak memory (VmHWM) is per configuration:
- tiny: the test CLIP and the tiny SD pipeline of the test factories;
- mid: ViT-B-32's architecture and the real SD 2.1-base UNet architecture (865M parameters),
  both with random weights (speed does not depend on the values; nothing is downloaded), with a
  small VAE and a 2-layer text encoder of SD 2's width 1024 (neither is on L_SDS's gradient path).

Run: `python tests/perf/finetune_throughput.py [--stacks tiny mid] [--steps 4] [--mid-batch 2]`.
The first step of every run is a warm-up and not counted. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from models.finetune import FinetuneConfig, Trainer
config = FinetuneConfig(**json.loads(sys.argv[2]))
trainer = Trainer(config)
times = []
original = trainer._optimizer_step
def timed(decoded):
    start = time.perf_counter()
    out = original(decoded)
    times.append(time.perf_counter() - start)
    return out
trainer._optimizer_step = timed
trainer.train(progress=False)
with open("/proc/self/status") as f:
    peak = next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 2**20
counted = times[1:]
print(json.dumps({"samples_per_s": round(config.batch_size * len(counted) / sum(counted), 3),
                  "seconds_per_step": round(sum(counted) / len(counted), 3), "peak_rss_gib": round(peak, 2)}))
"""


def build_mid(root: Path) -> tuple[str, str]:
    import open_clip
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from models.clip import save_local_dir
    from models.stable_diffusion import save_pipeline

    sys.path.insert(0, str(TESTS))
    sys.path.insert(0, str(HERE))
    from factories_diffusion import build_clip_tokenizer, tiny_vae_kwargs
    from sd21_cost_model import SD21_BASE_UNET_CONFIG

    torch.manual_seed(0)
    clip_dir = save_local_dir(root / "vit-b-32", open_clip.create_model("ViT-B-32"),
                              open_clip.get_model_config("ViT-B-32"))
    text_encoder = CLIPTextModel(CLIPTextConfig(hidden_size=1024, intermediate_size=1024, num_hidden_layers=2,
                                                num_attention_heads=16, vocab_size=49408, max_position_embeddings=77,
                                                bos_token_id=49406, eos_token_id=49407, pad_token_id=49407))
    sd = save_pipeline(root / "sd21-base-arch", AutoencoderKL(**tiny_vae_kwargs()), text_encoder,
                       build_clip_tokenizer(), UNet2DConditionModel(**SD21_BASE_UNET_CONFIG))
    return f"local-dir:{clip_dir}", str(sd)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stacks", nargs="+", default=["tiny", "mid"])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--tiny-batch", type=int, default=16)
    parser.add_argument("--mid-batch", type=int, default=2)
    args = parser.parse_args()
    sys.path.insert(0, str(TESTS))
    from factories import build_tiny_clip, write_coco_captions
    from factories_diffusion import build_tiny_sd

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_coco_captions(root / "data", n_images=32)
        for stack in args.stacks:
            if stack == "tiny":
                clip, sd, batch = f"local-dir:{build_tiny_clip(root / 'clip').local_dir}", str(build_tiny_sd(root / 'sd')), args.tiny_batch
            else:
                (clip, sd), batch = build_mid(root / "mid"), args.mid_batch
            for mode in ("full", "detached"):
                config = {"clip": clip, "sd": sd, "out": str(root / f"out-{stack}-{mode}"), "data_root": str(root / "data"),
                          "batch_size": batch, "max_steps": args.steps, "workers": 0, "sds_grad": mode,
                          "grad_norm_every": 0, "save_every": 10**9}
                done = subprocess.run([sys.executable, "-c", CHILD, str(TESTS.parent), json.dumps(config)],
                                      capture_output=True, text=True, check=True)
                results[f"{stack}/{mode}/batch{batch}"] = json.loads(done.stdout.strip().splitlines()[-1])
            full, detached = results[f"{stack}/full/batch{batch}"], results[f"{stack}/detached/batch{batch}"]
            results[f"{stack}/detached_vs_full_throughput"] = round(detached["samples_per_s"] / full["samples_per_s"], 2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

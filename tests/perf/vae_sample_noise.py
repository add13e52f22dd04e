"""How much a VAE posterior sample, instead of the posterior mean, moves a diffusion score's decisions.

DiffusionITM encodes each image with a fresh posterior sample on every UNet pass, while its
diffusion noise is made once and cached (McGill-NLP/diffusers @ 8ad50fd,
pipeline_stable_diffusion_img2img.py l. 225-233 and 571); two runs of it differ only in those
samples. This script reproduces that: the diffusion noise stays the one of seed 0 while the seed
of the VAE samples varies (0, 1, 2), and every decision is compared with the run on the posterior
mean. For context it also reruns the mean latent with the noise reseeded (how much the noise
alone moves decisions).

Decisions, on the shapes world's held-out test items: `shapes:winoground` text and image (one each
per item), `shapes:relation` and `shapes:attribute` (whether the true caption wins). Prints one
JSON object per pipeline: per decision type, the accuracy of every run, and how many decisions
flip between runs.

Run from the repository root (not a pytest test; a few minutes per pipeline on 2 busy cores):

    nice -n 10 python tests/perf/vae_sample_noise.py --pipeline toy --items 100
    nice -n 10 python tests/perf/vae_sample_noise.py --pipeline tiny --items 100
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

# this checkout's packages first (not an installed copy), and tests/ for the tiny pipeline's factory
sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[1])]

from benchmarks.shapes import Shapes  # noqa: E402
from harness.api import ScorerConfig  # noqa: E402
from harness.runner import evaluate  # noqa: E402
from harness.store import ScoreStore  # noqa: E402
from models.diffusion import DiffusionScorer  # noqa: E402

SUBSETS = ("winoground", "relation", "attribute")


class FixedNoiseScorer(DiffusionScorer):
    """The scorer with its diffusion noise drawn from seed 0 whatever the run's seed, so that the
    seed moves only the VAE posterior samples (as between two DiffusionITM runs)."""

    def _noise_for(self, shape):
        if self._noise is None or tuple(self._noise.shape[2:]) != shape:
            generator = torch.Generator().manual_seed(0)
            self._noise = torch.randn((len(self.timesteps), self.noise_samples, *shape), generator=generator)
        return self._noise


def decisions(scorer: DiffusionScorer, items: int, root: Path) -> dict[str, list[bool]]:
    """Every decision of one run: {"text": [...], "image": [...], "relation": [...], "attribute": [...]}."""
    out: dict[str, list[bool]] = {}
    for subset in SUBSETS:
        bench = Shapes(root, subset, n=items)
        with tempfile.TemporaryDirectory() as tmp:
            result = evaluate(scorer, bench, ScoreStore(Path(tmp) / "s.sqlite"), workers=0, progress=False)
        outcomes = [bench.outcome(item, m) for item, m in zip(result.items, result.scores)]
        if subset == "winoground":
            out["text"] = [bool(o["text"]) for o in outcomes]
            out["image"] = [bool(o["image"]) for o in outcomes]
        else:
            out[subset] = [bool(o["correct"]) for o in outcomes]
    return out


def posterior_spread(scorer: DiffusionScorer, bench: Shapes) -> float:
    """Mean posterior std of the latents over the standard deviation of the posterior means
    (all elements of 32 images): how far a sample strays from the mean, against how much images differ."""
    transform = scorer.image_transform()
    pixels = torch.stack([transform(bench.load_image(item.images[0])) for item in bench.items()])
    with torch.inference_mode():
        posterior = scorer.vae.encode(pixels).latent_dist
    return round(float(posterior.std.mean() / posterior.mean.std()), 4)


def flips(a: list[bool], b: list[bool]) -> int:
    return sum(x != y for x, y in zip(a, b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", choices=("toy", "tiny"), required=True,
                        help="toy: the shipped toy:sd; tiny: the tests' random-weight pipeline")
    parser.add_argument("--items", type=int, default=100, help="items per shapes subset")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--protocol", default="diffusion-itm")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(2)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if args.pipeline == "toy":
            model = "toy:sd"
        else:
            from factories_diffusion import build_tiny_sd

            model = str(build_tiny_sd(Path(tmp) / "tiny_sd"))

        def run(cls, seed: int, vae_latent: str) -> dict[str, list[bool]]:
            options = {"protocol": args.protocol, "vae_latent": vae_latent, "batch_size": args.batch_size}
            return decisions(cls(ScorerConfig(model=model, device="cpu", seed=seed, options=options)), args.items,
                             Path(tmp))

        mean_runs = {s: run(DiffusionScorer, s, "mean") for s in args.seeds}  # noise reseeded
        baseline = mean_runs[0] if 0 in mean_runs else run(FixedNoiseScorer, 0, "mean")
        sampled = {kind: {s: run(FixedNoiseScorer, s, kind) for s in args.seeds}
                   for kind in ("sample-per-pass", "sample")}
        probe = DiffusionScorer(ScorerConfig(model=model, device="cpu", options={"protocol": args.protocol}))
        timesteps = probe.timesteps
        spread = posterior_spread(probe, Shapes(Path(tmp), "relation", n=32))

    report = {"pipeline": model if args.pipeline == "toy" else "tiny test pipeline (random weights)",
              "protocol": args.protocol, "timesteps": timesteps, "items_per_subset": args.items,
              "seeds": args.seeds, "seconds": round(time.perf_counter() - started, 1),
              "posterior_std_over_spread_of_means": spread, "decisions": {}}
    for kind in baseline:
        n = len(baseline[kind])
        entry: dict[str, object] = {"n": n, "accuracy_mean_latent": 100 * sum(baseline[kind]) / n}
        for latent, runs in sampled.items():
            entry[f"{latent}: accuracy per seed"] = [100 * sum(r[kind]) / n for r in runs.values()]
            entry[f"{latent}: flips vs mean, per seed"] = [flips(r[kind], baseline[kind]) for r in runs.values()]
            entry[f"{latent}: flips run to run, per pair of seeds"] = [
                flips(runs[a][kind], runs[b][kind]) for a, b in itertools.combinations(runs, 2)]
        entry["mean latent, noise reseeded: flips run to run, per pair of seeds"] = [
            flips(mean_runs[a][kind], mean_runs[b][kind]) for a, b in itertools.combinations(mean_runs, 2)]
        report["decisions"][kind] = entry
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

"""Does the toy diffusion model know where things are? (``harness toy diagnose``)

Three measurements that tell "never learned layout" apart from "learned it, but the score does not
read it out":

1. **Generation.** Sample images for captions of each relation with the ordinary diffusers
   sampling loop (``StableDiffusionPipeline`` over the pipeline folder, a DDIM sampler, a few dozen
   steps, optionally classifier-free guidance) and measure *layout accuracy*: find each object by
   its colour in the generated image and check that the caption's relation holds between the two
   centroids. Held-out captions (the test combinations) and training captions, separately.
2. **The expected image.** At a high-noise timestep, from a blank canvas, the mean of the model's
   clean-image estimates over noise draws: what the caption alone makes the model expect. Its
   colours are mixtures, so its layout is judged by the nearest rendered scene: the caption's, the
   one with the objects exchanged, or the one on the other axis.
3. **Denoising error per timestep.** On training scenes (and held-out ones), with one shared noise
   draw per timestep, the share of scenes whose true caption gives a lower denoising error than
   its relation swap (objects exchanged) and than its attribute swap (colours exchanged), and the
   mean error gap, at each timestep. The diffusion scorer averages these gaps over timesteps.

Writes into ``--out``: ``samples_g<guidance>.png`` and ``expected_t<t>.png`` (grids: per relation
a row of real scenes and a row of model images, each framed green when its layout is right),
``layout.csv``, ``timesteps.csv``, ``timesteps.png``, ``summary.json`` and the samples themselves
(``samples_<split>_g<guidance>.npz``: uint8 images and scene refs).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from benchmarks import shapes
from harness.files import atomic_write_text
from harness.results import write_csv_atomic

log = logging.getLogger("harness")

# the toy models are trained on seed 0's training scenes (train_toy.train_toy_models' default)
TRAINING_SEED = 0
DIAGNOSIS_SEED = 4242  # held-out captions for sampling; the benchmarks use seeds 0..3 (x1000)
MIN_PIXELS = 3  # an object counts as found when at least this many pixels take its colour
PALETTE = {**shapes.COLOURS, "background": shapes.BACKGROUND}


# -- finding objects by colour --------------------------------------------------------------------

@dataclass(frozen=True)
class Layout:
    """Where the caption's two objects were found in an image (centroids in pixels, x right, y down)."""

    found_a: bool
    found_b: bool
    a: tuple[float, float]
    b: tuple[float, float]

    @property
    def found(self) -> bool:
        return self.found_a and self.found_b


def find_objects(image: np.ndarray, scene: shapes.Scene) -> Layout:
    """Label every pixel with its nearest palette colour (the world's 12 colours and its background)
    and take the centroid of the pixels of A's colour and of B's colour. Nearest-colour labelling
    rather than a fixed threshold: generated colours are blurred and shifted, but the world's
    colours are far apart."""
    pixels = np.asarray(image, dtype=np.float32)[..., :3]
    names = list(PALETTE)
    palette = np.array([PALETTE[n] for n in names], dtype=np.float32)
    nearest = np.argmin(((pixels[:, :, None, :] - palette[None, None]) ** 2).sum(-1), axis=-1)
    ys, xs = np.mgrid[0:pixels.shape[0], 0:pixels.shape[1]]

    def centroid(colour: str) -> tuple[bool, tuple[float, float]]:
        mask = nearest == names.index(colour)
        if mask.sum() < MIN_PIXELS:
            return False, (float("nan"), float("nan"))
        return True, (float(xs[mask].mean()), float(ys[mask].mean()))

    (found_a, a), (found_b, b) = centroid(scene.a.colour), centroid(scene.b.colour)
    return Layout(found_a, found_b, a, b)


def relation_holds(layout: Layout, relation: str) -> bool:
    """Whether "A <relation> B" holds between the centroids: B lies from A in the relation's
    direction, by more than along the other axis (so a vertical pair is never "left of"). False
    when an object is missing."""
    if not layout.found:
        return False
    (ax, ay), (bx, by) = layout.a, layout.b
    dx, dy = bx - ax, by - ay  # where B is, seen from A (y grows downwards)
    return {"left of": dx > abs(dy), "right of": -dx > abs(dy), "above": dy > abs(dx), "below": -dy > abs(dx)
            }[relation]


def orientation_holds(layout: Layout, relation: str) -> bool:
    """Whether the pair lies along the relation's axis (horizontal or vertical), in either order."""
    if not layout.found:
        return False
    dx, dy = abs(layout.b[0] - layout.a[0]), abs(layout.b[1] - layout.a[1])
    return dx > dy if shapes.RELATIONS[relation] == "horizontal" else dy > dx


ROTATED = {"left of": "above", "right of": "below", "above": "left of", "below": "right of"}


def nearest_scene(image: np.ndarray, scene: shapes.Scene) -> tuple[bool, bool, bool]:
    """For a blurred image (the expected image, where colours mix and cannot be found one by one):
    whether it is nearer (pixel MSE) to the scene than to the scene with its objects exchanged
    (layout), than to the scene on the other axis (orientation), and whether it is nearer to the
    exchanged scene (swapped). Ties count as wrong."""
    pixels = np.asarray(image, dtype=np.float64)[..., :3]

    def distance(other: shapes.Scene) -> float:
        return float(((pixels - np.asarray(shapes.render(other, pixels.shape[0]), np.float64)) ** 2).mean())

    true, exchanged = distance(scene), distance(scene.swapped_objects())
    rotated = distance(shapes.Scene(scene.a, scene.b, ROTATED[scene.relation], scene.template))
    return true < exchanged, true < rotated, exchanged < true


# -- 1. generation --------------------------------------------------------------------------------

def sampling_pipeline(sd_dir: Path, device: str = "cpu"):
    """The toy folder as an ordinary ``StableDiffusionPipeline`` with a DDIM sampler (fp32 parts,
    loaded offline by models.stable_diffusion.load_pipeline)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from models.stable_diffusion import load_pipeline

    parts = load_pipeline(str(sd_dir))
    pipe = StableDiffusionPipeline(
        vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer, unet=parts.unet,
        scheduler=DDIMScheduler.from_config(parts.scheduler.config), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def caption_scenes(per_relation: int, held_out: bool, seed: int = DIAGNOSIS_SEED) -> list[shapes.Scene]:
    """``per_relation`` scenes for each relation, in relation order; held-out (test) combinations,
    or scenes of the training stream the toy models were trained on (its first ones)."""
    stream = shapes.scenes(60 * per_relation, seed if held_out else TRAINING_SEED, test=held_out)
    chosen = []
    for relation in shapes.RELATIONS:
        chosen += [s for s in stream if s.relation == relation][:per_relation]
    return chosen


def generate(pipe, scenes: Sequence[shapes.Scene], steps: int, guidance: float, seed: int,
             batch_size: int = 64) -> np.ndarray:
    """One sample per scene's caption, uint8 (n, H, W, 3); noise from ``seed`` alone."""
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    out = []
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, len(scenes), batch_size):
        batch = [s.caption() for s in scenes[start:start + batch_size]]
        latents = torch.randn((len(batch), pipe.unet.config.in_channels, pipe.unet.config.sample_size,
                               pipe.unet.config.sample_size), generator=generator)
        with torch.no_grad():
            images = pipe(batch, height=size, width=size, num_inference_steps=steps, guidance_scale=guidance,
                          latents=latents.to(pipe.device), output_type="np").images
        out.append((np.clip(images, 0, 1) * 255).round().astype(np.uint8))
    return np.concatenate(out)


def layout_rows(scenes: Sequence[shapes.Scene], images: np.ndarray, split: str, guidance: float | str,
                judge: str = "colour") -> tuple[list[dict[str, Any]], list[bool]]:
    """Per relation (and over all): samples, share with both objects found, with the pair on the
    relation's axis, with the relation holding (layout accuracy; a missing object counts as
    wrong), and laid out as the swap (objects exchanged). Chance for a model that places two
    objects on a random axis in a random order: 50% orientation, 25% layout, 25% swapped.

    ``judge="nearest"`` (for blurred images) judges by the nearest rendered scene instead
    (``nearest_scene``): no objects are looked for, and chance is 50% for each share."""
    if judge == "colour":
        layouts = [find_objects(image, scene) for scene, image in zip(scenes, images)]
        found = [lay.found for lay in layouts]
        right = [relation_holds(lay, s.relation) for lay, s in zip(layouts, scenes)]
        axis = [orientation_holds(lay, s.relation) for lay, s in zip(layouts, scenes)]
        swapped = [_other_side(lay, s) for lay, s in zip(layouts, scenes)]
    else:
        judged = [nearest_scene(image, scene) for scene, image in zip(scenes, images)]
        found = [float("nan")] * len(scenes)
        right, axis, swapped = ([j[k] for j in judged] for k in range(3))
    rows = []
    for relation in [*shapes.RELATIONS, "all"]:
        idx = [k for k, s in enumerate(scenes) if relation in ("all", s.relation)]
        if not idx:
            continue
        share = {name: round(float(np.mean([values[k] for k in idx])), 4)
                 for name, values in (("found_both", found), ("orientation_acc", axis), ("layout_acc", right),
                                      ("swapped_layout", swapped))}
        rows.append({"split": split, "guidance": guidance, "relation": relation, "n": len(idx), **share})
    return rows, right


def _other_side(layout: Layout, scene: shapes.Scene) -> bool:
    """A drew where B belongs and B where A belongs: the relation's opposite holds."""
    opposite = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}[scene.relation]
    return relation_holds(layout, opposite)


def expected_images(parts, scenes: Sequence[shapes.Scene], timestep: int = 950, draws: int = 16, seed: int = 0,
                    batch_size: int = 64) -> np.ndarray:
    """What the model expects for each caption before it sees an image: at ``timestep``, from a
    blank canvas (the latent of the empty background) under fresh noise, the mean over ``draws``
    of its clean-latent estimate x0 = (x_t - sqrt(1 - abar) eps_hat) / sqrt(abar), decoded; uint8
    (n, H, W, 3). A model that reads the layout from the caption draws it here; one that does not
    draws every place an object can be."""
    from models.stable_diffusion import VaeImageTransform, token_ids

    size = parts.unet.config.sample_size * parts.vae_factor
    blank = VaeImageTransform(size)(Image.new("RGB", (size, size), shapes.BACKGROUND))[None]
    abar = parts.scheduler.alphas_cumprod[timestep]
    generator = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        canvas = parts.vae.encode(blank).latent_dist.mean * parts.vae.config.scaling_factor
        cond = parts.text_encoder(token_ids(parts.tokenizer, [s.caption() for s in scenes]))[0]
        per_batch = max(1, batch_size // draws)
        for start in range(0, len(scenes), per_batch):
            c = cond[start:start + per_batch].repeat_interleave(draws, dim=0)
            eps = torch.randn((len(c), *canvas.shape[1:]), generator=generator)
            x_t = abar.sqrt() * canvas + (1 - abar).sqrt() * eps
            eps_hat = parts.unet(x_t, torch.full((len(c),), timestep), encoder_hidden_states=c).sample
            x0 = ((x_t - (1 - abar).sqrt() * eps_hat) / abar.sqrt()).view(-1, draws, *canvas.shape[1:]).mean(1)
            images = parts.vae.decode(x0 / parts.vae.config.scaling_factor).sample
            out.append(((images.permute(0, 2, 3, 1).numpy() + 1) * 127.5).clip(0, 255).round().astype(np.uint8))
    return np.concatenate(out)


# -- 2. denoising error per timestep --------------------------------------------------------------

def timestep_rows(parts, scenes: Sequence[shapes.Scene], split: str, timesteps: Sequence[int],
                  seed: int = 0, batch_size: int = 64) -> list[dict[str, Any]]:
    """For each timestep: the share of scenes whose true caption has the lower denoising error
    (strictly) against its relation swap and its attribute swap, and the mean gap (swap minus
    true; positive when the true caption helps). One noise draw per timestep, shared by every
    scene and caption, as the diffusion scorer does."""
    from models.stable_diffusion import VaeImageTransform, token_ids

    vae, text_encoder, tokenizer, unet, scheduler = (parts.vae, parts.text_encoder, parts.tokenizer, parts.unet,
                                                     parts.scheduler)
    size = unet.config.sample_size * parts.vae_factor
    to_pixels = VaeImageTransform(size)
    with torch.no_grad():
        pixels = torch.stack([to_pixels(shapes.render(s, size)) for s in scenes])
        latents = vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor
        captions = {kind: [(s if kind == "true" else s.swapped_objects() if kind == "relation"
                            else s.swapped_colours()).caption() for s in scenes]
                    for kind in ("true", "relation", "attribute")}
        cond = {kind: text_encoder(token_ids(tokenizer, texts))[0] for kind, texts in captions.items()}
    noise = torch.randn((len(timesteps), *latents.shape[1:]), generator=torch.Generator().manual_seed(seed))
    rows = []
    for k, t in enumerate(timesteps):
        errors = {}
        for kind, c in cond.items():
            errs = []
            for start in range(0, len(scenes), batch_size):
                z = latents[start:start + batch_size]
                eps = noise[k].expand_as(z)
                tt = torch.full((len(z),), int(t))
                with torch.no_grad():
                    pred = unet(scheduler.add_noise(z, eps, tt), tt,
                                encoder_hidden_states=c[start:start + batch_size]).sample
                errs.append(((pred - eps) ** 2).flatten(1).mean(1))
            errors[kind] = torch.cat(errs).double()
        for kind in ("relation", "attribute"):
            gap = errors[kind] - errors["true"]
            rows.append({"split": split, "swap": kind, "timestep": int(t), "n": len(scenes),
                         "true_wins": round(float((gap > 0).double().mean()), 4),
                         "mean_gap": float(f"{float(gap.mean()):.3g}"),
                         "mean_error": float(f"{float(errors['true'].mean()):.3g}")})
    return rows


# -- figures --------------------------------------------------------------------------------------

def samples_figure(scenes: Sequence[shapes.Scene], images: np.ndarray, right: Sequence[bool], title: str,
                   path: Path, columns: int = 8, label: str = "sample") -> Path:
    """Per relation, a row of the real scenes (the renderer) above a row of samples for the same
    captions; each sample framed green (layout right) or red."""
    from harness.report import pyplot

    plt = pyplot()
    relations = [r for r in shapes.RELATIONS if any(s.relation == r for s in scenes)]
    fig, axes = plt.subplots(2 * len(relations), columns, figsize=(1.25 * columns, 1.45 * 2 * len(relations)),
                             squeeze=False)
    for r, relation in enumerate(relations):
        idx = [k for k, s in enumerate(scenes) if s.relation == relation][:columns]
        for c in range(columns):
            real, fake = axes[2 * r, c], axes[2 * r + 1, c]
            for ax in (real, fake):
                ax.set_xticks([]), ax.set_yticks([])
            if c >= len(idx):
                real.axis("off"), fake.axis("off")
                continue
            scene = scenes[idx[c]]
            real.imshow(np.asarray(shapes.render(scene, images.shape[1])), interpolation="nearest")
            real.set_title(f"{scene.a.colour} {scene.a.shape}\n{relation}\n{scene.b.colour} {scene.b.shape}",
                           fontsize=5.5)
            fake.imshow(images[idx[c]], interpolation="nearest")
            for spine in fake.spines.values():
                spine.set_edgecolor("green" if right[idx[c]] else "red")
                spine.set_linewidth(2.5)
        axes[2 * r, 0].set_ylabel("real", fontsize=7)
        axes[2 * r + 1, 0].set_ylabel(label, fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def timesteps_figure(rows: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Share of scenes whose true caption beats its swap, by timestep, per split and swap kind."""
    from harness.report import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    keys = list(dict.fromkeys((r["split"], r["swap"]) for r in rows))
    for k, (split, swap) in enumerate(keys):
        mine = [r for r in rows if (r["split"], r["swap"]) == (split, swap)]
        ax.plot([r["timestep"] for r in mine], [100 * r["true_wins"] for r in mine], marker="o",
                ls="-" if swap == "relation" else ":", color=f"C{k // 2 if len(keys) > 2 else k}",
                label=f"{split} scenes: {swap} swap")
    ax.axhline(50, color="gray", lw=0.8, ls="--")
    ax.set(xlabel="timestep", ylabel="% true caption has lower error", ylim=(0, 102),
           title=title or "denoising error: true caption vs its swap, per timestep")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- all of it ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DiagnosisPlan:
    per_relation: int = 25  # sampled captions per relation and split
    steps: int = 30  # DDIM steps
    guidance: tuple[float, ...] = (1.0, 4.0)  # 1.0: the conditional model alone, as the scorer reads it
    scenes: int = 120  # scenes per split for the per-timestep errors
    timesteps: tuple[int, ...] = tuple(range(50, 1000, 100))
    expected_timestep: int = 950
    expected_draws: int = 16
    seed: int = 0


def diagnose(sd_dir: Path, out: Path, plan: DiagnosisPlan = DiagnosisPlan(), device: str = "cpu",
             label: str = "") -> dict[str, Any]:
    """The three measurements on the pipeline in ``sd_dir``; files into ``out``; returns the
    summary. No guidance scales skips sampling, and ``plan.scenes == 0`` the per-timestep errors
    (the expected image alone is a quick look at a model in training)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    layout: list[dict[str, Any]] = []
    pipe = sampling_pipeline(sd_dir, device) if plan.guidance else None
    for guidance in plan.guidance:
        for split, held in (("held-out", True), ("training", False)):
            chosen = caption_scenes(plan.per_relation, held_out=held)
            images = generate(pipe, chosen, plan.steps, guidance, plan.seed)
            np.savez_compressed(out / f"samples_{split}_g{guidance:g}.npz", images=images,
                                refs=np.array([s.ref() for s in chosen]))
            rows, right = layout_rows(chosen, images, split, guidance)
            layout += rows
            if held:
                name = f"samples_g{guidance:g}.png"
                samples_figure(chosen, images, right, f"{label or sd_dir}: held-out captions, {plan.steps} DDIM steps, "
                               f"guidance {guidance:g}; layout right {rows[-1]['layout_acc']:.0%} "
                               f"(green) of {rows[-1]['n']}", out / name)
    from models.stable_diffusion import load_pipeline

    parts = load_pipeline(str(sd_dir))
    for module in parts.modules():
        module.eval()  # measurements 2 and 3 are small: CPU whatever --device says
    expected = f"expected t={plan.expected_timestep}"
    for split, held in (("held-out", True), ("training", False)):
        chosen = caption_scenes(plan.per_relation, held_out=held)
        images = expected_images(parts, chosen, plan.expected_timestep, plan.expected_draws, plan.seed)
        rows, right = layout_rows(chosen, images, split, expected, judge="nearest")
        layout += rows
        if held:
            samples_figure(chosen, images, right, f"{label or sd_dir}: the expected image (mean x0 estimate over "
                           f"{plan.expected_draws} noise draws from a blank canvas) at t={plan.expected_timestep};\n"
                           f"nearer the caption's scene than its swap: {rows[-1]['layout_acc']:.0%} (green) of "
                           f"{rows[-1]['n']}",
                           out / f"expected_t{plan.expected_timestep}.png", label="expected")
    write_csv_atomic(out / "layout.csv", layout, list(layout[0]))
    per_t: list[dict[str, Any]] = []
    if plan.scenes:
        for split, chosen in (("training", [s for s, _ in shapes.training_pairs(plan.scenes, TRAINING_SEED)]),
                              ("held-out", shapes.scenes(plan.scenes, DIAGNOSIS_SEED + 1, test=True))):
            per_t += timestep_rows(parts, chosen, split, plan.timesteps, plan.seed)
        write_csv_atomic(out / "timesteps.csv", per_t, list(per_t[0]))
        timesteps_figure(per_t, out / "timesteps.png", f"{label or sd_dir}: true caption vs swap, per timestep")
    summary = {
        "model": label or str(sd_dir), "plan": {k: list(v) if isinstance(v, tuple) else v
                                                for k, v in plan.__dict__.items()},
        "layout_acc": {f"{r['split']} {_how(r['guidance'])}": r["layout_acc"] for r in layout if r["relation"] == "all"},
        "found_both": {f"{r['split']} {_how(r['guidance'])}": r["found_both"] for r in layout if r["relation"] == "all"},
        "relation_true_wins_by_t": {r["split"]: [x["true_wins"] for x in per_t
                                                 if (x["split"], x["swap"]) == (r["split"], "relation")]
                                    for r in per_t},
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _how(guidance: float | str) -> str:
    """A layout row's source: sampling at a guidance scale (g<scale>), or the expected image."""
    return f"g{guidance:g}" if isinstance(guidance, float) else str(guidance)

"""The `harness toy` commands: train the toy models of the shapes world, train the toy pipeline
further, and run the SDS-CLIP experiment in miniature. Declared in experiments/__init__.py's
plug-in table; importing this module is cheap (torch loads when a command runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from harness.cli_support import csv_list, user_errors

app = typer.Typer(help="The toy models of the shapes world: train them, and run the SDS-CLIP experiment on them.",
                  no_args_is_help=True)


@app.command("train")
def toy_train(
    out: Annotated[Path, typer.Option(
        help="Where the toy models go (clip/, sd/, sds-clip/, training_log.csv). The models already there are "
             "replaced only when training finishes. To replace the shipped ones, name their folder: "
             "--out models/toy.")],
    budget: Annotated[str, typer.Option(help="full (the shipped models, ~30 min on 2 cores) or smoke (seconds).")
                      ] = "full",
    seed: Annotated[int, typer.Option(help="Seed of the training scenes and initialisations.")] = 0,
    recipe: Annotated[Optional[str], typer.Option(help="Design of the toy pipeline (experiments/shapes/"
                                                       "train_toy.py RECIPES). Default: the shipped one.")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Train the toy CLIP, the toy Stable Diffusion pipeline (VAE, text encoder, UNet) and the toy
    SDS-CLIP on the shapes training split; write training_log.csv beside them. Use them with
    HARNESS_TOY_DIR=OUT."""
    from experiments.shapes.train_toy import SD_RECIPE, train_toy_models

    with user_errors("the models in --out are unchanged; the partial run stays in its staging folder there."):
        folders = train_toy_models(out, budget=budget, seed=seed, progress=progress, recipe=recipe or SD_RECIPE)
    for name, folder in folders.items():
        typer.echo(f"toy:{name:<9} {folder}")
    typer.echo(f"use them with HARNESS_TOY_DIR={out}")


@app.command("train-sd")
def toy_train_sd(
    out: Annotated[Path, typer.Option(help="Folder for the pipeline, its training_log.csv and recipe.json.")],
    recipe: Annotated[Optional[str], typer.Option(help="Design (experiments/shapes/train_toy.py RECIPES). "
                                                       "Default: the shipped one.")] = None,
    vae_from: Annotated[Optional[Path], typer.Option(help="Reuse this pipeline's VAE (for designs that keep its "
                                                          "latents) instead of training one.")] = None,
    steps: Annotated[Optional[int], typer.Option(help="UNet + text encoder steps. Default: the budget's.")] = None,
    budget: Annotated[str, typer.Option(help="full or smoke.")] = "full",
    seed: Annotated[int, typer.Option(help="Seed of the training scenes and initialisations.")] = 0,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Train only the toy pipeline by a named design, to compare designs at equal budgets; score it
    with `harness run --scorer diffusion --model OUT`, look at it with `harness toy diagnose --sd OUT`."""
    from experiments.shapes.train_toy import SD_RECIPE, train_pipeline

    with user_errors("the partial pipeline in --out is not complete."):
        folder = train_pipeline(out, recipe or SD_RECIPE, vae_from=vae_from, budget=budget, steps=steps, seed=seed,
                                progress=progress)
    typer.echo(f"pipeline written to {folder}")


@app.command("adopt-sd")
def toy_adopt_sd(
    sd: Annotated[Path, typer.Option(help="A pipeline folder written by `harness toy train-sd`.")],
    out: Annotated[Path, typer.Option(help="The toy set whose sd/ it replaces (clip/, sd/, sds-clip/, ...). To "
                                           "replace the shipped one, name its folder: --out models/toy.")],
    seed: Annotated[int, typer.Option(help="Seed of the SDS-CLIP fine-tuning.")] = 0,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Make a pipeline trained by a named design the set's toy:sd, and fine-tune the set's toy:sds-clip
    again from its toy:clip and that pipeline; the set's log, figure and manifest follow."""
    from experiments.shapes.train_toy import adopt_sd

    with user_errors("the toy set in --out is unchanged."):
        folders = adopt_sd(sd, out, seed=seed, progress=progress)
    for name, folder in folders.items():
        typer.echo(f"toy:{name:<9} {folder}")


@app.command("extend-sd")
def toy_extend_sd(
    out: Annotated[Path, typer.Option(help="Folder for the further-trained pipeline and its training_log.csv.")],
    steps: Annotated[int, typer.Option(help="Further UNet + text encoder steps.")] = 2800,
    sd: Annotated[Optional[Path], typer.Option(help="The pipeline to start from. Default: toy:sd.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the fresh training scenes.")] = 1,
    recipe: Annotated[str, typer.Option(help="Whose training choices (timesteps, loss weight, caption dropout, "
                                             "jitter) to train with; the architecture stays the pipeline's.")
                      ] = "v1",
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Train the toy pipeline's UNet and text encoder further (a larger training budget)."""
    from experiments.shapes.train_toy import extend_sd
    from models.toy_models import toy_folder

    with user_errors("nothing was written to --out."):
        folder = extend_sd(sd or toy_folder("toy:sd"), out, steps, seed=seed, progress=progress, recipe=recipe)
    typer.echo(f"pipeline written to {folder}; score it with `harness run --scorer diffusion --model {folder}`")


@app.command("diagnose")
def toy_diagnose(
    out: Annotated[Path, typer.Option(help="Folder for the sample grids, layout.csv, timesteps.csv/png, "
                                           "summary.json.")],
    sd: Annotated[Optional[Path], typer.Option(help="The pipeline to diagnose. Default: toy:sd.")] = None,
    per_relation: Annotated[int, typer.Option(help="Sampled captions per relation, held-out and training each.")
                            ] = 25,
    steps: Annotated[int, typer.Option(help="DDIM sampling steps.")] = 30,
    guidance: Annotated[str, typer.Option(help="Comma-separated classifier-free guidance scales (1: none).")
                        ] = "1,4",
    scenes: Annotated[int, typer.Option(help="Scenes per split for the per-timestep denoising errors.")] = 120,
    seed: Annotated[int, typer.Option(help="Seed of the sampling and scoring noise.")] = 0,
    device: Annotated[str, typer.Option(help="Device of the sampling: cpu, cuda, ...")] = "cpu",
) -> None:
    """Does the toy diffusion model know where things are? Samples images for captions of each
    relation and checks the layout by colour, does the same for the image the caption alone makes
    it expect at high noise, and measures per timestep whether the denoising error separates a
    caption from its swap."""
    from experiments.shapes.diagnose import DiagnosisPlan, diagnose
    from models.toy_models import toy_folder

    with user_errors("nothing complete was written to --out."):
        plan = DiagnosisPlan(per_relation=per_relation, steps=steps, guidance=csv_list(guidance, float),
                             scenes=scenes, seed=seed)
        summary = diagnose(sd or toy_folder("toy:sd"), out, plan, device=device,
                           label=str(sd) if sd else "toy:sd")
    for key, value in summary["layout_acc"].items():
        found = summary["found_both"][key]
        typer.echo(f"layout accuracy, {key}: {100 * value:.1f}%"
                   + (f" (both objects found in {100 * found:.1f}%)" if found == found else ""))
    typer.echo(f"figures and tables in {out}")


@app.command("experiment")
def toy_experiment(
    out: Annotated[Path, typer.Option(help="Folder of the experiment's rows, runs and fine-tuned models.")] = Path(
        "results/shapes-experiment"),
    seeds: Annotated[str, typer.Option(help="Comma-separated fine-tuning seeds.")] = "0,1,2",
    heads: Annotated[str, typer.Option(help="h_w designs to try: linear, normalised, frozen-fit.")
                     ] = "linear,normalised,frozen-fit",
    grads: Annotated[str, typer.Option(help="SDS gradient modes: full, detached.")] = "full,detached",
    lam: Annotated[float, typer.Option("--lambda", help="Weight of L_SDS in the SDS-CLIP arms.")] = 1.0,
    steps: Annotated[int, typer.Option(help="Fine-tuning steps per run.")] = 150,
    items: Annotated[int, typer.Option(help="Test items per shapes subset.")] = 400,
    toy_root: Annotated[Optional[Path], typer.Option(
        help="Folder of the toy models. Default: $HARNESS_TOY_DIR, else the shipped models/toy.")] = None,
    device: Annotated[str, typer.Option(help="auto (cuda if available), cpu, cuda, ...")] = "auto",
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Toy CLIP vs toy diffusion score vs SDS-CLIP vs the lambda = 0 control on every shapes subset,
    over several seeds; writes leaderboard rows, the paired comparisons of `harness compare`
    (comparisons.csv: each arm against its seed's control), summary.csv, summary.md, shortcut.csv and
    a figure into --out (`harness report --results-dir OUT` links the comparisons to the items)."""
    from experiments.shapes.experiment import ExperimentPlan, run_experiment

    with user_errors("finished fine-tunings and scores are kept in --out; rerun the same command to go on."):
        plan = ExperimentPlan(seeds=csv_list(seeds, int), heads=csv_list(heads), grads=csv_list(grads), lam=lam,
                              steps=steps, items=items)
        path = run_experiment(out, plan, toy_root=toy_root, device=device, progress=progress)
    typer.echo(f"summary written to {path}; figure {path.parent / 'shapes_experiment.png'}")

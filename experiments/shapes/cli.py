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
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Train the toy CLIP, the toy Stable Diffusion pipeline (VAE, text encoder, UNet) and the toy
    SDS-CLIP on the shapes training split; write training_log.csv beside them. Use them with
    HARNESS_TOY_DIR=OUT."""
    from experiments.shapes.train_toy import train_toy_models

    with user_errors("the models in --out are unchanged; the partial run stays in its staging folder there."):
        folders = train_toy_models(out, budget=budget, seed=seed, progress=progress)
    for name, folder in folders.items():
        typer.echo(f"toy:{name:<9} {folder}")
    typer.echo(f"use them with HARNESS_TOY_DIR={out}")


@app.command("extend-sd")
def toy_extend_sd(
    out: Annotated[Path, typer.Option(help="Folder for the further-trained pipeline and its training_log.csv.")],
    steps: Annotated[int, typer.Option(help="Further UNet + text encoder steps.")] = 2800,
    sd: Annotated[Optional[Path], typer.Option(help="The pipeline to start from. Default: toy:sd.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the fresh training scenes.")] = 1,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Train the toy pipeline's UNet and text encoder further (a larger training budget)."""
    from experiments.shapes.train_toy import extend_sd
    from models.toy_models import toy_folder

    with user_errors("nothing was written to --out."):
        folder = extend_sd(sd or toy_folder("toy:sd"), out, steps, seed=seed, progress=progress)
    typer.echo(f"pipeline written to {folder}; score it with `harness run --scorer diffusion --model {folder}`")


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

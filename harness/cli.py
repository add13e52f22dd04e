"""The `harness` command: a thin typer layer over plain functions in harness.runner and harness.results.

Only typer and the registry are imported at start-up, so `harness ls` answers at once; torch,
pandas and the plug-ins load inside the commands that need them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from harness.defaults import default_data_root
from harness.errors import HarnessError
from harness.registry import BENCHMARKS, SCORERS

app = typer.Typer(
    help="Compositional image-text evaluation: CLIP, diffusion scores and SDS-CLIP on Winoground and more.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Input problems end with their message and exit code 2, no traceback; Ctrl-C says how to resume."""
    try:
        yield
    except HarnessError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        typer.echo("\ninterrupted: the scores computed so far are stored; rerun the same command to resume.",
                   err=True)
        raise typer.Exit(130) from None


def _parse_options(pairs: list[str]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise HarnessError(f"--opt {pair!r} must look like key=value")
        options[key.strip()] = value.strip()
    return options


@app.command("ls")
def ls() -> None:
    """List the registered scorers and benchmarks, one line each."""
    for title, registry in (("scorers", SCORERS), ("benchmarks", BENCHMARKS)):
        typer.echo(f"{title}:")
        for entry in registry.entries():
            typer.echo(f"  {entry.name:<14} {entry.summary}")


@app.command("run")
def run(
    scorer: Annotated[str, typer.Option(help="Scorer name (see `harness ls`).")] = "clip",
    bench: Annotated[str, typer.Option(help="Benchmark, or benchmark:subset (see `harness ls`).")] = "shapes",
    model: Annotated[Optional[str], typer.Option(
        help="clip: open_clip architecture (ViT-B-32), local-dir:/path or hf-hub:org/repo; diffusion: a Stable "
             "Diffusion hub id or folder; sds-clip: a `harness finetune` output folder. Default: the scorer's toy "
             "model in models/toy (trained on the shapes world).")] = None,
    pretrained: Annotated[Optional[str], typer.Option(
        help="Pretrained tag (openai, laion2b_s34b_b79k, ...) or a weights file (.pt/.bin/.safetensors).")] = None,
    data_root: Annotated[Optional[Path], typer.Option(
        help="Folder holding the benchmark data. Default: $HARNESS_DATA, else ./data.")] = None,
    results_dir: Annotated[Path, typer.Option(help="Where leaderboard.csv, runs/ and the score store go.")] = Path(
        "results"),
    limit: Annotated[Optional[int], typer.Option(help="Evaluate only the first N items.")] = None,
    batch_size: Annotated[int, typer.Option(help="Images or texts per forward pass.")] = 64,
    device: Annotated[str, typer.Option(help="auto (cuda if available), cpu, cuda, cuda:1, ...")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed for the bootstrap and for any randomness of the scorer.")] = 0,
    workers: Annotated[Optional[int], typer.Option(
        help="Image-decoding worker processes. Default: min(4, cores - 2).")] = None,
    opt: Annotated[Optional[list[str]], typer.Option(
        help="Scorer option key=value, repeatable (e.g. --opt precision=fp32).")] = None,
    timesteps: Annotated[Optional[str], typer.Option(
        help="Diffusion scorer: number of evenly spaced timesteps, or a list like 100,500,900.")] = None,
    noise_samples: Annotated[Optional[int], typer.Option(
        help="Diffusion scorer: noise draws per timestep.")] = None,
    bench_opt: Annotated[Optional[list[str]], typer.Option(
        help="Benchmark option key=value, repeatable (e.g. --bench-opt coco_json=/data/karpathy.json).")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Score a benchmark with a scorer; append result rows to <results-dir>/leaderboard.csv.

    Scores are stored per item as they are computed: rerunning the same command after an
    interruption resumes where it stopped.
    """
    from harness import results
    from harness.runner import run as run_benchmark

    with _user_errors():
        options = _parse_options(opt or [])
        for key, value in (("timesteps", timesteps), ("noise_samples", noise_samples)):
            if value is not None:
                options[key] = value
        outcome = run_benchmark(
            scorer=scorer, bench=bench, model=model, pretrained=pretrained, data_root=data_root,
            results_dir=results_dir, limit=limit, batch_size=batch_size, device=device, seed=seed,
            workers=workers, options=options, bench_options=_parse_options(bench_opt or []),
            progress=progress,
        )
    if not outcome.rows:  # a rank other than 0 of a distributed run: rank 0 reports
        return
    typer.echo(results.format_metric_rows(outcome.rows))
    for subset, why in outcome.skipped.items():
        typer.echo(f"skipped {subset}: {why}")
    scored = outcome.evaluation.scored_now
    typer.echo(f"\n{len(outcome.evaluation.items)} items ({scored} scored now, "
               f"{len(outcome.evaluation.items) - scored} from the score store)")
    typer.echo(f"rows appended to   {outcome.leaderboard}")
    typer.echo(f"run folder         {outcome.run_dir} (config.json, metrics.csv, item_scores.jsonl)")
    for key, value in outcome.report.items():
        typer.echo(f"{key:<18} {value}")


@app.command("finetune")
def finetune(
    clip: Annotated[str, typer.Option(help="open_clip architecture (ViT-B-32), local-dir:/path or hf-hub:org/repo.")],
    sd: Annotated[str, typer.Option(help="Stable Diffusion pipeline: a hub id in the local cache or a folder.")],
    out: Annotated[Path, typer.Option(help="Output folder: an open_clip local-dir model plus h_w, config, losses.")],
    pretrained: Annotated[Optional[str], typer.Option(help="open_clip pretrained tag or weights file.")] = None,
    data_root: Annotated[Optional[Path], typer.Option(
        help="Holds coco/annotations/captions_train2017.json and coco/train2017/. Default: $HARNESS_DATA, else ./data.")
    ] = None,
    captions: Annotated[Optional[Path], typer.Option(help="Instead of COCO: a JSONL/CSV of image,caption rows.")] = None,
    lam: Annotated[float, typer.Option("--lambda", help="Weight of L_SDS; 0 is the contrastive-only control.")] = 1.0,
    lr: Annotated[float, typer.Option(help="Learning rate of CLIP's trained parameters.")] = 1e-5,
    head_lr: Annotated[float, typer.Option(help="Learning rate of h_w (trained from scratch).")] = 1e-3,
    batch_size: Annotated[int, typer.Option(help="Global batch size (all processes together).")] = 64,
    epochs: Annotated[int, typer.Option(help="Passes over the images (one random caption per image each).")] = 5,
    warmup_steps: Annotated[int, typer.Option(help="Linear warm-up steps before cosine decay.")] = 50,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 0.0,
    t_min: Annotated[int, typer.Option(help="Smallest timestep of L_SDS.")] = 20,
    t_max: Annotated[int, typer.Option(help="Largest timestep of L_SDS (exclusive).")] = 980,
    train: Annotated[str, typer.Option(help="Trained CLIP parameters: image-ln, text-ln, both-ln or all.")] = "image-ln",
    sds_grad: Annotated[str, typer.Option(help="full (through the UNet) or detached (no UNet Jacobian).")] = "full",
    head: Annotated[str, typer.Option(
        help="h_w: linear (the paper), normalised (each z rescaled to unit variance) or frozen-fit (fitted to "
             "the VAE latents once, then fixed).")] = "linear",
    grad_accum: Annotated[int, typer.Option(help="Micro-batches per optimizer step.")] = 1,
    grad_checkpointing: Annotated[bool, typer.Option(help="Recompute UNet activations to save memory.")] = False,
    max_steps: Annotated[Optional[int], typer.Option(help="Stop after this many optimizer steps.")] = None,
    save_every: Annotated[int, typer.Option(help="Steps between checkpoints.")] = 500,
    on_bad_image: Annotated[str, typer.Option(help="skip (counted) or fail on an image that will not decode.")] = "skip",
    seed: Annotated[int, typer.Option(help="Seed of h_w's initialisation, data order, timesteps and noise.")] = 0,
    device: Annotated[str, typer.Option(help="auto (cuda if available), cpu, cuda, ...")] = "auto",
    workers: Annotated[int, typer.Option(help="Image-decoding processes per rank.")] = 2,
    resume: Annotated[bool, typer.Option(help="Continue the run saved in --out.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Fine-tune CLIP's LayerNorms and a linear map with L_CLIP + lambda * L_SDS (SDS-CLIP).

    The output folder loads with plain open_clip as local-dir:OUT, and with
    `harness run --scorer sds-clip --model OUT`.
    """
    from models.finetune import FinetuneConfig
    from models.finetune import finetune as run_finetune

    with _user_errors():
        config = FinetuneConfig(
            clip=clip, sd=sd, out=str(out), pretrained=pretrained, captions=str(captions) if captions else None,
            data_root=str(data_root or default_data_root()), lam=lam, lr=lr, head_lr=head_lr,
            batch_size=batch_size, epochs=epochs, warmup_steps=warmup_steps, weight_decay=weight_decay,
            t_min=t_min, t_max=t_max, train=train, sds_grad=sds_grad, head=head, grad_accum=grad_accum,
            grad_checkpointing=grad_checkpointing, max_steps=max_steps, save_every=save_every,
            on_bad_image=on_bad_image, seed=seed, device=device, workers=workers)
        folder = run_finetune(config, resume=resume, progress=progress)
    from harness import distributed

    if distributed.world()[0] == 0:
        typer.echo(f"fine-tuned model in {folder} (losses.csv, finetune_config.json); evaluate it with "
                   f"`harness run --scorer sds-clip --model {folder} --bench winoground`")


@app.command("leaderboard")
def leaderboard(
    results_dir: Annotated[Path, typer.Option(help="Folder holding leaderboard.csv.")] = Path("results"),
    bench: Annotated[Optional[list[str]], typer.Option(help="Only these benchmarks (repeatable).")] = None,
    breakdowns: Annotated[bool, typer.Option(
        help="Also show breakdown subsets (field=value columns).")] = False,
    csv: Annotated[Optional[Path], typer.Option(help="Also write the wide table to this CSV file.")] = None,
) -> None:
    """Show the leaderboard: scorer x model rows, benchmark/subset/metric columns (newest run wins)."""
    from harness import results

    with _user_errors():
        wide = results.pivot(results.read_leaderboard(results_dir), benchmarks=bench, breakdowns=breakdowns)
    typer.echo(results.format_table(wide))
    if csv is not None:
        csv.parent.mkdir(parents=True, exist_ok=True)
        wide.to_csv(csv, index=False)
        typer.echo(f"\nwide table written to {csv}")


@app.command("report")
def report(
    results_dir: Annotated[Path, typer.Option(help="Folder holding leaderboard.csv.")] = Path("results"),
    out: Annotated[Optional[Path], typer.Option(help="Where the figures and report.md go. Default: RESULTS_DIR/report.")
                   ] = None,
) -> None:
    """Figures of the leaderboard (bars with confidence intervals per benchmark) and a markdown page."""
    from harness.report import make_report

    with _user_errors():
        path = make_report(results_dir, out)
    typer.echo(f"report written to {path}")


@app.command("data")
def data(
    data_root: Annotated[Optional[Path], typer.Option(
        help="Folder holding the benchmark data. Default: $HARNESS_DATA, else ./data.")] = None,
) -> None:
    """What each benchmark needs, what is found and what is missing."""
    root = data_root or default_data_root()
    typer.echo(f"data root: {root}")
    for entry in BENCHMARKS.entries():
        with _user_errors():
            requirements = BENCHMARKS.get(entry.name).describe_data(root)
        found = sum(r.found for r in requirements)
        state = "MISSING" if not found else "all found" if found == len(requirements) else "partly found"
        typer.echo(f"\n{entry.name}: {state}")
        for r in requirements:
            typer.echo(f"  [{'x' if r.found else ' '}] {r.what}: {r.path}")
        hints = list(dict.fromkeys(r.how_to_get for r in requirements if not r.found and r.how_to_get))
        for hint in hints:
            typer.echo(f"      how to get it: {hint}")


toy_app = typer.Typer(help="The toy models of the shapes world: train them, and run the SDS-CLIP experiment on them.",
                      no_args_is_help=True)
app.add_typer(toy_app, name="toy")


def _csv_list(text: str, cast=str) -> tuple:
    return tuple(cast(part.strip()) for part in text.split(",") if part.strip())


@toy_app.command("train")
def toy_train(
    out: Annotated[Optional[Path], typer.Option(
        help="Where the toy models go. Default: models/toy in the package; the models there are replaced only "
             "when training finishes.")] = None,
    budget: Annotated[str, typer.Option(help="full (the shipped models, ~30 min on 2 cores) or smoke (seconds).")
                      ] = "full",
    seed: Annotated[int, typer.Option(help="Seed of the training scenes and initialisations.")] = 0,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Train the toy CLIP, the toy Stable Diffusion pipeline (VAE, text encoder, UNet) and the toy
    SDS-CLIP on the shapes training split; write training_log.csv beside them."""
    from models.toy import TOY_DIR
    from models.toy.train import train_toy_models

    with _user_errors():
        folders = train_toy_models(out or TOY_DIR, budget=budget, seed=seed, progress=progress)
    for scorer, folder in folders.items():
        typer.echo(f"{scorer:<10} {folder}")


@toy_app.command("extend-sd")
def toy_extend_sd(
    out: Annotated[Path, typer.Option(help="Folder for the further-trained pipeline and its training_log.csv.")],
    steps: Annotated[int, typer.Option(help="Further UNet + text encoder steps.")] = 2800,
    sd: Annotated[Optional[Path], typer.Option(help="The pipeline to start from. Default: the toy one.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the fresh training scenes.")] = 1,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Train the toy pipeline's UNet and text encoder further (a larger training budget)."""
    from models.toy import default_model
    from models.toy.train import extend_sd

    with _user_errors():
        folder = extend_sd(sd or Path(default_model("diffusion")), out, steps, seed=seed, progress=progress)
    typer.echo(f"pipeline written to {folder}; score it with `harness run --scorer diffusion --model {folder}`")


@toy_app.command("experiment")
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
    toy_root: Annotated[Optional[Path], typer.Option(help="Folder of the toy models. Default: models/toy.")] = None,
    device: Annotated[str, typer.Option(help="auto (cuda if available), cpu, cuda, ...")] = "auto",
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Toy CLIP vs toy diffusion score vs SDS-CLIP vs the lambda = 0 control on every shapes subset,
    over several seeds; writes leaderboard rows, summary.csv, shortcut.csv and a figure into --out."""
    from models.toy.experiment import ExperimentPlan, run_experiment

    with _user_errors():
        plan = ExperimentPlan(seeds=_csv_list(seeds, int), heads=_csv_list(heads), grads=_csv_list(grads), lam=lam,
                              steps=steps, items=items)
        path = run_experiment(out, plan, toy_root=toy_root, device=device, progress=progress)
    typer.echo(f"summary written to {path}; figure {path.parent / 'shapes_experiment.png'}")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="harness: %(message)s")
    logging.getLogger("harness").setLevel(logging.INFO)
    app()

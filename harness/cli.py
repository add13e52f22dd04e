"""The `harness` command: a thin typer layer over plain functions in harness.runner and harness.results.

Only typer, the registries and the small modules that hold the plug-in tables are imported at
start-up, so `harness ls` answers at once; torch, pandas and the plug-ins themselves load inside
the commands that need them. Commands that plug-ins declare (``harness finetune``, ``harness toy``)
come through the same registry door as scorers and benchmarks.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from harness.cli_support import user_errors
from harness.defaults import default_data_root
from harness.errors import HarnessError, UnknownNameError
from harness.options import parse_pairs
from harness.registry import BENCHMARKS, COMMANDS, SCORERS

app = typer.Typer(
    help="Compositional image-text evaluation: CLIP, diffusion scores and SDS-CLIP on Winoground and more.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command("ls")
def ls(
    name: Annotated[Optional[str], typer.Argument(
        help="A scorer or benchmark: show its options (type, default, help), subsets and default model.")] = None,
) -> None:
    """List the registered scorers, benchmarks and plug-in commands, one line each; or one plug-in's options."""
    if name is None:
        for title, registry in (("scorers", SCORERS), ("benchmarks", BENCHMARKS), ("plug-in commands", COMMANDS)):
            typer.echo(f"{title}:")
            for entry in registry.entries():
                typer.echo(f"  {entry.name:<14} {entry.summary}")
        typer.echo("\n`harness ls NAME` shows a scorer's or benchmark's options.")
        return
    with user_errors():
        typer.echo(_describe_plugin(name))


def _describe_plugin(name: str) -> str:
    from tabulate import tabulate

    from harness.options import describe_options
    from harness.registry import unknown_name_message

    registry = SCORERS if name in SCORERS.names() else BENCHMARKS if name in BENCHMARKS.names() else None
    if registry is None:
        raise UnknownNameError(unknown_name_message("scorer or benchmark", name, SCORERS.names() + BENCHMARKS.names()))
    entry, cls = registry.entry(name), registry.get(name)
    lines = [f"{registry.kind} {name}: {entry.summary}", f"  from {entry.target} ({entry.origin})"]
    if registry is SCORERS:
        lines.append(f"  default model (no --model): {cls.default_model or '(none: pass --model)'}")
        flag = "--opt"
    else:
        lines.append(f"  subsets ({name}:SUBSET): {', '.join(cls.subsets) or '(none)'}")
        flag = "--bench-opt"
    if cls.OPTIONS:
        lines += ["", f"options ({flag} key=value):",
                  tabulate(describe_options(cls.OPTIONS), headers=["option", "type", "default", "help"])]
    else:
        lines.append(f"  no options ({flag})")
    return "\n".join(lines)


@app.command("run")
def run(
    scorer: Annotated[str, typer.Option(help="Scorer name (see `harness ls`).")] = "clip",
    bench: Annotated[str, typer.Option(help="Benchmark, or benchmark:subset (see `harness ls`).")] = "shapes",
    model: Annotated[Optional[str], typer.Option(
        help="clip: open_clip architecture (ViT-B-32), local-dir:/path or hf-hub:org/repo; diffusion: a Stable "
             "Diffusion hub id or folder; sds-clip: a `harness finetune` output folder. Default: the scorer's own "
             "(`harness ls SCORER`), the toy models of the shapes world for the built-in scorers.")] = None,
    pretrained: Annotated[Optional[str], typer.Option(
        help="Pretrained tag (openai, laion2b_s34b_b79k, ...) or a weights file (.pt/.bin/.safetensors).")] = None,
    data_root: Annotated[Optional[Path], typer.Option(
        help="Folder holding the benchmark data. Default: $HARNESS_DATA, else ./data.")] = None,
    results_dir: Annotated[Path, typer.Option(help="Where leaderboard.csv, runs/ and the score store go.")] = Path(
        "results"),
    limit: Annotated[Optional[int], typer.Option(help="Evaluate only the first N items.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(
        help="The same as --opt batch_size=N: inputs per forward pass of the scorer's model.")] = None,
    chunk_items: Annotated[int, typer.Option(
        help="Items scored and committed to the score store at a time (what an interruption can lose).")] = 64,
    device: Annotated[str, typer.Option(help="auto (cuda if available), cpu, cuda, cuda:1, ...")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed for the bootstrap and for any randomness of the scorer.")] = 0,
    workers: Annotated[Optional[int], typer.Option(
        help="Image-decoding worker processes. Default: min(4, cores - 2).")] = None,
    opt: Annotated[Optional[list[str]], typer.Option(
        help="Scorer option key=value, repeatable (e.g. --opt precision=fp32); `harness ls SCORER` lists them.")
                   ] = None,
    timesteps: Annotated[Optional[str], typer.Option(
        help="The same as --opt timesteps=...: a count of evenly spaced timesteps, or a list like 100,500,900.")
                         ] = None,
    bench_opt: Annotated[Optional[list[str]], typer.Option(
        help="Benchmark option key=value, repeatable (e.g. --bench-opt coco_json=/data/karpathy.json); "
             "`harness ls BENCHMARK` lists them.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    shortlist: Annotated[Optional[str], typer.Option(
        help="Re-rank only a cheap scorer's k best candidates per image (and per text in retrieval): "
             "SCORER[:MODEL[:PRETRAINED]]:k=N[:option=value...], e.g. clip:ViT-B-32:openai:k=10, "
             "clip:local-dir:/path:k=10, clip:toy:clip:k=5.")] = None,
) -> None:
    """Score a benchmark with a scorer; append result rows to <results-dir>/leaderboard.csv.

    Scores are stored per item as they are computed: rerunning the same command after an
    interruption resumes where it stopped.
    """
    from harness import results
    from harness.runner import run as run_benchmark

    with user_errors():
        options = parse_pairs(opt or [], "--opt")
        for key, value in (("batch_size", batch_size), ("timesteps", timesteps)):
            if value is not None:  # declared sugar for the scorer option of the same name
                options[key] = value
        outcome = run_benchmark(
            scorer=scorer, bench=bench, model=model, pretrained=pretrained, data_root=data_root,
            results_dir=results_dir, limit=limit, device=device, seed=seed, workers=workers,
            chunk_items=chunk_items, options=options, bench_options=parse_pairs(bench_opt or [], "--bench-opt"),
            progress=progress, shortlist=shortlist,
        )
    if not outcome.rows:  # a rank other than 0 of a distributed run: rank 0 reports
        return
    typer.echo(results.format_metric_rows(outcome.rows))
    for subset, why in outcome.skipped.items():
        typer.echo(f"skipped {subset}: {why}")
    scored, skipped = outcome.evaluation.scored_now, sum(outcome.evaluation.not_computed.values())
    typer.echo(f"\n{len(outcome.evaluation.items)} items ({scored} scored now, "
               f"{len(outcome.evaluation.items) - scored - skipped} from the score store"
               + (f", {skipped} not computable" if skipped else "") + ")")
    for why, count in outcome.evaluation.not_computed.items():
        typer.echo(f"{count} items not computable: {why}")
    typer.echo(f"rows appended to   {outcome.leaderboard}")
    typer.echo(f"run folder         {outcome.run_dir} (config.json, metrics.csv, item_scores.jsonl)")
    for key, value in outcome.report.items():
        typer.echo(f"{key:<18} {value}")


@app.command("score")
def score(
    images: Annotated[list[Path], typer.Argument(help="Image files to score (any format PIL reads).",
                                                 show_default=False)],
    text: Annotated[Optional[list[str]], typer.Option(
        "--text", "-t", help="A text to score against every image; repeat for several.")] = None,
    scorer: Annotated[str, typer.Option(help="Scorer name (see `harness ls`).")] = "clip",
    model: Annotated[Optional[str], typer.Option(
        help="As for `harness run`. Default: the scorer's own (`harness ls SCORER`), the toy models for the "
             "built-in scorers.")] = None,
    pretrained: Annotated[Optional[str], typer.Option(
        help="Pretrained tag (openai, laion2b_s34b_b79k, ...) or a weights file (.pt/.bin/.safetensors).")] = None,
    device: Annotated[str, typer.Option(help="auto (cuda if available), cpu, cuda, cuda:1, ...")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed for any randomness of the scorer (the diffusion noise).")] = 0,
    batch_size: Annotated[Optional[int], typer.Option(
        help="The same as --opt batch_size=N: inputs per forward pass of the scorer's model.")] = None,
    timesteps: Annotated[Optional[str], typer.Option(
        help="The same as --opt timesteps=...: a count of evenly spaced timesteps, or a list like 100,500,900.")
                         ] = None,
    opt: Annotated[Optional[list[str]], typer.Option(
        help="Scorer option key=value, repeatable (e.g. --opt precision=fp32); `harness ls SCORER` lists them.")
                   ] = None,
    workers: Annotated[int, typer.Option(help="Image-decoding worker processes (0: decode in this process).")] = 0,
    json_output: Annotated[bool, typer.Option(
        "--json", help="Print JSON (scorer, model, images, texts, scores[image][text]) instead of a table.")] = False,
) -> None:
    """Score images against texts with any scorer: the images x texts matrix (higher = better match).

    Example: harness score dog.jpg cat.jpg -t "a dog on a couch" -t "a couch on a dog"
    """
    from harness import scoring

    with user_errors("nothing was scored."):
        options = parse_pairs(opt or [], "--opt")
        for key, value in (("batch_size", batch_size), ("timesteps", timesteps)):
            if value is not None:  # declared sugar for the scorer option of the same name
                options[key] = value
        inputs, texts = scoring.check_inputs([str(p) for p in images], text or [])
        built = scoring.get_scorer(scorer, model=model, pretrained=pretrained, device=device, seed=seed,
                                   options=options)
        matrix = scoring.score_pairs(built, inputs, texts, workers=workers)
    described = built.describe()
    labels = scoring.image_labels(inputs)
    if json_output:
        import json

        typer.echo(json.dumps({
            "scorer": scorer, "model": described.get("model", model or ""),
            "pretrained": described.get("pretrained", pretrained or ""), "device": built.device_name,
            "images": labels, "texts": texts, "scores": [[float(v) for v in row] for row in matrix],
        }, indent=2))
        return
    from tabulate import tabulate

    typer.echo(f"{scorer} scores, model {described.get('model', model)} on {built.device_name} "
               "(rows: images, columns: texts; higher = better match)")
    typer.echo(tabulate([[label, *row] for label, row in zip(labels, matrix.tolist())],
                        headers=["image", *texts], tablefmt="github", floatfmt=".4f"))


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

    bad: list[tuple[int, str]] = []
    with user_errors():
        wide = results.pivot(results.read_leaderboard(results_dir, bad), benchmarks=bench, breakdowns=breakdowns)
    typer.echo(results.format_table(wide))
    path = results_dir / results.LEADERBOARD
    for line, why in bad:
        typer.echo(f"warning: {path} line {line} left out: {why}", err=True)
    if bad:
        typer.echo("(fix or delete those lines: `harness run` refuses to append to this file until then)", err=True)
    for run_id, why in results.stale_runs(results_dir):
        typer.echo(f"warning: run {run_id} never finished ({why}); rerun its command to resume it", err=True)
    if csv is not None:
        csv.parent.mkdir(parents=True, exist_ok=True)
        wide.to_csv(csv, index=False)
        typer.echo(f"\nwide table written to {csv}")


@app.command("compare")
def compare(
    runs: Annotated[list[str], typer.Argument(
        help="Two or more runs: run ids (folders in RESULTS_DIR/runs) or SCORER:MODEL (the newest finished run of "
             "that scorer and model on each benchmark, e.g. clip:toy:clip). Every run is compared with the first.")],
    results_dir: Annotated[Path, typer.Option(help="Folder holding runs/ and scores.sqlite.")] = Path("results"),
    bench: Annotated[Optional[str], typer.Option(help="Only this benchmark.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the paired bootstrap.")] = 0,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples.")] = 1000,
    data_root: Annotated[Optional[Path], typer.Option(
        help="Where the benchmark data is now, if it moved since the runs (default: the runs' own).")] = None,
    write: Annotated[bool, typer.Option(
        help="Append the rows to RESULTS_DIR/comparisons.csv (and the items behind them to comparisons/).")] = True,
) -> None:
    """Paired comparison of runs on the items they share: the difference with a paired bootstrap
    interval and, for right/wrong outcomes, an exact McNemar test, per subset and metric."""
    from harness.compare import compare as compare_runs
    from harness.compare import format_comparison

    if resamples < 1:
        typer.echo("error: --resamples must be at least 1", err=True)
        raise typer.Exit(2)
    with user_errors("nothing was written."):
        result = compare_runs(runs, results_dir, bench=bench, seed=seed, resamples=resamples, data_root=data_root,
                              write=write)
    typer.echo(format_comparison(result))
    if result.csv_path is not None:
        typer.echo(f"\ncomparison {result.comparison_id}: rows appended to {result.csv_path}; items behind them in "
                   f"{result.items_path} (`harness report` links them to its item browser)")


@app.command("report")
def report(
    results_dir: Annotated[Path, typer.Option(help="Folder holding leaderboard.csv.")] = Path("results"),
    out: Annotated[Optional[Path], typer.Option(help="Where the figures and report.md go. Default: RESULTS_DIR/report.")
                   ] = None,
    html: Annotated[bool, typer.Option(help="Also write index.html: sortable leaderboard, comparisons, item browser.")
                    ] = True,
    max_items: Annotated[int, typer.Option(
        help="Items per benchmark in the item browser (those that comparisons point at are always there).")] = 2000,
    thumbnails: Annotated[bool, typer.Option(help="Write thumbnails of the items' images into the report folder.")
                          ] = True,
) -> None:
    """Figures of the leaderboard (bars with confidence intervals per benchmark), a markdown page
    and a browsable index.html (no server, no network) with an item browser per benchmark."""
    from harness.report import make_report

    with user_errors():
        path = make_report(results_dir, out, html=html, max_items=max_items, thumbnails=thumbnails)
    typer.echo(f"report written to {path}")
    if html:
        typer.echo(f"open {path.parent / 'index.html'} in a browser (from disk: no server needed)")


@app.command("data")
def data(
    data_root: Annotated[Optional[Path], typer.Option(
        help="Folder holding the benchmark data. Default: $HARNESS_DATA, else ./data.")] = None,
    download: Annotated[Optional[list[str]], typer.Option(
        help="Fetch instead of listing, repeatable: a benchmark name (into --data-root), or SCORER:MODEL for "
             "weights (clip:ViT-B-32:openai, clip:hf-hub:org/repo, diffusion:stabilityai/stable-diffusion-2-1-base). "
             "The only command that goes online; what cannot be fetched is explained.")] = None,
) -> None:
    """What each benchmark needs, what is found and what is missing; or, with --download, fetch it.

    Runs never download: they read local files and the local Hugging Face caches only.
    """
    root = data_root or default_data_root()
    if download:
        failed = 0
        for name in download:
            try:
                for line in _download(name, root):
                    typer.echo(f"downloaded {line}")
            except HarnessError as err:
                failed += 1
                typer.echo(f"{name}: {err}", err=True)
        if failed:
            raise typer.Exit(2)
        return
    typer.echo(f"data root: {root}")
    for entry in BENCHMARKS.entries():
        with user_errors():
            requirements = BENCHMARKS.get(entry.name).describe_data(root)
        found = sum(r.found for r in requirements)
        state = "MISSING" if not found else "all found" if found == len(requirements) else "partly found"
        typer.echo(f"\n{entry.name}: {state}")
        for r in requirements:
            typer.echo(f"  [{'x' if r.found else ' '}] {r.what}: {r.path}")
        hints = list(dict.fromkeys(r.how_to_get for r in requirements if not r.found and r.how_to_get))
        for hint in hints:
            typer.echo(f"      how to get it: {hint}")


def _download(name: str, data_root: Path) -> list[str]:
    """``name`` is a benchmark, or SCORER:SPEC for a model's weights."""
    from harness.registry import unknown_name_message

    scorer, colon, spec = name.partition(":")
    if colon and scorer in SCORERS.names():
        return SCORERS.get(scorer).download(spec)
    if name in BENCHMARKS.names():
        return BENCHMARKS.get(name).download(data_root)
    raise UnknownNameError(unknown_name_message("benchmark (or SCORER:MODEL)", name, BENCHMARKS.names())
                           + f" Models: {', '.join(f'{s}:MODEL' for s in SCORERS.names())}.")


def _add_plugin_commands() -> None:
    """Commands that plug-in packages declare: a function is one command, a typer app a group."""
    for entry in COMMANDS.entries():
        target = COMMANDS.get(entry.name)
        if isinstance(target, typer.Typer):
            app.add_typer(target, name=entry.name, help=entry.summary)
        else:
            app.command(entry.name, help=entry.summary)(target)


_add_plugin_commands()


def main() -> None:
    from harness import interrupts

    interrupts.install()
    logging.basicConfig(level=logging.WARNING, format="harness: %(message)s")
    logging.getLogger("harness").setLevel(logging.INFO)
    app()

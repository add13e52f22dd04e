"""The toy models: the reduced tokenizer, training at a smoke budget, the default model, the
shipped weights, and the experiment's statistics."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys

import pytest
import torch

from harness.errors import HarnessError, MissingWeightsError, UnknownNameError
from models.clip_tokenizer import build_clip_tokenizer
from models.toy_models import SHIPPED_TOY_DIR, toy_folder


def test_the_reduced_tokenizer_cuts_shapes_captions_as_the_full_one_does():
    from benchmarks import shapes
    from experiments.shapes.train_toy import shapes_words

    full, small = build_clip_tokenizer(32), build_clip_tokenizer(32, words=shapes_words())
    assert len(small) < 1000 < len(full)
    captions = [caption for _, caption in shapes.training_pairs(300, seed=5)] + ["a drawing of a hexagon.", ""]
    for caption in captions:
        assert full.convert_ids_to_tokens(full(caption).input_ids) == \
            small.convert_ids_to_tokens(small(caption).input_ids), caption
    # a word outside the world still tokenizes, into smaller pieces, never into unknown tokens
    pieces = small.convert_ids_to_tokens(small("zebra").input_ids)
    assert "".join(pieces[1:-1]).replace("</w>", "") == "zebra"


def test_toy_names_find_the_toy_folder_or_say_how_to_make_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_TOY_DIR", str(tmp_path))
    with pytest.raises(MissingWeightsError, match=r"toy model toy:clip is missing: .*clip/open_clip_config.json.*"
                                                  r"harness toy train --out"):
        toy_folder("toy:clip")
    with pytest.raises(UnknownNameError, match="unknown toy model 'winoground'.*clip, sd, sds-clip"):
        toy_folder("toy:winoground")
    monkeypatch.delenv("HARNESS_TOY_DIR")
    assert toy_folder("toy:clip") == SHIPPED_TOY_DIR / "clip"


def test_each_scorer_declares_its_toy_model_and_the_runner_asks_it():
    from harness.registry import SCORERS

    assert {name: SCORERS.get(name).default_model for name in SCORERS.names()} == \
        {"clip": "toy:clip", "diffusion": "toy:sd", "sds-clip": "toy:sds-clip"}


@pytest.fixture(scope="module")
def smoke_toys(tmp_path_factory):
    from experiments.shapes.train_toy import train_toy_models

    root = tmp_path_factory.mktemp("toys")
    return root, train_toy_models(root, budget="smoke", progress=False)


def test_smoke_training_writes_models_that_the_real_loaders_read(smoke_toys):
    from models.clip import load_open_clip
    from models.stable_diffusion import load_pipeline

    root, folders = smoke_toys
    clip, _, tokenizer, _, _ = load_open_clip(f"local-dir:{folders['clip']}", None)
    assert next(clip.parameters()).dtype == torch.float32  # stored in fp16, loaded in fp32
    assert tokenizer(["a red circle"]).shape == (1, 32)
    pipeline = load_pipeline(str(folders["sd"]))
    assert {next(m.parameters()).dtype for m in pipeline.modules()} == {torch.float32}
    assert pipeline.text_encoder.config.vocab_size == len(pipeline.tokenizer) < 1000
    assert pipeline.prediction_type == "epsilon" and pipeline.vae.config.scaling_factor != 0.18215
    manifest = json.loads((folders["sds-clip"] / "finetune_config.json").read_text())
    assert manifest["extra"]["base_clip"] == "toy:clip" and manifest["sd"] == "toy:sd"  # no machine paths
    with open(root / "training_log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # the shipped design trains its UNet in two stages (high-noise, then the v-weight loss)
    assert {r["stage"] for r in rows} == {"clip", "vae", "unet", "unet-extended"}
    assert {"loss", "relation_acc", "attribute_acc", "recon_mse"} <= {r["metric"] for r in rows}
    assert all(math.isfinite(float(r["value"])) for r in rows)
    assert json.loads((root / "toy_manifest.json").read_text())["budget"] == "smoke"


def test_a_crash_in_training_leaves_the_previous_toy_models_whole(smoke_toys, tmp_path, monkeypatch):
    import shutil

    from experiments.shapes import train_toy as train

    out = tmp_path / "toys"
    shutil.copytree(smoke_toys[0], out)
    before = (out / "clip" / "open_clip_model.safetensors").read_bytes()

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(train, "train_sd", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        train.train_toy_models(out, budget="smoke", progress=False)
    assert (out / "clip" / "open_clip_model.safetensors").read_bytes() == before
    staged = list(out.glob(".toy-train-*"))
    assert len(staged) == 1 and (staged[0] / "clip" / "open_clip_config.json").is_file()


def test_extending_the_toy_pipeline_trains_on_and_logs_its_curve(smoke_toys, tmp_path):
    from experiments.shapes.train_toy import extend_sd
    from models.stable_diffusion import load_pipeline

    before = load_pipeline(str(smoke_toys[1]["sd"])).unet.state_dict()
    out = extend_sd(smoke_toys[1]["sd"], tmp_path / "longer", steps=2, budget="smoke", progress=False)
    after = load_pipeline(str(out)).unet.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    with open(out / "training_log.csv", newline="") as f:
        assert {r["stage"] for r in csv.DictReader(f)} == {"unet-extended"}


SCORERS_TOY = {"clip": "toy:clip", "diffusion": "toy:sd", "sds-clip": "toy:sds-clip"}


@pytest.mark.parametrize("scorer", ["clip", "diffusion", "sds-clip"])
def test_run_without_a_model_uses_the_toy_model_of_the_scorer(smoke_toys, tmp_path, monkeypatch, scorer):
    from harness.runner import run

    monkeypatch.setenv("HARNESS_TOY_DIR", str(smoke_toys[0]))
    options = {"timesteps": 2} if scorer == "diffusion" else {}
    result = run(scorer=scorer, results_dir=tmp_path, limit=6, progress=False, workers=0, options=options,
                 bench_options={"n": 3})
    assert {row["subset"] for row in result.rows} >= {"winoground", "relation"}  # the first 6 items
    assert {row["model"] for row in result.rows} == {SCORERS_TOY[scorer]}  # portable: the toy name, no path
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["scorer_config"]["model"] == SCORERS_TOY[scorer]


def test_the_shipped_toy_models_run_the_readme_main_job(tmp_path):
    """`harness run` with no options: the toy CLIP on every shapes subset, real numbers."""
    if not (SHIPPED_TOY_DIR / "clip" / "open_clip_config.json").is_file():
        pytest.fail(f"the shipped toy CLIP is missing from {SHIPPED_TOY_DIR}; run `harness toy train --out models/toy`")
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--results-dir", str(tmp_path), "--no-progress",
                           "--bench-opt", "n=50"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    with open(tmp_path / "leaderboard.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["subset"] for r in rows} >= {"winoground", "relation", "attribute", "zeroshot"}
    assert all(0 <= float(r["value"]) <= 100 for r in rows) and rows[0]["model"] == "toy:clip"


def test_t_interval_and_the_paired_summary(tmp_path):
    from experiments.shapes.experiment import summarise, t_interval

    mean, low, high = t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and high - mean == pytest.approx(4.303 / math.sqrt(3))
    assert math.isnan(t_interval([5.0])[1])
    per_run = [{"arm": "toy clip", "seed": "", "subset": "relation", "metric": "accuracy", "value": 50.0,
                "ci_low": 45.0, "ci_high": 55.0}]
    comparisons = []  # as harness.compare gives them for each seed, with the arm and seed added
    for seed, (control, sds, p_holm) in enumerate([(60.0, 61.0, 0.5), (62.0, 64.0, 0.01), (58.0, 61.0, 0.03)]):
        per_run += [{"arm": "control", "seed": seed, "subset": "relation", "metric": "accuracy", "value": control},
                    {"arm": "sds-linear-full", "seed": seed, "subset": "relation", "metric": "accuracy",
                     "value": sds}]
        comparisons.append({"arm": "sds-linear-full", "seed": seed, "subset": "relation", "metric": "accuracy",
                            "difference": sds - control, "p_holm": p_holm})
    rows = {r["arm"]: r for r in summarise(per_run, comparisons)}
    assert rows["toy clip"]["interval"] == "bootstrap over items" and rows["toy clip"]["ci_low"] == 45.0
    assert rows["control"]["mean"] == 60.0 and rows["control"]["runs"] == 3
    assert rows["sds-linear-full"]["diff_vs_control"] == 2.0  # paired by seed: 1, 2, 3
    assert rows["sds-linear-full"]["diff_ci_low"] == pytest.approx(2 - 4.303 / math.sqrt(3), abs=1e-3)
    assert (rows["sds-linear-full"]["seeds_better"], rows["sds-linear-full"]["seeds_worse"]) == (2, 0)

    from experiments.shapes.experiment import _write_csv
    from experiments.shapes.figures import shapes_experiment_table

    summary = summarise(per_run, comparisons)
    _write_csv(tmp_path / "summary.csv", summary, list(summary[0]))
    table = shapes_experiment_table(tmp_path / "summary.csv")
    assert "| toy clip " in table and "50.0 [45.0, 55.0]" in table and "Δ +2.0 [" in table and "▲▲" in table


def test_the_committed_experiment_summarises_the_same_from_paired_differences():
    """The committed per-run rows, with each seed's difference to its control as harness.compare
    reports it (B - A on the same 400 items), give the committed summary's paired columns."""
    from pathlib import Path

    from experiments.shapes.experiment import summarise

    folder = Path(__file__).resolve().parent.parent / "results" / "shapes-experiment"
    with open(folder / "per_run.csv", newline="") as f:
        per_run = list(csv.DictReader(f))
    with open(folder / "summary.csv", newline="") as f:
        committed = {(r["arm"], r["subset"], r["metric"]): r for r in csv.DictReader(f)}
    control = {(r["seed"], r["subset"], r["metric"]): float(r["value"]) for r in per_run if r["arm"] == "control"}
    comparisons = [{"arm": r["arm"], "seed": r["seed"], "subset": r["subset"], "metric": r["metric"],
                    "difference": float(r["value"]) - control[(r["seed"], r["subset"], r["metric"])], "p_holm": ""}
                   for r in per_run if r["arm"].startswith("sds-")]
    summary = summarise(per_run, comparisons)
    assert len(summary) == len(committed)
    for row in summary:
        old = committed[(row["arm"], row["subset"], row["metric"])]
        for column in ("mean", "ci_low", "ci_high", "diff_vs_control", "diff_ci_low", "diff_ci_high"):
            if old[column] in ("", "nan"):
                assert row[column] == "" or math.isnan(row[column]), (row, column)
            else:
                assert row[column] == pytest.approx(float(old[column]), abs=1e-3), (row, column)


def summary_rows(folder):
    with open(folder / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_the_whole_chain_on_a_reduced_budget(smoke_toys, tmp_path):
    """Toy models at the smoke budget, then the experiment: fine-tunings, scorings, summary, figure.
    Checks that it completes and writes its rows, not a particular outcome."""
    from dataclasses import replace

    from experiments.shapes.experiment import ExperimentPlan, arms, run_experiment

    plan = ExperimentPlan(seeds=(0, 1), heads=("linear", "frozen-fit"), grads=("full", "detached"), steps=3,
                          batch_size=8, items=4)
    summary = run_experiment(tmp_path / "shapes-experiment", plan, toy_root=smoke_toys[0], progress=False)
    with open(summary, newline="") as f:
        rows = list(csv.DictReader(f))
    names = {"toy clip", "toy diffusion score"} | {arm.name for arm in arms(plan)}
    assert {r["arm"] for r in rows} == names
    assert {r["subset"] for r in rows} == {"winoground", "relation", "attribute", "zeroshot"}
    assert all(r["diff_vs_control"] != "" for r in rows if r["arm"].startswith("sds-"))
    with open(tmp_path / "shapes-experiment" / "shortcut.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == len(plan.seeds) * len(arms(plan))
    assert (tmp_path / "shapes-experiment" / "shapes_experiment.png").stat().st_size > 0
    # a rerun finds everything done and scores nothing again
    before = (tmp_path / "shapes-experiment" / "leaderboard.csv").read_text()
    run_experiment(tmp_path / "shapes-experiment", plan, toy_root=smoke_toys[0], progress=False)
    assert (tmp_path / "shapes-experiment" / "leaderboard.csv").read_text() == before
    with pytest.raises(HarnessError, match=r"other settings \(steps: 3 -> 4\).*another --out"):
        run_experiment(tmp_path / "shapes-experiment", replace(plan, steps=4), toy_root=smoke_toys[0], progress=False)
    assert "shapes_experiment.png" in (tmp_path / "shapes-experiment" / "summary.md").read_text()
    # the paired comparisons come from harness compare: one per seed (every arm against that seed's
    # control) and the diffusion score against CLIP, each row linked to its items for the report
    from harness.compare import read_comparisons
    from harness.report import make_report

    folder = tmp_path / "shapes-experiment"
    comparisons = read_comparisons(folder)
    assert len({r["comparison_id"] for r in comparisons}) == 1 + len(plan.seeds)
    per_seed = [r for r in comparisons if r["pairs"] == str(len(arms(plan)) - 1)]
    assert all(any(f"sds-linear-full-seed{s}" in r["model_b"] for r in per_seed) for s in plan.seeds)
    assert all(r["p_holm"] != "" and float(r["p_holm"]) >= float(r["p_value"]) for r in per_seed)
    for row in summary_rows(folder):
        assert row["seeds_better"] != "" if row["arm"].startswith("sds-") else row["seeds_better"] == ""
    make_report(folder)
    index = (folder / "report" / "data" / "index.js").read_text()
    assert '"a_better":[' in index and (folder / "report" / "data" / "items-shapes.js").is_file()


def test_objects_are_found_by_colour_and_the_relation_checked_on_real_scenes():
    """The diagnosis's layout check: right on every rendered scene, wrong on every scene drawn with
    its objects exchanged; jittered training scenes keep their relation."""
    import numpy as np

    from benchmarks import shapes
    from experiments.shapes.diagnose import find_objects, nearest_scene, relation_holds

    scenes = shapes.scenes(60, 3, test=True)
    for scene in scenes:
        assert relation_holds(find_objects(np.asarray(shapes.render(scene)), scene), scene.relation), scene
        exchanged = np.asarray(shapes.render(scene.swapped_objects()))
        assert not relation_holds(find_objects(exchanged, scene), scene.relation), scene
        # the judge of blurred images: nearer the scene than its swap and than the other axis
        assert nearest_scene(np.asarray(shapes.render(scene)), scene) == (True, True, False)
        assert nearest_scene(exchanged, scene)[::2] == (False, True)
    empty = np.zeros((32, 32, 3), np.uint8) + np.array(shapes.BACKGROUND, np.uint8)
    assert not find_objects(empty, scenes[0]).found and not relation_holds(find_objects(empty, scenes[0]), "above")
    # offsets are for training scenes only: without them the test images are unchanged
    assert np.array_equal(np.asarray(shapes.render(scenes[0])),
                          np.asarray(shapes.render(scenes[0], offsets=(0.0, 0.0, 0.0, 0.0))))
    from experiments.shapes.train_toy import render_pool

    images, captions = render_pool(40, seed=3, jitter=0.1)
    plain, same = render_pool(40, seed=3)
    assert captions == same and not torch.equal(images, plain)
    for image, (scene, _) in zip(images.permute(0, 2, 3, 1).numpy(), shapes.training_pairs(40, 3)):
        assert relation_holds(find_objects(image, scene), scene.relation), scene


def test_diagnosis_samples_measures_layout_and_per_timestep_errors(smoke_toys, tmp_path):
    from experiments.shapes.diagnose import DiagnosisPlan, diagnose

    plan = DiagnosisPlan(per_relation=2, steps=2, guidance=(1.0, 3.0), scenes=3, timesteps=(100, 900))
    summary = diagnose(smoke_toys[1]["sd"], tmp_path / "diag", plan, label="smoke")
    names = {p.name for p in (tmp_path / "diag").iterdir()}
    assert {"samples_g1.png", "samples_g3.png", "expected_t950.png", "layout.csv", "timesteps.csv", "timesteps.png",
            "summary.json", "samples_held-out_g1.npz"} <= names
    with open(tmp_path / "diag" / "layout.csv", newline="") as f:
        layout = list(csv.DictReader(f))
    # (2 guidance scales + the expected image) x 2 splits x (4 relations + all); 2 captions per relation
    assert len(layout) == 30 and {r["n"] for r in layout if r["relation"] != "all"} == {"2"}
    sampled = [r for r in layout if not r["guidance"].startswith("expected")]
    assert len(sampled) == 20 and all(0 <= float(r["layout_acc"]) <= float(r["found_both"]) <= 1 for r in sampled)
    expected = [r for r in layout if r["guidance"] == "expected t=950"]
    assert len(expected) == 10 and all(0 <= float(r["layout_acc"]) + float(r["swapped_layout"]) <= 1
                                       for r in expected)
    with open(tmp_path / "diag" / "timesteps.csv", newline="") as f:
        per_t = list(csv.DictReader(f))
    assert {(r["split"], r["swap"], r["timestep"]) for r in per_t} == {
        (split, swap, t) for split in ("training", "held-out") for swap in ("relation", "attribute")
        for t in ("100", "900")}
    assert set(summary["layout_acc"]) == {f"{split} {how}" for split in ("held-out", "training")
                                          for how in ("g1", "g3", "expected t=950")}


def test_train_sd_trains_a_named_design_on_a_given_vae(smoke_toys, tmp_path):
    from experiments.shapes.train_toy import RECIPES, train_pipeline
    from models.stable_diffusion import load_pipeline

    with pytest.raises(HarnessError, match="--recipe 'nope' is not one of"):
        train_pipeline(tmp_path / "x", "nope", budget="smoke", progress=False)
    # a VAE of another factor is refused before anything is written (it used to end in a traceback)
    with pytest.raises(HarnessError, match="downsamples by 4, the recipe 'latent16' needs 2"):
        train_pipeline(tmp_path / "x", "latent16", vae_from=smoke_toys[1]["sd"], budget="smoke", progress=False)
    assert not (tmp_path / "x").exists()
    name = next(n for n, r in RECIPES.items() if r.vae_factor == 4 and n != "v1")
    out = train_pipeline(tmp_path / "try", name, vae_from=smoke_toys[1]["sd"], budget="smoke", steps=2,
                         progress=False)
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["recipe"] == name and recipe["plan"]["unet_steps"] == 2 and recipe["vae_from"] == "given"
    given, trained = load_pipeline(str(smoke_toys[1]["sd"])), load_pipeline(str(out))
    assert all(torch.equal(a, b) for a, b in zip(given.vae.state_dict().values(), trained.vae.state_dict().values()))


def test_adopt_sd_replaces_the_sets_pipeline_and_refits_its_sds_clip(smoke_toys, tmp_path):
    """A design trained alone becomes the set's toy:sd; the set's CLIP stays, its SDS-CLIP is
    fine-tuned again from the new teacher, and its log keeps the CLIP and VAE rows it had."""
    import shutil

    from experiments.shapes.train_toy import BUDGETS, RECIPES, adopt_sd, full_plan, train_pipeline
    from models.stable_diffusion import load_pipeline

    assert full_plan(BUDGETS["full"], "full", RECIPES["all-in-5600"]).unet_steps == 5600
    assert full_plan(BUDGETS["smoke"], "smoke", RECIPES["all-in-5600"]) == BUDGETS["smoke"]
    toys = tmp_path / "toys"
    shutil.copytree(smoke_toys[0], toys)
    clip_before = (toys / "clip" / "open_clip_model.safetensors").read_bytes()
    with pytest.raises(HarnessError, match="missing: .*recipe.json"):
        adopt_sd(toys / "sd", toys, progress=False)
    design = train_pipeline(tmp_path / "design", "all-in-5600", vae_from=toys / "sd", budget="smoke", steps=2,
                            progress=False)
    folders = adopt_sd(design, toys, progress=False)
    adopted, trained = load_pipeline(str(folders["sd"])), load_pipeline(str(design))
    assert adopted.text_encoder.config.num_hidden_layers == 6  # the design's text encoder, not the set's
    assert all(torch.equal(a, b) for a, b in zip(adopted.unet.state_dict().values(),
                                                 trained.unet.state_dict().values()))
    assert (toys / "clip" / "open_clip_model.safetensors").read_bytes() == clip_before
    manifest = json.loads((toys / "toy_manifest.json").read_text())
    assert manifest["sd_recipe"] == "all-in-5600" and manifest["sd_trained_by"]["unet_steps"] == 2
    assert json.loads((folders["sds-clip"] / "finetune_config.json").read_text())["sd"] == "toy:sd"
    with open(toys / "training_log.csv", newline="") as f:
        stages = [r["stage"] for r in csv.DictReader(f)]
    assert stages == sorted(stages, key=["clip", "vae", "unet"].index) and set(stages) == {"clip", "vae", "unet"}
    assert not [p for p in toys.iterdir() if p.name.startswith(".toy-")]  # no staging folder left behind


def test_a_two_stage_design_logs_its_second_stage_after_its_first(tmp_path):
    """The figures put a second stage's steps after the first stage's last one, not over them."""
    import pandas as pd

    from experiments.shapes.figures import continued_steps, layout_tries_figure

    rows = [("clip", 400, "loss", 1.0), ("unet", 400, "relation_acc", 0.5), ("unet", 800, "relation_acc", 0.5),
            ("unet-extended", 400, "relation_acc", 0.8), ("unet-extended", 800, "relation_acc", 1.0)]
    log = pd.DataFrame(rows, columns=["stage", "step", "metric", "value"]).assign(seconds=1.0)
    steps = continued_steps(log)
    assert list(steps["step"]) == [400, 400, 800, 1200, 1600] and list(log["step"])[3] == 400  # a copy
    log.to_csv(tmp_path / "log.csv", index=False)
    figure = layout_tries_figure([("two stages", tmp_path / "log.csv", 0)], tmp_path / "tries.png")
    assert figure.stat().st_size > 10_000

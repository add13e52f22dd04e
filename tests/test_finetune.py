"""SDS-CLIP fine-tuning on a tiny CLIP, a tiny Stable Diffusion and a COCO-layout fixture."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import open_clip
import pytest
import torch
from factories import build_tiny_clip, write_coco_captions
from factories_diffusion import build_tiny_sd
from safetensors.torch import load_file

from harness.errors import BadRecordError, HarnessError, MissingDataError
from models.finetune import FinetuneConfig, Trainer, finetune, iter_losses


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    clip = build_tiny_clip(root / "clip")
    sd = build_tiny_sd(root / "sd")
    write_coco_captions(root / "data", n_images=16)
    return clip, sd, root


def _config(stack, out, **kw) -> FinetuneConfig:
    clip, sd, root = stack
    base = dict(clip=f"local-dir:{clip.local_dir}", sd=str(sd), out=str(out), data_root=str(root / "data"),
                batch_size=8, epochs=10, warmup_steps=2, lr=1e-3, head_lr=1e-2, workers=0, grad_norm_every=1)
    return FinetuneConfig(**{**base, **kw})


def _frozen_state(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {f"{name}.{k}": v.detach().clone() for name, module in
            (("unet", trainer.unet), ("vae", trainer.vae), ("text_encoder", trainer.text_encoder))
            for k, v in module.state_dict().items()}


def test_a_short_run_lowers_sds_and_moves_exactly_the_trained_parameters(stack, tmp_path):
    clip, _, _ = stack
    trainer = Trainer(_config(stack, tmp_path / "out", max_steps=16))
    frozen_before = _frozen_state(trainer)
    trainer.train(progress=False)

    sds = [float(r["sds"]) for r in iter_losses(tmp_path / "out")]
    assert len(sds) == 16 and sum(sds[-4:]) / 4 < sum(sds[:4]) / 4
    before = load_file(clip.local_dir / "open_clip_model.safetensors")
    after = load_file(tmp_path / "out" / "open_clip_model.safetensors")
    trained = {name for name, _ in trainer.trained}
    assert trained and all(name.startswith("visual.") for name in trained)
    for name, value in before.items():
        if name in trained:
            assert not torch.equal(value, after[name]), f"{name} should have moved"
        else:
            assert torch.equal(value, after[name]), f"{name} should be bit-identical"
    for name, value in _frozen_state(trainer).items():
        assert torch.equal(value, frozen_before[name]), f"{name} of the frozen diffusion model moved"
    rows = list(iter_losses(tmp_path / "out"))
    assert float(rows[0]["grad_norm_clip"]) > 0 and float(rows[0]["grad_norm_sds"]) > 0
    assert float(rows[-1]["samples_per_s"]) > 0


def _one_batch(trainer: Trainer):
    batch = trainer.batch(0)
    return batch["pixels"], batch["tokens"], batch["sd_ids"], batch["t"], batch["eps"]


def test_detached_gradient_at_z_is_the_sds_direction_and_the_unet_runs_no_backward(stack, tmp_path):
    trainer = Trainer(_config(stack, tmp_path / "out", sds_grad="detached", lam=1.0))
    backward_calls = []
    trainer.unet.conv_out.register_full_backward_hook(lambda *a: backward_calls.append(1))  # the last layer
    pixels, tokens, ids, t, eps = _one_batch(trainer)
    losses = trainer.losses(pixels, tokens, ids, t, eps)
    z = losses["z"]
    z.retain_grad()
    losses["total"].backward()
    with torch.no_grad():
        abar = trainer.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
        x_t = abar.sqrt() * z + (1 - abar).sqrt() * eps
        eps_hat = trainer.unet(x_t, t, encoder_hidden_states=trainer.text_encoder(ids)[0]).sample
    weight = 2 * abar.sqrt() / z[0].numel()
    expected = weight * (eps_hat - eps) / len(z)
    torch.testing.assert_close(z.grad, expected, rtol=1e-6, atol=1e-12)
    assert backward_calls == []
    assert all(p.grad is None for p in trainer.unet.parameters())


def test_full_mode_backpropagates_through_the_unet(stack, tmp_path):
    trainer = Trainer(_config(stack, tmp_path / "out", sds_grad="full"))
    backward_calls = []
    trainer.unet.conv_out.register_full_backward_hook(lambda *a: backward_calls.append(1))  # the last layer
    losses = trainer.losses(*_one_batch(trainer))
    losses["total"].backward()
    assert backward_calls and all(p.grad is None for p in trainer.unet.parameters())  # frozen, still


def test_lambda_zero_is_the_control_and_leaves_h_w_untouched(stack, tmp_path):
    trainer = Trainer(_config(stack, tmp_path / "out", lam=0.0, max_steps=4))
    head_before = {k: v.clone() for k, v in trainer.head.state_dict().items()}
    trainer.train(progress=False)
    saved = load_file(tmp_path / "out" / "sds_head.safetensors")
    for k, v in head_before.items():
        assert torch.equal(saved[k], v)
    assert all(float(r["sds"]) == 0 for r in iter_losses(tmp_path / "out"))


def test_a_normalised_head_gives_each_latent_zero_mean_and_unit_variance(stack, tmp_path):
    trainer = Trainer(_config(stack, tmp_path / "out", head="normalised"))
    trainer.head.linear.weight.data.mul_(1e-3)  # a head that would make z tiny
    z = trainer.losses(*_one_batch(trainer))["z"].detach().flatten(1)
    assert torch.allclose(z.mean(1), torch.zeros(len(z)), atol=1e-5)
    assert torch.allclose(z.std(1), torch.ones(len(z)), atol=1e-3)


def test_a_frozen_fit_head_is_fitted_to_the_vae_latents_and_never_moves(stack, tmp_path):
    from models.finetune import LatentHead

    trainer = Trainer(_config(stack, tmp_path / "out", head="frozen-fit", max_steps=3))
    # the fit beats the best constant map (relative residual < 1) and beats a random head
    assert 0 <= trainer.head_fit_residual < 1
    fitted = {k: v.clone() for k, v in trainer.head.state_dict().items()}
    assert not torch.equal(fitted["linear.weight"], LatentHead(32, trainer.latent_shape).linear.weight)
    trainer.train(progress=False)
    saved = load_file(tmp_path / "out" / "sds_head.safetensors")
    assert all(torch.equal(saved[k], v) for k, v in fitted.items())
    rows = list(iter_losses(tmp_path / "out"))
    assert float(rows[0]["grad_norm_sds"]) > 0  # L_SDS still reaches CLIP's LayerNorms through the fixed map
    extra = json.loads((tmp_path / "out" / "finetune_config.json").read_text())
    assert extra["head"] == "frozen-fit" and extra["extra"]["head_fit_residual"] == trainer.head_fit_residual


def test_resume_repeats_an_uninterrupted_run(stack, tmp_path):
    finetune(_config(stack, tmp_path / "straight", max_steps=6), progress=False)
    finetune(_config(stack, tmp_path / "resumed", max_steps=3, save_every=1), progress=False)
    finetune(_config(stack, tmp_path / "resumed", max_steps=6, save_every=1), resume=True, progress=False)
    for name in ("open_clip_model.safetensors", "sds_head.safetensors"):
        a, b = load_file(tmp_path / "straight" / name), load_file(tmp_path / "resumed" / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    straight = [(r["step"], r["clip"], r["sds"]) for r in iter_losses(tmp_path / "straight")]
    resumed = [(r["step"], r["clip"], r["sds"]) for r in iter_losses(tmp_path / "resumed")]
    assert straight == resumed
    with pytest.raises(HarnessError, match="already holds a run; pass --resume"):
        finetune(_config(stack, tmp_path / "straight", max_steps=6), progress=False)
    with pytest.raises(HarnessError, match=r"different settings than the saved run: \['lam'\]"):
        finetune(_config(stack, tmp_path / "straight", max_steps=8, lam=2.0), resume=True, progress=False)


def test_the_output_folder_is_a_plain_open_clip_model_and_an_sds_clip_scorer(stack, tmp_path):
    from factories import write_winoground_parquet

    from harness.runner import run

    out = finetune(_config(stack, tmp_path / "out", max_steps=2), progress=False)
    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{out}")
    saved = load_file(out / "open_clip_model.safetensors")
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    config = json.loads((out / "finetune_config.json").read_text())
    assert config["extra"]["data_hash"] and config["extra"]["step"] == 2 and config["lam"] == 1.0

    write_winoground_parquet(tmp_path / "data" / "winoground", 4)
    result = run(scorer="sds-clip", bench="winoground", model=str(out), data_root=tmp_path / "data",
                 results_dir=tmp_path / "results", workers=0, progress=False)
    row = result.rows[0]
    assert row["scorer"] == "sds-clip" and row["model"].startswith(f"{out.name}@")  # portable: no machine path
    assert "lambda=1.0" in row["pretrained"] and "base=local-dir:" in row["pretrained"]


def test_two_processes_repeat_one_process_with_the_same_global_batch(stack, tmp_path):
    clip, sd, root = stack
    args = ["finetune", "--clip", f"local-dir:{clip.local_dir}", "--sd", str(sd), "--data-root", str(root / "data"),
            "--batch-size", "8", "--max-steps", "3", "--lr", "1e-3", "--head-lr", "1e-2", "--warmup-steps", "1",
            "--workers", "0", "--no-progress"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "harness", *args, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "harness", *args, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert two.returncode == 0, two.stderr
    for name in ("open_clip_model.safetensors", "sds_head.safetensors"):
        a, b = load_file(tmp_path / "one" / name), load_file(tmp_path / "two" / name)
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)
    assert json.loads((tmp_path / "two" / "finetune_config.json").read_text())["extra"]["processes"] == 2


def test_bad_input(stack, tmp_path):
    clip, sd, root = stack
    captions = tmp_path / "pairs.jsonl"
    captions.write_text(json.dumps({"image": "nowhere.jpg", "caption": "a dog"}) + "\n")
    with pytest.raises(MissingDataError, match="1 of 1 images named in .*pairs.jsonl are missing, e.g. .*nowhere.jpg"):
        Trainer(_config(stack, tmp_path / "a", captions=str(captions)))
    with pytest.raises(MissingDataError, match="captions_train2017.json.*--captions"):
        Trainer(_config(stack, tmp_path / "b", data_root=str(tmp_path / "empty")))

    # an image that will not decode: skipped and counted, or fatal by option
    data = tmp_path / "data"
    write_coco_captions(data, n_images=8)
    (data / "coco" / "train2017" / f"{12:012d}.jpg").write_bytes(b"not a jpeg")
    out = finetune(_config(stack, tmp_path / "skip", data_root=str(data), max_steps=2), progress=False)
    assert json.loads((out / "finetune_config.json").read_text())["extra"]["skipped_images"] >= 1
    with pytest.raises(BadRecordError, match="cannot decode .*000000000012.jpg.*--on-bad-image fail"):
        finetune(_config(stack, tmp_path / "fail", data_root=str(data), max_steps=2, on_bad_image="fail"),
                 progress=False)

    # a UNet whose latent size its own downsampling cannot divide
    bad_sd = build_tiny_sd(tmp_path / "bad_sd")
    unet_config = json.loads((bad_sd / "unet" / "config.json").read_text())
    unet_config["sample_size"] = 7
    (bad_sd / "unet" / "config.json").write_text(json.dumps(unet_config))
    with pytest.raises(HarnessError, match="sample size 7 is not divisible"):
        Trainer(_config(stack, tmp_path / "c", sd=str(bad_sd)))
    with pytest.raises(HarnessError, match="--head='mlp' for harness finetune: expected one of linear, normalised, "
                                           "frozen-fit"):
        Trainer(_config(stack, tmp_path / "d", head="mlp"))
    with pytest.raises(HarnessError, match="--sds-grad='half'"):
        Trainer(_config(stack, tmp_path / "d", sds_grad="half"))


def test_out_of_memory_gives_advice_and_nan_keeps_the_last_good_checkpoint(stack, tmp_path, monkeypatch):
    def oom(self, *a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with monkeypatch.context() as m:
        m.setattr(Trainer, "train", oom)
        with pytest.raises(HarnessError, match="out of memory.*--grad-accum.*--sds-grad detached"):
            finetune(_config(stack, tmp_path / "oom"), progress=False)

    original = Trainer.losses
    calls = {"n": 0}

    def nan_at_third(self, *a):
        calls["n"] += 1
        losses = original(self, *a)
        if calls["n"] == 3:
            losses["clip"] = losses["clip"] * float("nan")
        return losses

    monkeypatch.setattr(Trainer, "losses", nan_at_third)
    with pytest.raises(HarnessError, match="non-finite at step 2.*last good checkpoint"):
        finetune(_config(stack, tmp_path / "nan", max_steps=5, save_every=1, grad_norm_every=0), progress=False)
    saved = json.loads((tmp_path / "nan" / "finetune_config.json").read_text())
    assert saved["extra"]["step"] == 2  # steps 0 and 1 finished and were saved; step 2 was not


def test_gradient_accumulation_and_checkpointing_run(stack, tmp_path):
    out = finetune(_config(stack, tmp_path / "out", max_steps=2, grad_accum=2, grad_checkpointing=True),
                   progress=False)
    rows = list(iter_losses(out))
    assert len(rows) == 2 and all(float(r["sds"]) > 0 for r in rows)


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_plain_caption_files(stack, tmp_path, kind):
    from factories import photo

    (tmp_path / "imgs").mkdir()
    rows = []
    for i in range(4):
        photo(i, 48).save(tmp_path / "imgs" / f"{i}.png")
        rows += [(f"imgs/{i}.png", f"caption {i} a"), (f"imgs/{i}.png", f"caption {i} b")]
    path = tmp_path / f"pairs.{kind}"
    if kind == "csv":
        path.write_text("image,caption\n" + "".join(f"{a},{b}\n" for a, b in rows))
    else:
        path.write_text("".join(json.dumps({"image": a, "caption": b}) + "\n" for a, b in rows))
    trainer = Trainer(_config(stack, tmp_path / "out", captions=str(path), batch_size=4, max_steps=1))
    assert [s.captions for s in trainer.samples] == [(f"caption {i} a", f"caption {i} b") for i in range(4)]
    trainer.train(progress=False)
    assert len(list(iter_losses(tmp_path / "out"))) == 1


def test_resume_loads_a_planted_trainer_state_without_running_it(stack, tmp_path):
    from test_trust import Payload

    out = finetune(_config(stack, tmp_path / "out", max_steps=1), progress=False)
    marker = tmp_path / "payload-ran"
    torch.save({"step": 1, "optimizer": Payload(marker)}, out / "trainer_state.pt")
    with pytest.raises(HarnessError, match=r"--resume: .*trainer_state.pt is not a trainer state this harness wrote"):
        finetune(_config(stack, tmp_path / "out", max_steps=2), resume=True, progress=False)
    assert not marker.exists()


def test_a_malformed_caption_line_is_named(stack, tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"image": "a.png", "caption": "x"}) + "\n" + '{"image": "b.png", "caption": \n')
    with pytest.raises(BadRecordError, match=r"pairs.jsonl line 2 is not JSON"):
        Trainer(_config(stack, tmp_path / "out", captions=str(path)))

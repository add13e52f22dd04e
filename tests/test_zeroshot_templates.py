"""The zero-shot ``templates`` option: named sets, a file, the default left as it was, and the set
named in every item and row."""

from __future__ import annotations

import hashlib

import numpy as np
import open_clip
import pytest
from factories_zeroshot import cifar_image, write_cifar10, write_cifar100, write_image_folder

from benchmarks.zeroshot import ZeroShot
from harness.errors import BadRecordError, HarnessError



@pytest.fixture()
def root(tmp_path):
    write_cifar10(tmp_path, n_per_class=1)
    return tmp_path


def _prompts(items, label: str) -> tuple[str, ...]:
    return next(c for c in items[0].texts if c.label == label).texts


def test_without_the_option_nothing_changes_and_cifar_is_the_same_set(root):
    default = ZeroShot(root, "cifar10").items()
    chosen = ZeroShot(root, "cifar10", templates="cifar").items()
    assert [i.id for i in default] == [f"cifar10/{k}" for k in range(10)] == [i.id for i in chosen]
    assert default[0].texts == chosen[0].texts and len(_prompts(default, "cat")) == 18
    assert default[0].meta["templates"] == chosen[0].meta["templates"] == "openai-cifar10"


@pytest.mark.parametrize("choice, name, source", [
    ("simple", "simple-imagenet", open_clip.SIMPLE_IMAGENET_TEMPLATES),
    ("openai_imagenet", "openai-imagenet", open_clip.OPENAI_IMAGENET_TEMPLATES),
])
def test_named_sets_replace_the_prompts_and_are_named(root, choice, name, source):
    bench = ZeroShot(root, "cifar10", templates=choice)
    items = bench.items()
    assert _prompts(items, "cat") == tuple(fn("cat") for fn in source)  # 7 and 80 prompts
    assert items[0].meta["templates"] == name
    assert items[0].id == f"cifar10/0#{name}" and items[0].images == ("cifar10/0",)  # same image, other id
    assert np.array_equal(np.asarray(bench.load_image(items[3].images[0])), cifar_image(3))
    assert bench.details()["datasets"]["cifar10"]["templates"] == name
    scores = [np.eye(10)[item.truth[0]][None] for item in items]
    assert {r.details["templates"] for r in bench.metrics(items, scores, seed=0)} == {name}


def test_cifar_on_cifar100_is_its_own_list(tmp_path):
    write_cifar100(tmp_path, n_per_class=1)
    items = ZeroShot(tmp_path, "cifar100", templates="cifar").items()
    assert items[0].meta["templates"] == "openai-cifar100" and items[0].id == "cifar100/0"


def test_a_templates_file_overrides_every_dataset_including_a_folders_own(tmp_path):
    write_cifar10(tmp_path, n_per_class=1)
    write_image_folder(tmp_path / "zeroshot" / "pets", ["cat", "dog"], 1, templates=["a snapshot of a {c}."])
    path = tmp_path / "my templates.txt"
    path.write_text("a photo of one {c}.\n\n  itap of a {c}.  \n")
    name = f"my templates.txt@{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"
    bench = ZeroShot(tmp_path, templates=str(path))
    items = bench.items()
    for subset in ("cifar10", "folder:pets"):
        chosen = [i for i in items if i.meta["subset"] == subset]
        assert _prompts(chosen, "cat") == ("a photo of one cat.", "itap of a cat.")
        assert chosen[0].meta["templates"] == name and chosen[0].id.endswith(f"#{name}")
    assert str(tmp_path) not in name  # rows stay free of this machine's paths


def test_bad_values_are_refused_before_anything_loads(tmp_path, root):
    with pytest.raises(HarnessError, match="templates='openai-imagenet'.*cifar, openai_imagenet, simple"):
        ZeroShot(root, "cifar10", templates="openai-imagenet")
    bad = tmp_path / "bad.txt"
    bad.write_text("a photo of a {c}.\na photo of a thing.\n")
    with pytest.raises(BadRecordError, match="bad.txt line 2: 'a photo of a thing.' has no {c}"):
        ZeroShot(root, "cifar10", templates=bad).items()
    bad.write_text("\n  \n")
    with pytest.raises(BadRecordError, match="bad.txt is empty"):
        ZeroShot(root, "cifar10", templates=bad).items()


"""The zero-shot adapter reads every dataset layout, skips and names what is absent, computes
strict top-k and per-class recall, and lets the CLIP scorer encode each prompt once per run."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import open_clip
import pytest
from factories import count_encoder_inputs
from factories_zeroshot import (
    CIFAR10_NAMES,
    CIFAR100_NAMES,
    FOLDER_CLASSES,
    FOLDER_NAME,
    FOLDER_TEMPLATES,
    cifar_image,
    hf_image,
    imagenet_wnids,
    mnist_image,
    write_cifar10,
    write_cifar100,
    write_dtd,
    write_hf_classification,
    write_image_folder,
    write_imagenet_val,
    write_mnist,
    write_zeroshot_fixture,
)

from benchmarks.zeroshot import ZeroShot, classification_rows, template_set
from harness.api import Item, Prompts, ScorerConfig
from harness.errors import BadRecordError, MissingDataError, UnknownNameError
from harness.metrics import bootstrap_ci
from harness.runner import evaluate
from harness.store import ScoreStore


@pytest.fixture(scope="module")
def full_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("zeroshot_data")
    write_zeroshot_fixture(root)
    return root


def _by_subset(items: list[Item]) -> dict[str, list[Item]]:
    out: dict[str, list[Item]] = {}
    for item in items:
        out.setdefault(item.meta["subset"], []).append(item)
    return out


# -- reading every layout -------------------------------------------------------------------------

def test_cifar10_reads_labels_names_templates_and_pixels(tmp_path):
    labels = write_cifar10(tmp_path, n_per_class=2)
    bench = ZeroShot(tmp_path, "cifar10")
    items = bench.items()
    assert [i.id for i in items] == [f"cifar10/{k}" for k in range(20)]
    assert [i.truth[0] for i in items] == labels
    classes = items[0].texts
    assert all(item.texts is classes for item in items)  # one shared tuple: one classifier per run
    assert [c.label for c in classes] == list(CIFAR10_NAMES)
    assert len(template_set("openai-cifar10")) == 18
    assert classes[3].texts[0] == "a photo of a cat." and classes[3].texts[-1] == "a photo of the big cat."
    assert items[0].meta == {"subset": "cifar10", "class": CIFAR10_NAMES[labels[0]], "templates": "openai-cifar10"}
    for k in (0, 7, 19):
        image = bench.load_image(items[k].images[0])
        assert image.mode == "RGB" and image.size == (32, 32)
        assert np.array_equal(np.asarray(image), cifar_image(k))


def test_cifar100_reads_fine_labels_and_readable_names(tmp_path):
    labels = write_cifar100(tmp_path, n_per_class=2, offset=100)
    bench = ZeroShot(tmp_path, "cifar100")
    items = bench.items()
    assert [i.truth[0] for i in items] == labels  # fine labels, not the coarse ones
    names = [c.label for c in items[0].texts]
    assert names == [n.replace("_", " ") for n in CIFAR100_NAMES] and "aquarium fish" in names
    assert items[0].meta["templates"] == "openai-cifar100"
    assert np.array_equal(np.asarray(bench.load_image("cifar100/5")), cifar_image(105))


def test_imagenet_val_folders_give_the_standard_class_index(tmp_path):
    written = write_imagenet_val(tmp_path, n_per_class=2)
    bench = ZeroShot(tmp_path, "imagenet1k")
    items = bench.items()
    assert len(items) == 8 and [i.id for i in items] == [f"imagenet1k/{k}" for k in range(8)]
    assert [i.truth[0] for i in items] == [label for _, label in written]  # file-name order, classes mixed
    classes = items[0].texts
    assert [c.label for c in classes] == list(open_clip.IMAGENET_CLASSNAMES)
    assert len(classes[0].texts) == 80 and classes[0].texts[0] == f"a bad photo of a {classes[0].label}."
    assert items[0].meta["templates"] == "openai-imagenet"
    image = bench.load_image(items[-1].images[0])
    assert image.mode == "RGB" and image.size == (48, 48)
    assert bench.datasets["imagenet1k"].files[0] == written[0][0]


def test_imagenet_refuses_a_wrong_folder_count_flat_files_and_non_synset_names(tmp_path):
    write_imagenet_val(tmp_path, 1)
    val = tmp_path / "imagenet" / "val"
    (val / imagenet_wnids()[3]).rmdir()
    with pytest.raises(BadRecordError, match="holds 999 class folders, expected 1000"):
        ZeroShot(tmp_path, "imagenet1k").items()

    flat = tmp_path / "flat" / "imagenet" / "val"
    flat.mkdir(parents=True)
    (flat / "ILSVRC2012_val_00000001.JPEG").write_bytes(b"")
    with pytest.raises(BadRecordError, match="extracts flat.*synset folders"):
        ZeroShot(tmp_path / "flat", "imagenet1k").items()

    numbered = tmp_path / "numbered" / "imagenet" / "val"
    for k in range(1000):
        (numbered / str(k)).mkdir(parents=True)
    with pytest.raises(BadRecordError, match="named by synset id"):
        ZeroShot(tmp_path / "numbered", "imagenet1k").items()


def test_folder_dataset_with_classnames_and_templates(full_root):
    bench = ZeroShot(full_root, f"folder:{FOLDER_NAME}")
    items = bench.items()
    assert len(items) == 6  # notes.txt and .hidden.png are not images; the nested one is
    classes = items[0].texts
    assert [c.label for c in classes] == list(FOLDER_CLASSES.values())
    assert classes[2].texts == tuple(t.replace("{c}", "rocket") for t in FOLDER_TEMPLATES)
    assert [i.truth[0] for i in items] == [0, 0, 1, 1, 2, 2]
    assert items[0].meta["templates"] == "templates.txt"
    assert bench.datasets[f"folder:{FOLDER_NAME}"].files[:2] == ["01_cat/img_0.png", "01_cat/more/img_1.jpg"]
    assert all(bench.load_image(i.images[0]).mode == "RGB" for i in items)


def test_folder_classnames_forms_defaults_and_errors(tmp_path):
    folders = ["b_dog", "a_cat"]
    write_image_folder(tmp_path / "zeroshot" / "tabbed", folders, 1, classnames=["dog", "cat"], tabbed=True)
    bench = ZeroShot(tmp_path, "folder:tabbed")
    assert [c.label for c in bench.items()[0].texts] == ["cat", "dog"]  # sorted folders: a_cat, b_dog

    write_image_folder(tmp_path / "zeroshot" / "bare", folders, 1)
    items = ZeroShot(tmp_path, "folder:bare").items()
    assert [c.label for c in items[0].texts] == ["a cat", "b dog"]
    assert items[0].meta["templates"] == "simple-imagenet"
    assert items[0].texts[0].texts == tuple(t("a cat") for t in open_clip.SIMPLE_IMAGENET_TEMPLATES)

    write_image_folder(tmp_path / "zeroshot" / "short", folders, 1, classnames=["cat"])
    with pytest.raises(BadRecordError, match="1 names for 2 class folders"):
        ZeroShot(tmp_path, "folder:short").items()

    write_image_folder(tmp_path / "zeroshot" / "badtpl", folders, 1, templates=["a photo of a {}."])
    with pytest.raises(BadRecordError, match=r"has no \{c\}"):
        ZeroShot(tmp_path, "folder:badtpl").items()


def test_torchvision_dataset_with_a_test_split(tmp_path):
    labels = write_dtd(tmp_path)
    bench = ZeroShot(tmp_path, "torchvision:DTD")
    items = bench.items()
    assert [i.id for i in items][:2] == ["torchvision:DTD/0", "torchvision:DTD/1"]
    assert [i.truth[0] for i in items] == labels
    assert [c.label for c in items[0].texts] == ["banded", "dotted", "striped"]
    assert "split='test'" in bench.details()["datasets"]["torchvision:DTD"]["source"]
    assert bench.load_image(items[0].images[0]).mode == "RGB"


def test_torchvision_dataset_with_train_false_and_grey_images(tmp_path):
    labels = write_mnist(tmp_path, n=6)
    bench = ZeroShot(tmp_path, "torchvision:MNIST")
    items = bench.items()
    assert [i.truth[0] for i in items] == labels
    assert items[0].texts[3].label == "3 - three"
    assert "train=False" in bench.details()["datasets"]["torchvision:MNIST"]["source"]
    image = np.asarray(bench.load_image(items[4].images[0]))
    assert image.shape == (28, 28, 3) and np.array_equal(image[..., 1], mnist_image(4))


def test_torchvision_missing_unknown_and_nameless_datasets(tmp_path, monkeypatch):
    with pytest.raises(MissingDataError) as err:
        ZeroShot(tmp_path, "torchvision:Food101").items()
    assert str(tmp_path / "food101") in str(err.value) and "download=True" in str(err.value)

    (tmp_path / "dtd").mkdir()
    with pytest.raises(MissingDataError, match="found no data"):
        ZeroShot(tmp_path, "torchvision:DTD").items()

    with pytest.raises(UnknownNameError, match="Did you mean 'CIFAR10'"):
        ZeroShot(tmp_path, "torchvision:Cifar10").items()

    import torchvision.datasets as tvd
    from torch.utils.data import Dataset

    class Nameless(Dataset):
        def __init__(self, root, train=True, download=False):
            self.targets = [0, 1]

        def __len__(self):
            return 2

    monkeypatch.setattr(tvd, "Nameless", Nameless, raising=False)
    monkeypatch.setattr(tvd, "__all__", [*tvd.__all__, "Nameless"])
    (tmp_path / "nameless").mkdir()
    with pytest.raises(BadRecordError, match="has no class names"):
        ZeroShot(tmp_path, "torchvision:Nameless").items()


def test_hf_dataset_from_a_local_folder(tmp_path, monkeypatch):
    repo = tmp_path / "pets-repo"
    labels = write_hf_classification(repo, ["cat", "dog", "rocket_ship"], n_per_class=2)
    bench = ZeroShot(tmp_path / "empty-data-root", "hf:someone/pets", hf_source=str(repo))
    items = bench.items()
    assert [i.id for i in items] == [f"hf:someone/pets/{k}" for k in range(6)]
    assert [i.truth[0] for i in items] == labels  # the "label" ClassLabel, not "group"
    assert [c.label for c in items[0].texts] == ["cat", "dog", "rocket ship"]
    assert "split='test'" in bench.details()["datasets"]["hf:someone/pets"]["source"]
    assert np.array_equal(np.asarray(bench.load_image(items[4].images[0])), hf_image(4))


def test_hf_falls_back_to_validation_and_names_the_cache_when_missing(tmp_path, monkeypatch):
    repo = tmp_path / "val-only"
    write_hf_classification(repo, ["a", "b"], n_per_class=1, split="validation")
    bench = ZeroShot(tmp_path, "hf:someone/val-only", hf_source=str(repo))
    assert len(bench.items()) == 2
    assert "split='validation'" in bench.details()["datasets"]["hf:someone/val-only"]["source"]

    with pytest.raises(MissingDataError) as err:
        ZeroShot(tmp_path, "hf:nobody/nothing").items()
    assert "datasets cache" in str(err.value) and "datasets.load_dataset('nobody/nothing')" in str(err.value)


# -- the suite, missing data, subset names --------------------------------------------------------

def test_suite_runs_every_present_dataset_with_unique_ids(full_root):
    bench = ZeroShot(full_root)
    items = bench.items()
    groups = _by_subset(items)
    assert list(groups) == ["cifar10", "cifar100", "imagenet1k", f"folder:{FOLDER_NAME}"]
    assert len({i.id for i in items}) == len(items) == 20 + 40 + 8 + 6
    assert bench.skipped == {}
    for members in groups.values():
        assert all(item.texts is members[0].texts for item in members)


def test_suite_skips_absent_datasets_and_says_where_it_looked(tmp_path):
    write_cifar10(tmp_path, 1)
    bench = ZeroShot(tmp_path)
    assert {i.meta["subset"] for i in bench.items()} == {"cifar10"}
    assert set(bench.skipped) == {"cifar100", "imagenet1k"}  # keys are subsets; folder: ones are found, not expected
    assert str(tmp_path / "cifar-100-python") in bench.skipped["cifar100"]
    assert "torchvision.datasets.CIFAR100(" in bench.skipped["cifar100"]
    assert str(tmp_path / "imagenet" / "val") in bench.skipped["imagenet1k"]


def test_nothing_present_lists_everything_tried(tmp_path):
    with pytest.raises(MissingDataError) as err:
        ZeroShot(tmp_path).items()
    message = str(err.value)
    for path in ("cifar-10-batches-py", "cifar-100-python", "imagenet/val", "zeroshot"):
        assert str(tmp_path / path) in message
    assert "image-net.org" in message and "torchvision:<ClassName>" in message


def test_a_missing_or_incomplete_subset_names_the_file(tmp_path):
    with pytest.raises(MissingDataError, match="cifar-100-python/test not found.*CIFAR100"):
        ZeroShot(tmp_path, "cifar100").items()
    write_cifar10(tmp_path, 1)
    (tmp_path / "cifar-10-batches-py" / "batches.meta").unlink()
    with pytest.raises(MissingDataError, match="batches.meta not found"):
        ZeroShot(tmp_path).items()  # present but incomplete is an error, not a skip
    with pytest.raises(MissingDataError, match=r"zeroshot/pets not found"):
        ZeroShot(tmp_path, "folder:pets").items()


def test_subset_names(tmp_path):
    for ok in ("cifar10", "imagenet1k", "folder:pets", "torchvision:DTD", "hf:org/name"):
        ZeroShot(tmp_path, ok)
    with pytest.raises(UnknownNameError, match="unknown zeroshot subset 'cifar-10'. Did you mean 'cifar10'"):
        ZeroShot(tmp_path, "cifar-10")
    with pytest.raises(UnknownNameError, match="folder:<name>"):
        ZeroShot(tmp_path, "imagenet-sketch")
    with pytest.raises(UnknownNameError, match="names no dataset"):
        ZeroShot(tmp_path, "hf:")
    with pytest.raises(UnknownNameError, match="without slashes"):
        ZeroShot(tmp_path, "folder:../x")


def test_describe_data(tmp_path, full_root):
    missing = ZeroShot.describe_data(tmp_path)
    assert not any(r.found for r in missing)
    assert {r.path for r in missing} >= {str(tmp_path / "cifar-10-batches-py"), str(tmp_path / "imagenet" / "val")}
    assert any("download=True" in r.how_to_get for r in missing)
    found = {r.what.split(":")[0]: r.found for r in ZeroShot.describe_data(full_root)}
    assert found == {"cifar10": True, "cifar100": True, "imagenet1k": True, "folder": True}


def test_adapter_is_picklable_without_its_caches(tmp_path):
    write_cifar10(tmp_path, 1)
    write_mnist(tmp_path, 3)
    for subset in ("cifar10", "torchvision:MNIST"):
        bench = ZeroShot(tmp_path, subset)
        items = bench.items()
        before = np.asarray(bench.load_image(items[2].images[0]))
        clone = pickle.loads(pickle.dumps(bench))
        ds = clone.datasets[subset]
        assert all(getattr(ds, attr) is None for attr in ds._transient)  # decoded data does not travel
        assert np.array_equal(np.asarray(clone.load_image(items[2].images[0])), before)


# -- metrics --------------------------------------------------------------------------------------

def _rows(rows):
    return {r.metric: r for r in rows}


def test_ties_count_as_wrong_and_top5_needs_five_classes():
    scores = np.array([
        [0.9, 0.1, 0.0],  # truth 0: right
        [0.5, 0.5, 0.0],  # truth 0: tie, wrong
        [0.2, 0.3, 0.1],  # truth 1: right
        [0.1, 0.9, 0.9],  # truth 2: tie, wrong
        [0.0, 1.0, 0.5],  # truth 1: right
    ])
    truth = np.array([0, 0, 1, 2, 1])
    rows = _rows(classification_rows("toy", scores, truth, seed=0, details={"templates": "t"}))
    assert set(rows) == {"top1", "mean_per_class_recall"}  # 3 classes: no top5
    assert rows["top1"].value == pytest.approx(60.0) and rows["top1"].n == 5
    # recall: class 0 1/2, class 1 2/2, class 2 0/1
    assert rows["mean_per_class_recall"].value == pytest.approx(50.0)
    assert rows["top1"].details == {"templates": "t", "n_classes": 3}
    assert rows["mean_per_class_recall"].details["classes_with_images"] == 3
    for r in rows.values():
        assert r.subset == "toy" and r.ci_low <= r.value <= r.ci_high


def test_top5_counts_classes_at_least_as_high():
    scores = np.array([
        [1, 1, 1, 1, 1, 0],  # truth 0: four others tie -> top5 right, top1 wrong
        [1, 1, 1, 1, 1, 1],  # truth 0: five others tie -> top5 wrong
        [6, 5, 4, 3, 2, 1],  # truth 5: five above -> wrong
        [6, 5, 4, 3, 2, 1],  # truth 4: four above -> right
    ], dtype=float)
    rows = _rows(classification_rows("toy", scores, np.array([0, 0, 5, 4]), seed=0))
    assert rows["top1"].value == 0.0 and rows["top5"].value == pytest.approx(50.0)
    assert rows["top5"].details["n_classes"] == 6


def test_mean_per_class_recall_interval_matches_a_plain_loop():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 7, size=60)
    scores = rng.normal(size=(60, 7))
    scores[np.arange(60), truth] += 0.8
    correct = scores.argmax(axis=1) == truth

    def plain(idx):
        out = []
        for sample in idx:
            recalls = [correct[sample][truth[sample] == c].mean() for c in np.unique(truth[sample])]
            out.append(100 * np.mean(recalls))
        return np.array(out)

    row = _rows(classification_rows("r", scores, truth, seed=11))["mean_per_class_recall"]
    assert row.value == pytest.approx(plain(np.arange(60)[None])[0])
    assert (row.ci_low, row.ci_high) == pytest.approx(bootstrap_ci(plain, 60, 11, resamples=1000))


def test_benchmark_metrics_group_items_by_dataset_and_outcome(tmp_path):
    two = tuple(Prompts(c, (f"a {c}",)) for c in "ab")
    six = tuple(Prompts(c, (f"a {c}",)) for c in "abcdef")
    items = [Item(id=f"x/{k}", images=(f"x/{k}",), texts=two, truth=(k % 2,),
                  meta={"subset": "x", "templates": "tx"}) for k in range(4)]
    items += [Item(id=f"y/{k}", images=(f"y/{k}",), texts=six, truth=(0,),
                   meta={"subset": "y", "templates": "ty"}) for k in range(2)]
    scores = [np.array([[1.0, 0.0]]), np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]), np.array([[0.5, 0.5]]),
              np.array([[1.0, 0, 0, 0, 0, 0]]), np.array([[0.0, 1, 1, 1, 1, 1]])]
    rows = ZeroShot(tmp_path).metrics(items, scores, seed=0)
    table = {(r.subset, r.metric): r for r in rows}
    assert set(table) == {("x", "top1"), ("x", "mean_per_class_recall"),
                          ("y", "top1"), ("y", "top5"), ("y", "mean_per_class_recall")}
    assert table["x", "top1"].value == pytest.approx(25.0)  # 0 right, 1 wrong, 2 wrong, 3 tie
    assert table["x", "mean_per_class_recall"].value == pytest.approx(25.0)
    assert table["y", "top5"].value == pytest.approx(50.0) and table["y", "top1"].details["templates"] == "ty"
    bench = ZeroShot(tmp_path)
    assert bench.outcome(items[3], scores[3]) == {"top1": False, "predicted": "a"}
    assert bench.outcome(items[5], scores[5]) == {"top1": False, "top5": False, "predicted": "b"}


# -- end to end with the tiny CLIP ----------------------------------------------------------------

def test_clip_encodes_each_prompt_once_for_the_whole_suite(tiny_clip, tmp_path, monkeypatch):
    from models.clip import ClipScorer

    write_zeroshot_fixture(tmp_path / "data", n_per_class=2, imagenet=False)  # 80,000 ImageNet prompts: too slow
    bench = ZeroShot(tmp_path / "data")
    scorer = ClipScorer(ScorerConfig(model=f"local-dir:{tiny_clip.local_dir}", options={"batch_size": 256}))
    encoded: list[str] = []
    seen = count_encoder_inputs(scorer.model)
    tokenizer = scorer.tokenizer

    def record(texts, *a, **k):
        encoded.extend(texts)
        return tokenizer(texts, *a, **k)

    monkeypatch.setattr(scorer, "tokenizer", record)
    store = ScoreStore(tmp_path / "s.sqlite")
    result = evaluate(scorer, bench, store, workers=0, chunk_items=7, progress=False)

    prompts = {t for item in result.items for c in item.texts for t in c.texts}
    assert sorted(encoded) == sorted(prompts)  # every prompt, each exactly once, over all chunks
    # the folder dataset's 2 templates for "cat" and "dog" are also CIFAR-10 prompts: encoded once
    assert seen["texts"] == len(prompts) == 10 * 18 + 20 * 18 + 3 * 2 - 4
    table = {(r.subset, r.metric): r for r in result.rows}
    assert set(table) == {(s, m) for s in ("cifar10", "cifar100") for m in ("top1", "top5", "mean_per_class_recall")} | {
        (f"folder:{FOLDER_NAME}", m) for m in ("top1", "mean_per_class_recall")}
    assert table["cifar100", "top1"].n == 40 and table["cifar100", "top1"].details == {
        "templates": "openai-cifar100", "n_classes": 20}
    assert table[f"folder:{FOLDER_NAME}", "top1"].details["templates"] == "templates.txt"
    assert all(m.shape == (1, len(i.texts)) for i, m in zip(result.items, result.scores))

    # ids are shared by a one-dataset run: its scores come from the store
    again = evaluate(scorer, ZeroShot(tmp_path / "data", "cifar10"), store, workers=0, progress=False)
    assert again.scored_now == 0 and len(again.items) == 20

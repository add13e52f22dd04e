"""Zero-shot fixture data in the real on-disk layouts, with real photographs (``factories.photo``):
CIFAR pickles as torchvision lays them out, an ImageNet validation tree of 1000 synset folders,
image-folder datasets, torchvision's DTD and MNIST layouts, and a Hugging Face parquet dataset."""

from __future__ import annotations

import pickle
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from factories import photo

# label_names of CIFAR-10's batches.meta (the real file's order)
CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# 20 of CIFAR-100's fine_label_names, sorted as in its meta file; more than 16, so the CLIP scorer
# takes its cached-classifier path. The real file has 100.
CIFAR100_NAMES = ("apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
                  "bowl", "boy", "bridge", "bus", "butterfly", "camel", "lawn_mower", "maple_tree", "pickup_truck",
                  "sweet_pepper")
IMAGENET_CLASSES_WITH_IMAGES = (0, 1, 500, 999)
FOLDER_NAME = "pets"
FOLDER_CLASSES = {"01_cat": "cat", "02_dog": "dog", "03_rocket": "rocket"}  # folder -> classnames.txt line
FOLDER_TEMPLATES = ("a photo of a {c}.", "a blurry photo of a {c}.")


def cifar_image(i: int) -> np.ndarray:
    """The 32x32 HWC uint8 photo stored as CIFAR image ``i``."""
    return np.asarray(photo(i, 32))


def _dump(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)  # the CIFAR files are protocol-2 pickles


def _cifar_batch(n: int, n_classes: int, offset: int) -> tuple[np.ndarray, list[int]]:
    """n images, labels cycling over the classes (the real test files mix classes too)."""
    labels = [i % n_classes for i in range(n)]
    data = np.stack([cifar_image(offset + i).transpose(2, 0, 1).reshape(-1) for i in range(n)])  # channel-major
    return data.astype(np.uint8), labels


def write_cifar10(root: Path, n_per_class: int = 2) -> list[int]:
    """<root>/cifar-10-batches-py/{test_batch,batches.meta}; image i is cifar_image(i). Returns labels."""
    folder = root / "cifar-10-batches-py"
    data, labels = _cifar_batch(n_per_class * len(CIFAR10_NAMES), len(CIFAR10_NAMES), 0)
    _dump(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": labels, "data": data,
                                  "filenames": [f"image_{i}.png" for i in range(len(labels))]})
    _dump(folder / "batches.meta", {"num_cases_per_batch": len(labels), "label_names": list(CIFAR10_NAMES),
                                    "num_vis": 3072})
    return labels


def write_cifar100(root: Path, n_per_class: int = 2, offset: int = 100) -> list[int]:
    """<root>/cifar-100-python/{test,meta}; image i is cifar_image(offset + i). Returns fine labels."""
    folder = root / "cifar-100-python"
    data, labels = _cifar_batch(n_per_class * len(CIFAR100_NAMES), len(CIFAR100_NAMES), offset)
    coarse = [label // 5 for label in labels]  # the coarse labels must not be read as classes
    _dump(folder / "test", {"batch_label": "testing batch 1 of 1", "fine_labels": labels, "coarse_labels": coarse,
                            "data": data, "filenames": [f"image_{i}.png" for i in range(len(labels))]})
    _dump(folder / "meta", {"fine_label_names": list(CIFAR100_NAMES),
                            "coarse_label_names": [f"group_{k}" for k in range(4)]})
    return labels


def imagenet_wnids() -> list[str]:
    """1000 synset-id-like folder names in sorted order (the format of real ids, not the real ids)."""
    return [f"n{1_000_000 + 9973 * k:08d}" for k in range(1000)]


def write_imagenet_val(root: Path, n_per_class: int = 2) -> list[tuple[str, int]]:
    """<root>/imagenet/val/<wnid>/ILSVRC2012_val_*.JPEG: 1000 folders, images in a handful of them.

    File numbers interleave the classes, as in the real validation set. Returns (file, label) in
    file-name order.
    """
    val = root / "imagenet" / "val"
    wnids = imagenet_wnids()
    for wnid in wnids:
        (val / wnid).mkdir(parents=True, exist_ok=True)
    written = []
    for j in range(n_per_class):
        for slot, label in enumerate(IMAGENET_CLASSES_WITH_IMAGES):
            number = j * len(IMAGENET_CLASSES_WITH_IMAGES) + slot + 1
            name = f"ILSVRC2012_val_{number:08d}.JPEG"
            photo(200 + number, 48).save(val / wnids[label] / name, format="JPEG", quality=95)
            written.append((f"{wnids[label]}/{name}", label))
    return sorted(written, key=lambda x: x[0].split("/")[1])


def write_image_folder(folder: Path, classes: Sequence[str], n_per_class: int = 2,
                       classnames: Sequence[str] | None = None, tabbed: bool = False,
                       templates: Sequence[str] | None = None, offset: int = 300) -> None:
    """An image-folder dataset: one sub-folder per class, PNGs and JPEGs (one of them nested), plus
    files that are not images; classnames.txt (plain lines or folder<TAB>name) and templates.txt
    when given."""
    for c, cls in enumerate(classes):
        d = folder / cls
        d.mkdir(parents=True, exist_ok=True)
        for j in range(n_per_class):
            image = photo(offset + c * n_per_class + j, 40)
            if j == 1:
                (d / "more").mkdir(exist_ok=True)
                image.save(d / "more" / f"img_{j}.jpg", format="JPEG", quality=95)
            else:
                image.save(d / f"img_{j}.png")
        (d / "notes.txt").write_text("not an image")
        (d / ".hidden.png").write_bytes(b"not read")
    if classnames is not None:
        lines = [f"{cls}\t{name}" for cls, name in zip(classes, classnames)][::-1] if tabbed else list(classnames)
        (folder / "classnames.txt").write_text("\n".join(lines) + "\n")
    if templates is not None:
        (folder / "templates.txt").write_text("\n".join(templates) + "\n")


def write_zeroshot_fixture(root: Path, n_per_class: int = 2, imagenet: bool = True) -> None:
    """CIFAR-10, CIFAR-100, the ImageNet val layout (``imagenet=False`` leaves it out: a whole-suite
    evaluation then skips encoding its 80,000 prompts) and one folder: dataset under ``root``."""
    root = Path(root)
    write_cifar10(root, n_per_class)
    write_cifar100(root, n_per_class)
    if imagenet:
        write_imagenet_val(root, n_per_class)
    write_image_folder(root / "zeroshot" / FOLDER_NAME, list(FOLDER_CLASSES), n_per_class,
                       classnames=list(FOLDER_CLASSES.values()), templates=FOLDER_TEMPLATES)


# -- torchvision layouts and a Hugging Face dataset -----------------------------------------------

def write_dtd(root: Path, classes: Sequence[str] = ("banded", "dotted", "striped"), n_per_class: int = 2) -> list[int]:
    """torchvision.datasets.DTD's layout for root <root>/dtd: dtd/dtd/{images,labels/test1.txt}."""
    base = root / "dtd" / "dtd" / "dtd"
    lines, labels = [], []
    for j in range(n_per_class):
        for c, cls in enumerate(classes):
            (base / "images" / cls).mkdir(parents=True, exist_ok=True)
            name = f"{cls}_{j:04d}.jpg"
            photo(400 + c * n_per_class + j, 40).save(base / "images" / cls / name, format="JPEG")
            lines.append(f"{cls}/{name}")
            labels.append(c)
    (base / "labels").mkdir(parents=True, exist_ok=True)
    (base / "labels" / "test1.txt").write_text("\n".join(lines) + "\n")
    return labels


def write_mnist(root: Path, n: int = 6) -> list[int]:
    """torchvision.datasets.MNIST's raw idx files for root <root>/mnist; test image i is photo(i) in grey."""
    raw = root / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    labels = [i % 10 for i in range(n)]
    for prefix, count in (("t10k", n), ("train", 1)):
        pixels = np.stack([np.asarray(photo(500 + i, 28).convert("L")) for i in range(count)])
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x0803, count, 28, 28) + pixels.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x0801, count)
                                                          + bytes(labels[:count]))
    return labels


def mnist_image(i: int) -> np.ndarray:
    return np.asarray(photo(500 + i, 28).convert("L"))


def write_hf_classification(folder: Path, names: Sequence[str], n_per_class: int = 2,
                            split: str = "test") -> list[int]:
    """A dataset repository folder (data/<split>-00000-of-00001.parquet) with an Image column, a
    ClassLabel "label" column and, first, another ClassLabel column that is not the label."""
    import datasets

    labels = [i % len(names) for i in range(n_per_class * len(names))]
    features = datasets.Features({
        "group": datasets.ClassLabel(names=["even", "odd"]),
        "image": datasets.Image(),
        "label": datasets.ClassLabel(names=list(names)),
    })
    ds = datasets.Dataset.from_dict({"group": [i % 2 for i in range(len(labels))],
                                     "image": [photo(600 + i, 40) for i in range(len(labels))],
                                     "label": labels}, features=features)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    return labels


def hf_image(i: int) -> np.ndarray:
    return np.asarray(photo(600 + i, 40))

"""Zero-shot image classification (CLIP, Radford et al. 2021): every test image against all
classes of its dataset, each class an ensemble of prompts ("a photo of a {c}.", ...).

Datasets (the subsets), read from the data root and never downloaded:

- ``cifar10``, ``cifar100``: torchvision's on-disk layout, ``<data-root>/cifar-10-batches-py/``
  (``test_batch``, ``batches.meta``) and ``<data-root>/cifar-100-python/`` (``test``, ``meta``;
  the 100 fine labels). Class names from the meta files, ``_`` read as a space ("aquarium fish",
  as in the CLIP paper's prompt lists); prompts: the paper's 18 CIFAR templates
  (``benchmarks/data/zeroshot_templates.json``).
- ``imagenet1k``: ImageNet-1k validation as ``<data-root>/imagenet/val/<wnid>/*.JPEG``, one folder
  per synset id. The sorted synset ids are the standard class index, which is the order of
  ``open_clip.IMAGENET_CLASSNAMES``; prompts: OpenAI's 80 ``open_clip.OPENAI_IMAGENET_TEMPLATES``.
- ``folder:<name>``: ``<data-root>/zeroshot/<name>/``, one sub-folder per class (images anywhere
  below it). ``classnames.txt`` (optional) gives readable class names, one line per class folder
  in sorted folder order, or ``folder<TAB>name`` lines in any order; without it the folder names
  are used, ``_`` read as a space. ``templates.txt`` (optional) holds one template per line with
  ``{c}`` for the class name; without it ``open_clip.SIMPLE_IMAGENET_TEMPLATES`` are used.
- ``torchvision:<ClassName>``: a torchvision classification dataset already on disk, built with
  ``download=False`` and root ``<data-root>/<classname lowercased>/``, its test split (``split=
  "test"``, else ``"val"``, else ``train=False``, else the whole dataset when the class has no
  split). Class names from ``.classes``, labels from ``targets``/``_labels``-like attributes.
- ``hf:<repo_id>``: a Hugging Face image-classification dataset from the local ``datasets`` cache,
  test split (else validation); images from its ``Image`` column, labels and class names from
  its ``ClassLabel`` column.

Those three use ``open_clip.SIMPLE_IMAGENET_TEMPLATES`` too.

``--bench-opt templates=...`` replaces each dataset's own templates (including a folder's
``templates.txt``) with one set for all: ``cifar`` (the CLIP paper's 18 CIFAR templates, the
CIFAR-100 list on cifar100 and the CIFAR-10 list elsewhere; the two lists are identical),
``openai_imagenet`` (OpenAI's 80), ``simple`` (open_clip's 7), or the path of a text file with one
template per line containing ``{c}``. Without it nothing changes. Rows and items name the set used
(a file by its name and the start of its SHA-256); items scored with a set other than their
dataset's own get ids ending ``#<set>``, so the score store keeps both. The readers live beside this file,
one per source (cifar.py, imagenet.py, folders.py, torchvision_sets.py, huggingface.py). Without a subset (``--bench
zeroshot``) cifar10, cifar100, imagenet1k and every folder dataset under ``<data-root>/zeroshot/``
run when present; the absent ones are listed in ``skipped`` with the path looked at.

Metrics per dataset (subset = dataset name), percentages with 95% bootstrap intervals over
images: ``top1``, ``top5`` (with at least 5 classes) and ``mean_per_class_recall`` (top-1 recall
averaged over the classes that have test images). Ties count as wrong: top-1 needs the true class
to score strictly above every other class, top-k needs fewer than k other classes to score at
least as high. open_clip's ImageNet class names repeat two names ("missile", "sunglasses"); their
prompts coincide, so those four classes always tie and their images never count as correct, while
argmax evaluations credit the first of tied classes: ImageNet numbers here can read up to 0.2
points lower than published ones.
"""

from __future__ import annotations


from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmarks.zeroshot.base import Dataset, subfolders
from benchmarks.zeroshot.cifar import CIFAR, Cifar, cifar_how
from benchmarks.zeroshot.folders import FOLDER_HOW, FOLDER_ROOT, folder_datasets, image_folder
from benchmarks.zeroshot.huggingface import HuggingFace
from benchmarks.zeroshot.imagenet import IMAGENET_HOW, N_IMAGENET_CLASSES, imagenet
from benchmarks.zeroshot.metrics import classification_rows, others_at_least
from benchmarks.zeroshot.templates import TemplatesOption, chosen_templates, template_set
from benchmarks.zeroshot.torchvision_sets import Torchvision
from harness.api import Benchmark, DataRequirement, Item, MetricRow, Prompts
from harness.errors import HarnessError, MissingDataError, UnknownNameError
from harness.options import Option, Text

__all__ = ["ZeroShot", "classification_rows", "open_dataset", "template_set"]

BUILT_IN = ("cifar10", "cifar100", "imagenet1k")
PREFIXES = ("folder", "torchvision", "hf")


class ZeroShot(Benchmark):
    name = "zeroshot"
    version = "1"
    subsets = BUILT_IN
    comparisons = "text_argmax"
    OPTIONS = (
        Option("hf_source", Text(), None, "for hf:<repo_id>: where datasets.load_dataset reads it from instead "
                                          "of the repo id (a local copy of the dataset repository, or a mirror)"),
        Option("templates", TemplatesOption(), None, "prompt templates for every dataset: cifar (CLIP paper, 18), "
                                                     "openai_imagenet (80), simple (open_clip, 7) or a file of "
                                                     "lines with {c} (default: each dataset's own set)"),
    )

    def __init__(self, data_root: Path, subset: str | None = None, **options: Any) -> None:
        super().__init__(data_root, subset, **options)
        self._datasets: dict[str, Dataset] | None = None

    @classmethod
    def validate_subset(cls, subset: str | None) -> None:
        if subset is None or subset in cls.subsets:
            return
        prefix, colon, rest = subset.partition(":")
        if colon and prefix in PREFIXES:
            if not rest.strip():
                raise UnknownNameError(f"zeroshot subset {subset!r} names no dataset: write {prefix}:<name>, "
                                       f"e.g. {_EXAMPLES[prefix]}")
            if prefix == "folder" and (rest in (".", "..") or "/" in rest or os.sep in rest):
                raise UnknownNameError(f"zeroshot subset {subset!r}: a folder: name is one folder under "
                                       f"<data-root>/{FOLDER_ROOT}/, without slashes")
            return
        valid = [*cls.subsets, "folder:<name>", "torchvision:<ClassName>", "hf:<repo_id>"]
        from harness.registry import unknown_name_message

        raise UnknownNameError(unknown_name_message(f"{cls.name} subset", subset, valid))

    @property
    def datasets(self) -> dict[str, Dataset]:
        """The datasets this object evaluates, opened on first use (labels only, images lazily)."""
        if self._datasets is None:
            self._datasets = self._open()
        return self._datasets

    def _open(self) -> dict[str, Dataset]:
        opened = self._open_datasets()
        if self.options["templates"] is not None:
            for name, ds in opened.items():
                ds.use_templates(*chosen_templates(self.options["templates"], name))
        return opened

    def _open_datasets(self) -> dict[str, Dataset]:
        if self.subset is not None:
            return {self.subset: open_dataset(self.subset, self.data_root, self.options["hf_source"])}
        opened: dict[str, Dataset] = {}
        folders = folder_datasets(self.data_root)
        for subset in (*BUILT_IN, *folders):
            why = _absent(subset, self.data_root)
            if why:
                self.skipped[subset] = why
            else:
                opened[subset] = open_dataset(subset, self.data_root)
        if not opened:
            tried = [f"{s}: {why}" for s, why in self.skipped.items()]
            tried.append(f"folder:<name>: no image-folder datasets in {self.data_root / FOLDER_ROOT}. {FOLDER_HOW}")
            raise MissingDataError(
                f"zeroshot: none of its datasets is under the data root {self.data_root}. Looked for:\n  - "
                + "\n  - ".join(tried)
                + "\nOr name a dataset on disk: --bench zeroshot:torchvision:<ClassName> "
                "or --bench zeroshot:hf:<repo_id>."
            )
        return opened

    def items(self) -> list[Item]:
        items = []
        for name, ds in self.datasets.items():
            # another template set gives other scores: another id, so the store keeps both
            suffix = "" if ds.templates_name == ds.default_templates_name else f"#{ds.templates_name}"
            for index, label in enumerate(ds.labels.tolist()):
                ref = f"{name}/{index}"
                items.append(Item(id=ref + suffix, images=(ref,), texts=ds.classes, truth=(label,),
                                  meta={"subset": name, "class": ds.classes[label].label,
                                        "templates": ds.templates_name}))
        return items

    def load_image(self, ref: str) -> Image.Image:
        name, _, index = ref.rpartition("/")
        if name not in self.datasets:
            raise HarnessError(f"image ref {ref!r} names dataset {name!r}, which {self.key} does not hold")
        return self.datasets[name].load(int(index)).convert("RGB")

    def outcome(self, item: Item, scores: np.ndarray) -> dict[str, Any]:
        row = np.asarray(scores, dtype=float)[0]
        ahead = int(others_at_least(row[None], np.array(item.truth))[0])
        predicted = item.texts[int(row.argmax())]
        out: dict[str, Any] = {"top1": ahead < 1,
                               "predicted": predicted.label if isinstance(predicted, Prompts) else predicted}
        if len(row) >= 5:
            out["top5"] = ahead < 5
        return out

    def metrics(self, items: Sequence[Item], scores: Sequence[np.ndarray], seed: int) -> list[MetricRow]:
        groups: dict[str, list[int]] = {}
        for k, item in enumerate(items):
            groups.setdefault(item.meta["subset"], []).append(k)
        rows = []
        for subset, members in groups.items():
            matrix = np.stack([np.asarray(scores[k], dtype=float)[0] for k in members])
            truth = np.array([items[k].truth[0] for k in members])
            rows += classification_rows(subset, matrix, truth, seed,
                                        {"templates": items[members[0]].meta["templates"]},
                                        ids=[items[k].id for k in members])
        return rows

    def details(self) -> dict[str, Any]:
        return {"datasets": {name: {"source": ds.description, "templates": ds.templates_name,
                                    "n_classes": len(ds.classes), "n_images": len(ds.labels)}
                             for name, ds in self.datasets.items()}}

    @classmethod
    def describe_data(cls, data_root: Path) -> list[DataRequirement]:
        data_root = Path(data_root)
        out = []
        for name, spec in CIFAR.items():
            folder = data_root / spec.folder
            found = (folder / spec.test).is_file() and (folder / spec.meta).is_file()
            out.append(DataRequirement(f"{name}: {spec.torchvision_class} test set, torchvision layout "
                                       f"({spec.test}, {spec.meta})", str(folder), found, cifar_how(spec, data_root)))
        val = data_root / "imagenet" / "val"
        found = val.is_dir() and len(subfolders(val)) == N_IMAGENET_CLASSES
        out.append(DataRequirement("imagenet1k: ImageNet-1k validation images in 1000 synset folders",
                                   str(val), found, IMAGENET_HOW))
        folders = folder_datasets(data_root)
        for subset in folders:
            out.append(DataRequirement(f"{subset}: image-folder dataset", str(data_root / FOLDER_ROOT / subset[7:]),
                                       True, FOLDER_HOW))
        if not folders:
            out.append(DataRequirement("folder:<name>: image-folder datasets (optional)",
                                       str(data_root / FOLDER_ROOT), False, FOLDER_HOW))
        return out




_EXAMPLES = {"folder": "folder:pets", "torchvision": "torchvision:DTD", "hf": "hf:timm/oxford-iiit-pet"}


def _absent(subset: str, data_root: Path) -> str | None:
    """Why a suite dataset is absent (its folder is not there), or None when present. Data that is
    present but incomplete is not skipped: opening it raises an error that says what is wrong."""
    if subset in CIFAR:
        folder = data_root / CIFAR[subset].folder
        return None if folder.is_dir() else f"{folder} not found. {cifar_how(CIFAR[subset], data_root)}"
    if subset == "imagenet1k":
        val = data_root / "imagenet" / "val"
        return None if val.is_dir() else f"{val} not found. {IMAGENET_HOW}"
    return None  # folder: datasets are only suggested when their folder exists


def open_dataset(subset: str, data_root: Path, hf_source: str | None = None) -> Dataset:
    """Open one dataset by subset name (labels and class names now, images on demand)."""
    data_root = Path(data_root)
    if subset in CIFAR:
        return Cifar(subset, CIFAR[subset], data_root)
    if subset == "imagenet1k":
        return imagenet(data_root)
    prefix, _, rest = subset.partition(":")
    if prefix == "folder":
        return image_folder(subset, data_root / FOLDER_ROOT / rest)
    if prefix == "torchvision":
        return Torchvision(subset, rest, data_root)
    if prefix == "hf":
        return HuggingFace(subset, rest, hf_source or rest)
    raise UnknownNameError(f"zeroshot subset {subset!r} is not a dataset")


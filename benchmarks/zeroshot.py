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

Those three use ``open_clip.SIMPLE_IMAGENET_TEMPLATES`` too. Without a subset (``--bench
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

import inspect
import json
import os
import pickle
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from harness.api import Benchmark, DataRequirement, Item, MetricRow, Prompts
from harness.errors import BadRecordError, HarnessError, MissingDataError, UnknownNameError
from harness.images import decode_image
from harness.metrics import accuracy_row, bootstrap_ci

BUILT_IN = ("cifar10", "cifar100", "imagenet1k")
PREFIXES = ("folder", "torchvision", "hf")
FOLDER_ROOT = "zeroshot"  # <data-root>/zeroshot/<name>/ holds the folder: datasets
TEMPLATES_FILE = Path(__file__).parent / "data" / "zeroshot_templates.json"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"})
WNID = re.compile(r"n\d{8}")
N_IMAGENET_CLASSES = 1000

IMAGENET_HOW = (
    "ImageNet-1k cannot be downloaded without an account: register at https://image-net.org, get "
    "ILSVRC2012_img_val.tar and ILSVRC2012_devkit_t12.tar.gz into <data-root>/imagenet/, then run "
    "`python -c \"import torchvision; torchvision.datasets.ImageNet('<data-root>/imagenet', split='val')\"` "
    "once: it sorts the 50,000 validation JPEGs into val/<wnid>/ folders (any tool that gives that "
    "layout will do)."
)
FOLDER_HOW = (
    "Put each image-folder dataset in <data-root>/zeroshot/<name>/ with one sub-folder per class, "
    "a classnames.txt (one readable name per line in sorted folder order, or folder<TAB>name lines) "
    "and optionally templates.txt (one prompt template per line with {c} for the class name)."
)


@dataclass(frozen=True)
class _CifarSpec:
    folder: str
    test: str
    meta: str
    labels_key: str
    names_key: str
    torchvision_class: str
    templates: str


CIFAR = {
    "cifar10": _CifarSpec("cifar-10-batches-py", "test_batch", "batches.meta", "labels", "label_names",
                          "CIFAR10", "openai-cifar10"),
    "cifar100": _CifarSpec("cifar-100-python", "test", "meta", "fine_labels", "fine_label_names",
                           "CIFAR100", "openai-cifar100"),
}


def _cifar_how(spec: _CifarSpec, data_root: Path) -> str:
    return (f"On a machine with network run `python -c \"import torchvision; torchvision.datasets."
            f"{spec.torchvision_class}('{data_root}', train=False, download=True)\"` (it writes "
            f"{spec.folder}/ there), or copy an existing {spec.folder}/ folder into {data_root}/.")


# -- templates and metrics ------------------------------------------------------------------------

@lru_cache(maxsize=None)
def template_set(name: str) -> tuple[str, ...]:
    """A named set of prompt templates, ``{c}`` standing for the class name."""
    if name in ("openai-imagenet", "simple-imagenet"):
        import open_clip

        fns = open_clip.OPENAI_IMAGENET_TEMPLATES if name == "openai-imagenet" else open_clip.SIMPLE_IMAGENET_TEMPLATES
        return tuple(fn("{c}") for fn in fns)  # open_clip keeps them as lambdas; ours must pickle
    sets = json.loads(TEMPLATES_FILE.read_text(encoding="utf-8"))["sets"]
    if name not in sets:
        raise HarnessError(f"no template set {name!r} in {TEMPLATES_FILE} (it has {', '.join(sets)})")
    return tuple(sets[name]["templates"])


def others_at_least(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per row of an (n, C) score array: how many other classes score >= the true class."""
    scores = np.asarray(scores, dtype=float)
    true = scores[np.arange(len(truth)), truth]
    return (scores >= true[:, None]).sum(axis=1) - 1


def mean_per_class_recall_row(subset: str, correct: np.ndarray, truth: np.ndarray, n_classes: int,
                              seed: int) -> MetricRow:
    """Top-1 recall of each class that has images, averaged over those classes, with its bootstrap
    interval (a resample that misses a class averages over the classes it has)."""
    correct = np.asarray(correct, dtype=float)
    truth = np.asarray(truth, dtype=np.int64)

    def statistic(idx: np.ndarray) -> np.ndarray:
        b = idx.shape[0]
        # one bincount over all resamples: resample r's class c lands in bin r * n_classes + c
        bins = (truth[idx] + n_classes * np.arange(b)[:, None]).ravel()
        counts = np.bincount(bins, minlength=b * n_classes).reshape(b, n_classes)
        hits = np.bincount(bins, weights=correct[idx].ravel(), minlength=b * n_classes).reshape(b, n_classes)
        present = counts > 0
        recall = np.divide(hits, counts, out=np.zeros_like(hits), where=present)
        return 100.0 * recall.sum(axis=1) / present.sum(axis=1)

    n = len(correct)
    value = float(statistic(np.arange(n)[None])[0]) if n else float("nan")
    low, high = bootstrap_ci(statistic, n, seed)
    return MetricRow(subset=subset, metric="mean_per_class_recall", value=value, n=n, ci_low=low, ci_high=high,
                     details={"classes_with_images": int(len(np.unique(truth)))})


def classification_rows(subset: str, scores: np.ndarray, truth: np.ndarray, seed: int,
                        details: dict[str, Any] | None = None) -> list[MetricRow]:
    """top1, top5 (with at least 5 classes) and mean_per_class_recall of an (n, C) score array."""
    scores = np.asarray(scores, dtype=float)
    truth = np.asarray(truth, dtype=np.int64)
    n_classes = scores.shape[1]
    details = {**(details or {}), "n_classes": n_classes}
    ahead = others_at_least(scores, truth)
    rows = [accuracy_row(subset, "top1", ahead < 1, seed)]
    if n_classes >= 5:
        rows.append(accuracy_row(subset, "top5", ahead < 5, seed))
    rows.append(mean_per_class_recall_row(subset, ahead < 1, truth, n_classes, seed))
    return [replace(r, details={**details, **(r.details or {})}) for r in rows]


# -- the benchmark --------------------------------------------------------------------------------

class ZeroShot(Benchmark):
    name = "zeroshot"
    version = "1"
    subsets = BUILT_IN
    comparisons = "text_argmax"
    # hf:<repo_id> -> what datasets.load_dataset reads instead (a local folder); tests set this
    hf_sources: ClassVar[dict[str, str]] = {}

    def __init__(self, data_root: Path, subset: str | None = None) -> None:
        super().__init__(data_root, subset)
        self._datasets: dict[str, _Dataset] | None = None

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
    def datasets(self) -> dict[str, _Dataset]:
        """The datasets this object evaluates, opened on first use (labels only, images lazily)."""
        if self._datasets is None:
            self._datasets = self._open()
        return self._datasets

    def _open(self) -> dict[str, _Dataset]:
        if self.subset is not None:
            return {self.subset: open_dataset(self.subset, self.data_root, self.hf_sources)}
        opened: dict[str, _Dataset] = {}
        folders = _folder_datasets(self.data_root)
        for subset in (*BUILT_IN, *folders):
            why = _absent(subset, self.data_root)
            if why:
                self.skipped[subset] = why
            else:
                opened[subset] = open_dataset(subset, self.data_root, self.hf_sources)
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
            for index, label in enumerate(ds.labels.tolist()):
                ref = f"{name}/{index}"
                items.append(Item(id=ref, images=(ref,), texts=ds.classes, truth=(label,),
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
                                        {"templates": items[members[0]].meta["templates"]})
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
                                       f"({spec.test}, {spec.meta})", str(folder), found, _cifar_how(spec, data_root)))
        val = data_root / "imagenet" / "val"
        found = val.is_dir() and len(_subfolders(val)) == N_IMAGENET_CLASSES
        out.append(DataRequirement("imagenet1k: ImageNet-1k validation images in 1000 synset folders",
                                   str(val), found, IMAGENET_HOW))
        folders = _folder_datasets(data_root)
        for subset in folders:
            out.append(DataRequirement(f"{subset}: image-folder dataset", str(data_root / FOLDER_ROOT / subset[7:]),
                                       True, FOLDER_HOW))
        if not folders:
            out.append(DataRequirement("folder:<name>: image-folder datasets (optional)",
                                       str(data_root / FOLDER_ROOT), False, FOLDER_HOW))
        return out


_EXAMPLES = {"folder": "folder:pets", "torchvision": "torchvision:DTD", "hf": "hf:timm/oxford-iiit-pet"}


def _subfolders(folder: Path) -> list[str]:
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _folder_datasets(data_root: Path) -> list[str]:
    root = data_root / FOLDER_ROOT
    return [f"folder:{name}" for name in _subfolders(root)] if root.is_dir() else []


def _absent(subset: str, data_root: Path) -> str | None:
    """Why a suite dataset is absent (its folder is not there), or None when present. Data that is
    present but incomplete is not skipped: opening it raises an error that says what is wrong."""
    if subset in CIFAR:
        folder = data_root / CIFAR[subset].folder
        return None if folder.is_dir() else f"{folder} not found. {_cifar_how(CIFAR[subset], data_root)}"
    if subset == "imagenet1k":
        val = data_root / "imagenet" / "val"
        return None if val.is_dir() else f"{val} not found. {IMAGENET_HOW}"
    return None  # folder: datasets are only suggested when their folder exists


def open_dataset(subset: str, data_root: Path, hf_sources: dict[str, str] | None = None) -> _Dataset:
    """Open one dataset by subset name (labels and class names now, images on demand)."""
    data_root = Path(data_root)
    if subset in CIFAR:
        return _Cifar(subset, CIFAR[subset], data_root)
    if subset == "imagenet1k":
        return _imagenet(data_root)
    prefix, _, rest = subset.partition(":")
    if prefix == "folder":
        return _image_folder(subset, data_root / FOLDER_ROOT / rest)
    if prefix == "torchvision":
        return _Torchvision(subset, rest, data_root)
    if prefix == "hf":
        return _HuggingFace(subset, rest, (hf_sources or {}).get(rest, rest))
    raise UnknownNameError(f"zeroshot subset {subset!r} is not a dataset")


# -- datasets -------------------------------------------------------------------------------------

class _Dataset:
    """One classification dataset: class candidates, one label per image, lazy image decoding.

    Picklable for data-loader workers; attributes named in ``_transient`` (decoded arrays, open
    datasets) are left out of the pickle and rebuilt on first use in the worker.
    """

    _transient: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name: str, description: str, classnames: Sequence[str], labels: Any,
                 templates_name: str, templates: Sequence[str]) -> None:
        self.name = name
        self.description = description
        self.templates_name = templates_name
        self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if not classnames:
            raise BadRecordError(f"{name}: no class names ({description})")
        if not len(self.labels):
            raise BadRecordError(f"{name}: no images ({description})")
        bad = self.labels[(self.labels < 0) | (self.labels >= len(classnames))]
        if len(bad):
            hint = " (-1 marks an unlabelled image: is this a split without labels?)" if bad[0] < 0 else ""
            raise BadRecordError(f"{name}: label {int(bad[0])} is outside 0..{len(classnames) - 1} "
                                 f"({len(classnames)} class names; {description}){hint}")
        for t in templates:
            if "{c}" not in t:
                raise BadRecordError(f"{name}: template {t!r} ({templates_name}) has no {{c}} for the class name")
        # ONE tuple shared by every item of the dataset: the CLIP scorer builds the classifier once
        self.classes: tuple[Prompts, ...] = tuple(
            Prompts(label=c, texts=tuple(t.replace("{c}", c) for t in templates)) for c in classnames
        )

    def load(self, index: int) -> Image.Image:
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, **{k: None for k in self._transient}}


def _readable(name: str) -> str:
    return name.replace("_", " ").strip()


def _read_pickle(path: Path) -> dict[str, Any]:
    """A CIFAR pickle: written by Python 2, so its strings need latin1 (torchvision reads it so)."""
    try:
        with open(path, "rb") as f:
            data = pickle.load(f, encoding="latin1")
    except Exception as err:
        raise BadRecordError(f"cannot read {path} as a CIFAR pickle: {type(err).__name__}: {err}") from err
    if not isinstance(data, dict):
        raise BadRecordError(f"{path} holds a {type(data).__name__}, not the dict of a CIFAR file")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in data.items()}


class _Cifar(_Dataset):
    _transient = ("_pixels",)

    def __init__(self, name: str, spec: _CifarSpec, data_root: Path) -> None:
        folder = data_root / spec.folder
        self.test_path = folder / spec.test
        meta_path = folder / spec.meta
        for path in (self.test_path, meta_path):
            if not path.is_file():
                raise MissingDataError(f"{name}: {path} not found. {_cifar_how(spec, data_root)}")
        batch = _read_pickle(self.test_path)
        names = _read_pickle(meta_path).get(spec.names_key)
        if not names:
            raise BadRecordError(f"{meta_path} has no {spec.names_key!r}; is this the {name} meta file?")
        if spec.labels_key not in batch:
            raise BadRecordError(f"{self.test_path} has no {spec.labels_key!r}; is this the {name} test file?")
        self._pixels: np.ndarray | None = self._check_pixels(batch.get("data"), len(batch[spec.labels_key]))
        super().__init__(name, f"{folder} (torchvision layout, {spec.test})",
                         [_readable(str(n)) for n in names], batch[spec.labels_key],
                         spec.templates, template_set(spec.templates))

    def _check_pixels(self, data: Any, n: int) -> np.ndarray:
        data = np.asarray(data) if data is not None else None
        if data is None or data.dtype != np.uint8 or data.shape != (n, 3 * 32 * 32):
            shape = None if data is None else (data.shape, str(data.dtype))
            raise BadRecordError(f"{self.test_path}: 'data' should be {n} x 3072 uint8 (channel-major 3x32x32 "
                                 f"images), found {shape}")
        return data

    def load(self, index: int) -> Image.Image:
        if self._pixels is None:  # in a loader worker: read the file once there
            batch = _read_pickle(self.test_path)
            self._pixels = self._check_pixels(batch.get("data"), len(self.labels))
        channels_first = self._pixels[index].reshape(3, 32, 32)
        return Image.fromarray(np.ascontiguousarray(channels_first.transpose(1, 2, 0)))


class _Files(_Dataset):
    """Images as files under ``root``, ``files[i]`` relative to it."""

    def __init__(self, name: str, root: Path, files: list[str], labels: list[int], classnames: Sequence[str],
                 templates_name: str, templates: Sequence[str], description: str) -> None:
        self.root = root
        self.files = files
        super().__init__(name, description, classnames, labels, templates_name, templates)

    def load(self, index: int) -> Image.Image:
        return decode_image(self.root / self.files[index], str(self.root / self.files[index]))


def _image_files(folder: Path) -> list[str]:
    """Image files below ``folder``, relative to it, sorted; hidden files and folders are skipped."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = Path(dirpath).relative_to(folder)
        out += [(rel / f).as_posix() for f in filenames
                if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(out)


def _imagenet(data_root: Path) -> _Files:
    import open_clip

    val = data_root / "imagenet" / "val"
    if not val.is_dir():
        raise MissingDataError(f"imagenet1k: {val} not found. {IMAGENET_HOW}")
    wnids = _subfolders(val)
    if len(wnids) != N_IMAGENET_CLASSES:
        loose = sum(1 for p in val.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        hint = (f" It holds {loose} images directly: the validation tar extracts flat, and the images must "
                "be sorted into their synset folders." if loose else "")
        raise BadRecordError(f"imagenet1k: {val} holds {len(wnids)} class folders, expected 1000, one per "
                             f"synset id (n01440764 ...): the class index is their sorted order.{hint} {IMAGENET_HOW}")
    odd = [w for w in wnids if not WNID.fullmatch(w)]
    if odd:
        raise BadRecordError(f"imagenet1k: folders in {val} must be named by synset id (like n01440764), so "
                             f"that their sorted order is the standard class index; found {odd[:3]}")
    # The official order of validation images is by file name (ILSVRC2012_val_00000001.JPEG, ...),
    # which also mixes classes, so --limit takes a sample across classes.
    entries = sorted((Path(f).name, label, f"{wnid}/{f}")
                     for label, wnid in enumerate(wnids) for f in _image_files(val / wnid))
    if not entries:
        raise MissingDataError(f"imagenet1k: the 1000 class folders in {val} hold no images. {IMAGENET_HOW}")
    return _Files("imagenet1k", val, [e[2] for e in entries], [e[1] for e in entries],
                  list(open_clip.IMAGENET_CLASSNAMES), "openai-imagenet", template_set("openai-imagenet"),
                  f"{val} (synset folders)")


def _read_classnames(path: Path, folders: list[str]) -> list[str]:
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    tabbed = ["\t" in line for line in lines]
    if any(tabbed):
        if not all(tabbed):
            raise BadRecordError(f"{path}: mixes folder<TAB>name lines with plain lines; use one form")
        mapping = dict(line.split("\t", 1) for line in lines)
        mapping = {k.strip(): v.strip() for k, v in mapping.items()}
        unnamed = [f for f in folders if f not in mapping]
        unknown = [k for k in mapping if k not in folders]
        if unnamed or unknown:
            raise BadRecordError(f"{path}: class folders without a name: {unnamed[:5]}; "
                                 f"names for folders that do not exist: {unknown[:5]}")
        return [mapping[f] for f in folders]
    if len(lines) != len(folders):
        raise BadRecordError(f"{path} has {len(lines)} names for {len(folders)} class folders "
                             f"({', '.join(folders[:5])}{', ...' if len(folders) > 5 else ''}); write one name per "
                             "folder in sorted folder order, or folder<TAB>name lines")
    return lines


def _image_folder(subset: str, folder: Path) -> _Files:
    if not folder.is_dir():
        raise MissingDataError(f"{subset}: {folder} not found. {FOLDER_HOW}")
    class_dirs = _subfolders(folder)
    if not class_dirs:
        raise MissingDataError(f"{subset}: {folder} has no class sub-folders. {FOLDER_HOW}")
    names_file = folder / "classnames.txt"
    if names_file.is_file():
        classnames = _read_classnames(names_file, class_dirs)
    else:
        classnames = [_readable(d) for d in class_dirs]
    templates_file = folder / "templates.txt"
    if templates_file.is_file():
        templates = [t.strip() for t in templates_file.read_text(encoding="utf-8").splitlines() if t.strip()]
        if not templates:
            raise BadRecordError(f"{templates_file} is empty; write one template per line with {{c}}, or delete it")
        templates_name = "templates.txt"
    else:
        templates_name, templates = "simple-imagenet", list(template_set("simple-imagenet"))
    files, labels = [], []
    for label, d in enumerate(class_dirs):
        found = _image_files(folder / d)
        files += [f"{d}/{f}" for f in found]
        labels += [label] * len(found)
    if not files:
        raise MissingDataError(f"{subset}: the class folders in {folder} hold no images "
                               f"({', '.join(sorted(IMAGE_SUFFIXES))})")
    return _Files(subset, folder, files, labels, classnames, templates_name, templates,
                  f"{folder} (image folders)")


class _Torchvision(_Dataset):
    _transient = ("_dataset",)

    def __init__(self, name: str, class_name: str, data_root: Path) -> None:
        import torchvision.datasets as tvd

        cls = getattr(tvd, class_name, None)
        if not (isinstance(cls, type) and class_name in tvd.__all__):
            from harness.registry import unknown_name_message

            same = [n for n in tvd.__all__ if n.lower() == class_name.lower()]
            if same:  # difflib's did-you-mean does not see "Cifar10" as close to "CIFAR10"
                raise UnknownNameError(f"unknown torchvision dataset {class_name!r}. Did you mean {same[0]!r}? "
                                       "(torchvision class names are case-sensitive)")
            raise UnknownNameError(unknown_name_message("torchvision dataset", class_name, sorted(tvd.__all__)))
        self.name = name
        self.class_name = class_name
        self.root = data_root / class_name.lower()
        if not self.root.is_dir():
            raise MissingDataError(f"{name}: {self.root} not found. {self._how({'split': 'test'})}")
        self.kwargs, dataset = self._construct(cls)
        self._dataset: Any = dataset
        classnames = getattr(dataset, "classes", None)
        if not classnames or not all(isinstance(c, str) for c in classnames):
            raise BadRecordError(f"{name}: torchvision.datasets.{class_name} has no class names (.classes), which "
                                 "zero-shot prompts need. Use a folder: dataset with classnames.txt instead.")
        labels = _torchvision_labels(dataset, name)
        split = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items()) or "the whole dataset (no split argument)"
        super().__init__(name, f"torchvision.datasets.{class_name}({self.root}, {split})",
                         [_readable(c) for c in classnames], labels, "simple-imagenet", template_set("simple-imagenet"))

    def _how(self, kwargs: dict[str, Any]) -> str:
        args = "".join(f", {k}={v!r}" for k, v in kwargs.items())
        return (f"On a machine with network run `python -c \"import torchvision; torchvision.datasets."
                f"{self.class_name}('{self.root}'{args}, download=True)\"` (if the class can download), "
                f"or put the files where torchvision.datasets.{self.class_name} expects them under {self.root}/.")

    def _construct(self, cls: type) -> tuple[dict[str, Any], Any]:
        params = inspect.signature(cls).parameters
        if "split" in params:
            choices: list[dict[str, Any]] = [{"split": "test"}, {"split": "val"}]
        elif "train" in params:
            choices = [{"train": False}]
        else:
            choices = [{}]
        extra = {"download": False} if "download" in params else {}
        refused = []
        for kwargs in choices:
            try:
                return kwargs, cls(str(self.root), **kwargs, **extra)
            except ValueError as err:  # torchvision's answer to a split the class does not have
                refused.append(f"{kwargs}: {err}")
            except ImportError as err:  # e.g. scipy, which some torchvision datasets read their files with
                raise HarnessError(f"{self.name}: torchvision.datasets.{self.class_name} needs the package "
                                   f"{err.name or err}: pip install it") from err
            except (RuntimeError, OSError) as err:
                raise MissingDataError(f"{self.name}: torchvision.datasets.{self.class_name}('{self.root}', "
                                       f"{kwargs}, download=False) found no data: {err}. {self._how(kwargs)}") from err
        raise HarnessError(f"{self.name}: torchvision.datasets.{self.class_name} has neither a test nor a val "
                           f"split: {'; '.join(refused)}")

    def load(self, index: int) -> Image.Image:
        if self._dataset is None:  # in a loader worker: open it again there
            import torchvision.datasets as tvd

            cls = getattr(tvd, self.class_name)
            extra = {"download": False} if "download" in inspect.signature(cls).parameters else {}
            self._dataset = cls(str(self.root), **self.kwargs, **extra)
        image = self._dataset[index][0]
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        if not isinstance(image, Image.Image):
            raise BadRecordError(f"{self.name}: item {index} gave a {type(image).__name__}, not a PIL image")
        return image


def _torchvision_labels(dataset: Any, name: str) -> np.ndarray:
    """Labels without decoding images: the attributes torchvision's classification datasets use."""
    for attr in ("targets", "_labels", "labels", "y"):
        value = getattr(dataset, attr, None)
        if value is not None and not callable(value):
            labels = np.asarray(value.tolist() if hasattr(value, "tolist") else list(value))
            if labels.ndim == 1 and len(labels) == len(dataset) and np.issubdtype(labels.dtype, np.integer):
                return labels
    for attr in ("_samples", "samples", "imgs"):
        value = getattr(dataset, attr, None)
        if value is not None and len(value) == len(dataset):
            return np.asarray([s[1] for s in value])
    raise BadRecordError(f"{name}: found no integer label per image in targets, _labels, labels, y, _samples, "
                         f"samples or imgs of {type(dataset).__name__}")


class _HuggingFace(_Dataset):
    def __init__(self, name: str, repo_id: str, source: str) -> None:
        import datasets

        dataset, split = _load_hf(name, repo_id, source)
        features = dataset.features
        images = [c for c, f in features.items() if isinstance(f, datasets.Image)]
        labels = [c for c, f in features.items() if isinstance(f, datasets.ClassLabel)]
        if not images or not labels:
            raise BadRecordError(f"{name}: split {split!r} needs an Image column and a ClassLabel column; its "
                                 f"features are {', '.join(f'{c}: {type(f).__name__}' for c, f in features.items())}")
        self.image_column = images[0]
        label_column = "label" if "label" in labels else labels[0]
        self._images = dataset.select_columns([self.image_column])
        values = dataset.select_columns([label_column]).to_dict()[label_column]
        super().__init__(name, f"datasets.load_dataset({source!r}, split={split!r}): {self.image_column}, "
                         f"{label_column}", [_readable(n) for n in features[label_column].names], values,
                         "simple-imagenet", template_set("simple-imagenet"))

    def load(self, index: int) -> Image.Image:
        image = self._images[index][self.image_column]
        if not isinstance(image, Image.Image):
            raise BadRecordError(f"{self.name}: row {index} column {self.image_column} is not an image")
        return image


def _load_hf(name: str, repo_id: str, source: str) -> tuple[Any, str]:
    import datasets

    cache = os.environ.get("HF_DATASETS_CACHE") or None
    unknown = ""
    for split in ("test", "validation"):
        try:
            return datasets.load_dataset(source, split=split, cache_dir=cache), split
        except ValueError as err:
            if "Unknown split" not in str(err):
                raise BadRecordError(f"{name}: datasets.load_dataset({source!r}, split={split!r}): {err}") from err
            unknown = str(err).strip().splitlines()[0]
        except Exception as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            where = cache or datasets.config.HF_DATASETS_CACHE
            raise MissingDataError(
                f"{name}: datasets.load_dataset({source!r}) found nothing usable in the datasets cache {where} "
                f"({first[:200]}). Where there is network, run `python -c \"import datasets; "
                f"datasets.load_dataset('{repo_id}')\"` with the same HF_DATASETS_CACHE, then copy the cache "
                "here (and set HF_DATASETS_OFFLINE=1)."
            ) from err
    raise BadRecordError(f"{name}: {source} has neither a test nor a validation split ({unknown})")

"""EqBen (Wang et al., ICCV 2023, "Equivariant Similarity for Vision-Language Foundation Models"):
Winoground-style items of two images with a minimal *visual* change (neighbouring video frames,
synthetic renders) and their two captions.

Source: GitHub Wangt-CN/EqBen. Read there: ``README.md`` (the downloads), ``src/eqben/eqben_utils.py``
(the loaders), ``src/eqben/eqben_acc.py`` and ``evaluate_eqben_locally.py`` (the metric and the
per-subset evaluation) and ``example/eqben_eval_CLIP.py`` (how images are decoded).

Data: the official 10% subset, whose labels were public from the start (its README: "the format
follows the winoground style"). The full test set (about 100 GB of images) first had only a
randomised annotation scored on the authors' server; the original annotation published later
comes in a format not checked here, so only the subset is supported (``--bench-opt
annotations=`` may point at another file with the same records):

- ``<data-root>/eqben/eqben_subset_10percent_final.json``: a JSON list of records
  ``{"image0", "caption0", "image1", "caption1"}``, in random order, not grouped by sub-dataset;
- ``<data-root>/eqben/image_subset/``: the images (``subset_image.tar.gz``), at the records' paths.

Each path starts with the sub-dataset it comes from, the names the official evaluation uses:
``eqbenag`` (Action Genome), ``eqbenyoucook2``, ``eqbengebc``, ``eqbenkubric_loc``,
``eqbenkubric_attr``, ``eqbenkubric_cnt`` and ``eqbensd`` (Stable Diffusion). They are this
benchmark's subsets (``--bench eqben:eqbensd``). YouCook2 frames are stored as ``.npy`` arrays in
BGR channel order; the official example turns them into RGB images (channels reversed), as here.

Metric, as ``eqben_acc.cal_wino_score`` and ``evaluate_eqben_locally.py`` compute it (strict
``>``, so a tie is wrong, Winoground's rule): text = s(c0,i0) > s(c1,i0) and s(c1,i1) > s(c0,i1);
image = s(c0,i0) > s(c0,i1) and s(c1,i1) > s(c1,i0); group = both. One row per sub-dataset, as the
official evaluation reports them, plus ``all`` over every item evaluated (not an official number).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from harness.api import Benchmark, DataRequirement, Item, MetricRow
from harness.errors import BadRecordError, MissingDataError
from harness.images import decode_image
from harness.metrics import accuracy_row, winoground_correct, winoground_outcome
from harness.options import FilePath, Option

# the official evaluation's sub-dataset names (evaluate_eqben_locally.py), which the paths start with
SUBSETS = ("eqbenag", "eqbenyoucook2", "eqbengebc", "eqbenkubric_loc", "eqbenkubric_attr", "eqbenkubric_cnt",
           "eqbensd")
ANNOTATION = "eqben_subset_10percent_final.json"
IMAGES = "image_subset"
FIELDS = ("image0", "caption0", "image1", "caption1")
HOW_TO_GET = (
    "Download the EqBen 10% subset as the README of https://github.com/Wangt-CN/EqBen says (section "
    "'Data Download', 'Sub-Test Set'): its annotation eqben_subset_10percent_final.json into <data-root>/eqben/ "
    "and its images, subset_image.tar.gz (about 10 GB), unpacked so that <data-root>/eqben/image_subset/ "
    "holds the folders eqbenag/, eqbensd/, ... The repository's code is Apache-2.0; it states no separate "
    "licence for the data."
)


class EqBen(Benchmark):
    """Options: ``harness ls eqben``."""

    name = "eqben"
    version = "1"
    subsets = SUBSETS
    comparisons = "matrix"
    OPTIONS = (
        Option("annotations", FilePath(), None, f"the subset's annotation file (default: <data-root>/eqben/{ANNOTATION})"),
        Option("images", FilePath(), None, f"the folder the annotation's image paths start from "
                                           f"(default: <data-root>/eqben/{IMAGES})"),
    )

    def __init__(self, data_root: Path, subset: str | None = None, **options: Any) -> None:
        super().__init__(data_root, subset, **options)
        self.annotations = Path(self.options["annotations"] or self.data_root / "eqben" / ANNOTATION)
        self.images = Path(self.options["images"] or self.data_root / "eqben" / IMAGES)

    def items(self) -> list[Item]:
        if not self.annotations.is_file():
            raise MissingDataError(f"EqBen: annotation file {self.annotations} not found. {HOW_TO_GET}")
        if not self.images.is_dir():
            raise MissingDataError(f"EqBen: image folder {self.images} not found. {HOW_TO_GET}")
        records = _read_list(self.annotations)
        items = []
        for index, record in enumerate(records):
            for field in FIELDS:
                if not isinstance(record, dict) or not isinstance(record.get(field), str):
                    raise BadRecordError(f"record {index} of {self.annotations} lacks the text field {field!r}")
            source = _source(record["image0"])
            if source not in SUBSETS or _source(record["image1"]) != source:
                raise BadRecordError(f"record {index} of {self.annotations}: its images {record['image0']!r} and "
                                     f"{record['image1']!r} should both start with one of {', '.join(SUBSETS)}")
            # ids are positions in the official file, so a one-subset run reuses a whole run's scores
            items.append(Item(id=f"{source}/{index}", images=(record["image0"], record["image1"]),
                              texts=(record["caption0"], record["caption1"]), truth=(0, 1),
                              meta={"subset": source}))
        wanted = [self.subset] if self.subset else list(SUBSETS)
        for subset in wanted:
            if not any(item.meta["subset"] == subset for item in items):
                why = f"no record of {self.annotations} has images under {subset}/"
                if self.subset:
                    raise MissingDataError(f"EqBen {subset}: {why}")
                self.skipped[subset] = why
        return [item for item in items if item.meta["subset"] in wanted]

    def load_image(self, ref: str) -> Image.Image:
        path = self.images / ref
        if not path.is_file():
            raise MissingDataError(f"EqBen image {path} not found. {HOW_TO_GET}")
        if path.suffix.lower() == ".npy":
            return _npy_frame(path)
        return decode_image(path, str(path)).convert("RGB")

    def outcome(self, item: Item, scores: np.ndarray) -> dict[str, Any]:
        return winoground_outcome(scores)

    def metrics(self, items: Sequence[Item], scores: Sequence[np.ndarray], seed: int) -> list[MetricRow]:
        correct = winoground_correct(scores)
        subsets = np.array([item.meta["subset"] for item in items])
        groups = [s for s in SUBSETS if s in set(subsets.tolist())]
        if len(groups) > 1:
            groups.insert(0, "all")
        ids = np.array([item.id for item in items], dtype=object)
        rows = []
        for group in groups:
            mask = np.ones(len(items), bool) if group == "all" else subsets == group
            for metric, right in correct.items():
                rows.append(accuracy_row(group, metric, np.array(right)[mask], seed,
                                         ids[mask].tolist()))
        return rows

    def details(self) -> dict[str, Any]:
        return {"annotations": self.annotations.name}

    @classmethod
    def describe_data(cls, data_root: Path) -> list[DataRequirement]:
        bench = cls(data_root)
        return [
            DataRequirement("EqBen 10% subset annotation (winoground-style JSON list)", str(bench.annotations),
                            bench.annotations.is_file(), HOW_TO_GET),
            DataRequirement("EqBen 10% subset images (subset_image.tar.gz, about 10 GB, unpacked)", str(bench.images),
                            bench.images.is_dir(), HOW_TO_GET),
        ]


def _source(path: str) -> str:
    return path.replace("\\", "/").lstrip("/").split("/", 1)[0]


def _read_list(path: Path) -> list[Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise BadRecordError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(data, list):
        raise BadRecordError(f"{path} should hold a JSON list of records (the EqBen subset's winoground-style "
                             f"annotation), found {type(data).__name__}")
    return data


def _npy_frame(path: Path) -> Image.Image:
    """A YouCook2 frame: an H x W x 3 uint8 array in BGR order (the official example reverses the
    channels). Read without pickle, so a file can never run code."""
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise BadRecordError(f"{path} is not a readable .npy image array: {err}") from err
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise BadRecordError(f"{path} should hold an H x W x 3 uint8 BGR frame, found shape {array.shape} "
                             f"dtype {array.dtype}")
    return Image.fromarray(np.ascontiguousarray(array[:, :, ::-1]), "RGB")

"""CLEVR binding and spatial subtasks as DiffusionITM's GDBench defines them (Krojer et al. 2023,
"Are Diffusion Models Vision-and-Language Reasoners?"; GitHub McGill-NLP/diffusion-itm: the loader
``CLEVRDataset`` in ``datasets_loading.py``, the decision in ``utils.py`` ``evaluate_retrieval``,
the per-subtask tally in ``diffusion_itm.py``).

Files, in the repository's layout: ``<data-root>/clevr/captions/{subtask}.json`` for the seven
subtasks (the repository's ``data/clevr/captions/``), each a JSON object that maps an image file
name to a list of ``[true caption, false caption]`` pairs, and the rendered scenes
``<data-root>/clevr/images/<file name>`` (``images.zip`` of Zenodo record 8096756, which the
repository's ``setup.sh`` downloads). In the released files every subtask has 574 images with two
pairs each, 1,148 items.

Each pair is one item: the image against [true caption, false caption] (image-to-text: GDBench
scores both captions for the one image and picks the argmax). Metric: accuracy per subtask, and
``all``, the accuracy over every item evaluated (GDBench's overall figure, a micro mean).

Ties: GDBench's ``np.argmax`` sends a tie to index 0, the true caption, so it counts a tie as
right. The default here is the harness's strict rule (a tie is wrong); ``--bench-opt
ties=official`` reproduces GDBench. Every row counts its tied items (``tied_items``; GDBench
prints the same count as "max more than once").

GDBench's loader has a branch meant to take captions 1 and 2 of a ``spatial`` pair, written as
``if 'subtask' == 'spatial'`` (two string literals, never equal); every released spatial pair has
exactly two captions, so the effective rule, used here, is caption 0 true and caption 1 false for
every subtask.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from harness.api import Benchmark, DataRequirement, Item, MetricRow, missing_file
from harness.errors import BadRecordError, MissingDataError
from harness.images import decode_image
from harness.metrics import accuracy_row, by_subset, tied_at_top, ties_option, wins
from harness.options import FilePath, Option

SUBTASKS = ("pair_binding_size", "pair_binding_color", "recognition_color", "recognition_shape", "spatial",
            "binding_color_shape", "binding_shape_color")
EXPECTED_ITEMS = 1148  # per subtask in the released caption files (574 images x 2 pairs)
HOW_TO_GET = (
    "Copy the caption files data/clevr/captions/{subtask}.json of the GitHub repository "
    "McGill-NLP/diffusion-itm into <data-root>/clevr/captions/, and unzip its images "
    "(https://zenodo.org/record/8096756/files/images.zip, as the repository's setup.sh does) so that the "
    "PNG files lie in <data-root>/clevr/images/."
)


class CLEVR(Benchmark):
    """Options: ``harness ls clevr``."""

    name = "clevr"
    version = "1"
    subsets = SUBTASKS
    comparisons = "text_argmax"
    OPTIONS = (
        Option("captions", FilePath(), None, "folder of the seven {subtask}.json caption files "
                                             "(default: <data-root>/clevr/captions)"),
        Option("images", FilePath(), None, "folder of the rendered scenes (default: <data-root>/clevr/images)"),
        ties_option("a tie goes to the true caption, as GDBench's np.argmax decides"),
    )

    def __init__(self, data_root: Path, subset: str | None = None, **options: Any) -> None:
        super().__init__(data_root, subset, **options)
        self.captions = Path(self.options["captions"] or self.data_root / "clevr" / "captions")
        self.images = Path(self.options["images"] or self.data_root / "clevr" / "images")
        self.ties: str = self.options["ties"]
        self.tie_rule = "argmax" if self.ties == "official" else "strict"  # GDBench decides by np.argmax

    def items(self) -> list[Item]:
        if not self.images.is_dir():
            raise MissingDataError(f"CLEVR images: folder {self.images} not found. {HOW_TO_GET}")
        return self.items_of_subsets(
            lambda subtask: self._read(subtask, self.captions / f"{subtask}.json"),
            lambda subtask: missing_file(self.captions / f"{subtask}.json", "caption file", HOW_TO_GET), "CLEVR")

    def _read(self, subtask: str, path: Path) -> list[Item]:
        data = _read_captions(path)
        items = []
        for image, pairs in data.items():
            if not isinstance(pairs, list):
                raise BadRecordError(f"{path}: the entry of image {image!r} should be a list of "
                                     f"[true caption, false caption] pairs, found {type(pairs).__name__}")
            for k, pair in enumerate(pairs):
                if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(c, str) and c for c in pair)):
                    raise BadRecordError(f"{path}: pair {k} of image {image!r} should be [true caption, "
                                         f"false caption] (two non-empty strings), found {pair!r}")
                items.append(Item(id=f"{subtask}/{image}/{k}", images=(image,), texts=(pair[0], pair[1]),
                                  truth=(0,), meta={"subset": subtask}))
        return items

    def load_image(self, ref: str) -> Image.Image:
        path = self.images / ref
        if not path.is_file():
            raise MissingDataError(f"CLEVR image {path} not found. {HOW_TO_GET}")
        return decode_image(path, str(path)).convert("RGB")  # the renders are RGBA PNGs

    def outcome(self, item: Item, scores: np.ndarray) -> dict[str, Any]:
        return {"correct": wins(scores[0], item.truth[0], self.tie_rule), "tied": tied_at_top(scores[0])}

    def metrics(self, items: Sequence[Item], scores: Sequence[np.ndarray], seed: int) -> list[MetricRow]:
        rows = []
        every_correct, every_tied, every_id = [], [], []
        for subtask, chosen, matrices in by_subset(items, scores, SUBTASKS):
            ids = [item.id for item in chosen]
            correct = np.array([wins(m[0], item.truth[0], self.tie_rule) for item, m in zip(chosen, matrices)])
            tied = int(sum(tied_at_top(m[0]) for m in matrices))
            details: dict[str, Any] = {"ties": self.ties, "tied_items": tied}
            if len(correct) != EXPECTED_ITEMS:  # a partial download or a --limit
                details["expected_n"] = EXPECTED_ITEMS
            rows.append(replace(accuracy_row(subtask, "accuracy", correct, seed, ids), details=details))
            every_correct.append(correct)
            every_tied.append(tied)
            every_id += ids
        if len(rows) > 1:
            overall = accuracy_row("all", "accuracy", np.concatenate(every_correct), seed, every_id)
            rows.append(replace(overall, details={"ties": self.ties, "tied_items": sum(every_tied),
                                                  "subtasks": sorted(r.subset for r in rows)}))
        return rows

    def details(self) -> dict[str, Any]:
        return {"ties": self.ties}

    @classmethod
    def describe_data(cls, data_root: Path) -> list[DataRequirement]:
        bench = cls(data_root)
        out = []
        wanted: set[str] = set()
        for subtask in SUBTASKS:
            path = bench.captions / f"{subtask}.json"
            out.append(DataRequirement(f"CLEVR {subtask} captions", str(path), path.is_file(), HOW_TO_GET))
            if path.is_file():
                try:
                    wanted |= set(_read_captions(path))
                except BadRecordError:
                    pass  # reported when the benchmark runs; here only the counts suffer
        present = set(os.listdir(bench.images)) if bench.images.is_dir() else set()
        count = (f": {len(wanted & present)} of the {len(wanted)} images the caption files name are present"
                 if wanted else "")
        out.append(DataRequirement(f"CLEVR images (Zenodo 8096756 images.zip){count}", str(bench.images),
                                   bench.images.is_dir() and (not wanted or bool(wanted & present)), HOW_TO_GET))
        return out


def _read_captions(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise BadRecordError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise BadRecordError(f"{path} should hold a JSON object mapping image file names to caption pairs, "
                             f"found {type(data).__name__}")
    return data

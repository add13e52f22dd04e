"""SugarCrepe (Hsieh et al., NeurIPS 2023): one COCO val2017 image, its caption against a hard
negative made by replacing, swapping or adding an object, attribute or relation.

Files: ``<data-root>/sugarcrepe/{subset}.json`` (a dict keyed by index, values
``{"filename", "caption", "negative_caption"}``) and the images ``<data-root>/coco/val2017/``.
Accuracy per subset (the positive must score strictly higher; a tie is wrong), and the mean over
the subsets evaluated, with a stratified bootstrap interval.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from harness.api import Benchmark, DataRequirement, Item, MetricRow, missing_file
from harness.errors import BadRecordError, MissingDataError
from harness.images import decode_image
from harness.metrics import accuracy_row, by_subset, macro_accuracy_row, strictly_first
from harness.options import FilePath, Option

SUBSETS = ("replace-obj", "replace-att", "replace-rel", "swap-obj", "swap-att", "add-obj", "add-att")
# published subset sizes (Hsieh et al.), to flag a partial download
EXPECTED_SIZES = {"replace-obj": 1652, "replace-att": 788, "replace-rel": 1406, "swap-obj": 245,
                  "swap-att": 666, "add-obj": 2062, "add-att": 692}
HOW_TO_GET = (
    "Get the seven SugarCrepe JSON files from the SugarCrepe repository (data/*.json) into "
    "<data-root>/sugarcrepe/ and the COCO 2017 validation images into <data-root>/coco/val2017/."
)


class SugarCrepe(Benchmark):
    """Options: ``harness ls sugarcrepe``."""

    name = "sugarcrepe"
    version = "1"
    subsets = SUBSETS
    comparisons = "text_argmax"
    OPTIONS = (
        Option("annotations", FilePath(), None, "folder of the seven {subset}.json files "
                                                "(default: <data-root>/sugarcrepe)"),
        Option("images", FilePath(), None, "COCO val2017 images (default: <data-root>/coco/val2017)"),
    )

    def __init__(self, data_root: Path, subset: str | None = None, **options: Any) -> None:
        super().__init__(data_root, subset, **options)
        self.annotations = Path(self.options["annotations"] or self.data_root / "sugarcrepe")
        self.images = Path(self.options["images"] or self.data_root / "coco" / "val2017")
        self.sizes: dict[str, int] = {}

    def items(self) -> list[Item]:
        if not self.images.is_dir():
            raise MissingDataError(f"SugarCrepe images: folder {self.images} not found. {HOW_TO_GET}")
        return self.items_of_subsets(
            lambda subset: self._read(subset, self.annotations / f"{subset}.json"),
            lambda subset: missing_file(self.annotations / f"{subset}.json", "annotation file", HOW_TO_GET),
            "SugarCrepe")

    def _read(self, subset: str, path: Path) -> list[Item]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise BadRecordError(f"{path} is not valid JSON: {err}") from err
        if not isinstance(data, dict):
            raise BadRecordError(f"{path} should hold a JSON object keyed by index, found {type(data).__name__}")
        items = []
        for key, record in data.items():
            for field in ("filename", "caption", "negative_caption"):
                if not isinstance(record, dict) or field not in record:
                    raise BadRecordError(f"record {key!r} of {path} lacks field {field!r}")
            items.append(Item(id=f"{subset}/{key}", images=(str(record["filename"]),),
                              texts=(str(record["caption"]), str(record["negative_caption"])), truth=(0,),
                              meta={"subset": subset}))
        self.sizes[subset] = len(items)
        return items

    def load_image(self, ref: str) -> Image.Image:
        path = self.images / ref
        if not path.is_file():
            raise MissingDataError(f"image {path} not found")
        return decode_image(path, str(path)).convert("RGB")

    def outcome(self, item: Item, scores: np.ndarray) -> dict[str, Any]:
        return {"correct": strictly_first(scores, item.truth[0])}

    def metrics(self, items: Sequence[Item], scores: Sequence[np.ndarray], seed: int) -> list[MetricRow]:
        per_subset, ids = {}, {}
        for subset, chosen, matrices in by_subset(items, scores, SUBSETS):
            per_subset[subset] = np.array([strictly_first(s, item.truth[0]) for item, s in zip(chosen, matrices)])
            ids[subset] = [item.id for item in chosen]
        out = []
        for subset, correct in per_subset.items():
            row = accuracy_row(subset, "accuracy", correct, seed, ids[subset])
            expected = EXPECTED_SIZES[subset]
            # a partial file (or a --limit) is flagged with the published size
            out.append(row if len(correct) == expected else replace(row, details={"expected_n": expected}))
        if len(per_subset) > 1:
            mean = macro_accuracy_row("mean", "accuracy", list(per_subset.values()), seed,
                                      ids=list(ids.values()), names=list(per_subset))
            out.append(replace(mean, details={"subsets": sorted(per_subset)}))
        return out

    @classmethod
    def describe_data(cls, data_root: Path) -> list[DataRequirement]:
        bench = cls(data_root)
        out = [DataRequirement("COCO val2017 images", str(bench.images), bench.images.is_dir(), HOW_TO_GET)]
        for subset in SUBSETS:
            path = bench.annotations / f"{subset}.json"
            out.append(DataRequirement(f"SugarCrepe {subset}", str(path), path.is_file(), HOW_TO_GET))
        return out

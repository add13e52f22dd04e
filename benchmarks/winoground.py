"""Winoground (Thrush et al., CVPR 2022): 400 items of two images and two captions that use the
same words in a different order.

Where the data comes from, first found wins:
1. ``<data-root>/winoground/``, a copy of the dataset repository in either of its layouts:
   ``data/test-*.parquet`` (current revision, images embedded) or ``data/examples.jsonl`` with
   ``data/images/`` (or the unopened ``data/images.zip``, older revision);
2. the Hugging Face hub cache (``HF_HUB_CACHE``) holding a snapshot of ``facebook/winoground``,
   in either layout;
3. a ``datasets`` cache from an earlier ``datasets.load_dataset("facebook/winoground")``.

Metrics (the paper's, with strict inequalities so a tie counts as wrong), s(c, i) = score of
caption c for image i: text = s(c0,i0) > s(c1,i0) and s(c1,i1) > s(c0,i1); image = s(c0,i0) >
s(c0,i1) and s(c1,i1) > s(c1,i0); group = both. Reported overall, per collapsed_tag and per
num_main_preds, with 95% bootstrap intervals.

Hardness tags (Diwan et al., EMNLP 2022, "Why is Winoground Hard?"; repository
ajd12342/why-winoground-hard, file ``new_tag_assignments.json``): every item carries zero or more
of six tags, written there "Ambiguously Correct", "Visually Difficult", "Unusual Text", "Unusual
Image", "Complex Reasoning", "Non Minimal"; an item with none is the paper's NoTag set (172 of the
400 items in that file). The file is MIT-licensed and shipped as ``data/winoground_diwan_tags.json``
(source and licence inside). A whole-benchmark run adds rows per tag, ``diwan_tag=NoTag``,
``diwan_tag=VisuallyDifficult``, ... (an item counts towards each tag it carries), beside the
existing rows, which do not change. The subsets ``winoground:no-tag``, ``winoground:visually-difficult``,
... evaluate only those items (same ids, so they reuse stored scores); their rows are named by the
subset (``no-tag``, ``no-tag/collapsed_tag=Relation``, ...).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmarks.hf_data import (ArrowSource, FolderOrZipImages, ImageSource, ParquetSource, cached_dataset,
                                hub_cache_dir, hub_snapshot)
from harness.api import Benchmark, DataRequirement, Item, MetricRow
from harness.errors import BadRecordError, MissingDataError
from harness.metrics import grouped_accuracy_rows, tagged_accuracy_rows, winoground_correct, winoground_outcome
from harness.options import FilePath, Option, Text

HF_ID = "facebook/winoground"
FIELDS = ("id", "caption_0", "caption_1", "tag", "secondary_tag", "num_main_preds", "collapsed_tag")
IMAGE_COLUMNS = ("image_0", "image_1")
BREAKDOWNS = ("collapsed_tag", "num_main_preds")
DIWAN_TAGS_FILE = Path(__file__).parent / "data" / "winoground_diwan_tags.json"
NO_TAG = "NoTag"
# the tags as Diwan et al.'s file writes them, in the order rows list them (CamelCase there)
DIWAN_TAGS = ("Ambiguously Correct", "Visually Difficult", "Unusual Text", "Unusual Image", "Complex Reasoning",
              "Non Minimal")
DIWAN_SUBSETS = {"no-tag": NO_TAG, **{t.lower().replace(" ", "-"): t.replace(" ", "") for t in DIWAN_TAGS}}
HOW_TO_GET = (
    "Winoground is gated: log in (`huggingface-cli login`), accept its terms at "
    "https://huggingface.co/datasets/facebook/winoground, then, where there is network, run "
    "`huggingface-cli download facebook/winoground --repo-type dataset` (fills the hub cache) or "
    "`... --local-dir <data-root>/winoground`."
)


class Winoground(Benchmark):
    """Options: ``harness ls winoground``."""

    name = "winoground"
    version = "1"
    subsets = tuple(DIWAN_SUBSETS)
    comparisons = "matrix"
    OPTIONS = (
        Option("hf_id", Text(), HF_ID, "the dataset to look for in the hub and datasets caches when "
                                       "<data-root>/winoground/ lacks it (a mirror's id, or a local dataset folder)"),
        Option("hardness_tags", FilePath(), None, "Diwan et al.'s per-item tags, as their new_tag_assignments.json "
                                                  "or the shipped copy (default: benchmarks/data/winoground_diwan_tags.json)"),
    )

    def __init__(self, data_root: Path, subset: str | None = None, **options: Any) -> None:
        super().__init__(data_root, subset, **options)
        self.hf_id = self.options["hf_id"]
        self.tags_file = Path(self.options["hardness_tags"] or DIWAN_TAGS_FILE)
        self._source: ImageSource | None = None
        self._tags: dict[str, tuple[str, ...]] | None = None

    @property
    def source(self) -> ImageSource:
        if self._source is None:
            self._source = self._open_source()
        return self._source

    def _open_source(self) -> ImageSource:
        tried: list[str] = []
        folder = self.data_root / "winoground"
        source = _folder_source(folder, tried)
        if source:
            return source
        snapshot = hub_snapshot(self.hf_id, tried)
        if snapshot is not None:
            source = _folder_source(snapshot, tried)
            if source:
                return source
        source = _datasets_cache(self.hf_id, tried)
        if source:
            return source
        raise MissingDataError(
            "Winoground data not found. Looked in:\n  - " + "\n  - ".join(tried) + "\n" + HOW_TO_GET
        )

    @property
    def hardness_tags(self) -> dict[str, tuple[str, ...]]:
        """Winoground id -> Diwan et al.'s tags of that item, CamelCase; (NoTag,) for none."""
        if self._tags is None:
            self._tags = read_diwan_tags(self.tags_file)
        return self._tags

    def items(self) -> list[Item]:
        items = []
        for row, rec in enumerate(self.source.records):
            for field in FIELDS:
                if field not in rec or rec[field] is None:
                    raise BadRecordError(f"Winoground record {row} ({self.source.description}) lacks field {field!r}")
            items.append(Item(
                id=str(rec["id"]),
                images=tuple(self.source.image_ref(row, rec, col) for col in IMAGE_COLUMNS),
                texts=(str(rec["caption_0"]), str(rec["caption_1"])),
                truth=(0, 1),
                # None: an id the tag file does not know (a mirror with other ids), in no tag's rows
                meta={**{field: rec[field] for field in FIELDS[3:]},
                      "diwan_tags": self.hardness_tags.get(str(rec["id"]))},
            ))
        if self.subset is not None:
            return self._tagged(items, self.subset)
        for subset in self.subsets:  # a partial copy of the data may hold no item of a tag
            if not self._tagged(items, subset, strict=False):
                self.skipped[subset] = f"no item of {self.source.description} carries the tag {DIWAN_SUBSETS[subset]}"
        return items

    def _tagged(self, items: list[Item], subset: str, strict: bool = True) -> list[Item]:
        tag = DIWAN_SUBSETS[subset]
        chosen = [i for i in items if i.meta["diwan_tags"] is not None and tag in i.meta["diwan_tags"]]
        if strict and not chosen:
            raise MissingDataError(f"winoground:{subset}: none of the {len(items)} items of "
                                   f"{self.source.description} carries the tag {tag} in {self.tags_file}")
        return chosen

    def load_image(self, ref: str) -> Image.Image:
        return self.source.load(ref).convert("RGB")

    def outcome(self, item: Item, scores: np.ndarray) -> dict[str, Any]:
        return winoground_outcome(scores)

    def metrics(self, items: Sequence[Item], scores: Sequence[np.ndarray], seed: int) -> list[MetricRow]:
        correct = winoground_correct(scores)
        ids = [item.id for item in items]
        rows = grouped_accuracy_rows(correct, {field: [item.meta[field] for item in items] for field in BREAKDOWNS},
                                     seed, ids=ids)
        if self.subset is not None:  # rows named by the subset, so they never pose as the whole benchmark's
            return [replace(r, subset=self.subset if r.subset == "all" else f"{self.subset}/{r.subset}")
                    for r in rows]
        order = [NO_TAG, *(t.replace(" ", "") for t in DIWAN_TAGS)]
        tagged = tagged_accuracy_rows(correct, [item.meta.get("diwan_tags") for item in items], "diwan_tag", seed,
                                      order, ids=ids)
        source = {"hardness_tags": f"Diwan et al. 2022, {self.tags_file.name}"}
        return rows + [replace(r, details=source) for r in tagged]

    def details(self) -> dict[str, Any]:
        return {"source": self.source.description}

    @classmethod
    def download(cls, data_root: Path) -> list[str]:
        """The dataset repository into <data-root>/winoground (gated: needs `huggingface-cli login`
        and the terms accepted on the dataset's page first)."""
        from harness.hub import download_dataset_repo

        return download_dataset_repo(HF_ID, Path(data_root) / "winoground", HOW_TO_GET)

    @classmethod
    def describe_data(cls, data_root: Path) -> list[DataRequirement]:
        folder = Path(data_root) / "winoground"
        tried: list[str] = []
        found_folder = _folder_source(folder, tried) is not None
        snapshot = hub_snapshot(HF_ID, tried)
        found_hub = snapshot is not None and _folder_source(snapshot, tried) is not None
        in_folder = DataRequirement("Winoground, repository layout (parquet or examples.jsonl + images)",
                                    str(folder), found_folder, HOW_TO_GET)
        in_hub = DataRequirement("Winoground in the Hugging Face hub cache", str(snapshot or hub_cache_dir()),
                                 found_hub, HOW_TO_GET)
        # the two places are alternatives: name the one in use, or both when neither has it (the
        # hardness tags are not listed: they ship with the harness)
        if found_folder:
            return [in_folder]
        return [in_hub] if found_hub else [in_folder, in_hub]


def read_diwan_tags(path: Path) -> dict[str, tuple[str, ...]]:
    """Winoground id -> the item's hardness tags (Diwan et al. 2022), CamelCase ("Visually
    Difficult" -> "VisuallyDifficult"), or (NoTag,) for an item without any. Reads the authors'
    ``new_tag_assignments.json`` (``{"0": [], "3": ["Ambiguously Correct"], ...}``) or the shipped
    copy, which holds that dict under ``"tags"`` beside its source and licence."""
    if not path.is_file():
        raise MissingDataError(f"Winoground hardness tags: {path} not found. The harness ships them as "
                               f"{DIWAN_TAGS_FILE}; the original is new_tag_assignments.json in "
                               "https://github.com/ajd12342/why-winoground-hard")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise BadRecordError(f"{path} is not valid JSON: {err}") from err
    tags = data.get("tags", data) if isinstance(data, dict) else None
    if not isinstance(tags, dict):
        raise BadRecordError(f"{path} should map Winoground ids to lists of tags, found {type(data).__name__}")
    out = {}
    for key, value in tags.items():
        if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
            raise BadRecordError(f"{path}: the tags of Winoground id {key!r} should be a list of strings, "
                                 f"found {value!r}")
        out[str(key)] = tuple(t.replace(" ", "") for t in value) or (NO_TAG,)
    return out


# -- data sources ---------------------------------------------------------------------------------

class _JsonlSource(ImageSource):
    """``data/examples.jsonl`` with image names, images in ``data/images/`` or ``data/images.zip``."""

    def __init__(self, jsonl: Path, images_dir: Path, images_zip: Path) -> None:
        self.images = FolderOrZipImages(images_dir, images_zip)
        self.description = f"jsonl {jsonl} + {self.images.description}"
        self.records = []
        with open(jsonl, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise BadRecordError(f"{jsonl} line {line_no} is not JSON: {err}") from err
                for column in IMAGE_COLUMNS:
                    if column not in record:
                        raise BadRecordError(f"{jsonl} line {line_no} lacks field {column!r}")
                self.records.append(record)

    def image_ref(self, row: int, record: dict[str, Any], column: str) -> str:
        return str(record[column])

    def load(self, ref: str) -> Image.Image:
        return self.images.load(ref)


def _folder_source(folder: Path, tried: list[str]) -> ImageSource | None:
    data = folder / "data"
    parquet = sorted(data.glob("test-*.parquet"))
    if parquet:
        return ParquetSource(parquet, FIELDS, IMAGE_COLUMNS, "Winoground")
    jsonl = data / "examples.jsonl"
    images_dir, images_zip = data / "images", data / "images.zip"
    if jsonl.is_file() and (images_dir.is_dir() or images_zip.is_file()):
        return _JsonlSource(jsonl, images_dir, images_zip)
    if jsonl.is_file():
        tried.append(f"{jsonl} (found, but neither {images_dir}/ nor {images_zip} holds the images)")
    else:
        tried.append(f"{data}/test-*.parquet or {jsonl}")
    return None


def _datasets_cache(repo_id: str, tried: list[str]) -> ImageSource | None:
    dataset = cached_dataset(repo_id, "test", tried)
    return None if dataset is None else ArrowSource(dataset, FIELDS, IMAGE_COLUMNS, f"datasets {repo_id}")

"""ColorSwap (Burapacheep, Gaur, Bhatia and Thrush, Findings of ACL 2024): two images and two
captions with the same words, the colour words moved to other objects, in Winoground's format.

Sources read: the authors' repository GitHub Top34051/colorswap (``README.md``: the download
layout and record format; ``vlm_eval.py``: text / image / group scores of the generative VLMs) and
the Hugging Face dataset card of ``stanfordnlp/colorswap`` (gated: a user shares contact details
and logs in; MIT licence; 1,000 examples, 2,000 image-caption pairs). Facts taken from there:

- Record fields: ``id``, ``caption_1``, ``caption_2``, ``image_1``, ``image_2``, ``image_source``
  (e.g. "midjourney"), ``caption_source`` (e.g. "human"); ``caption_1`` describes ``image_1``,
  ``caption_2`` ``image_2``. Splits ``train`` and ``test``.
- The authors' download (Google Drive, linked from their README) is ``data/{train,test}.json``,
  a JSON list of records whose ``image_1``/``image_2`` are paths such as ``images/img_0_1.png``,
  plus ``data/images.zip``. Here: ``<data-root>/colorswap/data/`` (or ``<data-root>/colorswap/``)
  holding ``{split}.json`` and ``images/`` unpacked or ``images.zip`` unopened.
- The hub copy is parquet with embedded images. Its file names ``data/{split}-*.parquet`` were
  seen only in third-party loaders (*unconfirmed*); a hub snapshot and the ``datasets`` cache of
  ``load_dataset("stanfordnlp/colorswap")`` are read too.
- Metric: Winoground's text, image and group scores (the card and the paper: "We follow the
  Winoground schema"). The authors' image-text-matching evaluation is a Colab notebook that could
  not be read here, so its tie rule is *unconfirmed*; this adapter uses Winoground's own strict
  rule (``harness.metrics.winoground_outcome``: a tie is wrong), the rule of the Winoground paper
  whose last author is also ColorSwap's. The ``test`` split is the default (``--bench-opt
  split=train`` for the other): the paper fine-tunes on train and reports test, as far as its
  abstract and third-party loaders show (*unconfirmed*, the paper was not read in full). Rows break
  down by ``image_source`` and ``caption_source`` where the records carry them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmarks.hf_data import (ArrowSource, FolderOrZipImages, ImageSource, ParquetSource, cached_dataset,
                                hub_cache_dir, hub_snapshot)
from harness.api import Benchmark, DataRequirement, Item, MetricRow
from harness.errors import BadRecordError, MissingDataError
from harness.metrics import grouped_accuracy_rows, winoground_correct, winoground_outcome
from harness.options import Choice, Option, Text

HF_ID = "stanfordnlp/colorswap"
FIELDS = ("id", "caption_1", "caption_2")
IMAGE_COLUMNS = ("image_1", "image_2")
BREAKDOWNS = ("image_source", "caption_source")
HOW_TO_GET = (
    "ColorSwap is gated (MIT licence): log in (`huggingface-cli login`), accept its terms at "
    "https://huggingface.co/datasets/stanfordnlp/colorswap, then, where there is network, run "
    "`huggingface-cli download stanfordnlp/colorswap --repo-type dataset` (fills the hub cache) or "
    "`... --local-dir <data-root>/colorswap`. Or unpack the authors' Google Drive download "
    "(https://github.com/Top34051/colorswap: data/{train,test}.json and data/images.zip) into "
    "<data-root>/colorswap/data/."
)


class ColorSwap(Benchmark):
    """Options: ``harness ls colorswap``."""

    name = "colorswap"
    version = "1"
    comparisons = "matrix"
    OPTIONS = (
        Option("split", Choice("test", "train"), "test", "the split to evaluate (test: the evaluation split)"),
        Option("hf_id", Text(), HF_ID, "the dataset to look for in the hub and datasets caches when "
                                       "<data-root>/colorswap/ lacks it (a mirror's id, or a local dataset folder)"),
    )

    def __init__(self, data_root: Path, subset: str | None = None, **options: Any) -> None:
        super().__init__(data_root, subset, **options)
        self.split: str = self.options["split"]
        self.hf_id: str = self.options["hf_id"]
        self._source: ImageSource | None = None

    @property
    def source(self) -> ImageSource:
        if self._source is None:
            tried: list[str] = []
            self._source = (_folder_source(self.data_root / "colorswap", self.split, tried)
                            or _snapshot_source(self.hf_id, self.split, tried)
                            or _datasets_source(self.hf_id, self.split, tried))
            if self._source is None:
                raise MissingDataError(f"ColorSwap ({self.split} split) not found. Looked in:\n  - "
                                       + "\n  - ".join(tried) + "\n" + HOW_TO_GET)
        return self._source

    def items(self) -> list[Item]:
        items = []
        # parquet and arrow records hold metadata only: their images stay in the file until decoded
        required = (*FIELDS, *IMAGE_COLUMNS) if isinstance(self.source, _JsonSource) else FIELDS
        for row, record in enumerate(self.source.records):
            for field in required:
                if field not in record or record[field] is None:
                    raise BadRecordError(f"ColorSwap record {row} ({self.source.description}) lacks field {field!r}")
            items.append(Item(
                id=f"{self.split}/{record['id']}",
                images=tuple(self.source.image_ref(row, record, column) for column in IMAGE_COLUMNS),
                texts=(str(record["caption_1"]), str(record["caption_2"])),
                truth=(0, 1),
                meta={field: str(record[field]) for field in BREAKDOWNS if record.get(field) is not None},
            ))
        return items

    def load_image(self, ref: str) -> Image.Image:
        return self.source.load(ref).convert("RGB")

    def outcome(self, item: Item, scores: np.ndarray) -> dict[str, Any]:
        return winoground_outcome(scores)

    def metrics(self, items: Sequence[Item], scores: Sequence[np.ndarray], seed: int) -> list[MetricRow]:
        # a breakdown only where every item carries the field (the hub copy may lack them)
        groups = {field: [item.meta[field] for item in items] for field in BREAKDOWNS
                  if items and all(field in item.meta for item in items)}
        return grouped_accuracy_rows(winoground_correct(scores), groups, seed, ids=[item.id for item in items])

    def details(self) -> dict[str, Any]:
        return {"source": self.source.description, "split": self.split}

    @classmethod
    def download(cls, data_root: Path) -> list[str]:
        """The dataset repository into <data-root>/colorswap (gated: needs `huggingface-cli login` and the terms accepted on its page first)."""
        from harness.hub import download_dataset_repo

        return download_dataset_repo(HF_ID, Path(data_root) / "colorswap", HOW_TO_GET)

    @classmethod
    def describe_data(cls, data_root: Path) -> list[DataRequirement]:
        folder = Path(data_root) / "colorswap"
        tried: list[str] = []
        found_folder = _folder_source(folder, "test", tried) is not None
        snapshot = hub_snapshot(HF_ID, tried)
        found_hub = snapshot is not None and _folder_source(snapshot, "test", tried) is not None
        in_folder = DataRequirement("ColorSwap test split (parquet, or the authors' test.json + images)",
                                    str(folder), found_folder, HOW_TO_GET)
        in_hub = DataRequirement("ColorSwap in the Hugging Face hub cache", str(snapshot or hub_cache_dir()),
                                 found_hub, HOW_TO_GET)
        if found_folder:
            return [in_folder]
        return [in_hub] if found_hub else [in_folder, in_hub]


class _JsonSource(ImageSource):
    """The authors' layout: ``{split}.json`` (a list of records naming ``images/img_<id>_<k>.png``)
    and the images unpacked in ``images/`` or still in ``images.zip``."""

    def __init__(self, path: Path, images: FolderOrZipImages) -> None:
        self.images = images
        self.description = f"json {path} + {images.description}"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise BadRecordError(f"{path} is not valid JSON: {err}") from err
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise BadRecordError(f"{path} should hold a JSON list of records (objects)")
        self.records = data

    def image_ref(self, row: int, record: dict[str, Any], column: str) -> str:
        return str(record[column])

    def load(self, ref: str) -> Image.Image:
        return self.images.load(ref)


def _folder_source(folder: Path, split: str, tried: list[str]) -> ImageSource | None:
    for data in (folder / "data", folder):
        parquet = sorted(data.glob(f"{split}-*.parquet"))
        if parquet:
            return ParquetSource(parquet, FIELDS, IMAGE_COLUMNS, "ColorSwap", optional_fields=BREAKDOWNS)
        annotation = data / f"{split}.json"
        if annotation.is_file():
            unpacked = data / "images"
            images = FolderOrZipImages(data, None) if unpacked.is_dir() else FolderOrZipImages(None, data / "images.zip")
            if images.found:
                return _JsonSource(annotation, images)
            tried.append(f"{annotation} (found, but neither {unpacked}/ nor {data / 'images.zip'} holds the images)")
            return None
    tried.append(f"{folder}/data/{split}-*.parquet or {folder}/data/{split}.json (also without data/)")
    return None


def _snapshot_source(repo_id: str, split: str, tried: list[str]) -> ImageSource | None:
    snapshot = hub_snapshot(repo_id, tried)
    return None if snapshot is None else _folder_source(snapshot, split, tried)


def _datasets_source(repo_id: str, split: str, tried: list[str]) -> ImageSource | None:
    dataset = cached_dataset(repo_id, split, tried)
    if dataset is None:
        return None
    return ArrowSource(dataset, FIELDS, IMAGE_COLUMNS, f"datasets {repo_id} ({split})", optional_fields=BREAKDOWNS)

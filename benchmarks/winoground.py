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
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from harness.api import Benchmark, DataRequirement, Item, MetricRow
from harness.errors import BadRecordError, MissingDataError
from harness.images import decode_image
from harness.metrics import grouped_accuracy_rows, winoground_outcome
from harness.options import Option, Text

HF_ID = "facebook/winoground"
FIELDS = ("id", "caption_0", "caption_1", "tag", "secondary_tag", "num_main_preds", "collapsed_tag")
IMAGE_COLUMNS = ("image_0", "image_1")
BREAKDOWNS = ("collapsed_tag", "num_main_preds")
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
    comparisons = "matrix"
    OPTIONS = (
        Option("hf_id", Text(), HF_ID, "the dataset to look for in the hub and datasets caches when "
                                       "<data-root>/winoground/ lacks it (a mirror's id, or a local dataset folder)"),
    )

    def __init__(self, data_root: Path, subset: str | None = None, **options: Any) -> None:
        super().__init__(data_root, subset, **options)
        self.hf_id = self.options["hf_id"]
        self._source: _Source | None = None

    @property
    def source(self) -> _Source:
        if self._source is None:
            self._source = self._open_source()
        return self._source

    def _open_source(self) -> _Source:
        tried: list[str] = []
        folder = self.data_root / "winoground"
        source = _folder_source(folder, tried)
        if source:
            return source
        snapshot = _hub_snapshot(self.hf_id, tried)
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
                meta={field: rec[field] for field in FIELDS[3:]},
            ))
        return items

    def load_image(self, ref: str) -> Image.Image:
        return self.source.load(ref).convert("RGB")

    def outcome(self, item: Item, scores: np.ndarray) -> dict[str, Any]:
        return winoground_outcome(scores)

    def metrics(self, items: Sequence[Item], scores: Sequence[np.ndarray], seed: int) -> list[MetricRow]:
        outcomes = [winoground_outcome(s) for s in scores]
        return grouped_accuracy_rows(
            {m: [o[m] for o in outcomes] for m in ("text", "image", "group")},
            {field: [item.meta[field] for item in items] for field in BREAKDOWNS},
            seed,
            ids=[item.id for item in items],
        )

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
        snapshot = _hub_snapshot(HF_ID, tried)
        found_hub = snapshot is not None and _folder_source(snapshot, tried) is not None
        in_folder = DataRequirement("Winoground, repository layout (parquet or examples.jsonl + images)",
                                    str(folder), found_folder, HOW_TO_GET)
        in_hub = DataRequirement("Winoground in the Hugging Face hub cache", str(snapshot or _hub_cache_dir()),
                                 found_hub, HOW_TO_GET)
        # the two places are alternatives: name the one in use, or both when neither has it
        if found_folder:
            return [in_folder]
        return [in_hub] if found_hub else [in_folder, in_hub]


# -- data sources ---------------------------------------------------------------------------------

class _Source:
    """Records (metadata only) plus lazy image decoding; picklable for data-loader workers."""

    description: str
    records: list[dict[str, Any]]

    def image_ref(self, row: int, record: dict[str, Any], column: str) -> str:
        return f"{row}:{column}"

    def load(self, ref: str) -> Image.Image:
        raise NotImplementedError


class _ParquetSource(_Source):
    """``data/test-*.parquet``: images are structs {bytes, path}, read one row group at a time."""

    def __init__(self, files: list[Path]) -> None:
        import pyarrow.parquet as pq

        self.files = files
        self.description = f"parquet {files[0].parent}"
        self.records = []
        self._where: list[tuple[int, int, int]] = []  # row -> (file, row group, offset)
        for fi, path in enumerate(files):
            pf = pq.ParquetFile(path)
            missing = [c for c in (*FIELDS, *IMAGE_COLUMNS) if c not in pf.schema_arrow.names]
            if missing:
                raise BadRecordError(f"{path} lacks column(s) {missing}; is this the Winoground parquet file?")
            self.records += pf.read(columns=list(FIELDS)).to_pylist()
            for rg in range(pf.num_row_groups):
                self._where += [(fi, rg, off) for off in range(pf.metadata.row_group(rg).num_rows)]
        self._cached: tuple[tuple[int, int], dict[str, list[Any]]] | None = None

    def load(self, ref: str) -> Image.Image:
        import pyarrow.parquet as pq

        row, column = ref.split(":")
        fi, rg, off = self._where[int(row)]
        # Refs arrive in item order, so keep the last row group (both image columns) decoded:
        # one parquet read per row group instead of one per image.
        if self._cached is None or self._cached[0] != (fi, rg):
            table = pq.ParquetFile(self.files[fi]).read_row_group(rg, columns=list(IMAGE_COLUMNS))
            self._cached = ((fi, rg), {c: table.column(c).to_pylist() for c in IMAGE_COLUMNS})
        cell = self._cached[1][column][off]
        data = cell["bytes"] if isinstance(cell, dict) else cell
        if not data:
            raise BadRecordError(f"row {row} of {self.files[fi].name} has no bytes in {column}")
        return decode_image(io.BytesIO(data), f"{self.files[fi].name} row {row} {column}")

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cached": None}


class _JsonlSource(_Source):
    """``data/examples.jsonl`` with image names, images in ``data/images/`` or ``data/images.zip``."""

    def __init__(self, jsonl: Path, images_dir: Path, images_zip: Path) -> None:
        self.images_dir = images_dir if images_dir.is_dir() else None
        self.images_zip = images_zip if images_zip.is_file() else None
        where = self.images_dir or self.images_zip
        self.description = f"jsonl {jsonl} + {where}"
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
        self._zip_names: dict[str, str] | None = None

    def image_ref(self, row: int, record: dict[str, Any], column: str) -> str:
        return str(record[column])

    def load(self, ref: str) -> Image.Image:
        stem = Path(ref).stem if Path(ref).suffix.lower() in (".png", ".jpg", ".jpeg") else ref
        if self.images_dir is not None:
            for name in (ref, f"{stem}.png", f"{stem}.jpg", f"{stem}.jpeg"):
                path = self.images_dir / name
                if path.is_file():
                    return decode_image(path, str(path))
            raise MissingDataError(f"image {ref!r} not found in {self.images_dir} (tried {stem}.png/.jpg)")
        if self._zip_names is None:
            with zipfile.ZipFile(self.images_zip) as z:
                self._zip_names = {Path(n).stem: n for n in z.namelist() if not n.endswith("/")}
        member = self._zip_names.get(stem)
        if member is None:
            raise MissingDataError(f"image {ref!r} not found in {self.images_zip}")
        with zipfile.ZipFile(self.images_zip) as z:
            return decode_image(io.BytesIO(z.read(member)), f"{self.images_zip}:{member}")


class _ArrowSource(_Source):
    """A ``datasets.Dataset`` (memory-mapped arrow); images decode one cell at a time."""

    def __init__(self, dataset: Any, description: str) -> None:
        missing = [c for c in (*FIELDS, *IMAGE_COLUMNS) if c not in dataset.column_names]
        if missing:
            raise BadRecordError(f"{description} lacks column(s) {missing}")
        self.description = description
        self.records = dataset.select_columns(list(FIELDS)).to_list()
        self._columns = {c: dataset.select_columns([c]) for c in IMAGE_COLUMNS}

    def load(self, ref: str) -> Image.Image:
        row, column = ref.split(":")
        image = self._columns[column][int(row)][column]
        if not isinstance(image, Image.Image):
            raise BadRecordError(f"row {row} {column} of {self.description} is not an image")
        return image


def _folder_source(folder: Path, tried: list[str]) -> _Source | None:
    data = folder / "data"
    parquet = sorted(data.glob("test-*.parquet"))
    if parquet:
        return _ParquetSource(parquet)
    jsonl = data / "examples.jsonl"
    images_dir, images_zip = data / "images", data / "images.zip"
    if jsonl.is_file() and (images_dir.is_dir() or images_zip.is_file()):
        return _JsonlSource(jsonl, images_dir, images_zip)
    if jsonl.is_file():
        tried.append(f"{jsonl} (found, but neither {images_dir}/ nor {images_zip} holds the images)")
    else:
        tried.append(f"{data}/test-*.parquet or {jsonl}")
    return None


def _hub_cache_dir() -> str:
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE


def _hub_snapshot(repo_id: str, tried: list[str]) -> Path | None:
    from huggingface_hub import snapshot_download

    cache = _hub_cache_dir()
    try:
        path = snapshot_download(repo_id, repo_type="dataset", local_files_only=True, cache_dir=cache)
    except Exception:
        tried.append(f"the Hugging Face hub cache {cache} (no snapshot of {repo_id})")
        return None
    return Path(path)


def _datasets_cache(repo_id: str, tried: list[str]) -> _Source | None:
    import datasets

    cache = os.environ.get("HF_DATASETS_CACHE") or None
    try:
        dataset = datasets.load_dataset(repo_id, split="test", cache_dir=cache)
    except Exception as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        tried.append(f"datasets.load_dataset({repo_id!r}) from the datasets cache "
                     f"{cache or datasets.config.HF_DATASETS_CACHE} ({first_line[:200]})")
        return None
    return _ArrowSource(dataset, f"datasets {repo_id}")

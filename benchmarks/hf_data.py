"""Finding benchmark files offline, and reading their images lazily: the helpers every adapter of
a benchmark published on the Hugging Face hub (or as a folder of images) shares.

Where a hub dataset can be on this machine, each adapter trying them in its own order:

- a folder holding the dataset repository's files (``huggingface-cli download ... --local-dir``);
- a snapshot in the hub cache (``HF_HUB_CACHE``), found with ``snapshot_download(local_files_only=True)``,
  so nothing is ever fetched;
- the ``datasets`` cache of an earlier ``datasets.load_dataset(...)``.

Sources hold the records (metadata only) and decode an image only when asked, so memory stays flat
and they pickle cheaply into data-loader workers.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from harness.errors import BadRecordError, MissingDataError
from harness.images import decode_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def hub_cache_dir() -> str:
    """The hub cache huggingface_hub would use (``HF_HUB_CACHE`` wins, read at call time)."""
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE


def hub_snapshot(repo_id: str, tried: list[str]) -> Path | None:
    """The newest cached snapshot of dataset ``repo_id``, or None (noted in ``tried``)."""
    from huggingface_hub import snapshot_download

    cache = hub_cache_dir()
    try:
        path = snapshot_download(repo_id, repo_type="dataset", local_files_only=True, cache_dir=cache)
    except Exception:
        tried.append(f"the Hugging Face hub cache {cache} (no snapshot of {repo_id})")
        return None
    return Path(path)


def cached_dataset(repo_id: str, split: str, tried: list[str]) -> Any | None:
    """``datasets.load_dataset(repo_id, split=split)`` from the local datasets cache, or None
    (noted in ``tried`` with the first line of the reason)."""
    import datasets

    cache = os.environ.get("HF_DATASETS_CACHE") or None
    try:
        return datasets.load_dataset(repo_id, split=split, cache_dir=cache)
    except Exception as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        tried.append(f"datasets.load_dataset({repo_id!r}), split {split!r}, from the datasets cache "
                     f"{cache or datasets.config.HF_DATASETS_CACHE} ({first_line[:200]})")
        return None


class ImageSource:
    """Records (metadata only) plus lazy image decoding; picklable for data-loader workers.

    ``image_ref`` names one image of one record as an opaque string; ``load`` decodes it.
    """

    description: str
    records: list[dict[str, Any]]

    def image_ref(self, row: int, record: dict[str, Any], column: str) -> str:
        return f"{row}:{column}"

    def load(self, ref: str) -> Image.Image:
        raise NotImplementedError


class ParquetSource(ImageSource):
    """Parquet files with images embedded as structs {bytes, path}, as ``datasets`` writes them.

    ``fields`` must be present; ``optional_fields`` are read when present. Images are read one row
    group at a time, and the last row group stays decoded (refs arrive in item order).
    """

    def __init__(self, files: Sequence[Path], fields: Sequence[str], image_columns: Sequence[str], what: str,
                 optional_fields: Sequence[str] = ()) -> None:
        import pyarrow.parquet as pq

        self.files = list(files)
        self.image_columns = tuple(image_columns)
        self.description = f"parquet {self.files[0].parent}"
        self.records = []
        self._where: list[tuple[int, int, int]] = []  # row -> (file, row group, offset)
        for fi, path in enumerate(self.files):
            pf = pq.ParquetFile(path)
            names = pf.schema_arrow.names
            missing = [c for c in (*fields, *self.image_columns) if c not in names]
            if missing:
                raise BadRecordError(f"{path} lacks column(s) {missing}; is this the {what} parquet file?")
            columns = [*fields, *(c for c in optional_fields if c in names)]
            self.records += pf.read(columns=columns).to_pylist()
            for rg in range(pf.num_row_groups):
                self._where += [(fi, rg, off) for off in range(pf.metadata.row_group(rg).num_rows)]
        self._cached: tuple[tuple[int, int], dict[str, list[Any]]] | None = None

    def load(self, ref: str) -> Image.Image:
        import pyarrow.parquet as pq

        row, column = ref.split(":")
        fi, rg, off = self._where[int(row)]
        if self._cached is None or self._cached[0] != (fi, rg):
            table = pq.ParquetFile(self.files[fi]).read_row_group(rg, columns=list(self.image_columns))
            self._cached = ((fi, rg), {c: table.column(c).to_pylist() for c in self.image_columns})
        cell = self._cached[1][column][off]
        data = cell["bytes"] if isinstance(cell, dict) else cell
        if not data:
            raise BadRecordError(f"row {row} of {self.files[fi].name} has no bytes in {column}")
        return decode_image(io.BytesIO(data), f"{self.files[fi].name} row {row} {column}")

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cached": None}


class ArrowSource(ImageSource):
    """A ``datasets.Dataset`` (memory-mapped arrow); images decode one cell at a time."""

    def __init__(self, dataset: Any, fields: Sequence[str], image_columns: Sequence[str], description: str,
                 optional_fields: Sequence[str] = ()) -> None:
        missing = [c for c in (*fields, *image_columns) if c not in dataset.column_names]
        if missing:
            raise BadRecordError(f"{description} lacks column(s) {missing}")
        self.description = description
        columns = [*fields, *(c for c in optional_fields if c in dataset.column_names)]
        self.records = dataset.select_columns(columns).to_list()
        self._columns = {c: dataset.select_columns([c]) for c in image_columns}

    def load(self, ref: str) -> Image.Image:
        row, column = ref.split(":")
        image = self._columns[column][int(row)][column]
        if not isinstance(image, Image.Image):
            raise BadRecordError(f"row {row} {column} of {self.description} is not an image")
        return image


class ProcessZip:
    """A zip archive opened once per process: reading thousands of images reopens nothing, and a
    forked or spawned data-loader worker opens its own (a shared file offset would mix reads)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        self._pid = -1

    def archive(self) -> zipfile.ZipFile:
        if self._zip is None or self._pid != os.getpid():
            self._zip, self._pid = zipfile.ZipFile(self.path), os.getpid()
        return self._zip

    def read(self, member: str) -> bytes:
        return self.archive().read(member)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_zip": None, "_pid": -1}


class FolderOrZipImages:
    """Image files named by a dataset's records, in an unpacked folder or an unopened zip.

    A name is looked up as given (relative to the folder), then by its file name, then by its stem
    with each of .png/.jpg/.jpeg: releases disagree on whether records carry a folder prefix or a
    suffix. In a zip, members are matched by stem wherever they sit in it.
    """

    def __init__(self, folder: Path | None, zip_path: Path | None) -> None:
        self.folder = folder if folder is not None and folder.is_dir() else None
        self.zip_path = zip_path if zip_path is not None and zip_path.is_file() else None
        self._zip_names: dict[str, str] | None = None
        self._zip = ProcessZip(self.zip_path) if self.zip_path is not None else None

    @property
    def found(self) -> bool:
        return self.folder is not None or self.zip_path is not None

    @property
    def description(self) -> str:
        return str(self.folder or self.zip_path)

    def load(self, name: str) -> Image.Image:
        stem = Path(name).stem if Path(name).suffix.lower() in IMAGE_SUFFIXES else Path(name).name
        if self.folder is not None:
            candidates = [name, Path(name).name, *(f"{stem}{s}" for s in IMAGE_SUFFIXES)]
            for candidate in candidates:
                path = self.folder / candidate
                if path.is_file():
                    return decode_image(path, str(path))
            raise MissingDataError(f"image {name!r} not found in {self.folder} (tried {stem}.png/.jpg/.jpeg)")
        if self._zip is None:
            raise MissingDataError(f"image {name!r}: no image folder or zip was found")
        if self._zip_names is None:
            self._zip_names = {Path(n).stem: n for n in self._zip.archive().namelist() if not n.endswith("/")}
        member = self._zip_names.get(stem)
        if member is None:
            raise MissingDataError(f"image {name!r} not found in {self.zip_path}")
        return decode_image(io.BytesIO(self._zip.read(member)), f"{self.zip_path}:{member}")

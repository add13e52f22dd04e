"""A benchmark from a plain file: your own images and captions, no plug-in to write.

``harness run --bench file:PATH``, where PATH is a ``.jsonl`` or ``.csv`` file, or a folder
holding one such file (``items.jsonl`` or ``items.csv`` if it holds several) and its images. A
relative PATH is looked for in the working directory, then in the data root; without PATH the
benchmark reads the folder ``<data-root>/file/``.

One record per item: its image paths (relative to the file's folder), its candidate texts and,
for each image, the index of its right text; optionally an ``id``, a ``subset`` and ``tags``.

JSON Lines, one object a line::

    {"image": "a.png", "texts": ["a red circle", "a blue circle"], "truth": 0, "tags": ["colour"]}
    {"images": ["b.png", "c.png"], "texts": ["x left of y", "y left of x"], "truth": [0, 1], "id": "swap-1"}

``image`` (one path) or ``images`` (a list of one or two); ``truth`` an index or a list with one
index per image; ``tags`` a list of strings or one string. Other fields are refused, so a
misspelt optional field cannot vanish silently.

CSV, one row per item, with a header naming these columns (any order): ``image`` (or
``image_0`` and ``image_1`` for two images), ``text_0``, ``text_1``, ... (blank cells at the end
of a row: that item has fewer candidates), ``truth`` (or ``truth_0`` and ``truth_1``), and
optionally ``id``, ``subset`` and ``tags`` (tags separated by ``;``).

The metric follows from each item's shape:
- one image and K >= 2 texts: ``accuracy``, the right text must score strictly higher than every
  other (a tie is wrong), the rule of ARO and SugarCrepe (``harness.metrics.strictly_first``);
- two images and two texts: Winoground's ``text``, ``image`` and ``group`` scores (Thrush et al.,
  CVPR 2022) with strict inequalities, exactly as the ``winoground`` benchmark computes them
  (``harness.metrics.winoground_outcome``), caption c_k being the right text of image k.
Rows: ``all`` (every item), one per ``subset`` value, and a breakdown ``tag=<tag>`` per tag over
the items carrying it; each with a 95% percentile bootstrap interval. Other shapes are refused.

The version is this adapter's version plus a hash of the file's bytes and (unless
``--bench-opt hash_images=false``) of every image's bytes, so an edited file or a replaced image
never reuses stale scores. Result rows name the benchmark ``file:<name>``, the name of the folder
given or else the file's stem: no path of this machine reaches the leaderboard.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from harness.api import Benchmark, DataRequirement, Item, MetricRow
from harness.errors import BadRecordError, HarnessError, MissingDataError
from harness.images import decode_image
from harness.metrics import accuracy_row, strictly_first, winoground_outcome
from harness.options import Bool, Option

ADAPTER_VERSION = "1"  # bump when the record format's reading or the metrics change
SUFFIXES = (".jsonl", ".csv")
PREFERRED = ("items.jsonl", "items.csv")
DEFAULT_FOLDER = "file"  # <data-root>/file/ when --bench file has no path
JSONL_FIELDS = ("image", "images", "texts", "truth", "id", "subset", "tags")
CSV_COLUMN = re.compile(r"^(image|text|truth)(?:_(\d+))?$")
CSV_OTHER = ("id", "subset", "tags")
TAG_SEPARATOR = ";"
MAX_IMAGES = 2
# (metric row, item outcome): one-image items have "correct", two-image items Winoground's three
METRICS = (("accuracy", "correct"), ("text", "text"), ("image", "image"), ("group", "group"))
HOW_TO_GET = (
    "Write your own: one record per item with image paths (relative to the file), candidate texts and "
    "the index of each image's right text, as a .jsonl or .csv file (README: 'Your own images and captions'); "
    "run it with --bench file:PATH, or put it in <data-root>/file/."
)

FieldName = Callable[[str, "int | None"], str]


class FileBenchmark(Benchmark):
    """Your own items from a .jsonl or .csv file (``--bench file:PATH``). Options: ``harness ls file``."""

    name = "file"
    version = ADAPTER_VERSION  # an instance's version adds the hash of its file and images
    comparisons = "matrix"
    OPTIONS = (
        Option("hash_images", Bool(), True, "the version hashes every image's bytes too, so a replaced image is "
                                            "rescored; false hashes only the items file (faster for many large "
                                            "images)"),
    )

    @classmethod
    def validate_subset(cls, subset: str | None) -> None:
        # the part after "file:" is a path, not one of a fixed list of subsets
        if subset is not None and not subset.strip():
            raise HarnessError("--bench file: needs a path after the colon, e.g. --bench file:my_items.jsonl")

    def __init__(self, data_root: Path, subset: str | None = None, **options: Any) -> None:
        super().__init__(data_root, subset, **options)
        self.given = subset
        if subset is None:
            located = self.data_root / DEFAULT_FOLDER
            if not located.is_dir():
                raise MissingDataError(f"--bench file without a path reads {located}/, which is not there. "
                                       f"{HOW_TO_GET}")
        else:
            located = _locate(self.data_root, subset)
            # rows name the folder given, or the file: portable, and distinct for distinct files
            self.name = f"{FileBenchmark.name}:{located.name if located.is_dir() else located.stem}"
        self.path = find_items_file(located)
        self.folder = self.path.parent
        self._items = read_items(self.path)
        content = self.path.read_bytes()
        self.file_sha256 = hashlib.sha256(content).hexdigest()
        digest = hashlib.sha256(content)
        if self.options["hash_images"]:
            for ref in sorted({ref for item in self._items for ref in item.images}):
                digest.update(b"\0" + ref.encode() + b"\0" + _file_digest(self.folder / ref))
        self.version = f"{ADAPTER_VERSION}-{digest.hexdigest()[:16]}"
        # only one-image items let a scorer look at the best text alone
        self.comparisons = "text_argmax" if all(len(i.images) == 1 for i in self._items) else "matrix"

    @property
    def key(self) -> str:
        return f"{FileBenchmark.name}:{self.given}" if self.given else FileBenchmark.name

    def items(self) -> list[Item]:
        return list(self._items)

    def load_image(self, ref: str) -> Image.Image:
        path = self.folder / ref
        if not path.is_file():
            raise MissingDataError(f"image {path} not found")
        return decode_image(path, str(path)).convert("RGB")

    def outcome(self, item: Item, scores: np.ndarray) -> dict[str, Any]:
        return _outcome(item, scores)

    def metrics(self, items: Sequence[Item], scores: Sequence[np.ndarray], seed: int) -> list[MetricRow]:
        return file_metrics(items, scores, seed)

    def details(self) -> dict[str, Any]:
        # the file's name and hash, never its path: rows are shared between machines
        return {"source": self.path.name, "sha256": self.file_sha256, "images_hashed": self.options["hash_images"]}

    @classmethod
    def describe_data(cls, data_root: Path) -> list[DataRequirement]:
        folder = Path(data_root) / DEFAULT_FOLDER
        try:
            found = str(find_items_file(folder)) if folder.is_dir() else ""
        except HarnessError:
            found = ""
        return [DataRequirement("your own items file (.jsonl or .csv) and its images, or any other: --bench file:PATH",
                                found or f"{folder}/", bool(found), HOW_TO_GET)]


# -- metrics --------------------------------------------------------------------------------------

def _outcome(item: Item, scores: np.ndarray) -> dict[str, bool]:
    if len(item.images) == 1:
        return {"correct": strictly_first(scores, item.truth[0])}
    # columns in truth order, so that caption c_k belongs to image i_k as winoground_outcome expects
    return winoground_outcome(np.asarray(scores)[:, list(item.truth)])


def file_metrics(items: Sequence[Item], scores: Sequence[np.ndarray], seed: int) -> list[MetricRow]:
    """``accuracy`` over one-image items and ``text``/``image``/``group`` over two-image items, for
    all items, per subset and per tag (``tag=<tag>``), each with its bootstrap interval and its
    items' ids and outcomes (for ``harness compare``)."""
    outcomes = [_outcome(item, s) for item, s in zip(items, scores)]
    groups: list[tuple[str, list[int]]] = [("all", list(range(len(items))))]
    subsets = list(dict.fromkeys(item.meta["subset"] for item in items if item.meta.get("subset")))
    groups += [(s, [k for k, item in enumerate(items) if item.meta.get("subset") == s]) for s in subsets]
    tags = sorted({tag for item in items for tag in item.meta.get("tags", ())})
    groups += [(f"tag={t}", [k for k, item in enumerate(items) if t in item.meta.get("tags", ())]) for t in tags]
    rows = []
    for subset, members in groups:
        for metric, outcome in METRICS:
            counted = [k for k in members if outcome in outcomes[k]]
            if counted:
                rows.append(accuracy_row(subset, metric, np.array([outcomes[k][outcome] for k in counted], dtype=bool),
                                         seed, [items[k].id for k in counted]))
    return rows


# -- reading --------------------------------------------------------------------------------------

def _locate(data_root: Path, given: str) -> Path:
    """A relative path is looked for in the working directory, then in the data root."""
    path = Path(given).expanduser()
    if path.exists():
        return path.absolute()  # image paths stay right whatever the working directory later
    under_root = data_root / path
    if not path.is_absolute() and under_root.exists():
        return under_root.absolute()
    looked = str(path) if path.is_absolute() else f"{path.absolute()}, nor {under_root}"
    raise MissingDataError(f"--bench file:{given}: {looked} not found. Give a .jsonl or .csv file, or a folder "
                           f"holding one. {HOW_TO_GET}")


def find_items_file(path: Path) -> Path:
    """The items file itself, or the one in a folder (items.jsonl or items.csv if it holds several)."""
    if path.is_file():
        if path.suffix.lower() not in SUFFIXES:
            raise HarnessError(f"{path}: not a .jsonl or .csv file (the file benchmark reads those two formats)")
        return path
    candidates = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
    for name in PREFERRED:
        if path / name in candidates:
            return path / name
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise MissingDataError(f"folder {path} holds no .jsonl or .csv file. {HOW_TO_GET}")
    raise HarnessError(f"folder {path} holds several items files ({', '.join(p.name for p in candidates)}); "
                       f"name one with --bench file:{path}/NAME, or call it items.jsonl or items.csv")


def read_items(path: Path) -> list[Item]:
    """Every record of a .jsonl or .csv items file as an Item, checked; a bad record raises
    BadRecordError (MissingDataError for a missing image) naming its line and field."""
    reader = _jsonl_records if path.suffix.lower() == ".jsonl" else _csv_records
    items: list[Item] = []
    first_line: dict[str, int] = {}
    for line, record, field_name in reader(path):
        item = _item(record, line, path, field_name)
        if item.id in first_line:
            raise BadRecordError(f"{path.name} line {line}, field {field_name('id', None)}: id {item.id!r} was "
                                 f"already used on line {first_line[item.id]}; ids must be unique")
        first_line[item.id] = line
        items.append(item)
    if not items:
        raise BadRecordError(f"{path} holds no records. {HOW_TO_GET}")
    return items


def _jsonl_name(scalars: dict[str, str]) -> FieldName:
    """Field names as the line wrote them: a field given as one value (``"image": "a.png"``,
    ``"truth": 0``) is named without an index."""

    def name(field: str, index: int | None) -> str:
        if field in scalars:
            return scalars[field]
        return field if index is None else f"{field}[{index}]"

    return name


CSV_BASE = {"images": "image", "texts": "text", "truth": "truth"}


def _csv_name(header: dict[tuple[str, int | None], str]) -> FieldName:
    """Fields named by the CSV's own columns: "truth" or "truth_0" as the header wrote it, and a
    whole numbered field by its columns ("text_0, text_1, ...")."""

    def name(field: str, index: int | None) -> str:
        if (field, index) in header:
            return header[(field, index)]
        if field not in CSV_BASE:
            return field
        if index is not None:
            return f"{CSV_BASE[field]}_{index}"
        columns = [cell for (f, _), cell in header.items() if f == field]
        return columns[0] if len(columns) == 1 else ", ".join(columns[:2]) + (", ..." if field == "texts" else "")

    return name


def _jsonl_records(path: Path) -> Iterator[tuple[int, dict[str, Any], FieldName]]:
    with open(path, encoding="utf-8-sig") as f:
        for line, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as err:
                raise BadRecordError(f"{path.name} line {line}: not a JSON object ({err})") from None
            if not isinstance(record, dict):
                raise BadRecordError(f"{path.name} line {line}: expected a JSON object, found {type(record).__name__}")
            unknown = [k for k in record if k not in JSONL_FIELDS]
            if unknown:
                raise BadRecordError(f"{path.name} line {line}, field {unknown[0]!r}: not a field of the file "
                                     f"benchmark; valid: {', '.join(JSONL_FIELDS)}")
            if "image" in record and "images" in record:
                raise BadRecordError(f"{path.name} line {line}: give 'image' (one path) or 'images' (a list), not both")
            scalars: dict[str, str] = {}
            if "image" in record:
                image = record.pop("image")
                if not isinstance(image, str):
                    raise BadRecordError(f"{path.name} line {line}, field image: expected a path, found "
                                         f"{json.dumps(image)} (several images: 'images', a list)")
                record["images"], scalars["images"] = [image], "image"
            for field in ("truth", "tags"):
                value = record.get(field)
                if isinstance(value, (int, str)) and not isinstance(value, bool):
                    record[field], scalars[field] = [value], field
            yield line, record, _jsonl_name(scalars)


def _csv_records(path: Path) -> Iterator[tuple[int, dict[str, Any], FieldName]]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise BadRecordError(f"{path} is empty. {HOW_TO_GET}")
        cells = [h.strip() for h in header]
        columns = _csv_columns(path, cells)
        counts = {field: sum(f == field for f, _ in columns) for field in ("images", "texts", "truth")}
        name = _csv_name(dict(zip(columns, cells)))
        while True:
            line = reader.line_num + 1  # where this record starts (a quoted cell may span lines)
            row = next(reader, None)
            if row is None:
                return
            if not any(cell.strip() for cell in row):
                continue
            if len(row) > len(columns):
                raise BadRecordError(f"{path.name} line {line}: {len(row)} cells for {len(columns)} columns "
                                     "(a comma inside a text needs the cell in double quotes)")
            yield line, _csv_record(path, line, dict(zip(columns, row)), counts, name), name


def _csv_columns(path: Path, header: list[str]) -> list[tuple[str, int | None]]:
    """Each header cell as (field, index): ("texts", 2) for text_2, ("id", None) for id."""
    columns: list[tuple[str, int | None]] = []
    for cell in header:
        match = CSV_COLUMN.match(cell)
        if match:
            field = {"image": "images", "text": "texts"}.get(match[1], match[1])
            columns.append((field, int(match[2]) if match[2] is not None else 0))
        elif cell in CSV_OTHER:
            columns.append((cell, None))
        else:
            raise BadRecordError(f"{path.name} line 1, column {cell!r}: not a column of the file benchmark; valid: "
                                 "image (or image_0, image_1), text_0, text_1, ..., truth (or truth_0, truth_1), "
                                 "id, subset, tags")
    if len(set(columns)) < len(columns):
        raise BadRecordError(f"{path.name} line 1: a column appears twice ({', '.join(header)}); 'image' is "
                             "image_0 and 'truth' is truth_0")
    for field in ("images", "texts", "truth"):
        indices = sorted(i for f, i in columns if f == field)
        if not indices:
            raise BadRecordError(f"{path.name} line 1: no {CSV_BASE[field]}_0 column ({', '.join(header)})")
        if indices != list(range(len(indices))):
            raise BadRecordError(f"{path.name} line 1: the {CSV_BASE[field]}_N columns must be numbered 0, 1, 2, "
                                 f"... without gaps; found {', '.join(f'{CSV_BASE[field]}_{i}' for i in indices)}")
    return columns


def _csv_record(path: Path, line: int, cells: dict[tuple[str, int | None], str], counts: dict[str, int],
                name: FieldName) -> dict[str, Any]:
    """One CSV row as the record a JSON line would hold. Numbered cells may be blank only at the
    end (fewer images or candidates); a blank between two filled ones is an error."""
    record: dict[str, Any] = {}
    for field in ("images", "texts", "truth"):
        values = [cells.get((field, i), "").strip() for i in range(counts[field])]
        while values and not values[-1]:
            values.pop()
        if "" in values:
            raise BadRecordError(f"{path.name} line {line}, field {name(field, values.index(''))}: blank "
                                 f"between filled {CSV_BASE[field]}_N cells")
        if field == "truth":
            converted = []
            for i, value in enumerate(values):
                try:
                    converted.append(int(value))
                except ValueError:
                    raise BadRecordError(f"{path.name} line {line}, field {name(field, i)}: {value!r} is not "
                                         "a whole number (the index of the image's right text)") from None
            values = converted
        if values:
            record[field] = values
    for field in CSV_OTHER:
        value = cells.get((field, None), "").strip()
        if value:
            record[field] = [t.strip() for t in value.split(TAG_SEPARATOR) if t.strip()] if field == "tags" else value
    return record


def _item(record: dict[str, Any], line: int, path: Path, name: FieldName) -> Item:
    """Check one record (images exist, truth fits the texts, the shape is one the metric knows)."""

    def bad(field: str, index: int | None, why: str) -> BadRecordError:
        return BadRecordError(f"{path.name} line {line}, field {name(field, index)}: {why}")

    for field in ("images", "texts", "truth"):
        if field not in record:
            shown = "image' or 'images" if field == "images" else field
            raise BadRecordError(f"{path.name} line {line}: lacks field '{shown}'")
    images, texts, truth = record["images"], record["texts"], record["truth"]
    for field, value in (("images", images), ("texts", texts), ("truth", truth)):
        if not isinstance(value, list) or not value:
            raise bad(field, None, f"expected a non-empty list, found {json.dumps(value)}")
    for k, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise bad("texts", k, f"expected a non-empty string, found {json.dumps(text)}")
    if len(images) > MAX_IMAGES:
        raise bad("images", None, f"{len(images)} images; an item has one image (1 x K texts: accuracy) or two "
                                  "(2 x 2: Winoground's text, image and group scores)")
    if len(truth) != len(images):
        raise bad("truth", None, f"{len(truth)} indices for {len(images)} images; give one per image")
    for k, t in enumerate(truth):
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < len(texts):
            raise bad("truth", k, f"{json.dumps(t)} is not an index of the {len(texts)} texts (0..{len(texts) - 1})")
    if len(images) == 1 and len(texts) < 2:
        raise bad("texts", None, "one candidate text: an item needs at least two to choose between")
    if len(images) == 2:
        if len(texts) != 2:
            raise bad("texts", None, f"{len(texts)} texts for two images; a two-image item is 2 x 2 (Winoground)")
        if truth[0] == truth[1]:
            raise bad("truth", None, f"{truth}: the two images must have different right texts")
    refs = []
    for k, image in enumerate(images):
        if not isinstance(image, str) or not image.strip():
            raise bad("images", k, f"expected a path, found {json.dumps(image)}")
        ref = Path(image.strip()).as_posix()
        if not (path.parent / ref).is_file():
            raise MissingDataError(f"{path.name} line {line}, field {name('images', k)}: image {path.parent / ref} "
                                   f"not found (image paths are relative to the folder of {path.name})")
        refs.append(ref)
    item_id = record.get("id", f"line-{line}")
    if isinstance(item_id, bool) or not isinstance(item_id, (str, int)) or not str(item_id).strip():
        raise bad("id", None, f"expected a non-empty string or number, found {json.dumps(item_id)}")
    meta: dict[str, Any] = {"line": line}
    if "subset" in record:
        subset = record["subset"]
        if not isinstance(subset, str) or not subset.strip() or subset.strip() == "all" or "=" in subset:
            raise bad("subset", None, f"{json.dumps(subset)}: expected a non-empty name other than 'all', "
                                      "without '=' (rows 'all' and 'tag=...' are the file benchmark's own)")
        meta["subset"] = subset.strip()
    if "tags" in record:
        tags = record["tags"]
        if not isinstance(tags, list) or not all(isinstance(t, str) and t.strip() for t in tags):
            raise bad("tags", None, f"expected a list of non-empty strings, found {json.dumps(tags)}")
        meta["tags"] = tuple(dict.fromkeys(t.strip() for t in tags))
    return Item(id=str(item_id).strip(), images=tuple(refs), texts=tuple(t.strip() for t in texts),
                truth=tuple(truth), meta=meta)


def _file_digest(path: Path) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.digest()

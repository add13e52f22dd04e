"""SPEC (Peng et al., CVPR 2024, "Synthesize, Diagnose, and Optimize: Towards Fine-Grained
Vision-Language Understanding"): synthetic images that differ in one concept (an object's size,
position, existence or count), and captions that differ in the same concept.

Source: GitHub wjpoom/SPEC. Read there: ``spec/dataset.py`` (the loader), ``spec/eval.py`` and
``spec/models/base_wrapper.py`` / ``clip_wrapper.py`` (the metric), ``README.md`` (the download).

Six subsets, named as the official folders: ``absolute_size``, ``relative_size``,
``absolute_spatial`` (absolute position), ``relative_spatial`` (relative position), ``existence``,
``count``. Each folder holds ``image2text.json``, ``text2image.json`` and the images, at paths
relative to the folder:

- ``image2text.json``: a list of ``{"query": <image path>, "keys": [<caption>, ...], "label": i}``:
  one image against candidate captions, ``keys[label]`` is the right one;
- ``text2image.json``: a list of ``{"query": <caption>, "keys": [<image path>, ...], "label": i}``.

Where the data comes from, first found wins: ``<data-root>/spec/`` (or ``--bench-opt root=``)
holding the six folders, directly or under ``data/``, or the unopened ``data.zip``; then a
snapshot of the Hugging Face dataset ``wjpoom/SPEC`` in the hub cache, which holds that same
``data.zip`` (the official instructions download it with ``hf_hub_download`` and unpack it).

Items: an image-to-text item is 1 image x K captions (``truth`` = the label); a text-to-image item
is K images x 1 caption, whose right image is ``meta["label"]`` (``truth`` says the same: the caption
for the label image, NO_TEXT for the others).

Metrics per subset, as the official wrappers compute them: ``i2t_accuracy`` and ``t2i_accuracy``,
the share of queries whose prediction is the label, and, over the subsets evaluated, ``mean`` of
each (``eval.py`` prints the plain average over subsets). The official prediction is
``torch.argmax`` over the candidates, which returns the first of equal top scores, so a tie counts
as right when the label is the first of the tied candidates: ``--bench-opt ties=official``. The
default is the harness's strict rule (a tie is wrong), as for every benchmark. Rows name the rule in
their details.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from benchmarks.hf_data import ProcessZip, hub_cache_dir, hub_snapshot
from harness.api import NO_TEXT, Benchmark, DataRequirement, Item, MetricRow
from harness.errors import BadRecordError, MissingDataError
from harness.images import decode_image
from harness.metrics import accuracy_row, macro_accuracy_row, ties_option, wins
from harness.options import FilePath, Option, Text

SUBSETS = ("absolute_size", "relative_size", "absolute_spatial", "relative_spatial", "existence", "count")
FILES = {"i2t": "image2text.json", "t2i": "text2image.json"}
HF_ID = "wjpoom/SPEC"
ZIP_NAME = "data.zip"
HOW_TO_GET = (
    "Where there is network, run `huggingface-cli download wjpoom/SPEC data.zip --repo-type dataset "
    "--local-dir <data-root>/spec` (1.56 GB; the official README does the same with hf_hub_download) and "
    "unpack data.zip there, or leave it zipped; a plain `huggingface-cli download wjpoom/SPEC --repo-type "
    "dataset` fills the hub cache, which is read too. Neither the GitHub repository (wjpoom/SPEC) nor the "
    "dataset page states a licence for the data."
)


class Spec(Benchmark):
    """Options: ``harness ls spec``."""

    name = "spec"
    version = "1"
    subsets = SUBSETS
    # text-to-image items compare images for one caption, so scorers must score whole matrices
    comparisons = "matrix"
    OPTIONS = (
        ties_option("the first of equal top scores is the prediction (the official torch.argmax)"),
        Option("root", FilePath(), None, "folder holding the six subset folders or data.zip (default: <data-root>/spec)"),
        Option("hf_id", Text(), HF_ID, "the dataset to look for in the hub cache when the root lacks it"),
    )

    def __init__(self, data_root: Path, subset: str | None = None, **options: Any) -> None:
        super().__init__(data_root, subset, **options)
        self.root = Path(self.options["root"] or self.data_root / "spec")
        self.ties: str = self.options["ties"]
        self._files: _Files | None = None

    @property
    def files(self) -> _Files:
        if self._files is None:
            tried: list[str] = []
            files = find_spec_files(self.root, self.options["hf_id"], tried)
            if files is None:
                raise MissingDataError("SPEC data not found. Looked in:\n  - " + "\n  - ".join(tried) + "\n"
                                       + HOW_TO_GET)
            self._files = files
        return self._files

    def items(self) -> list[Item]:
        wanted = [self.subset] if self.subset else list(SUBSETS)
        items: list[Item] = []
        for subset in wanted:
            if not self.files.has(subset):
                why = f"no {subset}/{FILES['i2t']} in {self.files.description}. {HOW_TO_GET}"
                if self.subset:
                    raise MissingDataError(f"SPEC {subset}: {why}")
                self.skipped[subset] = why
                continue
            items += self._read(subset)
        if not items:
            raise MissingDataError("SPEC: none of the six subsets is in " + self.files.description + ":\n  - "
                                   + "\n  - ".join(f"{s}: {why}" for s, why in self.skipped.items()))
        return items

    def _read(self, subset: str) -> list[Item]:
        items = []
        for direction, file_name in FILES.items():
            where = f"{subset}/{file_name} in {self.files.description}"
            for k, record in enumerate(self.files.read_json(subset, file_name)):
                query, keys, label = _fields(record, k, where, direction)
                meta = {"subset": subset, "direction": direction, "label": label}
                if direction == "i2t":
                    items.append(Item(id=f"{subset}/i2t/{k}", images=(f"{subset}/{query}",), texts=tuple(keys),
                                      truth=(label,), meta=meta))
                else:
                    items.append(Item(id=f"{subset}/t2i/{k}", images=tuple(f"{subset}/{key}" for key in keys),
                                      texts=(query,),
                                      truth=tuple(0 if j == label else NO_TEXT for j in range(len(keys))),
                                      meta=meta))
        return items

    def load_image(self, ref: str) -> Image.Image:
        subset, _, path = ref.partition("/")
        return self.files.image(subset, path).convert("RGB")

    def outcome(self, item: Item, scores: np.ndarray) -> dict[str, Any]:
        s = np.asarray(scores, dtype=float)
        candidates = s[0] if item.meta["direction"] == "i2t" else s[:, 0]
        # the label and the first top candidate: a text-to-image item's truth cannot name its image
        return {"correct": spec_correct(item, scores, self.ties), "label": item.meta["label"],
                "predicted": int(np.argmax(candidates))}

    def metrics(self, items: Sequence[Item], scores: Sequence[np.ndarray], seed: int) -> list[MetricRow]:
        correct: dict[str, dict[str, list[bool]]] = {"i2t": {}, "t2i": {}}
        ids: dict[str, dict[str, list[str]]] = {"i2t": {}, "t2i": {}}  # each row's items, for harness compare
        for item, matrix in zip(items, scores):
            direction, subset = item.meta["direction"], item.meta["subset"]
            correct[direction].setdefault(subset, []).append(spec_correct(item, matrix, self.ties))
            ids[direction].setdefault(subset, []).append(item.id)
        rows = []
        for subset in SUBSETS:
            for direction in ("i2t", "t2i"):
                if subset in correct[direction]:
                    rows.append(accuracy_row(subset, f"{direction}_accuracy", np.array(correct[direction][subset]),
                                             seed, ids[direction][subset]))
        for direction in ("i2t", "t2i"):
            if len(correct[direction]) > 1:
                mean = macro_accuracy_row("mean", f"{direction}_accuracy",
                                          [np.array(v) for v in correct[direction].values()], seed,
                                          ids=list(ids[direction].values()), names=list(correct[direction]))
                rows.append(replace(mean, details={"subsets": sorted(correct[direction])}))
        return [replace(r, details={**(r.details or {}), "ties": self.ties}) for r in rows]

    def details(self) -> dict[str, Any]:
        return {"source": self.files.portable_description}

    @classmethod
    def download(cls, data_root: Path) -> list[str]:
        """The dataset repository into <data-root>/spec (data.zip is read as it is)."""
        from harness.hub import download_dataset_repo

        return download_dataset_repo(HF_ID, Path(data_root) / "spec", HOW_TO_GET)

    @classmethod
    def describe_data(cls, data_root: Path) -> list[DataRequirement]:
        root = Path(data_root) / "spec"
        tried: list[str] = []
        local = _local_files(root, tried)
        in_root = DataRequirement("SPEC: the six subset folders (image2text.json, text2image.json, images) or "
                                  "data.zip", str(root), local is not None, HOW_TO_GET)
        if local is not None:
            return [in_root]
        snapshot = hub_snapshot(HF_ID, tried)
        hub = _local_files(snapshot, tried) if snapshot is not None else None
        in_hub = DataRequirement(f"SPEC in the Hugging Face hub cache ({HF_ID}, data.zip)",
                                 str(snapshot or hub_cache_dir()), hub is not None, HOW_TO_GET)
        return [in_hub] if hub is not None else [in_root, in_hub]


def spec_correct(item: Item, scores: np.ndarray, ties: str = "strict") -> bool:
    """Whether a SPEC item's query picks its label. Image-to-text compares the captions of the one
    image (row 0), text-to-image the images for the one caption (column 0). ``argmax``: the first
    of equal top scores is the prediction (``official``: the official torch.argmax); ``strict``: the
    label must score above every other candidate."""
    s = np.asarray(scores, dtype=float)
    candidates = s[0] if item.meta["direction"] == "i2t" else s[:, 0]
    label = int(item.meta["label"])
    # numpy's argmax, like torch's, returns the first maximum
    return wins(candidates, label, "argmax" if ties == "official" else "strict")


def _fields(record: Any, k: int, where: str, direction: str) -> tuple[str, list[str], int]:
    if not isinstance(record, dict):
        raise BadRecordError(f"record {k} of {where} is a {type(record).__name__}, not an object")
    for field in ("query", "keys", "label"):
        if field not in record:
            raise BadRecordError(f"record {k} of {where} lacks field {field!r}")
    query, keys, label = record["query"], record["keys"], record["label"]
    if not isinstance(query, str) or not query:
        raise BadRecordError(f"record {k} of {where}: 'query' should be a non-empty "
                             f"{'image path' if direction == 'i2t' else 'caption'}, found {query!r}")
    if not isinstance(keys, list) or len(keys) < 2 or not all(isinstance(x, str) and x for x in keys):
        raise BadRecordError(f"record {k} of {where}: 'keys' should list at least two "
                             f"{'captions' if direction == 'i2t' else 'image paths'}, found {keys!r}")
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(keys):
        raise BadRecordError(f"record {k} of {where}: 'label' should index 'keys' (0..{len(keys) - 1}), "
                             f"found {label!r}")
    return query, keys, label


# -- where the files are --------------------------------------------------------------------------

class _Files:
    """The subset files in a folder or in the unopened data.zip; picklable for loader workers."""

    description: str
    portable_description: str  # for result rows: no path of this machine

    def has(self, subset: str) -> bool:
        raise NotImplementedError

    def read_bytes(self, subset: str, path: str) -> bytes:
        raise NotImplementedError

    def read_json(self, subset: str, name: str) -> list[Any]:
        try:
            data = json.loads(self.read_bytes(subset, name).decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise BadRecordError(f"{subset}/{name} in {self.description} is not valid JSON: {err}") from err
        if not isinstance(data, list):
            raise BadRecordError(f"{subset}/{name} in {self.description} should hold a JSON list of records, "
                                 f"found {type(data).__name__}")
        return data

    def image(self, subset: str, path: str) -> Image.Image:
        import io

        return decode_image(io.BytesIO(self.read_bytes(subset, path)), f"{subset}/{path} in {self.description}")


class _Folder(_Files):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.description = f"folder {root}"
        self.portable_description = "folders"

    def has(self, subset: str) -> bool:
        return (self.root / subset / FILES["i2t"]).is_file()

    def read_bytes(self, subset: str, path: str) -> bytes:
        file = self.root / subset / path
        if not file.is_file():
            raise MissingDataError(f"SPEC: {file} not found (named in {subset}'s annotation files)")
        return file.read_bytes()

    def image(self, subset: str, path: str) -> Image.Image:
        file = self.root / subset / path
        if not file.is_file():
            raise MissingDataError(f"SPEC: {file} not found (named in {subset}'s annotation files)")
        return decode_image(file, str(file))


class _Zip(_Files):
    """``data.zip`` as published; the subset folders may sit at its top or one folder down."""

    def __init__(self, path: Path, bases: dict[str, str]) -> None:
        self.path = path
        self.bases = bases  # subset -> its folder inside the archive, e.g. "data/count/"
        self.description = f"zip {path}"
        self.portable_description = f"zip {path.name}"
        self._zip = ProcessZip(path)

    def has(self, subset: str) -> bool:
        return subset in self.bases

    def read_bytes(self, subset: str, path: str) -> bytes:
        member = self.bases[subset] + str(PurePosixPath(path.replace("\\", "/")))
        try:
            return self._zip.read(member)
        except KeyError:
            raise MissingDataError(f"SPEC: {member} not found in {self.path} (named in {subset}'s annotation "
                                   "files)") from None


def _zip_files(path: Path, tried: list[str]) -> _Files | None:
    try:
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if not n.startswith("__MACOSX/")]
    except zipfile.BadZipFile as err:
        raise BadRecordError(f"{path} is not a readable zip archive ({err}); download data.zip again") from err
    bases = {}
    for name in names:
        parts = PurePosixPath(name).parts
        if len(parts) in (2, 3) and parts[-1] == FILES["i2t"] and parts[-2] in SUBSETS:
            bases.setdefault(parts[-2], "/".join(parts[:-1]) + "/")
    if not bases:
        tried.append(f"{path} (a zip without <subset>/{FILES['i2t']} for any of {', '.join(SUBSETS)})")
        return None
    return _Zip(path, bases)


def _local_files(root: Path, tried: list[str]) -> _Files | None:
    """The SPEC files under ``root``: subset folders there or in ``data/``, else ``data.zip``."""
    for folder in (root, root / "data"):
        if any((folder / s / FILES["i2t"]).is_file() for s in SUBSETS):
            return _Folder(folder)
    if (root / ZIP_NAME).is_file():
        return _zip_files(root / ZIP_NAME, tried)
    tried.append(f"{root}/<subset>/{FILES['i2t']}, {root}/data/<subset>/{FILES['i2t']} or {root}/{ZIP_NAME} "
                 f"(subsets {', '.join(SUBSETS)})")
    return None


def find_spec_files(root: Path, hf_id: str, tried: list[str]) -> _Files | None:
    """The first place that holds SPEC: ``root``, then the hub cache's snapshot of ``hf_id``."""
    files = _local_files(root, tried)
    if files is not None:
        return files
    snapshot = hub_snapshot(hf_id, tried)
    return _local_files(snapshot, tried) if snapshot is not None else None

"""VALSE (Parcalabescu et al., ACL 2022): an image, its caption and a *foil*, the caption with one
word or phrase changed so that it no longer describes the image, in six pieces of eleven
instruments, named as the official data files name them (repository Heidelberg-NLP/VALSE,
``data/*.json``):

| piece | instruments (files) | images |
|---|---|---|
| existence | existence | Visual7W |
| plurality | plurals | COCO 2017 val |
| counting | counting-hard (the paper's "balanced"), counting-small-quant ("small numbers"), counting-adversarial | Visual7W |
| relations | relations | COCO 2017 val |
| actions | action-replacement, actant-swap | SWiG |
| coreference | coreference-standard, coreference-hard (the paper's "clean") | VisDial v1.0: COCO 2014 train/val; VisDial val 2018 |
| foil-it | foil-it | COCO 2014 val |

Each file is a JSON object keyed by sample id; a record names its image (``dataset``,
``image_file``), the ``caption``, the ``foil`` and the validation votes ``mturk`` (three
annotators; ``mturk["caption"]`` counts those who chose the caption and not the foil).

The filter: the official evaluation scripts (``lxmert_valse_eval.py``,
``unimodal_valse_eval.py``) and README keep a sample only when ``mturk["caption"] >= 2``; so does
this adapter (``--bench-opt validated_only=false`` keeps every sample).

The metric: a scorer here gives one score per image-text pair, so the official metric that
applies is the pairwise ranking accuracy ``acc_r`` (``lxmert_valse_eval.py``: correct when the
caption's score is higher than the foil's, strictly, as there). The paper's p_c, p_f, acc and
min(p_c, p_f) need a model's own match/no-match decision (an image-text matching head); a
similarity score has none, and, as in the paper for CLIP, they are not reported. Rows: ``acc_r``
per instrument, and ``mean/acc_r``, the unweighted mean over the instruments evaluated.
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
from harness.options import Bool, FilePath, Option

# instrument (file stem) -> piece
PIECES = {
    "existence": "existence", "plurals": "plurality", "counting-hard": "counting",
    "counting-small-quant": "counting", "counting-adversarial": "counting", "relations": "relations",
    "action-replacement": "actions", "actant-swap": "actions", "coreference-standard": "coreference",
    "coreference-hard": "coreference", "foil-it": "foil-it",
}
INSTRUMENTS = tuple(PIECES)
# records and validated records (mturk caption >= 2) per file, counted in the released data
# (Heidelberg-NLP/VALSE, data/ at commit 2152d90), to flag a partial copy
RECORDS = {"existence": 534, "plurals": 1000, "counting-hard": 1000, "counting-small-quant": 1000,
           "counting-adversarial": 756, "relations": 614, "action-replacement": 779, "actant-swap": 1042,
           "coreference-standard": 916, "coreference-hard": 141, "foil-it": 1000}
VALIDATED = {"existence": 505, "plurals": 851, "counting-hard": 868, "counting-small-quant": 900,
             "counting-adversarial": 691, "relations": 535, "action-replacement": 648, "actant-swap": 949,
             "coreference-standard": 708, "coreference-hard": 104, "foil-it": 943}
MIN_VOTES = 2  # of three annotators, for the caption and not the foil (the official filter)
FIELDS = ("dataset", "image_file", "caption", "foil", "mturk")

HOW_TO_GET_ANNOTATIONS = (
    "Clone github.com/Heidelberg-NLP/VALSE into <data-root>/valse (its data/*.json, 6.1 MB; the repository's "
    "licence is MIT, the images keep their own datasets' terms), or "
    "pass --bench-opt annotations=FOLDER."
)
# image source -> (what, how to get it); the folders are options (see VALSE.OPTIONS)
SOURCES = {
    "visual7w": ("Visual7W images (existence, counting-*)",
                 "Visual7W's images (from the Visual7W project's download) unpacked into <data-root>/visual7w/images/ "
                 "(files v7w_<id>.jpg). Visual7W's images are Visual Genome images; where a v7w_<id>.jpg is absent the "
                 "Visual Genome file <id>.jpg in <data-root>/aro/images/ (ARO's folder, --bench-opt vg_images=...) "
                 "is used, assuming Visual7W keeps Visual Genome's image ids."),
    "coco": ("COCO images (plurals, relations: val2017; foil-it: val2014; coreference-standard: train2014 and val2014)",
             "COCO 2014 train/val and 2017 val images from cocodataset.org unpacked into <data-root>/coco/train2014/, "
             "val2014/ and val2017/ (--bench-opt coco_root=... moves all three)."),
    "swig": ("SWiG images (action-replacement, actant-swap)",
             "SWiG's images_512.zip (from the SWiG / imSitu project) unpacked into <data-root>/swig/images_512/."),
    "visdial": ("VisDial v1.0 validation images (coreference-hard)",
                "VisualDialog_val2018.zip from visualdialog.org unpacked into <data-root>/visdial/VisualDialog_val2018/."),
}


class VALSE(Benchmark):
    """Options: ``harness ls valse``."""

    name = "valse"
    version = "1"
    subsets = INSTRUMENTS
    comparisons = "text_argmax"  # acc_r needs only whether the caption beats its foil
    OPTIONS = (
        Option("annotations", FilePath(), None, "folder of the eleven instrument files (default: <data-root>/valse/data, "
                                                "else <data-root>/valse)"),
        Option("validated_only", Bool(), True, "keep only samples at least two of three annotators validated "
                                               "(mturk caption >= 2), as the official evaluation does"),
        Option("coco_root", FilePath(), None, "folder holding COCO's train2014/, val2014/ and val2017/ "
                                              "(default: <data-root>/coco)"),
        Option("visual7w_images", FilePath(), None, "Visual7W images v7w_<id>.jpg (default: <data-root>/visual7w/images)"),
        Option("vg_images", FilePath(), None, "Visual Genome images <id>.jpg, looked in when a Visual7W image is absent "
                                              "(default: <data-root>/aro/images, ARO's folder)"),
        Option("swig_images", FilePath(), None, "SWiG images (default: <data-root>/swig/images_512)"),
        Option("visdial_images", FilePath(), None, "VisDial v1.0 validation images VisualDialog_val2018_*.jpg "
                                                   "(default: <data-root>/visdial/VisualDialog_val2018)"),
    )

    def __init__(self, data_root: Path, subset: str | None = None, **options: Any) -> None:
        super().__init__(data_root, subset, **options)
        o, root = self.options, self.data_root
        self.annotations = Path(o["annotations"] or self._default_annotations())
        self.folders = {
            "coco": Path(o["coco_root"] or root / "coco"),
            "visual7w": Path(o["visual7w_images"] or root / "visual7w" / "images"),
            "vg": Path(o["vg_images"] or root / "aro" / "images"),
            "swig": Path(o["swig_images"] or root / "swig" / "images_512"),
            "visdial": Path(o["visdial_images"] or root / "visdial" / "VisualDialog_val2018"),
        }
        self.counts: dict[str, tuple[int, int]] = {}  # instrument -> (records, kept)

    def _default_annotations(self) -> Path:
        """A clone of the repository keeps the files in data/; a bare copy of them is accepted too."""
        folder = self.data_root / "valse"
        if not (folder / "data").is_dir() and any((folder / f"{i}.json").is_file() for i in INSTRUMENTS):
            return folder
        return folder / "data"

    def items(self) -> list[Item]:
        return self.items_of_subsets(
            lambda instrument: self._read(instrument, self.annotations / f"{instrument}.json"),
            lambda instrument: missing_file(self.annotations / f"{instrument}.json", "annotation file",
                                            HOW_TO_GET_ANNOTATIONS), "VALSE")

    def _records(self, path: Path) -> dict[str, Any]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise BadRecordError(f"{path} is not valid JSON: {err}") from err
        if not isinstance(data, dict):
            raise BadRecordError(f"{path} should hold a JSON object keyed by sample id, found {type(data).__name__}")
        return data

    def _read(self, instrument: str, path: Path) -> list[Item]:
        data = self._records(path)
        items = []
        for key, record in data.items():
            for field in FIELDS:
                if not isinstance(record, dict) or field not in record:
                    raise BadRecordError(f"sample {key!r} of {path} lacks field {field!r}")
            votes = record["mturk"].get("caption") if isinstance(record["mturk"], dict) else None
            if not isinstance(votes, int) or isinstance(votes, bool):
                raise BadRecordError(f"sample {key!r} of {path}: mturk should hold the count of annotators who chose "
                                     f"the caption ('caption': 0..3), found {record['mturk']!r}")
            if not isinstance(record["foil"], str):
                raise BadRecordError(f"sample {key!r} of {path}: foil should be one sentence, found "
                                     f"{type(record['foil']).__name__}")
            if self.options["validated_only"] and votes < MIN_VOTES:
                continue
            items.append(Item(id=f"{instrument}/{key}", images=(image_ref(record, f"sample {key!r} of {path}"),),
                              texts=(str(record["caption"]), record["foil"]), truth=(0,),
                              meta={"subset": instrument, "piece": PIECES[instrument], "votes": votes}))
        self.counts[instrument] = (len(data), len(items))
        return items

    def image_path(self, ref: str) -> Path:
        """Where an image ref's file is: its source folder; a Visual7W image absent from the Visual7W
        folder is looked up in the Visual Genome folder under its id."""
        source, _, name = ref.partition("/")
        path = self.folders[source] / name
        if source == "visual7w" and not path.is_file():
            vg = self.folders["vg"] / name.removeprefix("v7w_")
            if vg.is_file():
                return vg
        return path

    def load_image(self, ref: str) -> Image.Image:
        path = self.image_path(ref)
        if not path.is_file():
            source = ref.partition("/")[0]
            also = f" nor {self.folders['vg'] / ref.split('/')[-1].removeprefix('v7w_')}" if source == "visual7w" else ""
            raise MissingDataError(f"VALSE image {path}{also} not found. {SOURCES[source][1]}")
        return decode_image(path, str(path)).convert("RGB")

    def outcome(self, item: Item, scores: np.ndarray) -> dict[str, Any]:
        return {"caption_beats_foil": strictly_first(scores, 0)}

    def metrics(self, items: Sequence[Item], scores: Sequence[np.ndarray], seed: int) -> list[MetricRow]:
        per_instrument, ids = {}, {}
        for instrument, chosen, matrices in by_subset(items, scores, INSTRUMENTS):
            per_instrument[instrument] = np.array([strictly_first(s, 0) for s in matrices])
            ids[instrument] = [item.id for item in chosen]  # each row's items, for harness compare
        out = []
        for instrument, correct in per_instrument.items():
            row = accuracy_row(instrument, "acc_r", correct, seed, ids[instrument])
            details: dict[str, Any] = {"piece": PIECES[instrument]}
            expected = VALIDATED[instrument] if self.options["validated_only"] else RECORDS[instrument]
            if len(correct) != expected:  # a partial copy, or --limit
                details["expected_n"] = expected
            out.append(replace(row, details=details))
        if len(per_instrument) > 1:
            mean = macro_accuracy_row("mean", "acc_r", list(per_instrument.values()), seed,
                                      ids=list(ids.values()), names=list(per_instrument))
            out.append(replace(mean, details={"instruments": sorted(per_instrument)}))
        return out

    def details(self) -> dict[str, Any]:
        kept = {i: {"records": r, "kept": k} for i, (r, k) in self.counts.items()}
        return {"filter": f"mturk caption >= {MIN_VOTES}" if self.options["validated_only"] else "none",
                "samples": kept}

    @classmethod
    def describe_data(cls, data_root: Path) -> list[DataRequirement]:
        bench = cls(data_root)
        out, needed = [], {source: set() for source in SOURCES}
        for instrument in INSTRUMENTS:
            path = bench.annotations / f"{instrument}.json"
            what, readable = f"VALSE {instrument} samples", path.is_file()
            if path.is_file():
                try:
                    for item in bench._read(instrument, path):
                        needed[item.images[0].partition("/")[0]].add(item.images[0])
                except BadRecordError as err:  # say so here; `harness run` names the record too
                    what, readable = f"{what} (unreadable: {err})", False
            out.append(DataRequirement(what, str(path), readable, HOW_TO_GET_ANNOTATIONS))
        for source, (what, how) in SOURCES.items():
            folder = bench.folders[source]
            if needed[source]:  # say how many of the images the present samples need are there
                present = sum(bench.image_path(ref).is_file() for ref in needed[source])
                out.append(DataRequirement(f"{what}: {present} of {len(needed[source])} needed present", str(folder),
                                           present == len(needed[source]), how))
            else:
                out.append(DataRequirement(what, str(folder), folder.is_dir(), how))
        return out


def image_ref(record: dict[str, Any], where: str) -> str:
    """``<source>/<file>``: the source folder is chosen by the record's dataset and file name."""
    name, dataset = str(record["image_file"]), str(record["dataset"])
    if dataset == "visual7w":
        return f"visual7w/{name}"
    if dataset == "SWiG":
        return f"swig/{name}"
    for prefix, folder in (("COCO_val2014_", "coco/val2014"), ("COCO_train2014_", "coco/train2014"),
                           ("VisualDialog_val2018_", "visdial")):
        if name.startswith(prefix):
            return f"{folder}/{name}"
    if dataset in ("coco2017", "coco_2017"):
        return f"coco/{record.get('original_split', 'val')}2017/{name}"
    raise BadRecordError(f"{where}: image {name!r} of dataset {dataset!r} is from no source this adapter knows "
                         "(visual7w, SWiG, coco2017, COCO 2014, VisDial)")

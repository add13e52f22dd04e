"""SVO-Probes (Hendricks & Nematzadeh 2021, "Probing Image-Language Transformers for Verb
Understanding"; GitHub google-deepmind/svo_probes) as DiffusionITM's GDBench uses it (Krojer et
al. 2023; GitHub McGill-NLP/diffusion-itm: ``data/svo/download.py``, ``SVOClassificationDataset``
in ``datasets_loading.py``, ``evaluate_retrieval`` in ``utils.py``).

Files: the official ``svo_probes.csv`` (one row per sentence with a positive and a negative image:
columns ``sentence``, ``pos_image_id``, ``neg_image_id``, ``subj_neg``, ``verb_neg``, ``obj_neg``,
``pos_triplet``, ``neg_triplet``, ``pos_url``, ``neg_url``; read by name, so their order does not
matter) in ``<data-root>/svo/``, and a local image folder, ``<data-root>/svo/images/``, where each
image is named by its id in the CSV, ``<image_id>.jpg`` (the names GDBench's ``download.py``
gives them; ``image_name`` changes the pattern). The images are distributed only as URLs and many
are dead, so items whose positive or negative image is missing are left out; each row says how
many (``left_out_missing_images``) beside ``n``, the items it was computed on.

Negative type, as GDBench's ``download.py`` assigns it: ``subj`` if ``subj_neg``, else ``verb`` if
``verb_neg``, else ``obj``. The three types are the subsets. Rows whose flags are not exactly one
True are kept under that rule and counted in ``details()`` (``rows_without_exactly_one_flag``).

Each row is one item: the sentence against [positive image, negative image] (text-to-image: GDBench
scores the sentence with both images and takes the argmax). The item's ``truth`` is (0, NO_TEXT):
the sentence belongs to the positive image and to no other; the decision is the positive image
(index 0) against the negative one. Metric: accuracy per negative type, and
``all``, the accuracy over every item evaluated (the official notebook's "All" pools the three
types the same way).

Ties: GDBench's ``np.argmax`` sends a tie to the positive image, so it counts a tie as right. The
default here is the harness's strict rule (a tie is wrong); ``--bench-opt ties=official``
reproduces GDBench. Rows count their tied items (``tied_items``).

The paper's own metric (``probing_image_text_models.ipynb``) is different: an image-text matching
classifier's yes/no on each pair, averaged over positive and negative pairs. A score-only model has
no such threshold, so it is not computed here.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from harness.api import NO_TEXT, Benchmark, DataRequirement, Item, MetricRow
from harness.errors import BadRecordError, HarnessError, MissingDataError
from harness.images import decode_image
from harness.metrics import accuracy_row, by_subset, tied_at_top, ties_option, wins
from harness.options import FilePath, Option, Text

SUBSETS = ("subj", "verb", "obj")
REQUIRED_COLUMNS = ("sentence", "pos_image_id", "neg_image_id", "subj_neg", "verb_neg", "obj_neg")
HOW_TO_GET_CSV = (
    "Get svo_probes.csv from the GitHub repository google-deepmind/svo_probes (CC BY 4.0; the same file "
    "is on Hugging Face as MichiganNLP/svo_probes) into <data-root>/svo/."
)
HOW_TO_GET_IMAGES = (
    "The images exist only as the CSV's pos_url and neg_url links, many of them dead: download the ones "
    "that answer into <data-root>/svo/images/ named <image_id>.jpg by the CSV's pos_image_id and "
    "neg_image_id (as data/svo/download.py of McGill-NLP/diffusion-itm does). Items missing an image are "
    "left out."
)


class SVOProbes(Benchmark):
    """Options: ``harness ls svo-probes``."""

    name = "svo-probes"
    version = "1"
    subsets = SUBSETS
    comparisons = "matrix"  # the decision compares two images for one sentence
    OPTIONS = (
        Option("csv", FilePath(), None, "the official annotation file (default: <data-root>/svo/svo_probes.csv)"),
        Option("images", FilePath(), None, "folder of the downloaded images (default: <data-root>/svo/images)"),
        Option("image_name", Text(), "{image_id}.jpg",
               "file name of an image in that folder; {image_id} stands for the CSV's pos_image_id/neg_image_id"),
        ties_option("a tie goes to the positive image, as GDBench's np.argmax decides"),
    )

    def __init__(self, data_root: Path, subset: str | None = None, **options: Any) -> None:
        super().__init__(data_root, subset, **options)
        self.csv = Path(self.options["csv"] or self.data_root / "svo" / "svo_probes.csv")
        self.images = Path(self.options["images"] or self.data_root / "svo" / "images")
        self.image_name: str = self.options["image_name"]
        if "{image_id}" not in self.image_name:
            raise HarnessError(f"--bench-opt image_name={self.image_name!r} for benchmark svo-probes must contain "
                               "{image_id}, where each image's id goes (e.g. {image_id}.jpg)")
        self.ties: str = self.options["ties"]
        self.tie_rule = "argmax" if self.ties == "official" else "strict"  # GDBench decides by np.argmax
        self.rows_in_file: dict[str, int] = {}  # per negative type
        self.left_out: dict[str, int] = {}  # per negative type: items missing an image
        self.ambiguous_flags = 0
        self._items: list[Item] | None = None

    def file_name(self, image_id: str) -> str:
        """The file name of an image in the image folder."""
        return self.image_name.format(image_id=image_id)

    def records(self) -> list[dict[str, str]]:
        """The CSV's rows with a ``neg_type``; raises MissingDataError or BadRecordError (naming
        the row and column) when the file is absent or malformed."""
        if not self.csv.is_file():
            raise MissingDataError(f"SVO-Probes annotation file {self.csv} not found. {HOW_TO_GET_CSV}")
        with open(self.csv, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise BadRecordError(f"{self.csv} lacks the column(s) {', '.join(missing)}; found "
                                     f"{', '.join(reader.fieldnames or []) or 'no header'}")
            out = []
            for i, row in enumerate(reader):
                flags = {c: _flag(row[c], c, i, self.csv) for c in ("subj_neg", "verb_neg", "obj_neg")}
                for column in ("sentence", "pos_image_id", "neg_image_id"):
                    if not (row.get(column) or "").strip():
                        raise BadRecordError(f"row {i} of {self.csv} has no {column}")
                # GDBench's rule (download.py): the first flag set, in the order subj, verb, obj
                row["neg_type"] = "subj" if flags["subj_neg"] else "verb" if flags["verb_neg"] else "obj"
                row["flags_set"] = str(sum(flags.values()))
                out.append(row)
        return out

    def present_images(self) -> set[str]:
        """File names in the image folder (listed once: faster than a lookup per image)."""
        return set(os.listdir(self.images)) if self.images.is_dir() else set()

    def items(self) -> list[Item]:
        if self._items is not None:
            return self._items
        records = self.records()
        if not self.images.is_dir():
            raise MissingDataError(f"SVO-Probes image folder {self.images} not found. {HOW_TO_GET_IMAGES}")
        present = self.present_images()
        wanted = [self.subset] if self.subset else list(SUBSETS)
        items: list[Item] = []
        self.ambiguous_flags = sum(r["flags_set"] != "1" for r in records)
        for i, row in enumerate(records):
            subset = row["neg_type"]
            if subset not in wanted:
                continue
            self.rows_in_file[subset] = self.rows_in_file.get(subset, 0) + 1
            pos, neg = row["pos_image_id"].strip(), row["neg_image_id"].strip()
            if self.file_name(pos) not in present or self.file_name(neg) not in present:
                self.left_out[subset] = self.left_out.get(subset, 0) + 1
                continue
            items.append(Item(
                id=f"{subset}/{i}",  # the CSV's row index: stable for one file, whatever is downloaded
                images=(pos, neg),
                texts=(row["sentence"],),
                truth=(0, NO_TEXT),  # the sentence describes the positive image only
                meta={"subset": subset, "pos_triplet": row.get("pos_triplet", ""),
                      "neg_triplet": row.get("neg_triplet", "")},
            ))
        used = {item.meta["subset"] for item in items}
        for subset in wanted:
            if subset not in used:
                rows = self.rows_in_file.get(subset, 0)
                why = (f"none of its {rows} items has both images in {self.images}. {HOW_TO_GET_IMAGES}" if rows
                       else f"{self.csv} has no {subset} rows")
                if self.subset:
                    raise MissingDataError(f"SVO-Probes {subset}: {why}")
                self.skipped[subset] = why
        if not items:
            raise MissingDataError("SVO-Probes data not found:\n  - " + "\n  - ".join(
                f"{s}: {why}" for s, why in self.skipped.items()))
        self._items = items
        return items

    def load_image(self, ref: str) -> Image.Image:
        path = self.images / self.file_name(ref)
        if not path.is_file():
            raise MissingDataError(f"SVO-Probes image {path} not found. {HOW_TO_GET_IMAGES}")
        return decode_image(path, str(path)).convert("RGB")

    def outcome(self, item: Item, scores: np.ndarray) -> dict[str, Any]:
        column = scores[:, 0]  # the sentence's score with the positive and the negative image
        return {"correct": wins(column, 0, self.tie_rule), "tied": tied_at_top(column)}

    def metrics(self, items: Sequence[Item], scores: Sequence[np.ndarray], seed: int) -> list[MetricRow]:
        """Accuracy per negative type and over all; the left-out counts are those ``items()`` found."""
        rows = []
        every_correct, every_id, tied_total, left_out_total = [], [], 0, 0
        for subset, chosen, matrices in by_subset(items, scores, SUBSETS):
            ids = [item.id for item in chosen]
            correct = np.array([wins(m[:, 0], 0, self.tie_rule) for m in matrices])
            tied = int(sum(tied_at_top(m[:, 0]) for m in matrices))
            left_out = self.left_out.get(subset, 0)
            details = {"ties": self.ties, "tied_items": tied, "left_out_missing_images": left_out,
                       "rows_in_file": self.rows_in_file.get(subset, 0)}
            rows.append(replace(accuracy_row(subset, "accuracy", correct, seed, ids), details=details))
            every_correct.append(correct)
            every_id += ids
            tied_total += tied
            left_out_total += left_out
        if len(rows) > 1:
            overall = accuracy_row("all", "accuracy", np.concatenate(every_correct), seed, every_id)
            rows.append(replace(overall, details={
                "ties": self.ties, "tied_items": tied_total, "left_out_missing_images": left_out_total,
                "rows_in_file": sum(self.rows_in_file.get(r.subset, 0) for r in rows),
                "negative_types": sorted(r.subset for r in rows)}))
        return rows

    def details(self) -> dict[str, Any]:
        return {"ties": self.ties, "rows_without_exactly_one_flag": self.ambiguous_flags}

    @classmethod
    def describe_data(cls, data_root: Path) -> list[DataRequirement]:
        bench = cls(data_root)
        out = [DataRequirement("SVO-Probes annotations (svo_probes.csv)", str(bench.csv), bench.csv.is_file(),
                               HOW_TO_GET_CSV)]
        counts = ""
        found = False
        if bench.csv.is_file() and bench.images.is_dir():
            try:
                records = bench.records()
            except HarnessError as err:
                counts = f" (cannot count: {err})"
            else:
                present = bench.present_images()
                ids = {r[c].strip() for r in records for c in ("pos_image_id", "neg_image_id")}
                have = sum(bench.file_name(i) in present for i in ids)
                usable = sum(bench.file_name(r["pos_image_id"].strip()) in present
                             and bench.file_name(r["neg_image_id"].strip()) in present for r in records)
                counts = f": {have} of {len(ids)} images present, {usable} of {len(records)} items usable"
                found = have > 0
        out.append(DataRequirement(f"SVO-Probes images, named {bench.image_name}{counts}", str(bench.images),
                                   found, HOW_TO_GET_IMAGES))
        return out


def _flag(value: str | None, column: str, index: int, path: Path) -> bool:
    """A True/False column as pandas writes it (also true/false, 1/0)."""
    text = (value or "").strip().lower()
    if text in ("true", "1", "1.0"):
        return True
    if text in ("false", "0", "0.0"):
        return False
    raise BadRecordError(f"row {index} of {path}: column {column} should be True or False, found {value!r}")

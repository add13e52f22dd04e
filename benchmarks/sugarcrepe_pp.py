"""SugarCrepe++ (Dumpala et al., NeurIPS 2024 Datasets and Benchmarks; arXiv 2406.11171): one COCO
val2017 image with two captions that mean the same (the SugarCrepe caption P1 and a re-worded
P2) and SugarCrepe's hard negative N, in five subsets: replace-att, replace-obj, replace-rel,
swap-att, swap-obj.

Files, as the dataset repository (Hugging Face ``Aman-J/SugarCrepe_pp``) and the authors' GitHub
repository (Sri-Harsha/scpp, ``data/``) both hold them: ``data/{replace_att, replace_obj,
replace_rel, swap_att, swap_obj}.json``, each a JSON list of
``{"id", "filename", "caption", "caption2", "negative_caption"}``; images from COCO val2017.

Metrics, as the authors' evaluation code computes them (Sri-Harsha/scpp,
``VLMs/test_Variants_CLIP.py``), all with strict inequalities (a tie is wrong, as there):

- ``itt`` (image-to-text task): s(I, P1) > s(I, N) and s(I, P2) > s(I, N);
- ``p1_vs_neg``, ``p2_vs_neg``: each positive alone against N (the code's "Image-P1-Neg",
  "Image-P2-Neg");
- ``tot`` (text-only task): t(P1, P2) > t(P1, N) and t(P1, P2) > t(P2, N), with t the scorer's
  text-to-text similarity (CLIP: cosine of the normalised text embeddings).

Each record becomes two items: the image item (1 image x [P1, P2, N]) and a text-query item
(queries [P1, P2] x texts [P1, P2, N], truth (1, 0): each positive's partner is the other). A
scorer without a text-to-text score (``Scorer.compares_texts`` False) is never given the
text-query items, and ``tot`` is written as not computed, saying why.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from harness.api import Benchmark, DataRequirement, Item, MetricRow, missing_file
from harness.errors import BadRecordError, MissingDataError
from harness.images import decode_image
from harness.metrics import accuracy_row, by_subset, macro_accuracy_row, not_computed_row
from harness.options import FilePath, Option

# subset -> file name stem in data/ (the dataset's configs are replace_attribute, ..., swap_atribute)
FILES = {"replace-att": "replace_att", "replace-obj": "replace_obj", "replace-rel": "replace_rel",
         "swap-att": "swap_att", "swap-obj": "swap_obj"}
SUBSETS = tuple(FILES)
# records per file in the released data (counted in Sri-Harsha/scpp data/, the same files as the
# Hugging Face repository's), to flag a partial copy
EXPECTED_SIZES = {"replace-att": 788, "replace-obj": 1652, "replace-rel": 1406, "swap-att": 666, "swap-obj": 245}
FIELDS = ("id", "filename", "caption", "caption2", "negative_caption")
IMAGE_METRICS = ("itt", "p1_vs_neg", "p2_vs_neg")
HF_ID = "Aman-J/SugarCrepe_pp"  # the authors' Hugging Face dataset: data/*.json
HOW_TO_GET = (
    "Where there is network: `huggingface-cli download Aman-J/SugarCrepe_pp --repo-type dataset "
    "--local-dir <data-root>/sugarcrepe_pp` (or copy data/*.json of github.com/Sri-Harsha/scpp into "
    "<data-root>/sugarcrepe_pp/data/); 1.3 MB, CC BY 4.0 (dataset card). Images: COCO 2017 validation "
    "(val2017.zip from cocodataset.org) unpacked into <data-root>/coco/val2017/."
)


def itt_outcome(scores: np.ndarray) -> dict[str, bool]:
    """The image item's decisions from its 1 x [P1, P2, N] row, strict."""
    p1, p2, neg = np.asarray(scores)[0]
    return {"itt": bool(p1 > neg and p2 > neg), "p1_vs_neg": bool(p1 > neg), "p2_vs_neg": bool(p2 > neg)}


def tot_correct(scores: np.ndarray) -> bool:
    """The text-only decision from the [P1, P2] x [P1, P2, N] matrix: t(P1, P2) beats both t(P1, N)
    and t(P2, N), strict. The official code compares the one similarity of P1 and P2 with both."""
    s = np.asarray(scores)
    return bool(s[0, 1] > s[0, 2] and s[0, 1] > s[1, 2])


def _words(text: str) -> list[str]:
    return sorted(re.findall(r"\w+", text.lower()))


class SugarCrepePP(Benchmark):
    """Options: ``harness ls sugarcrepe-pp``."""

    name = "sugarcrepe-pp"
    version = "1"
    subsets = SUBSETS
    comparisons = "matrix"  # ITT needs both positives' scores, not only the best text
    OPTIONS = (
        Option("annotations", FilePath(), None, "folder of the five {replace,swap}_{att,obj,rel}.json files "
                                                "(default: <data-root>/sugarcrepe_pp/data, else <data-root>/sugarcrepe_pp)"),
        Option("images", FilePath(), None, "COCO val2017 images (default: <data-root>/coco/val2017)"),
    )

    def __init__(self, data_root: Path, subset: str | None = None, **options: Any) -> None:
        super().__init__(data_root, subset, **options)
        self.annotations = Path(self.options["annotations"] or self._default_annotations())
        self.images = Path(self.options["images"] or self.data_root / "coco" / "val2017")
        self.facts: dict[str, dict[str, int]] = {}  # subset -> counts worth a row's details

    def _default_annotations(self) -> Path:
        """The repository layout keeps the files in data/; a bare copy of them is accepted too."""
        folder = self.data_root / "sugarcrepe_pp"
        if not (folder / "data").is_dir() and any((folder / f"{stem}.json").is_file() for stem in FILES.values()):
            return folder
        return folder / "data"

    def items(self) -> list[Item]:
        if not self.images.is_dir():
            raise MissingDataError(f"SugarCrepe++ images: folder {self.images} not found. {HOW_TO_GET}")
        return self.items_of_subsets(
            lambda subset: self._read(subset, self.annotations / f"{FILES[subset]}.json"),
            lambda subset: missing_file(self.annotations / f"{FILES[subset]}.json", "annotation file", HOW_TO_GET),
            "SugarCrepe++")

    def _read(self, subset: str, path: Path) -> list[Item]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise BadRecordError(f"{path} is not valid JSON: {err}") from err
        if not isinstance(data, list):
            raise BadRecordError(f"{path} should hold a JSON list of records, found {type(data).__name__}")
        items, identical, same_words = [], 0, 0
        for row, record in enumerate(data):
            for field in FIELDS:
                if not isinstance(record, dict) or field not in record:
                    raise BadRecordError(f"record {row} of {path} lacks field {field!r}")
            p1, p2, neg = (str(record[f]) for f in ("caption", "caption2", "negative_caption"))
            key = f"{subset}/{record['id']}"
            meta = {"subset": subset, "filename": str(record["filename"])}
            items.append(Item(id=key, images=(str(record["filename"]),), texts=(p1, p2, neg), truth=(0,),
                              meta={**meta, "task": "itt"}))
            items.append(Item(id=f"{key}/tot", images=(), query_texts=(p1, p2), texts=(p1, p2, neg), truth=(1, 0),
                              meta={**meta, "task": "tot"}))
            identical += neg in (p1, p2)  # a tie with itself: never right under the strict rule
            same_words += _words(neg) == _words(p1)
        self.facts[subset] = {"records": len(data), "negative_identical_to_a_positive": identical,
                              "negative_same_words_as_caption": same_words}
        return items

    def load_image(self, ref: str) -> Image.Image:
        path = self.images / ref
        if not path.is_file():
            raise MissingDataError(f"SugarCrepe++ image {path} not found. {HOW_TO_GET}")
        return decode_image(path, str(path)).convert("RGB")

    def outcome(self, item: Item, scores: np.ndarray) -> dict[str, Any]:
        return {"tot": tot_correct(scores)} if item.query_texts else itt_outcome(scores)

    def metrics(self, items: Sequence[Item], scores: Sequence[np.ndarray | None], seed: int) -> list[MetricRow]:
        """Per subset and ``mean/itt``, ``mean/tot`` over subsets. Rows keep their items' ids and
        outcomes for ``harness compare``: the image items for ``itt``, ``p1_vs_neg``, ``p2_vs_neg``,
        the text-query items (``<id>/tot``) for ``tot``; the means group them by subset."""
        out: list[MetricRow] = []
        per_subset: dict[str, dict[str, np.ndarray | str]] = {}
        ids: dict[str, dict[str, list[str]]] = {}
        for subset, chosen, matrices in by_subset(items, scores, SUBSETS):
            image = [(i, s) for i, s in zip(chosen, matrices) if not i.query_texts]
            text = [s for i, s in zip(chosen, matrices) if i.query_texts]
            image_ids = [i.id for i, _ in image]
            ids[subset] = {**{m: image_ids for m in IMAGE_METRICS},
                           "tot": [i.id for i in chosen if i.query_texts]}
            outcomes = [itt_outcome(s) for _, s in image]
            results: dict[str, np.ndarray | str] = {m: np.array([o[m] for o in outcomes]) for m in IMAGE_METRICS}
            if any(s is None for s in text):
                results["tot"] = "the scorer has no text-to-text score (compares_texts is False)"
            else:
                results["tot"] = np.array([tot_correct(s) for s in text])
            per_subset[subset] = results
            details = self._row_details(subset, len(image))
            for metric in (*IMAGE_METRICS, "tot"):
                value = results[metric]
                row = not_computed_row(subset, metric, value) if isinstance(value, str) else \
                    accuracy_row(subset, metric, value, seed, ids[subset][metric])
                out.append(replace(row, details={**(row.details or {}), **details}))
        if len(per_subset) > 1:
            for metric in ("itt", "tot"):
                values = [r[metric] for r in per_subset.values()]
                why = next((v for v in values if isinstance(v, str)), None)
                row = not_computed_row("mean", metric, why) if why else \
                    macro_accuracy_row("mean", metric, values, seed, ids=[ids[s][metric] for s in per_subset],
                                       names=list(per_subset))
                out.append(replace(row, details={**(row.details or {}), "subsets": sorted(per_subset)}))
        return out

    def _row_details(self, subset: str, n: int) -> dict[str, Any]:
        """Counts that qualify a subset's numbers: a partial copy (or --limit), negatives that equal a
        positive (always wrong under the strict rule) or use its words (a bag-of-words ceiling)."""
        details: dict[str, Any] = {}
        if n != EXPECTED_SIZES[subset]:
            details["expected_n"] = EXPECTED_SIZES[subset]
        facts = self.facts.get(subset, {})
        for key in ("negative_identical_to_a_positive", "negative_same_words_as_caption"):
            if facts.get(key):
                details[key] = facts[key]
        return details

    def details(self) -> dict[str, Any]:
        return {"annotations": self.annotations.name, "images": self.images.name}

    @classmethod
    def download(cls, data_root: Path) -> list[str]:
        """The dataset repository into <data-root>/sugarcrepe_pp (the COCO val2017 images are not in it:
        see `harness data`)."""
        from harness.hub import download_dataset_repo

        return download_dataset_repo(HF_ID, Path(data_root) / "sugarcrepe_pp", HOW_TO_GET)

    @classmethod
    def describe_data(cls, data_root: Path) -> list[DataRequirement]:
        bench = cls(data_root)
        out = [DataRequirement("COCO val2017 images", str(bench.images), bench.images.is_dir(), HOW_TO_GET)]
        for subset, stem in FILES.items():
            path = bench.annotations / f"{stem}.json"
            out.append(DataRequirement(f"SugarCrepe++ {subset}", str(path), path.is_file(), HOW_TO_GET))
        return out

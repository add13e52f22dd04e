"""What'sUp (Kamath, Hessel and Chang, EMNLP 2023, "What's 'up' with vision-language models?"):
one image against captions that differ only in a spatial preposition.

Source read: GitHub amitakamath/whatsup_vlms, ``dataset_zoo/aro_datasets.py`` (classes
``Controlled_Images``, ``COCO_QA``, ``VG_QA``: file names, record formats, ``evaluate_scores``),
``main_aro.py`` and the README. Facts taken from there:

- The data is the repository's ``data/`` folder (``dataset_zoo/constants.py``), here
  ``<data-root>/whatsup/`` (``--bench-opt root=``). In every record of these six files **the first
  caption option is the correct one** (README).
- ``controlled-a`` (the paper's Controlled-A: on / under / left of / right of, real photographs):
  ``controlled_images_dataset.json``, a list of ``{"image_path": "data/controlled_images/<file>",
  "caption_options": [4 captions]}``, images in ``controlled_images/``. ``controlled-b``
  (in front of / behind / left of / right of): ``controlled_clevr_dataset.json`` and
  ``controlled_clevr/``. File names read ``<object>_<preposition>_<object>.jpeg`` with the
  prepositions ``on``, ``under``, ``left_of``, ``right_of``, ``in-front_of``, ``behind`` (the
  strings the evaluation code matches); the loader opens ``image_path`` relative to the repository,
  i.e. ``<root>/controlled_images/<file>``. The JSON's contents were seen only as quoted by
  third-party code (e.g. ``data/controlled_images/beer-bottle_on_armchair.jpeg``).
- ``coco-spatial-one`` / ``-two``: ``coco_qa_one_obj.json`` / ``coco_qa_two_obj.json``, lists of
  ``[image_id, true_caption, false_caption]``; image ``val2017/<image_id zero-padded to 12>.jpg``.
  ``gqa-spatial-one`` / ``-two`` (the paper's GQA-spatial; the code calls them VG_QA):
  ``vg_qa_one_obj.json`` / ``vg_qa_two_obj.json``, same records, image ``vg_images/<image_id>.jpg``.
- Metric (``evaluate_scores``): the prediction is ``np.argmax`` over the caption scores and an item
  is right when it is option 0. "Individual accuracy" is the mean over items; the per-preposition
  accuracy is reported for every subset (preposition read from the file name for the controlled
  sets, from the true caption for the others, by the rules in ``_preposition`` below).
- Pair and set accuracy exist for the controlled subsets only. Images are grouped by
  (first object, second object) of their file name; a *pair* (left/right, and on/under or
  in-front/behind) is right when both its images are right; a *set* when all four are. The
  reference divides by N/2 pairs and N/4 sets; here a pair or set counts only when all its images
  are present, which gives the same numbers on the complete files and sensible ones on a part
  (``--limit``).
- The README says Table 1 of the paper reports macro-averages: Controlled-A with Controlled-B,
  COCO one- with two-object, GQA one- with two-object. Those are the rows ``controlled``,
  ``coco-spatial`` and ``gqa-spatial`` (mean of the two subsets' accuracies), written when both
  halves were evaluated. The table itself was not checked against the paper.

Ties: ``np.argmax`` sends a tie to the lowest index, and option 0 is always the true caption, so
the reference counts a tie as **right** (a model that scores every caption the same gets 100%).
The default here is strict, like the rest of the harness (the true caption must score strictly
higher than every other); ``--bench-opt ties=official`` gives the reference rule.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from harness.api import Benchmark, DataRequirement, Item, MetricRow
from harness.errors import BadRecordError, MissingDataError
from harness.images import decode_image
from harness.metrics import accuracy_row, by_subset, macro_accuracy_row, ties_option, unit_id, wins
from harness.options import FilePath, Option

CONTROLLED = {"controlled-a": ("controlled_images_dataset.json", "controlled_images"),
              "controlled-b": ("controlled_clevr_dataset.json", "controlled_clevr")}
SPATIAL_QA = {"coco-spatial-one": "coco_qa_one_obj.json", "coco-spatial-two": "coco_qa_two_obj.json",
              "gqa-spatial-one": "vg_qa_one_obj.json", "gqa-spatial-two": "vg_qa_two_obj.json"}
SUBSETS = (*CONTROLLED, *SPATIAL_QA)
# the paper's Table 1 columns: macro-averages over these pairs of subsets (README of the reference)
MACRO_GROUPS = {"controlled": ("controlled-a", "controlled-b"),
                "coco-spatial": ("coco-spatial-one", "coco-spatial-two"),
                "gqa-spatial": ("gqa-spatial-one", "gqa-spatial-two")}
# opposing prepositions of a controlled set, as the file names spell them (reference pair rule)
PAIRS = {"controlled-a": (("left", "right"), ("on", "under")),
         "controlled-b": (("left", "right"), ("in-front", "behind"))}
GDRIVE = "https://drive.google.com/drive/u/3/folders/164q6X9hrvP-QYpi3ioSnfMuyHpG5oRkZ"
HOW_TO_GET = (
    "What'sUp (MIT licence, not gated) is distributed from the Google Drive folder linked in the README "
    f"of https://github.com/amitakamath/whatsup_vlms ({GDRIVE}); its `python main_aro.py --download` fetches "
    "the same files. Put the JSON files and unpack controlled_images.tar.gz, controlled_clevr.tar.gz, "
    "val2017.zip and vg_images.tar.gz into <data-root>/whatsup/, the repository's data/ folder layout "
    "(COCO val2017 images may instead be in <data-root>/coco/val2017/)."
)


class WhatsUp(Benchmark):
    """Options: ``harness ls whatsup``."""

    name = "whatsup"
    version = "1"
    subsets = SUBSETS
    comparisons = "text_argmax"
    OPTIONS = (
        Option("root", FilePath(), None, "the What'sUp data folder, laid out like the reference repository's data/ "
                                         "(default: <data-root>/whatsup)"),
        Option("coco_images", FilePath(), None, "COCO val2017 images for coco-spatial-* (default: <root>/val2017 "
                                                "if present, else <data-root>/coco/val2017)"),
        Option("gqa_images", FilePath(), None, "GQA (Visual Genome) images for gqa-spatial-* (default: <root>/vg_images)"),
        ties_option("the reference's argmax, which counts a tie with the true caption (always option 0) as right"),
    )

    def __init__(self, data_root: Path, subset: str | None = None, **options: Any) -> None:
        super().__init__(data_root, subset, **options)
        self.root = Path(self.options["root"] or self.data_root / "whatsup")
        own_coco = self.root / "val2017"
        self.coco_images = Path(self.options["coco_images"] or
                                (own_coco if own_coco.is_dir() else self.data_root / "coco" / "val2017"))
        self.gqa_images = Path(self.options["gqa_images"] or self.root / "vg_images")
        self.ties: str = self.options["ties"]

    # -- files ------------------------------------------------------------------------------------

    def _files(self, subset: str) -> tuple[Path, Path]:
        """(annotation file, image folder) of a subset."""
        if subset in CONTROLLED:
            annotation, folder = CONTROLLED[subset]
            return self.root / annotation, self.root / folder
        images = self.coco_images if subset.startswith("coco") else self.gqa_images
        return self.root / SPATIAL_QA[subset], images

    def items(self) -> list[Item]:
        wanted = [self.subset] if self.subset else list(SUBSETS)
        items: list[Item] = []
        for subset in wanted:
            annotation, images = self._files(subset)
            missing = [f"{what} {path} not found" for what, path in (("annotation file", annotation),
                                                                      ("image folder", images))
                       if not path.exists()]
            if missing:
                why = "; ".join(missing) + f". {HOW_TO_GET}"
                if self.subset:
                    raise MissingDataError(f"What'sUp {subset}: {why}")
                self.skipped[subset] = why
                continue
            records = _read_json_list(annotation)
            reader = self._controlled_item if subset in CONTROLLED else self._qa_item
            items += [reader(subset, annotation, index, record) for index, record in enumerate(records)]
        if not items:
            raise MissingDataError("What'sUp data not found:\n  - " + "\n  - ".join(
                f"{s}: {why}" for s, why in self.skipped.items()))
        return items

    def _controlled_item(self, subset: str, path: Path, index: int, record: Any) -> Item:
        if not isinstance(record, dict) or not isinstance(record.get("image_path"), str):
            raise BadRecordError(f"record {index} of {path} lacks field 'image_path'")
        options = record.get("caption_options")
        if not isinstance(options, list) or len(options) < 2 or not all(isinstance(c, str) for c in options):
            raise BadRecordError(f"record {index} of {path}: 'caption_options' should be a list of at least "
                                 f"two captions (the first the true one), found {options!r}")
        file_name = Path(record["image_path"]).name
        parts = Path(file_name).stem.split("_")
        if len(parts) < 3:
            raise BadRecordError(f"record {index} of {path}: image file name {file_name!r} is not "
                                 "<object>_<preposition>_<object>.<ext>")
        folder = CONTROLLED[subset][1]
        return Item(id=f"{subset}/{index}", images=(f"{folder}/{file_name}",), texts=tuple(options), truth=(0,),
                    meta={"subset": subset, "preposition": _controlled_preposition(subset, file_name),
                          "objects": f"{parts[0]}|{parts[-1]}", "slot": parts[1]})

    def _qa_item(self, subset: str, path: Path, index: int, record: Any) -> Item:
        if not isinstance(record, (list, tuple)) or len(record) < 3 or not all(
                isinstance(c, str) for c in record[1:3]):
            raise BadRecordError(f"record {index} of {path} should be [image_id, true_caption, false_caption], "
                                 f"found {record!r}")
        image_id = str(record[0])
        if subset.startswith("coco"):
            ref = f"coco:{image_id.zfill(12)}.jpg"
        else:
            ref = f"gqa:{image_id}.jpg"
        return Item(id=f"{subset}/{index}", images=(ref,), texts=(record[1], record[2]), truth=(0,),
                    meta={"subset": subset, "preposition": _preposition(subset, record[1])})

    def load_image(self, ref: str) -> Image.Image:
        kind, _, name = ref.partition(":")
        if kind == "coco":
            path = self.coco_images / name
        elif kind == "gqa":
            path = self.gqa_images / name
        else:
            path = self.root / ref
        if not path.is_file():
            raise MissingDataError(f"What'sUp image {path} not found. {HOW_TO_GET}")
        return decode_image(path, str(path)).convert("RGB")

    # -- metric -----------------------------------------------------------------------------------

    def correct(self, scores: np.ndarray, truth: int) -> bool:
        """Whether the true caption wins, under the chosen tie rule."""
        return wins(np.asarray(scores)[0], truth, "argmax" if self.ties == "official" else "strict")

    def outcome(self, item: Item, scores: np.ndarray) -> dict[str, Any]:
        return {"correct": self.correct(scores, item.truth[0])}

    def metrics(self, items: Sequence[Item], scores: Sequence[np.ndarray], seed: int) -> list[MetricRow]:
        """Rows keep their units' ids and outcomes for ``harness compare``: an item (one image and
        its captions) for ``accuracy``; for ``pair_accuracy`` a pair of images, named by its two
        items' ids (``harness.metrics.unit_id``: "controlled-a/0+controlled-a/1"); for
        ``set_accuracy`` a set of four, named by its four. The macro rows group items by subset."""
        rows: list[MetricRow] = []
        per_subset: dict[str, np.ndarray] = {}
        ids: dict[str, list[str]] = {}
        for subset, chosen, matrices in by_subset(items, scores, SUBSETS):
            correct = np.array([self.correct(s, item.truth[0]) for item, s in zip(chosen, matrices)])
            per_subset[subset] = correct
            ids[subset] = [item.id for item in chosen]
            rows.append(accuracy_row(subset, "accuracy", correct, seed, ids[subset]))
            prepositions = np.array([item.meta["preposition"] for item in chosen])
            for preposition in sorted(set(prepositions.tolist())):
                mask = prepositions == preposition
                rows.append(accuracy_row(f"{subset}/preposition={preposition}", "accuracy", correct[mask], seed,
                                         np.asarray(ids[subset], dtype=object)[mask].tolist()))
            if subset in PAIRS:
                pairs, sets = pair_and_set_outcomes(subset, chosen, correct)
                if pairs:
                    rows.append(accuracy_row(subset, "pair_accuracy", np.array([ok for _, ok in pairs]), seed,
                                             [unit for unit, _ in pairs]))
                if sets:
                    rows.append(accuracy_row(subset, "set_accuracy", np.array([ok for _, ok in sets]), seed,
                                             [unit for unit, _ in sets]))
        for name, parts in MACRO_GROUPS.items():
            if all(p in per_subset for p in parts):
                row = macro_accuracy_row(name, "accuracy", [per_subset[p] for p in parts], seed,
                                         ids=[ids[p] for p in parts], names=parts)
                rows.append(replace(row, details={"macro_over": list(parts)}))
        return rows

    def details(self) -> dict[str, Any]:
        return {"ties": self.ties}

    @classmethod
    def describe_data(cls, data_root: Path) -> list[DataRequirement]:
        bench = cls(data_root)
        out = []
        for subset in SUBSETS:
            annotation, images = bench._files(subset)
            out.append(DataRequirement(f"What'sUp {subset} annotations", str(annotation), annotation.is_file(),
                                       HOW_TO_GET))
            out.append(DataRequirement(f"What'sUp {subset} images", str(images), images.is_dir(), HOW_TO_GET))
        return out


def pair_and_set_outcomes(subset: str, items: Sequence[Item], correct: Sequence[bool]
                          ) -> tuple[list[tuple[str, bool]], list[tuple[str, bool]]]:
    """The reference's pair and set outcomes of a controlled subset, each with its unit's id (its
    items' ids joined, ``harness.metrics.unit_id``): images grouped by their two objects; each
    opposing pair of prepositions with both images present is right when both are; each complete
    set of four when all four are."""
    groups: dict[str, dict[str, tuple[str, bool]]] = defaultdict(dict)
    for item, ok in zip(items, correct):
        groups[item.meta["objects"]][item.meta["slot"]] = (item.id, bool(ok))
    pairs, sets = [], []
    slots = [s for pair in PAIRS[subset] for s in pair]
    for group in groups.values():
        pairs += [(unit_id([group[a][0], group[b][0]]), group[a][1] and group[b][1])
                  for a, b in PAIRS[subset] if a in group and b in group]
        if all(s in group for s in slots):
            sets.append((unit_id([group[s][0] for s in slots]), all(group[s][1] for s in slots)))
    return pairs, sets


def _controlled_preposition(subset: str, file_name: str) -> str:
    """The reference's per-preposition label of a controlled image, from its file name."""
    if "left_of" in file_name:
        return "left_of"
    if "right_of" in file_name:
        return "right_of"
    if subset == "controlled-a":
        return "on" if "_on_" in file_name else "under"
    return "in-front_of" if "_in-front_of_" in file_name else "behind"


def _preposition(subset: str, true_caption: str) -> str:
    """The reference's per-preposition label of a COCO/GQA-spatial item, from its true caption:
    one-object captions end with it; two-object ones are searched for a phrase in a fixed order."""
    if subset.endswith("-one"):
        words = true_caption.split()
        return words[-1] if words else ""
    if "left of" in true_caption:
        return "left"
    if "right of" in true_caption:
        return "right"
    if subset.startswith("coco"):
        return "above" if "above" in true_caption else "below"
    if "front of" in true_caption:
        return "front"
    return "behind" if "behind" in true_caption else "top"


def _read_json_list(path: Path) -> list[Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise BadRecordError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(data, list):
        raise BadRecordError(f"{path} should hold a JSON list of records, found {type(data).__name__}")
    return data

"""MMVP-VLM (Tong et al., CVPR 2024, "Eyes Wide Shut? Exploring the Visual Shortcomings of
Multimodal LLMs"): 135 pairs of images that CLIP embeds alike, each with one short statement per
image, in 9 visual patterns of 15 pairs.

Sources read: GitHub tsb0601/MMVP, ``scripts/evaluate_vlm.py`` (the MMVP-VLM evaluation) and
``README.md``; the Hugging Face dataset ``MMVP/MMVP_VLM`` (file listing: ``Questions.csv``,
``MLLM_VLM Images/``; MIT licence; not gated). Facts taken from there:

- ``Questions.csv`` has a header row (``Question ID,Type,Statement``) and one row per image:
  question id, the type (the image sub-folder), the statement. Consecutive rows form a pair.
  Images are ``MLLM_VLM Images/<type of the pair's first row>/<question id>.jpg`` (the script's
  folder name; the README draws it as ``MMVP_VLM_Images``, which is accepted too).
- Each statement becomes the text ``"a photo of " + statement``. For each statement the script
  compares the two images (a softmax over the pair: image 1 when its probability > 0.5, else
  image 2); the true image is image 1 when the statement's question id is odd, else image 2.
  A pair counts when both statements pick their image.
- The pattern of a pair is *not* read from the file: it is the ``pair index // 15``-th of the
  nine names ``Orientation and Direction``, ``Presence of Specific Features``, ``State and
  Condition``, ``Quantity and Count``, ``Positional and Relational Context``, ``Color and
  Appearance``, ``Structural Characteristics``, ``Texts``, ``Viewpoint and Perspective``; each
  pattern's score is its pairs right / 15. The paper reports these and their average (the mean over
  patterns). ``--bench-opt patterns=type`` groups by the file's type column instead.

Ties: image 1 wins only when strictly more probable, so a tie sends every statement to image 2:
right for the statement of image 2, wrong for that of image 1 (asymmetric). The default here is
strict (a tie is wrong for both statements: Winoground's image score); ``--bench-opt
ties=official`` gives the script's rule. Comparing scores instead of a softmax over them decides
the same way (the softmax is monotone), up to float rounding.

The ``datasets`` library reads this repository as an image folder, which drops the statements, so
only the repository files (a folder or a hub snapshot) are supported.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmarks.hf_data import hub_cache_dir, hub_snapshot
from harness.api import Benchmark, DataRequirement, Item, MetricRow
from harness.errors import BadRecordError, HarnessError, MissingDataError
from harness.images import decode_image
from harness.metrics import accuracy_row, macro_accuracy_row, ties_option
from harness.options import Choice, Option, Text

HF_ID = "MMVP/MMVP_VLM"
PATTERNS = ("Orientation and Direction", "Presence of Specific Features", "State and Condition",
            "Quantity and Count", "Positional and Relational Context", "Color and Appearance",
            "Structural Characteristics", "Texts", "Viewpoint and Perspective")
PAIRS_PER_PATTERN = 15
IMAGE_FOLDERS = ("MLLM_VLM Images", "MMVP_VLM_Images")  # the script's name, then the README's
HOW_TO_GET = (
    "MMVP-VLM (MIT licence, not gated, 270 images): where there is network, run `huggingface-cli download "
    "MMVP/MMVP_VLM --repo-type dataset` (fills the hub cache) or `... --local-dir <data-root>/mmvp_vlm`, "
    "so that the folder holds Questions.csv and 'MLLM_VLM Images/'."
)


class MMVPVLM(Benchmark):
    """Options: ``harness ls mmvp-vlm``."""

    name = "mmvp-vlm"
    version = "1"
    comparisons = "matrix"
    OPTIONS = (
        Option("prompt", Text(), "a photo of {}", "how a statement becomes the text ({} = the statement; "
                                                  "the reference's is 'a photo of {}')"),
        ties_option("the reference script's rule, where a tie picks the second image (right for its "
                    "statement, wrong for the first image's)"),
        Option("patterns", Choice("order", "type"), "order",
               "order: the reference's rule, pair k is in pattern k // 15 of the paper's nine; "
               "type: group pairs by the Type column of Questions.csv"),
        Option("hf_id", Text(), HF_ID, "the dataset whose snapshot to look for in the hub cache when "
                                       "<data-root>/mmvp_vlm/ lacks it"),
    )

    def __init__(self, data_root: Path, subset: str | None = None, **options: Any) -> None:
        super().__init__(data_root, subset, **options)
        self.prompt: str = self.options["prompt"]
        if "{}" not in self.prompt:
            raise HarnessError(f"--bench-opt prompt={self.prompt!r} for benchmark mmvp-vlm: must contain {{}} "
                               "where the statement goes (the reference's is 'a photo of {}')")
        self.ties: str = self.options["ties"]
        self.patterns: str = self.options["patterns"]
        self.hf_id: str = self.options["hf_id"]
        self._folder: tuple[Path, Path] | None = None

    @property
    def folder(self) -> tuple[Path, Path]:
        """(Questions.csv, image folder), from <data-root>/mmvp_vlm or the hub cache."""
        if self._folder is None:
            tried: list[str] = []
            found = _find(self.data_root / "mmvp_vlm", tried)
            if found is None:
                snapshot = hub_snapshot(self.hf_id, tried)
                found = None if snapshot is None else _find(snapshot, tried)
            if found is None:
                tried.append("not the datasets cache: `datasets` reads this repository as an image folder, "
                             "without the statements")
                raise MissingDataError("MMVP-VLM not found. Looked in:\n  - " + "\n  - ".join(tried) + "\n"
                                       + HOW_TO_GET)
            self._folder = found
        return self._folder

    def items(self) -> list[Item]:
        questions, _ = self.folder
        rows = _read_questions(questions)
        items = []
        for k in range(len(rows) // 2):
            (line1, qid1, type1, statement1), (line2, qid2, _, statement2) = rows[2 * k], rows[2 * k + 1]
            if qid1 % 2 == qid2 % 2:
                raise BadRecordError(f"{questions} lines {line1} and {line2}: question ids {qid1} and {qid2} of a "
                                     "pair must be one odd and one even (the odd one's statement is image 1's)")
            if k // PAIRS_PER_PATTERN >= len(PATTERNS) and self.patterns == "order":
                raise BadRecordError(f"{questions} has more than {len(PATTERNS) * PAIRS_PER_PATTERN} pairs; the "
                                     "reference's pattern rule (15 pairs per pattern, in order) cannot name pair "
                                     f"{k + 1} (use --bench-opt patterns=type)")
            pattern = PATTERNS[k // PAIRS_PER_PATTERN] if self.patterns == "order" else type1
            # texts ordered by the image they describe: the odd question id's statement is image 1's
            first, second = (statement1, statement2) if qid1 % 2 == 1 else (statement2, statement1)
            items.append(Item(
                id=f"{qid1}-{qid2}",
                images=(f"{type1}/{qid1}.jpg", f"{type1}/{qid2}.jpg"),
                texts=(self.prompt.replace("{}", first), self.prompt.replace("{}", second)),
                truth=(0, 1),
                meta={"pattern": pattern, "type": type1, "question_ids": [qid1, qid2]},
            ))
        return items

    def load_image(self, ref: str) -> Image.Image:
        path = self.folder[1] / ref
        if not path.is_file():
            raise MissingDataError(f"MMVP-VLM image {path} not found. {HOW_TO_GET}")
        return decode_image(path, str(path)).convert("RGB")

    # -- metric -----------------------------------------------------------------------------------

    def pair_correct(self, scores: np.ndarray) -> bool:
        """Both statements pick their own image (rows = images, columns = texts, text j is image j's)."""
        s = np.asarray(scores)
        first = s[0, 0] > s[1, 0]
        second = s[1, 1] >= s[0, 1] if self.ties == "official" else s[1, 1] > s[0, 1]
        return bool(first and second)

    def outcome(self, item: Item, scores: np.ndarray) -> dict[str, Any]:
        return {"pair": self.pair_correct(scores)}

    def metrics(self, items: Sequence[Item], scores: Sequence[np.ndarray], seed: int) -> list[MetricRow]:
        """Per pattern and their average. The unit of every row is a pair of images with their two
        statements, which is one item here, its id naming both question ids ("1-2"): rows keep
        those ids and outcomes for ``harness compare``; the average groups them by pattern."""
        correct = np.array([self.pair_correct(s) for s in scores])
        patterns = [item.meta["pattern"] for item in items]
        order = [p for p in PATTERNS if p in patterns] + sorted(set(patterns) - set(PATTERNS))
        masks = {p: np.array([q == p for q in patterns]) for p in order}
        per_pattern = {p: correct[mask] for p, mask in masks.items()}
        ids = np.array([item.id for item in items], dtype=object)
        per_pattern_ids = {p: ids[mask].tolist() for p, mask in masks.items()}
        rows = [accuracy_row(f"pattern={p}", "pair_accuracy", c, seed, per_pattern_ids[p])
                for p, c in per_pattern.items()]
        average = macro_accuracy_row("average", "pair_accuracy", list(per_pattern.values()), seed,
                                     ids=list(per_pattern_ids.values()), names=list(per_pattern))
        rows.append(replace(average, details={"patterns": len(per_pattern)}))
        return rows

    def details(self) -> dict[str, Any]:
        return {"ties": self.ties, "patterns": self.patterns, "prompt": self.prompt}

    @classmethod
    def download(cls, data_root: Path) -> list[str]:
        """The dataset repository into <data-root>/mmvp_vlm."""
        from harness.hub import download_dataset_repo

        return download_dataset_repo(HF_ID, Path(data_root) / "mmvp_vlm", HOW_TO_GET)

    @classmethod
    def describe_data(cls, data_root: Path) -> list[DataRequirement]:
        folder = Path(data_root) / "mmvp_vlm"
        tried: list[str] = []
        in_folder = DataRequirement("MMVP-VLM: Questions.csv + 'MLLM_VLM Images/'", str(folder),
                                    _find(folder, tried) is not None, HOW_TO_GET)
        if in_folder.found:
            return [in_folder]
        snapshot = hub_snapshot(HF_ID, tried)
        in_hub = DataRequirement("MMVP-VLM in the Hugging Face hub cache", str(snapshot or hub_cache_dir()),
                                 snapshot is not None and _find(snapshot, tried) is not None, HOW_TO_GET)
        return [in_hub] if in_hub.found else [in_folder, in_hub]


def _find(folder: Path, tried: list[str]) -> tuple[Path, Path] | None:
    questions = folder / "Questions.csv"
    images = next((folder / name for name in IMAGE_FOLDERS if (folder / name).is_dir()), None)
    if questions.is_file() and images is not None:
        return questions, images
    tried.append(f"{questions} and {folder / IMAGE_FOLDERS[0]}/" + (" (the csv is there, the images are not)"
                                                                    if questions.is_file() else ""))
    return None


def _read_questions(path: Path) -> list[tuple[int, int, str, str]]:
    """(line number, question id, type, statement) of each row after the header."""
    rows = []
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        next(reader, None)  # the header
        for cells in reader:
            line = reader.line_num
            if not any(c.strip() for c in cells):
                continue
            if len(cells) < 3:
                raise BadRecordError(f"{path} line {line}: expected question id, type, statement; found {cells!r}")
            try:
                qid = int(cells[0])
            except ValueError:
                raise BadRecordError(f"{path} line {line}: question id {cells[0]!r} is not a whole number") from None
            rows.append((line, qid, cells[1], cells[2]))  # as the script uses them, unstripped
    if len(rows) % 2:
        raise BadRecordError(f"{path}: {len(rows)} statements, an odd number; line {rows[-1][0]} has no partner "
                             "(consecutive rows form a pair)")
    return rows

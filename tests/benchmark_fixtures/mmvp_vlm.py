"""MMVP-VLM in the layout of the Hugging Face repository MMVP/MMVP_VLM: Questions.csv (header
"Question ID,Type,Statement", one row per image, consecutive rows a pair) and
"MLLM_VLM Images/<Type>/<Question ID>.jpg". ``write_mmvp`` writes the full 135 pairs (9 patterns x
15, in order) by default, since the reference names each pair's pattern by its position.

The type (folder) names Orientation, Presence and Camera_Perspective are the ones the MMVP README
draws; the six in between are stand-ins (the real ones were not seen)."""

from __future__ import annotations

import csv
from pathlib import Path

from factories import photo

TYPES = ("Orientation", "Presence", "State", "Quantity", "Spatial", "Color", "Structural_Character", "Text",
         "Camera_Perspective")


def mmvp_rows(pairs: int = 135) -> list[tuple[int, str, str]]:
    """(question id, type, statement) per image: ids 1..2*pairs, 15 pairs per type in order."""
    rows = []
    for k in range(pairs):
        kind = TYPES[min(k // 15, len(TYPES) - 1)]
        for side, qid in (("left", 2 * k + 1), ("right", 2 * k + 2)):
            rows.append((qid, kind, f"the object in picture {k} faces {side}"))
    return rows


def write_mmvp(folder: Path, pairs: int = 135, image_size: int = 24, images_folder: str = "MLLM_VLM Images") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = mmvp_rows(pairs)
    with open(folder / "Questions.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["Question ID", "Type", "Statement"])
        writer.writerows(rows)
    for qid, kind, _ in rows:
        path = folder / images_folder / kind / f"{qid}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        photo(qid, image_size).save(path, quality=90)
    return folder


def write(root: Path, n: int) -> None:
    # n pairs: the start of the real file (all in the first pattern), so the contract tests stay fast;
    # tests/test_mmvp_vlm.py reads all 135 pairs
    write_mmvp(root / "mmvp_vlm", pairs=n)

"""EqBen's official 10% subset layout: ``eqben/eqben_subset_10percent_final.json``, a JSON list of
``{"image0", "caption0", "image1", "caption1"}`` records in random order, and the images under
``eqben/image_subset/`` at those paths, each starting with its sub-dataset's folder (``eqbenag/``,
...). YouCook2 frames are ``.npy`` arrays in BGR order, as the official loader reads them; the
folders below the sub-dataset's and the file names are made up here (the real ones differ)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from factories import photo

# the official names, written out here so that a typo in the adapter shows
ANNOTATION = "eqben_subset_10percent_final.json"
IMAGES = "image_subset"
SUBSETS = ("eqbenag", "eqbenyoucook2", "eqbengebc", "eqbenkubric_loc", "eqbenkubric_attr", "eqbenkubric_cnt",
           "eqbensd")


def eqben_records(n: int, sources: tuple[str, ...] = SUBSETS) -> list[dict]:
    """n records cycling over ``sources`` (interleaved, as the official file is shuffled)."""
    records = []
    for k in range(n):
        source = sources[k % len(sources)]
        suffix = ".npy" if source == "eqbenyoucook2" else ".png"
        records.append({"image0": f"{source}/clip_{k}/frame_0{suffix}", "caption0": f"a person opens the door, scene {k}",
                        "image1": f"{source}/clip_{k}/frame_1{suffix}", "caption1": f"a person closes the door, scene {k}"})
    return records


def image_pixels(k: int, j: int) -> np.ndarray:
    """The RGB pixels written for image j (0 or 1) of record k."""
    return np.asarray(photo(60 + 2 * k + j, 40))


def write_eqben(root: Path, n: int, sources: tuple[str, ...] = SUBSETS) -> list[dict]:
    folder = root / "eqben"
    records = eqben_records(n, sources)
    for k, record in enumerate(records):
        for j in (0, 1):
            path = folder / IMAGES / record[f"image{j}"]
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.suffix == ".npy":
                np.save(path, image_pixels(k, j)[:, :, ::-1].copy())  # BGR, as YouCook2's frames are stored
            else:
                photo(60 + 2 * k + j, 40).save(path)
    (folder / ANNOTATION).write_text(json.dumps(records))
    return records


def write(root: Path, n: int) -> None:
    write_eqben(root, n)

"""SPEC's layout: one folder per subset (``absolute_size/``, ...) holding ``image2text.json``
(``{"query": image, "keys": [captions], "label": i}``), ``text2image.json`` (``{"query": caption,
"keys": [images], "label": i}``) and the images at the paths they name, relative to the folder;
published on the hub as ``data.zip``. The image file names are made up here (the real ones differ).

Each test case has K images that differ in one concept and their K captions; its image-to-text
records ask each image to pick its caption, its text-to-image records each caption its image."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from factories import photo

# the official folder names, written out here so that a typo in the adapter shows
SUBSETS = ("absolute_size", "relative_size", "absolute_spatial", "relative_spatial", "existence", "count")

WORDS = ("left", "right", "top", "bottom")


def spec_records(subset: str, n: int, k: int = 3) -> tuple[list[dict], list[dict], dict[str, int]]:
    """(image2text records, text2image records, image path -> photo index) for ``n`` records of
    each direction; labels vary, so the correct candidate is not always first."""
    base = 200 + 50 * SUBSETS.index(subset)
    cases = (n + k - 1) // k
    images = {f"images/case{c}_{j}.jpg": base + c * k + j for c in range(cases) for j in range(k)}
    i2t, t2i = [], []
    for r in range(n):
        c, j = divmod(r, k)
        captions = [f"the cup is at the {WORDS[m]} of the {subset} scene {c}" for m in range(k)]
        i2t.append({"query": f"images/case{c}_{j}.jpg", "keys": captions, "label": j})
        t2i.append({"query": captions[j], "keys": [f"images/case{c}_{m}.jpg" for m in range(k)], "label": j})
    return i2t, t2i, images


def write_spec(root: Path, n: int, subsets: tuple[str, ...] = SUBSETS, k: int = 3) -> None:
    """The unpacked layout: ``root/<subset>/...`` (the harness looks in ``<data-root>/spec``)."""
    for subset in subsets:
        i2t, t2i, images = spec_records(subset, n, k)
        folder = root / subset
        (folder / "images").mkdir(parents=True, exist_ok=True)
        (folder / "image2text.json").write_text(json.dumps(i2t))
        (folder / "text2image.json").write_text(json.dumps(t2i))
        for path, index in images.items():
            photo(index, 40).save(folder / path, quality=92)


def write_spec_zip(path: Path, n: int, subsets: tuple[str, ...] = SUBSETS, prefix: str = "") -> None:
    """``data.zip`` as published, the subset folders under ``prefix`` inside it."""
    staging = path.parent / "_staging"
    write_spec(staging, n, subsets)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        for file in sorted(staging.rglob("*")):
            if file.is_file():
                z.write(file, prefix + file.relative_to(staging).as_posix())
    for file in sorted(staging.rglob("*"), reverse=True):
        file.unlink() if file.is_file() else file.rmdir()
    staging.rmdir()


def write(root: Path, n: int) -> None:
    # two subsets (the others are then reported as skipped) and n/2 records a direction: the
    # diffusion scorer's contract run stays as cheap as Winoground's
    write_spec(root / "spec", max(1, n // 2), subsets=("absolute_size", "count"))

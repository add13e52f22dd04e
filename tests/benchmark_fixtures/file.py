"""The file benchmark's layout: a folder holding items.jsonl (or items.csv) and the images its
records name, relative to it. ``write`` puts one under ``<data-root>/file/``, the place
``--bench file`` reads when no path is given; ``write_jsonl`` and ``write_csv`` write given
records in either form, for tests that want their own items."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from factories import photo

NOUNS = ("dog", "couch", "person", "tree", "cup", "car")


def records(n: int) -> list[dict[str, Any]]:
    """n items: two in three are one image against 2 to 4 texts, one in three is 2x2; some with
    an id, a subset and tags, some without."""
    out = []
    for k in range(n):
        a, b = NOUNS[k % len(NOUNS)], NOUNS[(k + 1) % len(NOUNS)]
        if k % 3 == 2:
            record: dict[str, Any] = {"images": [f"images/{k}-a.jpg", f"images/{k}-b.jpg"],
                                      "texts": [f"a {a} on a {b} {k}", f"a {b} on a {a} {k}"],
                                      "truth": [k % 2, 1 - k % 2], "tags": ["relation"]}
        else:
            count = 2 + (k // 3) % 3
            record = {"image": f"images/{k}.jpg", "texts": [f"a {NOUNS[(k + j) % len(NOUNS)]} number {k}"
                                                           for j in range(count)],
                      "truth": k % count, "tags": ["object", "easy"] if k % 2 else ["object"]}
        if k % 2 == 0:
            record["id"] = f"item-{k}"
        if k % 4 == 0:
            record["subset"] = "first"
        out.append(record)
    return out


def write_images(folder: Path, items: list[dict[str, Any]], size: int = 48) -> None:
    """A distinct real photograph for every image path the records name."""
    paths = list(dict.fromkeys(p for r in items for p in ([r["image"]] if "image" in r else r["images"])))
    for k, name in enumerate(paths):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        photo(k, size).save(path)


def write_jsonl(path: Path, items: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in items), encoding="utf-8")
    return path


def write_csv(path: Path, items: list[dict[str, Any]]) -> Path:
    """The same records as CSV: image_0/image_1, text_0.., truth_0/truth_1, id, subset, tags (';')."""
    n_images = max(len(r.get("images", [0])) for r in items)
    n_texts = max(len(r["texts"]) for r in items)
    header = ([f"image_{i}" for i in range(n_images)] + [f"text_{j}" for j in range(n_texts)]
              + [f"truth_{i}" for i in range(n_images)] + ["id", "subset", "tags"])
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for r in items:
            images = [r["image"]] if "image" in r else r["images"]
            truth = r["truth"] if isinstance(r["truth"], list) else [r["truth"]]
            tags = r.get("tags", [])
            writer.writerow([*images, *[""] * (n_images - len(images)), *r["texts"], *[""] * (n_texts - len(r["texts"])),
                             *truth, *[""] * (n_images - len(truth)), r.get("id", ""), r.get("subset", ""),
                             ";".join([tags] if isinstance(tags, str) else tags)])
    return path


def write(root: Path, n: int) -> None:
    folder = root / "file"
    items = records(n)
    write_images(folder, items)
    write_jsonl(folder / "items.jsonl", items)

"""ColorSwap in its two real layouts: the Hugging Face repository's parquet files (images embedded)
and the authors' download, data/{split}.json naming images/img_<id>_<k>.png (unpacked or in
data/images.zip)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from factories import photo

COLOURS = ("red", "blue", "green", "yellow", "white", "black")
OBJECTS = (("umbrella", "dress"), ("raft", "water"), ("car", "house"), ("cup", "table"))
SOURCES = ("midjourney", "dalle3", "stable-diffusion")


def colorswap_records(n: int, start_id: int = 0) -> list[dict]:
    """Records with the authors' fields; image_1/image_2 name the files of their download."""
    records = []
    for i in range(n):
        a, b = COLOURS[i % len(COLOURS)], COLOURS[(i + 2) % len(COLOURS)]
        x, y = OBJECTS[i % len(OBJECTS)]
        rid = start_id + i
        records.append({
            "id": rid,
            "caption_1": f"a {a} {x} next to a {b} {y} in scene {rid}",
            "caption_2": f"a {b} {x} next to a {a} {y} in scene {rid}",
            "image_1": f"images/img_{rid}_1.png",
            "image_2": f"images/img_{rid}_2.png",
            "image_source": SOURCES[i % len(SOURCES)],
            "caption_source": "human" if i % 2 else "gpt-4",
        })
    return records


def write_colorswap_parquet(folder: Path, n: int, split: str = "test", start_id: int = 0,
                            image_size: int = 32) -> Path:
    """The hub repository: data/{split}-00000-of-00001.parquet with embedded PNG images."""
    import datasets

    records = colorswap_records(n, start_id)
    columns = {key: [r[key] for r in records] for key in records[0]}
    columns["image_1"] = [photo(2 * r["id"], image_size) for r in records]
    columns["image_2"] = [photo(2 * r["id"] + 1, image_size) for r in records]
    features = datasets.Features({
        "id": datasets.Value("int32"),
        "image_1": datasets.Image(),
        "image_2": datasets.Image(),
        "caption_1": datasets.Value("string"),
        "caption_2": datasets.Value("string"),
        "image_source": datasets.Value("string"),
        "caption_source": datasets.Value("string"),
    })
    (folder / "data").mkdir(parents=True, exist_ok=True)
    path = folder / "data" / f"{split}-00000-of-00001.parquet"
    datasets.Dataset.from_dict(columns, features=features).to_parquet(str(path), batch_size=4)
    return path


def write_colorswap_json(folder: Path, n: int, split: str = "test", zipped: bool = False, start_id: int = 0,
                         image_size: int = 32) -> Path:
    """The authors' download unpacked into data/: {split}.json and images/ (or images.zip)."""
    data = folder / "data"
    (data / "images").mkdir(parents=True, exist_ok=True)
    records = colorswap_records(n, start_id)
    (data / f"{split}.json").write_text(json.dumps(records, indent=4))
    for r in records:
        for k in (1, 2):
            photo(2 * r["id"] + k - 1, image_size).save(data / r[f"image_{k}"])
    if zipped:
        with zipfile.ZipFile(data / "images.zip", "w") as z:
            for path in sorted((data / "images").iterdir()):
                z.write(path, f"images/{path.name}")
                path.unlink()
        (data / "images").rmdir()
    return data / f"{split}.json"


def write(root: Path, n: int) -> None:
    write_colorswap_parquet(root / "colorswap", n)

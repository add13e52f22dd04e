"""VALSE in its repository layout: valse/data/<instrument>.json objects keyed by sample id, with the
real records' fields, image names and sources; every instrument gets one extra sample the human
validation rejected (mturk caption < 2). Images lie where the adapter looks for each source;
counting-adversarial's Visual7W images lie only in ARO's Visual Genome folder, under their id."""
from __future__ import annotations

import json
from pathlib import Path

from factories import photo

# instrument -> (dataset, original split, image file name for sample k)
WRITTEN = {
    "existence": ("visual7w", "test", lambda k: f"v7w_{2371044 + k}.jpg"),
    "counting-adversarial": ("visual7w", "test", lambda k: f"v7w_{2396743 + k}.jpg"),
    "relations": ("coco_2017", "val", lambda k: f"{462576 + k:012d}.jpg"),
    "action-replacement": ("SWiG", "test", lambda k: f"exercising_{255 + k}.jpg"),
    "coreference-standard": ("VisDial_v1.0", "train",
                             lambda k: f"COCO_{'train' if k % 2 else 'val'}2014_{254009 + k:012d}.jpg"),
    "coreference-hard": ("VisDial_v1.0", "val", lambda k: f"VisualDialog_val2018_{284024 + k:012d}.jpg"),
    "foil-it": ("FOIL dataset", "test", lambda k: f"COCO_val2014_{165831 + k:012d}.jpg"),
}


def image_folder(root: Path, instrument: str, name: str) -> Path:
    """Where the fixture puts an image (counting-adversarial: ARO's Visual Genome folder as <id>.jpg)."""
    if instrument == "counting-adversarial":
        return root / "aro" / "images" / name.removeprefix("v7w_")
    if name.startswith("v7w_"):
        return root / "visual7w" / "images" / name
    if name.startswith("COCO_"):
        return root / "coco" / name.split("_")[1] / name
    if name.startswith("VisualDialog_"):
        return root / "visdial" / "VisualDialog_val2018" / name
    if name.startswith("exercising_"):
        return root / "swig" / "images_512" / name
    return root / "coco" / "val2017" / name


def write(root: Path, n: int, instruments: tuple[str, ...] = tuple(WRITTEN)) -> None:
    (root / "valse" / "data").mkdir(parents=True, exist_ok=True)
    for f, instrument in enumerate(instruments):
        dataset, split, name_of = WRITTEN[instrument]
        samples = {}
        for k in range(n + 1):  # the last sample is one the annotators rejected
            name = name_of(k)
            path = image_folder(root, instrument, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            photo(80 + 10 * f + k, 64).save(path, quality=90)
            votes = 1 if k == n else 2 + k % 2
            samples[f"{instrument}_{split}_{k}"] = {
                "dataset": dataset, "original_split": split, "dataset_idx": str(k),
                "linguistic_phenomena": instrument.split("-")[0], "image_file": name,
                "caption": f"There are exactly {k + 2} dogs on the grass.", "classes": k + 2,
                "classes_foil": k + 3, "mturk": {"foil": 3 - votes, "caption": votes, "other": 0},
                "foil": f"There are exactly {k + 3} dogs on the grass.",
            }
        (root / "valse" / "data" / f"{instrument}.json").write_text(json.dumps(samples, indent=1))

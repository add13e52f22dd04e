"""SVO-Probes' layout: svo/svo_probes.csv with the official columns, and svo/images/<image_id>.jpg
as DiffusionITM's download.py names the downloaded images. Like the real data, some images are
missing (dead links)."""
from __future__ import annotations

import csv
from pathlib import Path

from factories import photo

COLUMNS = ("sentence", "pos_triplet", "neg_triplet", "subj_neg", "verb_neg", "obj_neg", "pos_url", "neg_url",
           "pos_image_id", "neg_image_id")
# (sentence, positive triplet, negative triplet, negative type)
ROWS = (
    ("A man rides a horse.", "man,ride,horse", "woman,ride,horse", "subj"),
    ("A girl throws a ball.", "girl,throw,ball", "girl,kick,ball", "verb"),
    ("A dog chases a cat.", "dog,chase,cat", "dog,chase,ball", "obj"),
    ("A child eats an apple.", "child,eat,apple", "dog,eat,apple", "subj"),
    ("A woman reads a book.", "woman,read,book", "woman,tear,book", "verb"),
    ("A boy holds a kite.", "boy,hold,kite", "boy,hold,umbrella", "obj"),
)


def row(k: int) -> dict[str, str]:
    sentence, pos, neg, kind = ROWS[k % len(ROWS)]
    pos_id, neg_id = 10000 + 2 * k, 10000 + 2 * k + 1
    return {"sentence": f"{sentence[:-1]} in picture {k}.", "pos_triplet": pos, "neg_triplet": neg,
            "subj_neg": str(kind == "subj"), "verb_neg": str(kind == "verb"), "obj_neg": str(kind == "obj"),
            "pos_url": f"https://images.example.org/{pos_id}.jpg", "neg_url": f"https://images.example.org/{neg_id}.jpg",
            "pos_image_id": str(pos_id), "neg_image_id": str(neg_id)}


def write(root: Path, n: int, dead: tuple[int, ...] | None = None) -> None:
    """``n`` rows (at least one per negative type) with their images, plus one more row whose
    negative image never downloaded; ``dead`` names the rows whose negative image is missing
    instead (default: only that last row). Returns nothing: ``factories.write_benchmark_data``
    takes a writer's return value for benchmark options."""
    rows = [row(k) for k in range(max(3, n) + 1)]
    dead = (len(rows) - 1,) if dead is None else dead
    folder = root / "svo" / "images"
    folder.mkdir(parents=True, exist_ok=True)
    with open(root / "svo" / "svo_probes.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    for k, r in enumerate(rows):
        photo(2 * k, 40).save(folder / f"{r['pos_image_id']}.jpg", quality=90)
        if k not in dead:
            photo(2 * k + 1, 40).save(folder / f"{r['neg_image_id']}.jpg", quality=90)

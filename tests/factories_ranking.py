"""A scorer that reads its scores from a table, and recall computed by hand, for ranking tests."""

from __future__ import annotations

import hashlib
import json

import numpy as np

from harness.api import Item, Scorer, ScorerConfig


def _no_pixels(image):
    return 0


class TableScorer(Scorer):
    """Scores read from a table ``table[ref][text]``. As a dual encoder, image i is the unit vector
    e_i and a text the column of its scores, so every dot product is exactly a table entry."""

    family = "table"

    def __init__(self, table: dict[str, dict[str, float]], embeds: bool = True) -> None:
        super().__init__(ScorerConfig(model="table"))
        self.table, self.refs, self.embeds = table, sorted(table), embeds
        self.seen: set[str] = set()
        self.asked: list[Item] = []

    def fingerprint(self):
        digest = hashlib.sha256(json.dumps(self.table, sort_keys=True).encode()).hexdigest()[:12]
        return {"family": self.family, "table": digest}

    def describe(self):
        return {"model": "table", "pretrained": ""}

    def image_transform(self):
        return _no_pixels

    def add_images(self, refs, pixels):
        self.seen.update(refs)

    def has_image(self, ref):
        return ref in self.seen

    def clear_images(self):
        self.seen.clear()

    def score(self, items):
        self.asked += items
        return [np.array([[self.table[r][t] for t in item.texts] for r in item.images]) for item in items]

    def embed_images(self, refs):
        return np.eye(len(self.refs), dtype=np.float32)[[self.refs.index(r) for r in refs]]

    def embed_texts(self, texts):
        return np.array([[self.table[r][t] for r in self.refs] for t in texts], dtype=np.float32)


def eighths_table(items, seed=0):
    """Scores in eighths (exact in float32, so ties are real ties), one per (image, distinct text)."""
    rng = np.random.default_rng(seed)
    texts = sorted({t for item in items for t in item.texts})
    return {item.images[0]: {t: float(v) / 8 for t, v in zip(texts, rng.integers(0, 8, len(texts)))}
            for item in items}


def hand_recall(rows, positives, k, strict):
    """Sort each query's candidates best first, putting tied negatives before (strict) or after
    (lenient) the positives, and look for a positive among the first k."""
    hits = []
    for row, pos in zip(rows, positives):
        tiebreak = (lambda c: c in pos) if strict else (lambda c: c not in pos)
        order = sorted(range(len(row)), key=lambda c: (-row[c], tiebreak(c)))
        hits.append(any(c in pos for c in order[:k]))
    return 100.0 * np.mean(hits)


def full_matrix(items, table):
    """The whole gallery's images x texts matrix, and each image's and each text's positives."""
    texts = [t for item in items for t in item.texts]
    owner = [i for i, item in enumerate(items) for _ in item.texts]
    matrix = np.array([[table[item.images[0]][t] for t in texts] for item in items])
    image_positives = [{j for j, o in enumerate(owner) if o == i} for i in range(len(items))]
    return matrix, image_positives, [{o} for o in owner]

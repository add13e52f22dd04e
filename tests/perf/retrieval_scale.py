"""What ranking a gallery of COCO's Karpathy-test size costs: 5,000 images x 25,010 captions (five
each, six for ten of them, the split's count), 512-d random unit embeddings from a stand-in dual
encoder (no model, no images: this measures the engine's matrix products, record building and
store, not CLIP).

Prints one JSON object: seconds to rank, the score store's size on disk, and the process's peak
memory (VmHWM), beside what a float32 score matrix of the gallery would take.
Run: `python tests/perf/retrieval_scale.py [--images 5000] [--dim 512]` from the repository root.
Not a pytest test.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

sys.path[:0] = [str(Path(__file__).resolve().parents[2])]

from harness.api import Benchmark, Item, Scorer, ScorerConfig  # noqa: E402
from harness.runner import evaluate  # noqa: E402
from harness.store import ScoreStore  # noqa: E402


def _no_pixels(image):
    return 0


class RandomEmbeddings(Scorer):
    """A dual encoder whose embeddings are seeded random unit vectors (one per ref or text)."""

    family = "random-embeddings"
    embeds = True

    def __init__(self, dim: int) -> None:
        super().__init__(ScorerConfig(model="random"))
        self.dim, self.seen = dim, set()

    def _vectors(self, keys, salt):
        out = np.stack([np.random.default_rng([salt, zlib.crc32(k.encode())]).standard_normal(self.dim) for k in keys])
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)

    def fingerprint(self):
        return {"family": self.family, "dim": self.dim}

    def describe(self):
        return {"model": "random", "pretrained": ""}

    def image_transform(self):
        return _no_pixels

    def add_images(self, refs, pixels):
        self.seen.update(refs)

    def has_image(self, ref):
        return ref in self.seen

    def clear_images(self):
        self.seen.clear()

    def score(self, items):
        raise NotImplementedError

    def embed_images(self, refs):
        return self._vectors(refs, 1)

    def embed_texts(self, texts):
        return self._vectors(texts, 2)


def gallery(n_images: int) -> type[Benchmark]:
    # COCO's test split: 25,010 captions for 5,000 images, so 10 images carry a sixth caption
    extra = max(0, round(n_images * 25010 / 5000) - 5 * n_images)

    class Gallery(Benchmark):
        name, version, comparisons = "scale", "1", "ranking"

        def items(self):
            return [Item(id=f"g/{i}", images=(f"img{i}",),
                         texts=tuple(f"caption {c} of image {i}" for c in range(6 if i < extra else 5)), truth=(0,),
                         meta={"subset": "coco-size"}) for i in range(n_images)]

        def load_image(self, ref):
            return Image.new("RGB", (1, 1))

        def metrics(self, items, scores, seed):
            return []

        def ranking_metrics(self, items, rankings, seed):
            return []

        @classmethod
        def describe_data(cls, data_root):
            return []

    return Gallery


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--dim", type=int, default=512)
    args = parser.parse_args()
    bench = gallery(args.images)(Path("."))
    items = bench.items()
    texts = sum(len(i.texts) for i in items)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "scores.sqlite"
        start = time.perf_counter()
        result = evaluate(RandomEmbeddings(args.dim), bench, ScoreStore(store), workers=0, chunk_items=64,
                          progress=False)
        seconds = time.perf_counter() - start
        size = sum(p.stat().st_size for p in Path(tmp).iterdir())
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    print(json.dumps({
        "images": args.images, "texts": texts, "dim": args.dim, "items_ranked": result.scored_now,
        "seconds": round(seconds, 1), "store_mib": round(size / 2**20, 2),
        "score_matrix_mib_float32": round(args.images * texts * 4 / 2**20, 1), "peak_mib": round(peak, 1),
    }))


if __name__ == "__main__":
    main()

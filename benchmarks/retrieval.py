"""Image-text retrieval on the Karpathy test splits of COCO (5,000 images, 25,010 captions) and
Flickr30k (1,000 images, 5,000 captions): recall@1, 5 and 10 in both directions.

Data: the Karpathy test annotation files ARO's order subsets already read (the BLIP/ARO release,
``coco_karpathy_test.json`` and ``flickr30k_test.json``: a JSON list of ``{"image": "val2014/...jpg"
or "flickr30k-images/...jpg", "caption": [...]}``), with the same default paths and the same
``--bench-opt`` names as ``harness ls aro`` (``coco_json``, ``coco_root``, ``flickr_json``,
``flickr_root``), so one copy serves both benchmarks. Captions are used as written, as
CLIP_benchmark does (ARO's own retrieval code lower-cases and strips punctuation first).

Metric, as LAION's CLIP_benchmark computes it (``clip_benchmark/metrics/zeroshot_retrieval.py``,
``evaluate`` and ``recall_at_k``): every image is ranked against every caption of the split.
- ``i2t_recall@k`` (CLIP_benchmark's ``text_retrieval_recall@k``): per image, a hit when at least
  one of its captions is among the k best captions; averaged over images.
- ``t2i_recall@k`` (CLIP_benchmark's ``image_retrieval_recall@k``): per caption, a hit when its
  image is among the k best images; averaged over captions.
CLIP_benchmark ranks with ``torch.topk``, which leaves the order of equal scores unspecified. Here
``--bench-opt ties=strict`` (the default, this harness's rule) puts every negative that ties a
query's best positive ahead of it, ``ties=lenient`` behind it; CLIP_benchmark's figure lies between
the two, and without ties all three agree. Ties happen with CLIP when two images share a caption
word for word. Intervals: percentile bootstrap over queries. Each row keeps its queries' hits for
``harness compare``, a query named by its item's id (an image) or by ``<item id>|caption <j>``.

The engine does the ranking (``harness.ranking``): with CLIP one matrix product, storing per query
only its ten best candidates and where its positives rank; with ``--shortlist`` an expensive scorer
re-ranks a cheap scorer's top k (``harness.shortlist``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmarks.aro import HOW_TO_GET_COCO, HOW_TO_GET_FLICKR, _field, _read_json_list
from harness.api import Benchmark, DataRequirement, Item, MetricRow
from harness.errors import BadRecordError, MissingDataError
from harness.images import decode_image
from harness.metrics import RANKING_TIES, accuracy_row, by_subset, recall_hits, unit_id
from harness.options import Choice, FilePath, Option

SUBSETS = ("coco", "flickr30k")
RECALL_AT = (1, 5, 10)
# the published Karpathy test splits, to flag a partial file or a --limit
EXPECTED = {"coco": (5000, 25010), "flickr30k": (1000, 5000)}


class Retrieval(Benchmark):
    """Options: ``harness ls retrieval``."""

    name = "retrieval"
    version = "1"
    subsets = SUBSETS
    comparisons = "ranking"
    OPTIONS = (
        Option("coco_json", FilePath(), None, "default: <data-root>/coco/coco_karpathy_test.json (as for aro)"),
        Option("coco_root", FilePath(), None, "folder the COCO annotation's image paths start from "
                                              "(default: <data-root>/coco)"),
        Option("flickr_json", FilePath(), None, "default: <data-root>/flickr30k/flickr30k_test.json (as for aro)"),
        Option("flickr_root", FilePath(), None, "folder the Flickr30k annotation's image paths start from "
                                                "(default: <data-root>/flickr30k)"),
        Option("ties", Choice(*RANKING_TIES), "strict", "a negative scoring level with the best positive counts "
                                                     "ahead of it (strict) or behind it (lenient)"),
    )

    def __init__(self, data_root: Path, subset: str | None = None, **options: Any) -> None:
        super().__init__(data_root, subset, **options)
        o, root = self.options, self.data_root
        self.annotations = {"coco": Path(o["coco_json"] or root / "coco" / "coco_karpathy_test.json"),
                            "flickr30k": Path(o["flickr_json"] or root / "flickr30k" / "flickr30k_test.json")}
        self.image_roots = {"coco": Path(o["coco_root"] or root / "coco"),
                            "flickr30k": Path(o["flickr_root"] or root / "flickr30k")}
        self.ties = o["ties"]
        self._ranks: dict[str, tuple[int, list[int]]] = {}  # item id -> its ranks, for item_scores.jsonl

    # -- items ------------------------------------------------------------------------------------
    def items(self) -> list[Item]:
        """One item per image: the image and its captions (all positives); a subset is a gallery."""
        return self.items_of_subsets(self._read, self._missing, "retrieval")

    def _missing(self, subset: str) -> str:
        how = HOW_TO_GET_COCO if subset == "coco" else HOW_TO_GET_FLICKR
        if not self.annotations[subset].is_file():
            return f"annotation file {self.annotations[subset]} not found. {how}"
        if not self.image_roots[subset].is_dir():
            return f"image folder {self.image_roots[subset]} not found. {how}"
        return ""

    def _read(self, subset: str) -> list[Item]:
        path = self.annotations[subset]
        items = []
        for i, record in enumerate(_read_json_list(path, f"retrieval {subset}")):
            image = _field(record, "image", i, path)
            captions = _field(record, "caption", i, path)
            captions = [captions] if isinstance(captions, str) else captions
            if not isinstance(image, str) or not image or not isinstance(captions, list) or not captions \
                    or not all(isinstance(c, str) and c.strip() for c in captions):
                raise BadRecordError(f"record {i} of {path}: 'image' should be a path and 'caption' a non-empty "
                                     f"list of captions, found image={image!r}, caption={captions!r}")
            items.append(Item(id=f"{subset}/{i}", images=(f"{subset}/{image}",), texts=tuple(captions),
                              truth=(0,), meta={"subset": subset}))
        return items

    def load_image(self, ref: str) -> Image.Image:
        subset, _, relative = ref.partition("/")
        root = self.image_roots[subset]
        path = root / relative
        if not path.is_file() and (root / Path(relative).name).is_file():
            path = root / Path(relative).name  # a flat image folder
        if not path.is_file():
            raise MissingDataError(f"image {path} not found (under {root}, from {self.annotations[subset]})")
        return decode_image(path, str(path)).convert("RGB")

    # -- metrics ----------------------------------------------------------------------------------
    def metrics(self, items: Sequence[Item], scores: Sequence[np.ndarray], seed: int) -> list[MetricRow]:
        raise NotImplementedError("retrieval ranks whole galleries: its rows come from ranking_metrics, "
                                  "which harness.runner.evaluate calls")

    def ranking_metrics(self, items: Sequence[Item], rankings: Sequence[np.ndarray], seed: int) -> list[MetricRow]:
        rows: list[MetricRow] = []
        for subset, chosen, records in by_subset(items, rankings, SUBSETS):
            images = np.concatenate([r[:1] for r in records])  # entry 0: the image's query
            texts = np.concatenate([r[1:] for r in records])  # entries 1..: its captions' queries
            image_ahead, text_ahead = self._ahead(images), self._ahead(texts)
            at = 0
            for item, record, ahead in zip(chosen, records, image_ahead):
                m = len(record) - 1
                self._ranks[item.id] = (int(ahead) + 1, [int(a) + 1 for a in text_ahead[at:at + m]])
                at += m
            details: dict[str, Any] = {"ties": self.ties, "gallery_images": len(images), "gallery_texts": len(texts)}
            if (len(images), len(texts)) != EXPECTED[subset]:
                details["expected"] = {"images": EXPECTED[subset][0], "texts": EXPECTED[subset][1]}
            # the unit of a row is a query: an image (named by its item) or one caption of an item
            # ("flickr30k/3|caption 0", harness.metrics.unit_id), so harness compare pairs queries
            queries = {"i2t": [item.id for item in chosen],
                       "t2i": [unit_id([item.id], f"caption {j}") for item, record in zip(chosen, records)
                               for j in range(len(record) - 1)]}
            for direction, entries in (("i2t", images), ("t2i", texts)):
                for k in RECALL_AT:
                    hits = recall_hits(entries["above"], entries["tied"], k, self.ties)
                    rows.append(replace(accuracy_row(subset, f"{direction}_recall@{k}", hits, seed, queries[direction]),
                                        details=details))
        return rows

    def _ahead(self, entries: np.ndarray) -> np.ndarray:
        """Negatives ranked ahead of each query's best positive under the tie rule."""
        return entries["above"] + (entries["tied"] if self.ties == "strict" else 0)

    def outcome(self, item: Item, scores: np.ndarray) -> dict[str, Any]:
        """The item's ranks (1 = first) under the tie rule, once the metrics were computed."""
        if item.id not in self._ranks:
            return {}
        i2t, t2i = self._ranks[item.id]
        return {"i2t_rank": i2t, "t2i_ranks": t2i}

    def details(self) -> dict[str, Any]:
        return {"ties": self.ties}

    @classmethod
    def describe_data(cls, data_root: Path) -> list[DataRequirement]:
        bench = cls(data_root)
        out = []
        for subset in SUBSETS:
            how = HOW_TO_GET_COCO if subset == "coco" else HOW_TO_GET_FLICKR
            annotation, images = bench.annotations[subset], bench.image_roots[subset]
            label = "COCO" if subset == "coco" else "Flickr30k"
            out.append(DataRequirement(f"{label} Karpathy test annotation (shared with aro)", str(annotation),
                                       annotation.is_file(), how))
            out.append(DataRequirement(f"{label} images (shared with aro)", str(images), images.is_dir(), how))
        return out

"""Ranking benchmarks (retrieval): every image of a gallery against every text of it, in both
directions, without keeping a gallery-sized score matrix.

A ranking benchmark (``comparisons = "ranking"``) has one item per gallery image, whose texts are
that image's captions; items sharing ``meta["subset"]`` form a gallery. For each item the engine
keeps a *record* with one entry per query: entry 0 ranks every text of the gallery for the item's
image, entry 1 + j every image for its caption j. An entry holds

- ``top_index``, ``top_score``: the K best candidates (gallery indices, best first, ties to the
  lower index; -1 and -inf pad a gallery smaller than K), K = max(10, the shortlist's k);
- ``best``: the score of the query's best positive (for an image, its best caption);
- ``above``, ``tied``: how many negatives score strictly above ``best`` and exactly level with it.

A positive is then within the first k iff ``above + tied < k`` when ties count against it, or
``above < k`` when they count for it, for every k: that is all recall@k needs (see
``harness.metrics.recall_hits``). The store also keeps each item's own matrix (its image against
its captions). An entry is 144 bytes at K = 10; with the .npy headers an image with five captions
takes 1.3 kB, so COCO's 5,000 images and 25,010 captions about 6 MB, where the score matrix would
take 500 MB in float32.

How entries are made depends on the scorer:

- a scorer that ``embeds`` (CLIP): the gallery's images and distinct texts are embedded once, then
  each chunk of items is one matrix product against the whole gallery; its records are committed
  before the next chunk, so an interrupted run resumes there (the embeddings are recomputed).
  Identical captions share one embedding, so they tie exactly.
- a ``ShortlistScorer``: the cheap scorer's records (computed, or reused from the store: a plain
  run of the cheap scorer stores the same ones), then the expensive scorer on each query's k best
  candidates as ordinary items (stored, resumable, shared between runs), re-ranked as
  ``harness.shortlist`` describes. These records are recomputed from the two stores each time.
- any other scorer: each query as an ordinary item against the whole gallery. That is
  ``2 x images x texts`` pair scores, refused above ``MAX_PAIRS_WITHOUT_EMBEDDINGS``: use a
  shortlist.

Whatever the path, a run leaves its records in the store under its own scorer and gallery (the
last two paths write a copy once they are made), which is where ``harness compare`` reads them.

The metric follows LAION's CLIP_benchmark (``clip_benchmark/metrics/zeroshot_retrieval.py``):
image-to-text recall@k is a hit when any of the image's captions is among the k best texts;
text-to-image when the caption's image is among the k best images. It ranks with ``torch.topk``,
whose order among equal scores is unspecified, so its figure lies between the two tie rules here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from harness import distributed
from harness.api import Benchmark, Item, Scorer
from harness.errors import HarnessError, NonFiniteScoreError
from harness.images import default_workers, stream_images
from harness.runner import Evaluation
from harness.shortlist import (
    ShortlistScorer,
    below,
    content_item,
    score_candidates,
    shortlist_k,
)
from harness.store import ScoreStore


TOP_K = 10  # recall@1, 5 and 10
MAX_PAIRS_WITHOUT_EMBEDDINGS = 1_000_000
RECORD_FIELDS = ("top_index", "top_score", "best", "above", "tied")


def record_dtype(k: int) -> np.dtype:
    """One query's entry with its K best candidates (module docstring)."""
    return np.dtype([("top_index", "<i4", (k,)), ("top_score", "<f8", (k,)), ("best", "<f8"),
                     ("above", "<i8"), ("tied", "<i8")])


@dataclass(frozen=True)
class Gallery:
    """The images and texts one ranking ranks among. Image i is ``items[i]``'s image; item i's
    captions are ``texts[offsets[i]:offsets[i + 1]]``; ``owner[t]`` is the image of text t."""

    name: str
    items: tuple[Item, ...]
    refs: tuple[str, ...]
    texts: tuple[str, ...]
    offsets: np.ndarray
    owner: np.ndarray
    digest: str

    def key(self, k: int) -> str:
        """What stored records are relative to: this exact gallery (a ``--limit`` makes another)
        and the K kept."""
        return f"{self.digest}/top{k}"

    def captions(self, i: int) -> np.ndarray:
        return np.arange(self.offsets[i], self.offsets[i + 1])


def galleries(items: Sequence[Item], benchmark: Benchmark) -> list[Gallery]:
    """The galleries of a ranking benchmark's items, in first-appearance order."""
    groups: dict[str, list[Item]] = {}
    for item in items:
        if len(item.images) != 1:
            raise HarnessError(f"{benchmark.key} item {item.id!r}: a ranking benchmark's items hold one image "
                               f"each, this one {len(item.images)}")
        if not item.texts or not all(isinstance(t, str) for t in item.texts):
            raise HarnessError(f"{benchmark.key} item {item.id!r}: a ranking benchmark's items need at least one "
                               "caption, as plain strings")
        groups.setdefault(str(item.meta.get("subset", "")), []).append(item)
    out = []
    for name, members in groups.items():
        counts = np.array([len(item.texts) for item in members])
        digest = hashlib.sha256()
        for item in members:
            digest.update((item.images[0] + "\x1e" + "\x1f".join(item.texts) + "\x1d").encode())
        out.append(Gallery(
            name=name, items=tuple(members), refs=tuple(item.images[0] for item in members),
            texts=tuple(t for item in members for t in item.texts),
            offsets=np.concatenate([[0], np.cumsum(counts)]), owner=np.repeat(np.arange(len(members)), counts),
            digest=digest.hexdigest()[:24],
        ))
    return out


def records_from_rows(rows: np.ndarray, positives: Sequence[np.ndarray], k: int) -> np.ndarray:
    """Entries of queries whose scores against every candidate are ``rows`` (queries x
    candidates); ``positives[q]`` lists query q's positive candidates."""
    rows = np.asarray(rows)
    out = np.zeros(len(rows), dtype=record_dtype(k))
    out["top_index"], out["top_score"] = -1, -np.inf
    if not len(rows):
        return out
    order = np.argsort(-rows, axis=1, kind="stable")[:, :k]  # stable: ties go to the lower index
    out["top_index"][:, :order.shape[1]] = order
    out["top_score"][:, :order.shape[1]] = np.take_along_axis(rows, order, axis=1)
    negative = np.ones(rows.shape[1], dtype=bool)
    for q, (row, pos) in enumerate(zip(rows, positives)):
        best = row[pos].max()
        negative[pos] = False
        out["best"][q] = best
        out["above"][q] = np.count_nonzero(row[negative] > best)
        out["tied"][q] = np.count_nonzero(row[negative] == best)
        negative[pos] = True
    return out


def rerank(entry: np.ndarray, expensive: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """A one-entry record (shape (1,)) after the expensive scorer re-scored its first
    ``len(expensive)`` candidates (``positive`` marks which of those are positives); the other
    candidates stay below them in cheap order, as ``harness.shortlist`` places them."""
    out = np.array(entry, copy=True)
    n = len(expensive)
    index, cheap = entry["top_index"][0], entry["top_score"][0]
    expensive = np.asarray(expensive, dtype=np.float64)
    floor, lowest_kept = float(expensive.min()) - 1.0, float(cheap[n - 1])
    order = np.argsort(-expensive, kind="stable")  # ties keep the cheap order
    out["top_index"][0, :n] = index[:n][order]
    out["top_score"][0, :n] = expensive[order]
    rest = np.flatnonzero(index >= 0)
    rest = rest[rest >= n]
    out["top_score"][0, rest] = below(floor, lowest_kept, cheap[rest])
    if positive.any():
        best = expensive[positive].max()
        negatives = expensive[~positive]
        out["best"], out["above"], out["tied"] = best, np.count_nonzero(negatives > best), \
            np.count_nonzero(negatives == best)
    else:  # every positive is outside: the shortlist lies above it, the rest keeps its cheap order
        level = np.count_nonzero(cheap[:n] == entry["best"][0])  # shortlisted negatives it was tied with
        out["best"] = below(floor, lowest_kept, float(entry["best"][0]))
        out["above"], out["tied"] = entry["above"] + level, entry["tied"] - level
    return out


@dataclass
class _Ranked:
    own: dict[str, np.ndarray]  # item id -> its image against its captions
    records: dict[str, np.ndarray]  # item id -> record
    now: set[str]  # item ids whose scores were computed by this call


def evaluate_ranking(scorer: Scorer, benchmark: Benchmark, store: ScoreStore, items: Sequence[Item] | None = None,
                     seed: int = 0, workers: int | None = None, chunk_items: int = 64,
                     progress: bool = True) -> Evaluation:
    """``evaluate`` for a ranking benchmark: records per item (stored or computed), then
    ``benchmark.ranking_metrics``. Reached through ``evaluate``, which checks the items' ids."""
    items = list(benchmark.items() if items is None else items)
    key = store.register_scorer(scorer.fingerprint())
    k = max(TOP_K, shortlist_k(scorer))
    settings = {"workers": default_workers() if workers is None else workers, "chunk_items": chunk_items,
                "progress": progress}
    own: dict[str, np.ndarray] = {}
    records: dict[str, np.ndarray] = {}
    now: set[str] = set()
    for gallery in galleries(items, benchmark):
        ranked = _rank(scorer, benchmark, gallery, store, k, seed, settings)
        if (isinstance(scorer, ShortlistScorer) or not scorer.embeds) and distributed.world()[0] == 0:
            # these paths rebuild their records from stored scores; keeping them under this scorer
            # (the embedding path stores its own as it goes) lets harness compare read them
            store.put_rankings(key, benchmark.name, benchmark.version, gallery.key(k),
                               [(item.id, ranked.own[item.id], ranked.records[item.id]) for item in gallery.items])
        own.update(ranked.own)
        records.update(ranked.records)
        now |= ranked.now
    rankings = [records[item.id] for item in items]
    rows = benchmark.ranking_metrics(items, rankings, seed)
    return Evaluation(items=items, scores=[own[item.id] for item in items], rows=rows, scorer_key=key,
                      scored_now=len(now), rankings=rankings)


def _rank(scorer: Scorer, benchmark: Benchmark, gallery: Gallery, store: ScoreStore, k: int, seed: int,
          settings: dict[str, Any]) -> _Ranked:
    if isinstance(scorer, ShortlistScorer):
        return _rank_with_shortlist(scorer, benchmark, gallery, store, k, seed, settings)
    if scorer.embeds:
        return _rank_by_embeddings(scorer, benchmark, gallery, store, k, settings)
    return _rank_pair_by_pair(scorer, benchmark, gallery, store, k, seed, settings)


# -- dual encoders: one matrix product per chunk ------------------------------------------------------

def _rank_by_embeddings(scorer: Scorer, benchmark: Benchmark, gallery: Gallery, store: ScoreStore, k: int,
                        settings: dict[str, Any]) -> _Ranked:
    key = store.register_scorer(scorer.fingerprint())
    where = gallery.key(k)
    done = store.ranked_ids(key, benchmark.name, benchmark.version, where)
    pending = [i for i, item in enumerate(gallery.items) if item.id not in done]
    if pending and distributed.world()[0] == 0:  # one matrix product: rank 0 does it, the others wait
        _embed_and_rank(scorer, benchmark, gallery, pending, store, key, where, k, settings)
    distributed.barrier()
    stored = store.get_rankings(key, benchmark.name, benchmark.version, where, (item.id for item in gallery.items))
    return _Ranked(own={i: m for i, (m, _) in stored.items()}, records={i: r for i, (_, r) in stored.items()},
                   now={gallery.items[i].id for i in pending})


def _embed_and_rank(scorer: Scorer, benchmark: Benchmark, gallery: Gallery, pending: list[int], store: ScoreStore,
                    key: str, where: str, k: int, settings: dict[str, Any]) -> None:
    scorer.clear_images()
    refs = list(dict.fromkeys(gallery.refs))
    stream = stream_images(refs, benchmark.load_image, scorer.image_transform(), scorer.image_batch_size,
                           settings["workers"], describe_ref=lambda ref: f"{ref!r} of {benchmark.key}")
    bar = tqdm(total=len(refs), unit="image", desc=f"{scorer.family} embedding {benchmark.key}:{gallery.name}",
               disable=not settings["progress"], dynamic_ncols=True)
    try:
        for batch_refs, pixels in stream:
            scorer.add_images(batch_refs, pixels)
            bar.update(len(batch_refs))
        images = torch.from_numpy(np.ascontiguousarray(scorer.embed_images(gallery.refs), dtype=np.float32))
    finally:
        bar.close()
        stream.close()
        scorer.clear_images()
    distinct = list(dict.fromkeys(gallery.texts))
    column = {text: j for j, text in enumerate(distinct)}
    text_column = np.array([column[t] for t in gallery.texts])
    texts = torch.from_numpy(np.ascontiguousarray(scorer.embed_texts(distinct), dtype=np.float32))

    bar = tqdm(total=len(gallery.items), initial=len(gallery.items) - len(pending), unit="item",
               desc=f"{scorer.family} ranking {benchmark.key}:{gallery.name}", disable=not settings["progress"],
               dynamic_ncols=True)
    try:
        for start in range(0, len(pending), settings["chunk_items"]):
            chunk = pending[start:start + settings["chunk_items"]]
            with torch.inference_mode():
                image_rows = (images[chunk] @ texts.T).numpy()[:, text_column]  # chunk images x gallery texts
                queries = np.concatenate([gallery.captions(i) for i in chunk])
                text_rows = (texts[text_column[queries]] @ images.T).numpy()  # their captions x gallery images
            _check_finite(scorer, benchmark, gallery, image_rows, text_rows)
            image_entries = records_from_rows(image_rows, [gallery.captions(i) for i in chunk], k)
            text_entries = records_from_rows(text_rows, [gallery.owner[[q]] for q in queries], k)
            batch, at = [], 0
            for row, i in enumerate(chunk):
                m = len(gallery.captions(i))
                record = np.concatenate([image_entries[row:row + 1], text_entries[at:at + m]])
                own = image_rows[row, gallery.offsets[i]:gallery.offsets[i + 1]][None, :]
                batch.append((gallery.items[i].id, own, record))
                at += m
            store.put_rankings(key, benchmark.name, benchmark.version, where, batch)
            bar.update(len(chunk))
    finally:
        bar.close()


def _check_finite(scorer: Scorer, benchmark: Benchmark, gallery: Gallery, *blocks: np.ndarray) -> None:
    bad = sum(int(np.sum(~np.isfinite(b))) for b in blocks)
    if bad:
        raise NonFiniteScoreError(
            f"scorer {scorer.family} produced {bad} non-finite similarities on {benchmark.key}:{gallery.name}. "
            "Nothing of this chunk was stored and no result rows were written. Mixed precision overflow is a "
            "common cause: try --device cpu, or check the weights.")


# -- a shortlist: the cheap scorer's records, the expensive scorer on their top k ----------------------

def _rank_with_shortlist(scorer: ShortlistScorer, benchmark: Benchmark, gallery: Gallery, store: ScoreStore,
                         k: int, seed: int, settings: dict[str, Any]) -> _Ranked:
    cheap = _rank(scorer.cheap, benchmark, gallery, store, k, seed, settings)
    parts: dict[str, list[Item]] = {}  # item id -> the expensive scorer's items for its queries
    for i, item in enumerate(gallery.items):
        record = cheap.records[item.id]
        mine = []
        for q, entry in enumerate(record):
            kept = _kept(entry, scorer.k)
            if q == 0:  # the image against its shortlisted texts
                mine.append(content_item(item.images, tuple(gallery.texts[t] for t in kept)))
            else:  # caption q - 1 against its shortlisted images
                mine.append(content_item(tuple(gallery.refs[j] for j in kept), (item.texts[q - 1],)))
        parts[item.id] = mine
    scores, scored_now = score_candidates(
        scorer.expensive, benchmark, "matrix", f"{gallery.name} shortlist k={scorer.k}", store,
        [p for mine in parts.values() for p in mine], seed=seed, **settings)
    scorer.expensive_items += len(scored_now)

    own, records, now = {}, {}, set(cheap.now)
    for i, item in enumerate(gallery.items):
        record = cheap.records[item.id].copy()
        captions = gallery.captions(i)
        for q, part in enumerate(parts[item.id]):
            entry = record[q:q + 1]
            kept = _kept(entry[0], scorer.k)
            matrix = scores[part.id]
            expensive = matrix[0] if q == 0 else matrix[:, 0]
            positive = np.isin(kept, captions) if q == 0 else kept == i
            record[q:q + 1] = rerank(entry, expensive, positive)
            if part.id in scored_now:
                now.add(item.id)
        entry = cheap.records[item.id][0]
        kept = _kept(entry, scorer.k)
        expensive = scores[parts[item.id][0].id][0]
        floor, lowest_kept = float(np.min(expensive)) - 1.0, float(entry["top_score"][len(kept) - 1])
        mine = np.asarray(below(floor, lowest_kept, cheap.own[item.id][0]), dtype=np.float64)
        for position, text in enumerate(kept):  # its captions that made the shortlist carry their new score
            if gallery.offsets[i] <= text < gallery.offsets[i + 1]:
                mine[text - gallery.offsets[i]] = expensive[position]
        own[item.id], records[item.id] = mine[None, :], record
    return _Ranked(own=own, records=records, now=now)


def _kept(entry: np.void, k: int) -> np.ndarray:
    """The shortlist of one query: its first k candidates (fewer in a small gallery)."""
    index = entry["top_index"][:k]
    return index[index >= 0]


# -- any other scorer: each query against the whole gallery, as ordinary items -------------------------

def _rank_pair_by_pair(scorer: Scorer, benchmark: Benchmark, gallery: Gallery, store: ScoreStore, k: int,
                       seed: int, settings: dict[str, Any]) -> _Ranked:
    pairs = 2 * len(gallery.refs) * len(gallery.texts)
    if pairs > MAX_PAIRS_WITHOUT_EMBEDDINGS:
        raise HarnessError(
            f"scorer {scorer.family} has no embeddings, so ranking {benchmark.key}:{gallery.name} "
            f"({len(gallery.refs):,} images, {len(gallery.texts):,} texts) would score {pairs:,} pairs, more than "
            f"{MAX_PAIRS_WITHOUT_EMBEDDINGS:,}. Re-rank a cheap scorer's shortlist instead, e.g. "
            "--shortlist clip:ViT-B-32:openai:k=10, or evaluate fewer images with --limit.")
    image_items = [content_item((ref,), gallery.texts) for ref in gallery.refs]
    text_items = [content_item(gallery.refs, (text,)) for text in gallery.texts]
    scores, scored_now = score_candidates(scorer, benchmark, "matrix", f"{gallery.name} all pairs", store,
                                          image_items + text_items, seed=seed, **settings)
    image_rows = np.stack([scores[p.id][0] for p in image_items])
    text_rows = np.stack([scores[p.id][:, 0] for p in text_items])
    image_entries = records_from_rows(image_rows, [gallery.captions(i) for i in range(len(gallery.items))], k)
    text_entries = records_from_rows(text_rows, [gallery.owner[[t]] for t in range(len(gallery.texts))], k)
    own, records, now = {}, {}, set()
    for i, item in enumerate(gallery.items):
        captions = gallery.captions(i)
        own[item.id] = image_rows[i, captions][None, :]
        records[item.id] = np.concatenate([image_entries[i:i + 1], text_entries[captions]])
        if image_items[i].id in scored_now or any(text_items[t].id in scored_now for t in captions):
            now.add(item.id)
    return _Ranked(own=own, records=records, now=now)

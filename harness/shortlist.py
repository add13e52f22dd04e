"""Shortlist re-ranking: an expensive scorer re-scores only a cheap scorer's k best candidates.

DiffusionITM (Krojer et al. 2023; repository McGill-NLP/diffusion-itm, ``datasets_loading.py``,
``Flickr30KDataset``) made the diffusion score affordable on Flickr30k retrieval this way: CLIP
RN50x64 picks 10 images per caption (``data/flickr30k/*_top10_RN50x64.json``) and Stable
Diffusion ranks only those. Here any registered scorer can be either side:

    harness run --scorer diffusion --bench retrieval:flickr30k --shortlist clip:ViT-B-32:openai:k=10

The spec is ``SCORER[:MODEL[:PRETRAINED]]:k=N[:option=value...]``: the cheap scorer's name as
``harness ls`` shows it, its ``--model`` and ``--pretrained`` (``local-dir:/path``, ``hf-hub:org/repo``
and ``toy:NAME`` models carry their own weights, so everything after such a prefix is the model),
the shortlist size ``k`` (required) and any of the cheap scorer's ``--opt`` options. Without a
model the cheap scorer's default model is used.

Order of the result, per image (a row of an item's matrix): the k best candidates of the cheap
scorer (ties broken by candidate index), ranked by the expensive scorer's scores, then every other
candidate below them in the cheap scorer's order. As one score matrix: the shortlisted candidates
carry the expensive score; any other candidate c gets ``min(shortlisted) - 1 - (c_k - c)``, where
c is its cheap score and c_k the lowest cheap score in the shortlist, so the benchmark's own
strict decision rules apply unchanged and cheap ties stay ties. Consequences: a truth outside the
shortlist is always wrong, so no top-k' accuracy or recall with k' <= k can exceed the cheap
scorer's at k; and for k' >= k both are equal (the first k are the same set), up to cheap-score
ties at the shortlist's edge.

An item with at most k candidates is scored whole by the expensive scorer (so Winoground's 2x2
keeps the diffusion scorer's image-side correction); an item with more has each image's shortlist
scored as its own one-image item.

In the engine (``evaluate``), a shortlist run first scores the benchmark with the cheap scorer and
stores those scores under the cheap scorer's own key: a plain run of the cheap scorer and every
shortlist run with another expensive scorer reuse them. The expensive scorer's items are named by
their content (image refs and texts), so they are shared by every run that asks for the same pairs.
The composite matrices go to the store under the shortlist scorer's own key, for ``harness compare``.
Ranking benchmarks (retrieval) go through ``harness.ranking``, which does the same with its records.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from harness import distributed
from harness.api import (
    Benchmark,
    Comparisons,
    DataRequirement,
    Item,
    MetricRow,
    Scorer,
    ScorerConfig,
    Text,
)
from harness.errors import HarnessError
from harness.options import Int, resolve_options
from harness.registry import SCORERS
from harness.store import ScoreStore, texts_hash

if TYPE_CHECKING:
    from harness.runner import Evaluation

# Model names that carry their own weights and contain a colon: all that follows is the model.
OWN_WEIGHTS_PREFIXES = ("local-dir:", "hf-hub:", "toy:")
_SETTING = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=.*", re.DOTALL)


# -- the --shortlist spec -------------------------------------------------------------------------

@dataclass(frozen=True)
class ShortlistSpec:
    """A parsed ``--shortlist``: the cheap scorer, its model, k, and its options (typed)."""

    scorer: str
    model: str | None
    pretrained: str | None
    k: int
    options: dict[str, Any] = field(default_factory=dict)

    def build(self, device: str = "auto", seed: int = 0) -> Scorer:
        """Load the cheap scorer."""
        cls = SCORERS.get(self.scorer)
        model = self.model or cls.default_model
        if model is None:
            raise HarnessError(f"--shortlist: scorer {self.scorer!r} has no default model; name one, "
                               f"e.g. {self.scorer}:MODEL:k={self.k}")
        try:
            return cls(ScorerConfig(model=model, pretrained=self.pretrained, device=device, seed=seed,
                                    options=dict(self.options)))
        except HarnessError as err:  # say which of the two scorers could not be built
            raise type(err)(f"--shortlist, cheap scorer {self.scorer}: {err}") from err


def parse_shortlist(spec: str) -> ShortlistSpec:
    """``SCORER[:MODEL[:PRETRAINED]]:k=N[:option=value...]`` -> ShortlistSpec, checked against the
    registry and the cheap scorer's declared options (nothing is loaded)."""
    fields = str(spec).strip().split(":")
    name, rest = fields[0].strip(), fields[1:]
    settings: dict[str, str] = {}
    while rest and _SETTING.fullmatch(rest[-1]):
        key, _, value = rest.pop().partition("=")
        settings[key.strip()] = value.strip()
    example = "clip:ViT-B-32:openai:k=10, clip:local-dir:/path/to/clip:k=10 or clip:toy:clip:k=5"
    if not name:
        raise HarnessError(f"--shortlist {spec!r}: start with the cheap scorer's name, e.g. {example}")
    if "k" not in settings:
        raise HarnessError(f"--shortlist {spec!r}: say how many candidates the cheap scorer keeps with k=N, "
                           f"e.g. {example}")
    try:
        k = Int(1)(settings.pop("k"))
    except ValueError as err:
        raise HarnessError(f"--shortlist {spec!r}: k {err}") from None
    cls = SCORERS.get(name)  # an unknown name is refused with the registered ones
    options = resolve_options(cls.OPTIONS, settings, f"shortlist scorer {name}", "--shortlist")
    model_text = ":".join(rest).strip()
    model: str | None = model_text or None
    pretrained: str | None = None
    if model_text and not model_text.startswith(OWN_WEIGHTS_PREFIXES) and ":" in model_text:
        model, pretrained = (part.strip() for part in model_text.split(":", 1))
    return ShortlistSpec(scorer=name, model=model, pretrained=pretrained or None, k=k, options=options)


# -- the arithmetic both paths share ---------------------------------------------------------------

def top_columns(row: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best entries of a score row, best first; ties go to the lower index."""
    return np.argsort(-np.asarray(row), kind="stable")[:k]


def below(floor: float, lowest_kept: float, cheap: np.ndarray | float) -> np.ndarray | float:
    """Where a candidate outside the shortlist goes: under ``floor`` (the lowest expensive score
    minus 1) by its cheap-score distance to the lowest shortlisted cheap score. Monotone in the
    cheap score, and equal cheap scores stay equal."""
    return floor - (lowest_kept - np.asarray(cheap, dtype=np.float64))


def combine_row(cheap: np.ndarray, columns: np.ndarray, expensive: np.ndarray) -> np.ndarray:
    """One image's composite row: expensive scores at ``columns`` (the shortlist), the rest below."""
    cheap = np.asarray(cheap, dtype=np.float64)
    expensive = np.asarray(expensive, dtype=np.float64)
    out = below(float(expensive.min()) - 1.0, float(cheap[columns].min()), cheap)
    out[columns] = expensive
    return out


def content_item(images: tuple[str, ...], texts: tuple[Text, ...]) -> Item:
    """An item named by what it holds (image refs and texts), so the same pairs asked for by
    another shortlist, cheap scorer or run are found in the store."""
    digest = hashlib.sha256(("\x1f".join(images) + "\x1e" + texts_hash(texts)).encode()).hexdigest()[:24]
    return Item(id=f"pairs/{digest}", images=images, texts=texts, truth=(0,) * len(images))


@dataclass(frozen=True)
class _Part:
    item: Item  # what the expensive scorer scores
    columns: np.ndarray | None  # the shortlisted columns of one image row; None: the whole item


def plan(item: Item, cheap: np.ndarray, k: int) -> list[_Part]:
    """The expensive scorer's work for one item (see the module docstring)."""
    if len(item.texts) <= k:
        return [_Part(content_item(item.images, item.texts), None)]
    parts = []
    for row, ref in zip(np.asarray(cheap), item.images):
        columns = top_columns(row, k)
        parts.append(_Part(content_item((ref,), tuple(item.texts[c] for c in columns)), columns))
    return parts


def combine(cheap: np.ndarray, parts: Sequence[_Part], scores: dict[str, np.ndarray]) -> np.ndarray:
    """An item's composite matrix from its cheap matrix and the expensive scores of its parts."""
    if len(parts) == 1 and parts[0].columns is None:
        return np.asarray(scores[parts[0].item.id], dtype=np.float64)
    return np.stack([combine_row(row, part.columns, scores[part.item.id][0]) for row, part in zip(cheap, parts)])


# -- the composite scorer --------------------------------------------------------------------------

class _BothTransforms:
    """The two scorers' image transforms applied to one decoded image (picklable for workers)."""

    def __init__(self, first: Callable[[Any], Any], second: Callable[[Any], Any]) -> None:
        self.first, self.second = first, second

    def __call__(self, image: Any) -> tuple[Any, Any]:
        return self.first(image), self.second(image)


def _stack(values: list[Any]) -> Any:
    import torch

    return torch.stack(values) if values and isinstance(values[0], torch.Tensor) else values


class ShortlistScorer(Scorer):
    """The expensive scorer on the cheap scorer's k best candidates per image (module docstring).

    Implements the Scorer contract itself (``score`` does everything in memory); the engine's
    ``evaluate`` instead goes through ``evaluate_shortlisted`` / ``harness.ranking``, which store the
    cheap scores under the cheap scorer's own key so that they are computed once.
    """

    family = "shortlist"

    def __init__(self, expensive: Scorer, cheap: Scorer, k: int) -> None:
        # no Scorer.__init__: the configuration and options are the expensive scorer's
        if k < 1:
            raise HarnessError(f"a shortlist keeps at least 1 candidate, got k={k}")
        self.expensive, self.cheap, self.k = expensive, cheap, int(k)
        self.config = expensive.config
        self.options = dict(expensive.options)
        self.expensive_items = 0  # items (shortlists) the expensive scorer scored, not read from the store

    def fingerprint(self) -> dict[str, Any]:
        return {"family": self.family, "k": self.k, "cheap": self.cheap.fingerprint(),
                "expensive": self.expensive.fingerprint()}

    def describe(self) -> dict[str, str]:
        return self.expensive.describe()

    def label(self, expensive_name: str) -> str:
        """The ``scorer`` column of result rows: both scorers and k, with portable model names
        (``diffusion+shortlist(clip:ViT-B-32:openai:k=10)``)."""
        cheap = self.cheap.describe()
        model = ":".join(p for p in (cheap.get("model", ""), cheap.get("pretrained", "")) if p)
        return f"{expensive_name}+shortlist({self.cheap.family}:{model}:k={self.k})"

    def row_details(self) -> dict[str, Any]:
        cheap = self.cheap.describe()
        return {"shortlist": {"scorer": self.cheap.family, "model": cheap.get("model", ""),
                              "pretrained": cheap.get("pretrained", ""), "k": self.k}}

    @property
    def device_name(self) -> str:
        return self.expensive.device_name

    @property
    def image_batch_size(self) -> int:
        return min(self.cheap.image_batch_size, self.expensive.image_batch_size)

    def image_transform(self) -> Callable[[Any], Any]:
        return _BothTransforms(self.cheap.image_transform(), self.expensive.image_transform())

    def add_images(self, refs: Sequence[str], pixels: Any) -> None:
        pairs = list(pixels)
        self.cheap.add_images(refs, _stack([p[0] for p in pairs]))
        self.expensive.add_images(refs, _stack([p[1] for p in pairs]))

    def has_image(self, ref: str) -> bool:
        return self.cheap.has_image(ref) and self.expensive.has_image(ref)

    def clear_images(self) -> None:
        self.cheap.clear_images()
        self.expensive.clear_images()

    def prepare(self, comparisons: Comparisons) -> None:
        self.cheap.prepare(comparisons)
        self.expensive.prepare(comparisons)

    def score(self, items: Sequence[Item]) -> list[np.ndarray]:
        cheap = self.cheap.score(items)
        plans = [plan(item, m, self.k) for item, m in zip(items, cheap)]
        unique = {p.item.id: p.item for parts in plans for p in parts}
        self.expensive_items += len(unique)
        scores = dict(zip(unique, self.expensive.score(list(unique.values()))))
        return [combine(m, parts, scores) for m, parts in zip(cheap, plans)]

    def report(self) -> dict[str, Any]:
        return {**self.expensive.report(),
                "shortlist": {"k": self.k, "expensive_items": self.expensive_items, **self.cheap.report()}}


def shortlist_k(scorer: Scorer) -> int:
    """The largest shortlist in a (possibly nested) shortlist scorer, 0 for any other scorer."""
    if isinstance(scorer, ShortlistScorer):
        return max(scorer.k, shortlist_k(scorer.cheap), shortlist_k(scorer.expensive))
    return 0


# -- the engine's path ------------------------------------------------------------------------------

class Candidates(Benchmark):
    """A benchmark's images under its own name and version, for items the engine makes up (a
    shortlist's parts, a ranking's queries): their scores are stored beside the benchmark's own."""

    subsets = ()

    def __init__(self, inner: Benchmark, comparisons: Comparisons, what: str) -> None:
        # no Benchmark.__init__: there are no options or subsets to check
        self.inner, self.what = inner, what
        self.name, self.version, self.comparisons = inner.name, inner.version, comparisons
        self.data_root, self.subset, self.options, self.skipped = inner.data_root, None, {}, {}

    @property
    def key(self) -> str:
        return f"{self.inner.key} ({self.what})"

    def items(self) -> list[Item]:
        raise HarnessError(f"{self.key}: its items are made by the engine")

    def load_image(self, ref: str) -> Any:
        return self.inner.load_image(ref)

    def metrics(self, items: Sequence[Item], scores: Sequence[np.ndarray], seed: int) -> list[MetricRow]:
        return []

    @classmethod
    def describe_data(cls, data_root: Any) -> list[DataRequirement]:
        return []


def score_candidates(scorer: Scorer, benchmark: Benchmark, comparisons: Comparisons, what: str,
                     store: ScoreStore, items: Sequence[Item], **kwargs: Any) -> tuple[dict[str, np.ndarray], set[str]]:
    """Score made-up items through the ordinary engine (chunks, store, resume, processes):
    (item id -> matrix, ids scored now). Duplicate ids are scored once."""
    from harness.runner import evaluate

    unique = list({item.id: item for item in items}.values())
    key = store.register_scorer(scorer.fingerprint())
    done = store.stored_ids(key, benchmark.name, benchmark.version, unique)
    result = evaluate(scorer, Candidates(benchmark, comparisons, what), store, items=unique, **kwargs)
    return {item.id: m for item, m in zip(result.items, result.scores)}, {i.id for i in unique} - done


def evaluate_shortlisted(scorer: ShortlistScorer, benchmark: Benchmark, store: ScoreStore,
                         items: Sequence[Item] | None = None, seed: int = 0, **kwargs: Any) -> Evaluation:
    """``evaluate`` for a shortlist scorer on an item benchmark: the cheap scorer's scores (stored
    under its own key), then the expensive scorer on the shortlists, then the benchmark's metrics
    on the composite matrices."""
    from harness.runner import Evaluation

    items = list(benchmark.items() if items is None else items)
    key = store.register_scorer(scorer.fingerprint())
    cheap, cheap_now = score_candidates(scorer.cheap, benchmark, benchmark.comparisons, "cheap scorer", store,
                                        items, seed=seed, **kwargs)
    plans = [plan(item, cheap[item.id], scorer.k) for item in items]
    parts = [p.item for parts in plans for p in parts]
    expensive, expensive_now = score_candidates(scorer.expensive, benchmark, benchmark.comparisons,
                                                f"shortlist k={scorer.k}", store, parts, seed=seed, **kwargs)
    scorer.expensive_items += len(expensive_now)
    scores = [combine(cheap[item.id], parts, expensive) for item, parts in zip(items, plans)]
    now = {item.id for item, parts in zip(items, plans)
           if item.id in cheap_now or any(p.item.id in expensive_now for p in parts)}
    # the composite matrices are made from the two scorers' stored scores; a copy under this
    # scorer's own key is what harness compare reads for the run
    if distributed.world()[0] == 0:
        store.put(key, benchmark.name, benchmark.version, [(i, s) for i, s in zip(items, scores) if s is not None])
    rows = benchmark.metrics(items, scores, seed)
    return Evaluation(items=items, scores=scores, rows=rows, scorer_key=key, scored_now=len(now))

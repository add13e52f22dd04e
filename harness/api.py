"""The two plug-in contracts (Scorer, Benchmark) and the data they exchange (Item, MetricRow).

A benchmark yields items of I images x C texts; a scorer turns each item into an I x C matrix of
scores (higher = better match); the benchmark turns the matrices into metric rows. The engine in
``harness.runner`` knows only these types.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Union

from harness.options import Option, resolve_options

if TYPE_CHECKING:  # keep `harness ls` free of numpy/torch/PIL imports
    import numpy as np
    from PIL import Image


@dataclass(frozen=True)
class Prompts:
    """One candidate described by several prompts, e.g. a class in zero-shot classification
    ("a photo of a dog.", "a drawing of a dog.", ...). Each scorer says how it compares an image
    with an ensemble; CLIP uses the normalised mean of the prompts' normalised embeddings."""

    label: str
    texts: tuple[str, ...]


Text = Union[str, Prompts]
NO_TEXT = -1  # in Item.truth: no candidate text belongs to this image


@dataclass(frozen=True)
class Item:
    """One decision: ``images`` (refs the benchmark can decode) against ``texts``.

    ``truth[i]`` is the index of the text that belongs to image ``i`` (Winoground: (0, 1);
    ARO/SugarCrepe: one image, one index), or ``NO_TEXT`` (-1) for an image no candidate describes
    (the negative image of a text-to-image item, as in SVO-Probes). Image refs are opaque strings, unique within a
    benchmark, that ``Benchmark.load_image`` decodes; scorers use them as cache keys. Items that
    share the same candidates (zero-shot classes) should share one ``texts`` tuple object, which
    lets scorers and the store cache per tuple.

    A *text-query* item compares texts with texts (SugarCrepe++'s text-only task): it has
    ``query_texts`` in place of images (``images=()``), ``truth[q]`` is the index of the text that
    belongs to query text ``q``, and its score matrix is len(query_texts) x len(texts), the
    scorer's text-to-text similarity. Only scorers with ``Scorer.compares_texts`` score it.
    """

    id: str
    images: tuple[str, ...]
    texts: tuple[Text, ...]
    truth: tuple[int, ...]
    meta: Mapping[str, Any] = field(default_factory=dict)
    query_texts: tuple[str, ...] = ()

    @property
    def matrix_rows(self) -> int:
        """Rows of the item's score matrix: its query texts, else its images."""
        return len(self.query_texts) if self.query_texts else len(self.images)

    def __post_init__(self) -> None:
        if self.query_texts and self.images:
            raise ValueError(f"item {self.id}: a text-query item has no images, got {len(self.images)}")
        if len(self.truth) != self.matrix_rows:
            what = "query texts" if self.query_texts else "images"
            raise ValueError(f"item {self.id}: truth has {len(self.truth)} entries for {self.matrix_rows} {what}")
        for t in self.truth:
            if t != NO_TEXT and not 0 <= t < len(self.texts):
                raise ValueError(f"item {self.id}: truth index {t} outside 0..{len(self.texts) - 1} "
                                 f"(or {NO_TEXT}: no text belongs to that image)")


@dataclass(frozen=True)
class MetricRow:
    """One number of a benchmark's result. ``value`` and the interval are percentages.

    The per-item fields let ``harness compare`` pair two runs item by item. ``item_ids`` are the
    ids of the items the row aggregates (or of its units where a unit is not one item, such as a
    pair of items or one query of an item: ``harness.metrics.unit_id``) and ``item_values`` one
    number per item (1/0 for a binary outcome): the row's value is 100 x their mean, or, when ``item_groups`` names each item's group
    (a macro-averaged row), 100 x the mean over groups of each group's mean. They stay in memory:
    no CSV file holds them. Rows made by the helpers in ``harness.metrics`` fill them when given
    ``ids=``.
    """

    subset: str  # "all", a benchmark subset, or a breakdown containing "field=value"
    metric: str
    value: float
    n: int
    ci_low: float | None = None
    ci_high: float | None = None
    details: Mapping[str, Any] | None = None  # merged into the benchmark's details for this row
    item_ids: tuple[str, ...] | None = field(default=None, repr=False, compare=False)
    item_values: tuple[float, ...] | None = field(default=None, repr=False, compare=False)
    item_groups: tuple[str, ...] | None = field(default=None, repr=False, compare=False)

    @property
    def per_item(self) -> bool:
        """Whether the row carries the per-item values that a paired comparison needs."""
        return self.item_ids is not None and self.item_values is not None


def missing_file(path: Path, what: str, how_to_get: str) -> str:
    """Why a benchmark file is absent ("" when it is there), for ``Benchmark.items_of_subsets``."""
    return "" if Path(path).is_file() else f"{what} {path} not found. {how_to_get}"


@dataclass(frozen=True)
class DataRequirement:
    """A file or folder a benchmark needs, whether it was found, and how to obtain it."""

    what: str
    path: str
    found: bool
    how_to_get: str


# Which comparisons a metric needs: the whole matrix (Winoground), or only the best text per image
# (ARO, SugarCrepe, zero-shot). Scorers that are expensive per pair may exploit the latter.
# "ranking" (retrieval): every image of a gallery against every text of it, in both directions; the
# engine then ranks (harness.ranking) instead of scoring item by item. A ranking benchmark's items
# have one image each, and all their texts are that image's captions (its positives); the items
# that share ``meta["subset"]`` form one gallery.
Comparisons = Literal["matrix", "text_argmax", "ranking"]


class Benchmark(ABC):
    """A benchmark adapter. Subclasses set the class attributes and implement the methods.

    ``OPTIONS`` declares the options a user may set (``--bench-opt key=value``); the constructor
    receives them as keyword arguments and ``self.options`` holds every one, typed, defaults filled.
    """

    name: ClassVar[str]
    version: ClassVar[str]  # bump whenever prompts, filters, data handling or the metric change
    subsets: ClassVar[tuple[str, ...]] = ()
    comparisons: ClassVar[Comparisons] = "matrix"
    OPTIONS: ClassVar[tuple[Option, ...]] = ()
    # Keys of ``details()`` that only say how many items were drawn (shapes' ``n``): ``harness
    # compare`` pairs two runs that differ in them on the items they share. A difference in any
    # other key (a data source, an image size) refuses the comparison.
    scope_details: ClassVar[tuple[str, ...]] = ()

    def __init__(self, data_root: Path, subset: str | None = None, **options: Any) -> None:
        """``subset`` None means every subset whose data is present; the others are listed in
        ``skipped`` with the reason. Item ids are unique across subsets, so a one-subset run and
        a whole-benchmark run share stored scores."""
        self.validate_subset(subset)
        self.options = self.resolve_options(options)
        self.data_root = Path(data_root)
        self.subset = subset
        self.skipped: dict[str, str] = {}  # subset -> why it was left out (missing data)

    @classmethod
    def resolve_options(cls, given: Mapping[str, Any] | None) -> dict[str, Any]:
        """Every declared option, typed; refuses unknown names and bad values (HarnessError)."""
        return resolve_options(cls.OPTIONS, given, f"benchmark {cls.name}", "--bench-opt")

    @classmethod
    def validate_subset(cls, subset: str | None) -> None:
        from harness.errors import UnknownNameError
        from harness.registry import unknown_name_message

        if subset is not None and subset not in cls.subsets:
            raise UnknownNameError(unknown_name_message(f"{cls.name} subset", subset, list(cls.subsets)))

    def items_of_subsets(self, read: Callable[[str], list[Item]], missing: Callable[[str], str], what: str,
                         subsets: Sequence[str] | None = None) -> list[Item]:
        """The items of the subset asked for, or of every subset whose data is there (the others are
        noted in ``skipped``): the loop most adapters share. ``missing(subset)`` says why a subset's
        data is absent ("" when it is there); ``read(subset)`` gives its items. An asked-for subset
        that is absent, or no subset at all, raises MissingDataError naming what was looked for."""
        from harness.errors import MissingDataError

        items: list[Item] = []
        for subset in [self.subset] if self.subset else list(subsets or self.subsets):
            why = missing(subset)
            if why:
                if self.subset:
                    raise MissingDataError(f"{what} {subset}: {why}")
                self.skipped[subset] = why
                continue
            items += read(subset)
        if not items:
            raise MissingDataError(f"{what} data not found:\n  - " + "\n  - ".join(
                f"{s}: {why}" for s, why in self.skipped.items()))
        return items

    @property
    def key(self) -> str:
        """How a user names what this object evaluates: ``name`` or ``name:subset``."""
        return f"{self.name}:{self.subset}" if self.subset else self.name

    @abstractmethod
    def items(self) -> list[Item]:
        """All items in a fixed order. Raise MissingDataError when the data is absent."""

    @abstractmethod
    def load_image(self, ref: str) -> Image.Image:
        """Decode one image. Runs in data-loader worker processes, so keep state picklable."""

    @abstractmethod
    def metrics(self, items: Sequence[Item], scores: Sequence[np.ndarray | None], seed: int) -> list[MetricRow]:
        """Metric rows from each item's I x C score matrix (``seed`` drives the bootstrap).

        A text-query item's matrix is ``None`` when the scorer cannot compare texts with texts
        (``Scorer.compares_texts`` False): the runner never gave it to the scorer. A metric that
        needs such items is then written as a row that says so (``harness.metrics.not_computed_row``:
        value NaN, n 0, ``details["not_computed"]`` the reason) instead of failing the run."""

    def outcome(self, item: Item, scores: np.ndarray) -> dict[str, Any]:
        """Per-item results saved beside the scores for people who dig (e.g. {"text": True})."""
        return {}

    def details(self) -> dict[str, Any]:
        """Facts that identify what was evaluated (data source, file hashes), saved in each row."""
        return {}

    @classmethod
    @abstractmethod
    def describe_data(cls, data_root: Path) -> list[DataRequirement]:
        """What this benchmark reads, where it looks, and what is present."""

    @classmethod
    def download(cls, data_root: Path) -> list[str]:
        """Fetch what can be fetched into ``data_root`` (``harness data --download NAME``, the only
        time the harness goes online); returns what was done, line by line. Benchmarks whose data
        needs a form, a login or a manual step keep this default, which says how to get it."""
        from harness.errors import HarnessError

        hints = dict.fromkeys(r.how_to_get for r in cls.describe_data(Path(data_root)) if r.how_to_get)
        raise HarnessError(f"{cls.name} cannot be downloaded by the harness; get it by hand:\n  - "
                           + "\n  - ".join(hints or ["see `harness data`"]))

    def ranking_metrics(self, items: Sequence[Item], rankings: Sequence[np.ndarray], seed: int) -> list[MetricRow]:
        """Metric rows of a ``comparisons = "ranking"`` benchmark, which the engine calls instead of
        ``metrics``. ``rankings[i]`` is item i's record (``harness.ranking.RECORD_FIELDS``), one
        entry per query: entry 0 ranks the gallery's texts for the item's image, entry 1 + j the
        gallery's images for its text j. ``above`` / ``tied`` count the negatives that score
        above / exactly level with the query's best positive, so a positive is within the first k
        iff ``above + tied < k`` (ties against it) or ``above < k`` (ties for it)."""
        raise NotImplementedError(f"benchmark {self.name} does not rank (comparisons={self.comparisons!r})")


@dataclass
class ScorerConfig:
    """What every scorer is built from. ``options`` holds the scorer's declared options (its
    ``OPTIONS``); the ones not given take their defaults."""

    model: str
    pretrained: str | None = None
    device: str = "auto"  # "auto" = cuda when available, else cpu
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)


class Scorer(ABC):
    """Turns items into score matrices. Free to cache: the runner calls it chunk by chunk.

    Protocol per run: the runner streams each image the items need, decoded and passed through
    ``image_transform`` in worker processes, into ``add_images`` in batches of
    ``image_batch_size`` (once per image unless the scorer no longer ``has_image`` it), then calls
    ``score`` on a chunk of items whose images were added.

    ``OPTIONS`` declares what ``--opt key=value`` may set; ``self.options`` holds every one,
    typed, defaults filled. ``default_model`` is the ``--model`` used when none is given.
    """

    family: ClassVar[str]
    OPTIONS: ClassVar[tuple[Option, ...]] = ()
    default_model: ClassVar[str | None] = None
    # A dual encoder: scores are dot products of L2-normalised embeddings that ``embed_images`` and
    # ``embed_texts`` return, so a ranking benchmark is one matrix product (harness.ranking).
    embeds: ClassVar[bool] = False
    # Whether ``score`` accepts text-query items (``Item.query_texts``) and returns their
    # text-to-text similarities. A scorer without a text-only score (the diffusion score needs an
    # image) leaves it False: the runner then keeps such items from it and the benchmark reports
    # the metrics that need them as not computed.
    compares_texts: ClassVar[bool] = False

    def __init__(self, config: ScorerConfig) -> None:
        self.config = config
        self.options = self.resolve_options(config.options)

    @classmethod
    def resolve_options(cls, given: Mapping[str, Any] | None) -> dict[str, Any]:
        """Every declared option, typed; refuses unknown names and bad values (HarnessError)."""
        return resolve_options(cls.OPTIONS, given, f"scorer {cls.family}", "--opt")

    @classmethod
    def download(cls, spec: str) -> list[str]:
        """Fetch a model's weights into the local caches (``harness data --download SCORER:SPEC``,
        the only time the harness goes online); returns what was done, line by line."""
        from harness.errors import HarnessError

        raise HarnessError(f"scorer {cls.family} does not download models; put its weights where `harness ls "
                           f"{cls.family}` says and pass --model")

    @property
    def image_batch_size(self) -> int:
        """Images per ``add_images`` call: the scorer's ``batch_size`` option where it has one."""
        return int(self.options.get("batch_size") or 32)

    @abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """Everything that changes scores (family, model, weights hash, options); keys the store."""

    @abstractmethod
    def describe(self) -> dict[str, str]:
        """{"model": ..., "pretrained": ...} as result rows should show them."""

    @abstractmethod
    def image_transform(self) -> Callable[[Image.Image], Any]:
        """PIL image -> model input; runs in data-loader workers."""

    @abstractmethod
    def add_images(self, refs: Sequence[str], pixels: Any) -> None:
        """Encode a batch of transformed images (stacked by the data loader) and keep them."""

    @abstractmethod
    def has_image(self, ref: str) -> bool: ...

    @abstractmethod
    def score(self, items: Sequence[Item]) -> list[np.ndarray]:
        """One float array of shape (len(item.images), len(item.texts)) per item; for a
        text-query item (only given when ``compares_texts``), (len(item.query_texts), len(item.texts))."""

    def clear_images(self) -> None:
        """Forget encoded images (the runner calls this between benchmarks: refs are per benchmark)."""

    def embed_images(self, refs: Sequence[str]) -> np.ndarray:
        """(len(refs), d) float32 L2-normalised embeddings of images already added (``embeds`` only)."""
        raise NotImplementedError(f"scorer {self.family} has no embeddings (embeds = False)")

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), d) float32 L2-normalised text embeddings (``embeds`` only); the score of an
        image and a text is the dot product of their embeddings, equal to ``score``'s up to rounding."""
        raise NotImplementedError(f"scorer {self.family} has no embeddings (embeds = False)")

    def prepare(self, comparisons: Comparisons) -> None:
        """Told before scoring which comparisons the benchmark's metric makes; a scorer that is
        expensive per pair may then save work (e.g. only the best text per image matters)."""

    def report(self) -> dict[str, Any]:
        """Counts worth keeping with a run's configuration (e.g. network passes used)."""
        return {}

    @property
    def device_name(self) -> str:
        return "cpu"

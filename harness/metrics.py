"""Metric helpers shared by benchmark adapters: the strict decision rules (one-image argmax,
Winoground's 2x2), percentile bootstrap intervals and grouped accuracies."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence

import numpy as np

from harness.api import Item, MetricRow
from harness.options import Choice, Option

BOOTSTRAP_RESAMPLES = 1000
CONFIDENCE = 0.95


TIE_RULES = ("strict", "argmax")


def ties_option(official: str) -> Option:
    """The one way a benchmark offers its reference code's tie rule: ``--bench-opt ties=strict``
    (the default, a tie is wrong, as everywhere in the harness) or ``ties=official``; ``official``
    says what the reference code does with a tie."""
    return Option("ties", Choice("strict", "official"), "strict",
                  f"strict: a tie is wrong (the harness's rule); official: {official}")


def strictly_first(scores: np.ndarray, truth: int) -> bool:
    """The correct text of a one-image item (row 0 of its matrix) scores strictly higher than every
    other: a tie is wrong (an argmax would send it to the lowest index). The harness's rule."""
    return wins(np.asarray(scores)[0], truth, "strict")


def wins(values: np.ndarray, truth: int, tie_rule: str = "strict") -> bool:
    """Whether candidate ``truth`` wins among ``values`` (one score per candidate).

    ``strict``: it scores strictly higher than every other, so a tie is wrong (the harness's rule).
    ``argmax``: ``np.argmax`` picks it, so a tie goes to the lowest tied index; benchmarks whose
    official code decides by argmax with the true candidate first (DiffusionITM's GDBench) count
    a tie as right under this rule."""
    values = np.asarray(values).ravel()
    if tie_rule == "argmax":
        return int(np.argmax(values)) == truth
    if tie_rule != "strict":
        raise ValueError(f"unknown tie rule {tie_rule!r}; expected one of {', '.join(TIE_RULES)}")
    return bool(values[truth] > np.delete(values, truth).max())


def tied_at_top(values: np.ndarray) -> bool:
    """Whether the best score is shared by several candidates (where tie rules disagree)."""
    values = np.asarray(values).ravel()
    return bool((values == values.max()).sum() > 1)


def winoground_outcome(scores: np.ndarray) -> dict[str, bool]:
    """Text, image and group correctness of one 2x2 matrix (rows = images, columns = captions), by
    Winoground's strict rule (Thrush et al. 2022): a tie is wrong.
    text: s(c0,i0) > s(c1,i0) and s(c1,i1) > s(c0,i1); image: s(c0,i0) > s(c0,i1) and
    s(c1,i1) > s(c1,i0); group: both."""
    s = np.asarray(scores)
    text = bool(s[0, 0] > s[0, 1] and s[1, 1] > s[1, 0])
    image = bool(s[0, 0] > s[1, 0] and s[1, 1] > s[0, 1])
    return {"text": text, "image": image, "group": text and image}


def winoground_correct(scores: Sequence[np.ndarray]) -> dict[str, list[bool]]:
    """``winoground_outcome`` of many 2x2 matrices, by metric: text, image and group -> one bool each."""
    outcomes = [winoground_outcome(s) for s in scores]
    return {metric: [o[metric] for o in outcomes] for metric in ("text", "image", "group")}


def by_subset(
    items: Sequence[Item], scores: Sequence[np.ndarray], subsets: Sequence[str]
) -> list[tuple[str, list[Item], list[np.ndarray]]]:
    """(subset, its items, their scores) for each of ``subsets`` present in ``item.meta["subset"]``."""
    out = []
    for subset in subsets:
        chosen = [(item, s) for item, s in zip(items, scores) if item.meta["subset"] == subset]
        if chosen:
            out.append((subset, [item for item, _ in chosen], [s for _, s in chosen]))
    return out


def bootstrap_ci(
    statistic: Callable[[np.ndarray], np.ndarray],
    n: int,
    seed: int,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over ``n`` items.

    ``statistic`` takes a (b, n) array of resampled item indices and returns b values. Resamples
    are drawn in chunks so memory stays bounded for large benchmarks (COCO-Order: 25k items).
    """
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, 250_000 // n))
    values = []
    for start in range(0, resamples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, resamples - start), n))
        values.append(np.asarray(statistic(idx), dtype=float))
    dist = np.concatenate(values)
    alpha = (1 - CONFIDENCE) / 2
    low, high = np.quantile(dist, [alpha, 1 - alpha])
    return float(low), float(high)


# A row whose unit is not one item names its units by the items behind them: several items that
# count as one ("controlled-a/3+controlled-a/7", a What'sUp pair) or one part of an item
# ("coco/17|caption 2", one caption query of a retrieval item). ``harness compare`` treats these
# ids like item ids; ``unit_items`` gives the report the items to show for one.
UNIT_JOIN = "+"
PART_MARK = "|"


def unit_id(item_ids: Sequence[str], part: str | None = None) -> str:
    """The id of a unit made of ``item_ids`` (in a fixed order), or of ``part`` of one item."""
    if part is not None:
        if len(item_ids) != 1:
            raise ValueError(f"a part names one item, got {len(item_ids)}")
        return f"{item_ids[0]}{PART_MARK}{part}"
    return UNIT_JOIN.join(str(i) for i in item_ids)


def unit_items(unit: str) -> list[str]:
    """The item ids a unit id names (an item id names itself, unless it holds '+' or '|')."""
    return [piece.split(PART_MARK, 1)[0] for piece in str(unit).split(UNIT_JOIN)]


def _ids(ids: Sequence[str] | None, n: int, what: str) -> tuple[str, ...] | None:
    if ids is None:
        return None
    ids = tuple(str(i) for i in ids)
    if len(ids) != n:
        raise ValueError(f"{what}: {len(ids)} ids for {n} items")
    return ids


def accuracy_row(subset: str, metric: str, correct: np.ndarray, seed: int,
                 ids: Sequence[str] | None = None) -> MetricRow:
    """Percentage of True in ``correct`` with its bootstrap interval. With ``ids`` (one per item,
    in the order of ``correct``) the row keeps each item's outcome for paired comparisons."""
    correct = np.asarray(correct, dtype=float)
    n = len(correct)
    value = 100.0 * correct.mean() if n else float("nan")
    low, high = bootstrap_ci(lambda idx: 100.0 * correct[idx].mean(axis=1), n, seed)
    return MetricRow(subset=subset, metric=metric, value=value, n=n, ci_low=low, ci_high=high,
                     item_ids=_ids(ids, n, f"{subset}/{metric}"), item_values=tuple(correct.tolist()))


def not_computed_row(subset: str, metric: str, why: str) -> MetricRow:
    """A metric this run could not compute (e.g. a text-to-text metric with a scorer that has no
    text-only score): value NaN, n 0, no interval, and ``details["not_computed"]`` saying why."""
    return MetricRow(subset=subset, metric=metric, value=float("nan"), n=0, details={"not_computed": why})


def grouped_accuracy_rows(
    outcomes: Mapping[str, Sequence[bool]],
    groups: Mapping[str, Sequence[object]],
    seed: int,
    ids: Sequence[str] | None = None,
) -> list[MetricRow]:
    """Accuracy of each outcome overall ("all") and per value of each grouping field.

    ``outcomes`` maps a metric name to one bool per item; ``groups`` maps a field name to one
    value per item. Breakdown subsets are written ``field=value``. ``ids``: as for accuracy_row.
    """
    arrays = {metric: np.asarray(v, dtype=bool) for metric, v in outcomes.items()}
    id_array = None if ids is None else np.asarray([str(i) for i in ids], dtype=object)
    rows = [accuracy_row("all", metric, correct, seed, ids) for metric, correct in arrays.items()]
    for field, values in groups.items():
        values = np.asarray([str(v) for v in values])
        for value in sorted(set(values.tolist())):
            mask = values == value
            chosen = None if id_array is None else id_array[mask].tolist()
            for metric, correct in arrays.items():
                rows.append(accuracy_row(f"{field}={value}", metric, correct[mask], seed, chosen))
    return rows


def tagged_accuracy_rows(
    outcomes: Mapping[str, Sequence[bool]],
    tags: Sequence[Collection[str] | None],
    field: str,
    seed: int,
    order: Sequence[str] | None = None,
    ids: Sequence[str] | None = None,
) -> list[MetricRow]:
    """Accuracy of each outcome per tag when an item may carry several tags (or none).

    ``tags`` holds one collection of tags per item; an item counts towards every tag it carries,
    and an item whose tags are unknown (None) towards none. Rows are named ``field=tag``, in
    ``order`` (default: sorted), for the tags at least one item carries. ``ids``: as for
    ``accuracy_row``, one per item.
    """
    arrays = {metric: np.asarray(v, dtype=bool) for metric, v in outcomes.items()}
    present = {t for item_tags in tags if item_tags is not None for t in item_tags}
    id_array = np.asarray(ids, dtype=object) if ids is not None else None
    rows = []
    for tag in [t for t in (order or sorted(present)) if t in present]:
        mask = np.array([item_tags is not None and tag in item_tags for item_tags in tags], dtype=bool)
        for metric, correct in arrays.items():
            chosen = list(id_array[mask]) if id_array is not None else None
            rows.append(accuracy_row(f"{field}={tag}", metric, correct[mask], seed, chosen))
    return rows


def macro_accuracy_row(
    subset: str, metric: str, groups: Sequence[np.ndarray], seed: int, resamples: int = BOOTSTRAP_RESAMPLES,
    ids: Sequence[Sequence[str]] | None = None, names: Sequence[str] | None = None,
) -> MetricRow:
    """Mean over groups of each group's accuracy (ARO's macro accuracy, SugarCrepe's mean).

    The interval resamples items within each group (a stratified bootstrap), so no group can
    vanish from a resample. ``n`` counts items over all groups. With ``ids`` (one sequence of item
    ids per group, parallel to ``groups``) the row keeps each item's outcome and group (named by
    ``names``, else by the group's position) for paired comparisons.
    """
    names = [str(k) for k in range(len(groups))] if names is None else [str(name) for name in names]
    if (ids is not None and len(ids) != len(groups)) or len(names) != len(groups):
        raise ValueError(f"{subset}/{metric}: ids and names must have one entry per group")
    kept = [k for k, g in enumerate(groups) if len(g)]
    groups = [np.asarray(groups[k], dtype=float) for k in kept]
    if not groups:
        return MetricRow(subset=subset, metric=metric, value=float("nan"), n=0)
    item_values = tuple(v for g in groups for v in g.tolist())
    item_groups = tuple(names[k] for k, g in zip(kept, groups) for _ in range(len(g)))
    item_ids = None if ids is None else _ids([i for k in kept for i in ids[k]], len(item_values), f"{subset}/{metric}")
    value = 100.0 * float(np.mean([g.mean() for g in groups]))
    rng = np.random.default_rng(seed)
    means = np.zeros(resamples)
    for g in groups:
        n = len(g)
        chunk = max(1, min(resamples, 250_000 // n))
        for start in range(0, resamples, chunk):
            stop = min(start + chunk, resamples)
            means[start:stop] += g[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    dist = 100.0 * means / len(groups)
    alpha = (1 - CONFIDENCE) / 2
    low, high = np.quantile(dist, [alpha, 1 - alpha])
    return MetricRow(subset=subset, metric=metric, value=value, n=int(sum(len(g) for g in groups)),
                     ci_low=float(low), ci_high=float(high), item_ids=item_ids, item_values=item_values,
                     item_groups=item_groups)


def value_from_items(values: Sequence[float], groups: Sequence[str] | None = None) -> float:
    """A row's value from its per-item values (see ``MetricRow``): 100 x their mean, or with
    ``groups`` 100 x the mean over groups of each group's mean."""
    values = np.asarray(values, dtype=float)
    if not len(values):
        return float("nan")
    if groups is None:
        return 100.0 * float(values.mean())
    labels = np.asarray(groups, dtype=object)
    return 100.0 * float(np.mean([values[labels == g].mean() for g in dict.fromkeys(labels.tolist())]))


RANKING_TIES = ("strict", "lenient")


def recall_hits(above: np.ndarray, tied: np.ndarray, k: int, ties: str = "strict") -> np.ndarray:
    """Per query of a ranking, whether a positive is among the first ``k`` candidates, from how
    many negatives score above its best positive (``above``) and exactly level with it (``tied``).

    ``strict`` puts the tied negatives ahead of the positive (a tie is wrong, as everywhere in this
    harness); ``lenient`` puts them behind it. An argmax or ``torch.topk`` order lies in between:
    it depends on where the tied candidates happen to sit.
    """
    if ties not in RANKING_TIES:
        raise ValueError(f"ties must be one of {RANKING_TIES}, got {ties!r}")
    ahead = np.asarray(above) + (np.asarray(tied) if ties == "strict" else 0)
    return ahead < k

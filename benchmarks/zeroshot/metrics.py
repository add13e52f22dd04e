"""Zero-shot classification metrics: top-1, top-5 and mean per-class recall, ties counted as wrong."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from harness.api import MetricRow
from harness.metrics import accuracy_row, bootstrap_ci


def others_at_least(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per row of an (n, C) score array: how many other classes score >= the true class."""
    scores = np.asarray(scores, dtype=float)
    true = scores[np.arange(len(truth)), truth]
    return (scores >= true[:, None]).sum(axis=1) - 1


def mean_per_class_recall_row(subset: str, correct: np.ndarray, truth: np.ndarray, n_classes: int,
                              seed: int, ids: Sequence[str] | None = None) -> MetricRow:
    """Top-1 recall of each class that has images, averaged over those classes, with its bootstrap
    interval (a resample that misses a class averages over the classes it has). With ``ids`` the
    row keeps each item's outcome and class (its group) for paired comparisons."""
    correct = np.asarray(correct, dtype=float)
    truth = np.asarray(truth, dtype=np.int64)

    def statistic(idx: np.ndarray) -> np.ndarray:
        b = idx.shape[0]
        # one bincount over all resamples: resample r's class c lands in bin r * n_classes + c
        bins = (truth[idx] + n_classes * np.arange(b)[:, None]).ravel()
        counts = np.bincount(bins, minlength=b * n_classes).reshape(b, n_classes)
        hits = np.bincount(bins, weights=correct[idx].ravel(), minlength=b * n_classes).reshape(b, n_classes)
        present = counts > 0
        recall = np.divide(hits, counts, out=np.zeros_like(hits), where=present)
        return 100.0 * recall.sum(axis=1) / present.sum(axis=1)

    n = len(correct)
    value = float(statistic(np.arange(n)[None])[0]) if n else float("nan")
    low, high = bootstrap_ci(statistic, n, seed)
    return MetricRow(subset=subset, metric="mean_per_class_recall", value=value, n=n, ci_low=low, ci_high=high,
                     details={"classes_with_images": int(len(np.unique(truth)))},
                     item_ids=None if ids is None else tuple(str(i) for i in ids),
                     item_values=tuple(correct.tolist()), item_groups=tuple(str(t) for t in truth.tolist()))


def classification_rows(subset: str, scores: np.ndarray, truth: np.ndarray, seed: int,
                        details: dict[str, Any] | None = None, ids: Sequence[str] | None = None) -> list[MetricRow]:
    """top1, top5 (with at least 5 classes) and mean_per_class_recall of an (n, C) score array;
    ``ids`` (one per image) as for ``harness.metrics.accuracy_row``."""
    scores = np.asarray(scores, dtype=float)
    truth = np.asarray(truth, dtype=np.int64)
    n_classes = scores.shape[1]
    details = {**(details or {}), "n_classes": n_classes}
    ahead = others_at_least(scores, truth)
    rows = [accuracy_row(subset, "top1", ahead < 1, seed, ids)]
    if n_classes >= 5:
        rows.append(accuracy_row(subset, "top5", ahead < 5, seed, ids))
    rows.append(mean_per_class_recall_row(subset, ahead < 1, truth, n_classes, seed, ids))
    return [replace(r, details={**details, **(r.details or {})}) for r in rows]



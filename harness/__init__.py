"""Compositional image-text evaluation: scorers x benchmarks -> tidy result rows.

Importing this package is cheap (no torch); the heavy modules load on first use.
``from harness import score`` gives ``harness.scoring.score``: images x texts -> a numpy array,
for any registered scorer.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["score"]


def __getattr__(name: str) -> Any:
    # `score` is looked up on first use, so `import harness` stays free of numpy and torch
    if name == "score":
        from harness.scoring import score

        return score
    raise AttributeError(f"module 'harness' has no attribute {name!r}")

"""Compositional image-text evaluation: scorers x benchmarks -> tidy result rows.

Importing this package is cheap (no torch); the heavy modules load on first use.
"""

__version__ = "0.1.0"

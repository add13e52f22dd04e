"""Errors a user can act on. The CLI prints their message without a traceback and exits with 2.

Every message names the bad value, what was tried or what is valid, and how to fix it.
"""

from __future__ import annotations


class HarnessError(Exception):
    """Base class for problems caused by input (names, files, data, weights), not by bugs."""


class UnknownNameError(HarnessError, KeyError):
    """A scorer, benchmark or subset name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DuplicateNameError(HarnessError, ValueError):
    """A registry name registered twice."""


class MissingDataError(HarnessError, FileNotFoundError):
    """A benchmark's files are not where they were looked for."""


class MissingWeightsError(HarnessError, FileNotFoundError):
    """Model weights could not be found locally (and the hub is not reachable)."""


class CheckpointMismatchError(HarnessError, ValueError):
    """A checkpoint whose tensors do not fit the chosen architecture."""


class ImageDecodeError(HarnessError, ValueError):
    """An image file that cannot be read or decoded."""


class NonFiniteScoreError(HarnessError, FloatingPointError):
    """A scorer produced NaN or infinite scores."""


class BadRecordError(HarnessError, ValueError):
    """A data record that lacks a field or holds a value the benchmark cannot use."""

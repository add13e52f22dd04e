"""Default locations, importable without torch (the CLI's start-up stays fast)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DATA_ROOT = "data"  # relative to the working directory, unless $HARNESS_DATA is set
DEFAULT_RESULTS_DIR = "results"


def default_data_root() -> Path:
    return Path(os.environ.get("HARNESS_DATA", DEFAULT_DATA_ROOT)).expanduser()

"""Where benchmarks published on the Hugging Face hub are found offline: the hub cache
(``HF_HUB_CACHE``), whose snapshots hold a dataset repository's files as its authors uploaded
them. Shared by every adapter that accepts a hub snapshot (Winoground, SPEC, ...)."""

from __future__ import annotations

import os
from pathlib import Path


def hub_cache_dir() -> str:
    """The hub cache folder this process would read (``HF_HUB_CACHE`` wins over the default)."""
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE


def hub_snapshot(repo_id: str, tried: list[str]) -> Path | None:
    """The newest cached snapshot of the dataset repository ``repo_id``, without the network;
    None (and a line appended to ``tried`` saying where it looked) when there is none."""
    from huggingface_hub import snapshot_download

    cache = hub_cache_dir()
    try:
        path = snapshot_download(repo_id, repo_type="dataset", local_files_only=True, cache_dir=cache)
    except Exception:
        tried.append(f"the Hugging Face hub cache {cache} (no snapshot of {repo_id})")
        return None
    return Path(path)

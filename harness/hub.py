"""The loading and downloading policy: runs read only local files and caches; downloading is an
explicit step (``harness data --download NAME``).

Without this, a missing dataset on a machine with no network costs tens of seconds of hub retries
and a screen of retry noise before the error. ``local_only()`` puts huggingface_hub and datasets in
their offline mode for the duration of a run (both the environment variables, for worker
processes, and the module flags, which are read at import time), so a miss fails at once with the
harness's own message. ``online()`` does the opposite, for the download command.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


@contextmanager
def _hub_mode(offline: bool) -> Iterator[None]:
    saved_env = {name: os.environ.get(name) for name in _ENV}
    saved_flags = []
    for module_name, attr in (("huggingface_hub.constants", "HF_HUB_OFFLINE"), ("datasets.config", "HF_HUB_OFFLINE"),
                              ("datasets.config", "HF_DATASETS_OFFLINE")):
        module = sys.modules.get(module_name)
        if module is not None and hasattr(module, attr):
            saved_flags.append((module, attr, getattr(module, attr)))
    try:
        for name in _ENV:
            os.environ[name] = "1" if offline else "0"
        for module, attr, _ in saved_flags:
            setattr(module, attr, offline)
        yield
    finally:
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        for module, attr, value in saved_flags:
            setattr(module, attr, value)


def local_only() -> AbstractContextManager[None]:
    """Within: huggingface_hub and datasets read only local caches and never open a connection."""
    import datasets  # noqa: F401  (imported so that its flags exist to be set)
    import huggingface_hub  # noqa: F401

    return _hub_mode(offline=True)


def online() -> AbstractContextManager[None]:
    """Within: huggingface_hub and datasets may download (``harness data --download``)."""
    import datasets  # noqa: F401
    import huggingface_hub  # noqa: F401

    return _hub_mode(offline=False)


def download_dataset_repo(repo_id: str, folder: Path, how_to_get: str) -> list[str]:
    """A Hugging Face dataset repository into ``folder`` (the layout the benchmarks read), with a
    message that says what to do when the hub refuses (gated datasets need a login)."""
    from huggingface_hub import snapshot_download

    from harness.errors import HarnessError

    with online():
        try:
            path = snapshot_download(repo_id, repo_type="dataset", local_dir=str(folder))
        except Exception as err:  # network, authentication, gating: all end the same way for a user
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise HarnessError(f"could not download the dataset {repo_id} into {folder}: {first[:300]}. "
                               f"{how_to_get}") from None
    return [f"{repo_id} -> {path}"]


def download_model_repo(repo_id: str) -> list[str]:
    """A Hugging Face model repository into the hub cache, where the scorers look for it."""
    from huggingface_hub import snapshot_download

    from harness.errors import HarnessError

    with online():
        try:
            path = snapshot_download(repo_id)
        except Exception as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise HarnessError(f"could not download the model {repo_id}: {first[:300]}") from None
    return [f"{repo_id} -> {path}"]

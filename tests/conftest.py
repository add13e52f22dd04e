from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never touch the network: every model and dataset comes from files they write.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# One torch thread per process: the tiny models gain nothing from more, and the tests that start
# several processes (torchrun, data-loader workers) would otherwise oversubscribe 2 cores many
# times over (measured: 4x the CPU time for the whole run). Set it yourself to override.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from factories import build_tiny_clip, write_winoground_jsonl, write_winoground_parquet  # noqa: E402

N_ITEMS = 24


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "perf" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.perf)


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    return build_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="session")
def wino_parquet_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data_parquet")
    write_winoground_parquet(root / "winoground", N_ITEMS)
    return root


@pytest.fixture(scope="session")
def wino_jsonl_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data_jsonl")
    write_winoground_jsonl(root / "winoground", N_ITEMS)
    return root


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path, monkeypatch):
    """Point the hub and datasets caches at empty folders so a developer's real caches never leak in."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_hub_cache"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_datasets_cache"))

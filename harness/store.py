"""The per-item score store: one SQLite file, one row per (scorer, benchmark, version, item).

Scores are committed chunk by chunk as a run goes, so a crash loses at most the chunk in flight
and a rerun of the same command skips everything already stored. SQLite's WAL mode lets several
processes (parallel runs, or ranks of one run) write to the same file.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.api import Item

_SCHEMA = """
CREATE TABLE IF NOT EXISTS scorers (
    scorer_key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS scores (
    scorer_key TEXT NOT NULL,
    benchmark TEXT NOT NULL,
    version TEXT NOT NULL,
    item_id TEXT NOT NULL,
    texts_hash TEXT NOT NULL,  -- the item's texts: a changed caption makes a stored score stale
    scores TEXT NOT NULL,      -- JSON list of lists, images x texts
    created REAL NOT NULL,
    PRIMARY KEY (scorer_key, benchmark, version, item_id)
);
"""


def texts_hash(texts: Sequence[str]) -> str:
    return hashlib.sha256("\x1f".join(texts).encode()).hexdigest()[:16]


def scorer_key(fingerprint: Mapping[str, Any]) -> str:
    """A short stable hash of a scorer fingerprint."""
    canonical = json.dumps(fingerprint, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class ScoreStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A new connection per operation keeps the object picklable and fork-safe.
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60)

    def register_scorer(self, fingerprint: Mapping[str, Any]) -> str:
        key = scorer_key(fingerprint)
        with self._connect() as db:
            db.execute(
                "INSERT OR IGNORE INTO scorers VALUES (?, ?)",
                (key, json.dumps(fingerprint, sort_keys=True, default=str)),
            )
        return key

    def stored_ids(self, key: str, benchmark: str, version: str, items: Iterable[Item]) -> set[str]:
        """Ids of ``items`` whose scores are stored for exactly these texts."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT item_id, texts_hash FROM scores WHERE scorer_key=? AND benchmark=? AND version=?",
                (key, benchmark, version),
            )
            stored = dict(rows.fetchall())
        return {item.id for item in items if stored.get(item.id) == texts_hash(item.texts)}

    def put(self, key: str, benchmark: str, version: str, scores: Iterable[tuple[Item, np.ndarray]]) -> None:
        """Store several items' matrices in one transaction (all or nothing)."""
        now = time.time()
        rows = [
            (key, benchmark, version, item.id, texts_hash(item.texts),
             json.dumps(np.asarray(m, dtype=float).tolist()), now)
            for item, m in scores
        ]
        with self._connect() as db:
            db.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def get(self, key: str, benchmark: str, version: str, item_ids: Iterable[str]) -> dict[str, np.ndarray]:
        wanted = set(item_ids)
        out: dict[str, np.ndarray] = {}
        with self._connect() as db:
            rows = db.execute(
                "SELECT item_id, scores FROM scores WHERE scorer_key=? AND benchmark=? AND version=?",
                (key, benchmark, version),
            )
            for item_id, text in rows:
                if item_id in wanted:
                    out[item_id] = np.asarray(json.loads(text), dtype=float)
        return out

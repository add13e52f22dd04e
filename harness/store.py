"""The per-item score store: one SQLite file, one row per (scorer, benchmark, version, item).

Scores are committed chunk by chunk as a run goes, so a crash loses at most the chunk in flight
and a rerun of the same command skips everything already stored. SQLite's WAL mode lets several
processes (parallel runs, or ranks of one run) write to the same file.
"""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.api import Item, Text

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
    texts_hash TEXT NOT NULL,  -- the item's (query) texts: a changed caption makes a stored score stale
    scores BLOB NOT NULL,      -- the images x texts array in .npy format (dtype and shape kept)
    created REAL NOT NULL,
    PRIMARY KEY (scorer_key, benchmark, version, item_id)
);
CREATE TABLE IF NOT EXISTS rankings (
    scorer_key TEXT NOT NULL,
    benchmark TEXT NOT NULL,
    version TEXT NOT NULL,
    gallery TEXT NOT NULL,     -- what the ranks are relative to: the gallery's hash and the top-K kept
    item_id TEXT NOT NULL,
    scores BLOB NOT NULL,      -- the item's own images x texts matrix (.npy)
    record BLOB NOT NULL,      -- its queries' top-K candidates and best-positive rank counts (.npy)
    created REAL NOT NULL,
    PRIMARY KEY (scorer_key, benchmark, version, gallery, item_id)
);
"""


_hash_memo: dict[int, tuple[Sequence[Text], str]] = {}


def texts_hash(texts: Sequence[Text]) -> str:
    """A hash of an item's candidates. Memoised per tuple object: zero-shot items share one tuple
    of 1,000 classes x 80 prompts, which should be hashed once, not once per image."""
    memo = _hash_memo.get(id(texts))
    if memo is not None and memo[0] is texts:
        return memo[1]
    parts = [t if isinstance(t, str) else f"{t.label}\x1e" + "\x1e".join(t.texts) for t in texts]
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]
    if len(texts) > 16:  # only big shared tuples are worth remembering (and keeping alive)
        _hash_memo[id(texts)] = (texts, digest)
    return digest


def item_hash(item: Item) -> str:
    """What a stored score must match: the item's texts, and for a text-query item its query
    texts too (items without query texts keep the plain texts hash, so older stores stay valid)."""
    if not item.query_texts:
        return texts_hash(item.texts)
    joined = "\x1d".join(("query", *item.query_texts, texts_hash(item.texts)))
    return hashlib.sha256(joined.encode()).hexdigest()[:16]


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
            _switch_to_wal(db)
            # IMMEDIATE takes the write lock first, so a second process (a rank of a distributed run)
            # creating the same store waits its turn; a deferred CREATE reads the schema, then fails
            # to upgrade with "database is locked" without ever waiting on the timeout.
            db.executescript("BEGIN IMMEDIATE;" + _SCHEMA + "COMMIT;")

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
        return {item.id for item in items if stored.get(item.id) == item_hash(item)}

    def put(self, key: str, benchmark: str, version: str, scores: Iterable[tuple[Item, np.ndarray]]) -> None:
        """Store several items' matrices in one transaction (all or nothing)."""
        now = time.time()
        rows = [
            (key, benchmark, version, item.id, item_hash(item), _to_npy(m), now)
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
            for item_id, blob in rows:
                if item_id in wanted:
                    out[item_id] = np.load(io.BytesIO(blob), allow_pickle=False)
        return out

    # -- rankings (retrieval): per item, not per gallery pair ----------------------------------------
    def ranked_ids(self, key: str, benchmark: str, version: str, gallery: str) -> set[str]:
        """Ids of the items whose ranking records are stored for this gallery."""
        with self._connect() as db:
            rows = db.execute("SELECT item_id FROM rankings WHERE scorer_key=? AND benchmark=? AND version=? "
                              "AND gallery=?", (key, benchmark, version, gallery))
            return {item_id for (item_id,) in rows}

    def ranked_galleries(self, key: str, benchmark: str, version: str) -> set[str]:
        """The gallery keys (``Gallery.key``) this scorer has ranking records for."""
        with self._connect() as db:
            rows = db.execute("SELECT DISTINCT gallery FROM rankings WHERE scorer_key=? AND benchmark=? AND version=?",
                              (key, benchmark, version))
            return {gallery for (gallery,) in rows}

    def put_rankings(self, key: str, benchmark: str, version: str, gallery: str,
                     records: Iterable[tuple[str, np.ndarray, np.ndarray]]) -> None:
        """Store (item id, own score matrix, ranking record) triples in one transaction."""
        now = time.time()
        rows = [(key, benchmark, version, gallery, item_id, _to_npy(scores), _to_npy(record), now)
                for item_id, scores, record in records]
        with self._connect() as db:
            db.executemany("INSERT OR REPLACE INTO rankings VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def get_rankings(self, key: str, benchmark: str, version: str, gallery: str,
                     item_ids: Iterable[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """item id -> (own score matrix, ranking record) for the stored ones among ``item_ids``."""
        wanted = set(item_ids)
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        with self._connect() as db:
            rows = db.execute("SELECT item_id, scores, record FROM rankings WHERE scorer_key=? AND benchmark=? "
                              "AND version=? AND gallery=?", (key, benchmark, version, gallery))
            for item_id, scores, record in rows:
                if item_id in wanted:
                    out[item_id] = (np.load(io.BytesIO(scores), allow_pickle=False),
                                    np.load(io.BytesIO(record), allow_pickle=False))
        return out


def _switch_to_wal(db: sqlite3.Connection, patience_s: float = 60.0) -> None:
    """WAL lets readers and one writer share the file. The mode is stored in the file, so only the
    first opener switches it; switching needs the file to itself and sqlite answers "database is
    locked" at once, without its busy timeout, when another process (a rank of a distributed run)
    is opening the same new store. So wait here, briefly and repeatedly."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _to_npy(matrix: np.ndarray) -> bytes:
    """Exact and compact: a zero-shot item over 1,000 classes is 4 kB in float32, not 20 kB of JSON."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(matrix), allow_pickle=False)
    return buffer.getvalue()

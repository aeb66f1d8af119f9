"""SQLite cache of embeddings, keyed by model and text hash.

One file (``scopeguard.db`` by default) holds the vectors of every text any run has
embedded, so a second audit of an unchanged backlog embeds nothing.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .errors import ScopeguardError

DEFAULT_DB = "scopeguard.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    model TEXT NOT NULL,
    text_hash TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (model, text_hash)
) WITHOUT ROWID;
"""


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def connect(path: str | Path) -> sqlite3.Connection:
    """Open (creating if needed) a scopeguard SQLite database in WAL mode."""
    path = str(path)
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(path, timeout=30, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.Error as exc:
        raise ScopeguardError(
            f"{path}: cannot open the SQLite database ({exc}). "
            "Fix: pass --db with a writable path, or delete a corrupt file.") from None
    return conn


class EmbeddingCache:
    """Vectors stored per (model, sha256(text))."""

    def __init__(self, path: str | Path = DEFAULT_DB,
                 conn: sqlite3.Connection | None = None) -> None:
        self.path = str(path)
        self.conn = conn or connect(path)
        self._lock = threading.Lock()
        with self._lock, self.conn:
            self.conn.executescript(_SCHEMA)

    def get_many(self, model: str, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Cached vectors for ``texts`` (by text), those that are present."""
        hashes = {text_hash(t): t for t in texts}
        found: dict[str, np.ndarray] = {}
        keys = list(hashes)
        with self._lock:
            for i in range(0, len(keys), 500):
                batch = keys[i:i + 500]
                marks = ",".join("?" * len(batch))
                rows = self.conn.execute(
                    f"SELECT text_hash, dim, vector FROM embeddings "
                    f"WHERE model = ? AND text_hash IN ({marks})", [model, *batch])
                for h, dim, blob in rows:
                    found[hashes[h]] = np.frombuffer(blob, dtype=np.float32, count=dim)
        return found

    def put_many(self, model: str, items: Iterable[tuple[str, np.ndarray]]) -> None:
        rows = [(model, text_hash(t), int(v.shape[0]), np.asarray(v, np.float32).tobytes())
                for t, v in items]
        with self._lock, self.conn:
            self.conn.executemany(
                "INSERT OR REPLACE INTO embeddings (model, text_hash, dim, vector) "
                "VALUES (?, ?, ?, ?)", rows)

    def count(self, model: str | None = None) -> int:
        with self._lock:
            if model is None:
                return self.conn.execute("SELECT count(*) FROM embeddings").fetchone()[0]
            return self.conn.execute("SELECT count(*) FROM embeddings WHERE model = ?",
                                     [model]).fetchone()[0]

    def close(self) -> None:
        self.conn.close()

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
from typing import Protocol

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
CREATE TABLE IF NOT EXISTS models (
    model TEXT PRIMARY KEY,
    dim INTEGER NOT NULL
);
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
        tables = {name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")
            if not name.startswith(("sqlite_", "memo_")) and name not in _OURS}
        if tables:  # a table scopeguard never makes: another program's file
            conn.close()  # before WAL mode or a table of ours changed it
            shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
            raise ScopeguardError(
                f"{path}: is a SQLite database of another program (tables {shown}), not a "
                "scopeguard cache; nothing was written to it. Fix: pass --db "
                "(SCOPEGUARD_DB) the cache (default scopeguard.db) or a new file's path.")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.Error as exc:
        raise _database_error(path, exc) from None
    return conn


# The tables a scopeguard cache holds (with the memo's, memo_*): a file with any other is
# another program's database, which --db must not add tables to.
_OURS = {"embeddings", "models", "history", "history_sync"}


class VectorCache(Protocol):
    """What :class:`scopeguard.embed.CachedEmbedder` asks of a cache: this module's SQLite
    one, or the service's PostgreSQL one (``scopeguard serve --store``)."""

    damaged: int

    def get_many(self, model: str, texts: Sequence[str]) -> dict[str, np.ndarray]: ...
    def put_many(self, model: str, items: Iterable[tuple[str, np.ndarray]]) -> None: ...
    def count(self, model: str | None = None) -> int: ...
    def retain(self, keep: Iterable[str]) -> int: ...
    def close(self) -> None: ...


class EmbeddingCache:
    """Vectors stored per (model, sha256(text))."""

    def __init__(self, path: str | Path = DEFAULT_DB,
                 conn: sqlite3.Connection | None = None) -> None:
        self.path = str(path)
        self.conn = conn or connect(path)
        self._lock = threading.Lock()
        self._dims: dict[str, int] = {}
        self.damaged = 0  # rows left out by get_many (embedded again)
        try:
            with self._lock, self.conn:
                self.conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise _database_error(self.path, exc) from None

    def busy(self, seconds: float) -> None:
        """Wait at most ``seconds`` for a lock another process holds (30 by default)."""
        with self._lock:
            self.conn.execute(f"PRAGMA busy_timeout = {max(0, int(seconds * 1000))}")

    def get_many(self, model: str, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Cached vectors for ``texts`` (by text), those that are present and sound.

        A row that cannot be this model's vector (a blob shorter than its ``dim``, another
        dimension than the model's, a NaN or infinite value, all zeros for a non-empty
        text) is left out, so it is embedded again and overwritten; ``damaged`` counts
        them (a confident verdict from a broken vector would be silently wrong).
        """
        hashes = {text_hash(t): t for t in texts}
        found: dict[str, np.ndarray] = {}
        keys = list(hashes)
        try:
            with self._lock:
                expected = self._dimension(model)
                for i in range(0, len(keys), 500):
                    batch = keys[i:i + 500]
                    marks = ",".join("?" * len(batch))
                    rows = self.conn.execute(
                        f"SELECT text_hash, dim, vector FROM embeddings "
                        f"WHERE model = ? AND text_hash IN ({marks})", [model, *batch])
                    self.damaged += read_rows(rows, hashes, expected, found)
        except sqlite3.DatabaseError as exc:
            raise _database_error(self.path, exc) from None
        return found

    def _dimension(self, model: str) -> int | None:
        """The model's vector size: as recorded by the last write of fresh vectors, else the
        size most of its rows have (a file from before the record)."""
        if model not in self._dims:
            row = self.conn.execute("SELECT dim FROM models WHERE model = ?",
                                    [model]).fetchone() or self.conn.execute(
                "SELECT dim FROM embeddings WHERE model = ? GROUP BY dim "
                "ORDER BY count(*) DESC LIMIT 1", [model]).fetchone()
            try:
                self._dims[model] = int(row[0]) if row is not None else 0
            except (TypeError, ValueError):  # a damaged record: the rows' own sizes decide
                self._dims[model] = 0
            if not self._dims[model] > 0:
                del self._dims[model]
                return None
        return self._dims[model]

    def put_many(self, model: str, items: Iterable[tuple[str, np.ndarray]]) -> None:
        rows = [(model, text_hash(t), int(v.shape[0]), np.asarray(v, np.float32).tobytes())
                for t, v in items]
        try:
            with self._lock, self.conn:
                self.conn.executemany(
                    "INSERT OR REPLACE INTO embeddings (model, text_hash, dim, vector) "
                    "VALUES (?, ?, ?, ?)", rows)
                if rows:  # fresh from the model: its true size
                    self.conn.execute("INSERT OR REPLACE INTO models (model, dim) VALUES (?, ?)",
                                      (model, rows[0][2]))
        except sqlite3.DatabaseError as exc:
            raise _database_error(self.path, exc) from None
        if rows:
            self._dims[model] = rows[0][2]

    def count(self, model: str | None = None) -> int:
        with self._lock:
            if model is None:
                return self.conn.execute("SELECT count(*) FROM embeddings").fetchone()[0]
            return self.conn.execute("SELECT count(*) FROM embeddings WHERE model = ?",
                                     [model]).fetchone()[0]

    def retain(self, keep: Iterable[str]) -> int:
        """Delete every row whose text is not in ``keep`` (texts), of any model, and compact
        the file; returns how many rows went. For a cache that should hold one run's texts
        only (the GitHub Action's, carried from run to run)."""
        hashes = {text_hash(t) for t in keep}
        try:
            with self._lock, self.conn:
                self.conn.execute("CREATE TEMP TABLE IF NOT EXISTS keep (h TEXT PRIMARY KEY)")
                self.conn.execute("DELETE FROM keep")
                self.conn.executemany("INSERT OR IGNORE INTO keep VALUES (?)",
                                      [(h,) for h in hashes])
                gone = self.conn.execute("DELETE FROM embeddings WHERE text_hash NOT IN "
                                         "(SELECT h FROM keep)").rowcount
            if gone:
                with self._lock:
                    self.conn.execute("VACUUM")
        except sqlite3.DatabaseError as exc:
            raise _database_error(self.path, exc) from None
        return gone

    def close(self) -> None:
        """Fold the write-ahead log into the file, then close: a copy of the .db alone is
        then complete (a kill still loses nothing: the WAL is replayed on next open)."""
        try:
            with self._lock:
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass  # closing anyway; the WAL stays and is replayed on the next open
        self.conn.close()


def read_rows(rows: Iterable[tuple[str, int, bytes]], hashes: dict[str, str],
              expected: int | None, found: dict[str, np.ndarray]) -> int:
    """The sound vectors of ``rows`` (text_hash, dim, blob) into ``found``, by the text that
    ``hashes`` maps each hash to; returns how many rows were damaged (left out)."""
    damaged = 0
    for h, dim, blob in rows:
        vector = sound_vector(bytes(blob), dim, expected, bool(hashes[h].strip()))
        if vector is None:
            damaged += 1
        else:
            found[hashes[h]] = vector
    return damaged


def sound_vector(blob: bytes, dim: int, expected: int | None,
                 text: bool) -> np.ndarray | None:
    """The stored vector, or None when it cannot be right."""
    if not isinstance(blob, bytes) or not isinstance(dim, int) or dim <= 0 \
            or len(blob) != 4 * dim:
        return None
    if expected is not None and dim != expected:
        return None
    vector = np.frombuffer(blob, dtype=np.float32, count=dim)
    if not np.isfinite(vector).all():
        return None
    # Every embedder stores unit vectors (the empty text's may be zero): one flipped
    # exponent bit makes a component 1e36, finite, and would decide every cosine it is in.
    norm = float(np.linalg.norm(vector.astype(np.float64)))
    if (text and norm == 0) or (norm and abs(norm - 1.0) > 1e-3):
        return None
    return vector


def _database_error(path: str, exc: sqlite3.DatabaseError) -> ScopeguardError:
    """What went wrong with the cache file, and what to do about it."""
    text = str(exc).lower()
    if "full" in text:
        fix = "free space on the disk that holds it, or pass --db on another disk"
    elif "malformed" in text or "not a database" in text:
        fix = ("if --db (SCOPEGUARD_DB) names another file by mistake, name the cache "
               "(default scopeguard.db); if it is the cache and damaged, move it aside and run "
               "again (vectors are computed again; history imported into it must be imported "
               "again)")
    elif "readonly" in text or "read-only" in text or "unable to open" in text:
        fix = "pass --db with a writable path"
    else:
        fix = "check the file and its disk, or pass --db with another path"
    return ScopeguardError(f"{path}: the embedding cache cannot be used ({exc}). Fix: {fix}.")

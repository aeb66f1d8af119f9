"""The embedding cache in PostgreSQL: :class:`scopeguard.cache.EmbeddingCache`'s methods on
the store's ``embeddings`` and ``models`` tables, so replicas embed a text once between
them. A row that cannot be the model's vector is left out and embedded again, as in
SQLite.

Example::

    cache = PgEmbeddingCache(queue.db)
    cache.put_many("all-MiniLM-L6-v2", [("text", vector)])
    cache.get_many("all-MiniLM-L6-v2", ["text"])    # {"text": vector}
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from scopeguard.cache import read_rows, text_hash

from ..storage import redact
from .connect import Database


class PgEmbeddingCache:
    """Vectors stored per (model, sha256(text)) in the store's database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.path = redact(db.url)  # it is logged: never the password
        self._dims: dict[str, int] = {}
        self.damaged = 0  # rows left out by get_many (embedded again)

    def get_many(self, model: str, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Cached vectors for ``texts`` (by text), those present and sound."""
        hashes = {text_hash(t): t for t in texts}
        found: dict[str, np.ndarray] = {}
        if not hashes:
            return found
        expected = self._dimension(model)
        rows = self.db.execute("SELECT text_hash, dim, vector FROM embeddings WHERE model = ? "
                               "AND text_hash = ANY(?)", (model, list(hashes)))
        self.damaged += read_rows(rows, hashes, expected, found)
        return found

    def _dimension(self, model: str) -> int | None:
        """The model's vector size as its last fresh write recorded it (None: not yet)."""
        if model not in self._dims:
            found = self.db.execute("SELECT dim FROM models WHERE model = ?", (model,)).rows
            self._dims.update((model, int(r[0])) for r in found)
        return self._dims.get(model)

    def put_many(self, model: str, items: Iterable[tuple[str, np.ndarray]]) -> None:
        # Sorted by key: two replicas writing overlapping texts lock rows in one order, so
        # their upserts cannot deadlock.
        rows = sorted({text_hash(t): (model, text_hash(t), int(v.shape[0]),
                                      np.asarray(v, np.float32).tobytes())
                       for t, v in items}.values(), key=lambda r: r[1])
        if not rows:
            return
        with self.db.tx() as tx:
            tx.executemany("INSERT INTO embeddings (model, text_hash, dim, vector) VALUES "
                           "(?, ?, ?, ?) ON CONFLICT (model, text_hash) DO UPDATE SET "
                           "dim = excluded.dim, vector = excluded.vector", rows)
            tx.execute("INSERT INTO models (model, dim) VALUES (?, ?) ON CONFLICT (model) DO "
                       "UPDATE SET dim = excluded.dim", (model, rows[0][2]))
        self._dims[model] = rows[0][2]

    def count(self, model: str | None = None) -> int:
        if model is None:
            return int(self.db.execute("SELECT count(*) FROM embeddings").fetchone()[0])
        return int(self.db.execute("SELECT count(*) FROM embeddings WHERE model = ?",
                                   (model,)).fetchone()[0])

    def retain(self, keep: Iterable[str]) -> int:
        """Delete every row whose text is not in ``keep``; returns how many went."""
        return self.db.execute("DELETE FROM embeddings WHERE NOT (text_hash = ANY(?))",
                               ([text_hash(t) for t in keep],)).rowcount

    def close(self) -> None:
        """Nothing: the connections belong to the queue, which closes them."""

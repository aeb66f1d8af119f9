"""One suite, two stores: the SQLite files and a PostgreSQL database give the same queue,
issue store and embedding cache (integrations/service/storage.py), and the tests that take
the ``store`` fixture (tests/conftest.py) run against both.

Example::

    def test_something(store):
        queue = store.queue(lease=30)          # EventQueue or PgEventQueue
        cache = store.cache()                  # EmbeddingCache or PgEmbeddingCache
        store.sql("UPDATE events SET state = ?", ("queued",))   # ? placeholders on both
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any


class Store:
    """The queue, issue store and cache of one location: an SQLite directory or a database."""

    def __init__(self, kind: str, location: str) -> None:
        self.kind, self.location = kind, location
        self.opened: list[Any] = []

    @property
    def postgres(self) -> bool:
        return self.kind == "postgresql"

    def queue(self, **options: Any) -> Any:
        if self.postgres:
            from scopeguard.integrations.service.pg.queue import PgEventQueue

            queue = PgEventQueue(self.location, **options)
        else:
            from scopeguard.integrations.service.queue import EventQueue

            queue = EventQueue(Path(self.location) / "queue.db", **options)
        self.opened.append(queue)
        return queue

    def cache(self) -> Any:
        """A new cache on the same place (as a new process would open it)."""
        if self.postgres:
            from scopeguard.integrations.service.pg.cache import PgEmbeddingCache

            return PgEmbeddingCache(self.queue().db)
        from scopeguard.cache import EmbeddingCache

        return EmbeddingCache(Path(self.location) / "cache.db")

    def sql(self, statement: str, params: tuple = (), on: str = "cache") -> list[Any]:
        """Run SQL behind the code's back (to damage a row...); ``on``: cache or queue."""
        if self.postgres:
            import psycopg

            with psycopg.connect(self.location, autocommit=True) as conn:
                cur = conn.execute(statement.replace("?", "%s"), params)
                return cur.fetchall() if cur.description else []
        with sqlite3.connect(Path(self.location) / f"{on}.db") as conn:
            return conn.execute(statement, params).fetchall()

    def close(self) -> None:
        for queue in self.opened:
            queue.close()

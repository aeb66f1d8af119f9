"""The decided requests ``scopeguard history`` imported, in SQLite (the ``--db`` file, beside
the embedding cache): one row per request and source, and per source the tracker's last
change seen, so a re-run fetches only what changed since."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

from .backlog import Request, sound_request
from .cache import _database_error, connect
from .clean import sound_text
from .history import Decided

_SCHEMA = """
CREATE TABLE IF NOT EXISTS history (
    source TEXT NOT NULL,
    id TEXT NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    author TEXT NOT NULL,
    customer TEXT NOT NULL,
    created_at TEXT NOT NULL,
    url TEXT NOT NULL,
    labels TEXT NOT NULL,
    decision TEXT NOT NULL,
    reason TEXT NOT NULL,
    decided_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (source, id)
);
CREATE TABLE IF NOT EXISTS history_sync (
    source TEXT PRIMARY KEY,
    updated_at TEXT NOT NULL,
    imported_at TEXT NOT NULL
);
"""


class HistoryStore:
    """Decided requests by source (``github:owner/repo``, ``jira:PROJECT``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.conn = connect(path)
        self._lock = threading.Lock()
        try:
            with self._lock, self.conn:
                self.conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise _database_error(self.path, exc) from None

    def put_many(self, decided: Iterable[Decided]) -> int:
        """Insert or replace (a request decided again: reopened and closed otherwise)."""
        rows = []
        for d in decided:  # a tracker's text as UTF-8 can store it (a lone surrogate: U+FFFD)
            r = sound_request(d.request)
            rows.append((d.source, r.id, r.title, r.body, r.author, r.customer, r.created_at,
                         r.url, json.dumps(list(r.labels)), d.decision, sound_text(d.reason),
                         d.decided_at, d.updated_at))
        try:
            with self._lock, self.conn:
                self.conn.executemany("INSERT OR REPLACE INTO history VALUES "
                                      "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        except sqlite3.DatabaseError as exc:
            raise _database_error(self.path, exc) from None
        return len(rows)

    def forget(self, source: str, ids: Iterable[str]) -> None:
        """Drop requests that are no longer decided (reopened)."""
        with self._lock, self.conn:
            self.conn.executemany("DELETE FROM history WHERE source = ? AND id = ?",
                                  [(source, i) for i in ids])

    def synced(self, source: str) -> str:
        """The tracker's last change seen for ``source`` ("" before the first import)."""
        with self._lock:
            row = self.conn.execute("SELECT updated_at FROM history_sync WHERE source = ?",
                                    [source]).fetchone()
        return row[0] if row else ""

    def mark_synced(self, source: str, updated_at: str, now: str) -> None:
        with self._lock, self.conn:
            self.conn.execute("INSERT OR REPLACE INTO history_sync VALUES (?, ?, ?)",
                              (source, updated_at, now))

    def decided(self, source: str | None = None) -> list[Decided]:
        """Every decided request (of ``source``), oldest decision first."""
        query = "SELECT * FROM history" + (" WHERE source = ?" if source else "") + \
            " ORDER BY decided_at, id"
        with self._lock:
            rows = self.conn.execute(query, [source] if source else []).fetchall()
        return [Decided(source=r[0], request=Request(
            id=r[1], title=r[2], body=r[3], author=r[4], customer=r[5], created_at=r[6],
            url=r[7], labels=tuple(json.loads(r[8]))), decision=r[9], reason=r[10],
            decided_at=r[11], updated_at=r[12]) for r in rows]

    def counts(self, source: str | None = None) -> dict[str, int]:
        query = "SELECT decision, count(*) FROM history" + \
            (" WHERE source = ?" if source else "") + " GROUP BY decision"
        with self._lock:
            found = dict(self.conn.execute(query, [source] if source else []).fetchall())
        return {d: found.get(d, 0) for d in ("accepted", "declined")}

    def sources(self) -> list[str]:
        """The sources imported into the store ("github:OWNER/REPO", "jira:PAW")."""
        with self._lock:
            rows = self.conn.execute("SELECT DISTINCT source FROM history ORDER BY source")
            return [r[0] for r in rows.fetchall()]

    def close(self) -> None:
        self.conn.close()

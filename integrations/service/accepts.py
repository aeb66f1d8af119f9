"""Storing accepted webhooks in the SQLite queue: one :class:`Accept`, or a batch of them.

The group committer (:mod:`.group_commit`) stores every accept waiting at that moment in
one transaction. :func:`accept_batch` stores such a batch in three statements (more only
past the variables SQLite allows in one: 999 before 3.32): the bodies seen within their
replay windows, the delivery ids seen, one insert of every new event; with the answers
each :class:`Accept` run in turn would give. Each SQLite call releases the interpreter
lock and must win it back from the accepting event loop, which under a burst is rarely
idle: run as two calls per webhook, a batch of about 100 took the committer 15-28 ms
under a 200-connection burst (bench/webhook.py), while the insert itself takes well
under a millisecond.

Example::

    with queue._tx() as conn:
        states = accept_batch(conn, [Accept("d-1", body, "jira:issue_created", "PAW-1",
                                            86400.0, time.time(), sha256_hex)])
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Accept:
    """One webhook to store (:meth:`EventQueue.accept`); called on its own, it runs its
    check and insert in the connection's transaction."""

    delivery_id: str
    payload: bytes
    event: str
    issue_key: str
    replay_window: float
    now: float
    digest: str

    def __call__(self, conn: sqlite3.Connection) -> str:
        if self.replay_window > 0 and conn.execute(
                "SELECT 1 FROM events WHERE body_sha256 = ? AND received_at >= ? AND "
                "delivery_id != ? LIMIT 1",
                (self.digest, self.now - self.replay_window, self.delivery_id)).fetchone():
            return "replay"
        return "queued" if conn.execute(
            "INSERT OR IGNORE INTO events (delivery_id, event, issue_key, payload, "
            "received_at, available_at, body_sha256) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (self.delivery_id, self.event, self.issue_key, self.payload, self.now, self.now,
             self.digest)).rowcount == 1 else "duplicate"


def _chunks(values: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


def _variables(conn: sqlite3.Connection) -> int:
    """How many ``?`` one statement may hold in this SQLite (999 before 3.32)."""
    try:
        return max(7, min(conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER), 32766))
    except (AttributeError, sqlite3.Error):  # no getlimit: the oldest limit
        return 999


def accept_batch(conn: sqlite3.Connection, works: list[Any]) -> list[Any]:
    """A batch of accepts in three statements (see the module): bodies seen within
    their replay windows, delivery ids seen, then one insert of every new one. The
    same answers as running each :class:`Accept` in turn (an earlier accept of the
    batch counts for a later one); anything else in the batch runs alone, in order."""
    if not all(isinstance(w, Accept) for w in works):
        return [work(conn) for work in works]
    limit = _variables(conn)
    bodies: dict[str, list[tuple[str, float]]] = {}
    signed = list({w.digest for w in works if w.replay_window > 0})
    for chunk in _chunks(signed, limit):
        for digest, delivery, received in conn.execute(
                "SELECT body_sha256, delivery_id, received_at FROM events WHERE "
                f"body_sha256 IN ({','.join('?' * len(chunk))})", chunk):
            bodies.setdefault(digest, []).append((delivery, received))
    seen: set[str] = set()
    for chunk in _chunks(list({w.delivery_id for w in works}), limit):
        seen.update(row[0] for row in conn.execute(
            f"SELECT delivery_id FROM events WHERE delivery_id IN "
            f"({','.join('?' * len(chunk))})", chunk))
    results, rows = [], []
    for w in works:
        if w.replay_window > 0 and any(
                delivery != w.delivery_id and received >= w.now - w.replay_window
                for delivery, received in bodies.get(w.digest, ())):
            results.append("replay")
        elif w.delivery_id in seen:
            results.append("duplicate")
        else:
            seen.add(w.delivery_id)
            bodies.setdefault(w.digest, []).append((w.delivery_id, w.now))
            rows.append((w.delivery_id, w.event, w.issue_key, w.payload, w.now, w.now,
                         w.digest))
            results.append("queued")
    for chunk in _chunks(rows, limit // 7):  # 7 parameters a row
        inserted = conn.execute(
            "INSERT INTO events (delivery_id, event, issue_key, payload, received_at, "
            "available_at, body_sha256) VALUES "
            + ",".join(["(?, ?, ?, ?, ?, ?, ?)"] * len(chunk)),
            [value for row in chunk for value in row]).rowcount
        if inserted != len(chunk):  # the write lock is held: nothing else inserts
            raise sqlite3.DatabaseError(f"{len(chunk)} events to store, {inserted} stored")
    return results

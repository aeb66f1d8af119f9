"""The durable queue in PostgreSQL: :class:`.queue.EventQueue` for several ``scopeguard
serve`` replicas on one database. Its statements that both stores speak are inherited
(the ``?`` placeholders become psycopg's in :mod:`.connect`); what differs, and why:

- No process lock: every replica accepts webhooks and works the queue.
- ``claim`` takes the oldest due row ``FOR UPDATE SKIP LOCKED`` (a replica never waits on a
  row another is acking), inside a transaction that holds an advisory lock: claims are
  one at a time, so the rule that an issue's events never run at once (its comment is
  found and edited, never posted twice) sees every lease another replica committed.
- ``accept`` holds an advisory lock on the body's hash: a body replayed to two replicas
  at once is still recognised.
- ``release_leases`` at start takes nothing back: the other replicas' leases are live. A
  dead replica's events are claimed again when their lease expires (``--lease``).
- Lease owners name the host and the process (``host:pid:thread``), so a replica's
  pool releases only its own dead workers' events.
- Times (leases, due times, the issues' stamps) are the database server's clock, read once
  at open as an offset from this machine's: replicas on machines whose clocks differ
  still agree on when a lease expired.

Example::

    queue = PgEventQueue("postgresql://scopeguard@db/scopeguard", lease=60)
    queue.accept("d-1", body, "jira:issue_created", "PAW-1")
    event = queue.claim(queue.owner("worker-1"))
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from functools import partial
from typing import Any

from ..queue import DEFAULT_LEASE, DEFAULT_MAX_ATTEMPTS, EXPIRED_FAILS, Event, EventQueue
from ..queue_errors import QueueError
from ..storage import redact
from .connect import Database
from .schema import SCHEMA_VERSION, migrate, version

CLAIM_LOCK = 0x5C09E602  # pg_advisory_xact_lock key held by each claim's transaction
HOST = socket.gethostname()
_ROW = "seq, delivery_id, payload, attempts, received_at, event, issue_key"
_BUSY = ("NOT EXISTS (SELECT 1 FROM events AS other WHERE other.state = 'leased' AND "
         "other.lease_until > ? AND other.issue_key = e.issue_key AND other.seq != e.seq "
         "AND e.issue_key != '')")


class PgEventQueue(EventQueue):
    """A durable queue of webhook deliveries in PostgreSQL (migrated on open).

    Args:
        url: the database (``postgresql://USER[:PASSWORD]@HOST[:PORT]/DB``).
        lease: seconds a claim holds an event before another replica may take it.
        max_attempts: claims before an event is marked ``failed``.
        clock: the time source (tests pass a fake).
        pool: connections at most, per process.
    """

    issue_order = "seq"  # the issues table's insertion order
    shared = True  # other processes (replicas) write to it

    def __init__(self, url: str, *, lease: float = DEFAULT_LEASE,
                 max_attempts: int = DEFAULT_MAX_ATTEMPTS, clock: Any = time.time,
                 pool: int = 8) -> None:
        self.url, self.path = url, redact(url)
        self.lease, self.max_attempts, self.clock = lease, max_attempts, clock
        self._probed: tuple[float, str] = (-1e18, "")
        self.db = Database(url, size=pool)
        try:
            migrate(self.db)
            if clock is time.time:  # the server's clock, as an offset from ours
                offset = float(self.db.execute("SELECT extract(epoch FROM clock_timestamp())")
                               .fetchone()[0]) - time.time()
                self.clock = lambda: time.time() + offset
        except QueueError:
            self.db.close()
            raise

    def _conn(self) -> Any:
        return self.db

    def _tx(self) -> Any:
        return self.db.tx()

    def owner(self, name: str, pid: int | None = None) -> str:
        return f"{HOST}:{pid or os.getpid()}:{name}"

    def check(self) -> None:
        """Refuse a database at another schema version than this scopeguard's."""
        found = version(self.db)
        if found != SCHEMA_VERSION:
            raise QueueError(f"{self.path} is at store schema {found}, this scopeguard needs "
                             f"{SCHEMA_VERSION}. Fix: scopeguard store migrate --store URL.")

    def lock(self) -> None:
        """Nothing to lock: replicas share the database."""

    def close(self) -> None:
        self.db.close()

    def accept(self, delivery_id: str, payload: bytes, event: str = "", issue_key: str = "",
               *, replay_window: float = 0.0) -> str:
        """See :meth:`EventQueue.accept`; one transaction per accept (PostgreSQL commits
        concurrent transactions together by itself)."""
        now, digest = self.clock(), hashlib.sha256(payload).hexdigest()
        with self.db.tx() as tx:
            if replay_window > 0:
                tx.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (digest,))
                if tx.execute("SELECT 1 FROM events WHERE body_sha256 = ? AND received_at >= ? "
                              "AND delivery_id != ? LIMIT 1",
                              (digest, now - replay_window, delivery_id)).fetchone():
                    return "replay"
            cur = tx.execute(
                "INSERT INTO events (delivery_id, event, issue_key, payload, received_at, "
                "available_at, body_sha256) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (delivery_id) DO NOTHING",
                (delivery_id, event, issue_key, payload, now, now, digest))
            return "queued" if cur.rowcount == 1 else "duplicate"

    async def accept_async(self, delivery_id: str, payload: bytes, event: str = "",
                           issue_key: str = "", *, replay_window: float = 0.0) -> str:
        """:meth:`accept` in a thread of anyio's pool (Starlette's, 40 threads), so the
        accepting event loop goes on; the connection pool bounds the transactions."""
        from anyio import to_thread

        return await to_thread.run_sync(partial(self.accept, delivery_id, payload, event,
                                                issue_key, replay_window=replay_window))

    def claim(self, owner: str) -> Event | None:
        """The oldest due event (else one whose lease expired), leased to ``owner``."""
        with self.db.tx() as tx:
            tx.execute("SELECT pg_advisory_xact_lock(?)", (CLAIM_LOCK,))
            now = self.clock()  # after the wait for the lock: the lease starts now
            tx.execute(EXPIRED_FAILS, (now, now, self.max_attempts))
            row = None
            for due in ("state = 'queued' AND available_at <= ?",
                        "state = 'leased' AND lease_until <= ?"):
                row = tx.execute(f"SELECT {_ROW} FROM events AS e WHERE {due} AND {_BUSY} "
                                 "ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED",
                                 (now, now)).fetchone()
                if row is not None:
                    break
            if row is None:
                return None
            tx.execute("UPDATE events SET state = 'leased', lease_owner = ?, lease_until = ?, "
                       "attempts = attempts + 1 WHERE seq = ?", (owner, now + self.lease, row[0]))
        return Event(row[1], bytes(row[2] or b""), row[3] + 1, row[4], row[5], row[6])

    def release_leases(self) -> int:
        """Nothing at start: other replicas' leases are live (expired ones are claimed)."""
        return 0

"""The webhook service's durable event queue: leases, retries and failures in SQLite (WAL).

The queue file also holds the issues the service has seen (:mod:`.store`); this module
owns the file: its connections, its process lock and its schema, versioned with
``PRAGMA user_version`` (opening a file migrates it).

Queue life of a delivery: ``enqueue``/``accept`` (idempotent on the delivery id: Jira's
retries of a delivery are recognised; and, for signed bodies, on the body's hash within a
window, so a captured body replayed under a new delivery id is recognised too) ->
``claim`` (a lease: ``leased`` until ``lease_until``) -> ``ack`` (``done``, kept as
processed-state) or ``retry`` (back to ``queued`` after a delay; ``failed`` after
``max_attempts``). A process killed mid-event (``kill -9``) leaves its rows ``leased``:
the next process calls ``release_leases`` at start (it holds the file's lock, so no one
else is working on them), and within a process an expired lease is claimed again.
Delivery is therefore at least once; the write-back is idempotent, so at least once is
enough.

Example::

    queue = EventQueue("scopeguard-queue.db")
    queue.enqueue("d-1", b'{"webhookEvent": "jira:issue_created", ...}')
    event = queue.claim("worker-1")  # then process event.payload
    queue.ack(event.delivery_id, "worker-1", "labelled")
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .accepts import Accept, accept_batch
from .group_commit import GroupCommit
from .queue_errors import QueueError, QueueUnavailable, describe, file_id, replaced
from .queue_lock import QueueLock
from .queue_schema import _MIGRATIONS, _SCHEMA, SCHEMA_VERSION

# An event whose lease ran out max_attempts times (its worker died or hung each time) is
# failed, not claimed again: it must not go round the workers (or replicas) for ever.
EXPIRED_FAILS = ("UPDATE events SET state = 'failed', finished_at = ?, lease_owner = NULL, "
                 "lease_until = NULL, error = 'its lease ran out on every attempt (a worker "
                 "died or hung on it each time)' WHERE state = 'leased' AND lease_until <= ? "
                 "AND attempts >= ?")
DEFAULT_LEASE = 300.0
DEFAULT_MAX_ATTEMPTS = 10



@dataclass(frozen=True)
class Event:
    """A claimed delivery."""

    delivery_id: str
    payload: bytes
    attempts: int
    received_at: float
    event: str = ""
    issue_key: str = ""


class EventQueue:
    """A durable queue of webhook deliveries in SQLite.

    Args:
        path: the SQLite file (created if needed).
        lease: seconds a claim holds an event before another worker may take it.
        max_attempts: claims before an event is marked ``failed``.
        durable: ``synchronous=FULL`` (survives power loss, an fsync per commit); with
            False, ``NORMAL`` survives a process crash but may lose the last commits on
            power loss.
        clock: the time source (tests pass a fake).
    """

    issue_order, shared = "rowid", False  # the issues' insertion order; one process per file
    _opened: tuple[int, int] | None = None  # the file's (device, inode) as opened

    def __init__(self, path: str | Path, *, lease: float = DEFAULT_LEASE,
                 max_attempts: int = DEFAULT_MAX_ATTEMPTS, durable: bool = True,
                 clock: Any = time.time) -> None:
        self.path = str(path)
        self.lease = lease
        self.max_attempts = max_attempts
        self.durable = durable
        self.clock = clock
        self._local = threading.local()
        self._lock = QueueLock(self.path)
        self._probed: tuple[float, str] = (-1e18, "")
        self.accepts = GroupCommit(self._accept_tx, on_exit=self._close_thread_conn,
                                   run=accept_batch)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn().executescript(_SCHEMA)  # executescript commits by itself
            self._migrate()
        except sqlite3.Error as exc:
            raise QueueError(describe(self.path, exc)) from None
        self._opened = file_id(self.path) if self.path != ":memory:" else None

    def check(self) -> None:
        """Refuse a damaged file before any event is accepted into it (``quick_check``)."""
        try:
            rows = self._conn().execute("PRAGMA quick_check").fetchall()
        except sqlite3.Error as exc:
            raise QueueError(describe(self.path, exc)) from None
        problems = [r[0] for r in rows if r[0] != "ok"]
        if problems:
            raise QueueError(describe(self.path, sqlite3.DatabaseError(
                "database disk image is malformed: " + "; ".join(problems[:3]))))

    # --- connections -----------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE below).
                conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
            except sqlite3.Error as exc:
                raise QueueError(describe(self.path, exc)) from None
            self._local.conn = conn
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the write lock at once (no upgrade deadlocks)."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")  # a full disk fails here: roll back, never leave it open
        except BaseException:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            raise

    def _migrate(self) -> None:
        """Bring the file to SCHEMA_VERSION (BEGIN IMMEDIATE: one process does it)."""
        with self._tx() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise QueueError(f"{self.path} was written by a newer scopeguard (queue schema "
                                 f"{version}, this one knows {SCHEMA_VERSION}). Fix: upgrade "
                                 "scopeguard, or give this one its own --queue file.")
            for statements in _MIGRATIONS[version:]:
                for statement in statements:
                    conn.execute(statement)
            if version < SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def owner(self, name: str, pid: int | None = None) -> str:
        """Thread ``name``'s lease owner (this process's or ``pid``'s): release_owner's."""
        return f"{pid or os.getpid()}:{name}"

    def lock(self) -> None:
        """Take the file's process lock: one service process per queue file (queue_lock.py)."""
        if self.path != ":memory:":
            self._lock.take()

    def close(self) -> None:
        """Fold the WAL into the file (after a clean shutdown a copy of the .db alone is
        complete), close, release the lock."""
        self.accepts.close()  # accepts already submitted are committed first
        conn = getattr(self._local, "conn", None)
        if conn is None and Path(self.path).is_file():  # a connection to checkpoint
            try:
                conn = self._conn()
            except QueueError:
                conn = None  # the WAL stays and is replayed on the next open
        if conn is not None:
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass  # the WAL stays and is replayed on the next open: nothing is lost
        self._close_thread_conn()
        self._lock.close()

    def _close_thread_conn(self) -> None:
        """Close this thread's connection, if it has one (the group commit's thread calls
        it as it ends)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # --- the queue -------------------------------------------------------------------------

    def enqueue(self, delivery_id: str, payload: bytes, event: str = "", issue_key: str = "") -> bool:
        """Store a delivery; False when this delivery id was seen before (nothing stored)."""
        return self.accept(delivery_id, payload, event, issue_key) == "queued"

    def accept(self, delivery_id: str, payload: bytes, event: str = "", issue_key: str = "",
               *, replay_window: float = 0.0) -> str:
        """Store a delivery unless it was seen before; says which: ``queued``; ``duplicate``
        when the delivery id was seen before; ``replay`` when ``replay_window`` > 0 and the
        same body was accepted within that many seconds under another delivery id (a signed
        body replayed with a new id). Nothing is stored unless ``queued``. The check and the
        insert are in one transaction (shared with concurrent accepts: group_commit.py)."""
        try:
            return self.accepts.submit(self._accept_write(delivery_id, payload, event,
                                                          issue_key, replay_window))
        except sqlite3.Error as exc:
            raise QueueUnavailable(describe(self.path, exc)) from None

    async def accept_async(self, delivery_id: str, payload: bytes, event: str = "",
                           issue_key: str = "", *, replay_window: float = 0.0) -> str:
        """:meth:`accept` for the accepting event loop: it goes on while the write commits."""
        try:
            return await self.accepts.submit_async(self._accept_write(
                delivery_id, payload, event, issue_key, replay_window))
        except sqlite3.Error as exc:
            raise QueueUnavailable(describe(self.path, exc)) from None

    @contextmanager
    def _accept_tx(self) -> Iterator[sqlite3.Connection]:
        """A batch of accepts' transaction; once committed, the check that it went into
        the file at the path (not one deleted meanwhile): else every accept of the batch
        is a 503 and its sender sends it again. Once a batch, in the committer thread."""
        with self._tx() as conn:
            yield conn
        gone = self._gone()
        if gone:
            raise QueueUnavailable(gone)

    def _gone(self) -> str:
        """Why the file (or its lock) at the path is not the one opened, or ""."""
        if self._opened is None:  # no file (PostgreSQL's store, :memory:): nothing to lose
            return ""
        return replaced(self.path, self._opened, self._lock.lost)

    def _accept_write(self, delivery_id: str, payload: bytes, event: str, issue_key: str,
                      replay_window: float) -> Accept:
        """The accept's write, run in a shared transaction (group_commit.py)."""
        return Accept(delivery_id, payload, event, issue_key, replay_window, self.clock(),
                      hashlib.sha256(payload).hexdigest())

    def claim(self, owner: str) -> Event | None:
        """The oldest event that is due, leased to ``owner``; None when there is none.

        An event of an issue whose other event is leased (and its lease alive) waits: two
        worker processes never write back to one issue at once (a thread lock cannot see
        across processes), and the issue's events keep their order."""
        now = self.clock()
        busy = ("NOT EXISTS (SELECT 1 FROM events AS other WHERE other.state = 'leased' AND "
                "other.lease_until > ? AND other.issue_key = e.issue_key AND "
                "other.seq != e.seq AND e.issue_key != '')")
        with self._tx() as conn:
            row = conn.execute(
                "SELECT seq, delivery_id, payload, attempts, received_at, event, issue_key "
                f"FROM events AS e WHERE state = 'queued' AND available_at <= ? AND {busy} "
                "ORDER BY seq LIMIT 1", (now, now)).fetchone()
            if row is None:
                conn.execute(EXPIRED_FAILS, (now, now, self.max_attempts))
                row = conn.execute(
                    "SELECT seq, delivery_id, payload, attempts, received_at, event, issue_key "
                    f"FROM events AS e WHERE state = 'leased' AND lease_until <= ? AND {busy} "
                    "ORDER BY seq LIMIT 1", (now, now)).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE events SET state = 'leased', lease_owner = ?, lease_until = ?, "
                         "attempts = attempts + 1 WHERE seq = ?", (owner, now + self.lease, row[0]))
        return Event(row[1], bytes(row[2] or b""), row[3] + 1, row[4], row[5], row[6])

    def ack(self, delivery_id: str, owner: str, outcome: str) -> bool:
        """Mark a claimed event done; False if ``owner`` no longer holds its lease."""
        with self._tx() as conn:
            cur = conn.execute(
                # The payload is dropped: the row stays only to recognise the delivery id.
                "UPDATE events SET state = 'done', finished_at = ?, outcome = ?, error = NULL, "
                "payload = NULL, lease_owner = NULL, lease_until = NULL "
                "WHERE delivery_id = ? AND state = 'leased' AND lease_owner = ?",
                (self.clock(), outcome[:500], delivery_id, owner))
            return cur.rowcount == 1

    def renew(self, delivery_id: str, owner: str) -> bool:
        """Extend ``owner``'s lease of a claimed event by a lease from now (the worker's
        heartbeat); False if it no longer holds it."""
        with self._tx() as conn:
            return conn.execute("UPDATE events SET lease_until = ? WHERE delivery_id = ? AND "
                                "state = 'leased' AND lease_owner = ?",
                                (self.clock() + self.lease, delivery_id, owner)).rowcount == 1

    def retry(self, delivery_id: str, owner: str, error: str, delay: float) -> str:
        """Put a claimed event back after ``delay`` seconds, or fail it after
        ``max_attempts``; returns the new state (``queued`` or ``failed``)."""
        now = self.clock()
        with self._tx() as conn:  # one owner-checked statement: no other claim slips between
            row = conn.execute(
                "UPDATE events SET state = CASE WHEN attempts >= ? THEN 'failed' ELSE 'queued' "
                "END, available_at = ?, error = ?, finished_at = CASE WHEN attempts >= ? THEN "
                "? END, lease_owner = NULL, lease_until = NULL WHERE delivery_id = ? AND "
                "state = 'leased' AND lease_owner = ? RETURNING state",
                (self.max_attempts, now + delay, error[:1000], self.max_attempts, now,
                 delivery_id, owner)).fetchone()
        return row[0] if row else "lost-lease"

    def fail(self, delivery_id: str, owner: str, error: str) -> None:
        """Give up on a claimed event now (an error that retrying cannot fix)."""
        with self._tx() as conn:
            conn.execute("UPDATE events SET state = 'failed', finished_at = ?, error = ?, "
                         "lease_owner = NULL, lease_until = NULL "
                         "WHERE delivery_id = ? AND state = 'leased' AND lease_owner = ?",
                         (self.clock(), error[:1000], delivery_id, owner))

    def release_leases(self) -> int:
        """Queue again every leased event (at start, after a crash). Call after ``lock``."""
        with self._tx() as conn:
            return conn.execute("UPDATE events SET state = 'queued', lease_owner = NULL, "
                                "lease_until = NULL, available_at = ? WHERE state = 'leased'",
                                (self.clock(),)).rowcount

    def release_owner(self, pid: int) -> int:
        """Queue again (after a backoff) the events the dead worker process ``pid`` held; fail
        one after ``max_attempts`` deaths (it may kill them: it must not stall the queue)."""
        now, owner = self.clock(), self.owner("%", pid)  # this host's pid, with PostgreSQL
        with self._tx() as conn:
            return conn.execute(
                "UPDATE events SET state = 'failed', finished_at = ?, lease_owner = NULL, "
                "lease_until = NULL, error = 'the worker process handling it died on each of "
                "its attempts (see the log for exit codes); it may be what kills them' "
                "WHERE state = 'leased' AND lease_owner LIKE ? AND attempts >= ?",
                (now, owner, self.max_attempts)).rowcount + conn.execute(
                # 5 s doubling to 300 s, in SQL that PostgreSQL speaks too
                "UPDATE events SET state = 'queued', lease_owner = NULL, lease_until = NULL, "
                "available_at = ? + CASE WHEN attempts >= 7 THEN 300 WHEN attempts <= 1 THEN 5 "
                "ELSE 5 * (1 << (attempts - 1)) END "
                "WHERE state = 'leased' AND lease_owner LIKE ?", (now, owner)).rowcount

    def requeue_failed(self) -> int:
        """Queue failed events again, with their attempts reset."""
        with self._tx() as conn:
            return conn.execute("UPDATE events SET state = 'queued', attempts = 0, "
                                "available_at = ?, finished_at = NULL WHERE state = 'failed'",
                                (self.clock(),)).rowcount

    def prune(self, older_than: float) -> int:
        """Forget done events finished more than ``older_than`` seconds ago.

        Keep them at least as long as Jira may retry a delivery (hours), or a late retry
        is processed again (harmless: the write-back is idempotent, but it costs work).
        """
        with self._tx() as conn:
            return conn.execute("DELETE FROM events WHERE state = 'done' AND finished_at < ?",
                                (self.clock() - older_than,)).rowcount

    def depth(self) -> int:
        """Events not yet processed (queued or leased)."""
        return self._conn().execute("SELECT count(*) FROM events WHERE state IN ('queued', "
                                    "'leased')").fetchone()[0]

    def counts(self) -> dict[str, int]:
        try:
            rows = self._conn().execute("SELECT state, count(*) FROM events GROUP BY state")
            found = dict(rows.fetchall())
        except sqlite3.Error as exc:
            raise QueueError(describe(self.path, exc)) from None
        return {"queued": 0, "leased": 0, "done": 0, "failed": 0, **found}

    def probe(self, every: float = 5.0) -> str:
        """"" when a write to the file succeeds, else why not (a full disk, a damaged or
        read-only file); tried at most every ``every`` seconds, for /healthz."""
        now = time.monotonic()
        gone = self._gone()
        if gone or now - self._probed[0] < every:
            return gone or self._probed[1]
        try:
            with self._tx() as conn:
                conn.execute("CREATE TABLE IF NOT EXISTS health (id INTEGER PRIMARY KEY, "
                             "at REAL)")
                conn.execute("INSERT INTO health (id, at) VALUES (1, ?) ON CONFLICT (id) DO "
                             "UPDATE SET at = excluded.at", (self.clock(),))
            result = ""
        except (sqlite3.Error, QueueError) as exc:  # QueueError: PostgreSQL's, described
            result = describe(self.path, exc) if isinstance(exc, sqlite3.Error) else str(exc)
        self._probed = (now, result)
        return result

    def next_due(self) -> float | None:
        """When the next queued event becomes due (now or later), None if none is queued."""
        return self._conn().execute("SELECT min(available_at) FROM events WHERE state = "
                                    "'queued'").fetchone()[0]

    def get(self, delivery_id: str) -> dict[str, Any] | None:
        cur = self._conn().execute("SELECT * FROM events WHERE delivery_id = ?", (delivery_id,))
        row = cur.fetchone()
        return dict(zip([d[0] for d in cur.description], row, strict=True)) if row else None


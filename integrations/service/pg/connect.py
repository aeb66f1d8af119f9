"""A PostgreSQL database behind a psycopg 3 connection pool, with the SQLite connection's
shape: ``execute(sql, params)`` and ``tx()`` yielding something that executes.

The SQL is written with ``?`` placeholders, as for SQLite (the issue store's statements run
on both); they become psycopg's ``%s`` here. Every psycopg failure leaves as a
:class:`QueueUnavailable` (the service answers 503 and the sender retries) whose message
names the database with its password masked, and the fix.

Example::

    db = Database("postgresql://scopeguard@db.internal/scopeguard")
    with db.tx() as tx:
        tx.execute("UPDATE events SET state = ? WHERE seq = ?", ("done", 1))
    db.execute("SELECT count(*) FROM events").fetchone()
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ..queue_errors import QueueError, QueueUnavailable
from ..storage import password, redact, secret_pieces

POOL_TIMEOUT = 5.0  # seconds a caller waits for a connection before the 503
DOWN_TIMEOUT = 1.0  # the same while the last attempt found the server unreachable
CONNECT_TIMEOUT = 3  # seconds per connection attempt
_PLACEHOLDER = re.compile(r"\?")
# Every session: a lock waited on for 10 s fails (the caller retries; a replica that froze
# inside a claim cannot stop the others' claims for long), a transaction left idle for
# 60 s is ended by the server, and a peer that vanished is noticed within about a minute.
SESSION = {"options": "-c lock_timeout=10000 -c idle_in_transaction_session_timeout=60000",
           "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
           "keepalives_count": 3}


def to_psycopg(sql: str) -> str:
    """``?`` placeholders as ``%s`` (a literal ``%`` doubled first)."""
    return _PLACEHOLDER.sub("%s", sql.replace("%", "%%"))


class Result:
    """A statement's rows, read whole before its connection went back to the pool."""

    def __init__(self, cursor: Any) -> None:
        self.description = cursor.description
        self.rows = cursor.fetchall() if cursor.description else []
        self.rowcount = cursor.rowcount

    def fetchone(self) -> Any:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[Any]:
        return self.rows

    def __iter__(self) -> Iterator[Any]:
        return iter(self.rows)


class Tx:
    """One connection inside a transaction."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        return Result(self.conn.execute(to_psycopg(sql), storable(params)))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self.conn.cursor() as cursor:
            cursor.executemany(to_psycopg(sql), [storable(r) for r in rows])


def storable(params: Sequence[Any]) -> tuple[Any, ...]:
    """``params`` as PostgreSQL takes them: its text holds no NUL character (SQLite's does;
    an error message or a label may carry one), so NUL becomes U+FFFD."""
    return tuple(p.replace("\x00", "\ufffd") if isinstance(p, str) and "\x00" in p else p
                 for p in params)


def describe(url: str, exc: BaseException) -> str:
    """What is wrong with the database, and what to do (the password never shown)."""
    where = redact(url)
    # libpq's lines ("...public\nLINE 1: ...") on one, before redact (which, as urlsplit,
    # drops line breaks); a driver may quote the URL back, or parts of it
    text = redact(" ".join(str(exc).split()))
    for piece in sorted(secret_pieces(password(url)), key=len, reverse=True):
        text = text.replace(piece, "***")
    kind = type(exc).__name__
    if kind == "InsufficientPrivilege":
        return (f"{where}: the PostgreSQL user may not do this ({text}). Fix: run scopeguard "
                "store migrate as the tables' owner, and give serve a user that owns them "
                "(docs/postgresql.md, Migrations).")
    if kind in ("PoolTimeout", "OperationalError") or "connect" in text.lower():
        return (f"{where}: PostgreSQL cannot be reached ({text.strip()}). Fix: check that the "
                "server runs and that the URL (--store, SCOPEGUARD_STORE) names its host, "
                "port, user and database; webhooks get 503 meanwhile and their senders retry.")
    return (f"{where}: the PostgreSQL store failed ({kind}: {text.strip()}). Fix: check the "
            "URL (--store, SCOPEGUARD_STORE); if it is right, the PostgreSQL server's log says "
            "why.")


class Database:
    """A pool of connections to ``url``; ``size`` at most, opened lazily.

    Raises :class:`QueueError` when psycopg is not installed (the ``postgres`` extra).
    """

    def __init__(self, url: str, size: int = 8) -> None:
        try:
            import psycopg
            from psycopg_pool import ConnectionPool
        except ImportError as exc:
            raise QueueError(f"--store {redact(url)} needs psycopg 3 ({exc.name} is missing). "
                             "Fix: pip install 'scopeguard-issues[postgres]'.") from None
        self.url = url
        self.down = False  # the last transaction could not reach the server
        try:  # once, directly: a wrong URL says why (refused, no such database...) at start
            psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT).close()
        except psycopg.Error as exc:
            raise QueueError(describe(url, exc)) from None
        self.pool = ConnectionPool(
            url, min_size=1, max_size=size, open=False, timeout=POOL_TIMEOUT,
            kwargs={"connect_timeout": CONNECT_TIMEOUT, "application_name": "scopeguard",
                    **SESSION},
            # A reconnection gives up after 2 s, so the next caller starts a fresh one: the
            # pool's own backoff doubles without bound (a 20 s outage: 30 s more to wait).
            check=ConnectionPool.check_connection, reconnect_timeout=2.0,
            name="scopeguard")
        self.pool.open(wait=False)

    @contextmanager
    def tx(self) -> Iterator[Tx]:
        """A transaction on one connection: committed at the end, rolled back on error.
        While the server is down, callers wait 1 s for a connection, not 5: webhooks get
        their 503 and /healthz its answer soon (the pool keeps reconnecting meanwhile)."""
        import psycopg

        try:
            with self.pool.connection(timeout=DOWN_TIMEOUT if self.down else POOL_TIMEOUT) \
                    as conn, conn.transaction():
                yield Tx(conn)
            self.down = False
        except psycopg.Error as exc:
            # A pool timeout counts as "down" too: while the server is down, that is how
            # the pool reports it (a pool merely busy for 5 s then waits 1 s, not 5).
            self.down = isinstance(exc, psycopg.OperationalError)
            raise QueueUnavailable(describe(self.url, exc)) from None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        """One statement in its own transaction."""
        with self.tx() as tx:
            return tx.execute(sql, params)

    def close(self) -> None:
        self.pool.close(timeout=5)

"""Where the service keeps its state: one interface, two implementations.

``scopeguard serve`` keeps its queue (deliveries, leases, attempts), its issue store
(demand) and, with PostgreSQL, its embedding cache in one place: an SQLite file
(``--queue``, the default: one serve process per file) or a PostgreSQL database
(``--store postgresql://USER@HOST/DB``: several replicas on one database). Both queues
offer the same methods (:class:`.queue.EventQueue`, :class:`.pg.queue.PgEventQueue`) and
the same behaviour (tests/test_store_backends.py runs one suite against both).

This module knows the URL only: psycopg is imported when a PostgreSQL store is opened,
so the SQLite path never loads it.

Example::

    queue = open_queue(settings)        # EventQueue, or PgEventQueue for a postgresql:// URL
    redact("postgresql://app:s3cret@db/scopeguard")  # 'postgresql://app:***@db/scopeguard'
"""

from __future__ import annotations

import re
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

from scopeguard.errors import ScopeguardError

SCHEMES = ("postgresql", "postgres")
EXAMPLE = "postgresql://USER@HOST:5432/DATABASE"


@runtime_checkable
class Queue(Protocol):
    """What the service asks of its store's queue (both implementations offer it; the
    issue store reads and writes through ``_conn()`` and ``_tx()``, ``?`` placeholders)."""

    path: str  # where it is, for messages (a URL with its password masked)
    lease: float
    issue_order: str  # the issues table's insertion order
    shared: bool  # other processes (replicas) write to it

    def accept(self, delivery_id: str, payload: bytes, event: str = "", issue_key: str = "",
               *, replay_window: float = 0.0) -> str: ...
    async def accept_async(self, delivery_id: str, payload: bytes, event: str = "",
                           issue_key: str = "", *, replay_window: float = 0.0) -> str: ...
    def claim(self, owner: str) -> Any: ...
    def ack(self, delivery_id: str, owner: str, outcome: str) -> bool: ...
    def renew(self, delivery_id: str, owner: str) -> bool: ...
    def retry(self, delivery_id: str, owner: str, error: str, delay: float) -> str: ...
    def fail(self, delivery_id: str, owner: str, error: str) -> None: ...
    def owner(self, name: str, pid: int | None = None) -> str: ...
    def release_leases(self) -> int: ...
    def release_owner(self, pid: int) -> int: ...
    def requeue_failed(self) -> int: ...
    def prune(self, older_than: float) -> int: ...
    def counts(self) -> dict[str, int]: ...
    def probe(self, every: float = 5.0) -> str: ...
    def next_due(self) -> float | None: ...
    def lock(self) -> None: ...
    def check(self) -> None: ...
    def close(self) -> None: ...


def is_postgres(location: str | None) -> bool:
    """Whether ``location`` names a PostgreSQL database (else it is an SQLite file)."""
    return bool(location) and str(location).split(":", 1)[0].lower() in SCHEMES


# A password as libpq reads it beside the URL form: ``password=...`` in a URL's query or in
# a key=value connection string ("host=db password=s3cret").
_PASSWORD_PARAM = re.compile(r"(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)")
# user:password@host, for URLs urlsplit refuses (a bad IPv6 host, a bad port): the password
# runs to the last @ (as urlsplit reads it).
_USERINFO = re.compile(r"(?i)^([a-z][a-z0-9+.-]*://[^:/?#@]*):(.*)@")


def redact(url: str) -> str:
    """The URL (or key=value connection string) with its password masked: for logs,
    errors and /healthz."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return _PASSWORD_PARAM.sub(r"\1***", _USERINFO.sub(r"\1:***@", url))
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}:***@{host}"
    return _PASSWORD_PARAM.sub(r"\1***", urlunsplit((parts.scheme, netloc, parts.path,
                                                     parts.query, parts.fragment)))


def password(url: str) -> str:
    """The password in the URL, after the user or as a ``password=`` parameter, or in a
    key=value connection string ("" if none): the log scrubber masks it too."""
    try:
        parts = urlsplit(url)
        if parts.password:
            return parts.password
    except ValueError:
        found = _USERINFO.match(url)
        if found and found.group(2):
            return found.group(2)
    found = _PASSWORD_PARAM.search(url)
    return found.group(2).strip("'") if found else ""


def secret_pieces(secret: str) -> set[str]:
    """``secret`` and the parts a driver may repeat on their own: libpq, splitting a URL at
    another @ or :, quotes the rest as a host name ("failed to resolve host 'pw@db'")."""
    from urllib.parse import unquote

    pieces = {secret, unquote(secret)}
    for form in list(pieces):
        pieces.update(p for p in re.split(r"[@:/]", form) if len(p) >= 3)
    return pieces - {""}


def check_url(url: str, flag: str = "--store") -> str:
    """The URL if it can name a database; else an error that names it (redacted) and the fix."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as exc:
        raise ScopeguardError(f"{flag} {redact(url)} is not a valid URL ({exc}). Fix: write "
                              f"it as {EXAMPLE} (SCOPEGUARD_STORE).") from None
    if parts.scheme.lower() not in SCHEMES:
        raise ScopeguardError(f"{flag} {redact(url)}: only PostgreSQL URLs are supported "
                              f"(postgresql://). Fix: write it as {EXAMPLE}, or leave it out "
                              "for the SQLite file of --queue.")
    if not parts.path.strip("/") and not parts.hostname:
        raise ScopeguardError(f"{flag} {redact(url)} names no host and no database. Fix: "
                              f"write it as {EXAMPLE}.")
    return url


def open_queue(settings: Any) -> Queue:
    """The queue of ``settings``: PostgreSQL when ``settings.store`` is set, else SQLite."""
    if settings.store:
        from .pg.queue import PgEventQueue

        return PgEventQueue(check_url(settings.store), lease=settings.lease,
                            max_attempts=settings.max_attempts)
    from .queue import EventQueue

    return EventQueue(settings.queue, lease=settings.lease,
                      max_attempts=settings.max_attempts, durable=settings.durable)

"""What can go wrong with the queue file, said for each cause with its fix: the errors the
service turns into 503 (the sender retries) and /healthz reports."""

from __future__ import annotations

import sqlite3

from scopeguard.errors import ScopeguardError

__all__ = ["QueueError", "QueueUnavailable", "describe"]


class QueueError(ScopeguardError):
    """The queue file cannot be opened or is in use by another process."""


class QueueUnavailable(QueueError):
    """An event cannot be made durable now (disk full, I/O error): the sender should retry."""


def describe(path: str, exc: sqlite3.Error) -> str:
    """What is wrong with the queue file, and what to do: said for each kind of failure."""
    text = str(exc).lower()
    if "full" in text:
        return (f"{path}: the disk holding the queue is full ({exc}). Fix: free space on "
                "it; webhooks get 503 meanwhile, and their senders retry.")
    if "malformed" in text or "not a database" in text or "corrupt" in text:
        return (f"{path}: the queue file is damaged ({exc}). Fix: stop scopeguard serve, "
                "move the file aside (it holds the queued events and the issues seen), then "
                "start with a new --queue file or restore a backup of it.")
    if "readonly" in text or "read-only" in text or "unable to open" in text or (
            "permission" in text):
        return (f"{path}: cannot write the queue file ({exc}). Fix: pass --queue with a "
                "writable path.")
    if "locked" in text or "busy" in text:
        return (f"{path}: the queue file stayed locked ({exc}). Fix: check that no other "
                "program holds it; the sender retries.")
    return f"{path}: the queue file failed ({exc}). Fix: check the file and its disk."

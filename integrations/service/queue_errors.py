"""What can go wrong with the queue file, said for each cause with its fix: the errors the
service turns into 503 (the sender retries) and /healthz reports."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable

from scopeguard.errors import ScopeguardError

__all__ = ["QueueError", "QueueUnavailable", "describe", "file_id", "replaced"]


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


def file_id(path: str, fd: int | None = None) -> tuple[int, int] | None:
    """The (device, inode) of ``path`` (or of the open ``fd``); None when it is gone."""
    try:
        found = os.fstat(fd) if fd is not None else os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def replaced(path: str, opened: tuple[int, int] | None,
             lock_lost: Callable[[], bool] = lambda: False) -> str:
    """Why the queue file (or its lock) at ``path`` is no longer the one this process
    opened, or "": deleted or replaced while serving, an event accepted now would go into
    a file nobody can open again, and another serve could start on the path.
    ``lock_lost`` is asked only while the file itself is intact (it may make the lock
    file again: queue_lock.QueueLock.lost)."""
    if opened is None or (file_id(path) == opened and not lock_lost()):
        return ""
    return (f"{path}: the queue file (or its .lock) was deleted or replaced while scopeguard "
            "serve ran; events accepted now would be lost. Fix: restart scopeguard serve: "
            "it opens the file anew (webhooks get 503 meanwhile, and their senders retry).")

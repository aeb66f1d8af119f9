"""The queue file's process lock, ``QUEUE.lock``: one ``scopeguard serve`` per queue file.

The lock is an ``flock`` on a file beside the queue, which the kernel drops when the
process dies (even by ``kill -9``), so the next serve may safely take back the dead one's
leases. A lock file deleted while the service runs (a cleaner of old files, a hand) is
made again and taken at the next check: the service goes on, and a second serve on the
path is still refused. A lock file another process made first may be a second serve's:
then it is not taken, and the service says to restart.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from typing import IO

from .queue_errors import QueueError, file_id

log = logging.getLogger("scopeguard.serve")


class QueueLock:
    """Held by the service process for its life, from :meth:`take` to :meth:`close`."""

    def __init__(self, queue_path: str) -> None:
        self.queue_path, self.path = queue_path, queue_path + ".lock"
        self._handle: IO[str] | None = None
        self._kept: list[IO[str]] = []  # the deleted files' handles, still locked
        self._healing = threading.Lock()

    def take(self) -> None:
        """Take the lock, or raise :class:`QueueError` naming the other holder's file."""
        if self._handle is not None:
            return
        for _ in range(100):
            handle = open(self.path, "a+")  # noqa: SIM115 - held for the process life
            if not self._flock(handle):
                raise QueueError(f"{self.queue_path} is in use by another scopeguard "
                                 "serve process. Fix: stop that process, or give this one "
                                 "its own --queue file.")
            if file_id(self.path) == file_id("", handle.fileno()):
                self._handle = handle
                return
            # deleted between the open and the lock (and maybe made again by the serve
            # holding the path): a lock on the old file guards nothing; the new one, then
            handle.close()
        raise QueueError(f"{self.path} keeps being deleted. Fix: stop what deletes it "
                         "(a cleaner of old files?), or give the queue another directory.")

    def lost(self) -> bool:
        """True when the file at the path is no longer the one locked and could not be
        made again (another process made one first); a deleted one is made again here."""
        if self._handle is None or self._same():
            return False
        with self._healing:
            if self._handle is None or self._same():  # closed, or made again meanwhile
                return False
            try:  # only where nothing is: a file another process made may be its lock
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except OSError:
                return True
            handle = os.fdopen(fd, "a+")
            if not self._flock(handle):  # a serve starting on the path took it first
                return True
            # the old file stays locked too: a serve that opened it before it was
            # deleted must not get its lock now (take() also checks the path)
            self._kept.append(self._handle)
            self._handle = handle
        log.warning("%s was deleted while scopeguard serve ran: made again and locked, so "
                    "a second serve on this queue is still refused. Keep the queue out of "
                    "directories that a cleaner empties.", self.path)
        return False

    def close(self) -> None:
        with self._healing:
            for handle in [*self._kept, self._handle]:
                if handle is not None:
                    handle.close()
            self._handle, self._kept = None, []

    def _same(self) -> bool:
        handle = self._handle
        try:
            return handle is not None and file_id(self.path) == file_id("", handle.fileno())
        except ValueError:  # closed by close() meanwhile
            return False

    @staticmethod
    def _flock(handle: IO[str]) -> bool:
        """Lock ``handle`` and write this process's id into it; False (closed) when
        another process holds it."""
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        return True


class WorkersLock:
    """``QUEUE.workers.lock``, held shared by each worker process for its life: a new
    ``scopeguard serve`` waits for the workers of an earlier one (orphaned by its death)
    before it takes back their leases (:func:`wait_for_orphans`). Deleted while they run,
    each worker locks the file made at the path at its next :meth:`keep` (a thread of its
    own, every ``every`` seconds, also while an orphan finishes its event; the deleted
    file stays locked too), so a new serve waits for them again."""

    suffix = ".workers.lock"

    def __init__(self, queue_path: str) -> None:
        self.path = queue_path + self.suffix
        self._handles: list[IO[str]] = []
        self._closed = threading.Event()
        self._healing = threading.Lock()  # the watch and close()

    def hold(self, every: float = 1.0) -> None:
        handle = open(self.path, "a+")  # noqa: SIM115 - held for the process life
        fcntl.flock(handle.fileno(), fcntl.LOCK_SH)  # a new serve's probe is brief: wait
        self._handles.append(handle)
        threading.Thread(target=self._watch, args=(every,), name="scopeguard-workers-lock",
                         daemon=True).start()

    def _watch(self, every: float) -> None:
        while not self._closed.wait(every):
            try:
                self.keep()
            except Exception:  # noqa: BLE001 - the watch outlives any one look
                log.exception("checking %s failed; the next look tries again", self.path)

    def keep(self) -> None:
        """Lock the file at the path too, if it is not the one held (deleted, made again)."""
        with self._healing:
            if not self._handles or \
                    file_id(self.path) == file_id("", self._handles[-1].fileno()):
                return
            try:
                handle = open(self.path, "a+")  # noqa: SIM115 - held for the process life
            except OSError as exc:  # the directory gone or not writable: the next look
                log.debug("cannot open %s: %s", self.path, exc)
                return
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:  # a new serve's probe holds it this instant: the next look
                handle.close()
                return
            self._handles.append(handle)
        log.warning("%s was deleted while this worker ran: the file made at its path is "
                    "locked too", self.path)

    def close(self) -> None:
        self._closed.set()
        with self._healing:
            for handle in self._handles:
                handle.close()
            self._handles = []


def wait_for_orphans(queue_path: str, timeout: float) -> bool:
    """Wait until no worker process of an earlier ``scopeguard serve`` on this queue file
    is still running (they hold the workers' lock shared until they exit). False when
    ``timeout`` passed first (their leases are then taken back anyway, as after a lease
    expiry)."""
    if queue_path == ":memory:":
        return True
    with open(queue_path + WorkersLock.suffix, "a+") as handle:
        deadline, told = time.monotonic() + timeout, False
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
                return True
            except OSError:
                if time.monotonic() > deadline:
                    log.warning("workers of an earlier scopeguard serve still run after %.0fs; "
                                "taking back their events anyway", timeout)
                    return False
                if not told:
                    log.warning("waiting for the workers of an earlier scopeguard serve on "
                                "%s to finish their events", queue_path)
                    told = True
                time.sleep(0.2)

"""Group commit: writes that arrive while a transaction commits share the next one.

With ``synchronous=FULL`` every SQLite commit waits for an fsync, so a burst of webhooks
accepted one transaction each is bounded by one fsync per webhook. :class:`GroupCommit`
runs each submitted write inside a shared transaction: the first caller to find no
transaction running becomes the leader, takes every write waiting at that moment (up to
``max_batch``), runs them in order in one transaction and commits once; the writes that
arrive during that commit wait, and the next leader takes them together. A lone write
pays no wait at all; under a burst the fsyncs are shared.

Every caller gets its own write's result, or, if the transaction failed, the error that
failed it (nothing of that batch was stored, so each caller can say "retry").

Example::

    group = GroupCommit(queue._tx)
    state = group.submit(lambda conn: conn.execute("INSERT ...").rowcount)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class _Write(Generic[T]):
    __slots__ = ("work", "result", "error", "done")

    def __init__(self, work: Callable[[Any], T]) -> None:
        self.work = work
        self.result: T | None = None
        self.error: BaseException | None = None
        self.done = False


class GroupCommit:
    """Shared transactions for concurrent writes (see the module's docstring).

    Args:
        tx: opens a write transaction and yields its connection; commits on exit.
        max_batch: the most writes one transaction takes.
    """

    def __init__(self, tx: Callable[[], AbstractContextManager[Any]], max_batch: int = 256):
        self._tx = tx
        self.max_batch = max_batch
        self._cv = threading.Condition()
        self._pending: list[_Write[Any]] = []
        self._busy = False
        self.transactions = self.writes = 0  # for tests and benches

    def submit(self, work: Callable[[Any], T]) -> T:
        """Run ``work(conn)`` in a shared transaction; its result once that committed."""
        write: _Write[T] = _Write(work)
        with self._cv:
            self._pending.append(write)
            while not write.done:
                if self._busy:
                    self._cv.wait()
                    continue
                self._busy = True
                batch = self._pending[:self.max_batch]
                del self._pending[:self.max_batch]
                self._cv.release()
                try:
                    self._run(batch)
                finally:
                    self._cv.acquire()
                    self._busy = False
                    self._cv.notify_all()
        if write.error is not None:
            raise write.error
        return write.result  # type: ignore[return-value]

    def _run(self, batch: list[_Write[Any]]) -> None:
        results: list[Any] = []
        try:
            with self._tx() as conn:
                for write in batch:
                    results.append(write.work(conn))
        except BaseException as exc:  # noqa: BLE001 - handed to every caller of the batch
            for write in batch:
                write.error = exc
        else:
            for write, result in zip(batch, results, strict=True):
                write.result = result
            self.transactions += 1
            self.writes += len(batch)
        finally:
            for write in batch:
                write.done = True

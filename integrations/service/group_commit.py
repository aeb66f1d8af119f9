"""Group commit: writes that arrive while a transaction commits share the next one.

With ``synchronous=FULL`` every SQLite commit waits for an fsync, so a burst of webhooks
accepted one transaction each is bounded by one fsync per webhook. :class:`GroupCommit`
hands each submitted write to one committer thread, which takes every write waiting at
that moment (up to ``max_batch``), runs them in order in one transaction and commits
once; the writes that arrive during that commit wait, and the next transaction takes them
together. A lone write waits for nothing but its own commit; under a burst the fsyncs are
shared.

Writes come from threads (:meth:`GroupCommit.submit` blocks until its write committed)
or from an event loop (``await`` :meth:`GroupCommit.submit_async`): an accepting event
loop hands its writes over without a thread of its own per request, and the committer
answers each batch with one call into the loop, not one per write. (A thread per
request, each parked on a shared condition, cost the webhook service about half its
acceptance rate under a 200-connection burst: ``bench/webhook.py``.)

Every caller gets its own write's result, or, if the transaction failed, the error that
failed it (nothing of that batch was stored, so each caller can say "retry").

Example::

    group = GroupCommit(queue._tx)
    state = group.submit(lambda conn: conn.execute("INSERT ...").rowcount)
    state = await group.submit_async(lambda conn: conn.execute("INSERT ...").rowcount)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class _Write(Generic[T]):
    __slots__ = ("work", "result", "error", "done", "future", "loop")

    def __init__(self, work: Callable[[Any], T]) -> None:
        self.work = work
        self.result: T | None = None
        self.error: BaseException | None = None
        self.done: threading.Event | None = None  # a thread's write: set once it is settled
        self.future: asyncio.Future[T] | None = None  # an event loop's write
        self.loop: asyncio.AbstractEventLoop | None = None


def _settle(writes: list[_Write[Any]]) -> None:
    """On the writes' event loop: each waiting coroutine gets its result or error (one
    whose request was cancelled meanwhile has nobody waiting)."""
    for write in writes:
        future = write.future
        if future is None or future.done():
            continue
        try:
            if write.error is not None:
                future.set_exception(write.error)
            else:
                future.set_result(write.result)
        except (TypeError, asyncio.InvalidStateError) as exc:  # an error a future refuses
            future.set_exception(RuntimeError(f"the write failed: {exc!r}"))


class GroupCommit:
    """Shared transactions for concurrent writes (see the module's docstring).

    Args:
        tx: opens a write transaction and yields its connection; commits on exit. It is
            called on the committer thread.
        max_batch: the most writes one transaction takes.
        on_exit: called on the committer thread as it ends (closing its connection).
        run: runs a batch's works in its transaction, ``run(conn, works)`` -> their results
            in order; by default each ``work(conn)`` in turn. A batch run in a few
            statements holds the interpreter lock far less: every SQLite call releases
            it and must win it back from the busy event loop (bench/webhook.py).
    """

    def __init__(self, tx: Callable[[], AbstractContextManager[Any]], max_batch: int = 256,
                 on_exit: Callable[[], None] | None = None,
                 run: Callable[[Any, list[Callable[[Any], Any]]], list[Any]] | None = None):
        self._tx = tx
        self._on_exit = on_exit
        self._run_works = run or (lambda conn, works: [work(conn) for work in works])
        self.max_batch = max_batch
        self._cv = threading.Condition()
        self._pending: list[_Write[Any]] = []
        self._thread: threading.Thread | None = None
        self._closing = False
        self.transactions = self.writes = 0  # for tests and benches

    def submit(self, work: Callable[[Any], T]) -> T:
        """Run ``work(conn)`` in a shared transaction; its result once that committed."""
        write: _Write[T] = _Write(work)
        write.done = threading.Event()
        self._put(write)
        write.done.wait()
        if write.error is not None:
            raise write.error
        return write.result  # type: ignore[return-value]

    async def submit_async(self, work: Callable[[Any], T]) -> T:
        """:meth:`submit` for a coroutine: the event loop goes on while the write commits."""
        write: _Write[T] = _Write(work)
        write.loop = asyncio.get_running_loop()
        write.future = write.loop.create_future()
        self._put(write)
        return await write.future

    def close(self) -> None:
        """Let the committer thread finish what was submitted and end (a later write
        starts it again)."""
        with self._cv:
            thread, self._closing = self._thread, True
            self._cv.notify()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _put(self, write: _Write[Any]) -> None:
        with self._cv:
            if self._thread is None:
                thread = threading.Thread(target=self._commit_loop, daemon=True,
                                          name="scopeguard-group-commit")
                thread.start()  # if it cannot start, the caller gets the error, nothing waits
                self._thread, self._closing = thread, False
            self._pending.append(write)
            self._cv.notify()

    def _commit_loop(self) -> None:
        batch: list[_Write[Any]] = []
        try:
            while True:
                with self._cv:
                    while not self._pending and not self._closing:
                        self._cv.wait()
                    if not self._pending:  # closing, and nothing left to commit
                        self._thread = None
                        return
                    batch = self._pending[:self.max_batch]
                    del self._pending[:self.max_batch]
                self._run(batch)
                self._answer(batch)
                batch = []
        except BaseException as exc:  # noqa: BLE001 - the thread must not leave writes waiting
            with self._cv:  # fail what it held and what waits; the next write starts anew
                stranded, self._pending, self._thread = batch + self._pending, [], None
            for write in stranded:  # all but a thread's write already answered
                if write.done is None or not write.done.is_set():
                    write.error = write.error or exc
            self._answer(stranded)
        finally:
            if self._on_exit is not None:
                self._on_exit()

    def _run(self, batch: list[_Write[Any]]) -> None:
        results: list[Any] = []
        try:
            with self._tx() as conn:
                results = self._run_works(conn, [write.work for write in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"a batch of {len(batch)} writes gave {len(results)} "
                                       "results")
        except BaseException as exc:  # noqa: BLE001 - handed to every caller of the batch
            for write in batch:
                write.error = exc
        else:
            for write, result in zip(batch, results, strict=True):
                write.result = result
            self.transactions += 1
            self.writes += len(batch)

    @staticmethod
    def _answer(batch: list[_Write[Any]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Write[Any]]] = {}
        for write in batch:
            if write.done is not None:
                write.done.set()
            elif write.loop is not None:
                by_loop.setdefault(write.loop, []).append(write)
        for loop, writes in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, writes)
            except RuntimeError:  # the loop has closed: nobody is waiting any more
                pass

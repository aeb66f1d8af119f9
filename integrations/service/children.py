"""Child processes of the service, each with a pipe to it, watched and started again.

The worker pool (:mod:`.pool`) and the acceptor processes (:mod:`.acceptors`) are both
:class:`Children`: a monitor thread applies what each child sends up its pipe, runs the
pool's own look (:meth:`Children.tick`), and starts a dead child again after a delay that
the pool chooses (:meth:`Children.died`). ``stop`` tells every child to stop, waits, and
kills those that do not.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger("scopeguard.serve")


class Channel:
    """One end of a child's pipe, safe to send on from several threads."""

    def __init__(self, conn: Any) -> None:
        self.conn, self.lock = conn, threading.Lock()

    def send(self, message: tuple) -> bool:
        with self.lock:
            try:
                self.conn.send(message)
                return True
            except (OSError, EOFError, ValueError):  # the other end is gone
                return False


def drain(channels: dict[int, Channel], timeout: float, apply: Any,
          stopping: threading.Event) -> None:
    """Apply every message waiting on the children's pipes (up to ``timeout`` seconds for
    the first); a pipe at end of file is closed (its child died: the liveness check
    starts it again)."""
    open_ = [c.conn for c in list(channels.values()) if not c.conn.closed]
    if not open_:
        stopping.wait(timeout)
        return
    for conn in multiprocessing.connection.wait(open_, timeout):
        try:
            while conn.poll():
                apply(*conn.recv())
        except (OSError, EOFError):
            conn.close()


class Children:
    """Child processes by number, each with a :class:`Channel`, and their monitor thread.

    A pool says what its children are (``kind``, for logs and the thread's name; their
    ``numbers``), how often the monitor looks (``every`` seconds), and supplies
    :meth:`spawn_process`, :meth:`apply` and :meth:`died`; :meth:`tick` is its own look
    at each turn.
    """

    kind = "child"
    every = 0.5
    numbers: Iterable[int] = ()

    def __init__(self) -> None:
        self.context = multiprocessing.get_context("spawn")
        self.channels: dict[int, Channel] = {}  # this process's end of each child's pipe
        self.processes: dict[int, Any] = {}
        self.stopping = threading.Event()
        self.restarting: set[int] = set()  # numbers whose restart waits out its delay
        self._lock = threading.Lock()  # the liveness check and a restart's spawn
        self._monitor = threading.Thread(target=self._watch, name=f"scopeguard-{self.kind}s",
                                         daemon=True)

    def start(self) -> None:
        """Start every child (``numbers``), then the monitor."""
        for number in self.numbers:
            self.spawn(number)
        self._monitor.start()

    def spawn(self, number: int) -> None:
        """Start child ``number`` with a new pipe (an old one is closed)."""
        ours, theirs = self.context.Pipe(duplex=True)
        try:
            process = self.spawn_process(number, theirs)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()  # the child holds it: when the child dies, ours reads EOF
        old = self.channels.get(number)
        self.channels[number] = Channel(ours)
        if old is not None:
            old.conn.close()
        self.processes[number] = process
        log.info("%s %d started (pid %d)", self.kind, number, process.pid)

    # --- what a pool supplies ----------------------------------------------------------

    def spawn_process(self, number: int, conn: Any) -> Any:
        """Start and return the process of child ``number``, its pipe end ``conn``."""
        raise NotImplementedError

    def apply(self, kind: str, number: int, data: Any) -> None:
        """One message up a child's pipe."""
        raise NotImplementedError

    def died(self, number: int, process: Any) -> float:
        """Child ``number`` was found dead: log it, and return the seconds before it is
        started again."""
        raise NotImplementedError

    def tick(self) -> None:
        """The pool's own look, at each turn of the monitor."""

    def restarted(self, number: int, ok: bool) -> None:
        """After child ``number``'s restart (``ok``: it started)."""

    # --- the monitor thread ------------------------------------------------------------

    def _watch(self) -> None:
        while not self.stopping.is_set():
            try:
                self.drain(self.every)
                self.tick()
                with self._lock:
                    for number, process in list(self.processes.items()):
                        if process.is_alive() or self.stopping.is_set() or \
                                number in self.restarting:
                            continue
                        self.restarting.add(number)
                        try:
                            self._restart_later(number, self.died(number, process))
                        except BaseException:  # no restart waits: the next look tries again
                            self.restarting.discard(number)
                            raise
            except Exception:  # noqa: BLE001 - the monitor must outlive any one message
                log.exception("the %s monitor hit an error; it goes on", self.kind)
                self.stopping.wait(0.5)

    def drain(self, timeout: float) -> None:
        drain(self.channels, timeout, self.apply, self.stopping)

    def _restart_later(self, number: int, delay: float) -> None:
        def restart() -> None:
            if self.stopping.wait(delay):
                return
            with self._lock:  # the monitor sees the new process, never the dead one again
                ok = False
                try:
                    if self.stopping.is_set():  # stop() began while this waited for the lock
                        return
                    self.spawn(number)
                    ok = True
                except OSError as exc:  # tried again at the monitor's next look
                    log.error("%s %d could not be started again: %s", self.kind, number, exc)
                finally:
                    self.restarting.discard(number)
                    self.restarted(number, ok)

        threading.Thread(target=restart, name=f"scopeguard-restart-{self.kind}-{number}",
                         daemon=True).start()

    def stop(self, timeout: float = 30,
             before: Callable[[], None] | None = None) -> None:
        """Tell every child to stop (each finishes what it holds), wait up to ``timeout``
        seconds, kill those still running, then apply their last messages."""
        with self._lock:  # a restart under way registers its child first, or never spawns
            self.stopping.set()
        if before is not None:
            before()
        for channel in list(self.channels.values()):
            channel.send(("stop",))
        deadline = time.monotonic() + timeout
        for process in self.processes.values():
            process.join(max(0.0, deadline - time.monotonic()))
        for process in self.processes.values():
            if process.is_alive():
                log.warning("%s pid %d did not stop in %.0fs: killed", self.kind, process.pid,
                            timeout)
                process.kill()
                process.join(5)
        if self._monitor.is_alive():
            self._monitor.join(2)
        self.drain(0.1)
        for channel in self.channels.values():
            channel.conn.close()

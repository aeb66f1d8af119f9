"""Worker processes: the classifier runs outside the process that accepts webhooks.

Classifying is CPU work (tokenising, the model, numpy): in the accepting process it holds
the interpreter and both cores while webhooks wait (accept p99 of seconds during a burst,
bench/webhook.py). :class:`WorkerPool` starts ``--workers`` processes (``spawn``: a fresh
interpreter, nothing inherited but the settings), each a :class:`.lifecycle.Service` in
the ``worker`` role: it opens the same queue file (SQLite WAL; leases keep two workers
off one event), loads the model and runs :class:`.worker.Worker`. The accepting process
keeps only the HTTP side, the queue's writes and the health.

Each worker has a pipe to the parent (no shared semaphores to leak). Down it go ``wake``
(an event was queued) and ``stop``; up it the worker reports ``ready``, a start ``error`` (shown
on ``/healthz`` and refusing webhooks with 503 as before), its queue state, whether a
tracker's write-back failed for a cause each of its events meets (``reach``, per
tracker: credentials rejected, Jira or GitHub unreachable; on ``/healthz``; the newest
report of any worker wins, by ``time.monotonic()``, one clock for the machine), the
issues it knows and every metric it counts (the accepting process serves
``/metrics``). Down the pipe also goes ``check`` to a worker that starts while a tracker
is marked: it checks that tracker itself (:meth:`.worker.Worker.recheck`). A worker
that dies is started again (after 1 s, doubling to 30 s while it keeps dying), and the
events it held are queued again at once (their leases name its pid). A worker whose
parent dies stops after its current event: no orphan keeps working a queue that a new
``scopeguard serve`` has taken over.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from .children import Channel, Children
from .metrics import Metrics
from .queue_lock import WorkersLock
from .settings import ServiceSettings

log = logging.getLogger("scopeguard.serve")


class ForwardedMetrics:
    """The worker side of the metrics: every count goes to the accepting process."""

    def __init__(self, channel: Channel, number: int) -> None:
        self.channel, self.number = channel, number

    def inc(self, name: str, value: float = 1, **labels: str) -> None:
        self.channel.send(("inc", self.number, (name, value, labels)))

    def observe(self, name: str, seconds: float) -> None:
        self.channel.send(("observe", self.number, (name, seconds)))


class Wake:
    """``set()`` wakes every worker (an event was queued): a word down each pipe, sent by
    a thread of its own, so the accepting event loop never waits on a full pipe."""

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool
        self.pending = threading.Event()
        threading.Thread(target=self._send, name="scopeguard-wake", daemon=True).start()

    def set(self) -> None:
        self.pending.set()

    def _send(self) -> None:
        while True:
            self.pending.wait()
            self.pending.clear()
            if self.pool.stopping.is_set():
                return
            for channel in list(self.pool.channels.values()):
                channel.send(("wake",))


class WorkerPool(Children):
    """``count`` worker processes over ``settings.queue``, watched and restarted.

    Args:
        settings: the service's settings (each worker runs one worker thread).
        metrics: where the workers' counts land.
        release: called with a dead worker's pid to queue its leased events again.
        log_level, secrets: the workers' logging, scrubbed like the parent's.
    """

    kind = "worker"

    def __init__(self, settings: ServiceSettings, count: int, metrics: Metrics,
                 release: Any, log_level: str, secrets: Sequence[str]) -> None:
        super().__init__()
        self.settings = replace(settings, workers=1)
        self.count, self.metrics, self.release = count, metrics, release
        self.numbers = range(1, count + 1)
        self.log_level, self.secrets = log_level, list(secrets)
        self.wake = Wake(self)  # after stopping: its thread reads it
        self.ready: set[int] = set()
        self.errors: dict[int, str] = {}
        self.queue_errors: dict[int, str] = {}
        self.known: dict[int, int] = {}
        # tracker: (when, why) of the newest report of any worker (see Worker.reach)
        self.reach: dict[str, tuple[float, str]] = {}
        self.restarts = 0
        self._backoff: dict[int, tuple[float, float]] = {}  # number: (delay, restarted at)
        self._mourned: dict[int, int] = {}  # number: the pid whose death was counted

    def spawn_process(self, number: int, conn: Any) -> Any:
        process = self.context.Process(
            target=worker_main, name=f"scopeguard-worker-{number}", daemon=True,
            args=(self.settings, number, self.log_level, self.secrets, conn))
        process.start()
        return process

    # --- what the accepting process reads ----------------------------------------------

    @property
    def error(self) -> str:
        """A start error of a worker (the model did not load...), while none is ready."""
        if self.ready:
            return ""
        return next(iter(self.errors.values()), "")

    @property
    def queue_error(self) -> str:
        return next((e for e in self.queue_errors.values() if e), "")

    def alive(self) -> int:
        return sum(p.is_alive() for p in self.processes.values())

    # --- the monitor thread --------------------------------------------------------------

    def apply(self, kind: str, number: int, data: Any) -> None:
        if kind == "inc":
            name, value, labels = data
            self.metrics.inc(name, value, **labels)
        elif kind == "observe":
            self.metrics.observe(*data)
        elif kind == "ready":
            self.ready.add(number)
            self.errors.pop(number, None)
            for tracker, (_, why) in list(self.reach.items()):  # (a mark whose worker died)
                if why and number in self.channels:
                    self.channels[number].send(("check", tracker))
        elif kind == "error":
            self.ready.discard(number)
            self.errors[number] = data
        elif kind == "queue":
            self.queue_errors[number] = data
        elif kind == "reach":  # the newest outcome wins, whichever worker had it
            tracker, when, why = str(data[0]), float(data[1]), str(data[2])
            if when >= self.reach.get(tracker, (-math.inf, ""))[0]:
                self.reach[tracker] = (when, why)
        elif kind == "known":
            self.known[number] = int(data)

    def died(self, number: int, process: Any) -> float:
        self.ready.discard(number)
        self.queue_errors.pop(number, None)
        delay, restarted_at = self._backoff.get(number, (0.5, 0.0))
        if number in self.errors:  # it could not start: the cause is on /healthz already
            delay = 30.0
        else:
            delay = min(30.0, delay * 2) if time.monotonic() - restarted_at < 60 else 1.0
        self._backoff[number] = (delay, restarted_at)
        if self._mourned.get(number) == process.pid:  # its restart failed: not a new death
            log.error("worker %d: starting it again in %.0fs", number, delay)
            return delay
        self._mourned[number] = process.pid
        self.restarts += 1
        self.metrics.inc("scopeguard_worker_restarts_total")
        # Exit code 0: it was told to stop (a SIGTERM sent to the whole group, as systemd
        # and `timeout` do, reaching it before this process stops the pool): no crash.
        log.log(logging.WARNING if process.exitcode == 0 else logging.ERROR,
                "worker %d (pid %s) stopped with exit code %s; its events are queued again; "
                "restarting it in %.0fs unless the service is stopping", number, process.pid,
                process.exitcode, delay)
        try:
            self.release(process.pid)
        except Exception as exc:  # noqa: BLE001 - their leases expire anyway
            log.warning("could not queue worker %d's events again: %s", number, exc)
        return delay

    def restarted(self, number: int, ok: bool) -> None:
        self._backoff[number] = (self._backoff.get(number, (0.5, 0.0))[0], time.monotonic())

    def stop(self, timeout: float = 30, before: Any = None) -> None:
        """Stop every worker after its current event; kill those that do not stop in time."""
        super().stop(timeout, before=self.wake.pending.set)  # ends the wake thread


def worker_main(settings: ServiceSettings, number: int, log_level: str, secrets: list[str],
                conn: Any) -> None:
    """One worker process: load the classifier, then work the queue until told to stop."""
    from .lifecycle import Service
    from .logs import setup_logging

    # Held for the worker's life: a new `scopeguard serve` waits for it before it takes
    # back leases, so a worker orphaned by its parent's death finishes its event alone.
    # (Replicas on PostgreSQL have no file to lock: a dead one's leases expire instead.)
    if not settings.store:  # (a thread of its own keeps it if the file is deleted)
        WorkersLock(settings.queue).hold()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group: the parent stops us
    # The cores are shared with the accepting process and the other workers: one
    # inference thread each unless SCOPEGUARD_THREADS says otherwise.
    os.environ.setdefault("SCOPEGUARD_THREADS", "1")
    stopping, wake = threading.Event(), threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: (stopping.set(), wake.set()))
    setup_logging(log_level, secrets)
    if settings.worker_nice:  # acceptance first: a busy worker yields the cores to it
        try:
            os.nice(settings.worker_nice)
        except OSError as exc:  # not allowed here: the worker runs at the parent's priority
            log.warning("worker %d could not lower its priority: %s", number, exc)
    channel = Channel(conn)

    checks: list[str] = []  # trackers the parent asks this worker to check

    def listen() -> None:
        """The parent's words: wake (an event was queued), stop, check (a tracker marked
        unreachable); its death (even by kill -9) reads as end of file: finish the event
        in hand, then stop."""
        while not stopping.is_set():
            try:
                message = conn.recv()
            except (OSError, EOFError):
                message = ("stop",)
            if message[0] == "stop":
                stopping.set()
            elif message[0] == "check":
                checks.append(str(message[1]))
            wake.set()

    threading.Thread(target=listen, daemon=True).start()
    try:
        service = Service(settings, role="worker", number=number,
                          metrics=ForwardedMetrics(channel, number), wake=wake,
                          stopping=stopping)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which shows it
        channel.send(("error", number, f"worker {number} could not start: {exc}"))
        raise SystemExit(3) from None  # the pool starts it again in 30 s (a file fixed...)
    service.worker.on_reach = lambda *reach: channel.send(("reach", number, reach))
    service.start_worker()
    if service.error:  # the model did not load: shown on /healthz, tried again in 30 s
        channel.send(("error", number, service.error))
        service.stop()
        raise SystemExit(3)
    channel.send(("ready", number, None))
    while not stopping.wait(1.0):
        while checks:  # the worker thread checks it (it runs recheck between events)
            service.worker.suspect(checks.pop())
        channel.send(("queue", number, service.worker.queue_error))
        if service.store is not None:
            try:
                service.store.refresh()  # what the other workers stored, for the count
            except Exception as exc:  # noqa: BLE001 - a locked file: the next second
                log.debug("cannot refresh the issue store: %s", exc)
            channel.send(("known", number, len(service.store)))
    service.stop()

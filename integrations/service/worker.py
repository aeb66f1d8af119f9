"""The service's worker loop: claim an event, hand it to the handler, ack, retry or fail it.

An event that raises is failed at once when retrying cannot help (the message says what
to change: :func:`.handlers.permanent`), else queued again after a backoff that doubles
from ``--retry-base`` up to ``--retry-max`` (or what ``Retry-After`` asked), and failed
after ``--max-attempts``. Every outcome is counted in the metrics and logged.

Example::

    worker = Worker(queue, handlers.handle, metrics, settings, stopping, wake, keep_seconds)
    threading.Thread(target=worker.run, args=("worker-1",), daemon=True).start()
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from scopeguard.errors import ScopeguardError

from ..jira.errors import JiraError
from .handlers import permanent, unreachable
from .metrics import Metrics
from .queue import Event, EventQueue, QueueError, describe
from .settings import ServiceSettings

HEARTBEAT_MAX = 1800.0  # seconds an event's lease is renewed while it is handled, at most

log = logging.getLogger("scopeguard.serve")


class Worker:
    """Runs queued events through ``handle``; one instance serves every worker thread.

    Args:
        queue: the durable queue.
        handle: turns an event into its outcome (the log line), or raises.
        metrics: where outcomes are counted.
        settings: retry timings.
        stopping: set to stop the loop.
        wake: set when an event is queued, so an idle worker takes it at once.
        keep_seconds: how long done deliveries are remembered (pruned hourly).
    """

    def __init__(self, queue: EventQueue, handle: Callable[[Event], str], metrics: Metrics,
                 settings: ServiceSettings, stopping: threading.Event, wake: threading.Event,
                 keep_seconds: float) -> None:
        self.queue, self.handle, self.metrics = queue, handle, metrics
        self.settings, self.stopping, self.wake = settings, stopping, wake
        self.keep_seconds = keep_seconds
        self.queue_error = ""  # why the last claim failed (for /healthz); "" once one works
        # (when, why) the last event failed for a cause every event meets (credentials
        # rejected, tracker unreachable); why is "" once an event succeeds (for /healthz)
        self.reach: tuple[float, str] = (0.0, "")
        self.on_reach: Callable[[tuple[float, str]], object] | None = None  # told at once

    def run(self, name: str) -> None:
        """Work until ``stopping`` is set: the target of one worker thread."""
        owner = self.queue.owner(name)
        pruned = time.monotonic()
        while not self.stopping.is_set():
            if name == "worker-1" and time.monotonic() - pruned > 3600:
                pruned = time.monotonic()
                self.queue.prune(self.keep_seconds)
            try:
                event = self.queue.claim(owner)
                self.queue_error = ""
            except Exception as exc:  # noqa: BLE001 - a locked or full disk must not kill it
                self.queue_error = (describe(self.queue.path, exc) if isinstance(
                    exc, sqlite3.Error) else f"the worker cannot read the queue ({exc}).")
                log.error("cannot read the queue; retrying in 1s: %s", self.queue_error)
                self.stopping.wait(1)
                continue
            try:
                if event is None:
                    due = self.queue.next_due()
                    # due but not claimable (its issue's other event is leased): poll gently
                    self.wake.wait(1.0 if due is None else min(1.0, max(0.05,
                                                                        due - time.time())))
                    self.wake.clear()
                    continue
                self._run(event, owner)
            except QueueError as exc:  # the store went away mid-event (a PostgreSQL restart):
                # the event stays leased and is claimed again when its lease expires
                self.queue_error = str(exc)
                log.error("the queue failed; retrying in 1s: %s", exc)
                self.stopping.wait(1)

    def _run(self, event: Event, owner: str) -> None:
        where = f"{event.issue_key or '?'} (delivery {event.delivery_id[:60]})"
        try:
            with self._heartbeat(event, owner):
                outcome = self.handle(event)
        except Exception as exc:  # noqa: BLE001 - failed for good, or retried later
            if unreachable(exc):
                self._reached(f"events cannot be written back: {exc}")
            if permanent(exc):
                self.queue.fail(event.delivery_id, owner, str(exc))
                self.metrics.inc("scopeguard_events_failed_total")
                log.error("%s: failed: %s", where, exc)
            else:
                self._retry(event, owner, where, exc)
            return
        self._reached("")  # before the ack: once the event shows done, /healthz knows
        if self._ack(event, owner, outcome):
            self.metrics.inc("scopeguard_events_processed_total",
                             outcome=outcome.split(":", 1)[0].split(" ", 1)[0])
            self.metrics.observe("scopeguard_event_latency_seconds",
                                 time.time() - event.received_at)
        log.info("%s: %s", where, outcome)

    def _reached(self, error: str) -> None:
        self.reach = (time.time(), error)
        if self.on_reach is not None:
            self.on_reach(self.reach)

    @contextmanager
    def _heartbeat(self, event: Event, owner: str) -> Iterator[None]:
        """Renew the event's lease every third of it while it is handled (a slow tracker
        must not let another worker or replica take the event and comment twice), for at
        most HEARTBEAT_MAX seconds: a hung handler still loses its lease in the end."""
        done = threading.Event()

        def beat() -> None:
            every, until = max(0.05, self.queue.lease / 3), time.monotonic() + HEARTBEAT_MAX
            while not done.wait(every) and time.monotonic() < until:
                try:
                    self.queue.renew(event.delivery_id, owner)
                except Exception as exc:  # noqa: BLE001 - the next beat tries again
                    log.warning("cannot renew the lease of %s: %s", event.delivery_id[:60], exc)

        thread = threading.Thread(target=beat, name="lease-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join(5)

    def _ack(self, event: Event, owner: str, outcome: str) -> bool:
        """Mark the event done. While the store cannot be reached (a PostgreSQL restart),
        try again each second for as long as the lease lasts: the write-back is done, and
        a lost ack would have the event processed again once its lease expired."""
        deadline = time.monotonic() + self.queue.lease
        while True:
            try:
                return self.queue.ack(event.delivery_id, owner, outcome)
            except QueueError as exc:
                if time.monotonic() > deadline or self.stopping.is_set():
                    raise
                log.warning("cannot mark delivery %s done yet; retrying in 1s: %s",
                            event.delivery_id[:60], exc)
                self.stopping.wait(1)

    def _retry(self, event: Event, owner: str, where: str, exc: Exception) -> None:
        """Queue the event again after a backoff, or give up after the last attempt."""
        message = str(exc) if isinstance(exc, ScopeguardError) else (
            f"{type(exc).__name__}: {exc}")
        delay = min(self.settings.retry_max,
                    self.settings.retry_base * 2 ** (event.attempts - 1))
        if isinstance(exc, JiraError) and exc.retry_after:
            # What the tracker asks, but never past --retry-max: a Retry-After of a day
            # (or a broken one) must not park the event beyond the configured cap.
            delay = min(self.settings.retry_max, max(delay, exc.retry_after))
        state = self.queue.retry(event.delivery_id, owner, message, delay)
        if state == "failed":
            self.metrics.inc("scopeguard_events_failed_total")
            log.error("%s: failed after %d attempts: %s", where, event.attempts, message)
        else:
            self.metrics.inc("scopeguard_events_retried_total")
            log.warning("%s: attempt %d failed, retrying in %.1fs: %s", where,
                        event.attempts, delay, message,
                        exc_info=not isinstance(exc, ScopeguardError))

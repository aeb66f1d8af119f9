"""The service's worker loop: claim an event, hand it to the handler, ack, retry or fail it.

An event that raises is failed at once when retrying cannot help (the message says what
to change: :func:`.handlers.permanent`), else queued again after a backoff that doubles
from ``--retry-base`` up to ``--retry-max`` (or what ``Retry-After`` asked), and failed
after ``--max-attempts``. Every outcome is counted in the metrics and logged.

``reach`` keeps, per tracker (``jira``, ``github``), whether its newest write-back failed
because it rejected the credentials or could not be reached (``/healthz`` is 503 while
one did): set by such a failure, cleared by an event of that tracker that succeeds or
by the worker's own check of it (:meth:`.handlers.Handlers.check`, at most every
``RECHECK_EVERY`` seconds while it is marked: no webhook has to come). A 5xx or 429 that
outlasted the retries may be one issue's: the check decides. Times are
``time.monotonic()`` (one clock for every process of the machine), and the newest
outcome wins, whichever thread or process had it.

Example::

    worker = Worker(queue, handlers.handle, metrics, settings, stopping, wake, keep_seconds)
    threading.Thread(target=worker.run, args=("worker-1",), daemon=True).start()
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from scopeguard.errors import ScopeguardError

from ..jira.errors import JiraError
from ..lease import LeaseLost, leased
from .handlers import permanent, reach, tracker_of
from .logs import mask_secrets
from .metrics import Metrics
from .queue import Event, EventQueue, QueueError, describe
from .settings import ServiceSettings

HEARTBEAT_MAX = 1800.0  # seconds an event's lease is renewed while it is handled, at most
RECHECK_EVERY = 30.0  # seconds between checks of a tracker marked unreachable, at least
TRACKERS = {"jira": "Jira", "github": "GitHub"}

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
        check: one cheap authenticated call to a tracker (``jira``, ``github``), raising
            when it fails (:meth:`.handlers.Handlers.check`); None: never checked.
    """

    recheck_every = RECHECK_EVERY

    def __init__(self, queue: EventQueue, handle: Callable[[Event], str], metrics: Metrics,
                 settings: ServiceSettings, stopping: threading.Event, wake: threading.Event,
                 keep_seconds: float, check: Callable[[str], object] | None = None) -> None:
        self.queue, self.handle, self.metrics = queue, handle, metrics
        self.settings, self.stopping, self.wake = settings, stopping, wake
        self.keep_seconds, self.check = keep_seconds, check
        self.queue_error = ""  # why the last claim failed (for /healthz); "" once one works
        # tracker: (when, why) its newest write-back failed for a cause every event meets
        # (credentials rejected, tracker unreachable); why is "" once one succeeded
        self.reach: dict[str, tuple[float, str]] = {}
        self.on_reach: Callable[[str, float, str], object] | None = None  # told at once
        self._checked: dict[str, float] = {}  # tracker: when its last check started
        self._suspects: set[str] = set()  # trackers to check at once (a 5xx, a new process)
        self._reach_lock = threading.Lock()

    def run(self, name: str) -> None:
        """Work until ``stopping`` is set: the target of one worker thread. Nothing a step
        raises ends it: a queue file that is locked, full or gone for a while (SQLite's own
        errors as much as a PostgreSQL store's) is said on /healthz and tried again each
        second, and an event whose outcome could not be stored stays leased until its lease
        expires, then is claimed again."""
        owner = self.queue.owner(name)
        pruned = time.monotonic()
        while not self.stopping.is_set():
            try:
                if name == "worker-1" and time.monotonic() - pruned > 3600:
                    pruned = time.monotonic()
                    self.queue.prune(self.keep_seconds)
                self._step(owner)
            except Exception as exc:  # noqa: BLE001 - the thread must outlive the failure
                self.queue_error = (describe(self.queue.path, exc) if isinstance(
                    exc, sqlite3.Error) else str(exc) if isinstance(exc, QueueError) else
                    f"the worker failed between events ({type(exc).__name__}: {exc}); see "
                    "the log.")
                log.error("the worker's step failed; going on in 1s: %s", self.queue_error,
                          exc_info=not isinstance(exc, sqlite3.Error | QueueError))
                self.stopping.wait(1)

    def _step(self, owner: str) -> None:
        """Check the trackers that are due, then claim one event and run it, or wait for
        one (at most a second)."""
        self.recheck()
        event = self.queue.claim(owner)
        self.queue_error = ""
        if event is None:
            due = self.queue.next_due()
            # due but not claimable (its issue's other event is leased): poll gently
            self.wake.wait(1.0 if due is None else min(1.0, max(0.05, due - time.time())))
            self.wake.clear()
            return
        self._run(event, owner)

    def _run(self, event: Event, owner: str) -> None:
        where = f"{event.issue_key or '?'} (delivery {event.delivery_id[:60]})"
        tracker = tracker_of(event)
        try:
            with self._heartbeat(event, owner), leased(
                    lambda: self.queue.renew(event.delivery_id, owner)):
                outcome = self.handle(event)
        except LeaseLost as exc:  # another worker has it: no ack, no retry, no failure
            log.warning("%s: %s", where, exc)
            return
        except Exception as exc:  # noqa: BLE001 - failed for good, or retried later
            cause = reach(exc)
            if cause == "down":
                self.reached(tracker, str(exc), time.monotonic())
            elif cause == "suspect":  # one issue's, or the tracker's: its check says
                self.suspect(tracker)
                self.recheck()
            if permanent(exc):
                self.queue.fail(event.delivery_id, owner, mask_secrets(str(exc)))
                self.metrics.inc("scopeguard_events_failed_total")
                log.error("%s: failed: %s", where, exc)
            else:
                self._retry(event, owner, where, exc)
            return
        # before the ack: once the event shows done, /healthz knows
        self.reached(tracker, "", time.monotonic())
        if self._ack(event, owner, outcome):
            self.metrics.inc("scopeguard_events_processed_total",
                             outcome=outcome.split(":", 1)[0].split(" ", 1)[0])
            self.metrics.observe("scopeguard_event_latency_seconds",
                                 time.time() - event.received_at)
        log.info("%s: %s", where, outcome)

    # --- reach: whether each tracker takes write-backs (for /healthz) --------------------

    def reached(self, tracker: str, error: str, when: float) -> None:
        """``tracker``'s outcome at ``when`` (monotonic): "" (it answered), else why no
        event can be written back to it. An outcome older than the one kept is dropped."""
        error = mask_secrets(error)  # shown on /healthz: no secret a tracker's answer repeated
        with self._reach_lock:
            before = self.reach.get(tracker, (-math.inf, ""))
            if when < before[0]:
                return
            self.reach[tracker] = (when, error)
            if error and not before[1]:  # newly marked: its first check in recheck_every
                self._checked[tracker] = when
        if error and not before[1]:
            log.error("%s write-backs fail: %s (checked again every %.0fs)",
                      TRACKERS.get(tracker, tracker), error, self.recheck_every)
        elif before[1] and not error:
            log.info("%s takes write-backs again", TRACKERS.get(tracker, tracker))
        if self.on_reach is not None:
            self.on_reach(tracker, when, error)

    def reach_snapshot(self) -> dict[str, tuple[float, str]]:
        """A copy of :attr:`reach` (other threads write it)."""
        with self._reach_lock:
            return dict(self.reach)

    def suspect(self, tracker: str) -> None:
        """Check ``tracker`` at the next :meth:`recheck` (its last check's answer holds
        for ``recheck_every`` seconds)."""
        with self._reach_lock:
            self._suspects.add(tracker)

    def recheck(self) -> None:
        """Check each tracker marked unreachable (or suspected) whose last check is
        ``recheck_every`` seconds old; one thread at a time checks a tracker."""
        if self.check is None:
            return
        now = time.monotonic()
        with self._reach_lock:
            due = [t for t in sorted({*self._suspects, *(t for t, (_, why) in self.reach.items()
                                                         if why)})
                   if now - self._checked.get(t, -math.inf) >= self.recheck_every]
            self._suspects.clear()
            for tracker in due:
                self._checked[tracker] = now
        for tracker in due:
            try:
                self.check(tracker)
            except Exception as exc:  # noqa: BLE001 - whatever it is, no event gets through
                error = str(exc) if isinstance(exc, ScopeguardError) else (
                    f"{type(exc).__name__} while checking {TRACKERS.get(tracker, tracker)}")
                self.reached(tracker, error, time.monotonic())
            else:
                self.reached(tracker, "", time.monotonic())

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
            except (QueueError, sqlite3.Error) as exc:
                if time.monotonic() > deadline or self.stopping.is_set():
                    raise
                log.warning("cannot mark delivery %s done yet; retrying in 1s: %s",
                            event.delivery_id[:60], exc)
                self.stopping.wait(1)

    def _retry(self, event: Event, owner: str, where: str, exc: Exception) -> None:
        """Queue the event again after a backoff, or give up after the last attempt."""
        message = mask_secrets(str(exc) if isinstance(exc, ScopeguardError) else (
            f"{type(exc).__name__}: {exc}"))
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


def describe_reach(reach: dict[str, tuple[float, str]]) -> str:
    """The ``/healthz`` error for the trackers whose newest write-back failed."""
    return " ".join(f"{TRACKERS.get(t, t)} write-backs fail: {why}"
                    for t, (_, why) in sorted(reach.items()) if why)

"""The running service: its parts (queue, store, clients, classifier, workers) and their life.

:class:`Service` opens the queue file (one process per file: a lock), loads the model off
the request path (``/healthz`` says ``loading`` meanwhile), re-embeds issues stored under
another model, seeds demand from a JQL query if asked, then starts the worker threads
(:mod:`.worker`), which run events through :mod:`.handlers`. The HTTP side is :mod:`.app`.

Roles: ``all`` does everything in one process (worker threads); ``front`` (what
``scopeguard serve`` runs) accepts webhooks and leaves the model to ``--workers``
processes (:mod:`.pool`), each a ``worker`` Service that loads the model and works the
queue, so a busy classifier never slows acceptance; ``acceptor`` (``--acceptors``,
:mod:`.acceptors`) only accepts webhooks, beside the front.

Example::

    service = Service(ServiceSettings.from_env())
    service.start()          # returns at once; workers start once the model is loaded
    ...
    service.stop()
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from scopeguard.backlog import check_request, is_feature_request
from scopeguard.errors import InputError, ScopeguardError
from scopeguard.positioning import Positioning

from ..github.app import GitHubAccess
from ..jira.client import JiraClient, make_jira
from ..jira.errors import JiraError
from ..jira.issues import fetch_issues
from ..jira.writeback import jira_label
from .handlers import Handlers
from .logs import client_secrets, keep_secrets, mask_secrets
from .metrics import Metrics
from .pool import WorkerPool
from .queue import QueueError, describe
from .queue_lock import wait_for_orphans
from .settings import ServiceSettings
from .storage import open_queue
from .store import IssueStore
from .worker import Worker, describe_reach

log = logging.getLogger("scopeguard.serve")


class Service:
    """The queue, the clients, the classifier and the worker threads.

    Args:
        settings: what ``scopeguard serve`` was told.
        client: a Jira client (default: :func:`make_jira` from settings and ``JIRA_*``;
            none when only GitHub webhooks are configured and no Jira URL is given).
        positioning: the positioning file (default: loaded from ``settings.config``).
        github: how to reach GitHub (default: ``GITHUB_*`` variables).
    """

    def __init__(self, settings: ServiceSettings, client: JiraClient | None = None,
                 positioning: Positioning | None = None,
                 github: GitHubAccess | None = None, *, role: str = "all", number: int = 1,
                 metrics: Any = None, wake: Any = None, stopping: Any = None,
                 log_level: str = "info") -> None:
        from scopeguard.runtime import load_config

        self.settings, self.role, self.number = settings, role, number
        self.positioning = positioning or load_config(settings.config)
        self.github = github or GitHubAccess.from_env()
        # masked in /healthz and stored errors whoever set up the logging (an embedding app)
        keep_secrets(settings.secrets() + self.github.secrets())
        if settings.github_webhook_secret and not self.github.configured:
            raise ScopeguardError(
                "SCOPEGUARD_GITHUB_WEBHOOK_SECRET is set but scopeguard has no way to write "
                "to GitHub. Fix: set GITHUB_TOKEN (issues: write, contents: write), or "
                "GITHUB_APP_ID and GITHUB_APP_PRIVATE_KEY for a GitHub App.")
        jira_wanted = bool(client or settings.jira_url or os.environ.get("JIRA_URL")
                           or not settings.github_webhook_secret)
        self.client: JiraClient | None = client or (
            make_jira(settings.jira_url, flavour=settings.jira_flavour) if jira_wanted else None)
        self.queue = open_queue(settings)  # the SQLite file, or the PostgreSQL store
        if role not in ("worker", "acceptor"):  # those share the main process's queue file
            self.queue.lock()
            self.queue.check()  # a damaged file is refused before it takes any event
        self.metrics = metrics or Metrics()
        self.pool: WorkerPool | None = None
        self.acceptors: Any = None  # an AcceptorPool (--acceptors above 1), set by app.run
        if role == "front":
            self.pool = WorkerPool(settings, settings.workers, self.metrics,
                                   self.queue.release_owner, log_level,
                                   settings.secrets() + client_secrets())
        self.wake = wake or (self.pool.wake if self.pool else threading.Event())
        self.stopping = stopping or threading.Event()
        self.ready = threading.Event()
        self._error = ""  # why the service cannot process events at all (health: 503)
        self.accept_error = ""  # why the last webhook could not be made durable (cleared)
        self.accept_error_at = 0.0  # when (monotonic): 15 s on, a good probe clears it
        self.guard: Any = None
        self.store: IssueStore | None = None
        self.handlers = Handlers(settings, self.positioning, self.client, self.github)
        self.worker = Worker(self.queue, self.handlers.handle, self.metrics, settings,
                             self.stopping, self.wake, self.keep_seconds,
                             check=self.handlers.check)
        self.threads: list[threading.Thread] = []

    @property
    def error(self) -> str:
        """Why no event can be processed (the model did not load...); "" when they can."""
        return self._error or (self.pool.error if self.pool else "")

    @error.setter
    def error(self, value: str) -> None:
        self._error = value

    def is_ready(self) -> bool:
        return bool(self.pool.ready) if self.pool else self.ready.is_set()

    def start_worker(self) -> None:
        """A worker process's start: load the classifier here, then run the worker."""
        self._load()

    def start(self) -> None:
        # Workers orphaned by an earlier serve's death finish their event first: taking
        # back their leases now would run that event twice.
        if not self.settings.store:  # replicas on PostgreSQL leave leases to expire
            wait_for_orphans(self.settings.queue, timeout=self.settings.lease)
        released = self.queue.release_leases()
        requeued = self.queue.requeue_failed() if self.settings.requeue_failed else 0
        pruned = self.queue.prune(self.keep_seconds)
        counts = self.queue.counts()
        log.info("queue %s: %d waiting (%d taken back from a previous process), %d done, "
                 "%d failed%s%s", self.settings.location, counts["queued"] + counts["leased"],
                 released, counts["done"], counts["failed"],
                 f", {requeued} failed queued again" if requeued else "",
                 f", {pruned} old deliveries forgotten" if pruned else "")
        if self.client is not None:
            log.info("Jira %s (%s); webhook auth: %s", self.client.server, self.client.flavour,
                     " and ".join(n for n, s in (("signature", self.settings.webhook_secret),
                                                ("token", self.settings.webhook_token)) if s)
                     or "none (POST /webhooks/jira refuses everything)")
        if self.settings.github_webhook_secret:
            log.info("GitHub %s (%s); repositories: %s", self.github.api_url,
                     f"App {self.github.app_id}" if self.github.app_id else "token",
                     ", ".join(self.settings.repositories) or "any")
        if self.acceptors is not None:
            self.acceptors.start()
        if self.pool is not None:
            self.pool.start()
            return
        loader = threading.Thread(target=self._load, name="scopeguard-loader", daemon=True)
        loader.start()
        self.threads.append(loader)

    def _load(self) -> None:
        """Load the model (seconds) off the request path, then start the workers."""
        from scopeguard.runtime import open_scopeguard

        try:
            started = time.perf_counter()
            self.guard = open_scopeguard(positioning=self.positioning, db=self.settings.db,
                                         model=self.settings.model, embedder=self._embedder())
            self._warm_up()
            if hasattr(self.guard.embedder, "tolerate"):  # a locked cache delays no event
                self.guard.embedder.tolerate(busy=2.0)
            torch = sys.modules.get("torch")
            if torch is not None and self.settings.torch_threads:
                # One request per inference: intra-op threads only spin against the event
                # loop and the Jira I/O (3x fewer events/s on 2 cores, bench/webhook.py).
                torch.set_num_threads(self.settings.torch_threads)
            try:
                self.store = IssueStore(self.queue, self.guard.embedder.model_id,
                                        shared=self.role == "worker" or self.queue.shared)
            except sqlite3.Error as exc:  # the queue file's issues table, not the model
                raise QueueError(describe(self.settings.queue, exc)) from None
            self.handlers.guard, self.handlers.store = self.guard, self.store
            # People's labels recorded before the queue file kept their verdict label.
            resolved = self.store.resolve_human_keys(
                {k: jira_label(name) for k, name in self.positioning.labels.items()})
            if resolved:
                log.info("queue %s: %d people's labels matched to verdict labels",
                         self.settings.location, resolved)
            # the first worker process re-embeds and seeds for all of them, once
            if self.number == 1 and self.store.stale:  # stored under another model
                self._remember_all(self.store.stale)
            if self.number > 1 or not self.settings.seed_jql:
                pass
            elif self.client is None:
                log.warning("--seed-jql is ignored: no Jira is configured")
            else:
                try:
                    self._seed(self.settings.seed_jql)
                except JiraError as exc:  # demand then starts from the webhooks alone
                    log.warning("cannot seed demand from %r: %s", self.settings.seed_jql, exc)
            log.info("classifier ready in %.1fs (model %s, %d issues known)",
                     time.perf_counter() - started, self.guard.embedder.model_id,
                     len(self.store))
            # Each tracker checked once now: a wrong credential or URL shows on /healthz
            # before the first webhook fails on it (a deploy's health check sees it).
            for tracker, configured in (("jira", self.client is not None),
                                        ("github", self.github.configured)):
                if configured:
                    self.worker.suspect(tracker)
            self.worker.recheck()
        except Exception as exc:  # noqa: BLE001 - reported on /healthz and in the log
            self.error = str(exc) if isinstance(exc, ScopeguardError) else (
                f"{type(exc).__name__} while starting the worker: {exc}. Fix: see the log "
                "line above; the events stay queued for a restart.")
            if isinstance(exc, ScopeguardError):  # a setting to fix: said, not a traceback
                log.error("cannot start the worker: %s", self.error)
            else:
                log.exception("cannot start the worker: %s", self.error)
            return
        for n in range(self.settings.workers):
            thread = threading.Thread(target=self.worker.run, args=(f"worker-{n + 1}",),
                                      name=f"scopeguard-worker-{n + 1}", daemon=True)
            thread.start()
            self.threads.append(thread)
        self.ready.set()  # after the workers run: /healthz never sees "ready" without them

    def _embedder(self) -> Any:
        """With a PostgreSQL store, the model behind the store's embedding cache (shared by
        the replicas); else None: the SQLite cache of --db."""
        if not self.settings.store:
            return None
        from scopeguard.runtime import make_embedder

        from .pg.cache import PgEmbeddingCache

        embedder = make_embedder(self.settings.model, self.settings.db, self.positioning,
                                 cache=False)
        embedder.cache = PgEmbeddingCache(self.queue.db)
        return embedder

    def _warm_up(self) -> None:
        """Load the model now and check what it returns: a broken model shows at start (on
        /healthz), not at the first event."""
        import numpy as np

        embedder = getattr(self.guard.embedder, "inner", self.guard.embedder)
        try:
            vectors = np.asarray(embedder.encode(["scopeguard is ready"]), dtype=np.float32)
        except Exception as exc:  # noqa: BLE001 - any failure of the model is the model's
            raise ScopeguardError(f"the embedding model {self.guard.embedder.model_id} failed "
                                  f"to embed a test sentence ({type(exc).__name__}: {exc}). "
                                  "Fix: check --model (SCOPEGUARD_MODEL) and that its files "
                                  "are whole.") from None
        if vectors.ndim != 2 or vectors.shape[0] != 1 or not np.isfinite(vectors).all() or \
                not np.any(vectors):
            raise ScopeguardError(f"the embedding model {self.guard.embedder.model_id} returned "
                                  f"an unusable vector (shape {vectors.shape}). Fix: check "
                                  "--model (SCOPEGUARD_MODEL).")

    def health(self) -> tuple[int, dict[str, Any]]:
        """(status code, body) of ``GET /healthz``: 200 only when events are being taken,
        stored and processed; 503 with the cause otherwise (loading, a failed start, a
        queue that cannot be written or read, workers that stopped, the newest write-back
        to Jira or to GitHub failed because it rejected the credentials or could not be
        reached: each tracker on its own, named)."""
        problems = [self.error, self.pool.queue_error if self.pool else self.worker.queue_error]
        try:
            counts = self.queue.counts()
            probe = self.queue.probe()
        except QueueError as exc:
            counts, probe = {}, str(exc)
        problems.append(probe)
        if self.accept_error and not probe and time.monotonic() - self.accept_error_at > 15:
            self.accept_error = ""  # no webhook since, and the file takes writes again
        problems.append(self.accept_error)
        if self.acceptors is not None:  # an acceptor process's own failed queue write
            problems.append(self.acceptors.accept_error(file_ok=not probe))
        # A tracker rejects the credentials or cannot be reached: each of its events fails.
        reach = dict(self.pool.reach) if self.pool else self.worker.reach_snapshot()
        problems.append(describe_reach(reach))
        workers = self.threads[1:]  # [0] is the loader
        if self.ready.is_set() and workers and not any(t.is_alive() for t in workers):
            problems.append("the worker threads stopped. Fix: see the log; restart scopeguard "
                            "serve (the events stay queued).")
        if self.pool is not None and self.pool.restarts and not self.pool.ready:
            problems.append("the worker processes stopped and are being started again (see "
                            "the log for why). Fix: if this lasts, see the log; the events "
                            "stay queued.")
        problem = next((p for p in problems if p), "")
        state = "error" if problem else "ready" if self.is_ready() else "loading"
        body: dict[str, Any] = {"status": state, "queue": counts,
                                "store": "postgresql" if self.settings.store else "sqlite",
                                "jira": self.client.flavour if self.client else None,
                                "github": bool(self.settings.github_webhook_secret)}
        if problem:
            body["error"] = mask_secrets(problem)  # unauthenticated: never a secret
        if self.acceptors is not None:  # which processes take webhooks beside this one
            body["acceptors"] = [{**a, **({"error": mask_secrets(a["error"])} if "error" in a
                                         else {})} for a in self.acceptors.status()]
        down = sorted(t for t, (_, why) in reach.items() if why)
        if down:  # which trackers' write-backs fail (the error says why)
            body["unreachable"] = down
        return (200 if state == "ready" else 503), body

    def _remember_all(self, requests: Sequence[Any]) -> None:
        """Embed and store issues for demand (a request that cannot be classified is left out)."""
        assert self.store is not None
        usable = []
        for request in requests:
            try:
                usable.append(check_request(request))
            except InputError:
                continue
        for at in range(0, len(usable), 256):
            batch = usable[at:at + 256]
            prepared = self.guard.prepare(batch)  # customers resolved: demand counts them
            _, vectors = self.guard.embed(prepared)
            self.store.remember_many(prepared, [v.mean for v in vectors])

    def _seed(self, jql: str) -> None:
        requests = fetch_issues(self.client, jql, customer_field=self.handlers.customer_field())
        keep = [r for r in requests if is_feature_request(r, self.positioning.filters)[0]]
        self._remember_all(keep)
        log.info("seeded demand with %d issues from %r", len(keep), jql)

    def stop(self, timeout: float = 30) -> None:
        """Stop the workers (an event in progress finishes), then fold both SQLite files'
        write-ahead logs into them: after a clean stop a copy of the files is complete."""
        if self.acceptors is not None:  # first: what they hold is queued before workers stop
            self.acceptors.stop(timeout)
        self.stopping.set()
        self.wake.set()
        if self.pool is not None:
            self.pool.stop(timeout)
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        cache = getattr(getattr(self.guard, "embedder", None), "cache", None)
        if cache is not None:
            cache.close()
        self.queue.close()

    @property
    def keep_seconds(self) -> float:
        """How long done deliveries are remembered: the longer of --keep-days and the
        replay window (a replay is recognised only while its body's hash is kept)."""
        return max(self.settings.keep_days * 86400, self.settings.replay_window)

    def gauges(self) -> dict[str, tuple[str, float]]:
        try:
            counts = self.queue.counts()
        except QueueError:  # the store is down: unknown, not zero
            counts = {"queued": math.nan, "leased": math.nan, "failed": math.nan}
        return {
            "scopeguard_queue_depth": ("Events waiting or being processed.",
                                       counts["queued"] + counts["leased"]),
            "scopeguard_queue_failed": ("Events given up on, kept in the queue file.",
                                        counts["failed"]),
            "scopeguard_issues_known": ("Issues the service has classified (demand).",
                                        len(self.store) if self.store else max(
                                            self.pool.known.values(), default=0)
                                        if self.pool else 0),
            "scopeguard_worker_ready": ("1 once the classifier is loaded.",
                                        1 if self.is_ready() else 0),
            "scopeguard_worker_processes": ("Worker processes alive (0: in-process threads).",
                                            self.pool.alive() if self.pool else 0),
        }

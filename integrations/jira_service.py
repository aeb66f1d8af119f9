"""The Jira webhook service: an ASGI app (Starlette) that queues webhooks durably, and
worker threads that classify the issues and write the verdicts back to Jira.

Routes:

- ``POST /webhooks/jira``: ``jira:issue_created`` and ``jira:issue_updated`` webhooks
  (or a Jira Automation "Send web request"). Authenticated by the webhook secret
  (``X-Hub-Signature: sha256=<HMAC-SHA256 of the raw body>``, what Jira sends when the
  webhook has a secret) or by a shared token (``Authorization: Bearer <token>``,
  ``X-Scopeguard-Token: <token>`` or ``?token=``), compared in constant time
  (:mod:`.jira_auth`). The answer is 202 once the event is in the SQLite queue; 200 for
  a delivery id seen before; 202 with ``"status": "ignored"`` for events the positioning
  file's ``jira:`` section does not watch; 401 unauthenticated, 413 too large, 400
  malformed, with a message.
- ``POST /webhooks/github``: GitHub ``issues`` webhooks (a GitHub App's, or a repository's
  or organisation's), signed ``X-Hub-Signature-256`` with
  ``SCOPEGUARD_GITHUB_WEBHOOK_SECRET``; queued the same way, then handled by the GitHub
  Action's flow (:mod:`.github_webhook`). 404 when no GitHub secret is configured.
- ``GET /healthz``: 200 while the worker is loading or ready, 503 if it failed to start.
- ``GET /metrics``: Prometheus text format (:mod:`.jira_metrics`).

The worker reads the issue fresh from Jira (a webhook can arrive late or out of order),
classifies it with demand from the other issues the service has seen (kept in the same
SQLite file, :mod:`.jira_queue`), and writes back through :mod:`.jira_client`.

Run it with ``scopeguard serve`` (see ``scopeguard serve --help``), or with
``uvicorn --factory scopeguard.integrations.jira_service:app_from_env``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import partial
from typing import Any

from scopeguard import render
from scopeguard.backlog import check_request, is_feature_request
from scopeguard.errors import ConfigError, InputError, ScopeguardError
from scopeguard.positioning import Positioning

from . import github_webhook
from .github_client import GitHubError
from .github_webhook import EVENT_PREFIX as GITHUB_EVENT
from .github_webhook import GitHubAccess
from .jira_auth import authenticate
from .jira_client import (
    ISSUE_FIELDS,
    JiraClient,
    JiraConfigError,
    JiraError,
    JiraNotFoundError,
    JiraRequestError,
    fetch_issues,
    issue_to_request,
    jira_label,
    make_jira,
    write_back,
)
from .jira_metrics import Metrics
from .jira_queue import Event, EventQueue, IssueStore

log = logging.getLogger("scopeguard.serve")

WATCHED_EVENTS = ("jira:issue_created", "jira:issue_updated")
# Jira reports comment changes as issue_updated too; scopeguard's own comment must not
# trigger another round (issue_event_type_name, Jira's name for what happened).
COMMENT_EVENT_TYPES = ("issue_commented", "issue_comment_edited", "issue_comment_deleted")
RELEVANT_FIELDS = {"summary", "description", "issuetype", "labels", "project", "key"}
DEFAULT_MAX_BODY = 1024 * 1024
MIN_SECRET = 16  # characters: shorter webhook secrets and tokens are refused at start
SECRET_FIELDS = ("webhook_secret", "webhook_token", "github_webhook_secret")
_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]*-\d+$")
_DELIVERY = re.compile(r"^[\x21-\x7e]{1,200}$")


# --- settings --------------------------------------------------------------------------------


@dataclass
class ServiceSettings:
    """Everything ``scopeguard serve`` is told; secrets are left out of ``repr``."""

    config: str | None = None
    db: str | None = None
    model: str | None = None
    queue: str = "scopeguard-queue.db"
    workers: int = 1
    max_body: int = DEFAULT_MAX_BODY
    lease: float = 300.0
    max_attempts: int = 10
    retry_base: float = 10.0  # seconds before the first re-try of a failed event; doubles
    retry_max: float = 600.0
    durable: bool = True
    keep_days: float = 14.0
    torch_threads: int = 1  # 0 leaves torch's default (one per core)
    requeue_failed: bool = False
    seed_jql: str = ""
    jira_url: str | None = None
    jira_flavour: str | None = None
    webhook_secret: str = field(default="", repr=False)
    webhook_token: str = field(default="", repr=False)
    github_webhook_secret: str = field(default="", repr=False)
    github_repositories: str = ""  # comma-separated owner/repo; "" takes every repository
    # A signed body accepted within this many seconds is a duplicate whatever its delivery
    # id: the delivery id is outside the signature, so a captured body could be replayed.
    replay_window: float = 86400.0
    # Seconds a client has to send a whole request (headers and body), and the most
    # connections served at once; beyond it new requests get 503 (the sender retries).
    request_timeout: float = 10.0
    max_connections: int = 1000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **given: Any) -> ServiceSettings:
        """Given values (not None), else ``SCOPEGUARD_*`` variables, else defaults."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            if given.get(f.name) is not None:
                values[f.name] = given[f.name]
                continue
            raw = env.get("SCOPEGUARD_" + f.name.upper())
            if raw is None or raw == "":
                continue
            kind = type(f.default)
            try:
                values[f.name] = (raw.strip().lower() in ("1", "true", "yes", "on")
                                  if kind is bool else kind(raw) if kind in (int, float) else raw)
            except ValueError:
                raise ScopeguardError(f"SCOPEGUARD_{f.name.upper()}={raw!r} is not a "
                                      f"{kind.__name__}. Fix: set a valid value or unset "
                                      "it.") from None
        for name in SECRET_FIELDS:  # a trailing newline from a secrets file is not the secret
            if isinstance(values.get(name), str):
                values[name] = values[name].strip()
        for name in SECRET_FIELDS:
            given_raw = given.get(name) if given.get(name) is not None else env.get(
                "SCOPEGUARD_" + name.upper())
            if given_raw and len(values.get(name, "")) < MIN_SECRET:
                variable = "SCOPEGUARD_" + name.upper()
                what = "is only whitespace" if not values.get(name) else (
                    f"is {len(values[name])} characters long")
                raise ScopeguardError(
                    f"{variable} {what}; a webhook secret or token needs at least "
                    f"{MIN_SECRET} characters, or it can be guessed. Fix: set it to a random "
                    "value, e.g. the output of `python -c \"import secrets; "
                    "print(secrets.token_hex(32))\"`, in scopeguard and in the webhook.")
        settings = cls(**values)
        for name in ("lease", "retry_base", "retry_max", "keep_days", "replay_window",
                     "request_timeout"):
            value = getattr(settings, name)
            if not 0 < value < float("inf"):
                raise ScopeguardError(f"SCOPEGUARD_{name.upper()}={value!r} is not a number of "
                                      "seconds above 0. Fix: set a positive number, or unset "
                                      "it for the default.")
        if settings.max_connections < 1 or settings.workers < 1:
            raise ScopeguardError("SCOPEGUARD_MAX_CONNECTIONS and SCOPEGUARD_WORKERS must be "
                                  "at least 1. Fix: set a positive whole number, or unset it.")
        if not (settings.webhook_secret or settings.webhook_token
                or settings.github_webhook_secret):
            raise ScopeguardError(
                "no webhook authentication configured. Fix: set SCOPEGUARD_WEBHOOK_SECRET "
                "to the secret of the Jira webhook (Jira signs each delivery with it), "
                "and/or SCOPEGUARD_WEBHOOK_TOKEN to a shared token for Jira Automation's "
                "'Send web request' (header 'Authorization: Bearer <token>'); for GitHub, "
                "SCOPEGUARD_GITHUB_WEBHOOK_SECRET to the GitHub webhook's (or App's) secret.")
        return settings

    @property
    def repositories(self) -> list[str]:
        return [r.strip() for r in self.github_repositories.split(",") if r.strip()]

    def secrets(self) -> list[str]:
        return [s for s in (self.webhook_secret, self.webhook_token,
                            self.github_webhook_secret) if s]


# --- payloads ------------------------------------------------------------------------------


class BadWebhook(InputError):
    """A webhook body that cannot be queued (the message is the 400 answer)."""


@dataclass(frozen=True)
class Webhook:
    delivery_id: str
    event: str
    key: str
    payload: dict[str, Any]


def parse_webhook(body: bytes, headers: Mapping[str, str]) -> Webhook:
    """The delivery id, event name and issue key of a webhook body, or :class:`BadWebhook`.

    The delivery id is Jira's ``X-Atlassian-Webhook-Identifier`` (the same on every retry
    of a delivery), else an ``X-Scopeguard-Delivery`` header, else a hash of the body:
    a retried Automation request has the same body.
    """
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadWebhook(f"the body is not valid JSON ({exc}). Fix: send the Jira webhook "
                         "payload, or Automation's 'Issue data (Jira format)'.") from None
    if not isinstance(payload, dict):
        raise BadWebhook("the body is JSON but not an object. Fix: send the Jira webhook "
                         "payload, an object with 'webhookEvent' and 'issue'.")
    event = payload.get("webhookEvent")
    if event is not None and not isinstance(event, str):
        raise BadWebhook("'webhookEvent' must be a string. Fix: send the Jira webhook payload "
                         "(e.g. 'webhookEvent': 'jira:issue_created'), or leave it out.")
    issue = payload.get("issue")
    key = issue.get("key") if isinstance(issue, dict) else None
    if (event is None or event in WATCHED_EVENTS) and not (isinstance(key, str)
                                                          and _KEY.match(key)):
        problem = ("has no 'issue'" if not isinstance(issue, dict) else "has no 'issue.key'"
                   if key is None else f"has {str(key)[:40]!r} as 'issue.key', not an issue "
                   "key like PAW-12")
        raise BadWebhook(f"the payload {problem}. Fix: send the Jira webhook payload; from "
                         "Automation use the body 'Issue data (Jira format)', or custom data "
                         "like {\"issue\": {\"key\": \"{{issue.key}}\"}}.")
    delivery = (headers.get("x-atlassian-webhook-identifier") or
                headers.get("x-scopeguard-delivery") or
                "sha256:" + hashlib.sha256(body).hexdigest()).strip()
    if not _DELIVERY.match(delivery):
        raise BadWebhook("the delivery id header is longer than 200 characters or not "
                         "printable ASCII. Fix: send a short X-Scopeguard-Delivery id.")
    if delivery.startswith(GITHUB_EVENT):
        raise BadWebhook(f"delivery ids starting {GITHUB_EVENT!r} are GitHub's (the queue is "
                         "shared). Fix: send another X-Scopeguard-Delivery id.")
    return Webhook(delivery, event or "automation", key or "", payload)


def ignore_reason(hook: Webhook, positioning: Positioning, customer_field: str = "") -> str:
    """Why a webhook is acknowledged without queueing it, or "" to queue it."""
    if hook.event not in (*WATCHED_EVENTS, "automation"):
        return f"event {hook.event!r} is not watched"
    payload = hook.payload
    if payload.get("issue_event_type_name") in COMMENT_EVENT_TYPES:
        return f"{payload['issue_event_type_name']} (a comment changed, not the request)"
    items = (payload.get("changelog") or {}).get("items")
    if hook.event == "jira:issue_updated" and isinstance(items, list) and items:
        relevant = RELEVANT_FIELDS | {customer_field.lower()}
        changed = {str(i.get(k, "")).lower() for i in items if isinstance(i, dict)
                   for k in ("field", "fieldId")}
        if not changed & relevant:
            return "no change to the summary, description, type, labels or customer"
    fields_ = (payload.get("issue") or {}).get("fields")
    if isinstance(fields_, dict):
        project = str((fields_.get("project") or {}).get("key", ""))
        issue_type = str((fields_.get("issuetype") or {}).get("name", ""))
        return watch_reason(positioning, project, issue_type)
    return ""


def watch_reason(positioning: Positioning, project: str, issue_type: str) -> str:
    """Why the positioning file's ``jira:`` section does not watch an issue, or ""."""
    jira = positioning.jira
    if project and jira.projects and project.upper() not in {p.upper() for p in jira.projects}:
        return f"project {project} is not in jira.projects"
    if issue_type and jira.issue_types and issue_type.lower() not in {
            t.lower() for t in jira.issue_types}:
        return f"issue type {issue_type!r} is not in jira.issue_types"
    return ""


# --- logging that cannot leak a secret ---------------------------------------------------------


_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")


class Scrub(logging.Filter):
    """Replaces any configured secret in a log record with ``***`` (defence in depth)."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
            record.exc_text = None
        for secret in self.secrets:
            message = message.replace(secret, "***")
        message = _USERINFO.sub(r"\1***@", message)  # credentials written into any URL
        record.msg, record.args = message, ()
        return True


def setup_logging(level: str, secrets: Sequence[str]) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(Scrub(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # urllib3 would log URLs at DEBUG; the jira library dumps response headers at DEBUG.
    for noisy in ("urllib3", "jira", "github"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))


def client_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """The Jira and GitHub credentials in the environment, and their basic-auth encoding."""
    env = os.environ if environ is None else environ
    email = env.get("JIRA_EMAIL") or env.get("JIRA_USER") or ""
    token, pat = env.get("JIRA_TOKEN", ""), env.get("JIRA_PAT", "")
    out = [s for s in (token, pat, env.get("GITHUB_TOKEN", "").strip(),
                       env.get("GITHUB_APP_PRIVATE_KEY", "").strip()) if s]
    if email and token:
        out.append(base64.b64encode(f"{email}:{token}".encode()).decode())
    return out


# --- the worker --------------------------------------------------------------------------------


class KeyLocks:
    """One lock per issue key: two events of one issue never run at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextlib.contextmanager
    def hold(self, key: str) -> Any:
        with self._lock:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._lock:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)


def permanent(exc: Exception) -> bool:
    """Whether retrying cannot fix ``exc``: its message says what to change. (Rejected
    credentials and permissions are retried: they are fixed outside scopeguard.)"""
    if isinstance(exc, GitHubError):  # GitHub refused the request itself
        return exc.status in (400, 404, 410, 422)
    return isinstance(exc, (InputError, ConfigError, JiraRequestError, JiraConfigError,
                            ValueError, KeyError))


class SerialGuard:
    """A ``Scopeguard`` whose ``classify`` runs one call at a time (CPU-bound, and the
    embedding cache's SQLite connection is shared)."""

    def __init__(self, guard: Any, lock: threading.Lock) -> None:
        self.guard, self.lock = guard, lock

    def classify(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            return self.guard.classify(*args, **kwargs)


class Service:
    """The queue, the Jira client, the classifier and the worker threads.

    Args:
        settings: what ``scopeguard serve`` was told.
        client: a Jira client (default: :func:`make_jira` from settings and ``JIRA_*``;
            none when only GitHub webhooks are configured and no Jira URL is given).
        positioning: the positioning file (default: loaded from ``settings.config``).
        github: how to reach GitHub (default: ``GITHUB_*`` variables).
    """

    def __init__(self, settings: ServiceSettings, client: JiraClient | None = None,
                 positioning: Positioning | None = None,
                 github: GitHubAccess | None = None) -> None:
        from scopeguard.runtime import load_config

        self.settings = settings
        self.positioning = positioning or load_config(settings.config)
        self.github = github or GitHubAccess.from_env()
        if settings.github_webhook_secret and not self.github.configured:
            raise ScopeguardError(
                "SCOPEGUARD_GITHUB_WEBHOOK_SECRET is set but scopeguard has no way to write "
                "to GitHub. Fix: set GITHUB_TOKEN (issues: write, contents: write), or "
                "GITHUB_APP_ID and GITHUB_APP_PRIVATE_KEY for a GitHub App.")
        jira_wanted = bool(client or settings.jira_url or os.environ.get("JIRA_URL")
                           or not settings.github_webhook_secret)
        self.client: JiraClient | None = client or (
            make_jira(settings.jira_url, flavour=settings.jira_flavour) if jira_wanted else None)
        self.queue = EventQueue(settings.queue, lease=settings.lease,
                                max_attempts=settings.max_attempts, durable=settings.durable)
        self.queue.lock()
        self.metrics = Metrics()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.ready = threading.Event()
        self.error = ""
        self.guard: Any = None
        self.store: IssueStore | None = None
        self.key_locks = KeyLocks()
        self.classify_lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        released = self.queue.release_leases()
        requeued = self.queue.requeue_failed() if self.settings.requeue_failed else 0
        pruned = self.queue.prune(self.keep_seconds)
        counts = self.queue.counts()
        log.info("queue %s: %d waiting (%d taken back from a previous process), %d done, "
                 "%d failed%s%s", self.settings.queue, counts["queued"] + counts["leased"],
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
        loader = threading.Thread(target=self._load, name="scopeguard-loader", daemon=True)
        loader.start()
        self.threads.append(loader)

    def _load(self) -> None:
        """Load the model (seconds) off the request path, then start the workers."""
        from scopeguard.runtime import open_scopeguard

        try:
            started = time.perf_counter()
            self.guard = open_scopeguard(positioning=self.positioning, db=self.settings.db,
                                         model=self.settings.model)
            torch = sys.modules.get("torch")
            if torch is not None and self.settings.torch_threads:
                # One request per inference: intra-op threads only spin against the event
                # loop and the Jira I/O (3x fewer events/s on 2 cores, bench/webhook.py).
                torch.set_num_threads(self.settings.torch_threads)
            self.store = IssueStore(self.queue, self.guard.embedder.model_id)
            # People's labels recorded before the queue file kept their verdict label.
            resolved = self.store.resolve_human_keys(
                {k: jira_label(name) for k, name in self.positioning.labels.items()})
            if resolved:
                log.info("queue %s: %d people's labels matched to verdict labels",
                         self.settings.queue, resolved)
            if self.store.stale:  # stored under another model: embed them again, once
                self._remember_all(self.store.stale)
            if self.settings.seed_jql and self.client is None:
                log.warning("--seed-jql is ignored: no Jira is configured")
            elif self.settings.seed_jql:
                try:
                    self._seed(self.settings.seed_jql)
                except JiraError as exc:  # demand then starts from the webhooks alone
                    log.warning("cannot seed demand from %r: %s", self.settings.seed_jql, exc)
            log.info("classifier ready in %.1fs (model %s, %d issues known)",
                     time.perf_counter() - started, self.guard.embedder.model_id,
                     len(self.store))
        except Exception as exc:  # noqa: BLE001 - reported on /healthz and in the log
            self.error = str(exc) if isinstance(exc, ScopeguardError) else (
                f"{type(exc).__name__}: the classifier failed to load; see the log.")
            log.exception("cannot start the worker: %s", self.error)
            return
        self.ready.set()
        for n in range(self.settings.workers):
            thread = threading.Thread(target=self._work, args=(f"worker-{n + 1}",),
                                      name=f"scopeguard-worker-{n + 1}", daemon=True)
            thread.start()
            self.threads.append(thread)

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
        requests = fetch_issues(self.client, jql, customer_field=self.customer_field())
        keep = [r for r in requests if is_feature_request(r, self.positioning.filters)[0]]
        self._remember_all(keep)
        log.info("seeded demand with %d issues from %r", len(keep), jql)

    def stop(self, timeout: float = 30) -> None:
        self.stopping.set()
        self.wake.set()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.queue.close()

    @property
    def keep_seconds(self) -> float:
        """How long done deliveries are remembered: the longer of --keep-days and the
        replay window (a replay is recognised only while its body's hash is kept)."""
        return max(self.settings.keep_days * 86400, self.settings.replay_window)

    def customer_field(self) -> str:
        """The customer field's id (the client remembers it), or "" without Jira."""
        return self.client.field_id(self.positioning.jira.customer_field) if self.client else ""

    # --- the loop --------------------------------------------------------------------------

    def _work(self, name: str) -> None:
        owner = f"{os.getpid()}:{name}"
        pruned = time.monotonic()
        while not self.stopping.is_set():
            if name == "worker-1" and time.monotonic() - pruned > 3600:
                pruned = time.monotonic()
                self.queue.prune(self.keep_seconds)
            try:
                event = self.queue.claim(owner)
            except Exception:  # noqa: BLE001 - a locked or full disk must not kill the worker
                log.exception("cannot read the queue; retrying in 1s")
                self.stopping.wait(1)
                continue
            if event is None:
                due = self.queue.next_due()
                self.wake.wait(1.0 if due is None else min(1.0, max(0.01, due - time.time())))
                self.wake.clear()
                continue
            self._run(event, owner)

    def _run(self, event: Event, owner: str) -> None:
        where = f"{event.issue_key or '?'} (delivery {event.delivery_id[:60]})"
        try:
            outcome = self.handle(event)
        except Exception as exc:  # noqa: BLE001 - failed for good, or retried later
            if permanent(exc):
                self.queue.fail(event.delivery_id, owner, str(exc))
                self.metrics.inc("scopeguard_events_failed_total")
                log.error("%s: failed: %s", where, exc)
            else:
                self._retry(event, owner, where, exc)
            return
        if self.queue.ack(event.delivery_id, owner, outcome):
            self.metrics.inc("scopeguard_events_processed_total",
                             outcome=outcome.split(":", 1)[0].split(" ", 1)[0])
            self.metrics.observe("scopeguard_event_latency_seconds",
                                 time.time() - event.received_at)
        log.info("%s: %s", where, outcome)

    def _retry(self, event: Event, owner: str, where: str, exc: Exception) -> None:
        """Queue the event again after a backoff, or give up after the last attempt."""
        message = str(exc) if isinstance(exc, ScopeguardError) else (
            f"{type(exc).__name__}: {exc}")
        delay = min(self.settings.retry_max,
                    self.settings.retry_base * 2 ** (event.attempts - 1))
        if isinstance(exc, JiraError) and exc.retry_after:
            delay = max(delay, exc.retry_after)
        state = self.queue.retry(event.delivery_id, owner, message, delay)
        if state == "failed":
            self.metrics.inc("scopeguard_events_failed_total")
            log.error("%s: failed after %d attempts: %s", where, event.attempts, message)
        else:
            self.metrics.inc("scopeguard_events_retried_total")
            log.warning("%s: attempt %d failed, retrying in %.1fs: %s", where,
                        event.attempts, delay, message,
                        exc_info=not isinstance(exc, ScopeguardError))

    def handle(self, event: Event) -> str:
        """Classify the event's issue and write back; returns the outcome for the log."""
        payload = json.loads(event.payload)
        if event.event.startswith(GITHUB_EVENT):
            return self.handle_github(event.issue_key, payload)
        if self.client is None:
            raise JiraConfigError("a Jira event is queued but no Jira is configured. Fix: "
                                  "set JIRA_URL and its credentials, then --requeue-failed.")
        key = str(payload["issue"]["key"])
        with self.key_locks.hold(key):
            customer_field = self.customer_field()
            fields_ = [*ISSUE_FIELDS, *([customer_field] if customer_field else [])]
            try:
                raw = self.client.get_issue(key, fields_)
            except JiraNotFoundError:
                return "skipped: the issue is gone or the scopeguard user cannot see it"
            request = issue_to_request(raw, self.client.server, customer_field)
            why = watch_reason(self.positioning, request.extra.get("project", ""),
                               request.extra.get("issue_type", ""))
            if not why:
                ok, because = is_feature_request(request, self.positioning.filters)
                why = "" if ok else f"not a feature request: it {because}"
            if why:
                return f"skipped: {why}"
            try:
                check_request(request, f"issue {key}")
            except InputError as exc:  # e.g. a 2 MB description: not retried, not a failure
                return f"skipped: {exc}"
            guard = self.guard
            assert self.store is not None
            with self.classify_lock:  # CPU-bound; Jira I/O of other events goes on meanwhile
                [prepared] = guard.prepare([request])
                _, [vectors] = guard.embed([prepared])
                # Only requests above the similarity threshold count as demand; finding
                # them here keeps classify() from re-reading every issue ever seen.
                backlog = self.store.similar(vectors.mean, guard.rules.similar - 1e-6, key)
                verdict = guard.classify(request, backlog)
                self.store.remember(prepared, vectors.mean)
            seen = self.store.seen(key)
            product = self.positioning.product

            def markdown(label_name: str) -> str:
                return render.to_markdown(verdict, label_name, product)

            result = write_back(self.client, key, verdict.label, markdown,
                                self.positioning.labels, request.labels,
                                applied=seen.applied, comment_hint=seen.comment_id)
            self.store.record_write_back(key, result.comment_id, result.applied,
                                         result.human_label, predicted=verdict.label,
                                         human_key=result.human_key)
        return f"{verdict.label} ({verdict.confidence:.0%}): {result.summary()}"

    def handle_github(self, key: str, payload: dict[str, Any]) -> str:
        """Run the GitHub Action's flow for a queued GitHub webhook."""
        # One event per issue at a time; only the classification itself is serialised,
        # GitHub reads and writes of other events go on meanwhile.
        with self.key_locks.hold(key):
            return github_webhook.handle(payload, access=self.github,
                                         positioning=self.positioning,
                                         guard=SerialGuard(self.guard, self.classify_lock),
                                         db=self.settings.db)

    def gauges(self) -> dict[str, tuple[str, float]]:
        counts = self.queue.counts()
        return {
            "scopeguard_queue_depth": ("Events waiting or being processed.",
                                       counts["queued"] + counts["leased"]),
            "scopeguard_queue_failed": ("Events given up on, kept in the queue file.",
                                        counts["failed"]),
            "scopeguard_issues_known": ("Issues the service has classified (demand).",
                                        len(self.store) if self.store else 0),
            "scopeguard_worker_ready": ("1 once the classifier is loaded.",
                                        1 if self.ready.is_set() else 0),
        }


# --- the ASGI app ------------------------------------------------------------------------------


class TooLarge(Exception):
    """The body exceeds the limit."""


class TooSlow(Exception):
    """The body did not arrive within the request timeout."""


class Gone(Exception):
    """The client went away before its body was read."""


async def read_body(request: Any, limit: int, timeout: float | None = None) -> bytes:
    """The raw body, at most ``limit`` bytes, read within ``timeout`` seconds.

    The protocol (:mod:`.http_guard`) already cuts off requests not complete in time; the
    timeout here also covers the app run under another server (``uvicorn --factory``).
    """
    from starlette.requests import ClientDisconnect

    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise TooLarge
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise TooLarge
                chunks.append(chunk)
    except TimeoutError:
        raise TooSlow from None
    except ClientDisconnect:
        raise Gone from None
    return b"".join(chunks)


def create_app(service: Service) -> Any:
    """The Starlette app; its lifespan starts and stops the service's workers."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    settings, metrics = service.settings, service.metrics

    def answer(code: int, started: float, **body: Any) -> JSONResponse:
        metrics.observe("scopeguard_webhook_accept_seconds", time.perf_counter() - started)
        return JSONResponse(body, status_code=code)

    def reject(code: int, started: float, reason: str, peer: str, error: str) -> JSONResponse:
        metrics.inc("scopeguard_webhooks_rejected_total", reason=reason)
        log.warning("rejected a webhook from %s: %s", peer, error.split(". Fix")[0])
        return answer(code, started, error=error)

    async def receive(request: Request, started: float) -> bytes | JSONResponse:
        """The body, or the 413 (too large), 408 (too slow) or 400 (gone) answer."""
        peer = request.client.host if request.client else "?"
        try:
            return await read_body(request, settings.max_body, settings.request_timeout)
        except TooSlow:
            return reject(408, started, "too_slow", peer, f"the body did not arrive within "
                          f"{settings.request_timeout:g} seconds. Fix: send the whole request "
                          "at once (raise SCOPEGUARD_REQUEST_TIMEOUT for a slow network).")
        except Gone:  # nobody to answer; the response below is dropped
            return reject(400, started, "disconnected", peer, "the client went away before "
                          "its body was read.")
        except TooLarge:
            return reject(413, started, "too_large", request.client.host if request.client
                          else "?", f"the body is larger than {settings.max_body} bytes. Fix: "
                          "raise --max-body (SCOPEGUARD_MAX_BODY) if real issues are this "
                          "large.")

    def ignored(event: str, key: str, delivery: str, reason: str,
                started: float) -> JSONResponse:
        metrics.inc("scopeguard_webhooks_received_total", result="ignored")
        log.info("ignored %s %s (delivery %s): %s", event, key or "-", delivery[:60], reason)
        return answer(202, started, status="ignored", reason=reason)

    async def queue(delivery: str, body: bytes, event: str, key: str, started: float,
                    signed: bool) -> JSONResponse:
        # A signed body seen before under another delivery id is a replay: the id is not
        # signed. (A token-authenticated sender can send anything: no window for it.)
        window = settings.replay_window if signed else 0.0
        state = await run_in_threadpool(partial(service.queue.accept, delivery, body, event,
                                                key, replay_window=window))
        if state == "replay":
            metrics.inc("scopeguard_webhooks_received_total", result="replay")
            log.warning("delivery %s of %s: this signed body was accepted before under "
                        "another delivery id: not queued again", delivery[:60], key)
            return answer(200, started, status="duplicate", delivery=delivery,
                          reason="this signed body was accepted before under another "
                                 "delivery id (a replay)")
        if state == "duplicate":
            metrics.inc("scopeguard_webhooks_received_total", result="duplicate")
            log.info("delivery %s of %s seen before: not queued again", delivery[:60], key)
            return answer(200, started, status="duplicate", delivery=delivery)
        service.wake.set()
        metrics.inc("scopeguard_webhooks_received_total", result="queued")
        return answer(202, started, status="queued", delivery=delivery, issue=key)

    async def jira_webhook(request: Request) -> JSONResponse:
        started = time.perf_counter()
        peer = request.client.host if request.client else "?"
        if service.client is None:
            return answer(404, started, error="this service has no Jira configured. Fix: set "
                          "JIRA_URL and its credentials, or send GitHub webhooks to "
                          "/webhooks/github.")
        body = await receive(request, started)
        if isinstance(body, JSONResponse):
            return body
        how, why = authenticate(request.headers, request.query_params, body,
                                secret=settings.webhook_secret, token=settings.webhook_token)
        if not how:
            return reject(401, started, "unauthorized", peer, why)
        try:
            hook = parse_webhook(body, request.headers)
        except BadWebhook as exc:
            return reject(400, started, "bad_request", peer, str(exc))
        reason = ignore_reason(hook, service.positioning, service.positioning.jira.customer_field)
        if reason:
            return ignored(hook.event, hook.key, hook.delivery_id, reason, started)
        return await queue(hook.delivery_id, body, hook.event, hook.key, started,
                           signed=how == "signature")

    async def github_webhook_route(request: Request) -> JSONResponse:
        started = time.perf_counter()
        peer = request.client.host if request.client else "?"
        secret = settings.github_webhook_secret
        if not secret:
            return answer(404, started, error="GitHub webhooks are not configured. Fix: set "
                          "SCOPEGUARD_GITHUB_WEBHOOK_SECRET (and GITHUB_TOKEN, or a GitHub "
                          "App's GITHUB_APP_ID and GITHUB_APP_PRIVATE_KEY).")
        body = await receive(request, started)
        if isinstance(body, JSONResponse):
            return body
        why = github_webhook.verify(request.headers, body, secret)
        if why:
            return reject(401, started, "unauthorized", peer, why)
        try:
            hook = github_webhook.parse(body, request.headers)
        except InputError as exc:
            return reject(400, started, "bad_request", peer, str(exc))
        if hook.event == GITHUB_EVENT + "ping":
            return answer(200, started, status="pong")
        reason = github_webhook.ignore_reason(hook, settings.repositories,
                                              service.positioning.labels.values(),
                                              service.positioning.filters)
        if reason:
            return ignored(hook.event, hook.key, hook.delivery_id, reason, started)
        return await queue(hook.delivery_id, body, hook.event, hook.key, started, signed=True)

    async def healthz(request: Request) -> JSONResponse:
        counts = await run_in_threadpool(service.queue.counts)
        state = "error" if service.error else "ready" if service.ready.is_set() else "loading"
        body = {"status": state, "queue": counts,
                "jira": service.client.flavour if service.client else None,
                "github": bool(settings.github_webhook_secret)}
        if service.error:
            body["error"] = service.error
        return JSONResponse(body, status_code=503 if service.error else 200)

    async def metrics_route(request: Request) -> PlainTextResponse:
        gauges = await run_in_threadpool(service.gauges)
        return PlainTextResponse(metrics.render(gauges),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            await run_in_threadpool(service.stop)

    return Starlette(routes=[Route("/webhooks/jira", jira_webhook, methods=["POST"]),
                             Route("/webhooks/github", github_webhook_route, methods=["POST"]),
                             Route("/healthz", healthz, methods=["GET"]),
                             Route("/metrics", metrics_route, methods=["GET"])],
                     lifespan=lifespan)


def app_from_env(make_client: Callable[[], JiraClient] | None = None) -> Any:
    """An app configured by ``SCOPEGUARD_*`` and ``JIRA_*`` variables, for ``uvicorn --factory``."""
    settings = ServiceSettings.from_env()
    setup_logging(os.environ.get("SCOPEGUARD_LOG_LEVEL", "info"),
                  settings.secrets() + client_secrets())
    return create_app(Service(settings, client=make_client() if make_client else None))

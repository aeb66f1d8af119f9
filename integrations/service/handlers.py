"""What the service's worker does with one queued event: Jira's flow or GitHub's.

A Jira event: read the issue fresh (a webhook can arrive late or out of order), skip it if
the positioning file does not watch it or it is not a feature request, classify it with
demand from the issues the service has seen (:mod:`.store`), and write back the scope
label and scopeguard's one comment (:func:`scopeguard.integrations.jira.writeback.write_back`).
A GitHub event: the Action's flow (:func:`scopeguard.integrations.github.webhook.handle`).
Events of one issue never run at once; the classification itself runs one at a time (it
is CPU-bound), tracker I/O of other events goes on meanwhile.

Example::

    handlers = Handlers(settings, positioning, jira_client, github_access)
    handlers.guard, handlers.store = guard, store       # once the classifier is loaded
    outcome = handlers.handle(event)                     # "core (71%): added scope:core; ..."
"""

from __future__ import annotations

import contextlib
import json
import threading
from dataclasses import replace
from typing import Any

from scopeguard import render
from scopeguard.backlog import check_request, is_feature_request
from scopeguard.errors import ConfigError, InputError, ScopeguardError
from scopeguard.positioning import Positioning

from ..github import webhook as github_webhook
from ..github.app import GitHubAccess
from ..github.errors import (
    GitHubAuthError,
    GitHubError,
    GitHubRateLimitError,
    GitHubUnavailableError,
)
from ..jira.client import ISSUE_FIELDS, JiraClient
from ..jira.errors import (
    JiraAuthError,
    JiraConfigError,
    JiraNotFoundError,
    JiraRequestError,
    JiraUnavailableError,
)
from ..jira.issues import issue_to_request
from ..jira.transport import Transport
from ..jira.webhook import watch_reason
from ..jira.writeback import jira_label, write_back
from ..lease import confirm_lease
from .queue import Event
from .settings import ServiceSettings
from .store import IssueStore


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


def tracker_of(event: Event) -> str:
    """The tracker an event is written back to: ``jira`` or ``github``."""
    return "github" if event.event.startswith(github_webhook.EVENT_PREFIX) else "jira"


def reach(exc: Exception) -> str:
    """What ``exc`` says of the tracker as a whole, for ``/healthz``: ``down`` when it
    rejected the credentials or could not be reached at all (cannot connect, DNS, a
    timeout): every event meets that; ``suspect`` when it kept answering 5xx or 429 for
    one call (maybe only that issue's: :meth:`Handlers.check` decides); else ""."""
    if isinstance(exc, (JiraAuthError, GitHubAuthError)):
        return "down"
    if isinstance(exc, (JiraUnavailableError, GitHubUnavailableError)):
        return "down" if exc.status is None else "suspect"  # no status: no answer at all
    return "suspect" if isinstance(exc, GitHubRateLimitError) else ""


class SerialGuard:
    """A ``Scopeguard`` whose ``classify`` runs one call at a time (CPU-bound, and the
    embedding cache's SQLite connection is shared)."""

    def __init__(self, guard: Any, lock: threading.Lock) -> None:
        self.guard, self.lock = guard, lock

    def classify(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            return self.guard.classify(*args, **kwargs)


class Handlers:
    """Handles queued events; ``guard`` and ``store`` are set once the classifier is loaded.

    Args:
        settings: what ``scopeguard serve`` was told.
        positioning: the positioning file.
        client: the Jira client, or None when only GitHub is served.
        github: how to reach GitHub.
    """

    def __init__(self, settings: ServiceSettings, positioning: Positioning,
                 client: JiraClient | None, github: GitHubAccess) -> None:
        self.settings = settings
        self.positioning = positioning
        self.client = client
        self.github = github
        self.guard: Any = None
        self.store: IssueStore | None = None
        self.key_locks = KeyLocks()
        self.classify_lock = threading.Lock()
        pending = jira_label(settings.jira_needs_decision) if settings.jira_needs_decision else ""
        if pending.lower() in {jira_label(n).lower() for n in positioning.labels.values()}:
            raise ScopeguardError(
                f"SCOPEGUARD_JIRA_NEEDS_DECISION {settings.jira_needs_decision!r} is also a "
                "scope label. Fix: give it a name of its own, e.g. scope: needs-decision.")

    def check(self, tracker: str) -> None:
        """One cheap authenticated call to ``tracker`` (``jira``: ``/myself``; ``github``:
        ``GET /user``, or ``GET /app`` for an App), not retried; raises when it fails."""
        if tracker == "github":
            if self.github.configured:
                self.github.check()
        elif self.client is not None:  # through the client's session, without its retries
            once = Transport(self.client.jira, replace(self.client.retry, retries=0))
            once.request("GET", "myself", action="checking that Jira takes the credentials "
                                                 "(/myself)")

    def customer_field(self) -> str:
        """The customer field's id (the client remembers it), or "" without Jira."""
        return self.client.field_id(self.positioning.jira.customer_field) if self.client else ""

    def handle(self, event: Event) -> str:
        """Classify the event's issue and write back; returns the outcome for the log."""
        payload = json.loads(event.payload)
        if event.event.startswith(github_webhook.EVENT_PREFIX):
            return self.github_event(event.issue_key, payload)
        # The key parse_webhook found (a Jira webhook's issue.key, or the top-level key of
        # Automation's "Issue data (Automation format)").
        return self.jira_event(event.issue_key or str(payload["issue"]["key"]))

    def jira_event(self, key: str) -> str:
        """Read the Jira issue ``key`` fresh, classify it, write the verdict back."""
        if self.client is None:
            raise JiraConfigError("a Jira event is queued but no Jira is configured. Fix: "
                                  "set JIRA_URL and its credentials, then --requeue-failed.")
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
                filters = self.positioning.filters
                if self.positioning.jira.issue_types:  # the watched types, listed: all go
                    filters = replace(filters, skip_issue_types=())
                ok, because = is_feature_request(request, filters)
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
                confirm_lease()  # what it read must not replace what another worker stored
                self.store.remember(prepared, vectors.mean)
            seen = self.store.seen(key)
            product = self.positioning.product

            def markdown(label_name: str, pending: bool = False, own: bool = True) -> str:
                return render.to_markdown(verdict, label_name, product, pending=pending,
                                          own=own)

            confirm_lease()
            result = write_back(self.client, key, verdict.label, markdown,
                                self.positioning.labels, request.labels,
                                applied=seen.applied, comment_hint=seen.comment_id,
                                pending=self.settings.jira_needs_decision,
                                needs_decision=verdict.needs_decision,
                                known_human=seen.human, known_by=seen.human_by)
            self.store.record_write_back(key, result.comment_id, result.applied,
                                         result.human_label, predicted=verdict.label,
                                         human_key=result.human_key,
                                         human_by=result.human_by,
                                         asked=seen.applied == render.PENDING)
        return f"{verdict.label} ({verdict.confidence:.0%}): {result.summary()}"

    def github_event(self, key: str, payload: dict[str, Any]) -> str:
        """Run the GitHub Action's flow for a queued GitHub webhook."""
        # One event per issue at a time; only the classification itself is serialised,
        # GitHub reads and writes of other events go on meanwhile.
        with self.key_locks.hold(key):
            return github_webhook.handle(payload, access=self.github,
                                         positioning=self.positioning,
                                         guard=SerialGuard(self.guard, self.classify_lock),
                                         db=self.settings.db,
                                         relabels_branch=self.settings.github_relabels_branch)

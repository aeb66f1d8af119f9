"""GitHub webhooks for ``scopeguard serve``: the Action's pipeline, fed by a GitHub App or a
repository (or organisation) webhook instead of a workflow run.

``POST /webhooks/github`` (:mod:`scopeguard.integrations.service.app`) takes ``issues``
events (opened, edited, reopened, labeled), signed with the webhook secret
(``X-Hub-Signature-256``, checked by :mod:`scopeguard.integrations.service.auth`).
:func:`parse` reads a delivery and :func:`ignore_reason` says which are acknowledged
without queueing (pings, other events, pull requests, bots' issues, other repositories).
``X-GitHub-Delivery`` (the same on a redelivery) makes retries idempotent in the queue.

The worker hands the event to :func:`handle`, which runs the Action's flows
(:func:`.action.handle_event`) with the service's positioning file and loaded model: it
reads the issue fresh, classifies it against the repository's other open issues, sets
the scope label, keeps ONE comment of its own updated in place, and records maintainers'
relabels in the repository's relabels file. How it reaches GitHub (a token, or an App's
installation tokens) is :class:`.app.GitHubAccess`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scopeguard.backlog import is_bot, skipped_author
from scopeguard.errors import InputError
from scopeguard.positioning import Filters, Positioning

from .action import CLASSIFY_ACTIONS, handle_event
from .app import GitHubAccess
from .comments import LoginMismatch
from .errors import GitHubAuthError
from .issues import issue_to_request
from .relabels import RELABELS_FILE
from .runner import Report, Settings

log = logging.getLogger("scopeguard.serve.github")

EVENT_PREFIX = "github:"
_REPO = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")


class BadGitHubWebhook(InputError):
    """A GitHub webhook body that cannot be queued (the message is the 400 answer)."""


@dataclass(frozen=True)
class Delivery:
    delivery_id: str
    event: str  # "github:issues.opened"
    key: str  # "owner/repo#12"
    payload: dict[str, Any]


def parse(body: bytes, headers: Mapping[str, str]) -> Delivery:
    """The delivery id, event and issue of an ``issues`` webhook, or :class:`BadGitHubWebhook`."""
    name = headers.get("x-github-event", "").strip()
    if not name:
        raise BadGitHubWebhook("no X-GitHub-Event header. Fix: send GitHub's webhook "
                               "deliveries unchanged (the header names the event).")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadGitHubWebhook(f"the body is not valid JSON ({exc}). Fix: set the GitHub "
                               "webhook's content type to application/json.") from None
    except RecursionError:
        raise BadGitHubWebhook("the body's JSON is nested too deeply to read. Fix: send "
                               "GitHub's webhook payload unchanged.") from None
    if not isinstance(payload, dict):
        raise BadGitHubWebhook("the body is JSON but not an object. Fix: send GitHub's "
                               "webhook payload unchanged.")
    action = str(payload.get("action") or "")
    key = ""
    if name == "issues":
        issue, repo = payload.get("issue"), payload.get("repository")
        number = issue.get("number") if isinstance(issue, dict) else None
        full = repo.get("full_name") if isinstance(repo, dict) else None
        if not isinstance(number, int) or number < 1 or not isinstance(full, str) or not (
                _REPO.fullmatch(full)):
            raise BadGitHubWebhook("the `issues` payload has no issue number or repository "
                                   "full_name. Fix: send GitHub's webhook payload unchanged.")
        if "comment" in payload:  # an issue_comment body; the event name is not signed
            raise BadGitHubWebhook("an `issues` delivery carries no comment: this body is an "
                                   "issue_comment event's. Fix: send GitHub's X-GitHub-Event "
                                   "header unchanged.")
        key = f"{full}#{number}"
    # Prefixed: the queue is shared with Jira's deliveries.
    delivery = "github:" + (headers.get("x-github-delivery", "").strip() or
                            "sha256:" + hashlib.sha256(body).hexdigest())
    if not 0 < len(delivery) <= 200 or not delivery.isascii() or not delivery.isprintable():
        raise BadGitHubWebhook("the X-GitHub-Delivery header is longer than 200 characters "
                               "or not printable ASCII. Fix: send GitHub's header unchanged.")
    return Delivery(delivery, f"{EVENT_PREFIX}{name}.{action}".rstrip("."), key, payload)


def ignore_reason(delivery: Delivery, repositories: Iterable[str],
                  scope_labels: Iterable[str] = (), filters: Filters | None = None) -> str:
    """Why a delivery is acknowledged without queueing it, or "" to queue it.

    Args:
        repositories: the repositories handled (``owner/repo``); empty: all.
        scope_labels: the scope label names: a bot adding one is scopeguard's own write
            (or another bot's) coming back, not a maintainer's correction.
        filters: the positioning file's filters: an issue a bot (or a skipped author)
            opened is not queued.
    """
    name, _, action = delivery.event[len(EVENT_PREFIX):].partition(".")
    if name != "issues":
        return f"event {name!r} is not watched (only `issues`)"
    if action not in CLASSIFY_ACTIONS:
        return f"nothing to do for `issues.{action or '?'}`"
    sender, issue = _dict(delivery.payload.get("sender")), _dict(delivery.payload.get("issue"))
    label = str(_dict(delivery.payload.get("label")).get("name") or "")
    if action == "labeled" and is_bot(str(sender.get("login") or ""),
                                      str(sender.get("type") or "")) and label.lower() in {
            s.lower() for s in scope_labels}:
        return f"`{label}` was set by a bot ({sender.get('login')}), not a maintainer"
    if issue.get("pull_request"):
        return "a pull request, not a feature request"
    if filters is not None and isinstance(issue.get("user"), dict):
        why = skipped_author(issue_to_request(issue), filters)
        if why:
            return f"not a feature request: it {why}"
    wanted = {r.lower() for r in repositories}
    repo = delivery.key.rpartition("#")[0]
    if wanted and repo.lower() not in wanted:
        return f"repository {repo} is not in SCOPEGUARD_GITHUB_REPOSITORIES"
    return ""


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class ServiceReport(Report):
    """The Action's report, for the service: lines go to the log, the outcome is kept."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__({})
        self.secrets = [s for s in secrets if s]
        self.outcome = ""
        self.values: dict[str, str] = {}

    def log(self, text: str) -> None:
        log.info("%s", self.scrub(" ".join(text.splitlines())))

    def warning(self, text: str) -> None:
        log.warning("%s", self.scrub(" ".join(text.splitlines())))

    def outputs(self, **values: str) -> None:
        self.values.update(values)

    def done(self, done: Iterable[str]) -> int:
        """The outcome, led by the verdict as the Jira worker's are: ``core (71%): ...``."""
        label, confidence = self.values.get("label", ""), self.values.get("confidence", "")
        lead = (f"{label} ({float(confidence):.0%})" if label and confidence
                else f"relabelled {label}" if label else "done")
        self.outcome = f"{lead}: " + "; ".join(list(done) or ["nothing to change"])
        return 0

    def skip(self, reason: str) -> int:
        self.outcome = f"skipped: {reason}"
        return 0


def handle(payload: Mapping[str, Any], *, access: GitHubAccess, positioning: Positioning,
           guard: Any, db: str | None = None, backlog_limit: int = 500,
           relabels_file: str = RELABELS_FILE, relabels_branch: str = "") -> str:
    """Run the Action's flow for one queued ``issues`` event; returns the outcome.

    Raises ``GitHubError`` (and other ``ScopeguardError``) for the worker to fail or retry.
    """
    token = access.token_for(payload)
    login = access.login_for(payload, token)
    settings = Settings(
        token=token, repository=str(payload["repository"]["full_name"]),
        api_url=access.api_url, event_name="issues", event_path="(webhook)",
        workspace=Path.cwd(), db=db or "", relabels_file=relabels_file,
        relabels_branch=relabels_branch, backlog_limit=backlog_limit)
    report = ServiceReport([token, *access.secrets()])
    try:
        handle_event(settings, report, payload, os.environ, positioning=positioning,
                     guard=guard, login=login)
    except GitHubAuthError:
        access.forget(token)  # a revoked installation token: the retry asks for a new one
        raise
    except LoginMismatch as exc:  # the next events fail before posting, until a restart
        access.wrong_login[access.token_kind(payload)] = str(exc)
        raise
    return report.outcome or "done"

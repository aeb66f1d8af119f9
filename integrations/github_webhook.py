"""GitHub webhooks for ``scopeguard serve``: the Action's pipeline, fed by a GitHub App or a
repository (or organisation) webhook instead of a workflow run.

``POST /webhooks/github`` takes ``issues`` events (opened, edited, reopened, labeled),
signed with the webhook secret (``X-Hub-Signature-256: sha256=<HMAC-SHA256 of the raw
body>``, compared in constant time; 401 otherwise). ``ping`` is answered; other events and
actions are acknowledged and ignored. ``X-GitHub-Delivery`` (the same on a redelivery)
makes retries idempotent in the service's queue.

The worker hands the event to :func:`handle`, which runs the Action's flows
(``github_action.handle_event``) with the service's positioning file and loaded model: it
reads the issue fresh, classifies it against the repository's other open issues, sets
the scope label, keeps ONE comment updated in place, and records maintainers' relabels
in the repository's relabels file.

The token: ``GITHUB_TOKEN`` (a fine-grained or classic token, or an App installation's
token, with issues: write, and contents: write for the relabels file), or, for a GitHub
App, ``GITHUB_APP_ID`` and ``GITHUB_APP_PRIVATE_KEY`` (the PEM, or a path to it): each
event then gets a token of the installation it came from.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scopeguard.backlog import is_bot, skipped_author
from scopeguard.errors import ConfigError, InputError
from scopeguard.positioning import Filters, Positioning

from .github_action import CLASSIFY_ACTIONS, handle_event
from .github_client import (
    DEFAULT_API_URL,
    GitHubAuthError,
    github_errors,
    issue_to_request,
    make_client,
    own_login,
    settings_from_env,
)
from .github_io import Report, Settings
from .github_relabels import RELABELS_FILE
from .jira_auth import sign  # GitHub's X-Hub-Signature-256 is the same HMAC-SHA256

log = logging.getLogger("scopeguard.serve.github")

EVENT_PREFIX = "github:"
_REPO = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")


class BadGitHubWebhook(InputError):
    """A GitHub webhook body that cannot be queued (the message is the 400 answer)."""


def verify(headers: Mapping[str, str], body: bytes, secret: str) -> str:
    """Why the delivery is not authentic, or "" when its signature matches the body."""
    given = headers.get("x-hub-signature-256", "").strip().lower()
    if not given:
        return ("the webhook carries no X-Hub-Signature-256. Fix: set the GitHub webhook's "
                "(or App's) secret to the value of SCOPEGUARD_GITHUB_WEBHOOK_SECRET.")
    if not hmac.compare_digest(given.encode(), sign(secret, body).encode()):
        return ("the X-Hub-Signature-256 does not match the body. Fix: set the GitHub "
                "webhook's (or App's) secret to the value of SCOPEGUARD_GITHUB_WEBHOOK_SECRET.")
    return ""


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
    sender = delivery.payload.get("sender") or {}
    label = str((delivery.payload.get("label") or {}).get("name") or "")
    if action == "labeled" and is_bot(str(sender.get("login") or ""),
                                      str(sender.get("type") or "")) and label.lower() in {
            s.lower() for s in scope_labels}:
        return f"`{label}` was set by a bot ({sender.get('login')}), not a maintainer"
    issue = delivery.payload.get("issue") or {}
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


# --- the worker's side -------------------------------------------------------------------------


class ServiceReport(Report):
    """The Action's report, for the service: lines go to the log, the outcome is kept."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__({})
        self.secrets = [s for s in secrets if s]
        self.outcome = ""
        self.values: dict[str, str] = {}

    def log(self, text: str) -> None:
        log.info("%s", self.scrub(text))

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


@dataclass
class GitHubAccess:
    """How the service authenticates to GitHub: a token, or a GitHub App's key."""

    api_url: str = DEFAULT_API_URL
    token: str = field(default="", repr=False)
    app_id: str = ""
    private_key: str = field(default="", repr=False)
    login: str = ""  # SCOPEGUARD_GITHUB_LOGIN: the account the token writes as; "" asks GitHub
    _tokens: dict[int, tuple[str, float]] = field(default_factory=dict, repr=False)
    _logins: dict[str, str] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GitHubAccess:
        env = os.environ if environ is None else environ
        key = env.get("GITHUB_APP_PRIVATE_KEY", "").strip()
        if key and not key.startswith("-----BEGIN"):
            try:
                key = Path(key).expanduser().read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError("GITHUB_APP_PRIVATE_KEY", f"cannot read the key file "
                                  f"({type(exc).__name__}).", "set it to the App's private "
                                  "key (PEM text) or the path of the .pem file.") from None
        if key:
            from cryptography.hazmat.primitives.serialization import load_pem_private_key

            try:
                load_pem_private_key(key.encode(), password=None)
            except (ValueError, TypeError):
                raise ConfigError("GITHUB_APP_PRIVATE_KEY", "is not an unencrypted PEM private "
                                  "key.", "use the .pem file GitHub generated for the App "
                                  "(Settings > Developer settings > GitHub Apps > Private "
                                  "keys).") from None
        access = cls(api_url=(env.get("GITHUB_API_URL") or DEFAULT_API_URL).rstrip("/"),
                     token=env.get("GITHUB_TOKEN", "").strip(),
                     app_id=env.get("GITHUB_APP_ID", "").strip(), private_key=key,
                     login=env.get("SCOPEGUARD_GITHUB_LOGIN", "").strip())
        if bool(access.app_id) != bool(access.private_key):
            raise ConfigError("GITHUB_APP_ID", "a GitHub App needs both GITHUB_APP_ID and "
                              "GITHUB_APP_PRIVATE_KEY.", "set both, or neither and "
                              "GITHUB_TOKEN instead.")
        return access

    @property
    def configured(self) -> bool:
        return bool(self.token or self.app_id)

    def secrets(self) -> list[str]:
        return [s for s in (self.token, self.private_key) if s]

    def forget(self, token: str) -> None:
        """Drop a cached installation token GitHub refused."""
        with self._lock:
            for installation, (cached, _) in list(self._tokens.items()):
                if cached == token:
                    del self._tokens[installation]

    def _app_installation(self, payload: Mapping[str, Any]) -> int | None:
        installation = (payload.get("installation") or {}).get("id")
        return installation if self.app_id and isinstance(installation, int) else None

    def login_for(self, payload: Mapping[str, Any], token: str) -> str:
        """The account ``token`` (the event's, from :meth:`token_for`) writes as: only its
        comments are scopeguard's own. SCOPEGUARD_GITHUB_LOGIN wins; an App's is its bot
        (``<slug>[bot]``, read once with the App's key); a token's is asked of GitHub."""
        if self.login:
            return self.login
        kind = "app" if self._app_installation(payload) is not None else "token"
        with self._lock:
            if kind in self._logins:
                return self._logins[kind]
        if kind == "app":
            from github import Auth, GithubIntegration

            with github_errors("reading the GitHub App (GET /app)",
                               needs="the App's own key (GITHUB_APP_PRIVATE_KEY)"):
                app = GithubIntegration(auth=Auth.AppAuth(self.app_id, self.private_key),
                                        base_url=self.api_url).get_app()
                login = f"{app.slug}[bot]"
        else:
            login = own_login(make_client(token, self.api_url, **settings_from_env()), token)
        with self._lock:
            self._logins[kind] = login
        return login

    def token_for(self, payload: Mapping[str, Any]) -> str:
        """A token for the event: the App installation's it came from, else GITHUB_TOKEN."""
        installation = self._app_installation(payload)
        if installation is not None:
            with self._lock:
                token, until = self._tokens.get(installation, ("", 0.0))
                if token and time.time() < until:
                    return token
                from github import Auth, GithubIntegration

                with github_errors(f"getting a token for the App's installation "
                                   f"{installation}", needs="the App installed on the "
                                   "repository"):
                    integration = GithubIntegration(
                        auth=Auth.AppAuth(self.app_id, self.private_key),
                        base_url=self.api_url)
                    issued = integration.get_access_token(installation)
                expires = (issued.expires_at.timestamp() if issued.expires_at
                           else time.time() + 3600)
                # Kept until 5 minutes before it expires (GitHub issues them for an hour).
                self._tokens[installation] = (issued.token, expires - 300)
                return issued.token
        if self.token:
            return self.token
        raise ConfigError("GITHUB_TOKEN", "no GitHub token for this event" + (
            " (it names no App installation)" if self.app_id else "") + ".",
            "set GITHUB_TOKEN, or GITHUB_APP_ID and GITHUB_APP_PRIVATE_KEY for the App "
            "whose webhook this is.")


def handle(payload: Mapping[str, Any], *, access: GitHubAccess, positioning: Positioning,
           guard: Any, db: str | None = None, backlog_limit: int = 500,
           relabels_file: str = RELABELS_FILE) -> str:
    """Run the Action's flow for one queued ``issues`` event; returns the outcome.

    Raises ``GitHubError`` (and other ``ScopeguardError``) for the worker to fail or retry.
    """
    token = access.token_for(payload)
    login = access.login_for(payload, token)
    settings = Settings(
        token=token, repository=str(payload["repository"]["full_name"]),
        api_url=access.api_url, event_name="issues", event_path="(webhook)",
        workspace=Path.cwd(), db=db or "", relabels_file=relabels_file,
        backlog_limit=backlog_limit)
    report = ServiceReport([token, *access.secrets()])
    try:
        handle_event(settings, report, payload, os.environ, positioning=positioning,
                     guard=guard, login=login)
    except GitHubAuthError:
        access.forget(token)  # a revoked installation token: the retry asks for a new one
        raise
    return report.outcome or "done"

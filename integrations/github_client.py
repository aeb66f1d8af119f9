"""The GitHub REST client scopeguard's integrations share: PyGithub with retries, clear errors.

``make_client`` builds a PyGithub ``Github`` whose HTTP layer retries 5xx answers with
exponential backoff and rate-limited answers (403/429 with ``Retry-After``, or with
``x-ratelimit-remaining: 0``, or a "secondary rate limit" message) after the wait GitHub
asks for, each wait capped at ``max_wait`` seconds. ``github_errors`` turns PyGithub and
requests exceptions into :class:`GitHubError` subclasses whose messages say what to fix
and never carry the token. ``fetch_issues`` / ``fetch_open_issues`` list a repository's
issues as :class:`~scopeguard.backlog.Request` records, page by page, without pull requests.

Example::

    client = make_client(os.environ["GITHUB_TOKEN"])
    with github_errors("reading acme/widgets"):
        repo = client.get_repo("acme/widgets")
    backlog = fetch_open_issues(repo, labels=["enhancement"], limit=500)

Environment (``settings_from_env``): ``SCOPEGUARD_GITHUB_MAX_WAIT`` caps every wait in
seconds (default 60; a primary rate limit that resets later fails at once with a clear
message), ``SCOPEGUARD_GITHUB_RETRIES`` (default 5) and ``SCOPEGUARD_GITHUB_THROTTLE=0``
switches off PyGithub's pacing (0.25 s between requests, 1 s between writes, which is
what GitHub asks of integrations).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from github import Auth, Github, GithubException, GithubRetry
from github.GithubException import RateLimitExceededExceedsMaxWait
from github.Repository import Repository
from urllib3 import Retry

from scopeguard.backlog import Request
from scopeguard.errors import ConfigError, ScopeguardError
from scopeguard.settings import env_number

DEFAULT_API_URL = "https://api.github.com"
ACTIONS_BOT = "github-actions[bot]"  # who writes with a workflow's own GITHUB_TOKEN
DEFAULT_MAX_WAIT = 60.0
DEFAULT_RETRIES = 5
PER_PAGE = 100  # GitHub's maximum: fewest requests for a backlog


# --- errors --------------------------------------------------------------------------------


class GitHubError(ScopeguardError):
    """A GitHub API call failed; the message says what to fix."""

    status: int | None = None

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class GitHubAuthError(GitHubError):
    """The token is missing, wrong or expired (401)."""


class GitHubPermissionError(GitHubError):
    """The token may not do this (403)."""


class GitHubNotFoundError(GitHubError):
    """The repository, issue or file does not exist, or the token cannot see it (404)."""


class GitHubRateLimitError(GitHubError):
    """Rate limited for longer than scopeguard is willing to wait."""


class GitHubUnavailableError(GitHubError):
    """GitHub kept answering 5xx, or could not be reached, after every retry."""


def _message(exc: GithubException) -> str:
    data = exc.data
    if isinstance(data, dict) and data.get("message"):
        return str(data["message"])
    return str(data or "")[:200]


def translate(exc: BaseException, action: str, needs: str = "issues: write") -> GitHubError:
    """The :class:`GitHubError` for ``exc``, raised while ``action`` (e.g. "labelling #12").

    Args:
        exc: a PyGithub ``GithubException`` or a ``requests`` exception.
        action: what scopeguard was doing, for the message.
        needs: the workflow permission the call needs, named in the 403 fix.
    """
    import requests

    if isinstance(exc, GitHubError):
        return exc
    if isinstance(exc, RateLimitExceededExceedsMaxWait) or (
            isinstance(exc, GithubException) and exc.status in (403, 429)
            and "rate limit" in _message(exc).lower()):
        return GitHubRateLimitError(
            f"GitHub rate limit hit while {action}, and the wait it asks for exceeds "
            "scopeguard's cap. Fix: re-run the job later, or raise SCOPEGUARD_GITHUB_MAX_WAIT "
            f"(seconds; default {DEFAULT_MAX_WAIT:g}).", 429)
    if isinstance(exc, GithubException):
        status, detail = exc.status, _message(exc)
        if status == 401:
            return GitHubAuthError(
                f"GitHub rejected the token (401 {detail or 'Bad credentials'}) while {action}. "
                "Fix: pass a valid token (the default `token: ${{ github.token }}`, or a "
                "personal access token that has not expired).", 401)
        if status == 403:
            return GitHubPermissionError(
                f"GitHub refused {action} (403 {detail or 'Forbidden'}). Fix: give the workflow "
                f"`permissions: {needs}` (or use a token allowed to do it).", 403)
        if status == 404:
            return GitHubNotFoundError(
                f"not found while {action} (404). Fix: check the repository and issue number, "
                "and that the token can see the repository (a token for another repository "
                "or without access to a private one gets 404).", 404)
        return GitHubError(f"GitHub answered {status} while {action}: {detail}.", status)
    if isinstance(exc, requests.exceptions.RetryError):
        found = re.search(r"too many (\d{3}) error responses", str(exc))
        status = int(found.group(1)) if found else None
        if status in (403, 429):
            return GitHubRateLimitError(
                f"GitHub kept rate-limiting scopeguard while {action}, after every retry. "
                "Fix: re-run the job later.", status)
        return GitHubUnavailableError(
            f"GitHub kept failing ({status or 'server error'}) while {action}, after every "
            "retry. Fix: re-run the job; see https://www.githubstatus.com.", status)
    if isinstance(exc, requests.exceptions.RequestException):
        return GitHubUnavailableError(
            f"cannot reach the GitHub API while {action} ({type(exc).__name__}). Fix: check "
            "GITHUB_API_URL and the runner's network, then re-run the job.")
    return GitHubError(f"{action} failed: {type(exc).__name__}.")


@contextmanager
def github_errors(action: str, needs: str = "issues: write") -> Iterator[None]:
    """Raise PyGithub/requests failures inside the block as :class:`GitHubError`."""
    import requests

    try:
        yield
    except (GithubException, requests.exceptions.RequestException) as exc:
        raise translate(exc, action, needs) from None


# --- the client ----------------------------------------------------------------------------


class CappedRetry(GithubRetry):
    """PyGithub's retry policy, with every wait capped and ``x-ratelimit-reset`` honoured.

    ``GithubRetry`` already retries 5xx and rate-limited 403s (after ``Retry-After``, or
    after ``secondary_rate_wait`` when only the message says "secondary rate limit"). This
    adds: 429 answers; rate-limited answers with ``x-ratelimit-remaining: 0`` wait until
    ``x-ratelimit-reset`` as GitHub's docs ask; no wait exceeds ``max_wait`` (a reset
    further off fails at once, rather than hold a CI job for an hour).
    """

    def __init__(self, max_wait: float = DEFAULT_MAX_WAIT, **kwargs: Any) -> None:
        self.max_wait = max_wait
        self._rate_wait: float | None = None
        kwargs.setdefault("secondary_rate_wait", min(60.0, max_wait))
        kwargs.setdefault("max_rate_limit_wait", max_wait)
        kwargs.setdefault("backoff_max", max_wait)
        kwargs.setdefault("status_forcelist", [429, *range(500, 600)])
        # PATCH (comment updates) is idempotent too; urllib3 leaves it out by default.
        kwargs.setdefault("allowed_methods",
                          Retry.DEFAULT_ALLOWED_METHODS | {"GET", "POST", "PATCH"})
        super().__init__(**kwargs)

    def new(self, **kw: Any) -> CappedRetry:
        kw.pop("max_wait", None)
        retry = super().new(**kw)
        retry.max_wait = self.max_wait
        retry._rate_wait = None
        return retry

    def increment(self, method=None, url=None, response=None, error=None, _pool=None,
                  _stacktrace=None) -> Retry:
        headers = response.headers if response is not None else {}
        reset = headers.get("X-RateLimit-Reset", "")
        if (response is not None and response.status in (403, 429)
                and "Retry-After" not in headers
                and headers.get("X-RateLimit-Remaining") == "0" and reset.isdigit()):
            wait = max(0.0, int(reset) - time.time()) + 1  # +1: the reset second is not exact
            if wait > self.max_wait:
                raise RateLimitExceededExceedsMaxWait(response.status, {
                    "message": f"rate limit resets in {wait:.0f}s"}, dict(headers), wait=wait)
            retry = Retry.increment(self, method, url, response, error, _pool, _stacktrace)
            retry._rate_wait = wait
            return retry
        return super().increment(method, url, response, error, _pool, _stacktrace)

    def get_backoff_time(self) -> float:
        if self._rate_wait is not None:
            return min(self._rate_wait, self.max_wait)
        return super().get_backoff_time()

    def get_retry_after(self, response) -> float | None:
        seconds = super().get_retry_after(response)
        return None if seconds is None else min(seconds, self.max_wait)


def settings_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``max_wait``, ``retries`` and ``throttle`` from ``SCOPEGUARD_GITHUB_*`` variables."""
    env = os.environ if environ is None else environ
    return {"max_wait": env_number(env, "SCOPEGUARD_GITHUB_MAX_WAIT", DEFAULT_MAX_WAIT),
            "retries": int(env_number(env, "SCOPEGUARD_GITHUB_RETRIES", DEFAULT_RETRIES)),
            "throttle": env.get("SCOPEGUARD_GITHUB_THROTTLE", "1").strip().lower()
            not in ("0", "false", "no", "off")}


def make_client(token: str, base_url: str | None = None, *, max_wait: float = DEFAULT_MAX_WAIT,
                retries: int = DEFAULT_RETRIES, throttle: bool = True, timeout: int = 30,
                per_page: int = PER_PAGE) -> Github:
    """A PyGithub client that retries and waits the way GitHub asks.

    Args:
        token: a GitHub token (``GITHUB_TOKEN`` in Actions). Never logged.
        base_url: the REST API root: ``https://api.github.com`` (default), a GitHub
            Enterprise Server's ``https://HOST/api/v3``, or a test server's URL.
        max_wait: cap in seconds on any single wait (Retry-After, rate-limit reset, backoff).
        retries: how many times a request is retried on 5xx or a rate limit.
        throttle: keep PyGithub's pacing between requests and writes.
        timeout: seconds per HTTP request.
        per_page: page size for listings.

    Returns:
        a ``github.Github``.

    Example::

        client = make_client(token, "https://ghe.example.com/api/v3")
    """
    if not token or not token.strip():
        raise GitHubAuthError("no GitHub token. Fix: pass the token input (default "
                              "`${{ github.token }}`) or set GITHUB_TOKEN.", 401)
    retry = CappedRetry(max_wait=max_wait, total=retries, backoff_factor=0.5)
    pacing: dict[str, Any] = {} if throttle else {"seconds_between_requests": None,
                                                  "seconds_between_writes": None}
    return Github(auth=Auth.Token(token.strip()),
                  base_url=(base_url or DEFAULT_API_URL).rstrip("/"), timeout=timeout,
                  per_page=per_page, retry=retry, user_agent="scopeguard", **pacing)


def client_from_env(token: str | None = None, environ: Mapping[str, str] | None = None) -> Github:
    """``make_client`` with the token, API URL and settings of a GitHub Actions job."""
    env = os.environ if environ is None else environ
    token = token or env.get("GITHUB_TOKEN", "")
    return make_client(token, env.get("GITHUB_API_URL") or DEFAULT_API_URL,
                       **settings_from_env(env))


def get_repository(client: Github, full_name: str) -> Repository:
    """The repository ``owner/name``, or a :class:`GitHubError` saying what to fix."""
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", full_name or ""):
        raise GitHubNotFoundError(f"repository {full_name!r} is not of the form owner/name. "
                                  "Fix: set GITHUB_REPOSITORY (Actions sets it for you).")
    with github_errors(f"reading repository {full_name}", needs="issues: read"):
        return client.get_repo(full_name)


def own_login(client: Github, token: str, *, configured: str = "",
              workflow_token: str = "") -> str:
    """The account scopeguard writes as: only its comments are scopeguard's own.

    Args:
        client: the client made with ``token``.
        token: the token scopeguard writes with.
        configured: a login given by the user (the Action's ``bot-login`` input,
            ``SCOPEGUARD_GITHUB_LOGIN``); it wins.
        workflow_token: the job's own ``github.token``: writes with it are
            ``github-actions[bot]``'s.

    Any other token is asked who it is (``GET /user``). A GitHub App's installation token
    cannot read ``/user`` (403): then the login must be configured.
    """
    if configured.strip():
        return configured.strip()
    if workflow_token and token.strip() == workflow_token.strip():
        return ACTIONS_BOT
    try:
        with github_errors("reading the token's account (GET /user)", needs="issues: read"):
            return str(client.get_user().login)
    except (GitHubPermissionError, GitHubNotFoundError):
        raise ConfigError(
            "the GitHub token", "it cannot say which account it is (GitHub refuses GET /user "
            "to a GitHub App's installation token), so scopeguard cannot tell its own "
            "comment from others'.", "set the bot-login input (SCOPEGUARD_GITHUB_LOGIN for "
            "scopeguard serve) to the account the token writes as, e.g. my-app[bot].") from None


# --- issues as requests -----------------------------------------------------------------------


def is_pull_request(data: Mapping[str, Any]) -> bool:
    """GitHub lists pull requests among issues; they carry a ``pull_request`` key."""
    return bool(data.get("pull_request"))


def issue_to_request(data: Mapping[str, Any]) -> Request:
    """A :class:`Request` from an issue's REST JSON (a listing row or an event payload).

    The id is ``#<number>``, as GitHub links it; ``labels`` are the label names;
    ``author_type`` is the author's account type (``Bot`` for bots).
    """
    labels = tuple(label["name"] if isinstance(label, Mapping) else str(label)
                   for label in data.get("labels") or ())
    user = data.get("user") or {}
    return Request(id=f"#{data['number']}", title=data.get("title") or "",
                   body=data.get("body") or "", author=user.get("login") or "",
                   created_at=data.get("created_at") or "", url=data.get("html_url") or "",
                   labels=labels, author_type=str(user.get("type") or ""))


def raw_json(obj: Any) -> dict[str, Any]:
    """The JSON PyGithub received for ``obj`` (an issue, an issue event...).

    Reading ``issue.pull_request`` or ``issue.raw_data`` on a listed issue makes PyGithub
    fetch the whole issue again (one GET per issue), because a listing row lacks keys such
    as ``pull_request``; the received JSON is enough.
    """
    return dict(obj._rawData)


def fetch_issues(repo: Repository, *, state: str = "open", labels: Sequence[str] | None = None,
                 limit: int | None = None) -> list[Request]:
    """The repository's issues as requests, pull requests left out.

    Args:
        repo: a PyGithub ``Repository`` (from :func:`get_repository`).
        state: ``open``, ``closed`` or ``all``.
        labels: only issues carrying every one of these labels (GitHub's ``labels`` filter).
        limit: stop after this many issues (pull requests do not count); ``None`` for all.

    Returns:
        ``Request`` records in GitHub's order (newest first), one page request per 100.

    Example::

        requests = fetch_issues(repo, state="all", labels=["enhancement"], limit=1000)
    """
    out: list[Request] = []
    if limit is not None and limit <= 0:
        return out
    kwargs: dict[str, Any] = {"state": state}
    if labels:
        kwargs["labels"] = list(labels)
    with github_errors(f"listing the issues of {repo.full_name}", needs="issues: read"):
        for issue in repo.get_issues(**kwargs):
            data = raw_json(issue)
            if is_pull_request(data):
                continue
            out.append(issue_to_request(data))
            if limit is not None and len(out) >= limit:
                break
    return out


def fetch_open_issues(repo: Repository, labels: Sequence[str] | None = None,
                      limit: int | None = None) -> list[Request]:
    """The repository's open issues (no pull requests) as requests: see :func:`fetch_issues`."""
    return fetch_issues(repo, state="open", labels=labels, limit=limit)

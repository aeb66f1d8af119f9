"""The GitHub REST client scopeguard's integrations share: PyGithub with retries.

``make_client`` builds a PyGithub ``Github`` whose HTTP layer retries 5xx answers with
exponential backoff and rate-limited answers (403/429 with ``Retry-After``, or with
``x-ratelimit-remaining: 0``, or a "secondary rate limit" message) after the wait GitHub
asks for, each wait capped at ``max_wait`` seconds. :func:`own_login` says which account
a token writes as (whose comments are scopeguard's own). Errors are in :mod:`.errors`,
issues as requests in :mod:`.issues`.

Example::

    client = make_client(os.environ["GITHUB_TOKEN"])
    with github_errors("reading acme/widgets"):
        repo = get_repository(client, "acme/widgets")

Environment (``settings_from_env``): ``SCOPEGUARD_GITHUB_MAX_WAIT`` caps every wait in
seconds (default 60; a primary rate limit that resets later fails at once with a clear
message), ``SCOPEGUARD_GITHUB_RETRIES`` (default 5), ``SCOPEGUARD_GITHUB_TIMEOUT`` (seconds per
request, default 30) and ``SCOPEGUARD_GITHUB_THROTTLE=0`` switches off PyGithub's pacing
(0.25 s between requests, 1 s between writes, which is what GitHub asks of
integrations).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from typing import Any

from github import Auth, Github, GithubRetry
from github.GithubException import RateLimitExceededExceedsMaxWait
from github.Repository import Repository
from urllib3 import Retry
from urllib3.exceptions import InvalidHeader

from scopeguard.errors import ConfigError, InputError
from scopeguard.settings import env_flag, env_number

from .errors import (
    DEFAULT_MAX_WAIT,
    GitHubAuthError,
    GitHubNotFoundError,
    GitHubPermissionError,
    github_errors,
)

DEFAULT_API_URL = "https://api.github.com"
ACTIONS_BOT = "github-actions[bot]"  # who writes with a workflow's own GITHUB_TOKEN
DEFAULT_RETRIES = 5
DEFAULT_TIMEOUT = 30  # seconds per HTTP request
PER_PAGE = 100  # GitHub's maximum: fewest requests for a backlog


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
        if response is not None and response.status in (403, 429):
            try:
                asked = Retry.get_retry_after(self, response)  # GitHub's own Retry-After
            except InvalidHeader:  # unreadable: the backoff
                asked = None
            if asked is not None and asked > self.max_wait:  # an hour away: fail at once
                raise RateLimitExceededExceedsMaxWait(response.status, {
                    "message": f"GitHub asks to retry in {asked:.0f}s"}, dict(headers),
                    wait=asked)
        return super().increment(method, url, response, error, _pool, _stacktrace)

    def get_backoff_time(self) -> float:
        if self._rate_wait is not None:
            return min(self._rate_wait, self.max_wait)
        return super().get_backoff_time()

    def get_retry_after(self, response) -> float | None:
        try:
            seconds = super().get_retry_after(response)
        except InvalidHeader:  # "soon", "-5": the backoff instead (not "cannot reach")
            return None
        return None if seconds is None else min(seconds, self.max_wait)


def settings_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``max_wait``, ``retries``, ``throttle`` and ``timeout`` from ``SCOPEGUARD_GITHUB_*``
    variables."""
    env = os.environ if environ is None else environ
    timeout = int(env_number(env, "SCOPEGUARD_GITHUB_TIMEOUT", DEFAULT_TIMEOUT, InputError,
                             integer=True))  # PyGithub takes whole seconds
    if timeout <= 0:
        raise InputError("SCOPEGUARD_GITHUB_TIMEOUT: 0 seconds would fail every request. "
                         f"Fix: leave it unset ({DEFAULT_TIMEOUT}) or give whole seconds "
                         "above 0.")
    return {"timeout": timeout,
            "max_wait": env_number(env, "SCOPEGUARD_GITHUB_MAX_WAIT", DEFAULT_MAX_WAIT,
                                   InputError),
            "retries": int(env_number(env, "SCOPEGUARD_GITHUB_RETRIES", DEFAULT_RETRIES,
                                      InputError, integer=True)),
            "throttle": env_flag(env, "SCOPEGUARD_GITHUB_THROTTLE", True, InputError)}


def check_api_url(url: str) -> str:
    """``GITHUB_API_URL`` checked: an http(s) URL with a host, so a wrong one fails before
    any call (PyGithub would fail on it with an AttributeError or an assertion)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        ok = parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        ok = False
    if not ok:
        shown = re.sub(r"^((?:[^/@]*//)?)[^/\s]*@", r"\1***@", url)  # no user:password
        raise InputError(f"GITHUB_API_URL: {shown[:80]!r} is not an http(s) URL. Fix: leave it "
                         "unset for github.com (Actions sets it), or set "
                         "https://HOST/api/v3 for GitHub Enterprise Server.")
    return url


def make_client(token: str, base_url: str | None = None, *, max_wait: float = DEFAULT_MAX_WAIT,
                retries: int = DEFAULT_RETRIES, throttle: bool = True,
                timeout: int = DEFAULT_TIMEOUT,
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
        raise GitHubAuthError("no GitHub token. Fix: set GITHUB_TOKEN (in the Action: the "
                              "token input, default `${{ github.token }}`).", 401)
    retry = CappedRetry(max_wait=max_wait, total=retries, backoff_factor=0.5)
    pacing: dict[str, Any] = {} if throttle else {"seconds_between_requests": None,
                                                  "seconds_between_writes": None}
    return Github(auth=Auth.Token(token.strip()),
                  base_url=check_api_url((base_url or DEFAULT_API_URL).strip()).rstrip("/"),
                  timeout=timeout,
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
        raise InputError(f"repository {full_name!r} is not of the form owner/name. "
                         "Fix: name it as owner/name (--github OWNER/NAME on the command "
                         "line; GITHUB_REPOSITORY, which Actions sets for you).")
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

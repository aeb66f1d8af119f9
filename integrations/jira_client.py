"""The Jira REST client scopeguard's integrations share: one retry policy, clear errors.

``make_jira`` builds a :class:`JiraClient` around the ``jira`` library's ``JIRA`` object
(which owns authentication and the HTTP session: Cloud takes an account email and an API
token over basic auth, Server/Data Center a personal access token as a bearer token).
Every call goes through :meth:`JiraClient.request` so that v2 and v3 endpoints share one
policy: 429 and 5xx answers are retried with exponential backoff, honouring
``Retry-After``; failures become :class:`JiraError` subclasses whose messages say what to
fix and never carry a credential (the library's own ``JIRAError`` prints request headers,
so it is never shown).

Write-back (:func:`write_back`) sets the scope label, replacing the one scopeguard set
before, and keeps exactly one verdict comment per issue, found by
``render.COMMENT_MARKER`` and updated in place: wiki markup on Server/Data Center, an
Atlassian Document Format (ADF) body through REST API v3 on Cloud (the conversions are
in :mod:`.jira_format`). A scope label that a person set stands; the comment says so.

Example::

    client = make_jira()  # JIRA_URL, JIRA_EMAIL + JIRA_TOKEN, or JIRA_PAT
    backlog = fetch_issues(client, 'project = PAW AND statusCategory != Done', limit=500)

Environment: ``JIRA_URL``, ``JIRA_EMAIL`` (alias ``JIRA_USER``), ``JIRA_TOKEN``,
``JIRA_PAT``, ``JIRA_FLAVOUR`` (``cloud`` or ``server``; guessed from the URL or the
server's answer when unset), ``SCOPEGUARD_JIRA_RETRIES`` (default 5) and
``SCOPEGUARD_JIRA_MAX_WAIT`` (seconds, default 60: the cap on any single wait).
"""

from __future__ import annotations

import email.utils
import functools
import json
import os
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlparse

from scopeguard import render
from scopeguard.backlog import Request
from scopeguard.errors import ScopeguardError
from scopeguard.positioning import LABELS
from scopeguard.settings import env_number

from .jira_format import adf_text, to_adf, to_wiki

FLAVOURS = ("cloud", "server")
# How Jira identifies a user, most stable first: Cloud's accountId; Server/DC's key, name.
USER_IDS = ("accountId", "key", "name")
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
DEFAULT_RETRIES = 5
DEFAULT_MAX_WAIT = 60.0
ISSUE_FIELDS = ("summary", "description", "issuetype", "project", "labels", "reporter",
                "created", "status")
CREDENTIALS_FIX = ("for Jira Cloud set JIRA_EMAIL and JIRA_TOKEN (an API token from "
                   "https://id.atlassian.com/manage-profile/security/api-tokens); for Jira "
                   "Server/Data Center set JIRA_PAT (a personal access token)")


# --- errors ----------------------------------------------------------------------------------


class JiraError(ScopeguardError):
    """A Jira API call failed; the message says what to fix."""

    def __init__(self, message: str, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class JiraConfigError(JiraError):
    """JIRA_URL or the credentials are missing or malformed."""


class JiraAuthError(JiraError):
    """Jira rejected the credentials (401)."""


class JiraPermissionError(JiraError):
    """The Jira user may not do this (403)."""


class JiraNotFoundError(JiraError):
    """The issue or comment does not exist, or the user cannot see it (404)."""


class JiraRequestError(JiraError):
    """Jira refused the request as malformed (400), e.g. a bad JQL query."""


class JiraUnavailableError(JiraError):
    """Jira kept answering 429/5xx, or could not be reached, after every retry."""


def _detail(response: Any) -> str:
    """Jira's own error text from a response, short; never request headers."""
    try:
        data = response.json()
    except ValueError:
        return (response.text or "").strip()[:200]
    if not isinstance(data, dict):
        return ""
    parts = [str(m) for m in data.get("errorMessages") or []]
    errors = data.get("errors")
    if isinstance(errors, dict):
        parts += [f"{k}: {v}" for k, v in errors.items()]
    if data.get("message"):
        parts.append(str(data["message"]))
    return "; ".join(parts)[:300]


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from a ``Retry-After`` header (a number or an HTTP date), if any."""
    value = (headers.get("Retry-After") or "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def translate(status: int, detail: str, action: str, wait: float | None = None) -> JiraError:
    """The :class:`JiraError` for an HTTP ``status`` met while ``action``."""
    said = f": {detail}" if detail else ""
    if status == 401:
        return JiraAuthError(f"Jira rejected the credentials (401) while {action}. "
                             f"Fix: {CREDENTIALS_FIX}.", status)
    if status == 403:
        return JiraPermissionError(
            f"Jira refused {action} (403{said}). Fix: give the scopeguard user the Browse "
            "Projects, Edit Issues and Add Comments permissions in the project (a CAPTCHA "
            "after failed logins also gives 403: log in once in a browser).", status)
    if status == 404:
        return JiraNotFoundError(
            f"not found while {action} (404{said}). Fix: check the issue key, that JIRA_URL "
            "includes any context path (e.g. https://jira.example.com/jira), and that the "
            "scopeguard user can see the project.", status)
    if status == 400:
        return JiraRequestError(f"Jira refused {action} (400{said}). Fix: correct the "
                                "request named here (JQL syntax, field or label names).", status)
    if status in RETRY_STATUSES:
        return JiraUnavailableError(
            f"Jira kept answering {status} while {action}, after every retry. Fix: wait and "
            "retry (the webhook service keeps the event and retries it); raise "
            "SCOPEGUARD_JIRA_RETRIES if this Jira is often busy.", status, wait)
    return JiraError(f"Jira answered {status} while {action}{said}.", status)


# --- the client ------------------------------------------------------------------------------


@dataclass
class RetryPolicy:
    """How often and how long to wait on 429/5xx answers and connection failures."""

    retries: int = DEFAULT_RETRIES
    backoff: float = 0.5
    max_wait: float = DEFAULT_MAX_WAIT

    def delay(self, attempt: int, asked: float | None) -> float:
        """The wait before retry number ``attempt`` (1-based): Retry-After, else backoff."""
        if asked is not None:
            return min(asked, self.max_wait)
        # Full jitter keeps many workers from retrying in lockstep.
        return min(self.max_wait, self.backoff * 2 ** (attempt - 1) * random.uniform(0.5, 1.0))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RetryPolicy:
        env = os.environ if environ is None else environ
        return cls(retries=int(env_number(env, "SCOPEGUARD_JIRA_RETRIES", DEFAULT_RETRIES,
                                          JiraConfigError)),
                   max_wait=env_number(env, "SCOPEGUARD_JIRA_MAX_WAIT", DEFAULT_MAX_WAIT,
                                       JiraConfigError))


@dataclass
class JiraClient:
    """A ``jira.JIRA`` (auth, session) plus the flavour and the retry policy.

    Args:
        jira: the library client; its session carries the credentials.
        flavour: ``cloud`` (comments in ADF through API v3) or ``server`` (wiki markup).
        retry: the retry policy for 429/5xx answers and connection failures.
        sleep: how to wait (tests pass a recorder).
    """

    jira: Any
    flavour: str
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    sleep: Callable[[float], None] = time.sleep
    _field_ids: dict[str, str] = field(default_factory=dict, repr=False)
    _myself: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def server(self) -> str:
        return str(self.jira.server_url).rstrip("/")

    @property
    def cloud(self) -> bool:
        return self.flavour == "cloud"

    def request(self, method: str, path: str, *, action: str, api: str = "2",
                params: Mapping[str, Any] | None = None, body: Any = None,
                idempotent: bool | None = None) -> Any:
        """One REST call to ``/rest/api/{api}/{path}``, retried; the decoded JSON or None.

        Non-idempotent calls (POST by default) are retried only on 429, which Jira sends
        before doing anything; a 5xx there may have been applied, so the caller decides.
        """
        import requests

        url = f"{self.server}/rest/api/{api}/{path.lstrip('/')}"
        if idempotent is None:
            idempotent = method.upper() != "POST"
        session = self.jira._session  # the library's authenticated session
        attempt = 0
        while True:
            attempt += 1
            wait: float | None = None
            try:
                response = requests.Session.request(
                    session, method, url, params=params, timeout=session.timeout,
                    data=None if body is None else json.dumps(body),
                    headers={"Content-Type": "application/json"} if body is not None else None)
            except (requests.ConnectionError, requests.Timeout) as exc:
                if attempt > self.retry.retries or not idempotent:
                    raise JiraUnavailableError(
                        f"cannot reach Jira at {self.server} while {action} "
                        f"({type(exc).__name__}). Fix: check JIRA_URL and the network; the "
                        "webhook service keeps the event and retries it.") from None
            else:
                status = response.status_code
                if status < 400:
                    if status == 204 or not response.content:
                        return None
                    try:
                        return response.json()
                    except ValueError:
                        raise JiraError(f"Jira answered {action} with something that is not "
                                        "JSON. Fix: check that JIRA_URL is the Jira base URL, "
                                        "not a login or proxy page.", status) from None
                wait = retry_after(response.headers)
                retriable = status in RETRY_STATUSES and (idempotent or status == 429)
                if not retriable or attempt > self.retry.retries:
                    raise translate(status, _detail(response), action, wait)
            self.sleep(self.retry.delay(attempt, wait))

    # --- issues and search ----------------------------------------------------------------

    def field_id(self, name: str) -> str:
        """The id of a field given by id (``customfield_10050``) or display name."""
        if not name or name.startswith("customfield_") or name in ISSUE_FIELDS:
            return name
        if not self._field_ids:
            for f in self.request("GET", "field", action="listing fields") or []:
                self._field_ids[str(f.get("name", "")).lower()] = str(f.get("id", ""))
                self._field_ids[str(f.get("id", "")).lower()] = str(f.get("id", ""))
        found = self._field_ids.get(name.lower())
        if not found:
            raise JiraConfigError(
                f"the positioning file's jira.customer_field {name!r} is not a Jira field. "
                "Fix: use the field's id (e.g. customfield_10050, see Jira's field "
                "configuration) or its exact name.")
        return found

    def myself(self) -> dict[str, Any]:
        """The account scopeguard's credentials belong to (``/myself``, asked once): only
        comments this account wrote are scopeguard's own."""
        if not self._myself:
            found = self.request("GET", "myself", action="reading the scopeguard user "
                                 "(/myself)") or {}
            if not any(found.get(k) for k in USER_IDS):
                raise JiraError("Jira's /myself names no account id, key or name, so "
                                "scopeguard cannot tell its own comments from others'. Fix: "
                                "use credentials of a real Jira user (" + CREDENTIALS_FIX
                                + ").")
            self._myself = found
        return self._myself

    def get_issue(self, key: str, fields: Sequence[str] = ISSUE_FIELDS) -> dict[str, Any]:
        return self.request("GET", f"issue/{quote(key)}", params={"fields": ",".join(fields)},
                            action=f"reading issue {key}")

    def search(self, jql: str, fields: Sequence[str] = ISSUE_FIELDS, page_size: int = 100,
               limit: int | None = None) -> list[dict[str, Any]]:
        """Raw issues matching ``jql``, page by page.

        Cloud pages with ``nextPageToken`` on ``search/jql`` (Atlassian removed the
        ``startAt`` search from Cloud); Server/Data Center with ``startAt``/``maxResults``,
        advancing by what each page held, since the server may cap the page size.
        """
        out: list[dict[str, Any]] = []
        action = f"searching Jira for {jql!r}"
        params: dict[str, Any] = {"jql": jql, "fields": ",".join(fields)}
        start, token = 0, None
        while limit is None or len(out) < limit:
            size = page_size if limit is None else min(page_size, limit - len(out))
            if self.cloud:
                page = self.request("GET", "search/jql", action=action,
                                    params={**params, "maxResults": size,
                                            **({"nextPageToken": token} if token else {})})
            else:
                page = self.request("GET", "search", action=action,
                                    params={**params, "startAt": start, "maxResults": size})
            issues = (page or {}).get("issues") or []
            out.extend(issues)
            if self.cloud:
                token = page.get("nextPageToken")
                if not token or page.get("isLast") or not issues:
                    break
            else:
                start += len(issues)
                if not issues or start >= int(page.get("total", 0)):
                    break
        return out if limit is None else out[:limit]

    # --- comments and labels ---------------------------------------------------------------

    @property
    def comment_api(self) -> str:
        return "3" if self.cloud else "2"

    def comments(self, key: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            page = self.request("GET", f"issue/{quote(key)}/comment", api=self.comment_api,
                                params={"startAt": len(out), "maxResults": 100,
                                        "orderBy": "created"},
                                action=f"reading the comments of {key}") or {}
            got = page.get("comments") or []
            out.extend(got)
            if not got or len(out) >= int(page.get("total", len(out))):
                return out

    def get_comment(self, key: str, comment_id: str) -> dict[str, Any]:
        return self.request("GET", f"issue/{quote(key)}/comment/{quote(comment_id)}",
                            api=self.comment_api, action=f"reading comment {comment_id} of {key}")

    def add_comment(self, key: str, body: Any) -> dict[str, Any]:
        return self.request("POST", f"issue/{quote(key)}/comment", api=self.comment_api,
                            body={"body": body}, action=f"commenting on {key}")

    def update_comment(self, key: str, comment_id: str, body: Any) -> dict[str, Any]:
        return self.request("PUT", f"issue/{quote(key)}/comment/{quote(comment_id)}",
                            api=self.comment_api, body={"body": body},
                            action=f"updating scopeguard's comment on {key}")

    def delete_comment(self, key: str, comment_id: str) -> None:
        try:
            self.request("DELETE", f"issue/{quote(key)}/comment/{quote(comment_id)}",
                         api=self.comment_api, action=f"deleting a duplicate comment on {key}")
        except JiraNotFoundError:  # already gone
            pass

    def update_labels(self, key: str, add: Sequence[str] = (), remove: Sequence[str] = ()) -> None:
        """Add and remove labels with Jira's ``update`` verbs: other labels are untouched
        even if a person edits them at the same moment."""
        ops = [{"remove": r} for r in remove] + [{"add": a} for a in add]
        if ops:
            # No notifyUsers=false: on Cloud it needs admin rights, and a 403 would lose the label.
            self.request("PUT", f"issue/{quote(key)}", body={"update": {"labels": ops}},
                         action=f"labelling {key}")


# --- building the client ---------------------------------------------------------------------


@functools.cache
def whole_request_adapter() -> type:
    """A ``requests`` adapter class whose connections send headers and body in one write.

    urllib3 sends a request's header block and its body with two ``send`` calls, and the
    thread gives the GIL up in between: with the workers busy, the body often follows 5-10
    ms later. A service killed in that gap (``kill -9``, the OOM killer, a crash)
    leaves Jira a POST with headers and no body: Jira answers it 400 and counts it, and the
    restarted service, finding no comment, posts the comment again, so Jira saw two POSTs
    for one comment (tests/test_jira_load.py caught it). One write leaves Jira the whole
    request or nothing: a kill cannot split a single ``sendall`` of a comment, which fits
    the socket's send buffer. Requests through an HTTP proxy keep urllib3's two writes.
    """
    import requests.adapters
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class WholeRequest:
        """Holds the header block back until the body's first chunk, then sends both."""

        _hold = False
        _held: bytes | None = None

        def request(self, method: str, url: str, body: Any = None, headers: Any = None,
                    **options: Any) -> None:
            self._hold, self._held = body is not None, None
            try:
                super().request(method, url, body=body, headers=headers,  # type: ignore[misc]
                                **options)
                if self._held is not None:  # the body was empty after all
                    super().send(self._held)  # type: ignore[misc]
            finally:
                self._hold, self._held = False, None

        def send(self, data: Any) -> None:
            if self._hold:
                if self._held is None:
                    self._held = bytes(data)  # the header block
                    return
                data, self._hold, self._held = self._held + bytes(data), False, None
            super().send(data)  # type: ignore[misc]

    class Connection(WholeRequest, HTTPConnection):
        pass

    class TLSConnection(WholeRequest, HTTPSConnection):
        pass

    class Pool(HTTPConnectionPool):
        ConnectionCls = Connection

    class TLSPool(HTTPSConnectionPool):
        ConnectionCls = TLSConnection

    class Adapter(requests.adapters.HTTPAdapter):
        pool_classes = {"http": Pool, "https": TLSPool}

        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = self.pool_classes

    return Adapter


def guess_flavour(url: str) -> str | None:
    host = (urlparse(url).hostname or "").lower()
    if host.endswith((".atlassian.net", ".jira.com", ".jira-dev.com")):
        return "cloud"
    return None


def make_jira(server: str | None = None, *, email: str | None = None, token: str | None = None,
              pat: str | None = None, flavour: str | None = None, timeout: float = 30,
              retry: RetryPolicy | None = None, verify: bool | str = True,
              environ: Mapping[str, str] | None = None) -> JiraClient:
    """A :class:`JiraClient` from arguments, falling back to ``JIRA_*`` variables.

    Args:
        server: the Jira base URL (``JIRA_URL``), with any context path.
        email: the account email for Cloud, or the username for Server basic auth
            (``JIRA_EMAIL``; ``JIRA_USER`` also works).
        token: the API token (Cloud) or password (``JIRA_TOKEN``).
        pat: a Server/Data Center personal access token (``JIRA_PAT``), sent as a bearer
            token; it wins over email and token.
        flavour: ``cloud`` or ``server`` (``JIRA_FLAVOUR``); guessed when unset, from the
            host (``*.atlassian.net`` is Cloud), from the credentials (a PAT means Server),
            else by asking the server (``serverInfo``).
        timeout: seconds per HTTP request.
        retry: the retry policy; default from ``SCOPEGUARD_JIRA_*`` variables.
        verify: TLS verification, or a CA bundle path.

    Returns:
        a :class:`JiraClient`. No request is made unless the flavour has to be asked.

    Example::

        client = make_jira("https://acme.atlassian.net", email="bot@acme.com", token=t)
    """
    from jira import JIRA

    env = os.environ if environ is None else environ
    server = (server or env.get("JIRA_URL", "")).strip().rstrip("/")
    if not server:
        raise JiraConfigError("no Jira URL. Fix: set JIRA_URL (e.g. https://your-site."
                              "atlassian.net) or pass --jira-url.")
    parts = urlparse(server)
    if parts.username is not None or parts.password is not None:
        # Said without the URL: it holds a password, and errors end up in logs.
        raise JiraConfigError("JIRA_URL carries a user name or password (user:password@host). "
                              "Fix: give JIRA_URL without them (e.g. https://jira.example.com) "
                              f"and put the credentials in their own variables: "
                              f"{CREDENTIALS_FIX}.")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise JiraConfigError(f"JIRA_URL {server!r} is not an http(s) URL. Fix: use the "
                              "address you open Jira at, e.g. https://jira.example.com.")
    pat = (pat or env.get("JIRA_PAT", "")).strip()
    email = (email or env.get("JIRA_EMAIL", "") or env.get("JIRA_USER", "")).strip()
    token = (token or env.get("JIRA_TOKEN", "")).strip()
    auth: dict[str, Any]
    if pat:
        auth = {"token_auth": pat}
    elif email and token:
        auth = {"basic_auth": (email, token)}
    elif token:
        raise JiraConfigError("JIRA_TOKEN is set but JIRA_EMAIL is not. Fix: Cloud API tokens "
                              "go with the account's email (JIRA_EMAIL); for Server/Data Center "
                              "use a personal access token in JIRA_PAT.")
    else:
        raise JiraConfigError(f"no Jira credentials. Fix: {CREDENTIALS_FIX}.")
    flavour = (flavour or env.get("JIRA_FLAVOUR", "")).strip().lower() or None
    if flavour in ("datacenter", "data-center", "dc"):
        flavour = "server"
    if flavour is not None and flavour not in FLAVOURS:
        raise JiraConfigError(f"Jira flavour {flavour!r} is not cloud or server. Fix: set "
                              "JIRA_FLAVOUR to cloud (Atlassian-hosted) or server (Server or "
                              "Data Center).")
    # max_retries=0: the library's own retries cover only 429/503 and wait twice what
    # Retry-After asks; JiraClient.request retries instead, for every call.
    jira = JIRA(server=server, get_server_info=False, max_retries=0, timeout=timeout,
                options={"verify": verify, "check_update": False,
                         "headers": {"User-Agent": "scopeguard"}}, **auth)
    adapter = whole_request_adapter()()
    for scheme in ("https://", "http://"):
        jira._session.mount(scheme, adapter)
    client = JiraClient(jira, flavour or guess_flavour(server) or ("server" if pat else ""),
                        retry or RetryPolicy.from_env(env))
    if not client.flavour:
        info = client.request("GET", "serverInfo", action="reading Jira's server info") or {}
        client.flavour = "cloud" if info.get("deploymentType") == "Cloud" else "server"
    jira.deploymentType = "Cloud" if client.cloud else "Server"  # what the library checks
    return client


# --- issues as requests ----------------------------------------------------------------------


def field_text(value: Any) -> str:
    """A custom field's value as text: options, users, lists and ADF included."""
    if value is None:
        return ""
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, list):
        return ", ".join(t for t in (field_text(v) for v in value) if t)
    if isinstance(value, dict):
        if value.get("type") == "doc":
            return adf_text(value).strip()
        for key in ("value", "name", "displayName", "key"):
            if value.get(key):
                return str(value[key])
    return ""


def issue_to_request(issue: Mapping[str, Any], server: str = "",
                     customer_field: str = "") -> Request:
    """A Jira issue (REST JSON) as a :class:`~scopeguard.backlog.Request`.

    ``extra`` carries ``project`` and ``issue_type`` for the service's filters;
    ``author_type`` and ``author_ids`` (email, name, display name, account id) name the
    reporter for ``filters.skip_bots`` and ``skip_authors``.
    """
    fields = issue.get("fields") or {}
    reporter = fields.get("reporter") or {}
    ids = [str(reporter[k]) for k in ("emailAddress", "name", "displayName", "accountId")
           if reporter.get(k)]
    author = ids[0] if ids else ""
    description = fields.get("description")
    body = adf_text(description).strip() if isinstance(description, dict) else description or ""
    key = str(issue.get("key", ""))
    return Request(
        id=key, title=str(fields.get("summary") or ""), body=str(body), author=str(author),
        customer=field_text(fields.get(customer_field)) if customer_field else "",
        created_at=str(fields.get("created") or ""),
        url=f"{server.rstrip('/')}/browse/{key}" if server else "",
        labels=tuple(str(x) for x in fields.get("labels") or ()),
        extra={"project": str((fields.get("project") or {}).get("key", "")),
               "issue_type": str((fields.get("issuetype") or {}).get("name", ""))},
        # Cloud's accountType is "app" for Automation and apps: bots, not customers.
        author_type=str(reporter.get("accountType") or ""), author_ids=tuple(ids))


def fetch_issues(jira: JiraClient | Any, jql: str, limit: int | None = None, *,
                 customer_field: str = "", page_size: int = 100) -> list[Request]:
    """The issues matching ``jql`` as requests, paginated, at most ``limit``.

    Args:
        jira: a :class:`JiraClient` (or a ``jira.JIRA``, wrapped with default retries).
        jql: the query, e.g. ``project = PAW AND statusCategory != Done ORDER BY created``.
        limit: stop after this many issues.
        customer_field: a field id or name holding the customer (the positioning file's
            ``jira.customer_field``).
        page_size: issues per request.

    Example::

        fetch_issues(make_jira(), "project = PAW", limit=200, customer_field="Clinic")
    """
    client = jira if isinstance(jira, JiraClient) else JiraClient(
        jira, "cloud" if getattr(jira, "_is_cloud", False) else "server")
    field_id = client.field_id(customer_field) if customer_field else ""
    fields = [*ISSUE_FIELDS, *([field_id] if field_id else [])]
    return [issue_to_request(raw, client.server, field_id)
            for raw in client.search(jql, fields, page_size=page_size, limit=limit)]


# --- write-back ------------------------------------------------------------------------------


def jira_label(name: str) -> str:
    """A label name as Jira accepts it: no spaces (``scope: core`` -> ``scope:core``)."""
    return re.sub(r"\s+", "-", re.sub(r"\s*:\s*", ":", name.strip()))


@dataclass
class WriteBack:
    """What :func:`write_back` did to one issue."""

    key: str
    label: str  # the Jira label of scopeguard's verdict
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    human_label: str = ""  # a scope label a person set, which stands
    human_key: str = ""  # its verdict label (core, generalizable or one_off)
    removed_by_person: bool = False  # scopeguard's label was taken off by a person
    applied: str = ""  # the verdict label whose Jira label scopeguard now keeps on the issue
    comment_id: str = ""
    comment: str = "unchanged"  # created | updated | unchanged

    def summary(self) -> str:
        parts = [f"added {', '.join(self.added)}"] if self.added else []
        parts += [f"removed {', '.join(self.removed)}"] if self.removed else []
        if self.human_label:
            parts.append(f"kept {self.human_label} (set by a person)")
        if self.removed_by_person:
            parts.append(f"left {self.label} off (a person removed it)")
        parts.append(f"comment {self.comment}")
        return "; ".join(parts)


def comment_text(comment: Mapping[str, Any]) -> str:
    body = comment.get("body")
    return adf_text(body) if isinstance(body, dict | list) else str(body or "")


def same_user(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two Jira user objects are one account (by the first id both carry)."""
    for key in USER_IDS:
        if a.get(key) and b.get(key):
            return str(a[key]) == str(b[key])
    return False


def is_own(client: JiraClient, comment: Mapping[str, Any]) -> bool:
    """Whether ``comment`` is scopeguard's: written by its account and ending with its
    marker footer. Anyone else's comment is never edited or deleted, whatever it quotes."""
    return (same_user(comment.get("author") or {}, client.myself())
            and render.read_markers(comment_text(comment)).verdict)


def find_comment(client: JiraClient, key: str, hint: str = "") -> list[dict[str, Any]]:
    """scopeguard's own verdict comments on ``key`` (normally one), oldest first.

    ``hint`` is the comment id scopeguard recorded last time: one GET instead of paging
    through every comment, unless a person deleted it.
    """
    if hint:
        try:
            found = client.get_comment(key, hint)
            if is_own(client, found):
                return [found]
        except JiraNotFoundError:
            pass
    return [c for c in client.comments(key) if is_own(client, c)]


HUMAN_NOTE = ("> **A person's label stands:** `{label}`. scopeguard's own verdict is below "
              "for reference; it never replaces a label a person set.")
REMOVED_NOTE = ("> **A person removed the label** `{label}`; scopeguard leaves it off. Its "
                "verdict is below for reference.")


def compose(markdown: str, note: str) -> str:
    """The comment Markdown with ``note`` placed after the hidden marker lines."""
    if not note:
        return markdown
    lines = markdown.split("\n")
    head = render.marker_lines(lines)
    return "\n".join([*lines[:head], note, "", *lines[head:]])


def write_back(client: JiraClient, key: str, verdict_label: str, markdown: Callable[[str], str],
               label_names: Mapping[str, str], issue_labels: Sequence[str], *,
               applied: str = "", comment_hint: str = "") -> WriteBack:
    """Label ``key`` with the verdict and keep exactly one verdict comment on it.

    Args:
        client: the Jira client.
        key: the issue key.
        verdict_label: ``core``, ``generalizable`` or ``one_off``.
        markdown: builds the comment Markdown (``render.to_markdown``) given the Jira label
            name shown in it.
        label_names: the positioning file's label names by verdict label.
        issue_labels: the labels on the issue now.
        applied: the verdict label whose Jira label scopeguard put on the issue last time
            (the caller's records), if any.
        comment_hint: the comment id recorded last time, if any.

    Returns:
        a :class:`WriteBack`; its ``applied`` is what the caller should record.

    Scope labels scopeguard did not give (neither the comment's ``LABEL_MARKER`` nor
    ``applied``) were set by a person: they stay, and the comment says so; a label of
    scopeguard's that a person removed stays off while the verdict is unchanged. The
    comment is written before the labels and the caller records ``applied`` last, so a
    crash at any point is repaired by running again: an unchanged verdict writes nothing,
    and the comment is found again rather than posted twice.
    """
    names = {k: jira_label(label_names[k]) for k in LABELS}
    mine = find_comment(client, key, comment_hint)
    ours = {k for k in (render.marked_label(comment_text(mine[-1])) if mine else None, applied)
            if k in names}
    present = {x.lower(): x for x in issue_labels}
    on_issue = [k for k in LABELS if names[k].lower() in present]
    human = next((k for k in on_issue if k not in ours), None)
    result = WriteBack(key, names[verdict_label])
    add: list[str] = []
    remove: list[str] = []
    note = ""
    if human:
        result.human_label, result.human_key = names[human], human
        remove = [present[names[k].lower()] for k in on_issue if k != human]
        note = HUMAN_NOTE.format(label=names[human])
    elif applied == verdict_label and verdict_label not in on_issue:
        note = REMOVED_NOTE.format(label=names[verdict_label])
        result.removed_by_person = True
    else:
        remove = [present[names[k].lower()] for k in on_issue if k != verdict_label]
        add = [] if verdict_label in on_issue else [names[verdict_label]]
        result.applied = verdict_label
    text = compose(markdown(names[verdict_label]), note)
    body: Any = to_adf(text) if client.cloud else to_wiki(text)
    result.comment_id, result.comment = _upsert(client, key, mine, body,
                                                comment_text({"body": body}))
    client.update_labels(key, add=add, remove=remove)
    result.added, result.removed = add, remove
    return result


def _normal(text: str) -> str:
    return " ".join(text.split())


def _upsert(client: JiraClient, key: str, mine: list[dict[str, Any]], body: Any,
            new_text: str) -> tuple[str, str]:
    for attempt in range(1, client.retry.retries + 2):
        if mine:
            keep = mine[-1]  # the newest of scopeguard's own; `mine` holds nobody else's
            for extra in mine[:-1]:  # a race left a second one: one comment, always
                client.delete_comment(key, str(extra["id"]))
            if _normal(comment_text(keep)) == _normal(new_text):
                return str(keep["id"]), "unchanged"
            client.update_comment(key, str(keep["id"]), body)
            return str(keep["id"]), "updated"
        try:
            return str(client.add_comment(key, body)["id"]), "created"
        except JiraUnavailableError as exc:
            # A 5xx after a POST may still have created the comment: look before retrying.
            if attempt > client.retry.retries:
                raise
            client.sleep(client.retry.delay(attempt, exc.retry_after))
            mine = find_comment(client, key)
    raise AssertionError("unreachable")  # pragma: no cover

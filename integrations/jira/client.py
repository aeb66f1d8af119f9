"""The Jira REST client scopeguard's integrations share: issues, comments, labels, search.

``make_jira`` builds a :class:`JiraClient` around the ``jira`` library's ``JIRA`` object
(which owns authentication and the HTTP session: Cloud takes an account email and an API
token over basic auth, Server/Data Center a personal access token as a bearer token).
The client holds the flavour (Cloud: API v3 and ADF comments; Server/Data Center: API v2
and wiki markup) and the operations scopeguard needs; every call goes through the
:class:`.transport.Transport` (retries, errors).

Example::

    client = make_jira()  # JIRA_URL, JIRA_EMAIL + JIRA_TOKEN, or JIRA_PAT
    issue = client.get_issue("PAW-12")

Environment: ``JIRA_URL``, ``JIRA_EMAIL`` (alias ``JIRA_USER``), ``JIRA_TOKEN``,
``JIRA_PAT``, ``JIRA_FLAVOUR`` (``cloud`` or ``server``; guessed from the URL or the
server's answer when unset), ``SCOPEGUARD_JIRA_RETRIES`` (default 5) and
``SCOPEGUARD_JIRA_MAX_WAIT`` (seconds, default 60: the cap on any single wait).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlparse

from .errors import (
    CREDENTIALS_FIX,
    JiraConfigError,
    JiraError,
    JiraNotFoundError,
    JiraUnavailableError,
    expect,
)
from .transport import RetryPolicy, Transport, whole_request_adapter

FLAVOURS = ("cloud", "server")
# How Jira identifies a user, most stable first: Cloud's accountId; Server/DC's key, name.
USER_IDS = ("accountId", "key", "name")
ISSUE_FIELDS = ("summary", "description", "issuetype", "project", "labels", "reporter",
                "created", "status")


class JiraClient:
    """The flavour and the operations, over a :class:`.transport.Transport`.

    Args:
        jira: the library client; its session carries the credentials.
        flavour: ``cloud`` (comments in ADF through API v3) or ``server`` (wiki markup).
        retry: the retry policy for 429/5xx answers and connection failures.
        sleep: how to wait (tests pass a recorder).
    """

    def __init__(self, jira: Any, flavour: str, retry: RetryPolicy | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.transport = Transport(jira, retry or RetryPolicy(), sleep)
        self.flavour = flavour
        self._field_ids: dict[str, str] = {}
        self._myself: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"JiraClient({self.server!r}, {self.flavour!r})"

    @property
    def jira(self) -> Any:
        return self.transport.jira

    @property
    def retry(self) -> RetryPolicy:
        return self.transport.retry

    @property
    def sleep(self) -> Callable[[float], None]:
        return self.transport.sleep

    @sleep.setter
    def sleep(self, sleep: Callable[[float], None]) -> None:
        self.transport.sleep = sleep

    @property
    def server(self) -> str:
        return self.transport.server

    @property
    def cloud(self) -> bool:
        return self.flavour == "cloud"

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One REST call through the transport (see :meth:`.transport.Transport.request`)."""
        return self.transport.request(method, path, **kwargs)

    # --- issues and search ----------------------------------------------------------------

    def field_id(self, name: str) -> str:
        """The id of a field given by id (``customfield_10050``) or display name."""
        if not name or name.startswith("customfield_") or name in ISSUE_FIELDS:
            return name
        if not self._field_ids:
            action = "listing fields"
            for f in expect(self.request("GET", "field", action=action), list, "the answer",
                            action):
                expect(f, dict, "a field", action)
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
            action = "reading the scopeguard user (/myself)"
            found = expect(self.request("GET", "myself", action=action), dict, "the answer",
                           action)
            if not any(found.get(k) for k in USER_IDS):
                raise JiraError("Jira's /myself names no account id, key or name, so "
                                "scopeguard cannot tell its own comments from others'. Fix: "
                                "use credentials of a real Jira user (" + CREDENTIALS_FIX
                                + ").")
            self._myself = found
        return self._myself

    def get_issue(self, key: str, fields: Sequence[str] = ISSUE_FIELDS) -> dict[str, Any]:
        action = f"reading issue {key}"
        return checked_issue(self.request("GET", f"issue/{quote(key)}", action=action,
                                          params={"fields": ",".join(fields)}), action)

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
            page = expect(page, dict, "a page", action)
            issues = expect(page.get("issues") or [], list, "'issues'", action)
            out.extend(checked_issue(issue, action) for issue in issues)
            if self.cloud:
                token = page.get("nextPageToken")
                if not token or page.get("isLast") or not issues:
                    break
            else:
                start += len(issues)
                if not issues or start >= expect(page.get("total", 0), int, "'total'", action):
                    break
        return out if limit is None else out[:limit]

    # --- comments and labels ---------------------------------------------------------------

    @property
    def comment_api(self) -> str:
        return "3" if self.cloud else "2"

    def comments(self, key: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        action = f"reading the comments of {key}"
        while True:
            page = expect(self.request("GET", f"issue/{quote(key)}/comment", action=action,
                                       api=self.comment_api, params={
                                           "startAt": len(out), "maxResults": 100,
                                           "orderBy": "created"}), dict, "a page", action)
            got = expect(page.get("comments") or [], list, "'comments'", action)
            out.extend(checked_comment(c, action) for c in got)
            if not got or len(out) >= expect(page.get("total", len(out)), int, "'total'",
                                             action):
                return out

    def get_comment(self, key: str, comment_id: str) -> dict[str, Any]:
        action = f"reading comment {comment_id} of {key}"
        return checked_comment(self.request(
            "GET", f"issue/{quote(key)}/comment/{quote(comment_id)}", api=self.comment_api,
            action=action), action)

    def add_comment(self, key: str, body: Any) -> dict[str, Any]:
        action = f"commenting on {key}"
        return checked_comment(self.request("POST", f"issue/{quote(key)}/comment",
                                            api=self.comment_api, body={"body": body},
                                            action=action), action)

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

    def label_adder(self, key: str, name: str) -> dict[str, Any] | None:
        """Who last added the label ``name`` to ``key`` (a user object) by its changelog, or
        None. Cloud pages ``issue/KEY/changelog`` oldest first: read from the last page back
        to the newest that added it. Server/Data Center: ``expand=changelog``."""
        action = f"reading the changelog of {key}"
        if not self.cloud:
            issue = expect(self.request("GET", f"issue/{quote(key)}", action=action,
                                        params={"fields": "labels", "expand": "changelog"}),
                           dict, "the issue", action)
            changelog = expect(issue.get("changelog") or {}, dict, "'changelog'", action)
            return _last_adder(expect(changelog.get("histories") or [], list, "'histories'",
                                      action), name)

        def page(start: int) -> tuple[list[Any], int]:
            got = expect(self.request("GET", f"issue/{quote(key)}/changelog", action=action,
                                      params={"startAt": start, "maxResults": 100}),
                         dict, "a page", action)
            values = expect(got.get("values") or [], list, "'values'", action)
            return values, expect(got.get("total", len(values)), int, "'total'", action)

        first, total = page(0)
        size, start = max(1, len(first)), total
        for _ in range(20):  # the pages after the first, newest first (2,000 changes at most)
            if start <= len(first):
                break
            start = max(len(first), start - size)
            values, _ = page(start)
            adder = _last_adder(values, name)
            if adder is not None:
                return adder
        return _last_adder(first, name)

    def update_labels(self, key: str, add: Sequence[str] = (), remove: Sequence[str] = ()) -> None:
        """Add and remove labels with Jira's ``update`` verbs: other labels are untouched
        even if a person edits them at the same moment."""
        ops = [{"remove": r} for r in remove] + [{"add": a} for a in add]
        if ops:
            # No notifyUsers=false: on Cloud it needs admin rights, and a 403 would lose the label.
            self.request("PUT", f"issue/{quote(key)}", body={"update": {"labels": ops}},
                         action=f"labelling {key}")


def _last_adder(histories: Sequence[Any], name: str) -> dict[str, Any] | None:
    """The author of the last of ``histories`` (oldest first) whose labels change added
    ``name`` (case aside); None when none did ({} when that change names no author)."""
    adder, wanted = None, name.lower()
    for history in (h for h in histories if isinstance(h, dict)):
        for item in history.get("items") or []:
            if not isinstance(item, dict) or str(item.get("field")).lower() != "labels":
                continue
            before = str(item.get("fromString") or "").lower().split()
            if wanted in str(item.get("toString") or "").lower().split() and \
                    wanted not in before:
                author = history.get("author")
                adder = author if isinstance(author, dict) else {}
    return adder


def checked_issue(issue: Any, action: str) -> dict[str, Any]:
    """An issue as Jira sends it: the objects and lists scopeguard reads are objects and
    lists (or absent), else :class:`.errors.JiraAnswerError`."""
    expect(issue, dict, "the issue", action)
    fields = expect(issue.get("fields") or {}, dict, "'fields'", action)
    for name in ("reporter", "project", "issuetype", "status"):
        expect(fields.get(name) or {}, dict, f"'fields.{name}'", action)
    expect(fields.get("labels") or [], list, "'fields.labels'", action)
    return issue


def checked_comment(comment: Any, action: str) -> dict[str, Any]:
    """A comment as Jira sends it: an object with an id, its author an object (or absent)."""
    expect(comment, dict, "the comment", action)
    expect(comment.get("id"), (str, int), "the comment's 'id'", action)
    expect(comment.get("author") or {}, dict, "the comment's 'author'", action)
    return comment


def guess_flavour(url: str) -> str | None:
    host = (urlparse(url).hostname or "").lower()
    if host.endswith((".atlassian.net", ".jira.com", ".jira-dev.com")):
        return "cloud"
    return None


def _host_ok(host: str) -> bool:
    """A host a URL can name: a name of letters, digits, '-' and '.' (any script), or an
    IP address ("" when the URL has none: said apart, as not an http(s) URL)."""
    if not host or ":" in host:
        import ipaddress

        try:
            return not host or bool(ipaddress.ip_address(host))
        except ValueError:
            return False
    return all(c.isalnum() or c in "-." for c in host)


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
                              "atlassian.net).")
    try:
        parts = urlparse(server)
        parts.port  # noqa: B018 - raises on a port that is not a number from 0 to 65535
        bad_host = not _host_ok(parts.hostname or "")
    except ValueError:
        bad_host = True
    if bad_host:  # not repeated: a mistyped URL may hold a password
        raise JiraConfigError("JIRA_URL is not a valid URL (its host or port cannot be read). "
                              "Fix: use the address you open Jira at, e.g. "
                              "https://jira.example.com or https://jira.example.com:8443.")
    authority = server.split("://", 1)[-1].split("/", 1)[0]
    if "@" in authority or parts.username is not None or parts.password is not None:
        # Said without the URL: it holds a password, and errors end up in logs.
        raise JiraConfigError("JIRA_URL carries a user name or password (user:password@host). "
                              "Fix: give JIRA_URL without them (e.g. https://jira.example.com) "
                              f"and put the credentials in their own variables: "
                              f"{CREDENTIALS_FIX}.")
    if parts.query or parts.fragment or parts.params:
        # Said without the URL: a query may hold a token (?token=...), as webhook URLs do.
        raise JiraConfigError("JIRA_URL has a query or fragment ('?...' or '#...'). Fix: give "
                              "the address you open Jira at without them (e.g. "
                              "https://jira.example.com, or with its context path, "
                              "https://example.com/jira).")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # Not repeated: a mistyped URL may hold a password anyway.
        raise JiraConfigError("JIRA_URL is not an http(s) URL (it should start with https:// "
                              "or http://). Fix: use the address you open Jira at, e.g. "
                              "https://jira.example.com.")
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
    elif email:
        raise JiraConfigError("JIRA_EMAIL is set but JIRA_TOKEN is not. Fix: put the account's "
                              "API token in JIRA_TOKEN (Cloud); for Server/Data Center use a "
                              "personal access token in JIRA_PAT.")
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
        action = "reading Jira's server info"
        try:
            info = expect(client.request("GET", "serverInfo", action=action), dict,
                          "the answer", action)
        except JiraUnavailableError as exc:  # nothing to guess from: say how not to need it
            raise JiraUnavailableError(
                f"{str(exc).split('. Fix:')[0]}, to tell Jira Cloud from Server. Fix: set "
                "JIRA_FLAVOUR=cloud or JIRA_FLAVOUR=server (then nothing is asked at start, "
                "and scopeguard serve starts while Jira is down), or check JIRA_URL and the "
                "network.") from None
        client.flavour = "cloud" if info.get("deploymentType") == "Cloud" else "server"
    jira.deploymentType = "Cloud" if client.cloud else "Server"  # what the library checks
    return client

"""A small fake Jira REST server over real HTTP on 127.0.0.1, for tests and benchmarks.

It speaks the parts of REST API v2 and v3 that scopeguard (and the ``jira`` library)
use: ``serverInfo``, ``myself``, ``field``, issue get and label update, comments (list,
get, add, update, delete) and search (``search`` with ``startAt``/``maxResults`` on
Server, ``search/jql`` with ``nextPageToken`` on Cloud). It checks what real Jira
checks where scopeguard could get it wrong: credentials (basic or bearer), labels
without spaces, wiki strings on v2 and ADF documents on v3, API v3 only on Cloud.
It can answer 5xx/429 (with ``Retry-After``) a given number of times, and records
every request.

Example::

    from fake_jira import FakeJira

    with FakeJira(flavour="server", pat="pat-123") as jira:
        jira.add_issue("PAW-1", "Buffer time after surgery", "Our vets need ...")
        ...  # point scopeguard at jira.url
        assert len(jira.comments["PAW-1"]) == 1
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from loopback import LoopbackServer

CUSTOMER_FIELD = "customfield_10050"
ADF_NODES = {"doc", "paragraph", "text", "heading", "bulletList", "orderedList", "listItem",
             "table", "tableRow", "tableHeader", "tableCell", "blockquote", "codeBlock",
             "hardBreak", "rule", "panel"}
ADF_MARKS = {"strong", "em", "code", "link", "textColor", "strike", "underline", "subsup"}


def adf(text: str) -> dict[str, Any]:
    """A plain text as an ADF document, one paragraph per line."""
    return {"type": "doc", "version": 1, "content": [
        {"type": "paragraph", "content": [{"type": "text", "text": line}] if line else []}
        for line in text.split("\n")]}


def adf_problem(node: Any, path: str = "body") -> str:
    """Why ``node`` is not a valid ADF document, or "" (a subset of Jira's checks)."""
    if not isinstance(node, dict):
        return f"{path}: expected an object"
    kind = node.get("type")
    if path == "body" and (kind != "doc" or node.get("version") != 1):
        return "body: expected {type: doc, version: 1}"
    if kind not in ADF_NODES:
        return f"{path}: unknown node type {kind!r}"
    if kind == "text":
        if not isinstance(node.get("text"), str) or not node["text"]:
            return f"{path}: text nodes need non-empty text"
        for mark in node.get("marks", []):
            if mark.get("type") not in ADF_MARKS:
                return f"{path}: unknown mark {mark.get('type')!r}"
        return ""
    content = node.get("content", [])
    if not isinstance(content, list):
        return f"{path}.content: expected a list"
    for i, child in enumerate(content):
        problem = adf_problem(child, f"{path}.content[{i}]")
        if problem:
            return problem
    return ""


def text_of(body: Any) -> str:
    """A comment or description body as plain text (what v2 returns for ADF)."""
    if isinstance(body, str):
        return body
    if isinstance(body, dict):
        if body.get("type") == "text":
            return body.get("text", "")
        inner = "".join(text_of(c) for c in body.get("content", []))
        return inner + ("\n" if body.get("type") in ("paragraph", "heading") else "")
    return ""


@dataclass
class Failure:
    """Answer ``status`` to the next ``times`` requests matching ``method`` and ``path``."""

    status: int
    times: int
    retry_after: str | None = None
    method: str | None = None
    path: str | None = None  # a substring of the path

    def matches(self, method: str, path: str) -> bool:
        return (self.times > 0 and (self.method is None or self.method == method)
                and (self.path is None or self.path in path))


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    status: int = 0


@dataclass
class FakeJira(LoopbackServer):
    """The fake server. Credentials left empty are not checked.

    Args:
        flavour: ``server`` (API v2 only, ``search``) or ``cloud`` (v2 and v3, ``search/jql``).
        email, token: basic-auth credentials to require.
        pat: a bearer token to require.
        page_cap: the most issues one search page returns, whatever is asked (Jira caps it).
    """

    flavour: str = "server"
    email: str = ""
    token: str = ""
    pat: str = ""
    page_cap: int = 50
    issues: dict[str, dict[str, Any]] = field(default_factory=dict)
    comments: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # label changes by issue key, oldest first, as Jira's changelog shows them
    histories: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    custom_fields: dict[str, str] = field(default_factory=lambda: {CUSTOMER_FIELD: "Clinic"})
    record: bool = True
    delay: float = 0.0  # seconds every answer waits (a slow Jira; a worker killed mid-call)

    content_type = "application/json;charset=UTF-8"

    def __post_init__(self) -> None:
        self.lock = threading.RLock()
        self._next_comment = 10000

    @property
    def bot(self) -> dict[str, Any]:
        """The account the credentials belong to (``/myself``; the author of what they
        write): Cloud identifies users by accountId, Server/Data Center by key and name."""
        if self.flavour == "cloud":
            return {"accountId": "712020:5c09e0d1-scopeguard", "displayName": "scopeguard bot",
                    "accountType": "atlassian", "active": True}
        return {"name": "scopeguard", "key": "JIRAUSER10100", "displayName": "scopeguard bot",
                "emailAddress": "scopeguard@pawtrack.example", "active": True}

    def person(self, name: str) -> dict[str, Any]:
        """Another user, shaped as this flavour shows users."""
        if self.flavour == "cloud":
            return {"accountId": f"5b10a2844c20165700ede{abs(hash(name)) % 10**6:06d}",
                    "displayName": name, "accountType": "atlassian", "active": True}
        return {"name": name.lower().replace(" ", "."), "key": f"JIRAUSER{abs(hash(name)) % 10**5}",
                "displayName": name, "active": True}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """``JIRA_*`` variables pointing scopeguard at this fake."""
        out = {"JIRA_URL": self.url, "JIRA_FLAVOUR": self.flavour}
        if self.pat:
            out["JIRA_PAT"] = self.pat
        if self.email:
            out.update(JIRA_EMAIL=self.email, JIRA_TOKEN=self.token)
        return out

    # --- test helpers ----------------------------------------------------------------------

    def add_issue(self, key: str, summary: str, description: str = "", *,
                  issuetype: str = "Story", labels: tuple[str, ...] = (),
                  reporter: str = "owner@clinic.example", customer: str | None = None,
                  created: str = "2025-01-09T10:00:00.000+0000",
                  reporter_type: str = "atlassian") -> dict[str, Any]:
        """An issue; ``reporter_type`` is Cloud's accountType (``app`` for Automation)."""
        project = key.rsplit("-", 1)[0]
        issue = {
            "id": str(10000 + len(self.issues)), "key": key,
            "fields": {"summary": summary, "description": description,
                       "issuetype": {"name": issuetype}, "project": {"key": project},
                       "labels": list(labels), "created": created,
                       "status": {"name": "Open"}, "resolution": None,
                       "resolutiondate": None, "updated": created,
                       "reporter": {"displayName": reporter.split("@")[0],
                                    "emailAddress": reporter, "name": reporter.split("@")[0],
                                    **({"accountType": reporter_type}
                                       if self.flavour == "cloud" else {})},
                       CUSTOMER_FIELD: {"value": customer} if customer else None}}
        with self.lock:
            self.issues[key] = issue
            self.comments.setdefault(key, [])
        return issue

    def update_issue(self, key: str, **fields: Any) -> None:
        with self.lock:
            self.issues[key]["fields"].update(fields)

    def resolve(self, key: str, resolution: str | None, when: str) -> None:
        """Set (or clear, with None) the issue's resolution, as a workflow transition does;
        ``when`` is Jira's timestamp (``2025-03-01T10:00:00.000+0000``)."""
        with self.lock:
            fields = self.issues[key]["fields"]
            fields["resolution"] = ({"self": f"{self.url}/rest/api/2/resolution/1",
                                     "id": "10000", "name": resolution,
                                     "description": f"{resolution}."} if resolution else None)
            fields["resolutiondate"] = when if resolution else None
            fields["updated"] = when

    def set_labels(self, key: str, labels: list[str], by: str = "Practice Manager",
                   author: dict[str, Any] | None = None) -> None:
        """Set the issue's labels as a person (``by``; or the user ``author``) does in
        Jira's UI: the change goes into the issue's changelog."""
        with self.lock:
            issue = self.issues[key]
            self._history(issue, issue["fields"]["labels"], labels,
                          author or self.person(by))
            issue["fields"]["labels"] = list(labels)

    def _history(self, issue: dict[str, Any], before: list[str], after: list[str],
                 author: dict[str, Any]) -> None:
        if list(before) == list(after):
            return
        entries = self.histories.setdefault(issue["key"], [])
        entries.append({
            "id": str(20000 + sum(len(v) for v in self.histories.values())),
            "author": author, "created": time.strftime("%Y-%m-%dT%H:%M:%S.000+0000",
                                                       time.gmtime()),
            "items": [{"field": "labels", "fieldtype": "jira", "from": None,
                       "fromString": " ".join(before), "to": None,
                       "toString": " ".join(after)}]})

    def changelog(self, issue: dict[str, Any], query: dict[str, str]) -> dict[str, Any]:
        """Cloud's ``issue/KEY/changelog`` page (``startAt``, ``maxResults`` up to 100)."""
        entries = self.histories.get(issue["key"], [])
        start, size = int(query.get("startAt", 0)), min(int(query.get("maxResults", 100)), 100)
        page = entries[start:start + size]
        return {"self": f"{self.url}/rest/api/3/issue/{issue['key']}/changelog",
                "maxResults": size, "startAt": start, "total": len(entries),
                "isLast": start + len(page) >= len(entries), "values": page}

    def labels(self, key: str) -> list[str]:
        with self.lock:
            return list(self.issues[key]["fields"]["labels"])

    def add_comment(self, key: str, body: Any, author: dict[str, Any] | None = None) -> str:
        """A comment on ``key`` written outside scopeguard (by ``author``: default a person)."""
        with self.lock:
            self._next_comment += 1
            self.comments.setdefault(key, []).append({
                "id": str(self._next_comment), "body": body,
                "author": author or self.person("Practice Manager"),
                "created": "2025-01-10T09:00:00.000+0000",
                "updated": "2025-01-10T09:00:00.000+0000", "version": 1})
            return str(self._next_comment)

    def comment_texts(self, key: str) -> list[str]:
        with self.lock:
            return [text_of(c["body"]) for c in self.comments.get(key, [])]

    def fail(self, status: int = 503, times: int = 1, retry_after: str | None = None,
             method: str | None = None, path: str | None = None) -> Failure:
        failure = Failure(status, times, retry_after, method, path)
        with self.lock:
            self.failures.append(failure)
        return failure

    def calls(self, method: str | None = None, path: str = "") -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests
                    if (method is None or r.method == method) and path in r.path]

    # --- request handling ------------------------------------------------------------------

    def authorised(self, header: str) -> bool:
        if not (self.pat or self.email):
            return True
        if self.pat and header == f"Bearer {self.pat}":
            return True
        if self.email:
            expected = base64.b64encode(f"{self.email}:{self.token}".encode()).decode()
            return header == f"Basic {expected}"
        return False

    def respond(self, method: str, raw_path: str, headers: dict[str, str],
                raw_body: bytes) -> tuple[int, dict[str, str], Any]:
        """Record the request, check its credentials, answer it (``handle``)."""
        url = urlparse(raw_path)
        try:
            body = json.loads(raw_body) if raw_body else None
        except ValueError:
            body = raw_body.decode("utf-8", "replace")
        recorded = Recorded(method, url.path, parse_qs(url.query), headers, body)
        if not self.authorised(headers.get("authorization", "")):
            status, payload, out = 401, {"errorMessages": [
                "You are not authenticated. Authentication required to perform this "
                "operation."]}, {}
        else:
            status, payload, out = self.handle(method, url.path, parse_qs(url.query), body)
        recorded.status = status
        if self.record:
            with self.lock:
                self.requests.append(recorded)
        return status, out, payload

    def handle(self, method: str, path: str, query: dict[str, list[str]],
               body: Any) -> tuple[int, Any, dict[str, str]]:
        if self.delay:
            time.sleep(self.delay)
        with self.lock:
            for failure in self.failures:
                if failure.matches(method, path):
                    failure.times -= 1
                    headers = {"Retry-After": failure.retry_after} if failure.retry_after else {}
                    message = ("Rate limit exceeded." if failure.status == 429
                               else "Service unavailable: try again later.")
                    return failure.status, {"errorMessages": [message]}, headers
            return self.route(method, path, query, body)

    def route(self, method: str, path: str, query: dict[str, list[str]],
              body: Any) -> tuple[int, Any, dict[str, str]]:
        m = re.fullmatch(r"/rest/api/(2|3)/(.+)", path)
        if not m:
            return 404, {"errorMessages": [f"no such resource {path}"]}, {}
        api, rest = m.group(1), m.group(2)
        if api == "3" and self.flavour != "cloud":
            return 404, {"errorMessages": ["REST API v3 exists only on Jira Cloud"]}, {}
        one = {k: v[0] for k, v in query.items()}
        if rest == "serverInfo":
            return 200, {"baseUrl": self.url, "version": "9.12.0", "versionNumbers": [9, 12, 0],
                         "deploymentType": "Cloud" if self.flavour == "cloud" else "Server"}, {}
        if rest == "myself":
            return 200, self.bot, {}
        if rest == "field":
            system = [{"id": f, "name": f.title(), "custom": False}
                      for f in ("summary", "description", "labels")]
            return 200, system + [{"id": k, "name": v, "custom": True}
                                  for k, v in self.custom_fields.items()], {}
        if rest in ("search", "search/jql"):
            return self.search(api, rest, method, one, body)
        m = re.fullmatch(r"issue/([^/]+)/changelog", rest)
        if m and method == "GET":
            if self.flavour != "cloud":  # Server/Data Center: expand=changelog on the issue
                return 404, {"errorMessages": [f"no such resource {path}"]}, {}
            issue = self.issues.get(unquote(m.group(1)))
            if issue is None:
                return 404, {"errorMessages": ["Issue does not exist or you do not have "
                                               "permission to see it."]}, {}
            return 200, self.changelog(issue, one), {}
        m = re.fullmatch(r"issue/([^/]+)(?:/comment(?:/([^/]+))?)?", rest)
        if not m:
            return 404, {"errorMessages": [f"no such resource {path}"]}, {}
        key, comment_id = unquote(m.group(1)), m.group(2)
        issue = self.issues.get(key)
        if issue is None:
            return 404, {"errorMessages": ["Issue does not exist or you do not have permission "
                                           "to see it."]}, {}
        if "/comment" not in rest:
            if method == "GET":
                shown = self.render_issue(issue, api, one.get("fields"))
                if "changelog" in one.get("expand", "").split(","):
                    entries = self.histories.get(key, [])
                    shown["changelog"] = {"startAt": 0, "maxResults": len(entries),
                                          "total": len(entries), "histories": entries}
                return 200, shown, {}
            if method == "PUT":
                return self.edit_issue(issue, body)
            return 405, {"errorMessages": ["method not allowed"]}, {}
        return self.comment(api, method, key, comment_id, one, body)

    def render_issue(self, issue: dict[str, Any], api: str, fields: str | None) -> dict[str, Any]:
        wanted = set(fields.split(",")) if fields else None
        out = {k: v for k, v in issue["fields"].items()
               if wanted is None or "*all" in wanted or k in wanted}
        if api == "3" and isinstance(out.get("description"), str):
            out["description"] = adf(out["description"]) if out["description"] else None
        return {"id": issue["id"], "key": issue["key"],
                "self": f"{self.url}/rest/api/{api}/issue/{issue['id']}", "fields": out}

    def edit_issue(self, issue: dict[str, Any], body: Any) -> tuple[int, Any, dict[str, str]]:
        if not isinstance(body, dict):
            return 400, {"errorMessages": ["Can not deserialize the request body"]}, {}
        labels = list(issue["fields"]["labels"])
        ops = (body.get("update") or {}).get("labels", [])
        if "labels" in (body.get("fields") or {}):
            ops = [{"set": body["fields"]["labels"]}]
        for op in ops:
            for value in op.get("set", []) + [op.get("add"), op.get("remove")]:
                if isinstance(value, str) and re.search(r"\s", value):
                    return 400, {"errors": {"labels": f"The label '{value}' contains spaces "
                                                      "which is invalid."}}, {}
            if "set" in op:
                labels = list(op["set"])
            if op.get("add") and op["add"] not in labels:
                labels.append(op["add"])
            if op.get("remove") in labels:
                labels.remove(op["remove"])
        self._history(issue, issue["fields"]["labels"], labels, self.bot)
        issue["fields"]["labels"] = labels
        return 204, None, {}

    def comment(self, api: str, method: str, key: str, comment_id: str | None,
                query: dict[str, str], body: Any) -> tuple[int, Any, dict[str, str]]:
        thread = self.comments.setdefault(key, [])

        def shown(c: dict[str, Any]) -> dict[str, Any]:
            value = c["body"]
            if api == "2" and isinstance(value, dict):
                value = text_of(value)
            elif api == "3" and isinstance(value, str):
                value = adf(value)
            return {**c, "body": value}

        if comment_id is None and method == "GET":
            start, size = int(query.get("startAt", 0)), min(int(query.get("maxResults", 50)), 100)
            page = thread[start:start + size]
            return 200, {"startAt": start, "maxResults": size, "total": len(thread),
                         "comments": [shown(c) for c in page]}, {}
        if comment_id is None and method == "POST":
            problem = self.body_problem(api, body)
            if problem:
                return 400, {"errorMessages": [problem]}, {}
            self._next_comment += 1
            comment = {"id": str(self._next_comment), "body": body["body"],
                       "author": self.bot,
                       "created": "2025-01-10T10:00:00.000+0000",
                       "updated": "2025-01-10T10:00:00.000+0000", "version": 1}
            thread.append(comment)
            return 201, shown(comment), {}
        found = next((c for c in thread if c["id"] == comment_id), None)
        if found is None:
            return 404, {"errorMessages": ["Can not find a comment for key: " + str(comment_id)]}, {}
        if method == "GET":
            return 200, shown(found), {}
        if method == "PUT":
            problem = self.body_problem(api, body)
            if problem:
                return 400, {"errorMessages": [problem]}, {}
            found["body"] = body["body"]
            found["version"] += 1
            found["updated"] = "2025-01-11T10:00:00.000+0000"
            return 200, shown(found), {}
        if method == "DELETE":
            thread.remove(found)
            return 204, None, {}
        return 405, {"errorMessages": ["method not allowed"]}, {}

    @staticmethod
    def body_problem(api: str, body: Any) -> str:
        if not isinstance(body, dict) or "body" not in body:
            return "Comment body can not be empty!"
        if api == "2" and not isinstance(body["body"], str):
            return "REST API v2 takes a comment body as a string (wiki markup)"
        if api == "3":
            return adf_problem(body["body"])
        return ""

    def search(self, api: str, rest: str, method: str, query: dict[str, str],
               body: Any) -> tuple[int, Any, dict[str, str]]:
        if rest == "search" and self.flavour == "cloud":
            return 410, {"errorMessages": ["The requested API has been removed. Please migrate "
                                           "to the /rest/api/3/search/jql API."]}, {}
        if rest == "search/jql" and self.flavour != "cloud":
            return 404, {"errorMessages": ["no such resource"]}, {}
        params = dict(query)
        if method == "POST" and isinstance(body, dict):
            params.update({k: v for k, v in body.items() if not isinstance(v, list)})
            if isinstance(body.get("fields"), list):
                params["fields"] = ",".join(body["fields"])
        jql = params.get("jql", "")
        found = re.search(r"project\s*=\s*\"?([A-Za-z0-9_]+)\"?", jql)
        if "(" in jql and not found:
            return 400, {"errorMessages": [f"Error in the JQL Query: {jql!r}"]}, {}
        keys = sorted((k for k in self.issues if not found or k.startswith(found.group(1) + "-")),
                      key=lambda k: (k.rsplit("-", 1)[0], int(k.rsplit("-", 1)[1])))
        # The few clauses scopeguard's history import sends, as Jira reads them.
        if re.search(r"resolution\s+is\s+not\s+EMPTY", jql, re.I):
            keys = [k for k in keys if self.issues[k]["fields"].get("resolution")]
        if when := re.search(r'updated\s*>=\s*"(\d{4}-\d\d-\d\d \d\d:\d\d)"', jql):
            cutoff = when.group(1).replace(" ", "T")
            keys = [k for k in keys if self.issues[k]["fields"].get("updated", "")[:16] >= cutoff]
        if re.search(r"ORDER BY updated", jql, re.I):
            keys.sort(key=lambda k: self.issues[k]["fields"].get("updated", ""))
        size = min(int(params.get("maxResults", 50)), self.page_cap)
        if rest == "search":
            start = int(params.get("startAt", 0))
        else:
            token = params.get("nextPageToken")
            start = int(base64.b64decode(token).decode()) if token else 0
        page = [self.render_issue(self.issues[k], api, params.get("fields"))
                for k in keys[start:start + size]]
        if rest == "search":
            return 200, {"startAt": start, "maxResults": size, "total": len(keys),
                         "issues": page}, {}
        nxt = start + len(page)
        out: dict[str, Any] = {"issues": page, "isLast": nxt >= len(keys)}
        if nxt < len(keys):
            out["nextPageToken"] = base64.b64encode(str(nxt).encode()).decode()
        return 200, out, {}


# --- the real service, as a process, against a fake ------------------------------------------


_stamps = itertools.count()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def issue_event(key: str, event: str = "jira:issue_created", *, project: str = "",
                issuetype: str = "Story", changed: tuple[str, ...] = (),
                **extra: Any) -> dict[str, Any]:
    """A Jira webhook payload for ``key`` (fields trimmed to what scopeguard reads).

    Each payload has its own ``timestamp``, as Jira's do: two deliveries are two bodies.
    """
    payload: dict[str, Any] = {
        "timestamp": int(time.time() * 1000) + next(_stamps),
        "webhookEvent": event,
        "issue_event_type_name": "issue_created" if event.endswith("created") else
        "issue_generic",
        "user": {"displayName": "Practice Manager"},
        "issue": {"id": "10001", "key": key, "fields": {
            "project": {"key": project or key.rsplit("-", 1)[0]},
            "issuetype": {"name": issuetype}, "summary": "(see the issue)"}}}
    if changed:
        payload["changelog"] = {"id": "1", "items": [
            {"field": f, "fieldtype": "jira", "fieldId": f, "from": None, "fromString": "old",
             "to": None, "toString": "new"} for f in changed]}
    payload.update(extra)
    return payload


class ServiceProcess:
    """``scopeguard serve`` in a subprocess (real uvicorn, free port), pointed at a fake Jira.

    Args:
        tmp: a directory for the queue file and the log.
        jira: the fake Jira (its URL, flavour and credentials go into the environment), or
            None for a service that takes GitHub webhooks only.
        config: the positioning file.
        env: more environment (e.g. ``SCOPEGUARD_MODEL=hashing``, the webhook secret).
        args: more ``scopeguard serve`` arguments.
    """

    # every one ever started: conftest stops those a test started and left running (it
    # failed before its own stop), so no process or socket of it reaches the next test
    started: set[ServiceProcess] = set()  # noqa: RUF012 - shared on purpose

    def __init__(self, tmp: Any, jira: FakeJira | None, config: Any, env: dict[str, str],
                 args: tuple[str, ...] = ()) -> None:
        import os
        from pathlib import Path

        self.tmp = Path(tmp)
        self.jira = jira
        self.config = str(config)
        self.queue = str(self.tmp / "queue.db")
        self.log = self.tmp / "serve.log"
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("SCOPEGUARD_", "JIRA_", "GITHUB_"))}
        self.env = {**base, **(jira.env if jira else {}),
                    "SCOPEGUARD_DB": str(self.tmp / "cache.db"), **env}
        self.secret = self.env.get("SCOPEGUARD_WEBHOOK_SECRET", "")
        self.token = self.env.get("SCOPEGUARD_WEBHOOK_TOKEN", "")
        self.args = args
        self.proc: Any = None
        self.port = 0
        self.responses: list[Any] = []
        self._client: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready: bool = True, timeout: float = 90) -> ServiceProcess:
        import subprocess
        import sys
        import time

        import httpx

        self.port = free_port()
        command = [sys.executable, "-c", "from scopeguard.cli import main; main()", "serve",
                   "--config", self.config, "--queue", self.queue, "--port", str(self.port),
                   *self.args]
        log = open(self.log, "a")  # noqa: SIM115 - the child writes to it
        self.proc = subprocess.Popen(command, env=self.env, stdout=log, stderr=log)
        ServiceProcess.started.add(self)
        log.close()
        if self._client is not None:
            self._client.close()
        self._client = httpx.Client(timeout=30)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"scopeguard serve exited {self.proc.returncode}:\n"
                                       + self.log.read_text())
                try:
                    health = self._client.get(self.url + "/healthz").json()
                    if not ready or health["status"] == "ready":
                        return self
                    if health["status"] == "error":
                        raise RuntimeError(f"worker failed: {health}")
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
            raise TimeoutError("scopeguard serve did not become ready:\n"
                               + self.log.read_text())
        except BaseException:  # nothing left running or open for the next test
            self.stop()
            raise

    def post(self, payload: Any, *, delivery: str | None = None, sign: bool = True,
             secret: str | None = None, token: str | None = None,
             headers: dict[str, str] | None = None, path: str = "/webhooks/jira") -> Any:
        """POST a webhook: ``payload`` (dict, or raw bytes) signed with the secret by default."""
        from scopeguard.integrations.service.auth import sign as signature

        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        sent = {"Content-Type": "application/json", **(headers or {})}
        if delivery:
            sent["X-Atlassian-Webhook-Identifier"] = delivery
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        elif sign:
            sent["X-Hub-Signature"] = signature(secret if secret is not None else self.secret,
                                                body)
        response = self._client.post(self.url + path, content=body, headers=sent)
        self.responses.append(response)
        return response

    def post_github(self, payload: Any, *, event: str = "issues", delivery: str | None = None,
                    secret: str | None = None, sign: bool = True) -> Any:
        """POST a GitHub webhook, signed (X-Hub-Signature-256) with the GitHub secret."""
        from scopeguard.integrations.service.auth import sign as signature

        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        sent = {"Content-Type": "application/json", "X-GitHub-Event": event,
                "User-Agent": "GitHub-Hookshot/test"}
        if delivery:
            sent["X-GitHub-Delivery"] = delivery
        if sign:
            given = self.env.get("SCOPEGUARD_GITHUB_WEBHOOK_SECRET", "")
            sent["X-Hub-Signature-256"] = signature(secret if secret is not None else given,
                                                    body)
        response = self._client.post(self.url + "/webhooks/github", content=body,
                                     headers=sent)
        self.responses.append(response)
        return response

    def get(self, path: str) -> Any:
        response = self._client.get(self.url + path)
        self.responses.append(response)
        return response

    def metrics(self) -> dict[str, float]:
        """The /metrics samples by name with labels, e.g. ``scopeguard_queue_depth``."""
        out: dict[str, float] = {}
        for line in self.get("/metrics").text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def wait(self, condition: Any, timeout: float = 60, what: str = "condition") -> None:
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError("scopeguard serve died:\n" + self.log.read_text())
            time.sleep(0.05)
        raise TimeoutError(f"timed out waiting for {what}; log:\n" + self.log.read_text()[-4000:])

    def wait_idle(self, timeout: float = 60) -> None:
        """Until the queue holds nothing waiting or in progress."""
        self.wait(lambda: self.metrics()["scopeguard_queue_depth"] == 0, timeout, "an empty queue")

    def events(self) -> dict[str, dict[str, Any]]:
        """Rows of the queue by delivery id (read-only)."""
        return {r["delivery_id"]: r for r in self.sql(
            "SELECT delivery_id, event, issue_key, state, attempts, outcome, error FROM events")}

    def sql(self, query: str, params: tuple = ()) -> list[dict[str, Any]]:
        """Rows (as dicts) of a query on the service's store: the queue file, or the
        PostgreSQL database of SCOPEGUARD_STORE (``?`` placeholders on both)."""
        store = self.env.get("SCOPEGUARD_STORE")
        if store:
            import psycopg
            from psycopg.rows import dict_row

            with psycopg.connect(store, row_factory=dict_row) as conn:
                return conn.execute(query.replace("?", "%s"), params).fetchall()
        import sqlite3

        conn = sqlite3.connect(f"file:{self.queue}?mode=ro", uri=True)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute(query, params)]
        finally:
            conn.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        import signal

        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except Exception:  # noqa: BLE001 - then make sure it is gone
                self.proc.kill()
                self.proc.wait(10)
        if self._client is not None:
            self._client.close()

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

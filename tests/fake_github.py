"""A small fake of GitHub's REST API, over real HTTP on 127.0.0.1, for tests.

It holds repositories, issues (and pull requests, which GitHub lists among issues),
labels, comments and file contents in memory; paginates as GitHub does (``per_page``,
``page`` and ``Link`` headers); checks the token (401) and per-repository permissions
(403 "Resource not accessible by integration"); can be told to answer the next N matching
requests with a 5xx or a rate limit; and records every request it receives.

    from fake_github import FakeGitHub

    with FakeGitHub(token="t0k") as gh:
        gh.add_repo("acme/widgets")
        number = gh.add_issue("acme/widgets", "Dark mode", "Please", labels=["enhancement"])
        client = make_client("t0k", gh.base_url)       # PyGithub, base_url=gh.base_url
        gh.fail(502, times=2, method="GET", path=r"/repos/acme/widgets/issues")
        ...
        assert gh.calls("POST", r"/repos/acme/widgets/issues/\\d+/comments")

Routes: repository; issues (list, get, create, edit); issue comments (list, create, get,
edit, delete); issue labels (list, add, set, remove) and the labeled/unlabeled issue events
they leave (list); repository labels (list, get, create,
edit, delete); contents (get, create or update with ``sha``, 409 on a stale ``sha``);
``GET /user`` (403 for an installation token, as GitHub answers); a GitHub App's ``GET /app``
and installation tokens. What a request writes (comments, labels, commits) is written by
the account its token belongs to. ``prefix="/api/v3"`` serves under a GitHub Enterprise
Server style root.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from loopback import LoopbackServer

SECONDARY_MESSAGE = ("You have exceeded a secondary rate limit. Please wait a few minutes "
                     "before you try again.")
PRIMARY_MESSAGE = "API rate limit exceeded for installation ID 1."
NOT_ACCESSIBLE = "Resource not accessible by integration"


@dataclass
class Recorded:
    """One request the fake received."""

    method: str
    path: str  # without the prefix and the query
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    at: float
    status: int = 0


@dataclass
class Failure:
    """Answer the next ``times`` requests matching ``method`` and ``path`` with ``status``."""

    status: int
    times: int
    method: str | None = None
    path: str | None = None  # a regular expression matched against the whole path
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=dict)

    def matches(self, method: str, path: str) -> bool:
        return (self.times > 0 and (self.method is None or self.method == method)
                and (self.path is None or re.fullmatch(self.path, path) is not None))


@dataclass
class FakeRepo:
    full_name: str
    default_branch: str = "main"
    permissions: dict[str, str] = field(
        default_factory=lambda: {"issues": "write", "contents": "write"})
    issues: dict[int, dict[str, Any]] = field(default_factory=dict)
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)  # by lower-case name
    comments: dict[int, dict[str, Any]] = field(default_factory=dict)  # by comment id
    files: dict[str, bytes] = field(default_factory=dict)  # the default branch's
    branches: dict[str, dict[str, bytes]] = field(default_factory=dict)  # the others' files
    protected: set[str] = field(default_factory=set)  # branches that refuse direct commits
    push_protection: bool = False  # refuse content holding a GitHub token, as GitHub does
    commits: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # issue events, oldest first


class HTTPError(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"message": message, "documentation_url": "https://docs.github.com/rest",
                     **extra}


def _sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class FakeGitHub(LoopbackServer):
    """The fake server. Use as a context manager, or call ``start()`` and ``stop()``.

    Args:
        token: the only token accepted (``Authorization: token X`` or ``Bearer X``);
            ``None`` accepts any request.
        login: who the token belongs to: the author of comments and commits it makes.
        prefix: path prefix of the API root (``/api/v3`` for GitHub Enterprise Server).
    """

    def __init__(self, token: str | None = "test-token", login: str = "github-actions[bot]",
                 prefix: str = "", app: tuple[str, str] | None = None,
                 app_slug: str = "scopeguard-app") -> None:
        self.token = token
        # A GitHub App: (app id, public key PEM). POST /app/installations/N/access_tokens
        # with a JWT the App's private key signed issues a token this server then accepts;
        # GET /app with such a JWT describes the App. What an installation token writes is
        # written by the App's bot, ``<app_slug>[bot]``.
        self.app = app
        self.app_slug = app_slug
        self.actor = login  # who the request being handled authenticated as
        # Accounts whose GitHub type is not what their login says (a bot without "[bot]",
        # as Copilot's coding agent): login -> "Bot" / "User".
        self.user_types: dict[str, str] = {}
        self.installation_tokens: dict[str, int] = {}
        self.login = login
        self.prefix = prefix.rstrip("/")
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[Recorded] = []
        self.failures: list[Failure] = []
        # (method, path regex, seconds): a matching request is carried out, then its answer
        # waits (a worker killed after GitHub wrote, before it heard back).
        # (method, path regex, seconds[, times]): answer matching requests that late
        self.stall: tuple[Any, ...] | None = None
        self.lock = threading.RLock()
        self._ids = itertools.count(1000)
        self._routes = self._build_routes()

    @property
    def base_url(self) -> str:
        """The API root to give a client: ``http://127.0.0.1:PORT[/prefix]``."""
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    # --- seeding and inspecting -----------------------------------------------------------

    def add_repo(self, full_name: str, *, issues: str = "write", contents: str = "write",
                 default_branch: str = "main") -> FakeRepo:
        """Create a repository; ``issues``/``contents`` are the token's permissions on it."""
        with self.lock:
            repo = FakeRepo(full_name, default_branch, {"issues": issues, "contents": contents})
            self.repos[full_name] = repo
            return repo

    def add_issue(self, full_name: str, title: str, body: str = "", *, user: str = "octocat",
                  labels: Iterable[str] = (), pull_request: bool = False, state: str = "open",
                  created_at: str | None = None, user_type: str = "User") -> int:
        """Add an issue (or a pull request) and return its number."""
        with self.lock:
            repo = self.repos[full_name]
            number = max([0, *repo.issues]) + 1
            labels = list(labels)
            for name in labels:
                self._ensure_label(repo, name)
            repo.issues[number] = {
                "number": number, "id": next(self._ids), "title": title, "body": body,
                "user": {"login": user, "type": user_type}, "labels": [],
                "state": state, "pull_request": pull_request,
                "created_at": created_at or _now(), "updated_at": created_at or _now()}
            self._relabel(repo, repo.issues[number], labels, user)
            return number

    def add_label(self, full_name: str, name: str, color: str = "ededed",
                  description: str = "") -> None:
        with self.lock:
            self._ensure_label(self.repos[full_name], name, color, description)

    def add_comment(self, full_name: str, number: int, body: str,
                    user: str | None = None) -> int:
        """Add a comment to issue ``number`` (by ``user``, default the token's login)."""
        with self.lock:
            return self._create_comment(self.repos[full_name], number, body,
                                        user or self.login)["id"]

    def put_file(self, full_name: str, path: str, content: str | bytes) -> None:
        with self.lock:
            data = content.encode() if isinstance(content, str) else content
            self.repos[full_name].files[path] = data

    def issue(self, full_name: str, number: int) -> dict[str, Any]:
        """The stored issue (a copy)."""
        with self.lock:
            return json.loads(json.dumps(self.repos[full_name].issues[number]))

    def issue_payload(self, full_name: str, number: int) -> dict[str, Any]:
        """The issue as the REST API (and an ``issues`` event's ``issue`` key) shows it."""
        with self.lock:
            repo = self.repos[full_name]
            return self._issue_json(repo, repo.issues[number])

    def issue_labels(self, full_name: str, number: int) -> list[str]:
        return self.issue(full_name, number)["labels"]

    def set_issue(self, full_name: str, number: int, *, actor: str = "maintainer",
                  **changes: Any) -> None:
        """Change an issue as the person ``actor`` would (title, body, labels...); label
        changes are recorded as ``labeled``/``unlabeled`` issue events."""
        with self.lock:
            repo = self.repos[full_name]
            issue = repo.issues[number]
            if "labels" in changes:
                self._relabel(repo, issue, changes.pop("labels"), actor)
            issue.update(changes, updated_at=_now())

    def add_issue_label(self, full_name: str, number: int, name: str, *,
                        actor: str = "maintainer") -> None:
        """Add the label ``name`` to an issue as ``actor`` would (a ``labeled`` event);
        one the issue carries already stays as it is."""
        with self.lock:
            issue = self.repos[full_name].issues[number]
            labels = list(issue["labels"])
        if name.lower() not in {label.lower() for label in labels}:
            self.set_issue(full_name, number, labels=[*labels, name], actor=actor)

    def comments(self, full_name: str, number: int) -> list[dict[str, Any]]:
        """The issue's comments, oldest first (copies)."""
        with self.lock:
            return [dict(c) for c in self.repos[full_name].comments.values()
                    if c["issue"] == number]

    def file(self, full_name: str, path: str, branch: str = "") -> str | None:
        with self.lock:
            repo = self.repos[full_name]
            files = repo.branches.get(branch, {}) if branch and branch != \
                repo.default_branch else repo.files
            data = files.get(path)
            return None if data is None else data.decode()

    def fail(self, status: int = 502, times: int = 1, *, method: str | None = None,
             path: str | None = None, headers: dict[str, str] | None = None,
             body: dict[str, Any] | None = None) -> Failure:
        """Answer the next ``times`` requests matching ``method``/``path`` with ``status``."""
        failure = Failure(status, times, method, path, dict(headers or {}),
                          body or {"message": "Server Error" if status >= 500 else "Failed"})
        with self.lock:
            self.failures.append(failure)
        return failure

    def rate_limit(self, times: int = 1, *, retry_after: float | None = 1, reset_in: int = 1,
                   primary: bool = False, status: int = 403, method: str | None = None,
                   path: str | None = None) -> Failure:
        """Answer the next ``times`` matching requests with a rate limit.

        With ``retry_after`` a secondary limit with a ``Retry-After`` header; with
        ``retry_after=None`` the headers say ``x-ratelimit-remaining: 0`` and
        ``x-ratelimit-reset`` ``reset_in`` seconds ahead (``primary`` picks the message).
        """
        headers = {"x-ratelimit-limit": "5000", "x-ratelimit-used": "5000"}
        if retry_after is not None:
            headers["Retry-After"] = f"{retry_after:g}"
            headers["x-ratelimit-remaining"] = "4000"
        else:
            headers["x-ratelimit-remaining"] = "0"
            headers["x-ratelimit-reset"] = str(int(time.time()) + reset_in)
        message = PRIMARY_MESSAGE if primary else SECONDARY_MESSAGE
        return self.fail(status, times, method=method, path=path, headers=headers,
                         body={"message": message})

    def calls(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        """Recorded requests matching ``method`` and the ``path`` regular expression."""
        with self.lock:
            return [r for r in self.requests if (method is None or r.method == method)
                    and (path is None or re.fullmatch(path, r.path))]

    def writes(self) -> list[Recorded]:
        """Every recorded request that was not a GET."""
        return [r for r in self.calls() if r.method != "GET"]

    # --- JSON as GitHub shapes it -----------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def _user(self, login: str, kind: str | None = None) -> dict[str, Any]:
        kind = kind or self.user_types.get(login) or (
            "Bot" if login.endswith("[bot]") else "User")
        return {"login": login, "id": abs(hash(login)) % 10**8, "type": kind,
                "url": self._url(f"/users/{quote(login)}"),
                "html_url": f"https://github.com/{quote(login)}"}

    def _label_json(self, repo: FakeRepo, label: dict[str, Any]) -> dict[str, Any]:
        return {"id": label["id"], "node_id": f"LA_{label['id']}",
                "url": self._url(f"/repos/{repo.full_name}/labels/{quote(label['name'])}"),
                "name": label["name"], "color": label["color"],
                "description": label["description"], "default": False}

    def _issue_json(self, repo: FakeRepo, issue: dict[str, Any]) -> dict[str, Any]:
        n, full = issue["number"], repo.full_name
        api = f"/repos/{full}/issues/{n}"
        kind = "pull" if issue["pull_request"] else "issues"
        data = {
            "url": self._url(api), "repository_url": self._url(f"/repos/{full}"),
            "labels_url": self._url(api + "/labels{/name}"),
            "comments_url": self._url(api + "/comments"), "events_url": self._url(api + "/events"),
            "html_url": f"https://github.com/{full}/{kind}/{n}", "id": issue["id"],
            "node_id": f"I_{issue['id']}", "number": n, "title": issue["title"],
            "user": self._user(issue["user"]["login"], issue["user"].get("type")),
            "labels": [self._label_json(repo, repo.labels[name.lower()])
                       for name in issue["labels"]],
            "state": issue["state"], "locked": False, "assignee": None, "assignees": [],
            "milestone": None,
            "comments": sum(1 for c in repo.comments.values() if c["issue"] == n),
            "created_at": issue["created_at"], "updated_at": issue["updated_at"],
            "closed_at": issue.get("closed_at"), "state_reason": issue.get("state_reason"),
            "author_association": "NONE", "body": issue["body"]}
        if issue.get("type"):  # an organisation's issue type, as the REST API shows it
            data["type"] = {"id": 410, "node_id": "IT_kwDOB", "name": issue["type"],
                            "description": f"{issue['type']} issues", "color": "red",
                            "created_at": "2024-12-11T14:39:09Z",
                            "updated_at": "2024-12-11T14:39:09Z", "is_enabled": True}
        if issue["pull_request"]:
            data["pull_request"] = {"url": self._url(f"/repos/{full}/pulls/{n}"),
                                    "html_url": data["html_url"]}
        return data

    def _comment_json(self, repo: FakeRepo, comment: dict[str, Any]) -> dict[str, Any]:
        full, cid = repo.full_name, comment["id"]
        return {"id": cid, "node_id": f"IC_{cid}",
                "url": self._url(f"/repos/{full}/issues/comments/{cid}"),
                "html_url": f"https://github.com/{full}/issues/{comment['issue']}"
                            f"#issuecomment-{cid}",
                "issue_url": self._url(f"/repos/{full}/issues/{comment['issue']}"),
                "body": comment["body"], "user": self._user(comment["user"]),
                "created_at": comment["created_at"], "updated_at": comment["updated_at"],
                "author_association": "NONE"}

    def _content_json(self, repo: FakeRepo, path: str,
                      files: dict[str, bytes] | None = None) -> dict[str, Any]:
        data = (repo.files if files is None else files)[path]
        sha = _sha(data)
        url = self._url(f"/repos/{repo.full_name}/contents/{quote(path)}")
        html = f"https://github.com/{repo.full_name}/blob/{repo.default_branch}/{path}"
        return {"type": "file", "encoding": "base64", "size": len(data),
                "name": path.rsplit("/", 1)[-1], "path": path, "sha": sha,
                "content": base64.encodebytes(data).decode(), "url": url, "html_url": html,
                "git_url": self._url(f"/repos/{repo.full_name}/git/blobs/{sha}"),
                "download_url": f"https://raw.example/{repo.full_name}/{path}",
                "_links": {"self": url, "git": url, "html": html}}

    # --- state changes ------------------------------------------------------------------------

    def _ensure_label(self, repo: FakeRepo, name: str, color: str = "ededed",
                      description: str = "") -> dict[str, Any]:
        if name.lower() not in repo.labels:
            repo.labels[name.lower()] = {"id": next(self._ids), "name": name, "color": color,
                                         "description": description}
        return repo.labels[name.lower()]

    def _relabel(self, repo: FakeRepo, issue: dict[str, Any], names: Iterable[str],
                 actor: str) -> None:
        """Give ``issue`` exactly ``names``, recording labeled/unlabeled events."""
        wanted: list[str] = []
        for name in names:
            name = self._ensure_label(repo, name)["name"]
            if name.lower() not in {x.lower() for x in wanted}:
                wanted.append(name)
        lower = {x.lower() for x in wanted}
        for name in issue["labels"]:
            if name.lower() not in lower:
                self._event(repo, issue, "unlabeled", name, actor)
        have = {x.lower() for x in issue["labels"]}
        for name in wanted:
            if name.lower() not in have:
                self._event(repo, issue, "labeled", name, actor)
        issue["labels"] = wanted

    def _event(self, repo: FakeRepo, issue: dict[str, Any], kind: str, label: str,
               actor: str) -> None:
        repo.events.append({"id": next(self._ids), "issue": issue["number"], "event": kind,
                            "label": label, "actor": actor, "created_at": _now()})

    def _create_comment(self, repo: FakeRepo, number: int, body: str,
                        user: str | None = None) -> dict[str, Any]:
        if number not in repo.issues:
            raise HTTPError(404, "Not Found")
        comment = {"id": next(self._ids), "issue": number, "body": body,
                   "user": user or self.actor, "created_at": _now(), "updated_at": _now()}
        repo.comments[comment["id"]] = comment
        return comment

    # --- routing --------------------------------------------------------------------------------

    def _build_routes(self) -> list[tuple[str, re.Pattern[str], Callable[..., Any], str]]:
        r = r"/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)"
        table = [
            ("GET", "/user", self._get_user, ""),
            ("GET", r, self._get_repo, ""),
            ("GET", r + "/issues", self._list_issues, ""),
            ("POST", r + "/issues", self._create_issue, "issues"),
            ("GET", r + r"/issues/comments/(?P<cid>\d+)", self._get_comment, ""),
            ("PATCH", r + r"/issues/comments/(?P<cid>\d+)", self._edit_comment, "issues"),
            ("DELETE", r + r"/issues/comments/(?P<cid>\d+)", self._delete_comment, "issues"),
            ("GET", r + r"/issues/(?P<n>\d+)", self._get_issue, ""),
            ("PATCH", r + r"/issues/(?P<n>\d+)", self._edit_issue, "issues"),
            ("GET", r + r"/issues/(?P<n>\d+)/comments", self._list_comments, ""),
            ("GET", r + r"/issues/(?P<n>\d+)/events", self._list_events, ""),
            ("POST", r + r"/issues/(?P<n>\d+)/comments", self._post_comment, "issues"),
            ("GET", r + r"/issues/(?P<n>\d+)/labels", self._list_issue_labels, ""),
            ("POST", r + r"/issues/(?P<n>\d+)/labels", self._add_issue_labels, "issues"),
            ("PUT", r + r"/issues/(?P<n>\d+)/labels", self._set_issue_labels, "issues"),
            ("DELETE", r + r"/issues/(?P<n>\d+)/labels/(?P<label>.+)", self._remove_issue_label,
             "issues"),
            ("GET", r + "/labels", self._list_labels, ""),
            ("POST", r + "/labels", self._create_label, "issues"),
            ("GET", r + "/labels/(?P<label>.+)", self._get_label, ""),
            ("PATCH", r + "/labels/(?P<label>.+)", self._edit_label, "issues"),
            ("DELETE", r + "/labels/(?P<label>.+)", self._delete_label, "issues"),
            ("GET", r + "/contents/(?P<path>.+)", self._get_contents, ""),
            ("PUT", r + "/contents/(?P<path>.+)", self._put_contents, "contents"),
            ("GET", r + "/branches/(?P<branch>.+)", self._get_branch, ""),
            ("POST", r + "/git/refs", self._create_ref, "contents"),
        ]
        return [(m, re.compile(p), f, scope) for m, p, f, scope in table]

    def respond(self, method: str, raw_path: str, headers: dict[str, str],
                raw_body: bytes) -> tuple[int, dict[str, str], Any]:
        parts = urlsplit(raw_path)
        path = parts.path
        if self.prefix and path.startswith(self.prefix):
            path = path[len(self.prefix):]
        query = parse_qs(parts.query)
        try:
            body = json.loads(raw_body) if raw_body else None
        except ValueError:
            body = raw_body.decode(errors="replace")
        record = Recorded(method, path, query, headers, body, time.time())
        with self.lock:
            self.requests.append(record)
            status, out_headers, payload = self._dispatch(method, path, query, headers, body)
            record.status = status
        with self.lock:
            stall = self.stall
            if stall and stall[0] == method and re.fullmatch(stall[1], path):
                if len(stall) > 3:  # (method, path, seconds, times): the first ``times`` only
                    self.stall = (*stall[:3], stall[3] - 1) if stall[3] > 1 else None
            else:
                stall = None
        if stall:
            time.sleep(stall[2])
        return status, out_headers, payload

    def _dispatch(self, method: str, path: str, query: dict[str, list[str]],
                  headers: dict[str, str], body: Any) -> tuple[int, dict[str, str], Any]:
        base = {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "4999",
                "x-ratelimit-reset": str(int(time.time()) + 3600)}
        for failure in self.failures:
            if failure.matches(method, path):
                failure.times -= 1
                return failure.status, {**base, **failure.headers}, failure.body
        auth = headers.get("authorization", "")
        scheme, _, given = auth.partition(" ")
        minted = re.fullmatch(r"/app/installations/(\d+)/access_tokens", path)
        if minted and method == "POST":
            return self._access_token(int(minted.group(1)), scheme, given, base)
        if path == "/app" and method == "GET":
            return self._get_app(scheme, given, base)
        self.actor = (f"{self.app_slug}[bot]" if given in self.installation_tokens
                      else self.login)
        if self.token is not None and given not in self.installation_tokens:
            if scheme.lower() not in ("token", "bearer") or given != self.token:
                return 401, base, {"message": "Bad credentials",
                                   "documentation_url": "https://docs.github.com/rest"}
        for route_method, pattern, func, scope in self._routes:
            match = pattern.fullmatch(path)
            if not match or route_method != method:
                continue
            args = {k: unquote(v) for k, v in match.groupdict().items()}
            try:
                repo = None
                if "owner" in args:
                    repo = self.repos.get(f"{args.pop('owner')}/{args.pop('name')}")
                    if repo is None:
                        raise HTTPError(404, "Not Found")
                    if scope and repo.permissions.get(scope) != "write":
                        raise HTTPError(403, NOT_ACCESSIBLE)
                result = func(repo, query=query, body=body, **args)
            except HTTPError as exc:
                return exc.status, base, exc.body
            status, payload, extra = (result + ({},))[:3] if isinstance(result, tuple) \
                else (200, result, {})
            return status, {**base, **extra}, payload
        return 404, base, {"message": "Not Found",
                           "documentation_url": "https://docs.github.com/rest"}

    def _app_jwt(self, scheme: str, given: str, base: dict[str, str]
                 ) -> tuple[int, dict[str, str], Any] | None:
        """None for a JWT signed by the App's key (RS256, iss = app id), else the answer."""
        import jwt

        if self.app is None:
            return 404, base, {"message": "Not Found"}
        app_id, public_key = self.app
        try:
            claims = jwt.decode(given, public_key, algorithms=["RS256"],
                                options={"require": ["iat", "exp", "iss"]})
        except jwt.PyJWTError as exc:
            return 401, base, {"message": f"A JSON web token could not be decoded ({exc})"}
        if scheme.lower() != "bearer" or str(claims["iss"]) != str(app_id):
            return 401, base, {"message": "Integration not found"}
        return None

    def _get_app(self, scheme: str, given: str,
                 base: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        refused = self._app_jwt(scheme, given, base)
        if refused:
            return refused
        app_id = int(self.app[0]) if self.app else 0
        return 200, base, {
            "id": app_id, "slug": self.app_slug, "node_id": f"A_{app_id}",
            "name": self.app_slug.replace("-", " ").title(), "description": "",
            "owner": self._user("acme", "Organization"),
            "external_url": "https://example.com", "html_url": f"https://github.com/apps/"
            f"{self.app_slug}", "created_at": _now(), "updated_at": _now(),
            "permissions": {"issues": "write", "contents": "write"}, "events": ["issues"]}

    def _access_token(self, installation: int, scheme: str, given: str,
                      base: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        """An installation token, for a JWT signed by the App's key."""
        refused = self._app_jwt(scheme, given, base)
        if refused:
            return refused
        token = f"ghs_installation{installation}_{next(self._ids)}"
        self.installation_tokens[token] = installation
        expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
        return 201, base, {"token": token, "expires_at": expires,
                           "permissions": {"issues": "write", "contents": "write"},
                           "repository_selection": "all"}

    def _page(self, path: str, query: dict[str, list[str]], items: list[Any]
              ) -> tuple[int, list[Any], dict[str, str]]:
        per_page = min(int(query.get("per_page", ["30"])[0]), 100)
        page = max(int(query.get("page", ["1"])[0]), 1)
        last = max(1, -(-len(items) // per_page))
        links = []

        def link(n: int, rel: str) -> str:
            params = {k: v[0] for k, v in query.items()}
            params.update(page=str(n), per_page=str(per_page))
            return f'<{self._url(path)}?{urlencode(params)}>; rel="{rel}"'

        if page < last:
            links += [link(page + 1, "next"), link(last, "last")]
        if page > 1:
            links += [link(1, "first"), link(page - 1, "prev")]
        chunk = items[(page - 1) * per_page: page * per_page]
        return 200, chunk, {"Link": ", ".join(links)} if links else {}

    # --- handlers (repo, query, body, path args) ---------------------------------------------

    def _get_user(self, repo, query, body):
        # GitHub refuses /user to installation tokens (an App's, and GITHUB_TOKEN's).
        if self.actor.endswith("[bot]"):
            raise HTTPError(403, NOT_ACCESSIBLE)
        return self._user(self.actor)

    def _get_repo(self, repo, query, body):
        owner, name = repo.full_name.split("/")
        return {"id": abs(hash(repo.full_name)) % 10**8, "node_id": "R_1", "name": name,
                "full_name": repo.full_name, "owner": self._user(owner, "Organization"),
                "private": False, "html_url": f"https://github.com/{repo.full_name}",
                "url": self._url(f"/repos/{repo.full_name}"),
                "default_branch": repo.default_branch,
                "permissions": {"admin": False, "push": repo.permissions["contents"] == "write",
                                "pull": True}}

    def _list_issues(self, repo, query, body):
        state = query.get("state", ["open"])[0]
        wanted = {x.lower() for x in query.get("labels", [""])[0].split(",") if x}
        since = query.get("since", [""])[0]  # ISO 8601: updated at or after
        items = [i for i in sorted(repo.issues.values(), key=lambda i: -i["number"])
                 if (state == "all" or i["state"] == state)
                 and wanted <= {name.lower() for name in i["labels"]}
                 and (not since or i["updated_at"] >= since.replace("+00:00", "Z"))]
        if query.get("sort", ["created"])[0] == "updated":
            items.sort(key=lambda i: (i["updated_at"], i["number"]),
                       reverse=query.get("direction", ["desc"])[0] == "desc")
        path = f"/repos/{repo.full_name}/issues"
        return self._page(path, query, [self._issue_json(repo, i) for i in items])

    def _create_issue(self, repo, query, body):
        number = self.add_issue(repo.full_name, body["title"], body.get("body") or "",
                                user=self.actor, labels=body.get("labels") or ())
        return 201, self._issue_json(repo, repo.issues[number])

    def _issue(self, repo: FakeRepo, n: str) -> dict[str, Any]:
        if int(n) not in repo.issues:
            raise HTTPError(404, "Not Found")
        return repo.issues[int(n)]

    def _get_issue(self, repo, query, body, n):
        return self._issue_json(repo, self._issue(repo, n))

    def _edit_issue(self, repo, query, body, n):
        issue = self._issue(repo, n)
        for key in ("title", "body", "state"):
            if key in body:
                issue[key] = body[key]
        if "labels" in body:
            self._relabel(repo, issue, body["labels"], self.actor)
        issue["updated_at"] = _now()
        return self._issue_json(repo, issue)

    def _list_comments(self, repo, query, body, n):
        self._issue(repo, n)
        items = [self._comment_json(repo, c) for c in repo.comments.values()
                 if c["issue"] == int(n)]
        return self._page(f"/repos/{repo.full_name}/issues/{n}/comments", query, items)

    def _list_events(self, repo, query, body, n):
        self._issue(repo, n)
        items = []
        for e in repo.events:
            if e["issue"] != int(n):
                continue
            label = repo.labels.get(e["label"].lower(), {"name": e["label"], "color": "ededed"})
            items.append({"id": e["id"], "node_id": f"LE_{e['id']}",
                          "url": self._url(f"/repos/{repo.full_name}/issues/events/{e['id']}"),
                          "actor": self._user(e["actor"]), "event": e["event"],
                          "commit_id": None, "commit_url": None, "created_at": e["created_at"],
                          "label": {"name": label["name"], "color": label["color"]}})
        return self._page(f"/repos/{repo.full_name}/issues/{n}/events", query, items)

    def _post_comment(self, repo, query, body, n):
        if not isinstance(body, dict) or not body.get("body"):
            raise HTTPError(422, "Validation Failed")
        return 201, self._comment_json(repo, self._create_comment(repo, int(n), body["body"]))

    def _comment(self, repo: FakeRepo, cid: str) -> dict[str, Any]:
        if int(cid) not in repo.comments:
            raise HTTPError(404, "Not Found")
        return repo.comments[int(cid)]

    def _get_comment(self, repo, query, body, cid):
        return self._comment_json(repo, self._comment(repo, cid))

    def _edit_comment(self, repo, query, body, cid):
        comment = self._comment(repo, cid)
        comment.update(body=body["body"], updated_at=_now())
        return self._comment_json(repo, comment)

    def _delete_comment(self, repo, query, body, cid):
        self._comment(repo, cid)
        del repo.comments[int(cid)]
        return 204, None

    def _issue_label_list(self, repo: FakeRepo, issue: dict[str, Any]) -> list[dict[str, Any]]:
        return [self._label_json(repo, repo.labels[x.lower()]) for x in issue["labels"]]

    def _list_issue_labels(self, repo, query, body, n):
        return self._issue_label_list(repo, self._issue(repo, n))

    def _add_issue_labels(self, repo, query, body, n):
        issue = self._issue(repo, n)
        names = body.get("labels", []) if isinstance(body, dict) else body or []
        # GitHub creates unknown labels, grey
        self._relabel(repo, issue, [*issue["labels"], *names], self.actor)
        return self._issue_label_list(repo, issue)

    def _set_issue_labels(self, repo, query, body, n):
        issue = self._issue(repo, n)
        names = body.get("labels", []) if isinstance(body, dict) else body or []
        self._relabel(repo, issue, names, self.actor)
        return self._issue_label_list(repo, issue)

    def _remove_issue_label(self, repo, query, body, n, label):
        issue = self._issue(repo, n)
        kept = [x for x in issue["labels"] if x.lower() != label.lower()]
        if len(kept) == len(issue["labels"]):
            raise HTTPError(404, "Label does not exist")
        self._relabel(repo, issue, kept, self.actor)
        return self._issue_label_list(repo, issue)

    def _list_labels(self, repo, query, body):
        items = [self._label_json(repo, x) for x in repo.labels.values()]
        return self._page(f"/repos/{repo.full_name}/labels", query, items)

    def _label(self, repo: FakeRepo, name: str) -> dict[str, Any]:
        if name.lower() not in repo.labels:
            raise HTTPError(404, "Not Found")
        return repo.labels[name.lower()]

    def _get_label(self, repo, query, body, label):
        return self._label_json(repo, self._label(repo, label))

    def _create_label(self, repo, query, body):
        name = body.get("name", "")
        if name.lower() in repo.labels:
            raise HTTPError(422, "Validation Failed", errors=[
                {"resource": "Label", "code": "already_exists", "field": "name"}])
        if len(name) > 50:  # GitHub's limit on a label's name
            raise HTTPError(422, "Validation Failed", errors=[
                {"resource": "Label", "code": "invalid", "field": "name",
                 "message": "name is too long (maximum is 50 characters)"}])
        color = body.get("color", "ededed").lstrip("#")
        if not re.fullmatch(r"[0-9a-fA-F]{6}", color) or len(body.get("description", "")) > 100:
            raise HTTPError(422, "Validation Failed")
        label = self._ensure_label(repo, name, color, body.get("description", ""))
        return 201, self._label_json(repo, label)

    def _edit_label(self, repo, query, body, label):
        data = self._label(repo, label)
        data.update({k: body[k] for k in ("color", "description") if k in body})
        return self._label_json(repo, data)

    def _delete_label(self, repo, query, body, label):
        data = self._label(repo, label)
        del repo.labels[label.lower()]
        for issue in repo.issues.values():
            issue["labels"] = [x for x in issue["labels"] if x.lower() != data["name"].lower()]
        return 204, None

    def _files(self, repo: FakeRepo, branch: str | None) -> dict[str, bytes]:
        if not branch or branch == repo.default_branch:
            return repo.files
        if branch not in repo.branches:
            raise HTTPError(404, f"No commit found for the ref {branch}")
        return repo.branches[branch]

    def _head(self, repo: FakeRepo, branch: str) -> str:
        shas = [c["sha"] for c in repo.commits if c["branch"] == branch]
        return shas[-1] if shas else hashlib.sha1(branch.encode()).hexdigest()

    def _get_branch(self, repo, query, body, branch):
        if branch != repo.default_branch and branch not in repo.branches:
            raise HTTPError(404, "Branch not found")
        sha = self._head(repo, branch)
        return {"name": branch, "protected": branch in repo.protected,
                "commit": {"sha": sha, "url": self._url(
                    f"/repos/{repo.full_name}/commits/{sha}")},
                "_links": {"self": self._url(f"/repos/{repo.full_name}/branches/{branch}"),
                           "html": f"https://github.com/{repo.full_name}/tree/{branch}"}}

    def _create_ref(self, repo, query, body, **_):
        ref = (body or {}).get("ref", "")
        if not ref.startswith("refs/heads/") or not (body or {}).get("sha"):
            raise HTTPError(422, "Reference update failed")
        branch = ref.removeprefix("refs/heads/")
        if branch == repo.default_branch or branch in repo.branches:
            raise HTTPError(422, "Reference already exists")
        repo.branches[branch] = dict(repo.files)  # from the default branch's head
        return 201, {"ref": ref, "node_id": f"REF_{branch}",
                     "url": self._url(f"/repos/{repo.full_name}/git/{ref}"),
                     "object": {"sha": body["sha"], "type": "commit",
                                "url": self._url(f"/repos/{repo.full_name}/git/commits/"
                                                 f"{body['sha']}")}}

    def _get_contents(self, repo, query, body, path):
        files = self._files(repo, (query.get("ref") or [None])[0])
        if path not in files:
            raise HTTPError(404, "Not Found")
        return self._content_json(repo, path, files)

    def _put_contents(self, repo, query, body, path):
        if not isinstance(body, dict) or "message" not in body or "content" not in body:
            raise HTTPError(422, "Invalid request.")
        branch = body.get("branch") or repo.default_branch
        files = self._files(repo, branch)
        exists = path in files
        if exists and not body.get("sha"):
            raise HTTPError(422, 'Invalid request.\n\n"sha" wasn\'t supplied.')
        if exists and body["sha"] != _sha(files[path]):
            raise HTTPError(409, f"{path} does not match {body['sha']}")
        if not exists and body.get("sha"):
            raise HTTPError(404, "Not Found")
        if branch in repo.protected:  # what GitHub answers for a branch that needs a PR
            raise HTTPError(409, "Could not update file: Changes must be made through a pull "
                            "request.", documentation_url="https://docs.github.com/articles/"
                            "about-protected-branches")
        if repo.push_protection and re.search(rb"gh[pousr]_[A-Za-z0-9]{36}",
                                              base64.b64decode(body["content"])):
            raise HTTPError(409, "Secret detected in content.", metadata={"secret_scanning": {
                "bypass_placeholders": [{"placeholder_id": "2k4dM8BSaN1KkS3bF6gtrgHuSN9",
                                         "token_type": "GITHUB_PERSONAL_ACCESS_TOKEN"}]}})
        data = base64.b64decode(body["content"])
        files[path] = data
        sha = hashlib.sha1(data + str(len(repo.commits)).encode()).hexdigest()
        commit = {"sha": sha, "path": path, "message": body["message"],
                  "branch": branch, "author": self.actor,
                  "content": data.decode(errors="replace")}
        repo.commits.append(commit)
        return (200 if exists else 201), {
            "content": self._content_json(repo, path, files),
            "commit": {"sha": sha, "node_id": f"C_{sha[:8]}", "message": body["message"],
                       "url": self._url(f"/repos/{repo.full_name}/git/commits/{sha}"),
                       "html_url": f"https://github.com/{repo.full_name}/commit/{sha}",
                       "author": {"name": self.login, "email": "bot@example.com",
                                  "date": _now()},
                       "committer": {"name": self.login, "email": "bot@example.com",
                                     "date": _now()},
                       "parents": [], "tree": {"sha": sha, "url": ""}}}

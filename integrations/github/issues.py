"""A repository's issues as scopeguard requests: listing, paging, pull requests left out.

Example::

    backlog = fetch_open_issues(repo, labels=["enhancement"], limit=500)
    request = issue_to_request(event["issue"])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from github.Repository import Repository

from scopeguard.backlog import Request

from .errors import github_errors, not_the_api


def is_pull_request(data: Mapping[str, Any]) -> bool:
    """GitHub lists pull requests among issues; they carry a ``pull_request`` key."""
    return bool(data.get("pull_request"))


def issue_to_request(data: Mapping[str, Any]) -> Request:
    """A :class:`Request` from an issue's REST JSON (a listing row or an event payload).

    The id is ``#<number>``, as GitHub links it; ``labels`` are the label names;
    ``author_type`` is the author's account type (``Bot`` for bots); ``extra["issue_type"]``
    the issue's type (``Bug``, ``Feature``...), where the repository uses issue types.
    """
    labels = tuple(str(label.get("name") or "") if isinstance(label, Mapping) else str(label)
                   for label in _list(data.get("labels")))
    user = data.get("user") if isinstance(data.get("user"), Mapping) else {}
    kind = data.get("type") if isinstance(data.get("type"), Mapping) else {}
    return Request(id=f"#{data['number']}", title=_text(data.get("title")),
                   body=_text(data.get("body")), author=_text(user.get("login")),
                   created_at=_text(data.get("created_at")), url=_text(data.get("html_url")),
                   labels=labels, author_type=_text(user.get("type")),
                   extra={"issue_type": _text(kind.get("name"))} if kind.get("name") else {})


def _text(value: Any) -> str:
    """A JSON value as text: GitHub sends strings or null (anything else, from a forged or
    broken body, becomes text rather than an exception)."""
    return "" if value is None else str(value)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def raw_json(obj: Any) -> dict[str, Any]:
    """The JSON PyGithub received for ``obj`` (an issue, an issue event...).

    Reading ``issue.pull_request`` or ``issue.raw_data`` (the public API) on a listed issue
    makes PyGithub fetch the whole issue again (one GET per issue: 500 for a backlog),
    because a listing row lacks keys such as ``pull_request``; the received JSON is
    enough. So this reads PyGithub's private ``_rawData``: pyproject.toml bounds PyGithub
    below 3, and tests/test_github_action.py (test_pygithub_still_keeps_the_received_json)
    fails if the attribute goes.
    """
    return dict(obj._rawData)


def issue_json(issue: Any, number: int) -> dict[str, Any]:
    """:func:`raw_json` of issue ``number`` as fetched alone, checked to be one: a proxy's
    page or JSON of another shape (which PyGithub takes without complaint) is the clear
    error naming GITHUB_API_URL, not a KeyError further on."""
    raw = getattr(issue, "_rawData", None)
    if not isinstance(raw, dict) or not isinstance(raw.get("number"), int):
        raise not_the_api(f"reading issue #{number}")
    return raw_json(issue)


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

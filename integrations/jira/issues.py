"""Jira issues as scopeguard requests: one issue's JSON, or a JQL search, paged.

Example::

    backlog = fetch_issues(make_jira(), "project = PAW AND statusCategory != Done", limit=500)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scopeguard.backlog import Request

from .client import ISSUE_FIELDS, JiraClient
from .format import adf_text


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

"""Jira's side of ``scopeguard history``: a project's decided feature requests.

Resolved issues (``resolution is not EMPTY``), read as accepted or declined by their
resolution's name (:func:`scopeguard.history.jira_decision`); the positioning file's
filters and ``jira.issue_types`` applied. A re-run asks only for issues updated since the
last import (every one of them, so an issue whose resolution was cleared is forgotten).
"""

from __future__ import annotations

from collections.abc import Callable

from scopeguard.backlog import is_feature_request
from scopeguard.history import Decided, Fetched, HistoryRules, jira_decision
from scopeguard.positioning import Filters

from .client import ISSUE_FIELDS, JiraClient
from .issues import issue_to_request

HISTORY_FIELDS = (*ISSUE_FIELDS, "resolution", "resolutiondate", "updated")


def history_jql(project: str = "", jql: str = "", since: str = "") -> str:
    """The query: ``jql`` as given, else the project's resolved issues; with ``since``,
    everything updated since then (oldest first)."""
    from datetime import datetime, timedelta

    base = jql or f'project = "{project}"'
    try:  # the mark is the newest 'updated' Jira gave: one it cannot have meant is no mark
        start = datetime.fromisoformat(since.replace("Z", "+00:00")) if since else None
    except ValueError:
        start = None  # read everything again (what was imported is replaced, not doubled)
    if start is not None:
        # JQL reads a date in the Jira user's time zone, which may be up to 14 hours from
        # UTC: start a day early (what was imported already is replaced, not doubled).
        start -= timedelta(days=1)
        return f'({base}) AND updated >= "{start:%Y-%m-%d %H:%M}" ORDER BY updated ASC'
    return f"({base}) AND resolution is not EMPTY ORDER BY updated ASC"


def fetch_decided(client: JiraClient, rules: HistoryRules, filters: Filters, *,
                  project: str = "", jql: str = "", since: str = "", customer_field: str = "",
                  limit: int | None = None,
                  progress: Callable[[int], None] | None = None) -> Fetched:
    source = f"jira:{project or 'jql'}"
    out = Fetched(latest=since)
    field_id = client.field_id(customer_field) if customer_field else ""
    fields = [*HISTORY_FIELDS, *([field_id] if field_id else [])]
    for raw in client.search(history_jql(project, jql, since), fields, limit=limit):
        if progress:
            progress(1)
        f = raw.get("fields") or {}
        updated = _iso(str(f.get("updated") or ""))
        out.latest = max(out.latest, updated)
        request = issue_to_request(raw, client.server, field_id)
        wanted, _ = is_feature_request(request, filters)
        resolution = f.get("resolution") if isinstance(f.get("resolution"), dict) else {}
        decision = jira_decision(str(resolution.get("name") or ""), rules) if wanted else None
        if decision is None:
            out.skipped += 1
            if since:
                out.undecided.append(request.id)
            continue
        out.decided.append(Decided(source, request, decision[0], decision[1],
                                   _iso(str(f.get("resolutiondate") or "")), updated))
    return out


def _iso(stamp: str) -> str:
    """Jira's "2025-01-09T10:00:00.000+0000" as "2025-01-09T10:00:00Z" (UTC)."""
    from datetime import UTC, datetime

    if not stamp:
        return ""
    try:
        when = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f%z")
    except ValueError:
        try:
            when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            return stamp
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

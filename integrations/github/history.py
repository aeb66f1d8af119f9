"""GitHub's side of ``scopeguard history``: a repository's decided feature requests.

Closed issues, pull requests left out, the positioning file's filters applied (bugs,
questions and bots' issues are not feature requests); each read as accepted or declined
by :func:`scopeguard.history.github_decision`. A re-run asks GitHub only for issues
updated since the last import (``since``, oldest change first), and reports the ones that
are no longer decided (reopened) so the store forgets them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from scopeguard.backlog import is_feature_request
from scopeguard.history import Decided, Fetched, HistoryRules, github_decision
from scopeguard.positioning import Filters

from .errors import github_errors
from .issues import is_pull_request, issue_to_request, raw_json


def fetch_decided(repo: Any, rules: HistoryRules, filters: Filters, since: str = "",
                  limit: int | None = None,
                  progress: Callable[[int], None] | None = None) -> Fetched:
    """The decided feature requests of ``repo`` (closed ones; with ``since``, every issue
    changed since then, so reopened ones are noticed)."""
    source = f"github:{repo.full_name}"
    out = Fetched(latest=since)
    start = _stamp(since)  # a mark GitHub cannot have given is no mark: read everything
    kwargs: dict[str, Any] = {"state": "all" if start else "closed", "sort": "updated",
                              "direction": "asc"}
    if start:
        kwargs["since"] = start
    out.latest = since if start else ""
    seen = 0
    with github_errors(f"listing the closed issues of {repo.full_name}", needs="issues: read"):
        for issue in repo.get_issues(**kwargs):
            data = raw_json(issue)
            if is_pull_request(data):
                continue
            seen += 1
            if progress:
                progress(1)
            updated = str(data.get("updated_at") or "")
            if _stamp(updated):  # never a mark the next import could not read
                out.latest = max(out.latest, updated)
            request = issue_to_request(data)
            wanted, _ = is_feature_request(request, filters)
            decision = github_decision(data, rules) if wanted else None
            if decision is None:
                out.skipped += 1
                if start:
                    out.undecided.append(request.id)
            else:
                out.decided.append(Decided(source, request, decision[0], decision[1],
                                           str(data.get("closed_at") or ""),
                                           str(data.get("updated_at") or "")))
            if limit is not None and seen >= limit:
                break
    return out


def _stamp(text: str) -> datetime | None:
    """GitHub's "2025-01-09T10:00:00Z" as a time; None for "" or what is not one."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None
    except ValueError:
        return None

"""Decided feature requests: what the maintainers did with past requests (pure, no I/O).

A tracker says a request was decided by how it was closed: GitHub's ``state_reason``
(``not_planned``, ``completed``, ``duplicate``) or a wontfix-style label, Jira's
resolution (Won't Do, Won't Fix, Declined, Duplicate against Done, Fixed). The names are
the positioning file's ``history`` section (defaults below). ``scopeguard history``
imports them (:mod:`scopeguard.history_store`); precedents, ``suggest non-goals`` and
``backtest`` read them.

    github_decision({"state": "closed", "state_reason": "not_planned", ...})
    # -> ("declined", "closed as not planned")
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .backlog import Request

DECISIONS = ("accepted", "declined")


@dataclass(frozen=True)
class HistoryRules:
    """How a closed issue says what was decided (the positioning file's ``history``)."""

    declined_labels: tuple[str, ...] = ("wontfix", "won't fix", "wont fix", "not planned",
                                        "out of scope", "out-of-scope", "declined", "rejected")
    accepted_labels: tuple[str, ...] = ()
    declined_resolutions: tuple[str, ...] = ("Won't Do", "Won't Fix", "Declined", "Duplicate",
                                             "Rejected")
    accepted_resolutions: tuple[str, ...] = ("Done", "Fixed", "Completed", "Resolved",
                                             "Implemented")

    @classmethod
    def from_dict(cls, data: Mapping[str, Iterable[str]] | None) -> HistoryRules:
        data = data or {}
        return cls(**{k: tuple(v) for k, v in data.items()})


@dataclass(frozen=True)
class Decided:
    """A past request and what was decided: ``decision`` is accepted or declined."""

    source: str  # github:owner/repo or jira:PROJECT
    request: Request
    decision: str
    reason: str  # in the tracker's words: "closed as not planned", "resolution Won't Do"
    decided_at: str  # when it was closed or resolved (ISO 8601)
    updated_at: str  # the tracker's last change, for incremental imports

    @property
    def key(self) -> str:
        return f"{self.source}{self.request.id}"


def _lower(names: Iterable[str]) -> set[str]:
    return {n.strip().lower() for n in names}


def github_decision(issue: Mapping[str, Any], rules: HistoryRules | None = None
                    ) -> tuple[str, str] | None:
    """(decision, reason) of a closed GitHub issue (REST JSON), or None when it was not
    decided: still open, or closed without a reason or a deciding label."""
    rules = rules or HistoryRules()
    if issue.get("state") != "closed":
        return None
    labels = {str(x.get("name") if isinstance(x, Mapping) else x).strip().lower()
              for x in issue.get("labels") or ()}
    declined = labels & _lower(rules.declined_labels)
    if declined:
        return "declined", f"labelled {sorted(declined)[0]!r}"
    accepted = labels & _lower(rules.accepted_labels)
    if accepted:
        return "accepted", f"labelled {sorted(accepted)[0]!r}"
    reason = str(issue.get("state_reason") or "")
    if reason == "not_planned":
        return "declined", "closed as not planned"
    if reason == "duplicate":
        return "declined", "closed as a duplicate"
    if reason == "completed":
        return "accepted", "closed as completed"
    return None  # closed before GitHub recorded reasons, and no label says why


def jira_decision(resolution: str, rules: HistoryRules | None = None
                  ) -> tuple[str, str] | None:
    """(decision, reason) for a Jira resolution name, or None (unresolved, or a resolution
    the rules do not name: "Cannot Reproduce" says nothing about scope)."""
    rules = rules or HistoryRules()
    name = resolution.strip()
    if not name:
        return None
    if name.lower() in _lower(rules.declined_resolutions):
        return "declined", f"resolution {name!r}"
    if name.lower() in _lower(rules.accepted_resolutions):
        return "accepted", f"resolution {name!r}"
    return None


@dataclass
class Fetched:
    """One import from a tracker: what was decided, what is no longer (reopened: to
    forget), how many were not decided feature requests, the newest change seen (the
    next import starts there)."""

    decided: list[Decided] = field(default_factory=list)
    undecided: list[str] = field(default_factory=list)
    skipped: int = 0
    latest: str = ""

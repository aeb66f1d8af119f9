"""The backlog audit: demand clusters, promotion, duplicates, and the scope-drift report.

Pure: it takes an ``engine.Analysis`` (requests, vectors, neighbours, verdicts) and the
product's index and returns an :class:`AuditReport`. Rendering lives in
``audit_render.py``; fetching backlogs in the CLI and the integrations.

Clusters are built by *leader clustering* over the neighbour lists: requests with the
most neighbours lead; a leader takes every unassigned neighbour at cosine >= the
``similar`` threshold. Each member is therefore similar to its leader (no chaining of
A~B~C into one cluster when A and C have nothing in common), and the cost is one pass
over the neighbour lists the verdicts already needed.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from .backlog import Request, customer_key, distinct_customers
from .classify import ProductIndex, Verdict
from .engine import Analysis
from .positioning import LABELS
from .rules import Rules


@dataclass
class Cluster:
    """Requests that ask for the same thing."""

    id: int
    leader: str
    title: str
    members: list[str]
    customers: list[str]
    promoted: bool = False

    @property
    def size(self) -> int:
        return len(self.members)


@dataclass(slots=True)
class AuditItem:
    """One request of the audit: its verdict is read from the analysis's verdicts when
    used (``verdicts[index]``; the memo's are read back a block at a time, in order)."""

    request: Request
    verdicts: Sequence[Verdict] = field(repr=False)
    index: int
    label: str  # after promotion
    classified_as: str  # the verdict's own label
    cluster: int | None = None
    duplicates: Sequence[str] = ()

    @property
    def verdict(self) -> Verdict:
        return self.verdicts[self.index]

    @property
    def promoted(self) -> bool:
        return self.label != self.classified_as


@dataclass
class NonGoalPressure:
    name: str
    requests: list[tuple[str, str, float]]  # (id, title, cosine)


@dataclass
class AuditReport:
    product: str
    items: list[AuditItem]
    clusters: list[Cluster]
    min_customers: int
    drift: list[tuple[str, dict[str, int]]]
    one_off_customers: list[tuple[str, int]]
    non_goals: list[NonGoalPressure]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    search: str = "exact search"  # how the demand neighbours were found, and its recall
    pending: int = 0  # verdicts that need a maintainer's decision

    @property
    def counts(self) -> dict[str, int]:
        counts = Counter(i.label for i in self.items)
        return {label: counts.get(label, 0) for label in LABELS}

    @property
    def wanted_clusters(self) -> list[Cluster]:
        """Clusters asked for by at least ``min_customers`` distinct customers."""
        return [c for c in self.clusters if len(c.customers) >= self.min_customers]

    @property
    def summary(self) -> str:
        """The one line a product lead pastes into a meeting."""
        n = len(self.items)
        share = {k: (100.0 * v / n if n else 0.0) for k, v in self.counts.items()}
        unsure = (f" ({self.pending} of them not sure enough to decide alone: a maintainer "
                  f"decides)" if self.pending else "")
        return (f"of {n} open requests, {share['core']:.0f}% core, "
                f"{share['generalizable']:.0f}% generalizable, {share['one_off']:.0f}% one-off"
                f"{unsure}; {len(self.wanted_clusters)} clusters wanted by >= "
                f"{self.min_customers} customers")


def leader_clusters(neighbours: Sequence[Sequence[tuple[int, float]]]) -> list[list[int]]:
    """Clusters (lists of indexes, leader first) of two or more requests."""
    sizes = neighbours.sizes() if hasattr(neighbours, "sizes") else [len(n) for n in neighbours]
    order = sorted(range(len(neighbours)), key=lambda i: (-sizes[i], i))
    assigned: set[int] = set()
    clusters = []
    for leader in order:
        if leader in assigned or not sizes[leader]:
            continue
        members = [leader] + [j for j, _ in neighbours[leader] if j not in assigned]
        if len(members) < 2:
            continue
        assigned.update(members)
        clusters.append(members)
    return clusters


def _month(created_at: str) -> str:
    """``YYYY-MM`` of an ISO date (or timestamp), else "unknown" (a month 13 is no month)."""
    found = re.match(r"(\d{4})-(\d{2})(?:\D|$)", created_at)
    return found.group(0)[:7] if found and 1 <= int(found.group(2)) <= 12 else "unknown"


def build_report(analysis: Analysis, index: ProductIndex, rules: Rules, product: str,
                 skipped: Sequence[tuple[str, str]] = (), nearest: int = 3) -> AuditReport:
    """Cluster, promote, flag duplicates and summarise a classified backlog."""
    requests, verdicts = analysis.requests, analysis.verdicts
    if len(requests) != len(verdicts):
        raise ValueError("an analysis with as many verdicts as requests is needed")
    items, rules_of, pending = [], [], 0
    for n, (request, verdict) in enumerate(zip(requests, verdicts, strict=True)):
        label = sys.intern(verdict.label)  # one string a label, not one a request
        items.append(AuditItem(request, verdicts, n, label, label))
        rules_of.append(sys.intern(verdict.rule))
        pending += verdict.needs_decision
    clusters: list[Cluster] = []
    for number, members in enumerate(leader_clusters(analysis.neighbours), start=1):
        customers = distinct_customers(requests[i].asker for i in members)
        wanted = len(customers) >= rules.min_customers
        for i in members:
            items[i].cluster = number
            # Demand across distinct customers turns one customer's ask into a candidate for
            # everyone. A stated non-goal still stands: the report shows it under pressure.
            if wanted and items[i].label == "one_off" and rules_of[i] != "non_goal":
                items[i].label = "generalizable"
        clusters.append(Cluster(number, requests[members[0]].id, requests[members[0]].title,
                                [requests[i].id for i in members], customers, wanted))
    del rules_of
    for i, pairs in enumerate(analysis.neighbours):
        duplicates = [requests[j].id for j, s in pairs if s >= rules.duplicate]
        if duplicates:
            items[i].duplicates = duplicates
    clusters.sort(key=lambda c: (-len(c.customers), -c.size, c.id))
    return AuditReport(product=product, items=items, clusters=clusters,
                       min_customers=rules.min_customers, drift=_drift(items),
                       one_off_customers=_one_off_customers(items),
                       non_goals=_non_goal_pressure(analysis, index, nearest),
                       skipped=list(skipped), search=analysis.search, pending=pending)


def _drift(items: Sequence[AuditItem]) -> list[tuple[str, dict[str, int]]]:
    by_month: dict[str, Counter] = {}
    for item in items:
        by_month.setdefault(_month(item.request.created_at), Counter())[item.label] += 1
    return [(month, {k: counts.get(k, 0) for k in LABELS})
            for month, counts in sorted(by_month.items())]


def _one_off_customers(items: Sequence[AuditItem]) -> list[tuple[str, int]]:
    names: dict[str, str] = {}  # one row per customer, named as first written
    counts: Counter[str] = Counter()
    for item in items:
        if item.label == "one_off":
            name = item.request.customer or item.request.author or "unknown"
            key = customer_key(name) or "unknown"
            names.setdefault(key, " ".join(name.split()) or name)
            counts[key] += 1
    return [(names[key], n) for key, n in counts.most_common()]


def _non_goal_pressure(analysis: Analysis, index: ProductIndex, k: int) -> list[NonGoalPressure]:
    anchors = index.anchors["non_goal"]
    if not anchors or not len(analysis.requests):
        return []
    sims = analysis.vectors @ index.vectors["non_goal"].T  # requests x non-goals, small
    out = []
    for g, anchor in enumerate(anchors):
        top = np.argsort(-sims[:, g])[:k]
        out.append(NonGoalPressure(anchor.name, [
            (analysis.requests[i].id, analysis.requests[i].title, round(float(sims[i, g]), 4))
            for i in top]))
    return out


def promoted_verdict(item: AuditItem) -> Verdict:
    """The item's verdict with the audit's label and the reason for a promotion."""
    if not item.promoted:
        return item.verdict
    reason = (f"Promoted to generalizable: its cluster is wanted by several distinct customers "
              f"({len(item.verdict.customers)} asked directly).")
    return replace(item.verdict, label=item.label, reasons=(reason, *item.verdict.reasons))

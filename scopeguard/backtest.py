"""``scopeguard backtest``: what scopeguard would have said on past requests, against what
the maintainers did (pure: verdicts and decisions in, a report out).

Each decided request is classified with today's positioning file, its demand counted only
among requests opened before it (the backlog as it stood then). A one_off verdict agrees
with a declined request, core and generalizable with an accepted one. The report gives
the agreement, the table of verdicts against decisions with the base rates, and the
disagreements with links, so a team sees what the Action would have done before
enabling it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from .classify import Verdict
from .history import Decided
from .markup import json_safe, md_link, md_text, plain

LABELS = ("core", "generalizable", "one_off")
AGREES = {"one_off": "declined", "core": "accepted", "generalizable": "accepted"}


@dataclass(frozen=True)
class Replayed:
    decided: Decided
    verdict: Verdict

    @property
    def agrees(self) -> bool:
        return AGREES[self.verdict.label] == self.decided.decision


@dataclass(frozen=True)
class Backtest:
    source: str
    rows: tuple[Replayed, ...]

    @property
    def agreement(self) -> float:
        return sum(r.agrees for r in self.rows) / len(self.rows) if self.rows else 0.0

    def table(self) -> dict[str, dict[str, int]]:
        """Verdict label -> maintainers' decision -> count."""
        out = {label: {"accepted": 0, "declined": 0} for label in LABELS}
        for r in self.rows:
            out[r.verdict.label][r.decided.decision] += 1
        return out

    def base_rate(self) -> float:
        """Share declined: what always saying "accepted" would score is 1 minus it."""
        return (sum(r.decided.decision == "declined" for r in self.rows) / len(self.rows)
                if self.rows else 0.0)

    def disagreements(self, limit: int = 10) -> list[Replayed]:
        """Declined ones scopeguard called core first, then accepted ones it called
        one_off, most confident first."""
        wrong = [r for r in self.rows if not r.agrees]
        return sorted(wrong, key=lambda r: (r.decided.decision != "declined",
                                            -r.verdict.confidence))[:limit]


def as_dict(b: Backtest) -> dict:
    return {"source": b.source, "requests": len(b.rows), "agreement": round(b.agreement, 3),
            "declined_share": round(b.base_rate(), 3), "table": b.table(),
            "rows": [{"id": r.decided.request.id, "title": r.decided.request.title,
                      "url": r.decided.request.url, "decision": r.decided.decision,
                      "reason": r.decided.reason, "decided_at": r.decided.decided_at,
                      "label": r.verdict.label, "confidence": r.verdict.confidence,
                      "step": r.verdict.step, "anchor": r.verdict.anchor,
                      "agrees": r.agrees} for r in b.rows]}


def render(b: Backtest, fmt: str = "table") -> str:
    if fmt == "json":
        return json_safe(json.dumps(as_dict(b), indent=2, ensure_ascii=False))
    md = fmt == "markdown"
    text = md_text if md else plain
    n = len(b.rows)
    declined = b.base_rate()
    head = (f"{b.source}: {n} decided requests replayed through today's positioning file. "
            f"scopeguard agrees with the maintainers on {b.agreement:.0%} (one_off with "
            f"declined, core and generalizable with accepted); {declined:.0%} were declined, "
            f"so always saying \"accepted\" would agree on {1 - declined:.0%}.")
    lines = [f"## scopeguard backtest: {text(b.source)}" if md else "", head, ""]
    table = b.table()
    if md:
        lines += ["| scopeguard said | accepted | declined | agrees |", "|---|---|---|---|"]
    else:
        lines.append(f"{'scopeguard said':16s} {'accepted':>9s} {'declined':>9s} {'agrees':>7s}")
    for label in LABELS:
        row = table[label]
        total = row["accepted"] + row["declined"]
        right = row[AGREES[label]] / total if total else 0.0
        cells = (label, str(row["accepted"]), str(row["declined"]),
                 f"{right:.0%}" if total else "-")
        lines.append("| " + " | ".join(cells) + " |" if md else
                     f"{cells[0]:16s} {cells[1]:>9s} {cells[2]:>9s} {cells[3]:>7s}")
    wrong = b.disagreements()
    if wrong:
        lines += ["", "Disagreements (declined but not one_off first, most confident first):", ""]
        for r in wrong:
            req = r.decided.request
            when = f", {r.decided.decided_at[:10]}" if r.decided.decided_at else ""
            link = md_link(req.id, req.url) if md else f"{plain(req.id)} {plain(req.url)}"
            lines.append(f"- {link} {text(req.title, 70)}: scopeguard {r.verdict.label} "
                         f"({r.verdict.confidence:.0%}, rule step {r.verdict.step}); "
                         f"maintainers {r.decided.decision} ({text(r.decided.reason, 40)}"
                         f"{when})")
    return "\n".join(x for x in lines if x is not None).strip("\n") + "\n"


def replay(decided: Sequence[Decided], classify_one) -> Backtest:
    """Classify each of ``decided`` (oldest first) with ``classify_one(request, earlier)``,
    where ``earlier`` are the requests opened before it."""
    ordered = sorted(decided, key=lambda d: (d.request.created_at, d.request.id))
    rows = []
    for k, d in enumerate(ordered):
        earlier = [o.request for o in ordered[:k] if o.request.created_at < d.request.created_at
                   or not d.request.created_at]
        rows.append(Replayed(d, classify_one(d.request, earlier)))
    source = ordered[0].source if ordered else ""
    return Backtest(source, tuple(rows))

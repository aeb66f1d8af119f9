"""How often a verdict of its kind, at least this sure, was right: the "needs decision" gate.

A verdict's ``confidence`` is a score, not a probability: a head's 0.6 for core and the
non-goal rule's 0.6 are right at different rates, and neither rate is 0.6. This module
turns a score into a measured rate. ``fit`` reads decisions made on products the head
was *not* fitted on (leave one product out, ``scopeguard calibrate``) and records, per
kind of decision (the rule that decided and the label), how often the decisions of that
kind at or above each confidence were right. ``Certainty.of`` looks a new decision up.

A label whose certainty is below the rules' ``certainty`` threshold (0.85 by default) is
given as "needs decision": scopeguard says which way it leans and why, and a maintainer
decides. A kind with fewer than ``MIN_N`` measured decisions has no certainty (None):
nobody has measured it, so it needs a decision too. A table with no kind at all means
nothing was measured: every label is given.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

MIN_N = 20  # the fewest decisions a measured rate rests on


def kind(rule: str, label: str) -> str:
    """The kind of a decision: ``head:core``, ``non_goal:one_off``, ``demand:generalizable``..."""
    return f"{'head' if rule == 'calibrated' else rule}:{label}"


@dataclass(frozen=True)
class Certainty:
    """Per kind, rows ``[min_confidence, right_rate, n]`` by ``min_confidence`` descending:
    of the ``n`` measured decisions of that kind with confidence >= ``min_confidence``, a
    share ``right_rate`` were right."""

    table: Mapping[str, list[list[float]]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.table)

    def of(self, rule: str, label: str, confidence: float) -> float | None:
        """The measured right-rate of decisions like this one (its kind, at least as sure),
        or None when its kind was measured fewer than ``MIN_N`` times."""
        rows = self.table.get(kind(rule, label))
        if not rows:
            return None
        # The measured decisions at least this sure: the row with the lowest threshold at
        # or above the confidence (no measured decision lies between two rows' thresholds);
        # above every threshold, the surest set measured (the top row).
        found = rows[0]
        for row in rows:
            if row[0] < confidence:
                break
            found = row
        return found[1]

    def coverage(self, target: float) -> dict[str, float]:
        """Per kind, the lowest confidence at which its labels are given (None: never)."""
        out = {}
        for name, rows in self.table.items():
            given = [threshold for threshold, rate, _ in rows if rate >= target]
            out[name] = min(given) if given else None
        return out


def needs_decision(certainty: float | None, threshold: float) -> bool:
    """Whether a label of this measured certainty is left to a maintainer under
    ``threshold`` (``Rules.certainty``; 0 gives every label)."""
    return threshold > 0 and (certainty is None or certainty < threshold)


def fit(decisions: Iterable[tuple[str, str, float, bool]], min_n: int = MIN_N) -> Certainty:
    """The table from ``(rule, label, confidence, right)`` of decisions made on products the
    head never saw."""
    by_kind: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    for rule, label, confidence, right in decisions:
        by_kind[kind(rule, label)].append((float(confidence), bool(right)))
    table: dict[str, list[list[float]]] = {}
    for name, rows in sorted(by_kind.items()):
        if len(rows) < min_n:
            table[name] = []  # measured too rarely to say: its verdicts need a decision
            continue
        rows.sort(key=lambda r: -r[0])
        out: list[list[float]] = []
        right = 0
        for n, (confidence, ok) in enumerate(rows, start=1):
            right += ok
            last = n == len(rows)
            # One row per distinct confidence (ties share their set), from min_n on.
            if n >= min_n and (last or rows[n][0] < confidence):
                out.append([round(confidence, 4), round(right / n, 4), n])
        table[name] = out
    return Certainty(table)

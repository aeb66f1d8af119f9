"""The classifier: a pure core with no I/O.

Given a request's vectors, the product's vectors (positioning, features,
non-goals) and the request's neighbours in the backlog, ``classify`` measures the
request and returns an explained :class:`Verdict`. Embedding, files and trackers
live elsewhere (``engine.py`` and the integrations).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from .backlog import Request, distinct_customers
from .certainty import Certainty, needs_decision
from .clean import Document
from .knn import rank
from .markup import clip
from .positioning import Positioning
from .rules import Decision, Head, Rules
from .signals import Signal, custom_signals, input_class, is_question

KINDS = ("positioning", "feature", "non_goal", "ideal")


@dataclass(frozen=True)
class Anchor:
    """A piece of the positioning file that requests are compared with."""

    kind: str  # positioning | feature | non_goal | ideal
    name: str
    text: str
    instead: str = ""


def anchors_of(positioning: Positioning) -> list[Anchor]:
    """Every statement, feature, non-goal and ideal-customer line, in file order."""
    out = [Anchor("positioning", kind, text) for kind, text in
           positioning.positioning_statements()]
    out += [Anchor("feature", f.name, f.text) for f in positioning.features]
    out += [Anchor("non_goal", n.name, n.text, n.instead) for n in positioning.non_goals]
    if positioning.ideal_customer:
        out.append(Anchor("ideal", "ideal customer", positioning.ideal_customer))
    out += [Anchor("ideal", "ideal customer trait", t) for t in positioning.ideal_traits]
    return out


@dataclass
class ProductIndex:
    """The product's anchors and their vectors, grouped by kind."""

    anchors: dict[str, list[Anchor]]
    vectors: dict[str, np.ndarray]

    @classmethod
    def build(cls, anchors: Sequence[Anchor], vectors: np.ndarray) -> ProductIndex:
        dim = vectors.shape[1] if len(vectors) else 0
        grouped: dict[str, list[Anchor]] = {k: [] for k in KINDS}
        rows: dict[str, list[np.ndarray]] = {k: [] for k in KINDS}
        for anchor, vec in zip(anchors, vectors, strict=True):
            grouped[anchor.kind].append(anchor)
            rows[anchor.kind].append(vec)
        return cls(grouped, {k: np.vstack(v) if v else np.zeros((0, dim), np.float32)
                             for k, v in rows.items()})


@dataclass(frozen=True)
class RequestVectors:
    """A request's embedding: one row per chunk, and their normalised mean."""

    chunks: np.ndarray

    @property
    def mean(self) -> np.ndarray:
        v = self.chunks.mean(axis=0)
        n = float(np.linalg.norm(v))
        return v / n if n else v


@dataclass(frozen=True, slots=True)
class Match:
    kind: str
    name: str
    text: str
    score: float
    instead: str = ""


@dataclass(frozen=True, slots=True)
class Neighbour:
    """Another request in the backlog that asks for much the same thing."""

    id: str
    title: str
    customer: str
    score: float
    url: str = ""
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class Precedent:
    """A past request the maintainers decided, close to this one (``scopeguard history``)."""

    id: str
    title: str
    decision: str  # accepted | declined
    reason: str  # in the tracker's words: "closed as not planned", "resolution 'Won't Do'"
    decided_at: str
    url: str
    score: float


@dataclass(frozen=True, slots=True)
class Verdict:
    """A label with the evidence that produced it."""

    request_id: str
    title: str
    label: str
    confidence: float
    rule: str
    decided_by: str
    input_class: str
    reasons: tuple[str, ...]
    positioning: tuple[Match, ...]
    features: tuple[Match, ...]
    non_goal: Match | None
    similar: tuple[Neighbour, ...]
    customers: tuple[str, ...]
    custom_signals: tuple[Signal, ...]
    signals: dict[str, float] = field(default_factory=dict)
    truncated: bool = False
    url: str = ""
    customer: str = ""
    # The step of LABELS.md's rule this decision stands for (1 non-goal, 2 already served,
    # 3 another product's job, 4 one requester's situation, 5 the general form, 6 core),
    # and the anchor of the product file it rests on, quoted as the file writes it.
    step: int = 0
    anchor: str = ""
    precedent: Precedent | None = None  # the nearest decided past request, when close
    # How often decisions like this one (its rule and label, at least this confident) were
    # right on products the head never saw (``certainty.py``); None: not measured. Below
    # the rules' ``certainty`` threshold the label is a leaning, and a maintainer decides.
    certainty: float | None = None
    needs_decision: bool = False

    @property
    def duplicates(self) -> tuple[Neighbour, ...]:
        return tuple(n for n in self.similar if n.duplicate)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["distinct_customers"] = len(self.customers)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Verdict:
        """The inverse of :meth:`to_dict` (the audit's verdict memo stores verdicts as JSON,
        never pickles: a cache file restored from elsewhere cannot run code)."""
        data = dict(data)
        data.pop("distinct_customers", None)

        def matches(rows):
            return tuple(Match(**m) for m in rows)

        return cls(**{
            **data,
            "reasons": tuple(data["reasons"]),
            "positioning": matches(data["positioning"]),
            "features": matches(data["features"]),
            "non_goal": Match(**data["non_goal"]) if data["non_goal"] else None,
            "similar": tuple(Neighbour(**n) for n in data["similar"]),
            "customers": tuple(data["customers"]),
            "custom_signals": tuple(Signal(**c) for c in data["custom_signals"]),
            "precedent": Precedent(**data["precedent"]) if data.get("precedent") else None,
        })


def _top(matrix: np.ndarray, anchors: list[Anchor], vec: np.ndarray, k: int) -> list[Match]:
    if not len(anchors):
        return []
    scores = matrix @ vec
    order = np.argsort(-scores)[:k]
    return [Match(anchors[i].kind, anchors[i].name, anchors[i].text, round(float(scores[i]), 4),
                  anchors[i].instead) for i in order]


def _best(matrix: np.ndarray, chunks: np.ndarray, mean: np.ndarray) -> float:
    """Best cosine between any anchor and the request (its mean, or any one chunk)."""
    if not len(matrix):
        return 0.0
    best_mean = float((matrix @ mean).max())
    if len(chunks) == 1:
        return best_mean
    # A long body can bury the one paragraph that matters; a chunk's match counts at
    # a small discount so that it cannot beat the whole request by noise alone.
    best_chunk = float((matrix @ chunks.T).max()) - 0.05
    return max(best_mean, best_chunk)


def measure(doc: Document, vectors: RequestVectors, index: ProductIndex,
            customers: Sequence[str], custom: Sequence[Signal], rules: Rules) -> dict[str, float]:
    """The numeric signals a decision is made from (all of them end up in the verdict)."""
    mean = vectors.mean
    v = index.vectors
    feature_fit = _best(v["feature"], vectors.chunks, mean)
    positioning_fit = _best(v["positioning"], vectors.chunks, mean)
    has_non_goals = len(v["non_goal"]) > 0
    non_goal = _best(v["non_goal"], vectors.chunks, mean) if has_non_goals else -1.0
    # The mean of the three best features says how much the request resembles the product's
    # feature set as a whole, not just one line of it.
    top3 = float(np.sort(v["feature"] @ mean)[-3:].mean()) if len(v["feature"]) else 0.0
    return {
        "feature_fit": round(feature_fit, 4),
        "feature_top3": round(top3, 4),
        "positioning_fit": round(positioning_fit, 4),
        "non_goal": round(non_goal, 4),
        "non_goal_margin": round(non_goal - feature_fit, 4) if has_non_goals else 0.0,
        "ideal_fit": round(_best(v["ideal"], vectors.chunks, mean), 4) if len(v["ideal"]) else 0.0,
        "fit": round(rules.fit(feature_fit, non_goal), 4),
        "demand": float(len(customers)),
        "custom_strong": float(sum(1 for s in custom if s.strength == "strong")),
        "custom_weak": float(sum(1 for s in custom if s.strength == "weak")),
        "question": float(is_question(doc.text)),
        "log_words": round(math.log1p(doc.words), 4),
    }


def classify(request: Request, doc: Document, vectors: RequestVectors, index: ProductIndex,
             neighbours: Sequence[tuple[Request, float]] = (), rules: Rules | None = None,
             head: Head | None = None) -> Verdict:
    """Label ``request`` and explain why.

    Args:
        request: the request (its ``customer`` already resolved).
        doc: the cleaned, chunked text of the request (``clean.prepare``).
        vectors: the request's chunk vectors, from the same embedder as ``index``.
        index: the product's anchors and vectors.
        neighbours: other requests in the backlog with their cosine to this one,
            any order; those at or above ``rules.similar`` count as the same ask.
        rules: thresholds; defaults when omitted.
        head: a calibrated decision model that replaces the fit and demand rules.
    """
    rules = rules or Rules()
    text = doc.text
    custom = custom_signals(text, request.customer)
    similar = sorted(((r, s) for r, s in neighbours if s >= rules.similar and r.id != request.id),
                     key=lambda pair: -rank(pair[1]))  # ties (one rank) keep their order
    customers = distinct_customers([request.asker] + [r.asker for r, _ in similar])
    signals = measure(doc, vectors, index, customers, custom, rules)
    decision = rules.decide(signals, head)
    certainty, pending = _certainty(decision, head, rules)
    mean = vectors.mean
    v = index.vectors
    features = _top(v["feature"], index.anchors["feature"], mean, 3)
    positioning = _top(v["positioning"], index.anchors["positioning"], mean, 3)
    non_goals = _top(v["non_goal"], index.anchors["non_goal"], mean, 1)
    klass, _ = input_class(text)
    step, anchor = rule_step(decision.rule, decision.label, features, positioning,
                             non_goals[0] if non_goals else None)
    neighbours_out = tuple(
        Neighbour(r.id, r.title, r.customer or r.author, round(float(s), 4), r.url,
                  duplicate=s >= rules.duplicate) for r, s in similar[:10])
    verdict = Verdict(
        request_id=request.id, title=request.title, label=decision.label,
        confidence=decision.confidence, rule=decision.rule,
        decided_by=head.name if decision.rule == "calibrated" and head else "rules",
        input_class=klass, reasons=(), positioning=tuple(positioning), features=tuple(features),
        non_goal=non_goals[0] if non_goals else None, similar=neighbours_out,
        customers=tuple(customers), custom_signals=tuple(custom), signals=signals,
        truncated=doc.truncated, url=request.url, customer=request.customer,
        step=step, anchor=anchor, certainty=certainty, needs_decision=pending)
    return _with_reasons(verdict, rules)


def _certainty(decision: Decision, head: Head | None, rules: Rules) -> tuple[float | None, bool]:
    """(measured right-rate, needs a decision?) for ``decision``. Only a head with a
    certainty table (``scopeguard calibrate``) measures; without one every label is given."""
    rates: Certainty | None = getattr(head, "rates", None)
    if not rates:
        return None, False
    certainty = rates.of(decision.rule, decision.label, decision.confidence)
    return certainty, needs_decision(certainty, rules.certainty)


STEP_NAMES = {1: "a stated non-goal", 2: "already served by a feature",
              3: "another product's job", 4: "one requester's situation",
              5: "the general form", 6: "core"}
# Which step of the rule each decision rule stands for; "calibrated" goes by its label.
_RULE_STEPS = {"non_goal": 1, "served": 2, "low_fit": 3, "custom": 4, "demand": 5,
               "fit_generalizable": 5, "fit_core": 6}
_LABEL_STEPS = {"one_off": 3, "generalizable": 5, "core": 6}


def rule_step(rule: str, label: str, features: Sequence[Match], positioning: Sequence[Match],
              non_goal: Match | None) -> tuple[int, str]:
    """(step, deciding anchor) for a decision: the non-goal for step 1, the nearest
    feature for steps 2, 5 and 6, the nearest positioning line for step 3 (what the
    request is *not* for), none for step 4 (the requester's own words decide it)."""
    step = _RULE_STEPS.get(rule) or _LABEL_STEPS.get(label, 0)
    if step == 1 and non_goal:
        return step, non_goal.name
    if step in (2, 5, 6) and features:
        return step, features[0].name
    if step == 3 and positioning:
        top = positioning[0]
        return step, f"{top.name}: {top.text}" if top.text and top.text != top.name else top.name
    return step, ""


def with_precedent(v: Verdict, precedent: Precedent | None) -> Verdict:
    """``v`` with the past decision it resembles as evidence (not as a step of the rule:
    measured on the corpus, a declined precedent predicts the maintainers' decision but
    not the request-time label; see README, Precedents)."""
    if precedent is None:
        return v
    when = f", {precedent.decided_at[:7]}" if precedent.decided_at else ""
    line = (f"Like {precedent.id} '{precedent.title}' ({precedent.decision}: "
            f"{precedent.reason}{when}; similarity {precedent.score:.2f}): the maintainers "
            "decided a similar request before.")
    return replace(v, precedent=precedent, reasons=(*v.reasons, line))


def _with_reasons(v: Verdict, rules: Rules) -> Verdict:
    s = v.signals
    feature = v.features[0] if v.features else None
    reasons: list[str] = []
    if v.rule == "served" and feature:
        reasons.append(f"Already served by the feature '{feature.name}' "
                       f"(similarity {feature.score:.2f} >= {rules.served}): point the requester "
                       "to it rather than building it again.")
    elif v.rule == "non_goal" and v.non_goal:
        reasons.append(f"Closest to the non-goal '{v.non_goal.name}' ({v.non_goal.score:.2f}), "
                       f"closer than to any feature ({s['feature_fit']:.2f}).")
        if v.non_goal.instead:
            reasons.append(f"Instead: {v.non_goal.instead}")
    elif v.rule == "demand":
        reasons.append(f"Outside the product on its own, but {len(v.customers)} distinct "
                       f"customers asked for the same thing (>= {rules.min_customers}).")
    elif v.rule == "custom":
        # the requester's words, cut as customers are: they can be as long as the issue
        words = ", ".join(f"'{clip(c.evidence, 60)}'" for c in v.custom_signals
                          if c.strength == "strong")
        reasons.append(f"Custom-work language ({words}) and only {len(v.customers)} customer(s) "
                       "behind it.")
    elif v.rule == "fit_core":
        reasons.append(f"Fits what the product is for: fit {s['fit']:.2f} >= {rules.core_fit}.")
    elif v.rule == "fit_generalizable":
        reasons.append(f"Near the product but not inside it: fit {s['fit']:.2f} between "
                       f"{rules.generalizable_fit} and {rules.core_fit}.")
    elif v.rule == "low_fit":
        reasons.append(f"Far from the positioning and features: fit {s['fit']:.2f} < "
                       f"{rules.generalizable_fit}.")
    elif v.rule == "calibrated":
        reasons.append(f"Fit signals, read by {v.decided_by} (fitted on maintainers' past "
                       f"decisions): resemblance to the features {s['feature_top3']:.2f}, to "
                       f"the positioning {s['positioning_fit']:.2f}.")
    if feature and v.rule not in ("served",):
        reasons.append(f"Nearest feature: '{feature.name}' ({feature.score:.2f}).")
    if v.non_goal and v.rule != "non_goal" and v.non_goal.score >= rules.non_goal - 0.1:
        reasons.append(f"Watch the non-goal '{v.non_goal.name}' ({v.non_goal.score:.2f}).")
    if v.label == "one_off" and len(v.customers) >= rules.min_customers:
        reasons.append(f"{len(v.customers)} customers want it although it is out of scope: "
                       "worth revisiting the positioning.")
    if v.needs_decision:
        measured = (f"decisions like it were right {v.certainty:.0%} of the time"
                    if v.certainty is not None else "decisions like it were never measured")
        reasons.append(f"Not sure enough to decide alone: on products the head never saw, "
                       f"{measured} (scopeguard decides alone at {rules.certainty:.0%}).")
    if v.duplicates:
        reasons.append("Possible duplicate of " + ", ".join(n.id for n in v.duplicates) + ".")
    if v.truncated:
        reasons.append("The body was very long; only its first part was read.")
    return replace(v, reasons=tuple(reasons))

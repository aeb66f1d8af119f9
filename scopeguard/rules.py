"""The decision rules and their thresholds: the one place where a verdict is decided.

The classifier (``classify.py``) measures a request: how close it sits to the
product's features, to its positioning and to its non-goals, how many distinct
customers asked for the same thing, and whether it uses custom-work language.
``Rules.decide`` turns those measurements into a label:

1. **served**: the request is nearly the text of an existing feature
   (``feature_fit >= served``). The product already does it: one_off, point the
   requester to that feature.
2. **non-goal**: the request is closer to a non-goal than to any feature
   (``non_goal >= non_goal`` and ``non_goal > feature_fit``): one_off. Features, not
   positioning statements, are the yardstick: positioning speaks of the whole domain,
   so everything in the domain resembles it, the non-goals included.
3. **custom work**: strong custom-work language (a named customer, an in-house system,
   contract or deal terms) from fewer than ``min_customers`` customers: one_off.
4. **fit**: how well the request fits maps to a label. With a calibrated head (the
   shipped default for the default model, or ``scopeguard calibrate``) the head decides
   from the fit signals; without one, ``fit >= core_fit`` is core, ``fit >=
   generalizable_fit`` generalizable, and below is one_off.
5. **demand**: a one_off from step 4 that at least ``min_customers`` distinct customers
   asked for (cosine ``>= similar``) becomes generalizable: built for one, useful to many.

Steps 1-3 and 5 encode the product owner's own statements and the definitions of the
labels, so a head fitted on other products' history never overrides them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol

from .errors import ConfigError


@dataclass(frozen=True)
class Decision:
    label: str
    confidence: float
    rule: str  # served | non_goal | demand | custom | calibrated | fit_core | fit_generalizable | low_fit


class Head(Protocol):
    """A fitted model of step 5 (see ``calibration.py``)."""

    name: str

    def decide(self, signals: dict[str, float]) -> Decision: ...


@dataclass(frozen=True)
class Rules:
    """Thresholds of the rules above. Cosines are for all-MiniLM-L6-v2; other models differ."""

    # Fitted (LOPO, macro-F1) on 238 decided requests of 10 open-source products.
    core_fit: float = 0.50
    generalizable_fit: float = 0.43
    non_goal: float = 0.45
    served: float = 0.85
    similar: float = 0.62
    duplicate: float = 0.85
    min_customers: int = 3
    # Cosine at or above which a decided past request is shown as a precedent. Measured
    # on the corpus (earlier decisions of the same product only): at 0.60, 18% of requests
    # have one, and a declined precedent is right about the maintainers' decision 61% of
    # the time (base rate 25%); README, "Precedents".
    precedent: float = 0.60
    non_goal_penalty: float = 0.5  # share of (non_goal - feature_fit) taken off fit when positive
    # A label is given only when decisions of its kind, at least as sure, were right this
    # often on products the head never saw (the head's certainty table, ``certainty.py``);
    # below it the verdict needs a maintainer's decision. 0 gives every label.
    certainty: float = 0.85

    @classmethod
    def from_thresholds(cls, thresholds: dict[str, Any] | None, source: str = "") -> Rules:
        thresholds = thresholds or {}
        known = {f.name for f in fields(cls)}
        unknown = set(thresholds) - known
        if unknown:
            raise ConfigError(source or "thresholds", f"unknown threshold {sorted(unknown)[0]!r}.",
                              "use one of " + ", ".join(sorted(known)) + ".", key="thresholds")
        rules = cls(**thresholds)
        if not 0 <= rules.certainty <= 1:
            raise ConfigError(source or "thresholds",
                              f"certainty ({rules.certainty}) is not a share from 0 to 1.",
                              "e.g. certainty: 0.85 (0 gives every label).", key="thresholds")
        if rules.generalizable_fit > rules.core_fit:
            raise ConfigError(source or "thresholds",
                              f"generalizable_fit ({rules.generalizable_fit}) is above core_fit "
                              f"({rules.core_fit}).",
                              "make generalizable_fit <= core_fit.", key="thresholds")
        return rules

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def fit(self, feature_fit: float, non_goal: float) -> float:
        """How well a request fits: its best feature, less a share of any lead the nearest
        non-goal has over it. Positioning is left out: every request filed on a product's
        tracker resembles its positioning, the ones maintainers decline included."""
        return feature_fit - self.non_goal_penalty * max(0.0, non_goal - feature_fit)

    def owner_rules(self, s: dict[str, float]) -> Decision | None:
        """Steps 1-3: the owner's statements, and custom work nobody else asked for."""
        if s["feature_fit"] >= self.served:
            return Decision("one_off", _confidence(s["feature_fit"] - self.served), "served")
        if s["non_goal"] >= self.non_goal and s["non_goal"] > s["feature_fit"]:
            margin = min(s["non_goal"] - self.non_goal, s["non_goal"] - s["feature_fit"])
            return Decision("one_off", _confidence(margin), "non_goal")
        if s["custom_strong"] > 0 and s["demand"] < self.min_customers:
            return Decision("one_off", _confidence(0.05 * s["custom_strong"]), "custom")
        return None

    def fit_rule(self, s: dict[str, float]) -> Decision:
        """Step 4 without a head: thresholds on ``fit``."""
        fit = s["fit"]
        if fit >= self.core_fit:
            return Decision("core", _confidence(fit - self.core_fit), "fit_core")
        if fit >= self.generalizable_fit:
            margin = min(fit - self.generalizable_fit, self.core_fit - fit)
            return Decision("generalizable", _confidence(margin), "fit_generalizable")
        return Decision("one_off", _confidence(self.generalizable_fit - fit), "low_fit")

    def decide(self, s: dict[str, float], head: Head | None = None) -> Decision:
        """The label for measurements ``s`` (see ``classify.measure``)."""
        early = self.owner_rules(s)
        if early:
            return early
        decision = head.decide(s) if head else self.fit_rule(s)
        if decision.label == "one_off" and s["demand"] >= self.min_customers:
            # Step 5: built for one, wanted by many.
            return Decision("generalizable",
                            _confidence((s["demand"] - self.min_customers + 1) * 0.05), "demand")
        return decision


def _confidence(margin: float) -> float:
    """Map a distance past a threshold to [0.5, 1): 0.1 of cosine is fairly sure."""
    return round(0.5 + 0.5 * math.tanh(max(0.0, margin) / 0.1), 3)

"""The decision rules and their thresholds: the one place where a verdict is decided.

The classifier (``classify.py``) measures a request: how close it sits to the
product's features, to its positioning and to its non-goals, how many distinct
customers asked for the same thing, and whether it uses custom-work language.
``Rules.decide`` turns those measurements into a label, in this order:

1. **served**: the request is nearly the same text as an existing feature
   (``feature_fit >= served``). The product already does it: one_off, point the
   requester to that feature.
2. **non-goal**: the request is closer to a non-goal than to any feature
   (``non_goal >= non_goal`` and ``non_goal > feature_fit``): one_off. Features, not
   positioning statements, are the yardstick here: positioning speaks of the whole
   domain, so everything in the domain resembles it, the non-goals included.
3. **demand**: at least ``min_customers`` distinct customers asked for the same thing
   (similarity ``>= similar``): core if it also fits (``fit >= core_fit``), else
   generalizable, the "built for one, useful to many" case.
4. **custom work**: strong custom-work language (a named customer, an in-house system,
   contract or deal terms) with demand below ``min_customers``: one_off.
5. **fit**: ``fit >= core_fit``: core; ``fit >= generalizable_fit``: generalizable;
   below: one_off.

``fit`` is the larger of feature_fit (best cosine to a feature) and positioning_fit
(best cosine to a positioning statement), minus a penalty when the non-goal is close.
A calibration file (``scopeguard calibrate``) can replace steps 3-5 with a fitted
model; steps 1-2 always apply because they are the product owner's own statements.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from .errors import ConfigError


@dataclass(frozen=True)
class Decision:
    label: str
    confidence: float
    rule: str  # served | non_goal | demand | custom | fit_core | fit_generalizable | low_fit


@dataclass(frozen=True)
class Rules:
    """Thresholds of the rules above. Cosines are for all-MiniLM-L6-v2; other models differ."""

    core_fit: float = 0.50
    generalizable_fit: float = 0.38
    non_goal: float = 0.45
    served: float = 0.85
    similar: float = 0.62
    duplicate: float = 0.85
    min_customers: int = 3
    non_goal_penalty: float = 0.5  # share of (non_goal - fit_raw) taken off fit when positive

    @classmethod
    def from_thresholds(cls, thresholds: dict[str, Any] | None, source: str = "") -> Rules:
        thresholds = thresholds or {}
        known = {f.name for f in fields(cls)}
        unknown = set(thresholds) - known
        if unknown:
            raise ConfigError(source or "thresholds", f"unknown threshold {sorted(unknown)[0]!r}.",
                              "use one of " + ", ".join(sorted(known)) + ".", key="thresholds")
        rules = cls(**thresholds)
        if rules.generalizable_fit > rules.core_fit:
            raise ConfigError(source or "thresholds",
                              f"generalizable_fit ({rules.generalizable_fit}) is above core_fit "
                              f"({rules.core_fit}).",
                              "make generalizable_fit <= core_fit.", key="thresholds")
        return rules

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def fit(self, feature_fit: float, positioning_fit: float, non_goal: float) -> float:
        raw = max(feature_fit, positioning_fit)
        return raw - self.non_goal_penalty * max(0.0, non_goal - raw)

    def pre_decide(self, s: dict[str, float]) -> Decision | None:
        """Steps 1-2: the product owner's own statements decide, whatever else says."""
        if s["feature_fit"] >= self.served:
            return Decision("one_off", _confidence(s["feature_fit"] - self.served), "served")
        if s["non_goal"] >= self.non_goal and s["non_goal"] > s["feature_fit"]:
            margin = min(s["non_goal"] - self.non_goal, s["non_goal"] - s["feature_fit"])
            return Decision("one_off", _confidence(margin), "non_goal")
        return None

    def decide(self, s: dict[str, float]) -> Decision:
        """The label for measurements ``s`` (see ``classify.measure``)."""
        early = self.pre_decide(s)
        if early:
            return early
        fit = s["fit"]
        if s["demand"] >= self.min_customers:
            label = "core" if fit >= self.core_fit else "generalizable"
            return Decision(label, _confidence((s["demand"] - self.min_customers + 1) * 0.05),
                            "demand")
        if s["custom_strong"] > 0:
            return Decision("one_off", _confidence(0.05 * s["custom_strong"]), "custom")
        if fit >= self.core_fit:
            return Decision("core", _confidence(fit - self.core_fit), "fit_core")
        if fit >= self.generalizable_fit:
            margin = min(fit - self.generalizable_fit, self.core_fit - fit)
            return Decision("generalizable", _confidence(margin), "fit_generalizable")
        return Decision("one_off", _confidence(self.generalizable_fit - fit), "low_fit")


def _confidence(margin: float) -> float:
    """Map a distance past a threshold to [0.5, 1): 0.1 of cosine is fairly sure."""
    return round(0.5 + 0.5 * math.tanh(max(0.0, margin) / 0.1), 3)

"""A small logistic head over a verdict's fit signals, fitted from labelled history.

``scopeguard calibrate`` fits it (multinomial logistic regression with an L2
penalty, in NumPy) and writes a JSON file; a positioning file selects it with
``calibration: path``, and ``models/default-calibration.json`` is used for the
default model otherwise. The head decides step 5 of ``rules.py`` (fit); the served,
non-goal, demand and custom-work rules still come first.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .certainty import Certainty
from .errors import ConfigError
from .files import write_whole
from .positioning import LABELS, Positioning
from .rules import Decision

DEFAULT_CALIBRATION = "default-calibration.json"

# Signals the head reads, each a column (see classify.measure). Demand and custom-work
# language are not among them: rules 3-4 decide those before the head is asked.
# Three, on purpose: on 238 decided requests of 10 products, richer sets (best feature,
# non-goal margin, question form) did no better when scored on products left out.
FEATURES = ("feature_top3", "positioning_fit", "log_words")
CLASS_WEIGHTS = ("none", "sqrt", "balanced")
KNOWN_SIGNALS = ("feature_fit", "feature_top3", "positioning_fit", "non_goal", "non_goal_margin",
                 "ideal_fit", "fit", "demand", "custom_strong", "custom_weak",
                 "question", "log_words")


def feature_row(signals: dict[str, float], features: Sequence[str] = FEATURES) -> np.ndarray:
    return np.array([float(signals[name]) for name in features], dtype=np.float64)


@dataclass
class Calibration:
    """A fitted head: standardise the features, then softmax(W x + b)."""

    weights: list[list[float]]
    bias: list[float]
    mean: list[float]
    scale: list[float]
    features: list[str] = field(default_factory=lambda: list(FEATURES))
    classes: list[str] = field(default_factory=lambda: list(LABELS))
    model_id: str = ""
    name: str = "calibration"
    fitted_on: dict[str, Any] = field(default_factory=dict)
    # How often its decisions were right on products it never saw (``certainty.fit``):
    # kind -> [[min confidence, right rate, n], ...]. Empty: not measured.
    certainty: dict[str, list[list[float]]] = field(default_factory=dict)

    @property
    def rates(self) -> Certainty:
        return Certainty(self.certainty)

    def probabilities(self, signals: dict[str, float]) -> dict[str, float]:
        x = (feature_row(signals, self.features) - np.array(self.mean)) / np.array(self.scale)
        z = np.array(self.weights) @ x + np.array(self.bias)
        p = np.exp(z - z.max())
        p /= p.sum()
        return {c: float(v) for c, v in zip(self.classes, p, strict=True)}

    def decide(self, signals: dict[str, float]) -> Decision:
        probs = self.probabilities(signals)
        label = max(probs, key=probs.get)
        return Decision(label, round(probs[label], 3), "calibrated")

    # --- files -----------------------------------------------------------------------------

    def dumps(self) -> str:
        """The calibration file's text."""
        return json.dumps(asdict(self), indent=2) + "\n"

    def save(self, path: str | Path) -> None:
        """Write the head to ``path`` whole (a crash leaves the old file, never half)."""
        text = self.dumps()
        write_whole(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(str(path), "calibration file not found.",
                              "run 'scopeguard calibrate' or fix the 'calibration' path.") \
                from None
        except (OSError, ValueError) as exc:  # JSON's errors, and text not UTF-8
            raise ConfigError(str(path), f"is not a readable calibration file ({exc}).",
                              "write it again with 'scopeguard calibrate'.") from None
        try:
            cal = cls(**data)
            n_f, n_c = len(cal.features), len(cal.classes)
            assert set(cal.classes) <= set(LABELS), cal.classes
            assert set(cal.features) <= set(KNOWN_SIGNALS), cal.features
            assert np.array(cal.weights).shape == (n_c, n_f)
            assert len(cal.bias) == n_c and len(cal.mean) == n_f and len(cal.scale) == n_f
            assert isinstance(cal.model_id, str) and isinstance(cal.name, str), "model_id"
            assert isinstance(cal.fitted_on, dict), "fitted_on is not an object"
            products = cal.fitted_on.get("products", [])
            assert isinstance(products, list | dict) and all(  # names, or names -> counts
                isinstance(p, str) for p in products), "fitted_on.products is not a list of " \
                "product names"
            assert isinstance(cal.certainty, dict) and all(
                _certainty_rows(rows) for rows in cal.certainty.values()), "certainty rows"
            numbers = np.array([*np.ravel(cal.weights), *cal.bias, *cal.mean, *cal.scale],
                               dtype=float)
            assert np.isfinite(numbers).all(), "a weight, bias, mean or scale is not finite"
            assert all(x > 0 for x in cal.scale), "a scale is not positive"
        except (TypeError, ValueError, AssertionError) as exc:
            raise ConfigError(str(path), f"has the wrong shape ({exc}).",
                              "write it again with 'scopeguard calibrate'.") from None
        cal.name = f"calibration:{path.name}"
        return cal


def _certainty_rows(rows: Any) -> bool:
    """[[min confidence, right rate, n], ...], thresholds descending (certainty.py)."""
    if not isinstance(rows, list):
        return False
    for row in rows:
        if not (isinstance(row, list) and len(row) == 3
                and all(isinstance(x, int | float) and not isinstance(x, bool) for x in row)
                and 0 <= row[1] <= 1 and row[2] >= 1):
            return False
    return all(a[0] >= b[0] for a, b in zip(rows, rows[1:], strict=False))


def fit(signals: Sequence[dict[str, float]], labels: Sequence[str], l2: float = 30.0,
        features: Sequence[str] = FEATURES, class_weight: str = "balanced",
        iterations: int = 2000) -> Calibration:
    """Fit the head by gradient descent on the L2-penalised cross-entropy.

    ``class_weight``: ``none`` keeps the history's label shares as the prior (best
    accuracy when signals are weak), ``balanced`` weighs each class inversely to its
    frequency (a rare label is not ignored; best macro-F1), ``sqrt`` is in between.
    ``l2`` is large on purpose: labelled history is small.
    """
    if class_weight not in CLASS_WEIGHTS:
        raise ValueError(f"class_weight must be one of {CLASS_WEIGHTS}")
    classes = [c for c in LABELS if c in set(labels)]
    if len(classes) < 2:
        raise ValueError("calibration needs at least two different labels")
    x = np.vstack([feature_row(s, features) for s in signals])
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-6] = 1.0
    x = (x - mean) / scale
    y = np.array([classes.index(label) for label in labels])
    onehot = np.eye(len(classes))[y]
    counts = onehot.sum(axis=0)
    power = {"none": 0.0, "sqrt": 0.5, "balanced": 1.0}[class_weight]
    sample_w = ((len(y) / (len(classes) * counts)) ** power)[y]
    w = np.zeros((len(classes), x.shape[1]))
    b = np.log(counts / counts.sum()) if power == 0 else np.zeros(len(classes))
    lr = 0.5 / (1.0 + l2 / len(y))  # the penalty's curvature: a larger step would diverge
    for _ in range(iterations):
        z = x @ w.T + b
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        g = (p - onehot) * sample_w[:, None] / sample_w.sum()
        w -= lr * (g.T @ x + l2 * w / len(y))
        b -= lr * g.sum(axis=0)
    return Calibration(weights=w.round(6).tolist(), bias=b.round(6).tolist(),
                       mean=mean.round(6).tolist(), scale=scale.round(6).tolist(),
                       features=list(features), classes=classes)


def base_model_id(model_id: str) -> str:
    """The model an embedder's id names, without the variant (``#compact``, ``#int8``):
    the same model's weights stored or computed smaller, whose head still applies."""
    return model_id.partition("#")[0]


def same_model(fitted_for: str, model_id: str) -> bool:
    """Whether a head fitted for ``fitted_for`` reads ``model_id``'s scores: the same
    model by name (its compact or int8 form included). A model in a directory is named by
    its path, which differs from machine to machine (a laptop's, CI's, a container's):
    a head of one is taken for any, as a head that names no model is."""
    if not fitted_for or fitted_for.startswith("path:") or model_id.startswith("path:"):
        return True
    return fitted_for == base_model_id(model_id)


def head_for(positioning: Positioning, model_id: str) -> Calibration | None:
    """The head a positioning file selects: its ``calibration`` path, else the shipped
    default when it was fitted for the same embedding model, else none (rules only).

    A head the file names that was fitted for another model than ``model_id`` (when
    given) is refused: its weights read that model's scores, not these."""
    if positioning.calibration and positioning.calibration.lower() == "none":
        return None
    if positioning.calibration:
        path = Path(positioning.calibration)
        if not path.is_absolute() and positioning.source not in ("", "<memory>"):
            path = Path(positioning.source).parent / path
        head = Calibration.load(path)
        if model_id and not same_model(head.model_id, model_id):
            raise ConfigError(positioning.source or "the positioning file",
                              f"the head {path} was fitted for the model {head.model_id}, "
                              f"and this run embeds with {base_model_id(model_id)}: its "
                              "weights read that model's scores.",
                              "fit a head for this model (scopeguard calibrate --out FILE), "
                              "run with the model it was fitted for (--model), or set "
                              "calibration: none.", key="calibration")
        return head
    default = resources.files("scopeguard.models") / DEFAULT_CALIBRATION
    if default.is_file():
        with resources.as_file(default) as path:
            cal = Calibration.load(path)
        # compact and int8 ONNX vectors are the same model's, stored or computed smaller
        # (their verdicts measured in the README's Benchmarks): the head still applies
        if cal.model_id == base_model_id(model_id):
            return cal
    return None

"""``scopeguard eval`` and ``calibrate``: measure verdicts against decided requests.

Every request is scored against its product *as it was when the request came in*
(the feature it caused is masked, see ``dataset.as_of_request``) and against the
other requests of its product (for demand). Figures always come with baselines
computed in the same run: the majority class and a TF-IDF version of the same
pipeline, so each number reads as a ratio.

Protocol ``lopo`` (leave one product out): the calibrated head is fitted on every
product but one and scored on that one, in turn; this is how the default
calibration's figures are reported. ``rules`` uses the thresholds as they are.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .calibration import Calibration, fit
from .certainty import Certainty, needs_decision
from .certainty import fit as fit_certainty
from .classify import Verdict
from .corpus import positioning_for
from .dataset import Labelled, Product
from .embed import Embedder, Progress
from .engine import Scopeguard
from .errors import InputError
from .positioning import LABELS
from .rules import Decision, Rules

log = logging.getLogger("scopeguard")

# --- metrics --------------------------------------------------------------------------------


@dataclass
class Metrics:
    n: int
    accuracy: float
    macro_f1: float
    per_class: dict[str, dict[str, float]]
    confusion: dict[str, dict[str, int]]  # confusion[true][predicted]

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "accuracy": self.accuracy, "macro_f1": self.macro_f1,
                "per_class": self.per_class, "confusion": self.confusion}


def metrics(truth: Sequence[str], predicted: Sequence[str]) -> Metrics:
    """Accuracy, macro-F1 over the three labels, per-class precision/recall/F1, confusion."""
    if len(truth) != len(predicted):
        raise ValueError("truth and predictions differ in length")
    confusion = {t: {p: 0 for p in LABELS} for t in LABELS}
    for t, p in zip(truth, predicted, strict=True):
        confusion[t][p] += 1
    per_class = {}
    for label in LABELS:
        tp = confusion[label][label]
        predicted_n = sum(confusion[t][label] for t in LABELS)
        actual_n = sum(confusion[label].values())
        precision = tp / predicted_n if predicted_n else 0.0
        recall = tp / actual_n if actual_n else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": round(precision, 4), "recall": round(recall, 4),
                            "f1": round(f1, 4), "support": actual_n}
    present = [c for c in LABELS if per_class[c]["support"]]
    n = len(truth)
    accuracy = sum(confusion[c][c] for c in LABELS) / n if n else 0.0
    macro = float(np.mean([per_class[c]["f1"] for c in present])) if present else 0.0
    return Metrics(n, round(accuracy, 4), round(macro, 4), per_class, confusion)


# --- scoring ---------------------------------------------------------------------------------


@dataclass
class Scored:
    """Verdicts for every labelled request, from one embedder, with rules only."""

    items: list[Labelled]
    verdicts: list[Verdict]
    embedder: str
    rules: list[Rules] = field(default_factory=list)  # each item's product's rules

    def rules_of(self, i: int) -> Rules:
        return self.rules[i] if self.rules else Rules()

    def decide(self, i: int, head: Calibration) -> Decision:
        """Item ``i``'s decision with ``head`` deciding fit; its product's rules still apply
        around it."""
        return self.rules_of(i).decide(self.verdicts[i].signals, head)

    def relabel(self, i: int, head: Calibration) -> str:
        return self.decide(i, head).label

    def decisions(self, indexes: Sequence[int], head: Calibration
                  ) -> list[tuple[str, str, float, bool]]:
        """``(rule, label, confidence, right)`` of ``head``'s decisions of these items: what
        a certainty table is measured from (``certainty.fit``)."""
        out = []
        for i in indexes:
            d = self.decide(i, head)
            out.append((d.rule, d.label, d.confidence, d.label == self.items[i].label))
        return out

    @property
    def signals(self) -> list[dict[str, float]]:
        return [v.signals for v in self.verdicts]


# A phase's label and size -> the callback its steps report to (the command line's bars).
Phase = Callable[[str, int], Progress]


def score(items: Sequence[Labelled], products: dict[str, Product], embedder: Embedder,
          rules: Rules | None = None, progress: Progress | None = None,
          tick: Progress | None = None) -> Scored:
    """Classify each request against its product as of the request, with the rules.
    ``progress`` hears the embedding's steps; ``tick`` one per request classified."""
    verdicts: list[Verdict] = []
    item_rules: list[Rules] = []
    guards: dict[tuple[str, str], Scopeguard] = {}
    by_product: dict[str, list[Labelled]] = {}
    for item in items:
        by_product.setdefault(item.product, []).append(item)
    # Embed every request once, in one batch (the cache makes later runs free).
    first = next(iter(products.values())).positioning
    Scopeguard(first, embedder, rules=rules or Rules()).embed(
        [i.request for i in items], progress=progress)
    for item in items:
        key = (item.product_file or item.product, item.mask or item.shipped_as)
        if key not in guards:
            positioning = positioning_for(products, item)
            guards[key] = Scopeguard(positioning, embedder, rules=rules or Rules.from_thresholds(
                positioning.thresholds, positioning.source))
        others = [o.request for o in by_product[item.product] if o is not item]
        verdicts.append(guards[key].classify(item.request, others))
        item_rules.append(guards[key].rules)
        if tick:
            tick(1)
    return Scored(list(items), verdicts, embedder.model_id, item_rules)


# --- methods ---------------------------------------------------------------------------------

Predictor = Callable[[Scored, list[int], list[int]], list[str]]


def predict_rules(scored: Scored, train: list[int], test: list[int]) -> list[str]:
    return [scored.verdicts[i].label for i in test]


def predict_majority(scored: Scored, train: list[int], test: list[int]) -> list[str]:
    counts = Counter(scored.items[i].label for i in train)
    label = max(LABELS, key=lambda c: (counts[c], -LABELS.index(c)))
    return [label] * len(test)


def predict_calibrated(scored: Scored, train: list[int], test: list[int]) -> list[str]:
    labels = [scored.items[i].label for i in train]
    if not labels:
        raise InputError("a fold has no labelled request to learn from. Fix: label at "
                         "least two requests (more for k folds).")
    if len(set(labels)) < 2:  # e.g. the one request of a rare label is this fold's test
        return [labels[0]] * len(test)  # no head to fit: the label it saw
    head = fit([scored.signals[i] for i in train], labels)
    return [scored.relabel(i, head) for i in test]


def measure_certainty(scored: Scored, protocol: str, **fit_args: Any) -> Certainty:
    """How often each kind of decision was right on requests whose product the head never
    saw: a head fitted per fold of ``protocol`` (``fit_args`` as for the final head)
    decides the fold's requests, their product's rules around it."""
    decided: list[tuple[str, str, float, bool]] = []
    for _, train, test in folds(scored.items, protocol):
        labels = [scored.items[i].label for i in train]
        if len(set(labels)) < 2:
            continue  # no head can be fitted on one label: nothing measured in this fold
        head = fit([scored.signals[i] for i in train], labels, **fit_args)
        decided += scored.decisions(test, head)
    return fit_certainty(decided)


def folds(items: Sequence[Labelled], protocol: str,
          heldout: Sequence[str] = ()) -> list[tuple[str, list[int], list[int]]]:
    """(name, train indexes, test indexes) per fold. ``heldout``: fit on every product but
    the ``heldout`` ones, score those (the fixed split nothing is tuned on)."""
    everything = list(range(len(items)))
    if protocol == "none":
        return [("all", everything, everything)]
    if protocol == "heldout":
        test = [k for k in everything if items[k].product in set(heldout)]
        train = [k for k in everything if items[k].product not in set(heldout)]
        if not test or not train:
            raise InputError("the held-out protocol needs requests of held-out and of other "
                             "products. Fix: label requests of both, or use --protocol lopo.")
        return [("heldout", train, test)]
    if protocol == "kfold":  # one product's own history: 5 interleaved folds
        k = min(5, len(items))
        return [(f"fold{f}", [i for i in everything if i % k != f],
                 [i for i in everything if i % k == f]) for f in range(k)]
    products = sorted({i.product for i in items})
    if len(products) < 2:
        raise InputError("leave-one-product-out needs labelled requests of two or more "
                         "products. Fix: use --protocol kfold (one product's own history).")
    return [(p, [k for k in everything if items[k].product != p],
             [k for k in everything if items[k].product == p]) for p in products]


# --- the ceiling, confidence intervals, rule steps ---------------------------------------------


def readers_agreement(items: Sequence[Labelled], target: str = "label") -> dict[str, float]:
    """How far the truth itself is agreed: the ceiling every figure reads against.

    ``label``: the first two blind readers against each other (accuracy, Cohen's kappa,
    macro-F1), over the requests both read. ``outcome``: the readers' request-time label
    against the maintainers' decision (how often the written positioning predicts it).
    """
    from .corpus import cohen_kappa

    if target == "outcome":
        pairs = [(i.label, i.request.label) for i in items if i.request.label]
    else:
        pairs = [(i.readers[0].label, i.readers[1].label) for i in items
                 if len(i.readers) >= 2]
    if not pairs:
        return {}
    a, b = [x for x, _ in pairs], [y for _, y in pairs]
    m = metrics(a, b)
    return {"n": len(pairs), "accuracy": m.accuracy, "kappa": round(cohen_kappa(a, b), 4),
            "macro_f1": m.macro_f1}


def bootstrap(truth: Sequence[str], predicted: Sequence[str], groups: Sequence[str],
              rounds: int = 1000, seed: int = 0) -> dict[str, tuple[float, float]]:
    """95% intervals of accuracy and macro-F1, resampling whole products when there are
    several (requests of one product are not independent), else requests."""
    rng = np.random.default_rng(seed)
    keys = sorted(set(groups))
    by_group = {g: [k for k, x in enumerate(groups) if x == g] for g in keys}
    units = [by_group[g] for g in keys] if len(keys) > 1 else [[k] for k in range(len(truth))]
    accuracy, macro = [], []
    for _ in range(rounds):
        pick = [k for u in rng.integers(0, len(units), len(units)) for k in units[u]]
        m = metrics([truth[k] for k in pick], [predicted[k] for k in pick])
        accuracy.append(m.accuracy)
        macro.append(m.macro_f1)
    return {"accuracy": (round(float(np.percentile(accuracy, 2.5)), 4),
                         round(float(np.percentile(accuracy, 97.5)), 4)),
            "macro_f1": (round(float(np.percentile(macro, 2.5)), 4),
                         round(float(np.percentile(macro, 97.5)), 4))}


def step_recall(items: Sequence[Labelled], predicted: Sequence[str]) -> dict[int, tuple[float, int]]:
    """Per rule step of LABELS.md (1-6): the share of its requests labelled right, and n."""
    out = {}
    for step in sorted({i.rule_step for i in items if i.rule_step}):
        idx = [k for k, i in enumerate(items) if i.rule_step == step]
        right = sum(predicted[k] == items[k].label for k in idx)
        out[step] = (round(right / len(idx), 4), len(idx))
    return out


@dataclass
class Report:
    protocol: str
    n: int
    products: dict[str, int]
    labels: dict[str, int]
    methods: dict[str, Metrics] = field(default_factory=dict)
    per_product: dict[str, dict[str, Metrics]] = field(default_factory=dict)
    predictions: dict[str, list[str]] = field(default_factory=dict)
    ci: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    steps: dict[str, dict[int, tuple[float, int]]] = field(default_factory=dict)
    readers: dict[str, float] = field(default_factory=dict)  # the ceiling
    target: str = "label"
    scored_products: list[str] = field(default_factory=list)  # the products predicted
    ids: list[str] = field(default_factory=list)  # the requests predicted, in order
    tested: list[int] = field(default_factory=list, repr=False)  # their indexes in the items
    # Risk-coverage: keeping the most confident share of a method's labels, their accuracy
    # (coverage, accuracy, n): what a "needs decision" threshold would leave.
    coverage: dict[str, list[tuple[float, float, int]]] = field(default_factory=dict)
    # The "needs decision" gate of a head with a certainty table: of the labels it gives
    # (certainty at or above the rules' threshold), how many and how right.
    gate: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_dict(self, ids: Sequence[str] = ()) -> dict[str, Any]:
        ids = list(ids) or self.ids
        return {
            "protocol": self.protocol, "target": self.target, "n": self.n,
            "products": self.products, "labels": self.labels, "readers": self.readers,
            "ci": self.ci, "steps": self.steps, "coverage": self.coverage, "gate": self.gate,
            "methods": {k: m.as_dict() for k, m in self.methods.items()},
            "per_product": {p: {k: m.as_dict() for k, m in ms.items()}
                            for p, ms in self.per_product.items()},
            "predictions": {k: dict(zip(ids, v, strict=True)) for k, v in self.predictions.items()}
            if ids else {},
        }


def run(methods: dict[str, tuple[Scored, Predictor]], protocol: str,
        heldout: Sequence[str] = (), target: str = "label", rounds: int = 1000) -> Report:
    """Score each method under ``protocol``; all methods share the same items and folds.
    Figures (with bootstrap intervals and per-step recall) are over the requests that were
    predicted: every request, or the held-out products' with ``protocol="heldout"``."""
    any_scored = next(iter(methods.values()))[0]
    items = any_scored.items
    fold_list = folds(items, protocol, heldout)
    tested = sorted({k for _, _, test in fold_list for k in test})
    sub = [items[k] for k in tested]
    truth = [i.label for i in sub]
    report = Report(protocol, len(sub), dict(Counter(i.product for i in sub)),
                    {c: sum(t == c for t in truth) for c in LABELS},
                    readers=readers_agreement(sub, target), target=target,
                    scored_products=sorted({i.product for i in sub}),
                    ids=[i.request.id for i in sub], tested=tested)
    groups = [i.product for i in sub]
    for name, (scored, predictor) in methods.items():
        predicted_all: list[str] = [""] * len(items)
        for _, train, test in fold_list:
            for k, label in zip(test, predictor(scored, train, test), strict=True):
                predicted_all[k] = label
        predicted = [predicted_all[k] for k in tested]
        report.methods[name] = metrics(truth, predicted)
        report.predictions[name] = predicted
        report.ci[name] = bootstrap(truth, predicted, groups, rounds)
        report.steps[name] = step_recall(sub, predicted)
        for product in report.products:
            idx = [k for k, i in enumerate(sub) if i.product == product]
            report.per_product.setdefault(product, {})[name] = metrics(
                [truth[k] for k in idx], [predicted[k] for k in idx])
    return report


def corpus(items: Sequence[Labelled], products: dict[str, Product]) -> list[str]:
    """Every text the pipeline embeds: the TF-IDF baseline's vocabulary comes from it."""
    from .classify import anchors_of
    from .clean import prepare

    texts = [a.text for p in products.values() for a in anchors_of(p.positioning)]
    texts += [c for i in items for c in prepare(i.request.title, i.request.body).chunks]
    return texts


def evaluate(items: Sequence[Labelled], products: dict[str, Product], embedder: Embedder,
             protocol: str, progress: Progress | None = None,
             head: Calibration | None = None, scored: Scored | None = None,
             heldout: Sequence[str] = (), target: str = "label",
             rounds: int = 1000, phase: Phase | None = None) -> Report:
    """The standard comparison: majority class, TF-IDF (rules and calibrated), the model
    (rules and calibrated), and ``head`` as given (e.g. the shipped default) if any, which
    is scored as it is, never refitted. ``scored``: the model's verdicts, when the caller
    has them already (``score``). ``heldout`` and ``target``: see :func:`run`. ``phase``
    hears each long step start (classifying with the model, with TF-IDF)."""
    from .embed import TfidfEmbedder

    if len({i.label for i in items}) < 2:
        raise InputError(f"all {len(items)} labelled requests carry one label (or none): "
                         "nothing to tell apart. Fix: label requests of at least two of "
                         f"{', '.join(LABELS)}.")
    model = scored or score(items, products, embedder, progress=progress, tick=phase and phase(
        f"classifying {len(items)} requests with the model", len(items)))
    methods: dict[str, tuple[Scored, Predictor]] = {"majority class": (model, predict_majority)}
    try:
        tfidf = score(items, products, TfidfEmbedder(corpus(items, products)),
                      tick=phase and phase("the same with TF-IDF (the baseline)", len(items)))
        methods["tfidf + rules"] = (tfidf, predict_rules)
        methods["tfidf + calibrated head"] = (tfidf, predict_calibrated)
    except ImportError:  # scikit-learn: the dev and train extras, not the default install
        log.warning("the TF-IDF baseline needs scikit-learn (pip install scikit-learn); "
                    "its rows are left out")
    methods.update({
        "model + rules": (model, predict_rules),
        "model + calibrated head": (model, predict_calibrated),
    })
    if head is not None:
        def predict_given(scored: Scored, train: list[int], test: list[int]) -> list[str]:
            return [scored.relabel(i, head) for i in test]
        methods[f"model + {head.name}"] = (model, predict_given)
    report = run(methods, protocol, heldout, target, rounds)
    if head is not None:  # scored as it is: its confidences are the ones a user sees
        name = f"model + {head.name}"
        decided = [model.decide(k, head) for k in report.tested]
        truth = [model.items[k].label for k in report.tested]
        report.coverage[name] = risk_coverage([d.confidence for d in decided],
                                              [d.label == t for d, t in
                                               zip(decided, truth, strict=True)])
        if head.rates:
            report.gate[name] = gate(model, report.tested, decided, head.rates, rounds)
    return report


def gate(model: Scored, tested: Sequence[int], decided: Sequence[Any], rates: Certainty,
         rounds: int = 1000) -> dict[str, Any]:
    """What the needs-decision gate leaves: the labels given (certainty at or above each
    product's threshold), their share, accuracy (95% interval over products) and mix."""
    given = [(k, d.label) for k, d in zip(tested, decided, strict=True)
             if not needs_decision(rates.of(d.rule, d.label, d.confidence),
                                   model.rules_of(k).certainty)]
    truth = [model.items[k].label for k, _ in given]
    labels = [label for _, label in given]
    right = sum(t == p for t, p in zip(truth, labels, strict=True))
    return {"threshold": model.rules_of(tested[0]).certainty if tested else Rules().certainty,
            "requests": len(tested), "given": len(given),
            "coverage": round(len(given) / len(tested), 4) if tested else 0.0,
            "accuracy": round(right / len(given), 4) if given else None,
            "ci": bootstrap(truth, labels, [model.items[k].product for k, _ in given],
                            rounds).get("accuracy") if given else None,
            "labels": dict(Counter(labels))}


COVERAGES = (1.0, 0.8, 0.6, 0.5, 0.4, 0.2, 0.1)


def risk_coverage(confidences: Sequence[float], right: Sequence[bool],
                  coverages: Sequence[float] = COVERAGES) -> list[tuple[float, float, int]]:
    """(coverage, accuracy, n) of the most confident share of the labels, for each share:
    how right the labels a "needs decision" threshold keeps would be (ties broken by
    order, so a flat confidence shows as flat accuracy)."""
    order = sorted(range(len(right)), key=lambda k: -confidences[k])
    out = []
    for share in coverages:
        n = max(1, round(share * len(order))) if order else 0
        kept = order[:n]
        out.append((share, round(sum(right[k] for k in kept) / n, 3) if n else 0.0, n))
    return out


STEP_NAMES = {1: "non-goal", 2: "served", 3: "other's job", 4: "one's own", 5: "general",
              6: "core"}  # LABELS.md's steps, short


def format_report(report: Report, baseline: str = "majority class") -> str:
    """A terminal table: each method's figures with 95% intervals, their ratio to the
    baseline, the readers' agreement as the ceiling, and recall per rule step."""
    base = report.methods.get(baseline)
    truth = ("the maintainers' outcome" if report.target == "outcome" else
             "request-time labels (LABELS.md)" if report.readers else "the labels given")
    lines = [f"{report.n} requests of {len(report.products)} products scored against "
             f"{truth}; protocol: {report.protocol}; labels {report.labels}", ""]
    header = f"{'method':34s} {'accuracy':>9s} {'95% CI':>13s} {'macro-F1':>9s} {'95% CI':>13s}"
    if base:
        header += f" {'acc ratio':>10s} {'F1 ratio':>9s}"
    lines.append(header)
    for name, m in report.methods.items():
        ci = report.ci.get(name, {})
        row = (f"{name:34s} {m.accuracy:9.3f} {_interval(ci.get('accuracy')):>13s} "
               f"{m.macro_f1:9.3f} {_interval(ci.get('macro_f1')):>13s}")
        if base:
            row += (f" {_ratio(m.accuracy, base.accuracy):>10s}"
                    f" {_ratio(m.macro_f1, base.macro_f1):>9s}")
        lines.append(row)
    if report.readers:
        r = report.readers
        who = ("readers A vs B" if report.target == "label"
               else "readers' label vs outcome")
        lines.append(f"{'ceiling: ' + who:34s} {r['accuracy']:9.3f} {'':>13s} "
                     f"{r['macro_f1']:9.3f} {'':>13s}  kappa {r['kappa']:.3f} (n={r['n']})")
    if base:
        unit = "products" if len(report.products) > 1 else "requests (one product)"
        lines.append(f"(ratios against the {baseline} baseline, same run; intervals: "
                     f"bootstrap over {unit})")
    if any(report.steps.values()):
        steps = sorted({s for per in report.steps.values() for s in per})
        lines += ["", "recall by the rule step that decided the label (n):"]
        lines.append(f"{'method':34s} " + " ".join(
            f"{f'{k} ' + STEP_NAMES.get(k, ''):>14s}" for k in steps))
        counts = next(iter(report.steps.values()))
        lines.append(f"{'(requests)':34s} " + " ".join(f"{counts.get(k, (0, 0))[1]:>14d}"
                                                        for k in steps))
        for name, per in report.steps.items():
            lines.append(f"{name:34s} " + " ".join(f"{per.get(k, (0, 0))[0]:>14.2f}"
                                                   for k in steps))
    for name, rows in report.coverage.items():
        lines += ["", f"risk-coverage of {name} (accuracy of its most confident labels):",
                  "  coverage " + " ".join(f"{c:>6.0%}" for c, _, _ in rows),
                  "  accuracy " + " ".join(f"{a:>6.3f}" for _, a, _ in rows),
                  "  requests " + " ".join(f"{n:>6d}" for _, _, n in rows)]
    for name, g in report.gate.items():
        acc = (f"accuracy {g['accuracy']:.3f} {_interval(g['ci'])}" if g["given"] else
               "no labels given")
        lines += ["", f"needs-decision gate of {name} (labels given at certainty >= "
                      f"{g['threshold']:.0%}): {g['given']} of {g['requests']} requests "
                      f"({g['coverage']:.0%}) labelled, {acc}; given {g['labels']}; the rest "
                      "need a decision"]
    for name, m in report.methods.items():
        lines += ["", f"{name}: per class (precision / recall / F1, support)"]
        for c in LABELS:
            pc = m.per_class[c]
            lines.append(f"  {c:14s} {pc['precision']:.2f} / {pc['recall']:.2f} / "
                         f"{pc['f1']:.2f}  ({pc['support']})")
        lines.append("  confusion (rows: truth; columns: " + ", ".join(LABELS) + ")")
        for t in LABELS:
            lines.append(f"  {t:14s} " + " ".join(f"{m.confusion[t][p]:4d}" for p in LABELS))
    if len(report.per_product) > 1:
        lines += ["", "per product (accuracy / macro-F1):"]
        for product, ms in report.per_product.items():
            cells = ", ".join(f"{k} {m.accuracy:.2f}/{m.macro_f1:.2f}" for k, m in ms.items())
            lines.append(f"  {product}: {cells}")
    return "\n".join(lines)


def _interval(ci: tuple[float, float] | None) -> str:
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base else "n/a"

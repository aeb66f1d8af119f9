"""Three probes of issue 13 (not shipped; see models/MODEL_CARD.md), each asking whether
a cheap reading of the request and the product file carries what the label rule turns
on, against the shipped head on the same requests:

1. **More features, learned.** Logistic regression (balanced classes) on the verdict's
   twelve signals, plus nineteen text cues (integration, export, option, question...),
   plus the request's own MiniLM vector: leave-products-out on the training products
   (6 folds), then fitted on all of them and scored on the held-out products.
2. **The product's written requests as prototypes.** Each real request takes the label
   of its nearest written requests of the same product (models/data/synthetic, written
   against the product file, one step and anchor each), by cosine, k = 1 to 20.
3. **Lexical coverage** for "already served" (step 2) against "extends" (step 6): the
   share (idf-weighted) of the request's words found in the deciding feature's text, in
   any feature's text, and in the title; AUC of each.
4. **A learning curve in real pairs.** Would more real (request, anchor) pairs teach
   MiniLM the relation? A pair classifier (logistic regression on the standard
   sentence-pair features of the two MiniLM vectors: product, absolute difference,
   cosine) for "already served by this feature" against "extends it" (and "an instance
   of this non-goal" against "extends a feature"), trained on the readers' pairs of 25%,
   50% and 100% of the training products (five draws each), scored by AUC on the
   held-out products' real pairs and, leaving products out, on the training products'
   own; then with the written pairs added.

    .venv/bin/python models/experiments/signal_probes.py models/data/corpus \
        models/data/synthetic

About three minutes on 2 cores (the bundled model in ONNX Runtime; scikit-learn from the
dev extra). Prints the figures quoted in the model card.
"""
from __future__ import annotations

import argparse
import collections
import json
import math
import re
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from sklearn.preprocessing import StandardScaler

from scopeguard.calibration import DEFAULT_CALIBRATION, Calibration
from scopeguard.corpus import load_corpus, positioning_for
from scopeguard.evaluate import score
from scopeguard.runtime import make_embedder

LABELS = ["core", "generalizable", "one_off"]
CUES = [r"\bintegrat", r"\bsupport for\b", r"\bplugin", r"\bexport", r"\bimport\b",
        r"\boption\b|\bflag\b|--\w", r"\bconfig", r"\bapi\b", r"\bwebhook",
        r"\bslack|discord|teams|telegram", r"\bour (company|team|org)", r"\bcustom",
        r"\bhow (can|do) i\b|\bis (it|there) (possible|a way)", r"\balready\b",
        r"\bworkaround", r"\bintegration with|\bsync with", r"\bmobile|android|ios\b",
        r"\bai\b|\bllm|gpt", r"\bwindows|macos|linux\b"]
STOP = set("a an the to of and or in on for with is are be it this that i we you my our can "
           "could would should please add support allow option new feature way when from as "
           "by at not no have has do does if so like want need also more use using into than "
           "then there their its which what how any all some just only get set make".split())


def text(title: str, body: str) -> str:
    return (title + "\n" + body)[:2000]


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def fitted(x: np.ndarray, y: np.ndarray, c: float) -> tuple[StandardScaler, LogisticRegression]:
    scale = StandardScaler().fit(x)
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
    return scale, model.fit(scale.transform(x), y)


def learned(x: np.ndarray, y: np.ndarray, products: np.ndarray, held: np.ndarray,
            c: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """(leave-products-out on the training products, held-out products): accuracy, macro-F1."""
    train = ~held
    names = sorted(set(products[train]))
    predicted = np.full(len(y), -1)
    for fold in (names[i::6] for i in range(6)):
        test = np.isin(products, fold) & train
        scale, model = fitted(x[train & ~test], y[train & ~test], c)
        predicted[test] = model.predict(scale.transform(x[test]))
    scale, model = fitted(x[train], y[train], c)
    out = model.predict(scale.transform(x[held]))
    return ((accuracy_score(y[train], predicted[train]),
             f1_score(y[train], predicted[train], average="macro")),
            (accuracy_score(y[held], out), f1_score(y[held], out, average="macro")))


def probe_features(items, verdicts, shipped, vectors, held) -> None:
    y = np.array([LABELS.index(i.label) for i in items])
    products = np.array([i.product for i in items])
    names = list(verdicts[0].signals)
    signals = np.array([[v.signals[k] for k in names] for v in verdicts], dtype=float)
    cues = np.array([[1.0 if re.search(p, text(i.request.title, i.request.body).lower())
                      else 0.0 for p in CUES] for i in items])
    head = np.array([LABELS.index(label) for label in shipped])
    for split, mask in (("training products", ~held), ("held-out products", held)):
        print(f"  shipped head, {split}: {accuracy_score(y[mask], head[mask]):.3f} / "
              f"{f1_score(y[mask], head[mask], average='macro'):.3f}")
    for name, x, cs in (("12 signals", signals, (0.01, 0.1, 1.0)),
                        ("12 signals + cues", np.hstack([signals, cues]), (0.01, 0.1, 1.0)),
                        ("signals + cues + request vector",
                         np.hstack([signals, cues, vectors]), (0.001, 0.01, 0.1))):
        for c in cs:
            (a, f), (ha, hf) = learned(x, y, products, held, c)
            print(f"  {name:32} C={c:<6} leave-products-out {a:.3f} / {f:.3f}, "
                  f"held-out {ha:.3f} / {hf:.3f}")


def probe_prototypes(items, vectors, synthetic: Path, embedder) -> None:
    written = [json.loads(line) for path in sorted(synthetic.glob("*.jsonl"))
               for line in path.read_text().splitlines()]
    written_vectors = unit(embedder.encode([text(w["title"], w["body"]) for w in written]))
    by_product = collections.defaultdict(list)
    for n, w in enumerate(written):
        by_product[w["product"]].append(n)
    tested = [n for n, i in enumerate(items) if i.product in by_product]
    truth = [items[n].label for n in tested]
    print(f"  {len(written)} written requests; {len(tested)} real requests of their products; "
          f"majority class {accuracy_score(truth, ['core'] * len(truth)):.3f} / "
          f"{f1_score(truth, ['core'] * len(truth), average='macro'):.3f}")
    for k in (1, 3, 5, 10, 20):
        predicted = []
        for n in tested:
            candidates = by_product[items[n].product]
            sims = written_vectors[candidates] @ vectors[n]
            votes: collections.Counter[str] = collections.Counter()
            for t in np.argsort(-sims)[:k]:
                votes[written[candidates[t]]["label"]] += float(sims[t])
            predicted.append(votes.most_common(1)[0][0])
        print(f"  k={k:<3} {accuracy_score(truth, predicted):.3f} / "
              f"{f1_score(truth, predicted, average='macro'):.3f}")


def words(value: str) -> list[str]:
    return [w for w in re.findall(r"[a-z0-9_\-\.]+", value.lower())
            if w not in STOP and len(w) > 2]


def probe_coverage(corpus) -> None:
    df: collections.Counter[str] = collections.Counter()
    for item in corpus.items:
        df.update(set(words(item.request.title + " " + item.request.body)))
    n = len(corpus.items)
    rows: dict[str, list] = collections.defaultdict(list)
    for item in corpus.items:
        if item.rule_step not in (2, 6) or not item.deciding_anchor:
            continue
        positioning = positioning_for(corpus.products, item)
        anchor = next((f for f in positioning.features
                       if f.name.strip().lower() == item.deciding_anchor.strip().lower()), None)
        asked = words(item.request.title + " " + item.request.body)
        if anchor is None or not asked:
            continue
        weights = [math.log((n + 1) / (df[w] + 1)) + 1 for w in asked]
        in_anchor = set(words(anchor.name + " " + anchor.description))
        in_features = {w for f in positioning.features for w in words(f.name + " " + f.description)}
        rows["served"].append(item.rule_step == 2)
        rows["held"].append(item.product in corpus.heldout)
        rows["the deciding feature"].append(
            sum(x for w, x in zip(asked, weights, strict=True) if w in in_anchor) / sum(weights))
        rows["any feature"].append(
            sum(x for w, x in zip(asked, weights, strict=True) if w in in_features) / sum(weights))
        rows["the title, any feature"].append(
            float(np.mean([w in in_features for w in words(item.request.title)] or [0])))
    served, held = np.array(rows.pop("served")), np.array(rows.pop("held"))
    print(f"  {len(served)} requests decided at step 2 or 6 by a listed feature, "
          f"{served.sum()} of them 'already served'")
    for name, values in rows.items():
        v = np.array(values)
        print(f"  coverage by {name:24} AUC training {roc_auc_score(served[~held], v[~held]):.3f}"
              f", held-out {roc_auc_score(served[held], v[held]):.3f}")


def pair_rows(corpus, written: list[dict]) -> list[tuple[str, int, str, str, bool]]:
    """(product, step, anchor text, request text, real) for every pair of step 1, 2 or 6
    whose deciding anchor is a feature or a non-goal of the product's file."""
    rows = []
    for item in corpus.items:
        positioning = positioning_for(corpus.products, item)
        anchor = _anchor(positioning, item.rule_step, item.deciding_anchor)
        if anchor is not None:
            rows.append((item.product, item.rule_step, anchor,
                         text(item.request.title, item.request.body), True))
    steps = {"instance_of": 1, "served_by": 2, "extends": 6}
    for w in written:
        product = corpus.products.get(f"{w['product']}/{w['product_file']}")
        positioning = product and product.positioning
        step = steps.get(w.get("relation", ""))
        anchor = positioning and step and _anchor(positioning, step, w.get("anchor"))
        if anchor:
            rows.append((w["product"], step, anchor, text(w["title"], w["body"]), False))
    return rows


def _anchor(positioning, step: int, name: str | None) -> str | None:
    if step not in (1, 2, 6) or not name:
        return None
    pool = positioning.non_goals if step == 1 else positioning.features
    key = name.strip().lower()
    return next((a.text for a in pool if a.name.strip().lower() == key), None)


def probe_curve(corpus, synthetic: Path, embedder) -> None:
    written = [json.loads(line) for path in sorted(synthetic.glob("*.jsonl"))
               for line in path.read_text().splitlines() if line.strip()]
    rows = pair_rows(corpus, written)
    a = unit(embedder.encode([r[2] for r in rows]))
    q = unit(embedder.encode([r[3] for r in rows]))
    x = np.hstack([a * q, np.abs(a - q), (a * q).sum(1, keepdims=True)])
    product = np.array([r[0] for r in rows])
    step = np.array([r[1] for r in rows])
    real = np.array([r[4] for r in rows])
    held = np.isin(product, sorted(corpus.heldout))
    training = sorted(set(product[real & ~held]))
    folds = [training[k::6] for k in range(6)]

    def auc(fit: np.ndarray, test: np.ndarray, positive: int) -> float:
        model = LogisticRegression(C=0.01, class_weight="balanced", max_iter=3000)
        model.fit(x[fit], step[fit] == positive)
        return roc_auc_score(step[test] == positive, model.predict_proba(x[test])[:, 1])

    for positive, name in ((2, "already served (2) vs extends (6)"),
                           (1, "a non-goal's instance (1) vs extends (6)")):
        pair = np.isin(step, [positive, 6])
        test = pair & real & held
        print(f"  {name}: {int((pair & real & ~held & (step == positive)).sum())} / "
              f"{int((pair & real & ~held & (step == 6)).sum())} real training pairs, "
              f"{int((test & (step == positive)).sum())} / {int((test & (step == 6)).sum())} "
              f"held-out; cosine alone AUC {roc_auc_score(step[test] == positive, x[test, -1]):.3f}")
        for share in (0.25, 0.5, 1.0):
            held_aucs, lopo_aucs = [], []
            for seed in range(5 if share < 1 else 1):
                rng = np.random.default_rng(seed)
                chosen = set(rng.choice(training, max(2, round(len(training) * share)),
                                        replace=False))
                fit = pair & real & np.isin(product, sorted(chosen))
                held_aucs.append(auc(fit, test, positive))
                scores = []
                for fold in folds:  # leave products out: train on the chosen share of the rest
                    out = np.isin(product, fold)
                    scores.append(auc(fit & ~out, pair & real & out, positive))
                lopo_aucs.append(float(np.mean(scores)))
            print(f"    real pairs of {share:4.0%} of the training products: AUC held-out "
                  f"{np.mean(held_aucs):.3f} (sd {np.std(held_aucs):.3f}), leaving products "
                  f"out {np.mean(lopo_aucs):.3f}")
        fit = pair & ((real & ~held) | ~real)
        print(f"    real + {int((pair & ~real).sum())} written pairs: AUC held-out "
              f"{auc(fit, test, positive):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("synthetic", type=Path)
    args = parser.parse_args()
    corpus = load_corpus(args.corpus)
    embedder = make_embedder(None, None)
    scored = score(corpus.items, corpus.products, embedder)
    items = scored.items
    vectors = unit(embedder.encode([text(i.request.title, i.request.body) for i in items]))
    held = np.array([i.product in corpus.heldout for i in items])
    head = Calibration.load(Path(__file__).resolve().parent.parent / DEFAULT_CALIBRATION)
    shipped = [scored.relabel(n, head) for n in range(len(items))]
    print("1. features, learned (accuracy / macro-F1)")
    probe_features(items, scored.verdicts, shipped, vectors, held)
    print("2. the product's written requests as prototypes (accuracy / macro-F1)")
    probe_prototypes(items, vectors, args.synthetic, embedder)
    print("3. lexical coverage: 'already served' against 'extends'")
    probe_coverage(corpus)
    print("4. a learning curve in real (request, anchor) pairs (AUC)")
    probe_curve(corpus, args.synthetic, embedder)


if __name__ == "__main__":
    main()

"""How often the nearest earlier decided request of the same product predicts a request's
outcome: the measurement behind the precedent threshold (scopeguard/rules.py; README,
"Precedents"). Only earlier requests count (by creation date, within each product).

    python models/experiments/precedents.py [--db scopeguard.db]
"""

import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from scopeguard.clean import prepare
from scopeguard.corpus import load_corpus
from scopeguard.runtime import make_embedder

DECIDED = {"accepted": "accepted", "declined": "declined", "built_later": "accepted",
           "general_form_built": "accepted"}

corpus = load_corpus(Path(__file__).resolve().parent.parent / "data" / "corpus")
embedder = make_embedder(None, sys.argv[sys.argv.index("--db") + 1] if "--db" in sys.argv
                         else None)
items = corpus.items
vectors = embedder.encode([" ".join(prepare(i.request.title, i.request.body).chunks)[:2000]
                           for i in items])
by_product: dict[str, list[int]] = defaultdict(list)
for k, item in enumerate(items):
    by_product[item.product].append(k)

rows = []  # (cosine, precedent's decision, this one's decision or None, this one's label)
for ks in by_product.values():
    ks.sort(key=lambda k: (items[k].request.created_at, items[k].request.id))
    for pos, k in enumerate(ks):
        earlier = [j for j in ks[:pos] if items[j].outcome in DECIDED]
        if not earlier:
            continue
        sims = vectors[earlier] @ vectors[k]
        j = earlier[int(np.argmax(sims))]
        rows.append((float(sims.max()), DECIDED[items[j].outcome],
                     DECIDED.get(items[k].outcome), items[k].label))

known_all = [r for r in rows if r[2]]
print(f"{len(rows)} requests with an earlier decided one; declined among those with a known "
      f"outcome: {np.mean([r[2] == 'declined' for r in known_all]):.2f}")
for t in (0.5, 0.6, 0.65, 0.7, 0.75, 0.8):
    chosen = [r for r in rows if r[0] >= t]
    known = [r for r in chosen if r[2]]
    declined = [r for r in known if r[1] == "declined"]
    agree = np.mean([r[1] == r[2] for r in known]) if known else float("nan")
    precise = np.mean([r[2] == "declined" for r in declined]) if declined else float("nan")
    label = (np.mean([r[3] == "one_off" for r in chosen if r[1] == "declined"])
             if declined else float("nan"))
    print(f"cosine >= {t}: coverage {len(chosen) / len(rows):.1%}; outcome agreement "
          f"{agree:.2f} (n={len(known)}); a declined precedent right {precise:.2f} "
          f"(n={len(declined)}); request-time label one_off when declined {label:.2f}")

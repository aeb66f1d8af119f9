"""The corpus's figures for DATASHEET.md, computed from the data: python models/data/corpus_stats.py.

Prints Markdown tables: requests per product (kind, years, labels, held out), labels by
rule step, the readers' agreement (overall, by kind, by label), and the outcome mix
against the request-time labels.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from scopeguard.corpus import OUTCOMES, cohen_kappa, leaks, load_corpus, named_in_file
from scopeguard.positioning import LABELS

CORPUS = Path(__file__).resolve().parent / "corpus"


def main(directory: Path = CORPUS) -> None:
    corpus = load_corpus(directory)
    items = corpus.items
    kinds = corpus.kinds
    print(f"{len(items)} requests of {len(kinds)} products "
          f"({sum(k == 'business' for k in kinds.values())} business, "
          f"{sum(k != 'business' for k in kinds.values())} other); "
          f"product files: {len(corpus.products)}; held out: {', '.join(corpus.heldout)}; "
          f"leaks: {len(leaks(corpus.items, corpus.products, corpus.as_of))}; shipped_as "
          f"naming an area already in the request's file: {len(named_in_file(corpus))}\n")
    print("| product | kind | held out | requests | years | core | generalizable | one_off |")
    print("|---|---|---|---|---|---|---|---|")
    for slug in sorted(kinds):
        mine = [i for i in items if i.product == slug]
        years = sorted({i.product_file.split("/")[1] for i in mine})
        c = Counter(i.label for i in mine)
        print(f"| {slug} | {kinds[slug]} | {'yes' if slug in corpus.heldout else ''} | "
              f"{len(mine)} | {years[0]}-{years[-1]} | {c['core']} | {c['generalizable']} | "
              f"{c['one_off']} |")
    total = Counter(i.label for i in items)
    print(f"| **all** | | | **{len(items)}** | | {total['core']} | {total['generalizable']} | "
          f"{total['one_off']} |\n")
    print("| rule step | requests | label |")
    print("|---|---|---|")
    names = {1: "stated non-goal", 2: "already served", 3: "another product's job",
             4: "one requester's situation", 5: "generalizable (the general form)",
             6: "core"}
    for step, n in sorted(Counter(i.rule_step for i in items).items()):
        labels = Counter(i.label for i in items if i.rule_step == step)
        print(f"| {step} {names.get(step, '')} | {n} | "
              f"{', '.join(f'{k} {v}' for k, v in labels.items())} |")
    print("\n| readers A vs B | requests | agreement | Cohen's kappa |")
    print("|---|---|---|---|")
    groups = {"all": items,
              "business products": [i for i in items if kinds[i.product] == "business"],
              "other products": [i for i in items if kinds[i.product] != "business"]}
    for name, group in groups.items():
        pairs = [(i.readers[0].label, i.readers[1].label) for i in group if len(i.readers) >= 2]
        if pairs:
            a, b = zip(*pairs, strict=True)
            agree = sum(x == y for x, y in pairs) / len(pairs)
            print(f"| {name} | {len(pairs)} | {agree:.3f} | {cohen_kappa(a, b):.3f} |")
    settled = sum(len(i.readers) >= 3 for i in items)
    print(f"\n{settled} requests were settled by a third blind reading (C).\n")
    print("| outcome \\ request-time label | " + " | ".join(LABELS) + " | all |")
    print("|---|" + "---|" * (len(LABELS) + 1))
    for outcome in OUTCOMES:
        row = Counter(i.label for i in items if i.outcome == outcome)
        print(f"| {outcome} | " + " | ".join(str(row[k]) for k in LABELS)
              + f" | {sum(row.values())} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else CORPUS)

"""Exact blocked kNN against an HNSW index (faiss) on real request vectors: recall and time.

A backlog of N requests is made from the corpus's real request texts and the synthetic
set's, each repeated as paraphrase-like variants (words dropped, sentences reordered,
cut short, a requester's preamble), so it has the clusters of a real backlog rather than
i.i.d. random vectors (on which HNSW recall is known to collapse). Every text is embedded
with the default backend (ONNX fp32). For each size, in this process:

- exact: ``engine.neighbours_above`` (what audits use), its time;
- HNSW (``scopeguard.knn.hnsw_neighbours``, what audits run: faiss ``IndexHNSWFlat``,
  inner product, M=32, efConstruction=80, efSearch=128): build + search time, and
  recall of the exact neighbour lists (pairs at cosine >=
  ``similar``, at most 50 per request) and recall@10.

Usage: .venv-train/bin/python bench/knn.py [--sizes 20000,50000,100000] (needs faiss-cpu).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PREAMBLES = ["", "", "Hi team, ", "Feature request: ", "We would love this: ", "Please ",
             "Our company needs this. ", "Not sure if this exists, but "]


def base_texts() -> list[str]:
    texts = []
    for line in (ROOT / "models" / "data" / "corpus" / "requests.jsonl").read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            texts.append(f"{row['title']}. {row.get('body') or ''}"[:800])
    for path in sorted((ROOT / "models" / "data" / "synthetic").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                text = row.get("text") or f"{row.get('title', '')}. {row.get('body', '')}"
                texts.append(str(text)[:800])
    return [t for t in texts if len(t) > 20]


def variant(text: str, rng: random.Random) -> str:
    words = text.split()
    if len(words) > 6 and rng.random() < 0.7:  # drop 5-25% of the words
        keep = 1 - rng.uniform(0.05, 0.25)
        words = [w for w in words if rng.random() < keep] or words
    text = " ".join(words)
    sentences = [s for s in text.split(". ") if s]
    if len(sentences) > 2 and rng.random() < 0.4:
        rng.shuffle(sentences)
        text = ". ".join(sentences)
    if rng.random() < 0.3:
        text = text[:max(40, int(len(text) * rng.uniform(0.4, 0.9)))]
    return rng.choice(PREAMBLES) + text


def backlog(n: int, seed: int = 5) -> list[str]:
    rng = random.Random(seed)
    bases = base_texts()
    out = list(bases[:n])
    while len(out) < n:
        out.append(variant(rng.choice(bases), rng))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20000,50000,100000")
    parser.add_argument("--similar", type=float, default=0.62)
    args = parser.parse_args()
    from scopeguard.engine import neighbours_above
    from scopeguard.knn import hnsw_neighbours
    from scopeguard.onnx_embed import OnnxEmbedder

    sizes = [int(s) for s in args.sizes.split(",")]
    texts = backlog(max(sizes))
    started = time.perf_counter()
    vectors = OnnxEmbedder().encode(texts)
    print(f"embedded {len(texts):,} texts in {time.perf_counter() - started:.0f} s "
          f"({len(base_texts()):,} real and synthetic bases, the rest variants)")
    print(f"{'n':>8} {'exact s':>8} {'hnsw s':>8} {'speed':>6} "
          f"{'pairs':>9} {'recall':>7} {'recall@10':>9}")
    results = []
    for n in sizes:
        v = np.ascontiguousarray(vectors[:n])
        t0 = time.perf_counter()
        exact = neighbours_above(v, args.similar)
        t_exact = time.perf_counter() - t0
        t1 = time.perf_counter()
        approx = hnsw_neighbours(v, args.similar)  # what audits run: build and search
        t_hnsw = time.perf_counter() - t1
        pairs = sum(len(e) for e in exact)
        found = sum(len({j for j, _ in e} & {j for j, _ in a})
                    for e, a in zip(exact, approx, strict=True))
        top = [({j for j, _ in e[:10]}, {j for j, _ in a[:10]}) for e, a in
               zip(exact, approx, strict=True)]
        at10 = sum(len(e & a) for e, a in top) / max(1, sum(len(e) for e, _ in top))
        recall = found / max(1, pairs)
        results.append({"n": n, "exact_s": t_exact, "hnsw_s": t_hnsw,
                        "pairs": pairs, "recall": recall, "recall_at_10": at10})
        print(f"{n:>8,} {t_exact:8.1f} {t_hnsw:8.1f} "
              f"{t_exact / t_hnsw:5.2f}x {pairs:>9,} {recall:7.4f} {at10:9.4f}", flush=True)
    out = ROOT / "out" / "bench-knn.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""A million-request audit: `scopeguard audit` on a backlog made from real request texts.

The backlog: the corpus's real requests and the written (synthetic) set's, and
paraphrase-like variants of them (``bench/knn.py``: words dropped, sentences reordered, cut
short, a requester's preamble), so it has the clusters of a real backlog; each request is
its text's first sentence as the title and the next 240 characters as the body (the short
end of real requests: a whole real body is several times longer to embed), with one of
5,003 customers and a date over three years. Then, in a fresh process, the command itself
(the default backend, the embedding cache and memo in a new file, the JSON report written
to a file), with its wall time and peak memory (the child's maximum RSS), and:

- the report's own statement of the neighbour search (the HNSW index above 50,000
  requests, with the recall bench/knn.py measured at 100,000);
- the recall **measured at this size**: for a random sample of requests, their exact
  neighbour lists (cosine >= ``similar``, at most 50, against every request's vector) set
  against the lists the audit used (both read from the memo), with a 95% interval.

Usage: .venv/bin/python bench/million.py [--size 1000000] [--sample 2000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "scopeguard.yml"
sys.path.insert(0, str(ROOT / "bench"))


def write_backlog(path: Path, n: int, seed: int = 11) -> None:
    from knn import backlog  # bench/knn.py: real texts and their variants

    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as out:
        for i, text in enumerate(backlog(n, seed)):
            cut = text.find(". ")
            title = text[:cut] if 10 <= cut <= 120 else text[:80]
            body = text[len(title):].lstrip(". ")[:240]
            out.write(json.dumps({
                "id": f"M-{i}", "title": title, "body": body,
                "customer": f"Customer {rng.randrange(5003)}",
                "created_at": f"{2023 + i % 3}-{1 + rng.randrange(12):02d}-"
                              f"{1 + rng.randrange(28):02d}"}, ensure_ascii=False) + "\n")


def audit(backlog: Path, db: Path, report: Path) -> dict:
    cmd = [str(Path(sys.executable).parent / "scopeguard"), "audit", "-c", str(CONFIG), "--db", str(db),
           "--from-file", str(backlog), "--format", "json", "-o", str(report), "--quiet"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"scopeguard audit failed ({done.returncode}): {done.stderr[-2000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"seconds": round(seconds, 1), "peak_rss_mb": round(max(peak, before) / 1024)}


def report_head(report: Path) -> dict:
    """The report's fields before its request list (read without loading the whole file)."""
    head = []
    with open(report, encoding="utf-8") as f:
        for line in f:
            if line.startswith('  "requests"'):
                break
            head.append(line)
    text = "".join(head).rstrip().rstrip(",") + "\n}"
    return json.loads(text)


def measured_recall(db: Path, sample: int, similar: float, limit: int = 50,
                    seed: int = 3) -> dict:
    """Recall of the audit's neighbour lists against exact ones, for ``sample`` requests."""
    conn = sqlite3.connect(db)
    context, members = conn.execute("SELECT context, request_keys FROM memo_members").fetchone()
    keys = members.split("\n")
    position = {k: i for i, k in enumerate(keys)}
    vectors = np.zeros((len(keys), 0), np.float32)
    for key, blob in conn.execute("SELECT request_key, vector FROM memo_means"):
        if key in position:
            row = np.frombuffer(blob, np.float32)
            if not vectors.shape[1]:
                vectors = np.zeros((len(keys), len(row)), np.float32)
            vectors[position[key]] = row
    rng = random.Random(seed)
    chosen = rng.sample(range(len(keys)), min(sample, len(keys)))
    found = kept = 0
    at10 = at10_found = 0
    for start in range(0, len(chosen), 256):
        rows = chosen[start:start + 256]
        sims = vectors[rows] @ vectors.T
        for r, i in enumerate(rows):
            sims[r, i] = -1.0
            above = np.flatnonzero(sims[r] >= similar)
            exact = above[np.argsort(-sims[r, above], kind="stable")][:limit]
            (stored,) = conn.execute("SELECT neighbours FROM memo_neighbours WHERE context = ? "
                                     "AND request_key = ?", (context, keys[i])).fetchone()
            listed = {position[k] for k, _ in json.loads(stored) if k in position}
            exact_set = {int(j) for j in exact}
            kept += len(exact_set)
            found += len(exact_set & listed)
            top = {int(j) for j in exact[:10]}
            at10 += len(top)
            at10_found += len(top & listed)
    conn.close()
    recall = found / kept if kept else 1.0
    half = 1.96 * math.sqrt(recall * (1 - recall) / kept) if kept else 0.0
    return {"sampled_requests": len(chosen), "exact_pairs": kept, "recall": round(recall, 4),
            "recall_95ci": [round(max(0.0, recall - half), 4), round(min(1.0, recall + half), 4)],
            "recall_at_10": round(at10_found / at10, 4) if at10 else 1.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=2000)
    parser.add_argument("--keep", help="work in this directory and keep it (default: a "
                                       "temporary one, removed)")
    args = parser.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="scopeguard-million-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        backlog, db, report = work / "backlog.jsonl", work / "audit.db", work / "report.json"
        t0 = time.perf_counter()
        write_backlog(backlog, args.size)
        made = time.perf_counter() - t0
        print(f"backlog: {args.size:,} requests ({backlog.stat().st_size / 1e6:,.0f} MB) "
              f"made in {made:.0f} s", flush=True)
        first = audit(backlog, db, report)
        head = report_head(report)
        print(f"first audit: {first['seconds']:,.0f} s ({first['seconds'] / 3600:.2f} h), "
              f"peak RSS {first['peak_rss_mb']:,} MB; report {report.stat().st_size / 1e6:,.0f}"
              f" MB; {head['summary']}", flush=True)
        print(f"neighbours: {head['neighbour_search']}", flush=True)
        from scopeguard.positioning import load_positioning
        from scopeguard.rules import Rules

        similar = Rules.from_thresholds(load_positioning(CONFIG).thresholds).similar
        t1 = time.perf_counter()
        recall = measured_recall(db, args.sample, similar)
        print(f"recall measured at this size ({recall['sampled_requests']:,} requests sampled, "
              f"{recall['exact_pairs']:,} exact pairs): {recall['recall']:.4f} "
              f"[{recall['recall_95ci'][0]:.4f}, {recall['recall_95ci'][1]:.4f}], recall@10 "
              f"{recall['recall_at_10']:.4f} ({time.perf_counter() - t1:.0f} s)", flush=True)
        print(json.dumps({"size": args.size, "first": first, "recall": recall,
                          "neighbour_search": head["neighbour_search"],
                          "summary": head["summary"]}, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Benchmark the backlog audit on synthetic backlogs of 1k, 10k and 100k requests.

For each size, in a fresh process (so peak memory is that size's own):
- scopeguard's audit (default backend, ONNX Runtime): embed throughput (requests/s,
  through clean + chunk + cache), kNN time, total audit time, peak RSS;
- the baseline: a plain sentence-transformers ``encode`` loop (torch) over the same texts
  (requests/s), measured in the same process (when the train extra is installed);
- a second audit of the same backlog (embeddings, neighbour lists and verdicts from the
  memo: only the report is made), and a third after 1% of the requests changed;
- ``scopeguard audit`` itself, twice on the same backlog and cache: the second run finds
  nothing changed and writes the stored report (the memo's stored report parts).

Usage: .venv/bin/python bench/audit.py [--sizes 1000,10000,100000] [--model hashing]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "scopeguard.yml"

ACTIONS = ["Send", "Let owners", "Allow staff to", "Add an option to", "Show", "Export",
           "Import", "Remind owners to", "Let vets", "Automatically"]
OBJECTS = ["reminders by WhatsApp", "a waitlist for cancelled slots", "recurring booster visits",
           "the vet rota for next month", "no-show statistics per vet", "appointment types",
           "the booking widget in Welsh", "a calendar feed for Outlook", "invoices for each visit",
           "stock levels of vaccines", "lab results by text", "a second clinic location",
           "buffer time after surgery", "owner contact preferences", "a read-only diary view"]
DETAILS = ["because our receptionist spends hours on the phone",
           "so that fewer owners forget their appointment",
           "as several clinics in our group have asked",
           "since the current export misses this",
           "which would save us about ten calls a day",
           "for our head office and the franchise board",
           "because owners keep asking for it at the desk"]


def synthetic(n: int, seed: int = 7) -> list[dict]:
    """n requests; about a third repeat one of 500 base asks in other words (clusters)."""
    rng = random.Random(seed)
    base = [(rng.choice(ACTIONS), rng.choice(OBJECTS)) for _ in range(500)]
    out = []
    for i in range(n):
        if rng.random() < 0.35:
            action, obj = base[rng.randrange(len(base))]
        else:
            action, obj = rng.choice(ACTIONS), rng.choice(OBJECTS)
        detail = rng.choice(DETAILS)
        out.append({
            "id": f"S-{i}", "title": f"{action} {obj}",
            "body": f"{action} {obj} {detail}. Request number {i} from clinic {i % 997}.",
            "author": f"user{i % 3001}", "customer": f"Clinic {i % 997}",
            "created_at": f"{2024 + (i % 3)}-{1 + i % 12:02d}-15"})
    return out


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(size: int, model: str | None) -> dict:
    """One size, in this process: the audit, the re-audit, then the baseline loop."""
    from click.testing import CliRunner

    from scopeguard.audit import build_report
    from scopeguard.audit_render import render_report
    from scopeguard.backlog import request_from_dict
    from scopeguard.cli import cli
    from scopeguard.runtime import open_scopeguard

    items = [request_from_dict(d, "bench") for d in synthetic(size)]
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "bench.db")
        guard = open_scopeguard(CONFIG, db=db, model=model)
        guard.embedder.encode(["warm up"])  # model load is not part of the audit
        t0 = time.perf_counter()
        requests = guard.prepare(items)
        docs, vecs = guard.embed(requests)
        t_embed = time.perf_counter() - t0
        import numpy as np

        from scopeguard.engine import neighbours_above

        t1 = time.perf_counter()
        means = np.vstack([v.mean for v in vecs]).astype(np.float32)
        neighbours = neighbours_above(means, guard.rules.similar)
        t_knn = time.perf_counter() - t1
        from dataclasses import replace

        from scopeguard.memo import AnalysisMemo

        t2 = time.perf_counter()
        # the rest of a first audit: vectors from the cache, every list and verdict computed
        analysis = guard.analyse(items, memo=AnalysisMemo(db))
        report = build_report(analysis, guard.index, guard.rules, "bench")
        render_report(report, "json")
        t_rest = time.perf_counter() - t2
        total = t_embed + t_rest  # first audit = embedding + (kNN, classify, report)
        t4 = time.perf_counter()
        again = guard.analyse(items, memo=AnalysisMemo(db))  # unchanged: the memo answers
        build_report(again, guard.index, guard.rules, "bench")
        t_cached = time.perf_counter() - t4
        changed = list(items)
        for k in range(0, len(changed), 100):  # 1%: edited bodies, so embedded again
            changed[k] = replace(changed[k], body=changed[k].body + " (edited)")
        memo = AnalysisMemo(db)
        t5 = time.perf_counter()
        build_report(guard.analyse(changed, memo=memo), guard.index, guard.rules, "bench")
        t_changed = time.perf_counter() - t5
        # The command itself on the same backlog: the first run stores its report, and a
        # second one of the unchanged backlog writes it again without analysing anything.
        backlog = Path(tmp) / "backlog.jsonl"
        backlog.write_text("".join(json.dumps(d) + "\n" for d in synthetic(size)))
        cli_args = ["audit", "-c", str(CONFIG), "--db", db, "--from-file", str(backlog),
                    "--format", "json", "-o", str(Path(tmp) / "report.json"), "--quiet"]
        if model:
            cli_args += ["--model", model]
        runner = CliRunner()
        t6 = time.perf_counter()
        first_cli = runner.invoke(cli, cli_args)
        t_cli_store = time.perf_counter() - t6
        t7 = time.perf_counter()
        second_cli = runner.invoke(cli, cli_args)
        t_cli_unchanged = time.perf_counter() - t7
        assert first_cli.exit_code == 0 and second_cli.exit_code == 0, second_cli.output
        texts = [c for d in docs for c in d.chunks]
        t3 = time.perf_counter()
        try:
            from sentence_transformers import SentenceTransformer

            from scopeguard.embed import bundled_model_path

            model_obj = SentenceTransformer(str(bundled_model_path()), device="cpu")
            t3 = time.perf_counter()
            for start in range(0, len(texts), 256):
                model_obj.encode(texts[start:start + 256], batch_size=32,
                                 normalize_embeddings=True, show_progress_bar=False)
        except ImportError:  # no train extra: the default backend's own loop
            guard.embedder.inner.encode(texts)
        t_base = time.perf_counter() - t3
        return {
            "size": size, "texts": len(texts), "model": guard.embedder.model_id,
            "embed_s": round(t_embed, 2), "embed_rps": round(size / t_embed, 1),
            "knn_s": round(t_knn, 2), "neighbour_pairs": sum(len(n) for n in neighbours),
            "clusters": len(report.clusters), "audit_s": round(total, 2),
            "cached_audit_s": round(t_cached, 2), "changed_1pct_audit_s": round(t_changed, 2),
            "cli_memo_audit_s": round(t_cli_store, 2),
            "cli_unchanged_audit_s": round(t_cli_unchanged, 2),
            "changed_rows": memo.computed_rows, "changed_verdicts": memo.computed_verdicts,
            "baseline_encode_s": round(t_base, 2),
            "baseline_rps": round(size / t_base, 1), "peak_rss_mb": round(peak_rss_mb()),
            "summary": report.summary,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--model", default=None, help="default: the bundled model")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child process mode
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.model)))
        return
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        cmd = [sys.executable, __file__, "--one", str(size)]
        if args.model:
            cmd += ["--model", args.model]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                             env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{size:>7,} requests: embed {row['embed_rps']:8.1f} req/s "
              f"(plain encode loop {row['baseline_rps']:8.1f} req/s, ratio "
              f"{row['embed_rps'] / row['baseline_rps']:.2f}x) | kNN {row['knn_s']:7.2f} s | "
              f"audit {row['audit_s']:8.1f} s | unchanged re-audit {row['cached_audit_s']:7.1f} s "
              f"({row['audit_s'] / row['cached_audit_s']:.0f}x faster; the command with its "
              f"stored report {row['cli_unchanged_audit_s']:.2f} s, "
              f"{row['audit_s'] / max(row['cli_unchanged_audit_s'], 0.01):.0f}x) | 1% changed "
              f"{row['changed_1pct_audit_s']:7.1f} s | "
              f"peak RSS {row['peak_rss_mb']:,} MB", flush=True)
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

"""Benchmark ``scopeguard serve`` replicas on one PostgreSQL database against the SQLite
single process, measured in the same run on this machine:

- processed events/s, end to end: a burst of webhooks for new issues, posted by 200
  concurrent connections spread over the replicas, from the first post until every event
  is done (read the issue, classify, label, comment in the fake Jira);
- accept p50/p99 under that burst (the 202 answers' latency).

Rows: SQLite (``--queue``, one process: the baseline), then PostgreSQL with 1, 2 and 3
replicas (``--store``), each with ``--workers`` worker processes. The PostgreSQL server is a
throwaway cluster (tests/pg.py) with fsync on, as SQLite's durable commits; the fake Jira
runs in this process (tests/fake_jira.py).

Usage: .venv/bin/python bench/replicas.py [--burst 600] [--workers 1] [--model hashing|real]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fake_jira import FakeJira, ServiceProcess  # noqa: E402
from pg import Cluster  # noqa: E402
from webhook import ASKS, SECRET, concurrent, percentile, signed  # noqa: E402


def run(label: str, replicas: list[ServiceProcess], keys: list[str], depth) -> tuple:
    """(events/s, accept p50 ms, accept p99 ms) of one burst over ``replicas``."""
    for service in replicas:
        service.start(timeout=180)
    try:
        latencies: list[float] = []
        started = time.perf_counter()
        concurrent([s.url + "/webhooks/jira" for s in replicas], signed(label, keys),
                   clients=200, latencies=latencies)
        replicas[0].wait(lambda: depth() == 0, timeout=1800, what="the burst to be processed")
        rate = len(keys) / (time.perf_counter() - started)
    finally:
        for service in replicas:
            service.stop()
    return rate, percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--burst", type=int, default=600, help="new issues per run")
    parser.add_argument("--workers", type=int, default=1, help="worker processes per replica")
    parser.add_argument("--model", default="hashing",
                        help="'hashing' (no model) or 'real' (the bundled all-MiniLM-L6-v2)")
    args = parser.parse_args()
    import psycopg

    tmp = Path(tempfile.mkdtemp(prefix="scopeguard-bench-replicas-"))
    env = {"SCOPEGUARD_WEBHOOK_SECRET": SECRET}
    if args.model != "real":
        env["SCOPEGUARD_MODEL"] = args.model
    runs = [("sqlite", 1), ("postgresql", 1), ("postgresql", 2), ("postgresql", 3)]
    jira = FakeJira(flavour="server", pat="bench-pat", record=False).start()
    keys = [f"PAW-{i + 1}" for i in range(args.burst * len(runs))]
    for i, key in enumerate(keys):
        ask = ASKS[i % len(ASKS)]
        jira.add_issue(key, f"{ask} ({i})", f"{ask}, please. Clinic: Clinic {i % 41}.")
    cluster = Cluster(durable=True).start()  # fsync on, as the SQLite file's commits
    rows = []
    try:
        for n, (store, count) in enumerate(runs):
            burst = keys[n * args.burst:(n + 1) * args.burst]
            extra = {**env}
            if store == "postgresql":
                url = cluster.create_database(f"bench_{n}")
                extra["SCOPEGUARD_STORE"] = url

                def depth(url: str = url) -> int:
                    with psycopg.connect(url) as conn:
                        return conn.execute("SELECT count(*) FROM events WHERE state IN "
                                            "('queued', 'leased')").fetchone()[0]
            else:
                depth = None
            replicas = []
            for r in range(count):
                where = tmp / f"run-{n}-replica-{r}"
                where.mkdir()
                replicas.append(ServiceProcess(where, jira, ROOT / "examples" / "scopeguard.yml",
                                               extra, args=("--workers", str(args.workers),
                                                            "--log-level", "warning")))
            if depth is None:
                def depth(service: ServiceProcess = replicas[0]) -> float:
                    return service.metrics()["scopeguard_queue_depth"]
            rows.append((f"{store}, {count} replica{'s' if count > 1 else ''}",
                         *run(f"r{n}", replicas, burst, depth)))
            print(f"{rows[-1][0]}: done", file=sys.stderr)
    finally:
        cluster.remove()
        jira.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"scopeguard serve replicas: bursts of {args.burst} new issues from 200 connections, "
          f"{args.workers} worker process(es) per replica, model {args.model}")
    print(f"\n{'':26}{'events/s':>10}{'vs sqlite':>11}{'accept p50 ms':>15}{'accept p99 ms':>15}")
    base = rows[0][1]
    for name, rate, p50, p99 in rows:
        print(f"{name:26}{rate:10.1f}{rate / base:10.2f}x{p50:15.1f}{p99:15.1f}")
    print("\nbaseline: the SQLite queue file, one scopeguard serve process (the default). "
          "Every process shares this machine's cores with PostgreSQL and the fake Jira.")


if __name__ == "__main__":
    main()

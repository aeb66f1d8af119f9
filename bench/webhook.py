"""Benchmark the Jira webhook service on this machine: acceptance latency and processing
throughput of a real ``scopeguard serve`` (uvicorn subprocess) against a fake Jira REST
server (tests/fake_jira.py, in this process), each next to a baseline measured in the
same run:

- acceptance: p50/p99 latency of one client posting signed webhooks one after another,
  and webhooks/s with 16 concurrent clients; baseline: a bare Starlette endpoint in its
  own uvicorn process that reads the body and answers 202 (no auth, no queue, no worker);
- processing: events/s from the first webhook of a burst of new issues to an empty
  queue; baseline: the same Jira calls per issue (read the issue, list comments, set the
  label, post the comment) made directly from one thread, without queue or classifier.

- acceptance while busy: p50/p99 of one client posting webhooks one after another while
  the worker classifies the burst (200 connections' worth of events), against the idle
  figures of the same run.
- bursts sent by wrk (a C load generator, Debian's ``wrk``; skipped when it is not on
  PATH): ``--wrk-burst`` webhooks (200: one per connection) through 200 connections from
  one thread, so the client takes a sliver of a core instead of the Python client's 200
  threads, which on 2 cores compete with the server and its worker and dominate the
  Python figures. ``--rounds`` bursts each, the bare endpoint and the service taking
  turns while the worker classifies what the earlier bursts brought; the medians, and
  how many bursts had a p99 under 50 ms. Baseline: the bare endpoint.

Usage: .venv/bin/python bench/webhook.py [--n 1000] [--burst 500] [--workers 1]
       [--acceptors 1] [--model hashing|real] [--backend onnx|onnx-int8|torch] [--wrk-burst 200]
       [--rounds 7] [--http auto|httptools|h11] [--jira-nice 0]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fake_jira import FakeJira, ServiceProcess, free_port, issue_event  # noqa: E402
from scopeguard.integrations.service.auth import sign  # noqa: E402

SECRET = "bench-secret-4f1e2d3c"
ASKS = ["Send reminders by WhatsApp", "Add a waitlist for cancelled slots",
        "Book recurring booster visits", "Sync with our in-house lab system",
        "Export the vet rota to our accounting software", "Show no-show statistics per vet"]

BASELINE_APP = """
import sys, uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

async def hook(request):
    await request.body()
    return JSONResponse({"status": "queued"}, status_code=202)

app = Starlette(routes=[Route("/webhooks/jira", hook, methods=["POST"])])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def sequential(url: str, bodies: list[tuple[bytes, dict[str, str]]]) -> list[float]:
    import httpx

    times = []
    with httpx.Client(timeout=30) as client:
        for body, headers in bodies:
            started = time.perf_counter()
            response = client.post(url, content=body, headers=headers)
            times.append(time.perf_counter() - started)
            assert response.status_code in (200, 202), response.text
    return times


def concurrent(url: str | list[str], bodies: list[tuple[bytes, dict[str, str]]],
               clients: int = 16, latencies: list[float] | None = None) -> float:
    """Webhooks/s from ``clients`` concurrent connections; each answer's latency is added
    to ``latencies`` when given. Several URLs (replicas) take the bodies in turn."""
    import httpx

    local = threading.local()
    opened: list[httpx.Client] = []
    urls = [url] if isinstance(url, str) else url

    def send(indexed: tuple[int, tuple[bytes, dict[str, str]]]) -> None:
        n, item = indexed
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=60)
            opened.append(local.client)
        started = time.perf_counter()
        response = local.client.post(urls[n % len(urls)], content=item[0], headers=item[1])
        if latencies is not None:
            latencies.append(time.perf_counter() - started)
        assert response.status_code in (200, 202), response.text

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(send, enumerate(bodies)))
    elapsed = time.perf_counter() - started
    for client in opened:
        client.close()
    return len(bodies) / elapsed


WRK_SCRIPT = """
local bodies = {%(bodies)s}
local signatures = {%(signatures)s}
local ids = {%(ids)s}
local total = %(total)d
local sent, answered = 0, 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

request = function()
  sent = sent + 1
  local n = ((sent - 1) %% #bodies) + 1
  wrk.headers["X-Hub-Signature"] = signatures[n]
  wrk.headers["X-Atlassian-Webhook-Identifier"] = ids[n]
  return wrk.format(nil, nil, nil, bodies[n])
end

response = function(status, headers, body)
  answered = answered + 1
  if answered == total then
    io.write("BURST DONE\\n")
    io.flush()
    wrk.thread:stop()
  end
end

done = function(summary, latency, requests)
  io.write(string.format("WRK %%d %%d %%d %%d %%.3f %%.3f %%.3f\\n", summary.requests,
    summary.errors.status, summary.errors.connect + summary.errors.read +
    summary.errors.write + summary.errors.timeout, summary.duration,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
"""


def wrk_burst(url: str, bodies: list[tuple[bytes, dict[str, str]]], connections: int = 200,
              ) -> dict[str, float] | None:
    """Send ``bodies`` through ``connections`` connections of one wrk thread; its
    latency percentiles in ms (None when wrk is not installed). Answers past the last body
    (connections still in flight when wrk stops) are not counted."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return None

    def lua(values: list[bytes]) -> str:  # every byte as a decimal escape: exact for any
        return ", ".join('"' + "".join(f"\\{c}" for c in v) + '"' for v in values)  # body

    # each connection's last request may be cut off when wrk stops: spare bodies, so no
    # body is sent twice (a replay would be answered as a duplicate, a cheaper path)
    spare = bodies[-connections:]
    script = WRK_SCRIPT % {
        "bodies": lua([b for b, _ in bodies]),
        "signatures": lua([h["X-Hub-Signature"].encode() for _, h in bodies]),
        "ids": lua([h["X-Atlassian-Webhook-Identifier"].encode() for _, h in bodies]),
        "total": len(bodies) - len(spare)}
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    # wrk sleeps for its whole -d before it reports, even when the script has stopped
    # its thread: the script says when the burst is answered, and SIGINT ends the wait
    started = time.perf_counter()
    try:
        with subprocess.Popen([wrk, "-t1", f"-c{connections}", "-d300s", "--timeout", "60s",
                               "-s", handle.name, url], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) as process:
            assert process.stdout is not None and process.stderr is not None
            for row in process.stdout:
                if row.startswith("BURST DONE"):
                    break
            elapsed = time.perf_counter() - started
            process.send_signal(signal.SIGINT)
            out, errors = process.stdout.read(), process.stderr.read()
    finally:
        os.unlink(handle.name)
    line = next((row for row in out.splitlines() if row.startswith("WRK ")), None)
    if line is None or elapsed > 250:  # the script did not run (wrk's message says why)
        raise SystemExit(f"wrk did not run the burst: {(errors or out).strip()[-500:]}")
    _, status_errors, socket_errors, _, p50, p99, worst = line.split()[1:]
    if int(status_errors) or int(socket_errors):
        raise SystemExit(f"wrk: {status_errors} bad answers, {socket_errors} socket errors")
    return {"requests": len(bodies) - len(spare), "seconds": elapsed, "p50": float(p50),
            "p99": float(p99), "max": float(worst)}


def signed(prefix: str, keys: list[str]) -> list[tuple[bytes, dict[str, str]]]:
    out = []
    for n, key in enumerate(keys):
        body = json.dumps(issue_event(key)).encode()
        out.append((body, {"Content-Type": "application/json", "X-Hub-Signature": sign(SECRET, body),
                           "X-Atlassian-Webhook-Identifier": f"{prefix}-{n}"}))
    return out


def bare_write_back(jira: FakeJira, keys: list[str]) -> float:
    """Events/s of the Jira calls alone, one thread, no queue and no classifier."""
    import requests

    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {jira.pat}"
    api = jira.url + "/rest/api/2"
    started = time.perf_counter()
    for key in keys:
        session.get(f"{api}/issue/{key}", params={"fields": "summary,description,labels"})
        session.get(f"{api}/issue/{key}/comment", params={"startAt": 0, "maxResults": 100})
        session.put(f"{api}/issue/{key}", json={"update": {"labels": [{"add": "scope:core"}]}})
        session.post(f"{api}/issue/{key}/comment", json={"body": "scopeguard verdict"})
    elapsed = time.perf_counter() - started
    session.close()
    return len(keys) / elapsed


def nice_threads(server: Any, levels: int) -> None:
    """Run each request thread of ``server`` (a ThreadingHTTPServer) ``levels`` nice levels
    down: on Linux a nice value is a thread's own, so only those threads yield the cores."""
    handle = server.process_request_thread

    def niced(request: Any, address: Any) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), levels)
        except OSError:
            pass
        handle(request, address)

    server.process_request_thread = niced


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="webhooks per acceptance run")
    parser.add_argument("--burst", type=int, default=500, help="new issues in the processing run")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--acceptors", type=int, default=1,
                        help="processes accepting webhooks (scopeguard serve --acceptors)")
    parser.add_argument("--model", default="hashing",
                        help="'hashing' (no model) or 'real' (the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--backend", default="onnx", help="onnx, onnx-int8 or torch")
    parser.add_argument("--in-process", action="store_true",
                        help="classify in threads of the accepting process (as before "
                             "worker processes)")
    parser.add_argument("--busy-probes", type=int, default=200,
                        help="webhooks posted one by one while the burst is processed")
    parser.add_argument("--wrk-burst", type=int, default=200,
                        help="webhooks in each wrk burst (200 connections)")
    parser.add_argument("--rounds", type=int, default=7, help="wrk bursts per side")
    parser.add_argument("--jira-nice", type=int, default=0,
                        help="nice levels added to the fake Jira's threads: it stands for a "
                             "remote server, whose CPU a deployment does not share")
    parser.add_argument("--http", default="auto", help="the service's HTTP parser "
                        "(SCOPEGUARD_HTTP: auto, httptools or h11)")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="scopeguard-bench-"))
    env = {"SCOPEGUARD_WEBHOOK_SECRET": SECRET, "SCOPEGUARD_BACKEND": args.backend,
           "SCOPEGUARD_HTTP": args.http}
    if "SCOPEGUARD_DURABLE" in os.environ:  # 0: no fsync per webhook (the service's option)
        env["SCOPEGUARD_DURABLE"] = os.environ["SCOPEGUARD_DURABLE"]
    if args.model != "real":
        env["SCOPEGUARD_MODEL"] = args.model
    jira = FakeJira(flavour="server", pat="bench-pat", record=False).start()
    if args.jira_nice:
        nice_threads(jira._server, args.jira_nice)
    spare = 200  # wrk's connections in flight when it stops
    total = 2 * args.n + args.burst + args.busy_probes + 2 * args.rounds * (args.wrk_burst + spare)
    for i in range(total):
        ask = ASKS[i % len(ASKS)]
        jira.add_issue(f"PAW-{i + 1}", f"{ask} ({i})", f"{ask}, please. Clinic: Clinic {i % 41}.")
    keys = [f"PAW-{i + 1}" for i in range(total)]
    port = free_port()
    baseline = subprocess.Popen([sys.executable, "-c", BASELINE_APP, str(port)])
    service = ServiceProcess(tmp, jira, ROOT / "examples" / "scopeguard.yml", env,
                             args=("--workers", str(args.workers), "--acceptors",
                                   str(args.acceptors), "--log-level", "warning",
                                   *(("--in-process",) if args.in_process else ())))
    try:
        service.start(timeout=120)
        base_url = f"http://127.0.0.1:{port}/webhooks/jira"
        service_url = service.url + "/webhooks/jira"
        for _ in range(100):
            try:
                sequential(base_url, signed("warm", keys[:1]))
                break
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.1)

        print(f"scopeguard serve webhook benchmark: {args.n} webhooks per run, burst of "
              f"{args.burst} (200 clients), {args.workers} worker "
              f"{'thread' if args.in_process else 'process'}(es), {args.acceptors} accepting "
              f"process(es), model {args.model}, "
              f"backend {args.backend}")
        base_seq = sequential(base_url, signed("b", keys[:args.n]))
        svc_seq = sequential(service_url, signed("s", keys[:args.n]))
        service.wait_idle(timeout=600)
        base_rate = concurrent(base_url, signed("bc", keys[args.n:2 * args.n]))
        svc_rate = concurrent(service_url, signed("sc", keys[args.n:2 * args.n]))
        service.wait_idle(timeout=600)

        burst_keys = keys[2 * args.n:2 * args.n + args.burst]
        probe_keys = keys[2 * args.n + args.burst:2 * args.n + args.burst + args.busy_probes]
        wrk_keys = keys[2 * args.n + args.burst + args.busy_probes:]
        started = time.perf_counter()
        base_burst: list[float] = []  # the bare endpoint under the same 200 connections
        concurrent(base_url, signed("pb", burst_keys), clients=200, latencies=base_burst)
        burst: list[float] = []
        concurrent(service_url, signed("p", burst_keys), clients=200, latencies=burst)
        busy = sequential(service_url, signed("busy", probe_keys))  # the worker is busy
        service.wait_idle(timeout=1200)
        processing = (len(burst_keys) + len(probe_keys)) / (time.perf_counter() - started)
        jira_only = bare_write_back(jira, keys[:args.burst])

        # bursts from wrk, the bare endpoint and the service taking turns, while the
        # worker classifies what the service's bursts bring
        size = args.wrk_burst + spare
        wrk_base, wrk_service = [], []
        for r in range(args.rounds if shutil.which("wrk") else 0):
            pair = [(wrk_base, base_url, "wb"), (wrk_service, service_url, "ws")]
            for k, (into, url, prefix) in enumerate(pair[::-1] if r % 2 else pair):
                start = (2 * r + k) * size
                into.append(wrk_burst(url, signed(f"{prefix}{r}", wrk_keys[start:start + size])))
                time.sleep(0.5)
        wrk_rows = []
        if wrk_service:
            def med(runs: list[dict[str, float]], key: str) -> float:
                return statistics.median(run[key] for run in runs)

            def under(runs: list[dict[str, float]]) -> float:
                return sum(run["p99"] < 50 for run in runs)

            name = f"wrk {args.wrk_burst} x{args.rounds}"
            wrk_rows = [
                (f"{name}: p50 median (ms)", med(wrk_service, "p50"), med(wrk_base, "p50")),
                (f"{name}: p99 median (ms)", med(wrk_service, "p99"), med(wrk_base, "p99")),
                (f"{name}: p99 worst (ms)", max(run["p99"] for run in wrk_service),
                 max(run["p99"] for run in wrk_base)),
                (f"{name}: accepted/s median",
                 statistics.median(run["requests"] / run["seconds"] for run in wrk_service),
                 statistics.median(run["requests"] / run["seconds"] for run in wrk_base)),
            ]

        def ms(values: list[float], q: float) -> float:
            return percentile(values, q) * 1000

        rows = [
            ("accept p50 (ms)", ms(svc_seq, 0.5), ms(base_seq, 0.5)),
            ("accept p99 (ms)", ms(svc_seq, 0.99), ms(base_seq, 0.99)),
            ("accept mean (ms)", statistics.mean(svc_seq) * 1000, statistics.mean(base_seq) * 1000),
            ("burst of 200 conns: p50 (ms)", ms(burst, 0.5), ms(base_burst, 0.5)),
            ("burst of 200 conns: p99 (ms)", ms(burst, 0.99), ms(base_burst, 0.99)),
            *wrk_rows,
            ("accept p50 while busy (ms)", ms(busy, 0.5), ms(svc_seq, 0.5)),
            ("accept p99 while busy (ms)", ms(busy, 0.99), ms(svc_seq, 0.99)),
            ("accepted/s, 16 clients", svc_rate, base_rate),
            ("processed events/s", processing, jira_only),
        ]
        print(f"\n{'':34}{'scopeguard':>12}{'baseline':>12}{'ratio':>9}")
        for name, ours, theirs in rows:
            print(f"{name:34}{ours:12.2f}{theirs:12.2f}{ours / theirs:9.2f}x")
        print("\nbaselines: a bare Starlette 202 endpoint (acceptance, and the burst); the "
              "service idle (acceptance while busy); the same Jira calls from one thread without queue or "
              "classifier (processing).")
        if wrk_service:
            print(f"wrk bursts of {args.wrk_burst} through 200 connections with a p99 under "
                  f"50 ms: scopeguard {under(wrk_service):.0f} of {len(wrk_service)}, the bare "
                  f"endpoint {under(wrk_base):.0f} of {len(wrk_base)}")
        if not wrk_service:
            print("wrk is not installed (apt-get install wrk): its burst rows are left out.")
        metrics = service.metrics()
        done = sum(v for k, v in metrics.items()
                   if k.startswith("scopeguard_events_processed_total"))
        print(f"service: {done:.0f} events processed, "
              f"{metrics['scopeguard_events_failed_total']:.0f} failed, "
              f"queue depth {metrics['scopeguard_queue_depth']:.0f}")
    finally:
        service.stop()
        baseline.terminate()
        baseline.wait(10)
        jira.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

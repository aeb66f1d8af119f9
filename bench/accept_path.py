"""Where the accepting process's time goes: wrk bursts of signed Jira webhooks (200
connections) at three servers taking turns, each in its own uvicorn process (uvloop,
httptools), with no worker and no Jira traffic beside them:

- ``minimal``: an ASGI app that reads the body and answers 202 (the baseline);
- ``front``: scopeguard's app as ``scopeguard serve`` runs it (its slow-client deadline
  protocol, its garbage-collector settings): headers, signature, JSON, the ignore rules
  and the answer, but answering "queued" without writing the queue (a measuring cut,
  never a way to run the service);
- ``app``: the same with its durable queue write (SQLite, group commit).

For each: the p99 of every burst (median and worst) and the CPU seconds the server
process spent over its bursts, with ratios against ``minimal``. What ``front`` adds over
``minimal`` is the per-webhook work before the queue; what ``app`` adds over ``front``
is the queue write (bench/webhook.py measures the whole service, worker included).

Usage: .venv/bin/python bench/accept_path.py [--rounds 9] [--burst 200]
Needs wrk (Debian's ``wrk``).
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

VARIANTS = ("minimal", "front", "app")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def minimal_app() -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        body = b'{"status":"queued"}'
        await send({"type": "http.response.start", "status": 202,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
    return app


def serve(variant: str, port: int, report: str) -> None:
    """Run one server until SIGTERM; SIGUSR1 starts its CPU count, SIGUSR2 writes it."""
    import uvicorn

    options: dict[str, Any] = {"http": "httptools", "loop": "uvloop"}
    if variant == "minimal":
        app = minimal_app()
    else:
        from fake_jira import FakeJira
        from scopeguard.integrations import jira as jc
        from scopeguard.integrations.service.app import create_app
        from scopeguard.integrations.service.http_guard import deadline_protocol
        from scopeguard.integrations.service.lifecycle import Service
        from scopeguard.integrations.service.settings import ServiceSettings
        from webhook import SECRET

        tmp = Path(tempfile.mkdtemp(prefix="scopeguard-accept-"))
        jira = FakeJira(flavour="server", pat="bench-pat", record=False).start()
        settings = ServiceSettings(config=str(ROOT / "examples" / "scopeguard.yml"),
                                   db=str(tmp / "cache.db"), model="hashing",
                                   queue=str(tmp / "queue.db"), webhook_secret=SECRET,
                                   workers=0)
        service = Service(settings, client=jc.make_jira(jira.url, pat="bench-pat", environ={}))
        if variant == "front":
            async def queued(*args: Any, **kwargs: Any) -> str:
                return "queued"
            service.queue.accept_async = queued  # type: ignore[method-assign]
        app = create_app(service)
        options["http"] = deadline_protocol(settings.request_timeout, http="httptools")
        gc.freeze()  # as app.run does
        gc.set_threshold(20_000, 50, 1000)
    start = [0.0]
    signal.signal(signal.SIGUSR1, lambda *_: start.__setitem__(0, cpu_seconds()))
    signal.signal(signal.SIGUSR2, lambda *_: Path(report).write_text(
        f"{cpu_seconds() - start[0]:.4f}\n"))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", **options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9, help="bursts per server")
    parser.add_argument("--burst", type=int, default=200, help="webhooks in each burst")
    parser.add_argument("--serve", nargs=3, metavar=("VARIANT", "PORT", "REPORT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]), args.serve[2])
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk): this bench needs it.")
    from fake_jira import free_port
    from webhook import signed, wrk_burst

    tmp = Path(tempfile.mkdtemp(prefix="scopeguard-accept-bench-"))
    servers: dict[str, tuple[subprocess.Popen[bytes], str, Path]] = {}
    try:
        for variant in VARIANTS:
            port, report = free_port(), tmp / f"{variant}.cpu"
            process = subprocess.Popen([sys.executable, __file__, "--serve", variant,
                                        str(port), str(report)])
            servers[variant] = (process, f"http://127.0.0.1:{port}/webhooks/jira", report)
        size = args.burst + 200  # spare bodies: wrk's connections in flight when it stops
        keys = [f"PAW-{i + 1}" for i in range(size)]
        for variant, (_, url, _) in servers.items():  # up, and warm
            for attempt in range(300):
                try:
                    wrk_burst(url, signed(f"warm-{variant}", keys))
                    break
                except SystemExit:
                    if attempt == 299:
                        raise
                    time.sleep(0.2)
        for process, _, _ in servers.values():
            os.kill(process.pid, signal.SIGUSR1)
        p99: dict[str, list[float]] = {variant: [] for variant in servers}
        for r in range(args.rounds):
            for variant, (_, url, _) in servers.items():
                p99[variant].append(wrk_burst(url, signed(f"{variant}-{r}", keys))["p99"])
        for process, _, _ in servers.values():
            os.kill(process.pid, signal.SIGUSR2)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(r.exists() for *_, r in servers.values()):
            time.sleep(0.05)
        cpu = {variant: float(report.read_text()) for variant, (_, _, report) in servers.items()}
    finally:
        for process, _, _ in servers.values():
            process.terminate()
            process.wait(10)

    base = "minimal"
    print(f"accepting-process cost, wrk bursts of {args.burst} through 200 connections, "
          f"{args.rounds} per server (taking turns); ratios against {base}")
    print(f"{'':10}{'p99 median (ms)':>17}{'p99 worst (ms)':>16}{'CPU (s)':>10}"
          f"{'p99 ratio':>11}{'CPU ratio':>11}")
    for variant in servers:
        median = statistics.median(p99[variant])
        print(f"{variant:10}{median:17.1f}{max(p99[variant]):16.1f}{cpu[variant]:10.2f}"
              f"{median / statistics.median(p99[base]):10.2f}x"
              f"{cpu[variant] / cpu[base]:10.2f}x")
    print("minimal: an ASGI 202; front: scopeguard's app and protocol without the queue "
          "write; app: with it. No worker, no Jira traffic.")


if __name__ == "__main__":
    main()

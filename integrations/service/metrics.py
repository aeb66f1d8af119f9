"""The webhook service's metrics: counters and histograms in the Prometheus text format.

No dependency: ``GET /metrics`` renders :class:`Metrics` plus the gauges the service
reads at scrape time (queue depth and the like). Thread-safe: the ASGI app and the
worker threads update it at once.

Example::

    metrics = Metrics()
    metrics.inc("scopeguard_webhooks_received_total", result="queued")
    metrics.observe("scopeguard_webhook_accept_seconds", 0.002)
    text = metrics.render({"scopeguard_queue_depth": ("Events waiting.", 3)})
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence


class Metrics:
    """Counters and histograms in the Prometheus text format, without a dependency."""

    BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
               60, 300)
    HELP = {
        "scopeguard_webhooks_received_total": ("counter", "Authenticated webhooks, by result."),
        "scopeguard_webhooks_rejected_total": ("counter", "Webhooks refused, by reason."),
        "scopeguard_events_processed_total": ("counter", "Events processed, by outcome."),
        "scopeguard_events_retried_total": ("counter", "Events put back after an error."),
        "scopeguard_events_failed_total": ("counter", "Events given up after every attempt."),
        "scopeguard_worker_restarts_total": ("counter", "Worker processes that died and were "
                                                        "started again."),
        "scopeguard_webhook_accept_seconds": ("histogram", "Time to answer a webhook."),
        "scopeguard_event_latency_seconds": ("histogram",
                                             "From webhook received to write-back done."),
    }

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self.histograms: dict[str, list[float]] = {}

    def inc(self, name: str, value: float = 1, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self.counters[key] = self.counters.get(key, 0) + value

    def observe(self, name: str, seconds: float) -> None:
        with self._lock:
            h = self.histograms.setdefault(name, [0.0] * (len(self.BUCKETS) + 2))
            for i, bound in enumerate(self.BUCKETS):
                if seconds <= bound:
                    h[i] += 1
            h[-2] += seconds
            h[-1] += 1

    def drain(self) -> tuple[dict, dict]:
        """What was counted since the last drain (counters, histograms), then zero: how an
        acceptor process hands its counts to the accepting process that serves them."""
        with self._lock:
            counted = (self.counters, self.histograms)
            self.counters, self.histograms = {}, {}
        return counted

    def merge(self, counters: Mapping, histograms: Mapping) -> None:
        """Add another process's :meth:`drain` to these."""
        with self._lock:
            for key, value in counters.items():
                self.counters[key] = self.counters.get(key, 0) + value
            for name, values in histograms.items():
                h = self.histograms.setdefault(name, [0.0] * (len(self.BUCKETS) + 2))
                for i, value in enumerate(values[:len(h)]):
                    h[i] += value

    def render(self, gauges: Mapping[str, tuple[str, float]]) -> str:
        out: list[str] = []
        with self._lock:
            for name, (kind, text) in self.HELP.items():
                out += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
                if kind == "counter":
                    rows = [(k[1], v) for k, v in self.counters.items() if k[0] == name]
                    for labels, v in sorted(rows) or [((), 0.0)]:
                        out.append(f"{name}{_labels(labels)} {v:g}")
                else:
                    h = self.histograms.get(name, [0.0] * (len(self.BUCKETS) + 2))
                    for bound, count in zip(self.BUCKETS, h, strict=False):
                        out.append(f'{name}_bucket{{le="{bound:g}"}} {count:g}')
                    out += [f'{name}_bucket{{le="+Inf"}} {h[-1]:g}', f"{name}_sum {h[-2]:.6f}",
                            f"{name}_count {h[-1]:g}"]
        for name, (text, value) in gauges.items():
            out += [f"# HELP {name} {text}", f"# TYPE {name} gauge", f"{name} {value:g}"]
        return "\n".join(out) + "\n"


def _labels(labels: Sequence[tuple[str, str]]) -> str:
    if not labels:
        return ""
    quoted = ",".join(f'{k}="{v.replace(chr(92), "/").replace(chr(34), chr(39))}"'
                      for k, v in labels)
    return "{" + quoted + "}"

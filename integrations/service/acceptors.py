"""Acceptor processes: webhooks taken on more than one core (``--acceptors N``).

One event loop reads, verifies and stores every webhook of a burst in turn, so the last of
200 arriving together waits for the 199 before it. ``scopeguard serve --acceptors N``
runs ``N - 1`` more processes that accept webhooks beside the main one, each with its own
listening socket on the same port (``SO_REUSEPORT``: the kernel spreads new connections
over them) and its own writes to the same queue file (SQLite WAL; the queue's group
commit in each). They hold no model: the workers (:mod:`.pool`) still classify.

What they share with the main process, each through its own pipe (:class:`AcceptorPool`):
down it the main process's error (a model that did not load: webhooks get 503 in every
process, as in the main one) and ``stop``; up it ``wake`` (an event was queued: the
workers are woken), twice a second what they counted (the main process serves
``/metrics``), and their own failure to queue a webhook (``/healthz`` says it).
``/healthz``, ``/metrics`` and any other path are answered by the main process whichever
process took the connection: an acceptor forwards them over a Unix socket in a private
directory and relays the answer, or answers 503 when the main process does not answer
(:mod:`.forward`). An acceptor that dies is started again
(after 1 s, doubling to 30 s); the connections it held are cut (the sender retries) and
new ones go to the processes left. One whose main process dies stops (its pipe closes).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from scopeguard.errors import ScopeguardError

from .children import Channel, Children
from .forward import forward_to
from .settings import ServiceSettings

log = logging.getLogger("scopeguard.serve")



def listen_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` that more processes can share (SO_REUSEPORT).

    Refused when anything already listens there: a port shared by mistake with another
    service would split its webhooks between the two.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        probe = socket.socket(family, kind, proto)  # no SO_REUSEPORT: taken means taken
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
        finally:
            probe.close()
        sock = _shared(family, kind, proto, address)
    except OSError as exc:
        raise _cannot_listen(host, port, exc) from None
    sock.set_inheritable(False)
    return sock


def check_listen(host: str, port: int) -> None:
    """Refuse now what uvicorn would fail to bind once the workers run: a port taken on
    any address ``host`` resolves to (uvicorn binds them all), or a host that is none."""
    try:
        for family, kind, proto, _, address in set(socket.getaddrinfo(
                host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)):
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:  # as asyncio binds it: beside an IPv4 socket
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                probe.bind(address)
    except OSError as exc:
        raise _cannot_listen(host, port, exc) from None


def _cannot_listen(host: str, port: int, exc: OSError) -> ScopeguardError:
    return ScopeguardError(f"cannot listen on {host}:{port}: {exc.strerror or exc}. Fix: "
                           "stop what listens there, or choose another --port/--host.")


def add_acceptor(first: socket.socket) -> socket.socket:
    """Another socket in ``first``'s SO_REUSEPORT group (the same address): an acceptor's."""
    return _shared(first.family, first.type, first.proto, first.getsockname())


def _shared(family: int, kind: int, proto: int, address: Any) -> socket.socket:
    """A listening socket on ``address`` in its SO_REUSEPORT group."""
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    sock.listen(2048)
    return sock


class AcceptorPool(Children):
    """The acceptor processes ``2..count`` of a service (the main process is number 1).

    Args:
        service: the main process's :class:`.lifecycle.Service` (its metrics, wake, error).
        first: the main process's listening socket (each acceptor gets one beside it).
        private: the Unix socket path where the main process answers forwarded requests.
    """

    kind = "acceptor"
    every = 0.25

    def __init__(self, service: Any, count: int, first: socket.socket, private: str,
                 log_level: str, secrets: Sequence[str]) -> None:
        super().__init__()
        self.service, self.first, self.private = service, first, private
        self.settings = replace(service.settings, acceptors=1)
        self.numbers = range(2, count + 1)
        self.log_level, self.secrets = log_level, list(secrets)
        self.webhooks: dict[int, int] = {}  # answered by each acceptor, all its lives
        self.told: dict[int, str] = {}  # the error each was last told
        self.failing: dict[int, tuple[str, float]] = {}  # why one could not queue, and when
        self._failing_lock = threading.Lock()
        self._backoff: dict[int, float] = {}  # the delay before its last restart
        self.started: dict[int, float] = {}

    def spawn_process(self, number: int, conn: Any) -> Any:
        sock = add_acceptor(self.first)
        try:
            process = self.context.Process(
                target=acceptor_main, name=f"scopeguard-acceptor-{number}", daemon=True,
                args=(self.settings, number, sock, self.private, self.log_level, self.secrets,
                      conn))
            process.start()
        finally:  # the acceptor holds its copy: the kernel's group loses it at its death
            sock.close()
        self.told.pop(number, None)
        with self._failing_lock:
            self.failing.pop(number, None)
        self.started[number] = time.monotonic()
        return process

    def status(self) -> list[dict[str, Any]]:
        """Each acceptor for ``/healthz``: its pid, whether it runs, webhooks it answered."""
        failing = dict(self.failing)  # a snapshot: the monitor thread changes it
        return [{"number": n, "pid": p.pid, "running": p.is_alive(),
                 "webhooks": self.webhooks.get(n, 0),
                 **({"error": failing[n][0]} if n in failing else {})}
                for n, p in sorted(self.processes.items())]

    def accept_error(self, file_ok: bool) -> str:
        """Why an acceptor could not queue its last webhook ("" if none): cleared as the main
        process's own, by its next queued webhook or 15 s on while the file takes writes."""
        with self._failing_lock:
            for number, (error, at) in sorted(self.failing.items()):
                if file_ok and time.monotonic() - at > 15:
                    del self.failing[number]
                else:
                    return f"acceptor {number}: {error}"
        return ""

    def tick(self) -> None:
        """The main process's error (a model that did not load) to each acceptor, once."""
        error = self.service.error
        for number, channel in list(self.channels.items()):
            if self.told.get(number) != error and channel.send(("error", error)):
                self.told[number] = error

    def apply(self, kind: str, number: int, data: Any) -> None:
        if kind == "wake":
            self.service.wake.set()
        elif kind == "metrics":
            counters, histograms = data
            self.service.metrics.merge(counters, histograms)
            self.webhooks[number] = self.webhooks.get(number, 0) + int(sum(
                v for (name, _), v in counters.items()
                if name in ("scopeguard_webhooks_received_total",
                            "scopeguard_webhooks_rejected_total")))
        elif kind == "accept_error":  # (why its last webhook failed, how long ago) or ""
            with self._failing_lock:
                if data:
                    self.failing[number] = (str(data[0]), time.monotonic() - float(data[1]))
                else:
                    self.failing.pop(number, None)
        elif kind == "failed":
            log.error("%s", data)

    def died(self, number: int, process: Any) -> float:
        ran = time.monotonic() - self.started.get(number, 0.0)
        delay = 1.0 if ran > 60 else min(30.0, self._backoff.get(number, 0.5) * 2)
        self._backoff[number] = delay
        log.error("acceptor %d (pid %s) stopped with exit code %s; the other processes take "
                  "the webhooks; restarting it in %.0fs", number, process.pid,
                  process.exitcode, delay)
        return delay

    def restarted(self, number: int, ok: bool) -> None:
        if not ok:  # a failed start counts as a short life: the delay keeps doubling
            self.started[number] = time.monotonic()

    def stop(self, timeout: float = 30, before: Any = None) -> None:
        """Stop every acceptor (each answers what it holds first), then take its counts."""
        super().stop(timeout)
        shutil.rmtree(os.path.dirname(self.private), ignore_errors=True)  # the private dir


class _Wake:
    """``set()`` (an event was queued) sends one ``wake`` up the pipe, from a thread of its
    own so the event loop never waits on a full pipe."""

    def __init__(self, channel: Channel, number: int) -> None:
        self.channel, self.number, self.pending = channel, number, threading.Event()
        threading.Thread(target=self._send, daemon=True).start()

    def set(self) -> None:
        self.pending.set()

    def _send(self) -> None:
        while self.pending.wait():
            self.pending.clear()
            if not self.channel.send(("wake", self.number, None)):
                return


def acceptor_main(settings: ServiceSettings, number: int, sock: socket.socket, private: str,
                  log_level: str, secrets: list[str], conn: Any) -> None:
    """One acceptor process: the webhook routes on ``sock`` until told to stop."""
    import uvicorn

    from .app import create_app
    from .http_guard import deadline_protocol
    from .lifecycle import Service
    from .logs import setup_logging
    from .metrics import Metrics

    setup_logging(log_level, secrets)
    channel, metrics = Channel(conn), Metrics()
    try:
        service = Service(settings, role="acceptor", number=number, metrics=metrics,
                          wake=_Wake(channel, number))
    except Exception as exc:  # noqa: BLE001 - the main process logs it and tries again
        channel.send(("failed", number, f"acceptor {number} could not start: {exc}"))
        raise SystemExit(3) from None

    def cut_off() -> None:
        metrics.inc("scopeguard_webhooks_rejected_total", reason="too_slow")

    config = uvicorn.Config(
        create_app(service, forward=forward_to(private, settings.request_timeout)),
        log_config=None, access_log=False,
        lifespan="off", timeout_graceful_shutdown=30, limit_concurrency=settings.max_connections,
        http=deadline_protocol(settings.request_timeout, on_timeout=cut_off, http=settings.http))
    server = _server(config)

    def listen() -> None:
        """The main process's words: its error, stop; its death reads as end of file."""
        while True:
            try:
                message = conn.recv()
            except (OSError, EOFError):
                message = ("stop",)
            if message[0] == "stop":
                server.should_exit = True
                return
            if message[0] == "error":
                service.error = str(message[1])

    def flush() -> None:
        told: tuple[str, float] = ("", 0.0)
        while not server.should_exit:
            time.sleep(0.5)
            counted, failing = metrics.drain(), (service.accept_error, service.accept_error_at)
            if (counted[0] or counted[1]) and not channel.send(("metrics", number, counted)):
                return
            age = time.monotonic() - failing[1]  # each failure anew: the 15 s start again
            if failing != told and channel.send(("accept_error", number, failing[0] and (
                    failing[0], age))):
                told = failing

    threading.Thread(target=listen, daemon=True).start()
    threading.Thread(target=flush, daemon=True).start()
    gc.freeze()  # as the main process (app.run): a burst is not paused by full collections
    gc.set_threshold(20_000, 50, 1000)
    try:
        server.run(sockets=[sock])
    finally:
        with contextlib.suppress(Exception):
            service.queue.close()
        channel.send(("metrics", number, metrics.drain()))


def _server(config: Any) -> Any:
    """uvicorn's server with an acceptor's signals: SIGTERM stops it after what it holds;
    SIGINT (Ctrl-C reaches the whole group) is left to the main process, which stops the
    acceptors itself."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Any:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, lambda *_: setattr(self, "should_exit", True))
            yield

    return Server(config)

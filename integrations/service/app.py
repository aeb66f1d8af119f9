"""The webhook service's HTTP side: an ASGI app (Starlette) that authenticates webhooks and
queues them durably; the worker threads (:mod:`.lifecycle`) classify and write back.

Routes:

- ``POST /webhooks/jira``: ``jira:issue_created`` and ``jira:issue_updated`` webhooks
  (or a Jira Automation "Send web request"). Authenticated by the webhook secret
  (``X-Hub-Signature: sha256=<HMAC-SHA256 of the raw body>``, what Jira sends when the
  webhook has a secret) or by a shared token (``Authorization: Bearer <token>``,
  ``X-Scopeguard-Token: <token>`` or ``?token=``), compared in constant time
  (:mod:`.auth`). The answer is 202 once the event is in the SQLite queue; 200 for
  a delivery id seen before; 202 with ``"status": "ignored"`` for events the positioning
  file's ``jira:`` section does not watch; 401 unauthenticated, 413 too large, 400
  malformed, with a message.
- ``POST /webhooks/github``: GitHub ``issues`` webhooks (a GitHub App's, or a repository's
  or organisation's), signed ``X-Hub-Signature-256`` with
  ``SCOPEGUARD_GITHUB_WEBHOOK_SECRET``; queued the same way, then handled by the GitHub
  Action's flow (:mod:`scopeguard.integrations.github.webhook`). 404 when no GitHub
  secret is configured.
- ``GET /healthz``: 200 once events are taken, stored and processed; 503 with the cause
  while the model loads, after a failed start, or while the queue cannot be written.
  Webhooks get 503 (with ``Retry-After``) whenever their event cannot be made durable or
  processed, so Jira and GitHub send them again.
- ``GET /metrics``: Prometheus text format (:mod:`.metrics`).

Slow clients are cut off by the protocol (:mod:`.http_guard`); a body that does not
arrive within ``--request-timeout`` gets 408 here too. The worker reads the issue fresh
(:mod:`.handlers`), classifies it with demand from the other issues the service has seen
(:mod:`.store`), and writes back.

Run it with ``scopeguard serve`` (see ``scopeguard serve --help``), or with
``uvicorn --factory scopeguard.integrations.service.app:app_from_env``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from scopeguard.errors import InputError

from ..github import webhook as github_webhook
from ..jira.client import JiraClient
from ..jira.webhook import BadWebhook, ignore_reason, parse_webhook
from .auth import authenticate, verify_github
from .lifecycle import Service
from .logs import client_secrets, setup_logging
from .queue import QueueError
from .settings import ServiceSettings

_ABSOLUTE = re.compile(rb"(?i)https?://")  # a request target in absolute-form
log = logging.getLogger("scopeguard.serve")


class TooLarge(Exception):
    """The body exceeds the limit."""


class TooSlow(Exception):
    """The body did not arrive within the request timeout."""


class Gone(Exception):
    """The client went away before its body was read."""


class Incoming:
    """What a webhook route reads of a request, straight from the ASGI scope: header names
    lower-case (the first of repeated ones, as Starlette's ``Headers.get``), the query
    string's parameters (the last of repeated ones), the peer's address."""

    __slots__ = ("scope", "receive", "headers", "_query")

    def __init__(self, scope: dict[str, Any], receive: Callable[[], Any]) -> None:
        self.scope, self.receive = scope, receive
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
        self.headers = headers
        self._query: dict[str, str] | None = None

    @property
    def query_params(self) -> dict[str, str]:
        if self._query is None:
            self._query = dict(parse_qsl(self.scope.get("query_string", b"").decode("latin-1"),
                                         keep_blank_values=True))
        return self._query

    @property
    def peer(self) -> str:
        client = self.scope.get("client")
        return client[0] if client else "?"


class Reply:
    """A JSON answer: status, body and any extra headers."""

    __slots__ = ("status_code", "body", "headers")

    def __init__(self, body: dict[str, Any], status_code: int) -> None:
        self.status_code, self.body = status_code, body
        self.headers: dict[str, str] = {}

    async def __call__(self, send: Callable[[dict[str, Any]], Any]) -> None:
        content = json.dumps(self.body, ensure_ascii=False, allow_nan=False,
                             separators=(",", ":")).encode()
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(content)).encode())]
        headers += [(k.lower().encode("latin-1"), v.encode("latin-1"))
                    for k, v in self.headers.items()]
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": headers})
        await send({"type": "http.response.body", "body": content})


async def read_body(request: Incoming, limit: int, timeout: float | None = None) -> bytes:
    """The raw body, at most ``limit`` bytes, read within ``timeout`` seconds.

    The protocol (:mod:`.http_guard`) already cuts off requests not complete in time; the
    timeout here also covers the app run under another server (``uvicorn --factory``).
    """
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise TooLarge
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            while True:
                message = await request.receive()
                if message["type"] == "http.disconnect":
                    raise Gone
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise TooLarge
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        raise TooSlow from None
    return b"".join(chunks)


def create_app(service: Service, forward: Callable[..., Any] | None = None) -> Any:
    """The ASGI app: the two webhook routes served directly (the hot path: no framework
    between the server and the queue), ``/healthz``, ``/metrics`` and the lifespan (which
    starts and stops the service's workers) by Starlette; with ``forward`` (an acceptor
    process's), every other path goes to it instead."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    settings, metrics = service.settings, service.metrics

    def answer(code: int, started: float, **body: Any) -> Reply:
        metrics.observe("scopeguard_webhook_accept_seconds", time.perf_counter() - started)
        return Reply(body, code)

    def reject(code: int, started: float, reason: str, peer: str, error: str) -> Reply:
        metrics.inc("scopeguard_webhooks_rejected_total", reason=reason)
        log.warning("rejected a webhook from %s: %s", peer, error.split(". Fix")[0])
        return answer(code, started, error=error)

    async def receive(request: Incoming, started: float) -> bytes | Reply:
        """The body, or the 413 (too large), 408 (too slow) or 400 (gone) answer."""
        peer = request.peer
        try:
            return await read_body(request, settings.max_body, settings.request_timeout)
        except TooSlow:
            return reject(408, started, "too_slow", peer, f"the body did not arrive within "
                          f"{settings.request_timeout:g} seconds. Fix: send the whole request "
                          "at once (raise SCOPEGUARD_REQUEST_TIMEOUT for a slow network).")
        except Gone:  # nobody to answer; the response below is dropped
            return reject(400, started, "disconnected", peer, "the client went away before "
                          "its body was read.")
        except TooLarge:
            return reject(413, started, "too_large", peer, f"the body is larger than "
                          f"{settings.max_body} bytes. Fix: raise --max-body "
                          "(SCOPEGUARD_MAX_BODY) if real issues are this large.")

    def ignored(event: str, key: str, delivery: str, reason: str, started: float) -> Reply:
        metrics.inc("scopeguard_webhooks_received_total", result="ignored")
        log.info("ignored %s %s (delivery %s): %s", event, key or "-", delivery[:60], reason)
        return answer(202, started, status="ignored", reason=reason)

    async def queue(delivery: str, body: bytes, event: str, key: str, started: float,
                    signed: bool) -> Reply:
        if service.error:  # nothing will process it: the sender keeps it and retries
            return unavailable(started, f"the service cannot process events: "
                               f"{service.error}")
        # A signed body seen before under another delivery id is a replay: the id is not
        # signed. (A token-authenticated sender can send anything: no window for it.)
        window = settings.replay_window if signed else 0.0
        try:
            state = await service.queue.accept_async(delivery, body, event, key,
                                                     replay_window=window)
        except QueueError as exc:  # not durable: never 202, so nothing is lost
            service.accept_error, service.accept_error_at = str(exc), time.monotonic()
            return unavailable(started, str(exc))
        service.accept_error = ""
        if state == "replay":
            metrics.inc("scopeguard_webhooks_received_total", result="replay")
            log.warning("delivery %s of %s: this signed body was accepted before under "
                        "another delivery id: not queued again", delivery[:60], key)
            return answer(200, started, status="duplicate", delivery=delivery,
                          reason="this signed body was accepted before under another "
                                 "delivery id (a replay)")
        if state == "duplicate":
            metrics.inc("scopeguard_webhooks_received_total", result="duplicate")
            log.info("delivery %s of %s seen before: not queued again", delivery[:60], key)
            return answer(200, started, status="duplicate", delivery=delivery)
        service.wake.set()
        metrics.inc("scopeguard_webhooks_received_total", result="queued")
        return answer(202, started, status="queued", delivery=delivery, issue=key)

    def unavailable(started: float, error: str) -> Reply:
        """503 with Retry-After: Jira and GitHub keep the delivery and send it again."""
        metrics.inc("scopeguard_webhooks_rejected_total", reason="unavailable")
        log.error("answered 503: %s", error)
        response = answer(503, started, error=error)
        response.headers["Retry-After"] = "30"
        return response

    async def jira_webhook(request: Incoming) -> Reply:
        started = time.perf_counter()
        if service.client is None:
            return answer(404, started, error="this service has no Jira configured. Fix: set "
                          "JIRA_URL and its credentials, or send GitHub webhooks to "
                          "/webhooks/github.")
        body = await receive(request, started)
        if isinstance(body, Reply):
            return body
        how, why = authenticate(request.headers, request.query_params, body,
                                secret=settings.webhook_secret, token=settings.webhook_token)
        if not how:
            return reject(401, started, "unauthorized", request.peer, why)
        try:
            hook = parse_webhook(body, request.headers)
        except BadWebhook as exc:
            return reject(400, started, "bad_request", request.peer, str(exc))
        reason = ignore_reason(hook, service.positioning, service.positioning.jira.customer_field)
        if reason:
            return ignored(hook.event, hook.key, hook.delivery_id, reason, started)
        return await queue(hook.delivery_id, body, hook.event, hook.key, started,
                           signed=how == "signature")

    async def github_webhook_route(request: Incoming) -> Reply:
        started = time.perf_counter()
        secret = settings.github_webhook_secret
        if not secret:
            return answer(404, started, error="GitHub webhooks are not configured. Fix: set "
                          "SCOPEGUARD_GITHUB_WEBHOOK_SECRET (and GITHUB_TOKEN, or a GitHub "
                          "App's GITHUB_APP_ID and GITHUB_APP_PRIVATE_KEY).")
        body = await receive(request, started)
        if isinstance(body, Reply):
            return body
        why = verify_github(request.headers, body, secret)
        if why:
            return reject(401, started, "unauthorized", request.peer, why)
        try:
            hook = github_webhook.parse(body, request.headers)
        except InputError as exc:
            return reject(400, started, "bad_request", request.peer, str(exc))
        if hook.event == github_webhook.EVENT_PREFIX + "ping":
            return answer(200, started, status="pong")
        reason = github_webhook.ignore_reason(hook, settings.repositories,
                                              service.positioning.labels.values(),
                                              service.positioning.filters)
        if reason:
            return ignored(hook.event, hook.key, hook.delivery_id, reason, started)
        return await queue(hook.delivery_id, body, hook.event, hook.key, started, signed=True)

    async def healthz(request: Request) -> JSONResponse:
        code, body = await run_in_threadpool(service.health)
        return JSONResponse(body, status_code=code)

    async def metrics_route(request: Request) -> PlainTextResponse:
        gauges = await run_in_threadpool(service.gauges)
        return PlainTextResponse(metrics.render(gauges),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    def not_allowed(method: str) -> Reply:
        """Every method but POST on a webhook route (PUT, OPTIONS, any name at all)."""
        reply = Reply({"error": f"{method[:20]!r} is not allowed here: webhooks are POSTed. "
                                "Fix: send the webhook with POST."}, 405)
        reply.headers["Allow"] = "POST"
        return reply

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            await run_in_threadpool(service.stop)

    rest = Starlette(routes=[Route("/healthz", healthz, methods=["GET"]),
                             Route("/metrics", metrics_route, methods=["GET"])],
                     lifespan=lifespan)
    hooks = {"/webhooks/jira": jira_webhook, "/webhooks/github": github_webhook_route}

    async def app(scope: dict[str, Any], receive: Callable[[], Any],
                  send: Callable[[dict[str, Any]], Any]) -> None:
        path, root = scope.get("path", ""), scope.get("root_path", "")
        raw = bytes(scope.get("raw_path") or b"") if scope["type"] == "http" else b"/"
        prefix = root.encode("latin-1")  # uvicorn puts root_path before the request target
        target = raw[len(prefix):] if prefix and raw.startswith(prefix) else raw
        if target[:1] != b"/" and _ABSOLUTE.match(target):
            # absolute-form ("POST http://host/webhooks/jira", RFC 9112 3.2.2, as a proxy
            # sends it): httptools gives its path, h11 the whole target (the raw one is
            # split, then decoded as uvicorn decodes a path: %3F stays in the path)
            raw_path = urlsplit(target.decode("latin-1")).path or "/"
            path = root + unquote(raw_path)
            scope = {**scope, "path": path, "raw_path": prefix + raw_path.encode("latin-1")}
        if root and path.startswith(root):  # mounted under a prefix: as Starlette routes
            path = path[len(root):]
        route = hooks.get(path) if scope["type"] == "http" else None
        if route is None:
            await (forward or rest)(scope, receive, send)
            return
        if scope["method"] != "POST":
            await not_allowed(scope["method"])(send)
            return
        try:
            reply = await route(Incoming(scope, receive))
        except Exception:  # a bug, not the sender's fault: logged, answered 503 (retried)
            log.exception("a webhook failed before it was queued")
            metrics.inc("scopeguard_webhooks_rejected_total", reason="unavailable")
            reply = Reply({"error": "the service failed to take this webhook; it will be "
                                    "taken when sent again."}, 503)
            reply.headers["Retry-After"] = "30"
        await reply(send)

    return app


def app_from_env(make_client: Callable[[], JiraClient] | None = None) -> Any:
    """An app configured by ``SCOPEGUARD_*`` and ``JIRA_*`` variables, for ``uvicorn --factory``."""
    settings = ServiceSettings.from_env()
    level = os.environ.get("SCOPEGUARD_LOG_LEVEL", "info")
    setup_logging(level, settings.secrets() + client_secrets())
    if settings.acceptors > 1:  # the sockets are uvicorn's here, not scopeguard's
        log.warning("SCOPEGUARD_ACCEPTORS=%d is for scopeguard serve; under uvicorn --factory "
                    "this process alone accepts webhooks", settings.acceptors)
    if make_client:  # an injected client cannot cross into a worker process: threads
        return create_app(Service(settings, client=make_client()))
    return create_app(Service(settings, role="all" if settings.in_process else "front",
                              log_level=level))


def run(settings: ServiceSettings, *, host: str, port: int, log_level: str = "info") -> None:
    """Serve until stopped (``scopeguard serve``): the app under uvicorn, slow clients cut off.

    ``log_config=None`` keeps the scrubbing handler; uvicorn's access log, which would
    print query strings (the ``?token=`` of a Jira Server webhook), is off. Past
    ``max_connections`` new requests get 503, which webhook senders retry.
    """
    import uvicorn

    from .acceptors import AcceptorPool, check_listen, listen_socket
    from .http_guard import deadline_protocol

    setup_logging(log_level, settings.secrets() + client_secrets())
    service = Service(settings, role="all" if settings.in_process else "front",
                      log_level=log_level)
    # the port before any worker starts (at uvicorn's startup): one taken, or a host that
    # is none, stops serve naming --port/--host (exit 2), not with uvicorn's bind error
    # (exit 3) once the workers had started. One acceptor: uvicorn binds every address
    # the host resolves to (localhost: 127.0.0.1 and ::1), each checked here first.
    public = listen_socket(host, port) if settings.acceptors > 1 else check_listen(host, port)

    # What the process holds from its start (modules, the positioning) is never garbage:
    # frozen, a full collection no longer walks it; and the young generation collects
    # every 20,000 allocations instead of 700, so a burst of webhooks (each a few hundred
    # objects) is not paused dozens of times (accept p99 under a 200-connection burst,
    # bench/webhook.py). Cycles are still collected.
    gc.freeze()
    gc.set_threshold(20_000, 50, 1000)

    missing = [name for name in ("httptools", "uvloop") if importlib.util.find_spec(name) is None]
    if missing and settings.http != "h11":
        log.info("%s not installed: serving with h11 on asyncio's loop, which accepts a burst "
                 "of webhooks about half as fast. Fix: pip install 'scopeguard-issues[serve]'",
                 " and ".join(missing))

    def cut_off() -> None:
        service.metrics.inc("scopeguard_webhooks_rejected_total", reason="too_slow")

    options = {"log_config": None, "access_log": False, "timeout_graceful_shutdown": 30,
               "limit_concurrency": settings.max_connections,
               "http": deadline_protocol(settings.request_timeout, on_timeout=cut_off,
                                         http=settings.http)}
    if settings.acceptors == 1:
        uvicorn.run(create_app(service), host=host, port=port, **options)
        return
    from .forward import private_socket

    private = tempfile.mkdtemp(prefix="scopeguard-")  # removed by the pool's stop
    try:
        inner, path = private_socket(private)  # where acceptors forward /healthz and the rest
        service.acceptors = AcceptorPool(service, settings.acceptors, public, path, log_level,
                                         settings.secrets() + client_secrets())
        uvicorn.Server(uvicorn.Config(create_app(service), **options)).run(
            sockets=[public, inner])
    finally:  # (uvicorn ends by the SIGTERM it caught, so the pool's stop removes it first)
        shutil.rmtree(private, ignore_errors=True)

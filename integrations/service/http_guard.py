"""A deadline for slow clients: uvicorn's HTTP protocols, closing requests not read in time.

uvicorn holds a connection as long as its client keeps sending, however slowly: a client
that sends one header line a second, or a body at a byte a second, is never cut off,
and a few thousand of them hold the service (slowloris). :func:`deadline_protocol` makes
a protocol class whose connections must deliver each whole request (headers and body)
within ``request_timeout`` seconds of the connection opening or of the previous answer.
Past the deadline the client gets ``408 Request Timeout`` (or, if an answer has begun,
just the close). The clock stops while the service, not the client, holds the request
(an app at work on a whole one, a body uvicorn stopped reading until the app reads it,
a client waiting for ``100 Continue``). A client that stops reading its answers (the
write buffer full) is dropped after the same time. ``scopeguard serve`` runs uvicorn
with it and with ``limit_concurrency`` (beyond that many connections, new requests get
503 so senders retry).

Two parsers, the same rule: uvicorn's httptools protocol (a C parser; the default when
``httptools`` is installed, as the ``serve`` extra does: with uvloop it accepts a burst of
webhooks about twice as fast, bench/webhook.py) and its h11 protocol (pure Python; the
fallback). Each subclasses uvicorn's own class, which has no public hook for
this: pyproject.toml bounds uvicorn's version, and ``tests/test_service_security.py``
fails if the hooks used here change and runs every slow-client test against both.

Example::

    uvicorn.run(app, http=deadline_protocol(10.0, on_timeout=count), limit_concurrency=1000)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def _closing(status: bytes, error: str) -> bytes:
    """A JSON answer that ends its connection."""
    body = json.dumps({"error": error}).encode()
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\nconnection: "
            b"close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


TIMEOUT_RESPONSE = _closing(b"408 Request Timeout", "the request was not complete in time. "
                            "Fix: send the whole request at once (webhook senders do).")
# A request's line and headers: webhook senders send about 2 KB. httptools (unlike h11,
# which refuses more than 16 KB) joins a header's pieces anew at every read, so a header
# sent on without end held the event loop for seconds: refused past this, with 431.
MAX_HEAD = 64 * 1024
# h11 refuses a head past 16 KB while it arrives (400): one sent whole is held to it too.
H11_MAX_HEAD = 16 * 1024
HEAD_TOO_LARGE = _closing(b"431 Request Header Fields Too Large", f"the request's line and "
                          f"headers are larger than {MAX_HEAD // 1024} KB. Fix: send smaller "
                          "headers (webhook senders send about 2 KB).")
BAD_REQUEST = _closing(b"400 Bad Request", "the request could not be read as HTTP/1.1. Fix: "
                       "send a well-formed request (webhook senders do).")


class _Deadline:
    """What both protocols share: the pending deadline, cancelled when the connection
    goes; the checks that keep it from blaming the client for the service's own waits;
    and a second deadline for a client that stops reading its answers."""

    _deadline: Any = None
    _unread_deadline: Any = None  # armed while the client reads none of what is sent
    _timeout = 10.0
    _on_timeout: Callable[[], None] | None = None
    loop: Any  # the protocol's own (uvicorn's classes set them)
    transport: Any
    flow: Any

    _held_for_continue = False  # the deadline was held while the client awaited 100 Continue

    def _disarm(self) -> None:
        self._held_for_continue = False
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._unread_deadline is not None:
            self._unread_deadline.cancel()
            self._unread_deadline = None
        super().connection_lost(exc)  # type: ignore[misc]

    def _not_ours(self) -> bool:
        """The connection is closing, or another protocol took it (an upgrade)."""
        return self.transport is None or self.transport.is_closing() or \
            self.transport.get_protocol() is not self

    def _service_holds(self, pending: Any) -> bool:
        """The request waits on the service, not on its client: uvicorn stopped reading
        until the app reads (a large body), or the client waits for ``100 Continue``,
        which uvicorn sends when the app first reads. The deadline starts again."""
        continuing = pending is not None and pending.waiting_for_100_continue
        # ``100 Continue`` sent since the deadline was held for it: the client's clock for
        # the body starts again (at least a full timeout after the 100, whenever it went)
        continued = pending is not None and self._held_for_continue and not continuing
        if (self.flow is not None and self.flow.read_paused) or continuing or continued:
            self._held_for_continue = continuing
            self._deadline = self.loop.call_later(self._timeout, self._expired)
            return True
        return False

    def _expired(self) -> None:  # each protocol's own
        raise NotImplementedError

    # A client that sends requests but never reads the answers fills the connection's
    # write buffer; uvicorn then waits, without a limit, for room to write (and a
    # pipelining client can queue requests meanwhile). Past the deadline it is dropped.

    def pause_writing(self) -> None:
        super().pause_writing()  # type: ignore[misc]
        if self._unread_deadline is None:
            self._unread_deadline = self.loop.call_later(self._timeout, self._unread)

    def resume_writing(self) -> None:
        super().resume_writing()  # type: ignore[misc]
        if self._unread_deadline is not None:
            self._unread_deadline.cancel()
            self._unread_deadline = None

    def _unread(self) -> None:
        self._unread_deadline = None
        if self._not_ours():
            return
        # the app's sends end quietly, as for a client gone: the cycle last parsed and, on
        # httptools, the one running (an earlier pipelined request, still answering);
        # uvloop raises on a write to the aborted transport, which uvicorn would log as
        # an error in the application
        for cycle in (getattr(self, "cycle", None), getattr(self, "_running", None)):
            if cycle is not None:
                cycle.disconnected = True
                cycle.message_event.set()
        getattr(self, "pipeline", []).clear()  # httptools: requests queued behind it
        self.transport.abort()  # its answers are dropped; connection_lost follows
        if self._on_timeout is not None:
            self._on_timeout()


def _static(function: Callable[[], None] | None) -> Any:
    """A callback kept on a class without becoming a method of its instances."""
    return staticmethod(function) if function is not None else None


def _cut_off(transport: Any, pending: Any, on_timeout: Callable[[], None] | None) -> None:
    """End a connection whose request was not whole in time: 408 unless its answer has
    begun; the app reading the request (``pending``, its cycle, if its headers are in)
    sees a disconnect, and anything it sends is dropped."""
    if pending is None or not pending.response_started:
        transport.write(TIMEOUT_RESPONSE)
    if pending is not None:
        pending.disconnected = True
        pending.message_event.set()
    transport.close()
    if on_timeout is not None:
        on_timeout()


def parser() -> str:
    """The HTTP parser :func:`deadline_protocol` uses by default: ``httptools`` when it is
    installed, else ``h11``."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        return "h11"
    return "httptools"


def deadline_protocol(request_timeout: float, on_timeout: Callable[[], None] | None = None,
                      http: str = "auto") -> type[Any]:
    """A protocol class for ``uvicorn.Config(http=...)`` with a whole-request deadline.

    Args:
        request_timeout: seconds a client has to send each whole request.
        on_timeout: called (on the event loop) each time a connection is cut off.
        http: ``httptools``, ``h11``, or ``auto`` (:func:`parser`).
    """
    if (parser() if http == "auto" else http) == "httptools":
        return _httptools_protocol(request_timeout, on_timeout)
    return _h11_protocol(request_timeout, on_timeout)


def _httptools_protocol(request_timeout: float,
                        on_timeout: Callable[[], None] | None) -> type[Any]:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class DeadlineHttpToolsProtocol(_Deadline, HttpToolsProtocol):
        _timeout, _on_timeout = request_timeout, _static(on_timeout)
        _reading = False  # the parser is inside a request (begun, not yet complete)
        _begun_after: Any = None  # the cycle that was current when that request began
        _running: Any = None  # the cycle whose app was started last
        _in_head, _head_bytes = False, 0  # inside a request's line and headers; their size
        _head_parsed = 0  # the bytes of the head being parsed: its URL, names and values
        _begun = 0  # requests begun on this connection (a read counted only inside one head)
        _closing_with: bytes | None = None  # a refused request's answer, sent after those owed

        # As with h11, the deadline runs exactly while the service waits on the client:
        # from a connection's opening or an answer's end until the next request is whole,
        # but never while an app works on a whole request, or while a pipelined request
        # waits behind it (uvicorn stops reading then; the clock starts at that answer).
        # httptools calls on_message_begin at a request's first byte; the request's cycle
        # (its app) starts at on_headers_complete, before its body has arrived.

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._sync()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._reading, self._begun_after = True, self.cycle
            self._in_head, self._head_bytes, self._head_parsed = True, 0, 0
            self._begun += 1
            self._sync()

        def on_url(self, url: bytes) -> None:
            self._head_parsed += len(url)
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._head_parsed += len(name) + len(value) + 4  # ': ' and CRLF
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._in_head = False
            if self._head_parsed > MAX_HEAD:  # arrived in one read: not counted as it came
                self._closing_with = HEAD_TOO_LARGE  # what the parser error is answered
                raise ValueError("head too large")  # the parser stops: no request starts
            super().on_headers_complete()
            self._sync()

        # What the parser refuses (a request it cannot read, headers past MAX_HEAD) is
        # answered after the answers owed to the requests before it on the connection,
        # in order, then the connection closes; nothing after it is read. (uvicorn wrote
        # its 400 at once and closed: an accepted webhook pipelined before it lost its
        # 202, the next one its answer, and the app's write to the closed connection was
        # logged as an error.)

        def data_received(self, data: bytes) -> None:
            if self._closing_with is not None:
                return
            counting, begun = self._in_head, self._begun  # a read wholly inside one head
            super().data_received(data)
            if counting and self._in_head and self._begun == begun and \
                    self._closing_with is None:
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD:
                    self._close_after_answers(HEAD_TOO_LARGE)

        def send_400_response(self, msg: str) -> None:  # uvicorn's, on a parser error
            self._close_after_answers(self._closing_with or BAD_REQUEST)

        def _close_after_answers(self, answer: bytes) -> None:
            self._closing_with = answer
            self._disarm()
            refused = self._pending()  # the refused request's cycle, if its headers were in
            if refused is not None and refused.response_started:  # its answer has begun:
                self._closing_with = b""  # only the close (as a deadline's _cut_off)
            if refused is not None and not refused.response_complete:
                refused.disconnected = True  # its app sees the client gone; sends nothing
                refused.message_event.set()
                kept = [(c, a) for c, a in self.pipeline if c is not refused]
                self.pipeline.clear()
                self.pipeline.extend(kept)
            self._end_if_answered()

        def _end_if_answered(self) -> None:
            if self._closing_with is None or self.transport.is_closing():
                return
            owed = self.pipeline or any(
                c is not None and not c.response_complete and not c.disconnected
                for c in (self.cycle, self._running))
            if not owed:
                if self._closing_with:
                    self.transport.write(self._closing_with)
                self.transport.close()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._reading = False
            self._sync()

        def _start_asgi_task(self, cycle: Any, app: Any) -> None:
            self._running = cycle  # self.cycle is the request parsed last, maybe queued
            super()._start_asgi_task(cycle, app)

        def on_response_complete(self) -> None:
            super().on_response_complete()  # may start a pipelined request
            self._sync(restart=True)  # from this answer, if the client is owed a request
            self._end_if_answered()

        def _pending(self) -> Any:
            """The cycle of the request being read, once its headers are in."""
            return self.cycle if self._reading and self.cycle is not self._begun_after \
                else None

        def _waiting_on_client(self) -> bool:
            if self.pipeline:  # a request waits behind a running app: reading is paused
                return False
            running = self.cycle is not None and not self.cycle.response_complete
            # nothing running: an idle connection or a request arriving; else only the
            # running app's own request, still arriving (its body)
            return not running or self._pending() is not None

        def _sync(self, restart: bool = False) -> None:
            if self.transport.is_closing() or self._closing_with is not None or \
                    not self._waiting_on_client():
                self._disarm()
            elif self._deadline is None or restart:
                self._disarm()
                self._deadline = self.loop.call_later(request_timeout, self._expired)

        def _expired(self) -> None:
            self._deadline = None
            if self._not_ours() or not self._waiting_on_client():
                return
            if self._service_holds(self._pending()):
                return
            if not self._reading:  # an idle kept-alive connection: nothing to answer
                self.transport.close()
                return
            _cut_off(self.transport, self._pending(), on_timeout)

    return DeadlineHttpToolsProtocol


def _h11_protocol(request_timeout: float, on_timeout: Callable[[], None] | None) -> type[Any]:
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    received = (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR)

    class DeadlineH11Protocol(_Deadline, H11Protocol):
        _timeout, _on_timeout = request_timeout, _static(on_timeout)
        _armed_cycle: Any = None  # the cycle (request) that was current when armed
        _got_bytes = False  # bytes arrived since the deadline was armed

        # The deadline runs exactly while a request is being read (h11's their_state
        # before DONE): set when a connection opens, when a kept-alive connection is
        # ready for its next request, and when a pipelined request starts; cleared once
        # the request is whole. _sync runs after every step that can change that state.

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            next_event = self.conn.next_event

            def checked() -> Any:  # h11 limits a head only while it is incomplete
                event = next_event()
                if isinstance(event, h11.Request) and len(event.target) + sum(
                        len(n) + len(v) + 4 for n, v in event.headers) > H11_MAX_HEAD:
                    raise h11.RemoteProtocolError("head too large")  # answered 400
                return event

            self.conn.next_event = checked  # type: ignore[method-assign]
            self._sync()

        def data_received(self, data: bytes) -> None:
            self._got_bytes = True
            super().data_received(data)

        def handle_events(self) -> None:
            super().handle_events()
            self._sync()

        def on_response_complete(self) -> None:
            super().on_response_complete()  # may start a pipelined request
            self._sync()

        def _sync(self) -> None:
            if self.transport.is_closing() or self.conn.their_state in received:
                self._disarm()
            elif self._deadline is None:
                self._armed_cycle, self._got_bytes = self.cycle, False
                self._deadline = self.loop.call_later(request_timeout, self._expired)

        def _expired(self) -> None:
            self._deadline = None
            if self._not_ours() or self.conn.their_state in received:
                return
            # The request being read: a cycle started since the deadline was armed (its
            # headers are in), or none yet (headers still coming, or nothing at all).
            pending = self.cycle if self.cycle is not self._armed_cycle else None
            if self._service_holds(pending):
                return
            if pending is None and self.conn.their_state is h11.IDLE and not self._got_bytes:
                self.transport.close()  # an idle kept-alive connection: nothing to answer
                return
            _cut_off(self.transport, pending, on_timeout)

    return DeadlineH11Protocol

"""A deadline for slow clients: uvicorn's h11 protocol, closing requests not read in time.

uvicorn holds a connection as long as its client keeps sending, however slowly: a client
that sends one header line a second, or a body at a byte a second, is never cut off,
and a few thousand of them hold the service (slowloris). :func:`deadline_protocol` makes
an ``H11Protocol`` whose connections must deliver each whole request (headers and body)
within ``request_timeout`` seconds of the connection opening or of the previous answer.
Past the deadline the client gets ``408 Request Timeout`` (or, if an answer has begun,
just the close). ``scopeguard serve`` runs uvicorn with it and with ``limit_concurrency``
(beyond that many connections, new requests get 503 so senders retry).

It subclasses uvicorn's own protocol (``uvicorn.protocols.http.h11_impl``), which has
no public hook for this: pyproject.toml bounds uvicorn's version, and
``tests/test_service_security.py`` fails if the hooks used here change (``connection_made``,
``data_received``, ``handle_events``, ``on_response_complete``, ``connection_lost``,
``conn``, ``cycle``, ``loop``, ``transport``).

Example::

    uvicorn.run(app, http=deadline_protocol(10.0, on_timeout=count), limit_concurrency=1000)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

_BODY = json.dumps({"error": "the request was not complete in time. Fix: send the whole "
                             "request at once (webhook senders do)."}).encode()
TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                    b"connection: close\r\ncontent-length: " + str(len(_BODY)).encode()
                    + b"\r\n\r\n" + _BODY)
_RECEIVED = (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR)


def deadline_protocol(request_timeout: float,
                      on_timeout: Callable[[], None] | None = None) -> type[H11Protocol]:
    """An h11 protocol class for ``uvicorn.Config(http=...)`` with a whole-request deadline.

    Args:
        request_timeout: seconds a client has to send each whole request.
        on_timeout: called (on the event loop) each time a connection is cut off.
    """

    class DeadlineH11Protocol(H11Protocol):
        _deadline: Any = None
        _armed_cycle: Any = None  # the cycle (request) that was current when armed
        _got_bytes = False  # bytes arrived since the deadline was armed

        # The deadline runs exactly while a request is being read (h11's their_state
        # before DONE): set when a connection opens, when a kept-alive connection is
        # ready for its next request, and when a pipelined request starts; cleared once
        # the request is whole. _sync runs after every step that can change that state.

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
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

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _sync(self) -> None:
            if self.transport.is_closing() or self.conn.their_state in _RECEIVED:
                self._disarm()
            elif self._deadline is None:
                self._armed_cycle, self._got_bytes = self.cycle, False
                self._deadline = self.loop.call_later(request_timeout, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if self.transport.is_closing() or self.conn.their_state in _RECEIVED:
                return
            # The request being read: a cycle started since the deadline was armed (its
            # headers are in), or none yet (headers still coming, or nothing at all).
            pending = self.cycle if self.cycle is not self._armed_cycle else None
            if pending is None and self.conn.their_state is h11.IDLE and not self._got_bytes:
                self.transport.close()  # an idle kept-alive connection: nothing to answer
                return
            if pending is None or not pending.response_started:
                self.transport.write(TIMEOUT_RESPONSE)
            if pending is not None:  # the app's read ends now; anything it sends is dropped
                pending.disconnected = True
                pending.message_event.set()
            self.transport.close()
            if on_timeout is not None:
                on_timeout()

    return DeadlineH11Protocol

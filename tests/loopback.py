"""What the fake REST servers (fake_github.py, fake_jira.py) share: a threaded HTTP server on
127.0.0.1 that hands every request to the fake and writes its JSON answer.

A fake subclasses :class:`LoopbackServer` and implements ``respond``::

    class FakeThing(LoopbackServer):
        def respond(self, method, raw_path, headers, raw_body):
            # headers: names lower-case; the answer: status, headers, JSON (None: no
            # body; bytes: sent as they are)
            return 200, {}, {"ok": True}

    with FakeThing() as fake:
        print(fake.port)
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client killed mid-request (the SIGKILL test) resets its connections: expected.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Hands each request to the fake and writes its JSON answer."""

    fake: LoopbackServer
    protocol_version = "HTTP/1.1"  # keep-alive, as requests sessions expect
    # Headers and body go out in two writes: with Nagle's algorithm and the client's
    # delayed ACK, every response would wait 40 ms.
    disable_nagle_algorithm = True

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, out_headers, payload = self.fake.respond(self.command, self.path, headers, raw)
        data = (b"" if payload is None else payload if isinstance(payload, bytes)
                else json.dumps(payload).encode())
        self.send_response(status)
        if payload is not None:
            self.send_header("Content-Type", self.fake.content_type)
        for key, value in out_headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the fakes record requests
        pass


class LoopbackServer:
    """Start, stop and the port of a fake; use as a context manager or call ``start()``."""

    content_type = "application/json; charset=utf-8"
    _server: _Server | None = None

    def respond(self, method: str, raw_path: str, headers: dict[str, str],
                raw_body: bytes) -> tuple[int, dict[str, str], Any]:
        raise NotImplementedError

    def start(self) -> Any:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = _Server(("127.0.0.1", 0), handler)
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True,
                         name=type(self).__name__).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server, "start() the fake first"
        return self._server.server_address[1]


class Page(LoopbackServer):
    """Answers every request 200 with the same bytes, labelled JSON: a proxy's login page
    (or JSON of another shape) where an API was expected."""

    content_type = "application/json"

    def __init__(self, body: bytes) -> None:
        self.body = body

    def respond(self, method: str, raw_path: str, headers: dict[str, str],
                raw_body: bytes) -> tuple[int, dict[str, str], Any]:
        return 200, {}, self.body

"""Requests an acceptor process takes but does not answer itself, relayed to the main one.

``/healthz``, ``/metrics`` and every other path but the webhook routes say what the whole
service does, so an acceptor (:mod:`.acceptors`) asks the main process over a Unix socket
in its private directory (:func:`private_socket`) and relays the answer; when the main
process does not answer in time, the acceptor answers 503 with ``Retry-After``.

Example::

    sock, path = private_socket(tempfile.mkdtemp(prefix="scopeguard-"))  # the main process
    app = create_app(service, forward=forward_to(path, timeout=10))      # an acceptor's
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
from collections.abc import Callable
from typing import Any

FORWARD_TIMEOUT = 10.0  # forward_to's default; serve's acceptors wait --request-timeout
_HOP = {b"connection", b"content-length", b"transfer-encoding", b"keep-alive", b"date",
        b"server"}


def forward_to(path: str, timeout: float = FORWARD_TIMEOUT) -> Callable[..., Any]:
    """An ASGI app that asks the main process (its Unix socket at ``path``) and relays the
    answer: ``/healthz`` and ``/metrics`` say what the whole service does, whichever
    process took the connection. 503 with ``Retry-After`` when it does not answer."""

    async def forward(scope: dict[str, Any], receive: Callable[[], Any],
                      send: Callable[[dict[str, Any]], Any]) -> None:
        if scope["type"] != "http":
            return
        target = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        # the client's Host (a redirect's Location names it); HEAD asked as GET, so the
        # answer's length is the one a GET gets (its body is dropped below)
        host = dict(scope.get("headers") or []).get(b"host", b"")
        host = host if re.fullmatch(rb"[!-~]{1,255}", host) else b"scopeguard"
        method = b"GET" if scope["method"] == "HEAD" else scope["method"].encode("latin-1")
        request = (method + b" " + target + b" HTTP/1.1\r\nhost: " + host +
                   b"\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_unix_connection(path)
                try:
                    writer.write(request)
                    data = await reader.read(8 << 20)
                    while chunk := await reader.read(8 << 20):
                        data += chunk
                finally:
                    writer.close()
            status, headers, body = _parse(data)
        except (OSError, TimeoutError, ValueError, IndexError) as exc:
            reason = "no answer in time" if isinstance(exc, TimeoutError) else str(exc)
            status, body = 503, json.dumps({
                "status": "error", "error": f"the service's main process did not answer "
                f"({reason[:200]}). Fix: see the log; restart scopeguard serve if it lasts."
                }).encode()
            headers = [(b"content-type", b"application/json"), (b"retry-after", b"30")]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body",
                    "body": b"" if scope["method"] == "HEAD" else body})

    return forward


def _parse(data: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers (less the hop-by-hop ones) and body of an HTTP/1.1 answer."""
    head, found, body = data.partition(b"\r\n\r\n")
    if not found:
        raise ValueError("an incomplete answer")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers, chunked = [], False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip()
        if name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        if name not in _HOP:
            headers.append((name, value))
    if chunked:
        out, rest = b"", body
        while True:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            out, rest = out + rest[:size], rest[size + 2:]
        body = out
    return status, headers, body


def private_socket(directory: str) -> tuple[socket.socket, str]:
    """The main process's Unix socket for forwarded requests, in its private directory."""
    path = os.path.join(directory, "main.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(256)
    return sock, path

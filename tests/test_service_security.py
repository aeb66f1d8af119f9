"""The webhook service under attack (issue 10): replayed bodies, slow clients, credentials in
URLs, weak secrets and bots' issues. ``scopeguard serve`` runs as a real uvicorn process
against the fake Jira and the fake GitHub over HTTP; the hashing embedder keeps it quick."""

from __future__ import annotations

import json
import logging
import re
import select
import socket
import threading
import time
from types import SimpleNamespace

import httpx
import pytest
from fake_github import FakeGitHub
from fake_jira import FakeJira, ServiceProcess, issue_event
from samples import LAB
from scopeguard.integrations import jira as jc
from scopeguard.integrations.service import logs
from scopeguard.integrations.service.settings import ServiceSettings

from scopeguard.cli import cli
from scopeguard.errors import ScopeguardError

SECRET = "whsec-5e6f7a8b9c0d1e2f"
GH_SECRET = "gh-whsec-0a1b2c3d4e5f6a7b"
GH_TOKEN = "ghp_SeCuRiTy0123456789abcdefTOKEN"
PAT = "pat-9f8e7d6c5b4a3210"
REPO = "acme/pawtrack"


@pytest.fixture(scope="module")
def jira():
    with FakeJira(flavour="server", pat=PAT) as server:
        yield server


@pytest.fixture(scope="module")
def github():
    with FakeGitHub(token=GH_TOKEN, login="scopeguard-bot") as server:
        server.add_repo(REPO)
        yield server


@pytest.fixture(scope="module")
def service(tmp_path_factory, jira, github, example_config):
    """Both routes, the hashing embedder, a 2 s request deadline."""
    process = ServiceProcess(tmp_path_factory.mktemp("secure"), jira, example_config, {
        "SCOPEGUARD_MODEL": "hashing", "SCOPEGUARD_WEBHOOK_SECRET": SECRET,
        "SCOPEGUARD_GITHUB_WEBHOOK_SECRET": GH_SECRET, "GITHUB_TOKEN": GH_TOKEN,
        "GITHUB_API_URL": github.base_url, "SCOPEGUARD_GITHUB_THROTTLE": "0",
        "SCOPEGUARD_REQUEST_TIMEOUT": "2"})
    yield process.start()
    process.stop()


@pytest.fixture(scope="module", params=["httptools", "h11"])
def guarded(request, tmp_path_factory, jira, example_config):
    """A 2 s request deadline on each HTTP parser the service can run (the slow-client
    tests run against both)."""
    process = ServiceProcess(tmp_path_factory.mktemp("guarded"), jira, example_config, {
        "SCOPEGUARD_MODEL": "hashing", "SCOPEGUARD_WEBHOOK_SECRET": SECRET,
        "SCOPEGUARD_REQUEST_TIMEOUT": "2", "SCOPEGUARD_HTTP": request.param})
    yield process.start()
    process.stop()


def github_event(github: FakeGitHub, number: int, action: str = "opened") -> dict:
    return {"action": action, "issue": github.issue_payload(REPO, number),
            "repository": {"full_name": REPO}, "sender": {"login": "octocat", "type": "User"}}


# --- replay ---------------------------------------------------------------------------------


def test_a_replayed_jira_body_under_a_new_delivery_id_is_a_duplicate(service, jira):
    jira.add_issue("PAW-70", *LAB)
    body = json.dumps(issue_event("PAW-70")).encode()
    first = service.post(body, delivery="orig-70")
    assert first.status_code == 202, first.text
    replays = [service.post(body, delivery=f"replay-70-{n}") for n in range(3)]
    assert [r.status_code for r in replays] == [200, 200, 200]
    assert all(r.json()["status"] == "duplicate" and "replay" in r.json()["reason"]
               for r in replays)
    assert not {f"replay-70-{n}" for n in range(3)} & set(service.events())
    # A new body (Jira's next delivery has a new timestamp) is queued as usual.
    assert service.post(issue_event("PAW-70"), delivery="next-70").status_code == 202
    assert service.metrics()['scopeguard_webhooks_received_total{result="replay"}'] == 3


def test_a_replayed_github_body_under_a_new_delivery_id_is_a_duplicate(service, github):
    number = github.add_issue(REPO, *LAB, user="harbourlane-tom")
    body = json.dumps(github_event(github, number)).encode()
    assert service.post_github(body, delivery="gh-orig").status_code == 202
    again = service.post_github(body, delivery="gh-replay")
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert "github:gh-replay" not in service.events()


def test_the_replay_window_is_configurable_and_token_deliveries_have_none(tmp_path):
    from scopeguard.integrations.service.queue import EventQueue

    now = [1000.0]
    queue = EventQueue(tmp_path / "q.db", clock=lambda: now[0])
    assert queue.accept("a", b"{}", replay_window=60) == "queued"
    assert queue.accept("b", b"{}", replay_window=60) == "replay"
    assert queue.accept("a", b"{}", replay_window=60) == "duplicate"
    assert queue.accept("c", b"{}") == "queued"  # no window: a token sender's resend
    now[0] += 61
    assert queue.accept("d", b"{}", replay_window=60) == "queued"  # outside the window
    queue.close()
    settings = ServiceSettings.from_env(
        {"SCOPEGUARD_WEBHOOK_SECRET": SECRET, "SCOPEGUARD_REPLAY_WINDOW": "3600"})
    assert settings.replay_window == 3600


# --- slow clients -----------------------------------------------------------------------------


def slow_headers(port: int, stop: threading.Event, received: list[bytes]) -> None:
    """A slowloris client: one header line a second, never finishing."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"POST /webhooks/jira HTTP/1.1\r\nHost: x\r\n")
        start = time.monotonic()
        try:
            while not stop.is_set() and time.monotonic() - start < 20:
                sock.sendall(b"X-Slow: 1\r\n")
                time.sleep(0.5)
        except OSError:  # the service closed the connection
            pass
        try:
            received.append(sock.recv(4096))
        except OSError:
            received.append(b"")


def test_slow_clients_are_cut_off_while_healthz_answers(guarded):
    stop, received = threading.Event(), []
    threads = [threading.Thread(target=slow_headers, args=(guarded.port, stop, received))
               for _ in range(200)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    try:
        for _ in range(5):  # the service keeps answering others meanwhile
            began = time.monotonic()
            assert guarded.get("/healthz").status_code == 200
            assert time.monotonic() - began < 1.0
            time.sleep(0.2)
        for thread in threads:
            thread.join(15)
    finally:
        stop.set()
    took = time.monotonic() - started
    assert len(received) == 200 and took < 12  # cut off at ~2 s, not after 20 s
    assert all(r.startswith(b"HTTP/1.1 408") for r in received)
    cut = guarded.metrics()['scopeguard_webhooks_rejected_total{reason="too_slow"}']
    assert cut >= 200


def test_a_body_trickled_a_byte_a_second_gets_408(guarded):
    body = json.dumps(issue_event("PAW-71")).encode()
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=30) as sock:
        sock.sendall(b"POST /webhooks/jira HTTP/1.1\r\nHost: x\r\nContent-Type: "
                     b"application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
        began = time.monotonic()
        answer = b""
        try:
            for byte in body:
                sock.sendall(bytes([byte]))
                time.sleep(0.25)
                if time.monotonic() - began > 15:
                    break
        except OSError:
            pass
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert time.monotonic() - began < 6
    assert not [d for d, e in guarded.events().items() if e["issue_key"] == "PAW-71"]


def trickle(port: int, first: bytes, seconds: float = 15) -> tuple[bytes, float]:
    """Send ``first``, then a byte every 0.25 s until the service closes the connection;
    what came back, and how long the connection lasted. What the service sent is read
    before each byte goes out: a byte written after its close would make the kernel reset
    the connection and drop the answer not yet read."""
    received, began = b"", time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(first)
        while time.monotonic() - began < seconds:
            if select.select([sock], [], [], 0.25)[0]:
                try:
                    chunk = sock.recv(65536)
                except OSError:
                    break
                if not chunk:
                    break
                received += chunk
                continue
            try:
                sock.sendall(b"x")
            except OSError:
                break
        try:
            sock.settimeout(2)
            while chunk := sock.recv(65536):
                received += chunk
        except OSError:
            pass
    return received, time.monotonic() - began


def test_a_pipelined_request_trickled_after_a_quick_one_is_cut_off(guarded):
    """The second of two pipelined requests gets its own deadline: a quick GET, then a POST
    whose body trickles in, on one connection."""
    answer, lasted = trickle(guarded.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                             b"POST /webhooks/jira HTTP/1.1\r\nHost: x\r\nContent-Type: "
                             b"application/json\r\nContent-Length: 100000\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200") and b"HTTP/1.1 408" in answer, answer[:300]
    assert lasted < 6


def read_all(sock: socket.socket, seconds: float = 10) -> bytes:
    """Everything the service sends until it closes the connection (or resets it)."""
    received, sock_timeout = b"", time.monotonic() + seconds
    sock.settimeout(seconds)
    try:
        while time.monotonic() < sock_timeout and (chunk := sock.recv(65536)):
            received += chunk
    except OSError:
        pass
    return received


def test_headers_sent_without_end_are_refused_at_once(guarded):
    """A header sent on and on (httptools joined its pieces anew at every read, holding
    the event loop for seconds as it grew): refused once past 64 KB (h11 at 16 KB), long
    before the request deadline, while /healthz answers at once."""
    answer, began = b"", time.monotonic()
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=30) as sock:
        sock.sendall(b"POST /webhooks/jira HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            for _ in range(64):  # up to 4 MB, 64 KB at a time, reading what comes back
                if select.select([sock], [], [], 0.01)[0]:
                    break
                sock.sendall(b"a" * 65536)
        except OSError:  # the service closed the connection
            pass
        refused_after = time.monotonic() - began
        assert guarded.get("/healthz").status_code == 200
        answer = read_all(sock)
    assert answer.startswith((b"HTTP/1.1 431", b"HTTP/1.1 400")), answer[:200]
    assert refused_after < 1.5  # the deadline is 2 s: not a 408


def test_a_head_past_64_kb_sent_at_once_is_refused_too(guarded):
    """A 70 KB header in one write behind a pipelined request (only reads that ended
    inside a head were counted: it reached the app, a 401): the request before it gets
    its answer, then 431 (400 on h11, past its 16 KB), and nothing more is read."""
    big = (b"POST /webhooks/jira HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 +
           b"\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=30) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + big +
                     b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = read_all(sock)
    statuses = re.findall(rb"HTTP/1\.1 (\d+)", answer)
    assert statuses[0] == b"200" and statuses[1:] in ([b"431"], [b"400"]), answer[:300]
    assert b"401" not in answer
    assert (statuses[1] == b"431") == (guarded.env["SCOPEGUARD_HTTP"] == "httptools")
    assert guarded.get("/healthz").status_code == 200


def test_pipelined_webhooks_before_a_broken_request_each_get_their_answer(guarded):
    """Two signed webhooks and a line that is no request, in one write: each webhook is
    answered (202) and queued, then the broken one gets 400 and the connection closes
    (httptools answered 400 alone: the queued webhook's 202 lost, the next one dropped,
    an application error in the log)."""
    from scopeguard.integrations.service.auth import sign

    sent = b""
    for n in (1, 2):
        body = json.dumps(issue_event(f"PAW-8{n}")).encode()
        sent += (b"POST /webhooks/jira HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                 b"\r\nX-Hub-Signature: " + sign(SECRET, body).encode() +
                 b"\r\nX-Atlassian-Webhook-Identifier: pipe-%s-%d\r\nContent-Length: %d"
                 b"\r\n\r\n" % (guarded.url[-5:].encode(), n, len(body)) + body)
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=30) as sock:
        sock.sendall(sent + b"BROKEN\r\n\r\n")
        received = read_all(sock)
    assert re.findall(rb"HTTP/1.1 (\d{3})", received) == [b"202", b"202", b"400"], received
    queued = {d for d in guarded.events() if d.startswith(f"pipe-{guarded.url[-5:]}-")}
    assert len(queued) == 2
    assert "Exception in ASGI application" not in guarded.log.read_text()


def test_an_idle_kept_alive_connection_is_closed_quietly(guarded):
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=30) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        received, began = b"", time.monotonic()
        while chunk := sock.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 200") and received.count(b"HTTP/1.1 ") == 1
    assert b"408" not in received  # no answer to a request that never came
    assert time.monotonic() - began < 8


def test_a_connection_answered_early_still_has_its_deadline(guarded):
    """An answer sent before the request's body is in (a 413 from Content-Length,
    /healthz with a body): the rest of the body, then silence, must not hold the
    connection for ever (uvicorn's own keep-alive timer was cancelled by that data)."""
    for first in (b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n",
                  b"POST /webhooks/jira HTTP/1.1\r\nHost: x\r\nContent-Type: "
                  b"application/json\r\nContent-Length: 99999999\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", guarded.port), timeout=30) as sock:
            sock.sendall(first)
            answer = sock.recv(65536)
            assert answer.startswith((b"HTTP/1.1 200", b"HTTP/1.1 413")), answer[:200]
            began = time.monotonic()
            try:
                sock.sendall(b"x")  # the rest of the body (or some of it), then nothing
                while sock.recv(65536):
                    pass
            except OSError:  # reset: closed as well
                pass
            assert time.monotonic() - began < 8, first  # closed, not held


class SlowApp:
    """An ASGI app whose /slow answers after 2.5 s (a worker busy on a whole request),
    whose /late reads its body only after 2 s, and whose /big answers 1 MB."""

    async def __call__(self, scope, receive, send):
        import asyncio

        if scope["type"] != "http":
            return
        if scope["path"] == "/late":
            await asyncio.sleep(2.0)
        if scope["path"] == "/just-before":  # reads just before the 1 s deadline's 2nd round
            await asyncio.sleep(1.9)
        while (await receive()).get("more_body"):
            pass
        if scope["path"] == "/slow":
            await asyncio.sleep(2.5)
        body = b"x" * 1_000_000 if scope["path"] == "/big" else b"ok"
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture(params=["httptools", "h11"])
def slow_server(request):
    """The slow app under uvicorn with a 1 s request deadline, on each parser."""
    import uvicorn
    from fake_jira import free_port
    from scopeguard.integrations.service.http_guard import deadline_protocol

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(SlowApp(), host="127.0.0.1", port=port,
                                           log_config=None, lifespan="off",
                                           http=deadline_protocol(1.0, http=request.param)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield SimpleNamespace(port=port, server=server)
    server.should_exit = True
    thread.join(10)


def test_a_request_piped_behind_a_working_app_is_not_cut_off(slow_server):
    """The clock stops while an app works on a whole request: a second request sent
    whole behind it (pipelined) waits, and both are answered in order."""
    body = b"x" * 300_000  # more than one read: uvicorn pauses reading behind the app
    with socket.create_connection(("127.0.0.1", slow_server.port), timeout=30) as sock:
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)
        sock.sendall(b"POST /fast HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                     % len(body) + body)
        received = b""
        while received.count(b"HTTP/1.1 ") < 2:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    assert received.count(b"HTTP/1.1 200") == 2 and b"408" not in received, received[:300]


def test_many_small_pipelined_requests_are_no_oversized_head(slow_server):
    """9,000 pipelined GETs (about 300 KB, read in large pieces, each piece ending inside
    the next request's head): each answered, none taken for a head past 64 KB (431)."""
    with socket.create_connection(("127.0.0.1", slow_server.port), timeout=30) as sock:
        sock.sendall(b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n" * 9000)
        received = b""
        while received.count(b"HTTP/1.1 ") < 9000:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            received += chunk
    assert received.count(b"HTTP/1.1 200") == 9000 and b" 431 " not in received


def test_a_request_half_sent_behind_a_working_app_is_cut_off_after_its_answer(slow_server):
    """The next request's clock starts when the previous answer ends: the slow app's 200
    comes first, then the half-sent request is cut off (with a 408 on httptools; h11,
    holding the half request unparsed, closes the connection quietly)."""
    with socket.create_connection(("127.0.0.1", slow_server.port), timeout=30) as sock:
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)
        began = time.monotonic()
        sock.sendall(b"POST /fast HTTP/1.1\r\nHost: x\r\n")  # and nothing more
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except OSError:
            pass
        lasted = time.monotonic() - began
    assert received.startswith(b"HTTP/1.1 200"), received[:300]
    assert received.count(b"HTTP/1.1 200") == 1 and 2.5 < lasted < 8


def test_the_service_s_own_waits_are_not_charged_to_the_client(slow_server):
    """A large body sent at once to an app that reads it late (uvicorn stops reading past
    64 KB until the app reads), and a client waiting for 100 Continue (sent when the app
    first reads): both are answered, not cut off at the 1 s deadline."""
    body = b"x" * 300_000
    with socket.create_connection(("127.0.0.1", slow_server.port), timeout=30) as sock:
        sock.sendall(b"POST /late HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                     % len(body) + body)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    with socket.create_connection(("127.0.0.1", slow_server.port), timeout=30) as sock:
        sock.sendall(b"POST /late HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                     b"Content-Length: 2\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 100")
        sock.sendall(b"{}")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")


def test_the_body_s_clock_starts_at_the_100_continue(slow_server):
    """The client sends its body only once 100 Continue came: it gets a whole deadline
    from there, even when the 100 went out just before the deadline's next round (it was
    cut off at that round, 0.1 s after the 100)."""
    with socket.create_connection(("127.0.0.1", slow_server.port), timeout=30) as sock:
        sock.sendall(b"POST /just-before HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                     b"Content-Length: 2\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 100")
        time.sleep(0.6)  # well within 1 s of the 100
        sock.sendall(b"{}")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")


def test_a_client_that_never_reads_its_answers_is_dropped(slow_server, caplog):
    """Requests sent, answers never read: the write buffer fills and uvicorn would wait for
    room for ever (holding the connection and its task). Past the deadline the connection
    is dropped, quietly: the app answering a pipelined request sees a client gone, not an
    error (uvloop raises on a write to the dropped connection)."""
    with socket.create_connection(("127.0.0.1", slow_server.port), timeout=30) as sock:
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n" * 20)  # 20 MB of answers
        began = time.monotonic()
        while not slow_server.server.server_state.connections and time.monotonic() - began < 5:
            time.sleep(0.01)  # until the service holds it
        began = time.monotonic()
        while slow_server.server.server_state.connections and time.monotonic() - began < 15:
            time.sleep(0.1)
        assert not slow_server.server.server_state.connections, "still held"
        assert time.monotonic() - began < 8
        received = b""
        try:
            while chunk := sock.recv(1 << 20):
                received += chunk
        except OSError:
            pass
    assert len(received) < 20_000_000  # its answers were dropped, not waited for
    time.sleep(0.3)  # the dropped connection's app ends
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors


def test_the_deadline_protocol_still_fits_uvicorn():
    """http_guard subclasses uvicorn's protocols: the hooks it uses must still exist."""
    from scopeguard.integrations.service import http_guard
    from uvicorn.protocols.http import h11_impl, httptools_impl

    for name in ("connection_made", "data_received", "handle_events", "on_response_complete",
                 "connection_lost"):
        assert callable(getattr(h11_impl.H11Protocol, name))
    for name in ("connection_made", "on_message_begin", "on_headers_complete",
                 "on_message_complete", "on_response_complete", "connection_lost",
                 "data_received", "send_400_response"):
        assert callable(getattr(httptools_impl.HttpToolsProtocol, name))
    for module in (h11_impl, httptools_impl):
        cycle_fields = module.RequestResponseCycle.__init__.__code__.co_names
        assert {"response_started", "disconnected", "message_event",
                "response_complete"} <= set(cycle_fields)
    assert {"cycle", "pipeline", "transport", "loop"} <= set(
        httptools_impl.HttpToolsProtocol.__init__.__code__.co_names)
    assert http_guard.TIMEOUT_RESPONSE.startswith(b"HTTP/1.1 408 ")
    assert http_guard.parser() == "httptools"  # the serve extra, which the tests install
    assert issubclass(http_guard.deadline_protocol(1.0), httptools_impl.HttpToolsProtocol)
    assert issubclass(http_guard.deadline_protocol(1.0, http="h11"), h11_impl.H11Protocol)


def test_an_unknown_http_parser_is_refused_with_the_fix():
    with pytest.raises(ScopeguardError, match="SCOPEGUARD_HTTP='nginx'.*auto, httptools or h11"):
        ServiceSettings.from_env({"SCOPEGUARD_WEBHOOK_SECRET": SECRET, "SCOPEGUARD_HTTP": "nginx"})


# --- credentials and secrets ------------------------------------------------------------------


def test_a_jira_url_with_credentials_is_refused_without_echoing_them(runner, example_config,
                                                                    tmp_path):
    env = {"JIRA_URL": "http://bob:s3cr3t-passw0rd@jira.example.com", "JIRA_PAT": PAT,
           "SCOPEGUARD_WEBHOOK_SECRET": SECRET}
    result = runner.invoke(cli, ["serve", "-c", str(example_config), "--queue",
                                 str(tmp_path / "q.db")], env=env)
    assert result.exit_code == 2
    assert "JIRA_URL carries a user name or password" in result.output
    assert "s3cr3t-passw0rd" not in result.output and "bob" not in result.output
    with pytest.raises(jc.JiraConfigError, match="JIRA_PAT"):
        jc.make_jira(environ=env)


@pytest.mark.parametrize("url", ["bob:hunter22@jira.example.com",
                                 "https://bob@jira.example.com/jira",
                                 "ftp://bob:hunter22@jira.example.com",
                                 "jira.example.com:hunter22",
                                 "https://jira.example.com/?token=hunter22&bob=1",
                                 "https://jira.example.com/#hunter22bob"])
def test_a_jira_url_is_never_repeated_in_an_error(url):
    with pytest.raises(jc.JiraConfigError) as caught:
        jc.make_jira(environ={"JIRA_URL": url, "JIRA_PAT": PAT})
    assert "hunter22" not in str(caught.value) and "bob" not in str(caught.value)
    assert "JIRA_URL" in str(caught.value) and "Fix:" in str(caught.value)


@pytest.mark.parametrize("url", ["http://[::1", "http://127.0.0.1:99999", "http://jira:port",
                                 "http://exa%mple.com", "https://jira example.com"])
def test_a_jira_url_whose_host_or_port_cannot_be_read_is_bad_input(runner, example_config,
                                                                    tmp_path, url):
    """Was a ValueError traceback (a bad IPv6 host) or a 'check the file and its disk' fix
    (a port out of range), from every command that reads Jira."""
    with pytest.raises(jc.JiraConfigError, match="JIRA_URL is not a valid URL"):
        jc.make_jira(environ={"JIRA_URL": url, "JIRA_PAT": PAT})
    result = runner.invoke(cli, ["history", "-c", str(example_config), "--jira", "PAW",
                                 "--db", str(tmp_path / "h.db")],
                           env={"JIRA_URL": url, "JIRA_PAT": PAT})
    assert result.exit_code == 2 and "JIRA_URL is not a valid URL" in result.output, \
        result.output
    for fine in ("http://[::1]:8080", "https://jira.example.com:8443/jira",
                 "https://bücher.example"):
        assert jc.make_jira(environ={"JIRA_URL": fine, "JIRA_PAT": PAT}).server


@pytest.mark.parametrize("url, shown", [
    ("https://bob:hunter2hunter2@jira.example.com/rest", "https://***@jira.example.com/rest"),
    ("http://bob:p@ss@proxy.example/x", "http://***@proxy.example/x"),
    ("see http://jira.example.com/a@b", "see http://jira.example.com/a@b"),
])
def test_log_lines_never_carry_credentials_in_urls(url, shown):
    scrub = logs.Scrub([SECRET])
    record = logging.LogRecord("x", logging.INFO, "", 0, "calling %s with %s",
                               (url, SECRET), None)
    scrub.filter(record)
    assert record.getMessage() == f"calling {shown} with ***"


@pytest.mark.parametrize("flavour", ["server", "cloud"])
def test_credentials_with_stray_whitespace_are_masked_as_sent(flavour):
    """make_jira strips JIRA_TOKEN, JIRA_PAT and JIRA_EMAIL; the log mask must hold what
    goes on the wire (the stripped token, base64 of the stripped email:token), not only
    the variable's raw value with its newline."""
    creds = {"pat": PAT} if flavour == "server" else {"email": "bot@x.example",
                                                       "token": "atl-token-5a6b7c8d"}
    with FakeJira(flavour=flavour, **creds) as server:
        server.add_issue("PAW-1", *LAB)
        env = {k: (f" {v}\n" if k != "JIRA_URL" else v) for k, v in server.env.items()}
        env["GITHUB_TOKEN"] = GH_TOKEN + "\r\n"
        jc.make_jira(environ=env).get_issue("PAW-1")
        [sent] = [c.headers["authorization"] for c in server.calls("GET", "/issue/PAW-1")]
    scrub = logs.Scrub(logs.client_secrets(env))
    record = logging.LogRecord("x", logging.INFO, "", 0, "sent %r and %s, token %s %s",
                               (sent, sent, sent.split()[1], GH_TOKEN), None)
    scrub.filter(record)
    message = record.getMessage()
    assert sent.split()[1] not in message and GH_TOKEN not in message
    assert "***" in message and not any(v.strip() in message for v in creds.values())


def test_webhook_fields_cannot_forge_log_lines():
    """An event name, key or delivery id holding a line break (or any control character)
    is logged escaped: one record stays one line; a traceback keeps its lines."""
    scrub = logs.Scrub([SECRET])
    forged = "jira:worklog_updated\n2026-12-02 14:00:00,000 ERROR scopeguard.serve: FORGED"
    record = logging.LogRecord("scopeguard.serve", logging.INFO, "", 0,
                               "ignored %s %s (delivery %s): %s",
                               (forged, "X\r\nY\u2028Z", "d\x1b[2J" + SECRET, "why"), None)
    scrub.filter(record)
    line = record.getMessage()
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert "\u2028" not in line and "\\n2026-12-02" in line and "***" in line
    assert SECRET not in line
    try:
        raise ValueError("boom " + forged)  # an exception repeating what a sender wrote
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, "", 0, "failed: %s", ("a\nb",),
                                   sys.exc_info())
    scrub.filter(record)
    head, *trace = record.getMessage().split("\n")
    assert head == "failed: a\\nb" and trace[0].strip().startswith("Traceback")
    assert all(line.startswith("  ") for line in trace), trace  # none reads as a record
    assert trace[-2:] == ["  ValueError: boom jira:worklog_updated",
                          "  2026-12-02 14:00:00,000 ERROR scopeguard.serve: FORGED"]


def test_a_token_with_plus_signs_is_accepted_unencoded_in_the_query():
    """'?token=a+b' reads as 'a b' (form encoding): a token holding '+' matches sent as it
    is, or URL-encoded; a wrong one gets a 401 that says to URL-encode ?token=."""
    from urllib.parse import quote

    from scopeguard.integrations.service.app import Incoming
    from scopeguard.integrations.service.auth import authenticate

    token = "Zm9v+YmFy/YmF6=cXV4LXRva2Vu+123"

    def check(query: str, headers: dict | None = None) -> tuple[str, str]:
        scope = {"headers": [(k.encode(), v.encode()) for k, v in (headers or {}).items()],
                 "query_string": query.encode("latin-1")}
        request = Incoming(scope, lambda: None)
        return authenticate(request.headers, request.query_params, b"{}", secret="",
                            token=token)

    assert check(f"token={token}") == ("token", "")
    assert check(f"token={quote(token, safe='')}") == ("token", "")
    assert check("", {"Authorization": f"Bearer {token}"}) == ("token", "")
    assert check("", {"Authorization": f"Bearer {token.replace('+', ' ')}"})[0] == ""
    how, why = check(f"token={token.replace('+', '-')}")
    assert how == "" and "URL-encode" in why and "%2B" in why and token not in why


@pytest.mark.parametrize("value, words", [("short-secret", "12 characters"),
                                          ("   \t  ", "only whitespace")])
@pytest.mark.parametrize("name", ["SCOPEGUARD_WEBHOOK_SECRET", "SCOPEGUARD_WEBHOOK_TOKEN",
                                  "SCOPEGUARD_GITHUB_WEBHOOK_SECRET"])
def test_weak_webhook_secrets_are_refused_at_start(name, value, words, runner, example_config):
    with pytest.raises(ScopeguardError, match=words) as caught:
        ServiceSettings.from_env({name: value})
    assert name in str(caught.value) and "secrets.token_hex" in str(caught.value)
    result = runner.invoke(cli, ["serve", "-c", str(example_config)],
                           env={name: value, "JIRA_URL": "http://127.0.0.1:9", "JIRA_PAT": PAT})
    assert result.exit_code == 2 and name in result.output
    assert value.strip() not in result.output or not value.strip()


def test_secrets_are_trimmed_not_refused_for_a_trailing_newline():
    settings = ServiceSettings.from_env({"SCOPEGUARD_WEBHOOK_SECRET": SECRET + "\n"})
    assert settings.webhook_secret == SECRET


# --- bots -------------------------------------------------------------------------------------


def test_an_issue_comment_body_replayed_as_an_issues_event_is_refused(service, github):
    """X-GitHub-Event is not signed: a captured issue_comment body sent again as `issues`
    would be queued as issues.edited. Such a body carries a comment: 400."""
    number = github.add_issue(REPO, *LAB, user="harbourlane-tom")
    body = {**github_event(github, number, "edited"),
            "comment": {"id": 1, "body": "+1", "user": {"login": "octocat", "type": "User"}}}
    answer = service.post_github(body, delivery="gh-comment-as-issue")
    assert answer.status_code == 400 and "issue_comment" in answer.json()["error"]
    assert "github:gh-comment-as-issue" not in service.events()


@pytest.mark.parametrize("shape", [{"user": {"login": 5, "type": ["Bot"]}}, {"user": "x"},
                                   {"labels": "bug"}, {"labels": [5, {"name": None}]}])
def test_odd_payload_shapes_are_answered_not_crashed(service, github, shape):
    number = github.add_issue(REPO, *LAB, user="harbourlane-tom")
    payload = github_event(github, number)
    payload["issue"].update(shape)
    payload["label"] = "not-an-object"
    answer = service.post_github(payload)
    assert answer.status_code in (202, 400), answer.text


def test_a_bots_github_issue_is_not_queued(service, github):
    number = github.add_issue(REPO, "Update dependency numpy to v2", "Renovate",
                              user="renovate[bot]", user_type="Bot")
    answer = service.post_github(github_event(github, number), delivery="gh-bot")
    assert answer.status_code == 202 and answer.json()["status"] == "ignored"
    assert "bot" in answer.json()["reason"]
    assert "github:gh-bot" not in service.events()


def test_health_tells_the_truth_under_a_burst(service):
    """A burst of normal clients is served; slow ones do not make healthz lie or stall."""
    with httpx.Client(timeout=10) as client:
        answers = [client.get(service.url + "/healthz") for _ in range(50)]
    assert {a.status_code for a in answers} == {200}
    assert {a.json()["status"] for a in answers} == {"ready"}


@pytest.mark.parametrize("text, shown", [
    ("clone https://ghp_abcdefgh12345678:x-oauth-basic@github.com/o/r",
     "clone https://***@github.com/o/r"),  # a token as the user, with or without ':'
    ("at https://TOKENabcdefgh1234:@host.example/x", "at https://***@host.example/x"),
    ("https://bob:p@ss@proxy.example/x", "https://***@proxy.example/x"),
    ("postgresql://postgres:***@127.0.0.1:5432/db: refused",  # masked already: who stays
     "postgresql://postgres:***@127.0.0.1:5432/db: refused"),
    ("see http://jira.example.com/a@b", "see http://jira.example.com/a@b"),
])
def test_what_leaves_the_process_carries_no_userinfo(text, shown):
    assert logs.mask_secrets(text) == shown


def test_one_mask_for_logs_answers_and_errors(monkeypatch):
    """Kept secrets (the service's settings), the environment's credentials and the GitHub
    tokens its clients registered (an App's installation token as it is issued) are
    masked by mask_secrets, longest first, and so by every log line."""
    from scopeguard.integrations.github.errors import keep_secret

    monkeypatch.setenv("JIRA_TOKEN", "jira-env-token-1234")
    logs.keep_secrets(["kept-webhook-secret-99", "kept-webhook-secret-99-and-more"])
    keep_secret("ghs_registeredToken0123456789")
    text = ("a jira-env-token-1234 b kept-webhook-secret-99-and-more c kept-webhook-secret-99 "
            "d ghs_registeredToken0123456789 e")
    assert logs.mask_secrets(text) == "a *** b *** c *** d *** e"
    record = logging.LogRecord("x", logging.INFO, "", 0, "%s", (text,), None)
    logs.Scrub([]).filter(record)
    assert record.getMessage() == "a *** b *** c *** d *** e"


def test_an_absolute_form_request_is_routed_on_both_parsers(guarded, jira):
    """A request line naming the whole URL (RFC 9112's absolute-form, as a forward proxy
    sends it) reached the webhook on httptools and got 404 on h11 (its path was the whole
    target). Both route it by the URL's path now."""
    from scopeguard.integrations.service.auth import sign

    jira.add_issue("PAW-88", *LAB)
    body = json.dumps(issue_event("PAW-88")).encode()
    host = f"127.0.0.1:{guarded.port}"
    for target, head, code in [
            (f"http://{host}/webhooks/jira", "POST", b"202"),
            (f"HTTP://{host}/healthz?x=1", "GET", b"200"),
            (f"http://{host}/nowhere", "GET", b"404"),
            (f"http://{host}/webhooks/jira%3Fx", "POST", b"404")]:  # %3F: in the path
        extra = (f"Content-Type: application/json\r\nX-Hub-Signature: {sign(SECRET, body)}\r\n"
                 f"X-Atlassian-Webhook-Identifier: abs-{guarded.port}{target[-2:]}\r\n"
                 f"Content-Length: {len(body)}\r\n") if head == "POST" else ""
        with socket.create_connection(("127.0.0.1", guarded.port), timeout=10) as sock:
            sock.sendall(f"{head} {target} HTTP/1.1\r\nHost: {host}\r\n{extra}"
                         "Connection: close\r\n\r\n".encode() + (body if head == "POST" else b""))
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.split(b" ", 2)[1] == code, (target, answer[:300])
    assert f"abs-{guarded.port}ra" in guarded.events()

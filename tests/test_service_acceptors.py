"""Acceptor processes (``scopeguard serve --acceptors N``, integrations/service/acceptors.py):
webhooks taken by several processes on one port, none lost or counted twice; ``/healthz``
and ``/metrics`` answered by the main process whichever process took the connection (503
when it does not answer); its error reaches them; an acceptor that dies is started
again; none outlives the service. Real ``scopeguard serve`` processes, real sockets, the
fake Jira over HTTP; each request below on a connection of its own, so the kernel spreads
them over the processes."""

from __future__ import annotations

import glob
import json
import os
import signal
import socket
import time
from types import SimpleNamespace

import httpx
import pytest
from fake_jira import FakeJira, ServiceProcess, issue_event
from scopeguard.integrations.service.acceptors import AcceptorPool, listen_socket
from scopeguard.integrations.service.auth import sign
from scopeguard.integrations.service.forward import _parse
from scopeguard.integrations.service.metrics import Metrics
from scopeguard.integrations.service.settings import ServiceSettings
from test_service_workers import alive

from scopeguard.errors import ScopeguardError

SECRET = "acceptor-secret-1a2b3c4d5e6f"
PAT = "acceptor-pat"


@pytest.fixture
def jira():
    with FakeJira(flavour="server", pat=PAT) as fake:
        yield fake


def service_of(tmp_path, jira, config, **env: str) -> ServiceProcess:
    return ServiceProcess(tmp_path, jira, config,
                          {"SCOPEGUARD_WEBHOOK_SECRET": SECRET, "SCOPEGUARD_MODEL": "hashing",
                           **env}, args=("--acceptors", "2"))


def fresh_post(service: ServiceProcess, key: str, delivery: str,
               timeout: float = 30) -> httpx.Response:
    """A signed webhook on a new connection (httpx.post opens and closes one)."""
    body = json.dumps(issue_event(key)).encode()
    return httpx.post(service.url + "/webhooks/jira", content=body, timeout=timeout,
                      headers={"Content-Type": "application/json",
                               "X-Hub-Signature": sign(SECRET, body),
                               "X-Atlassian-Webhook-Identifier": delivery})


def add_issues(jira: FakeJira, count: int) -> None:
    for n in range(count):
        jira.add_issue(f"PAW-{n}", f"Send reminders by SMS ({n})", "Clinic 4 asks.")


def acceptors(service: ServiceProcess) -> list[dict]:
    return service.get("/healthz").json()["acceptors"]


def test_webhooks_through_two_processes_are_all_queued_processed_and_counted(
        tmp_path, jira, example_config):
    add_issues(jira, 40)
    service = service_of(tmp_path, jira, example_config).start()
    try:
        answers = [fresh_post(service, f"PAW-{n}", f"d-{n}") for n in range(40)]
        assert [a.status_code for a in answers] == [202] * 40
        # the same delivery again, to whichever process: a duplicate, never queued twice
        again = [fresh_post(service, "PAW-0", "d-0").status_code for _ in range(6)]
        assert again == [200] * 6
        service.wait_idle()
        events = service.events()
        assert len(events) == 40 and {e["state"] for e in events.values()} == {"done"}
        assert all(len(jira.comments[f"PAW-{n}"]) == 1 and jira.labels(f"PAW-{n}")
                   for n in range(40))
        # the acceptor's counts reach the main process's /metrics (twice a second)
        def counted() -> tuple[float | None, float | None]:
            metrics = service.metrics()
            return (metrics.get('scopeguard_webhooks_received_total{result="queued"}'),
                    metrics.get('scopeguard_webhooks_received_total{result="duplicate"}'))

        service.wait(lambda: counted() == (40, 6), 10,
                     "/metrics to count the webhooks of both processes")
        time.sleep(1)  # two more flushes: nothing counted twice
        assert counted() == (40, 6)
        service.wait(lambda: acceptors(service)[0]["webhooks"] > 0, 5, "acceptor counts")
        (second,) = acceptors(service)
        # connections are spread: the acceptor took some, not all (46 on 2 sockets)
        assert second["number"] == 2 and second["running"] and 0 < second["webhooks"] < 46
        assert alive(second["pid"]) and second["pid"] != service.proc.pid
    finally:
        service.stop()


def test_health_comes_from_the_main_process_or_says_it_does_not_answer(
        tmp_path, jira, example_config):
    service = service_of(tmp_path, jira, example_config,
                         SCOPEGUARD_REQUEST_TIMEOUT="2").start()
    try:
        for _ in range(12):  # through both processes: the main process's answer each time
            answer = httpx.get(service.url + "/healthz", timeout=10)
            assert answer.status_code == 200 and answer.json()["status"] == "ready"
            assert answer.json()["acceptors"][0]["number"] == 2
            assert answer.headers["content-type"] == "application/json"
        metrics = httpx.get(service.url + "/metrics", timeout=10)
        assert metrics.status_code == 200 and "scopeguard_queue_depth" in metrics.text
        assert httpx.get(service.url + "/nowhere", timeout=10).status_code == 404
        # whichever process answers: a redirect names the client's host, HEAD has GET's
        # length (relayed, they named a host of the relay's own and a length of 0)
        for _ in range(12):
            moved = httpx.get(service.url + "/healthz/", timeout=10)
            assert moved.status_code == 307, moved.status_code
            assert moved.headers["location"] == service.url + "/healthz"
            head = httpx.head(service.url + "/healthz", timeout=10)
            assert head.status_code == 200 and int(head.headers["content-length"]) > 50
        # the main process stopped (SIGSTOP): an acceptor does not answer for it
        os.kill(service.proc.pid, signal.SIGSTOP)
        try:
            said = []
            for _ in range(30):
                try:
                    said.append(httpx.get(service.url + "/healthz", timeout=4))
                except httpx.TimeoutException:  # a connection the main process holds
                    continue
                if said[-1].status_code == 503:
                    break
            assert said and said[-1].status_code == 503, [s.status_code for s in said]
            assert "main process did not answer" in said[-1].json()["error"]
            assert said[-1].headers["retry-after"] == "30"
        finally:
            os.kill(service.proc.pid, signal.SIGCONT)
        # (a new connection: the kept-alive one may be closed as the process wakes)
        assert httpx.get(service.url + "/healthz", timeout=10).status_code == 200
    finally:
        service.stop()


def test_the_main_process_error_refuses_webhooks_in_every_process(tmp_path, jira,
                                                                  example_config):
    broken = tmp_path / "model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "t5"}')
    service = service_of(tmp_path, jira, example_config, SCOPEGUARD_MODEL=str(broken))
    service.start(ready=False)
    try:
        service.wait(lambda: service.get("/healthz").json()["status"] == "error", 90,
                     "/healthz to say error")
        time.sleep(1)  # the monitor tells the acceptor within a quarter of a second
        codes = [fresh_post(service, "PAW-1", f"e-{n}").status_code for n in range(24)]
        assert codes == [503] * 24  # without it, the acceptor's share would be 202
        assert service.events() == {}
    finally:
        service.stop()


def test_a_killed_acceptor_is_started_again_and_nothing_it_answered_is_lost(
        tmp_path, jira, example_config):
    add_issues(jira, 30)
    service = service_of(tmp_path, jira, example_config).start()
    try:
        assert [fresh_post(service, f"PAW-{n}", f"k-{n}").status_code
                for n in range(15)] == [202] * 15
        (first,) = acceptors(service)
        os.kill(first["pid"], signal.SIGKILL)
        service.wait(lambda: not alive(first["pid"]), 10, "the acceptor to die")
        # meanwhile the main process takes every new connection
        assert [fresh_post(service, f"PAW-{n}", f"k-{n}").status_code
                for n in range(15, 30)] == [202] * 15
        service.wait(lambda: acceptors(service)[0]["pid"] != first["pid"]
                     and acceptors(service)[0]["running"], 20, "the acceptor's restart")
        assert "acceptor 2 (pid" in service.log.read_text()
        service.wait_idle()
        assert len(service.events()) == 30
        assert {e["state"] for e in service.events().values()} == {"done"}
    finally:
        service.stop()


def test_an_acceptor_that_cannot_queue_says_so_on_health(tmp_path, jira, example_config):
    """The queue file deleted under the service: every process answers 503 (the sender
    keeps the delivery and retries), and the acceptor's own failure reaches /healthz up
    its pipe beside the main process's probe."""
    service = service_of(tmp_path, jira, example_config).start()
    try:
        pid = acceptors(service)[0]["pid"]  # up, its queue file open: then it is deleted
        service.wait(lambda: f"Started server process [{pid}]" in service.log.read_text(), 30,
                     "the acceptor to serve")
        os.remove(service.queue)
        codes = [fresh_post(service, "PAW-1", f"g-{n}").status_code for n in range(20)]
        assert codes == [503] * 20
        service.wait(lambda: "error" in acceptors(service)[0], 10,
                     "the acceptor's failure on /healthz")
        health = service.get("/healthz")
        assert health.status_code == 503 and "deleted or replaced" in health.json()["error"]
        own = acceptors(service)[0]["error"]  # its own words (SQLite's, or the path's check)
        assert "queue.db" in own and "Fix:" in own
    finally:
        service.stop()


def test_an_acceptor_failure_clears_as_the_main_process_own_does(monkeypatch):
    """Cleared by the acceptor's next queued webhook, or 15 s after its last failure once
    the file takes writes again (never while it does not); each failure, even in the same
    words, starts the 15 s again; a restarted acceptor starts clean."""
    pool = AcceptorPool(SimpleNamespace(settings=ServiceSettings.from_env(
        {"SCOPEGUARD_WEBHOOK_SECRET": SECRET})), 3, None, "", "info", [])
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    assert pool.accept_error(file_ok=True) == ""
    pool.apply("accept_error", 3, ("the disk is full", 0.0))
    pool.apply("accept_error", 2, "")
    assert pool.accept_error(file_ok=True) == "acceptor 3: the disk is full"
    assert [a.get("error") for a in pool.status()] == []  # none started in this test
    clock[0] += 12
    pool.apply("accept_error", 3, ("the disk is full", 2.0))  # failed again 2 s ago
    clock[0] += 8
    assert pool.accept_error(file_ok=True) == "acceptor 3: the disk is full"  # 10 s since
    clock[0] += 6
    assert pool.accept_error(file_ok=False) == "acceptor 3: the disk is full"
    assert pool.accept_error(file_ok=True) == ""
    pool.apply("accept_error", 2, ("database is locked", 0.0))
    pool.apply("accept_error", 2, "")  # its next webhook was queued
    assert pool.accept_error(file_ok=False) == ""


def test_acceptors_stop_with_the_service_and_when_it_is_killed(tmp_path, jira, example_config):
    # a temporary directory of its own: another service (a test run beside this one)
    # makes its private directory in the shared one
    (tmp_path / "tmp").mkdir()

    def private() -> set[str]:
        return set(glob.glob(str(tmp_path / "tmp" / "scopeguard-*" / "main.sock")))

    service = service_of(tmp_path, jira, example_config, TMPDIR=str(tmp_path / "tmp")).start()
    pid = acceptors(service)[0]["pid"]
    ours = private()
    assert len(ours) == 1  # the main process's Unix socket for forwarded requests
    service.stop()
    assert not os.path.exists(os.path.dirname(ours.pop()))  # its private directory is gone
    # uvicorn stops gracefully, then ends by the SIGTERM it caught (as with one process)
    assert service.proc.returncode in (0, -signal.SIGTERM) and not alive(pid)
    service.start()
    pid = acceptors(service)[0]["pid"]
    service.kill()  # SIGKILL: no shutdown code runs in the main process
    deadline = time.monotonic() + 20
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(pid), "an acceptor outlived its service"
    service.start()  # the port and the queue are free for a new service
    assert service.get("/healthz").status_code == 200
    service.stop()


def test_a_port_in_use_is_refused_not_shared(tmp_path, jira, example_config):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    with pytest.raises(ScopeguardError, match=f"cannot listen on 127.0.0.1:{port}"):
        listen_socket("127.0.0.1", port)
    taken.close()
    first = listen_socket("127.0.0.1", port)  # another scopeguard serve --acceptors there
    try:
        with pytest.raises(ScopeguardError, match="Fix: stop what listens there"):
            listen_socket("127.0.0.1", port)
    finally:
        first.close()


@pytest.mark.parametrize("acceptors", ["1", "2"])
def test_serve_on_a_port_in_use_or_a_host_that_is_none_exits_2_before_any_worker(
        tmp_path, jira, example_config, acceptors):
    """With one acceptor uvicorn bound the port itself, after the workers had started:
    exit 3 and '[Errno 98] error while attempting to bind', no option named."""
    import subprocess
    import sys

    service = service_of(tmp_path, jira, example_config)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        for host, said in [("127.0.0.1", f"cannot listen on 127.0.0.1:{port}"),
                           ("999.1.1.1", "cannot listen on 999.1.1.1")]:
            run = subprocess.run(
                [sys.executable, "-c", "from scopeguard.cli import main; main()", "serve",
                 "--config", service.config, "--queue", service.queue, "--host", host,
                 "--port", str(port), "--acceptors", acceptors],
                env=service.env, capture_output=True, text=True, timeout=120)
            assert run.returncode == 2, run.stderr[-3000:]
            assert said in run.stderr and "Fix: stop what listens there, or choose another " \
                "--port/--host" in run.stderr, run.stderr[-3000:]
            assert "Traceback" not in run.stderr and "started (pid" not in run.stderr
    finally:
        taken.close()


def test_a_head_of_another_model_is_said_on_healthz_without_a_traceback(
        tmp_path, jira, example_config):
    """A positioning file naming a head fitted for another model than the service's:
    /healthz says which and how to fix it, and the log says it in one line (it logged
    the ConfigError's traceback, again at every restart)."""
    import shutil
    from importlib import resources

    from scopeguard.calibration import DEFAULT_CALIBRATION

    with resources.as_file(resources.files("scopeguard.models") / DEFAULT_CALIBRATION) as head:
        shutil.copy(head, tmp_path / "head.json")
    config = tmp_path / "scopeguard.yml"
    config.write_text(example_config.read_text() + "calibration: head.json\n")
    service = service_of(tmp_path, jira, config).start(ready=False)
    try:
        service.wait(lambda: "was fitted for the model" in service.get("/healthz").text, 60,
                     "the head's error on /healthz")
        assert service.get("/healthz").status_code == 503
        assert "Fix: fit a head for this model" in service.get("/healthz").json()["error"]
        assert "was fitted for the model" in service.log_text()
        assert "Traceback" not in service.log_text()
    finally:
        service.stop()


def test_acceptors_setting_is_checked():
    base = {"SCOPEGUARD_WEBHOOK_SECRET": SECRET}
    assert ServiceSettings.from_env(base).acceptors == 1
    assert ServiceSettings.from_env({**base, "SCOPEGUARD_ACCEPTORS": "3"}).acceptors == 3
    for bad in ("0", "65"):
        with pytest.raises(ScopeguardError, match="SCOPEGUARD_ACCEPTORS"):
            ServiceSettings.from_env({**base, "SCOPEGUARD_ACCEPTORS": bad})
    with pytest.raises(ScopeguardError, match="run more replicas"):
        ServiceSettings.from_env({**base, "SCOPEGUARD_ACCEPTORS": "2",
                                  "SCOPEGUARD_STORE": "postgresql://localhost/x"})


def test_counts_drained_from_one_process_merge_into_another():
    acceptor, main = Metrics(), Metrics()
    acceptor.inc("scopeguard_webhooks_received_total", result="queued")
    acceptor.observe("scopeguard_webhook_accept_seconds", 0.003)
    main.inc("scopeguard_webhooks_received_total", 2, result="queued")
    main.merge(*acceptor.drain())
    assert acceptor.drain() == ({}, {})  # drained: never counted twice
    text = main.render({})
    assert 'scopeguard_webhooks_received_total{result="queued"} 3' in text
    assert 'scopeguard_webhook_accept_seconds_bucket{le="0.005"} 1' in text
    assert "scopeguard_webhook_accept_seconds_count 1" in text


def test_forwarded_answers_are_parsed_whole():
    plain = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n" \
            b"content-length: 2\r\nconnection: close\r\nretry-after: 30\r\n\r\n{}"
    assert _parse(plain) == (503, [(b"content-type", b"application/json"),
                                   (b"retry-after", b"30")], b"{}")
    chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" \
              b"5\r\nhello\r\n6;x=1\r\n world\r\n0\r\n\r\n"
    assert _parse(chunked) == (200, [], b"hello world")
    with pytest.raises(ValueError):
        _parse(b"HTTP/1.1 200 OK\r\ncontent-length: 5")

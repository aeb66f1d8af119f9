"""Replicas on one PostgreSQL database (``scopeguard serve --store``): each accepts webhooks
and takes work; an event is processed by one of them, its comment and label written once.
Real ``scopeguard serve`` processes, a real PostgreSQL server (tests/pg.py), the fake Jira,
all on loopback: one replica SIGKILLed half-way through 1,000 webhooks, and PostgreSQL
stopped mid-run. Bounded: about a minute each on two cores."""

from __future__ import annotations

import os
import random
import signal
import time

import psycopg
import pytest
from fake_jira import FakeJira, ServiceProcess, issue_event
from test_jira_load import ASKS, SCOPE_LABELS, SECRET, Sender
from test_service_workers import workers_of

from scopeguard import render

pytestmark = pytest.mark.postgres


def replica(tmp_path, number: int, jira: FakeJira, config, url: str,
            **env: str) -> ServiceProcess:
    """One ``scopeguard serve`` on the store: the hashing embedder unless told otherwise, a
    10 s lease (a dead replica's events are taken over 10 s on)."""
    path = tmp_path / f"replica-{number}"
    path.mkdir()
    return ServiceProcess(path, jira, config, {
        "SCOPEGUARD_MODEL": "hashing", "SCOPEGUARD_WEBHOOK_SECRET": SECRET,
        "SCOPEGUARD_STORE": url, "SCOPEGUARD_LEASE": "10", "SCOPEGUARD_RETRY_BASE": "0.2",
        **env})


def add_issues(jira: FakeJira, count: int) -> list[str]:
    for i in range(count):
        ask = ASKS[i % len(ASKS)]
        jira.add_issue(f"REP-{i}", f"{ask} ({i})",
                       f"{ask}, please. Clinic: Clinic {i % 37}. Request {i}.")
    return [f"REP-{i}" for i in range(count)]


def deliveries(keys: list[str], updates: int) -> list[tuple[str, dict]]:
    """A created event per issue, then ``updates`` updated events each, shuffled."""
    created = [(f"created-{k}", issue_event(k)) for k in keys]
    later = [(f"updated-{k}-{n}", issue_event(k, "jira:issue_updated", changed=("description",)))
             for k in keys for n in range(updates)]
    random.Random(17).shuffle(later)
    return created + later


def rows(url: str) -> dict[str, tuple[str, int]]:
    """(state, attempts) of every event, by delivery id."""
    with psycopg.connect(url) as conn:
        return {d: (s, a) for d, s, a in conn.execute(
            "SELECT delivery_id, state, attempts FROM events")}


def wait_done(url: str, expected: set[str], timeout: float, service: ServiceProcess) -> None:
    """Wait for every event done. The timeouts only end a run that would never finish: a
    2-core machine with both cores busy elsewhere took more than 150 s for the first."""
    def finished() -> bool:
        found = rows(url)
        return set(found) >= expected and all(s == "done" for s, _ in found.values())

    service.wait(finished, timeout, "every event to be done")


def one_comment_and_label_each(jira: FakeJira, keys: list[str]) -> None:
    for key in keys:
        texts = jira.comment_texts(key)
        assert len(texts) == 1, (key, texts)  # never a second comment
        scope = [label for label in jira.labels(key) if label in SCOPE_LABELS]
        assert len(scope) == 1, (key, jira.labels(key))
        assert render.LABEL_MARKER.search(texts[0]).group(1) == SCOPE_LABELS[scope[0]]
    assert len(jira.calls("POST", "/comment")) == len(keys)  # never posted twice


def kill_holding_a_lease(service: ServiceProcess, url: str, timeout: float = 30) -> list[str]:
    """SIGKILL the replica (its worker processes, then it) at a moment its worker holds a
    lease; returns the deliveries it held. The processes are stopped (SIGSTOP) first, so
    what they hold cannot change between the look and the kill."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tree = [*workers_of(service), service.proc.pid]
        for pid in tree:
            os.kill(pid, signal.SIGSTOP)
        time.sleep(0.2)  # a commit already on the wire lands
        with psycopg.connect(url) as conn:
            held = [d for (d,) in conn.execute(
                "SELECT delivery_id FROM events WHERE state = 'leased' AND (" + " OR ".join(
                    ["lease_owner LIKE %s"] * len(tree)) + ")",
                [f"%:{pid}:%" for pid in tree])]
        if held:
            for pid in tree:
                os.kill(pid, signal.SIGKILL)
            service.proc.wait(10)
            return held
        for pid in tree:
            os.kill(pid, signal.SIGCONT)
        time.sleep(0.05)
    raise TimeoutError("the replica never held a lease")


def test_three_replicas_one_killed_every_event_done_once_one_comment_each(
        tmp_path, example_config, pg_url):
    with FakeJira(flavour="server", pat="pat-replicas", delay=0.002) as jira:
        keys = add_issues(jira, 250)
        items = deliveries(keys, updates=3)
        assert len(items) == 1000
        replicas = [replica(tmp_path, n, jira, example_config, pg_url) for n in range(3)]
        sender = Sender(*replicas)
        try:
            for service in replicas:
                service.start()
            half = len(items) // 2
            sender.send_all(items[:half])
            replicas[0].wait(lambda: sum(map(len, jira.comments.values())) >= 50,
                             what="processing to be under way")
            held = kill_holding_a_lease(replicas[1], pg_url)
            sender.send_all(items[half:])  # a third go to the dead replica: no answer
            assert sender.unsent and set(sender.refused) == {0}
            sender.services = [replicas[0], replicas[2]]  # what a load balancer would do
            unsent, sender.unsent = sender.unsent, []
            sender.send_all(unsent)
            assert not sender.unsent
            wait_done(pg_url, {d for d, _ in items}, 300, replicas[0])
        finally:
            for service in replicas:
                service.stop()
        found = rows(pg_url)
        assert set(sender.accepted) == set(found) == {d for d, _ in items}
        assert all(state == "done" for state, _ in found.values())  # none lost, none failed
        for delivery in held:  # the dead replica's lease expired; another finished it
            assert found[delivery] == ("done", 2), delivery
        # Every other event was claimed once: processed by exactly one replica.
        assert sum(attempts for _, attempts in found.values()) == len(found) + len(held)
        one_comment_and_label_each(jira, keys)
        for service in (replicas[0], replicas[2]):  # both live replicas did work
            assert "(delivery " in service.log_text()


def test_postgresql_stopped_mid_run_gives_503_then_everything_completes(
        tmp_path, example_config, pg_cluster, pg_url):
    """Also: the URL's password (the test server trusts loopback, so any is accepted) is
    never in a log line or an answer."""
    password = "hunter2-pg-7c1e"
    url = pg_url.replace("postgres@", f"postgres:{password}@")
    with FakeJira(flavour="server", pat="pat-replicas") as jira:
        keys = add_issues(jira, 60)
        items = deliveries(keys, updates=1)
        replicas = [replica(tmp_path, n, jira, example_config, url) for n in range(2)]
        sender = Sender(*replicas)
        try:
            for service in replicas:
                service.start()
            sender.send_all(items[:60])
            assert not sender.unsent
            pg_cluster.stop()
            try:
                started = time.monotonic()
                sender.send_all(items[60:])
                # 60 webhooks from 8 clients: the first wait 5 s for a connection, then
                # the pool knows the server is down and answers within a second
                assert time.monotonic() - started < 40
                assert len(sender.unsent) == 60  # nothing accepted that was not durable
                assert set(sender.refused) == {503} and set(sender.retry_after) == {"30"}
                for service in replicas:  # /healthz says why, without the password
                    service.wait(lambda s=service: s.get("/healthz").status_code == 503,
                                 20, "/healthz to say the store is down")
                    health = service.get("/healthz").json()
                    assert "cannot be reached" in health["error"], health
                    assert "postgres:***@127.0.0.1" in health["error"]
                    assert health["store"] == "postgresql"
            finally:
                pg_cluster.start()
            deadline = time.monotonic() + 60
            while sender.unsent and time.monotonic() < deadline:  # the senders retry
                unsent, sender.unsent = sender.unsent, []
                sender.send_all(unsent)
                time.sleep(0.5 if sender.unsent else 0)
            assert not sender.unsent
            wait_done(pg_url, {d for d, _ in items}, 180, replicas[0])
            for service in replicas:  # a webhook stored again clears the accept error;
                # the store's probe is redone every 5 s
                service.wait(lambda s=service: s.get("/healthz").status_code == 200, 20,
                             "/healthz to be ready again")
        finally:
            for service in replicas:
                service.stop()
        assert set(sender.accepted) == set(rows(pg_url)) == {d for d, _ in items}
        one_comment_and_label_each(jira, keys)
        for service in replicas:
            assert "cannot be reached" in service.log_text()  # the outage was logged...
            assert password not in service.log_text()  # ...without the password
        assert not any(password in r.text for s in replicas for r in s.responses)


@pytest.mark.model
def test_two_replicas_with_the_real_model_share_the_cache_and_one_delivery(
        tmp_path, example_config, pg_url):
    """The default backend (ONNX Runtime): the same delivery sent to both replicas is
    processed once; the embedding cache in the store holds what either embedded."""
    with FakeJira(flavour="server", pat="pat-replicas") as jira:
        keys = add_issues(jira, 6)
        replicas = [replica(tmp_path, n, jira, example_config, pg_url, SCOPEGUARD_MODEL="")
                    for n in range(2)]
        try:
            for service in replicas:
                service.start()
            for n, key in enumerate(keys):
                payload = issue_event(key)
                first = replicas[n % 2].post(payload, delivery=f"d-{key}")
                again = replicas[(n + 1) % 2].post(payload, delivery=f"d-{key}")
                assert (first.status_code, again.status_code) == (202, 200)
            wait_done(pg_url, {f"d-{k}" for k in keys}, 180, replicas[0])
        finally:
            for service in replicas:
                service.stop()
        assert all(attempts == 1 for _, attempts in rows(pg_url).values())
        one_comment_and_label_each(jira, keys)
        with psycopg.connect(pg_url) as conn:
            cached = conn.execute("SELECT count(*), min(dim) FROM embeddings WHERE model "
                                  "LIKE '%%MiniLM%%'").fetchone()
        assert cached[0] >= len(keys) and cached[1] == 384


def test_an_in_process_replica_works_the_store_too(tmp_path, example_config, pg_url):
    """``--in-process`` (worker threads in the accepting process) on the store: one replica
    of each kind, each taking the other's webhooks' work as it comes."""
    with FakeJira(flavour="server", pat="pat-replicas") as jira:
        keys = add_issues(jira, 8)
        replicas = [replica(tmp_path, n, jira, example_config, pg_url) for n in range(2)]
        replicas[1].args = ("--in-process",)
        sender = Sender(*replicas)
        try:
            for service in replicas:
                service.start()
            sender.send_all(deliveries(keys, updates=1))
            assert not sender.unsent
            wait_done(pg_url, set(sender.accepted), 120, replicas[0])
        finally:
            for service in replicas:
                service.stop()
        one_comment_and_label_each(jira, keys)
        assert "(delivery " in replicas[1].log_text()  # the in-process one did work

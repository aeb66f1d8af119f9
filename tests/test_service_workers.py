"""Worker processes (integrations/service/pool.py): the model lives in ``--workers``
processes, never in the process that accepts webhooks; a worker that dies is replaced and
its events are finished once; workers do not outlive their parent. Real ``scopeguard
serve`` processes, the real model, the fake Jira over HTTP."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from fake_jira import FakeJira, ServiceProcess, issue_event
from samples import BOOSTER, LAB, WHATSAPP
from scopeguard.integrations.service.queue import EventQueue

SECRET = "worker-secret-0f9e8d7c6b5a"
PAT = "worker-pat"


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def workers_of(service: ServiceProcess) -> list[int]:
    """The worker processes (spawned by multiprocessing; not its resource tracker)."""
    out = []
    for pid in children(service.proc.pid):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "spawn_main" in command and alive(pid):
            out.append(pid)
    return out


@pytest.fixture
def jira():
    with FakeJira(flavour="server", pat=PAT) as fake:
        yield fake


def test_the_model_runs_in_worker_processes_never_in_the_accepting_one(tmp_path, jira,
                                                                       example_config):
    for n in range(6):
        jira.add_issue(f"PAW-{n + 1}", *(BOOSTER, LAB, WHATSAPP)[n % 3], customer=f"C{n}")
    service = ServiceProcess(tmp_path, jira, example_config,
                             {"SCOPEGUARD_WEBHOOK_SECRET": SECRET}, args=("--workers", "2"))
    service.start()
    try:
        workers = workers_of(service)
        assert len(workers) == 2, children(service.proc.pid)
        assert all("onnxruntime" in maps(p) for p in workers)  # each has the model
        assert "onnxruntime" not in maps(service.proc.pid)  # the accepting process: none
        metrics = service.metrics()
        assert metrics["scopeguard_worker_processes"] == 2
        for n in range(6):
            assert service.post(issue_event(f"PAW-{n + 1}"), delivery=f"d{n}").status_code == 202
        service.wait_idle()
        for n in range(6):
            assert len(jira.comments[f"PAW-{n + 1}"]) == 1 and jira.labels(f"PAW-{n + 1}")
        metrics = service.metrics()  # the workers' counts reach the accepting process
        assert sum(v for k, v in metrics.items()
                   if k.startswith("scopeguard_events_processed_total")) == 6
        service.wait(lambda: service.metrics()["scopeguard_issues_known"] >= 6,
                     what="the workers to report the issues they know (every second)")
    finally:
        service.stop()


def test_a_killed_worker_is_replaced_and_its_event_finished_once(tmp_path, jira,
                                                                 example_config):
    """SIGKILL the only worker while the Jira write-back of its event stalls: the pool
    queues the event again, starts a new worker, and the issue gets one comment."""
    jira.add_issue("PAW-7", *LAB, customer="Harbour Lane")
    service = ServiceProcess(tmp_path, jira, example_config,
                             {"SCOPEGUARD_WEBHOOK_SECRET": SECRET})
    service.start()
    try:
        [worker] = workers_of(service)
        jira.delay = 3.0  # every Jira answer takes 3 s: the kill lands mid-event
        assert service.post(issue_event("PAW-7"), delivery="kill-1").status_code == 202
        queue = EventQueue(service.queue)
        service.wait(lambda: queue.counts()["leased"] == 1, what="the event to be leased")
        os.kill(worker, signal.SIGKILL)
        jira.delay = 0.0
        service.wait(lambda: service.metrics().get("scopeguard_worker_restarts_total") == 1,
                     what="the pool to notice")
        service.wait(lambda: len(workers_of(service)) == 1
                     and service.get("/healthz").status_code == 200, timeout=120,
                     what="a new worker")
        assert workers_of(service) != [worker]
        service.wait_idle(timeout=120)
        assert queue.counts()["done"] == 1 and queue.counts()["failed"] == 0
        assert len(jira.comments["PAW-7"]) == 1
        assert "worker 1 (pid" in service.log.read_text()
        queue.close()
    finally:
        service.stop()


def test_workers_stop_when_their_parent_is_killed(tmp_path, jira, example_config):
    service = ServiceProcess(tmp_path, jira, example_config,
                             {"SCOPEGUARD_WEBHOOK_SECRET": SECRET, "SCOPEGUARD_MODEL": "hashing"},
                             args=("--workers", "2"))
    service.start()
    pids = workers_of(service)
    assert len(pids) == 2, children(service.proc.pid)
    service.proc.kill()
    service.proc.wait(10)
    deadline = time.monotonic() + 20
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in pids), "a worker outlived its parent"
    # the queue file is free again: a new service takes it over
    service.start()
    service.stop()


def test_in_process_threads_remain_available(tmp_path, jira, example_config):
    jira.add_issue("PAW-9", *BOOSTER, customer="Riverside")
    service = ServiceProcess(tmp_path, jira, example_config,
                             {"SCOPEGUARD_WEBHOOK_SECRET": SECRET, "SCOPEGUARD_MODEL": "hashing"},
                             args=("--in-process",))
    service.start()
    try:
        assert service.metrics()["scopeguard_worker_processes"] == 0
        assert service.post(issue_event("PAW-9"), delivery="t1").status_code == 202
        service.wait_idle()
        assert len(jira.comments["PAW-9"]) == 1
    finally:
        service.stop()


def test_demand_counts_what_every_worker_classified(tmp_path, jira, example_config):
    """Four clinics ask the same thing, one after another, so the two workers share the
    events: the last verdict counts every clinic, whichever worker stored them."""
    clinics = ["Oakfield", "Harbour Lane", "Kingsway", "Riverside"]
    for n, clinic in enumerate(clinics):
        jira.add_issue(f"PAW-{40 + n}", *WHATSAPP, customer=clinic)
    config = tmp_path / "scopeguard.yml"
    config.write_text(example_config.read_text() + "\njira:\n  customer_field: Clinic\n")
    service = ServiceProcess(tmp_path, jira, config,
                             {"SCOPEGUARD_WEBHOOK_SECRET": SECRET, "SCOPEGUARD_MODEL": "hashing"},
                             args=("--workers", "2"))
    service.start()
    try:
        for n in range(4):
            service.post(issue_event(f"PAW-{40 + n}"), delivery=f"w{n}")
            service.wait_idle()
        [text] = jira.comment_texts("PAW-43")
        assert "4 distinct customers asked" in text, text
        assert all(f"PAW-{40 + n}" in text for n in range(3))
        owners = {line.split("(pid ")[1].split(")")[0] for line in
                  service.log.read_text().splitlines() if "started (pid" in line}
        assert len(owners) == 2
    finally:
        service.stop()


def test_an_issue_store_sees_what_another_process_stored(tmp_path):
    """Each worker keeps its own matrix; ``similar`` first reads the rows other workers
    wrote (a second connection to the same SQLite file stands in for the other process)."""
    import numpy as np
    from scopeguard.integrations.service.store import IssueStore

    from scopeguard.backlog import Request

    one, two = EventQueue(str(tmp_path / "q.db")), EventQueue(str(tmp_path / "q.db"))
    a, b = IssueStore(one, "m"), IssueStore(two, "m")
    vector = np.ones(4, np.float32) / 2
    a.remember(Request(id="PAW-1", title="x", customer="Oakfield"), vector)
    assert len(b) == 0
    assert [r.id for r in b.similar(vector, 0.9)] == ["PAW-1"]
    assert len(b) == 1
    a.remember(Request(id="PAW-1", title="edited", customer="Oakfield"), vector)
    assert [r.title for r in b.similar(vector, 0.9)] == ["edited"]
    one.close(), two.close()

"""Worker processes (integrations/service/pool.py): the model lives in ``--workers``
processes, never in the process that accepts webhooks; a worker that dies is replaced and
its events are finished once; workers do not outlive their parent. Real ``scopeguard
serve`` processes, the real model, the fake Jira over HTTP."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from fake_github import FakeGitHub
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


def nice(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


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
        # each has the model (ready means one worker is; the other may still be loading)
        service.wait(lambda: all("onnxruntime" in maps(p) for p in workers), 60,
                     "both workers to load the model")
        assert "onnxruntime" not in maps(service.proc.pid)  # the accepting process: none
        # acceptance first: the workers run 10 nice levels below the accepting process
        assert {nice(p) - nice(service.proc.pid) for p in workers} == {10}
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


GH_REPO, GH_TOKEN, GH_LOGIN = "acme/pawtrack", "ghs_CrAsH0123456789abcdefTOKEN", "scopeguard-bot"
GH_NAMES = {"core": "scope: core", "generalizable": "scope: generalizable",
            "one_off": "scope: one-off"}


def github_service(tmp_path: Path, example_config: Path, github: FakeGitHub) -> ServiceProcess:
    """GitHub only, one worker, the real model."""
    return ServiceProcess(tmp_path, None, example_config, {
        "SCOPEGUARD_GITHUB_WEBHOOK_SECRET": SECRET, "GITHUB_TOKEN": GH_TOKEN,
        "GITHUB_API_URL": github.base_url, "SCOPEGUARD_GITHUB_REPOSITORIES": GH_REPO,
        "SCOPEGUARD_GITHUB_THROTTLE": "0"}).start()


def issues_event(github: FakeGitHub, number: int, action: str, sender: str,
                 label: str = "") -> dict:
    if action == "labeled" and label:  # the event follows the label's addition, as on GitHub
        github.add_issue_label(GH_REPO, number, label, actor=sender)
    payload = {"action": action, "issue": github.issue_payload(GH_REPO, number),
               "repository": {"full_name": GH_REPO}, "sender": {"login": sender, "type": "User"}}
    return {**payload, "label": {"name": label, "color": "ededed"}} if label else payload


def kill_mid_call(service: ServiceProcess, github: FakeGitHub, method: str, path: str,
                  payload: dict, delivery: str) -> None:
    """Send ``payload``; SIGKILL the worker once GitHub has carried out its ``method path``
    (whose answer is held back); wait until a new worker has finished the event."""
    [worker] = workers_of(service)
    github.stall = (method, path, 30.0)
    try:
        assert service.post_github(payload, delivery=delivery).status_code == 202
        service.wait(lambda: github.calls(method, path), timeout=120,
                     what=f"the worker's {method} {path}")
        os.kill(worker, signal.SIGKILL)
    finally:
        github.stall = None
    service.wait(lambda: service.metrics().get("scopeguard_worker_restarts_total") == 1,
                 what="the pool to notice")
    service.wait(lambda: service.events()["github:" + delivery]["state"] == "done",
                 timeout=120, what="the event to be finished by the new worker")
    assert workers_of(service) != [worker]


@pytest.mark.parametrize("stalled", ["comments", "labels"])
def test_a_worker_killed_mid_github_write_back_leaves_one_comment_and_no_relabel(
        stalled, tmp_path, example_config):
    """The GitHub flow in the service: SIGKILL the worker after GitHub carried out its
    comment (or its label) but before the answer reached it. The event is queued again;
    the new worker finds its own comment by author and marker and edits it, labels the
    issue once, and records no maintainer relabel (the label on the issue is its own)."""
    with FakeGitHub(token=GH_TOKEN, login=GH_LOGIN) as github:
        github.add_repo(GH_REPO)
        number = github.add_issue(GH_REPO, *LAB, user="harbour-lane")
        service = github_service(tmp_path, example_config, github)
        try:
            kill_mid_call(service, github, "POST", rf"/repos/{GH_REPO}/issues/{number}/{stalled}",
                          issues_event(github, number, "opened", "harbour-lane"), "gh-kill-1")
            comments = github.comments(GH_REPO, number)
            assert len(comments) == 1 and comments[0]["user"] == GH_LOGIN, comments
            assert len(github.calls("POST", rf"/repos/{GH_REPO}/issues/{number}/comments")) == 1
            [label] = [name for name in github.issue_labels(GH_REPO, number)
                       if name in GH_NAMES.values()]
            assert label in comments[0]["body"]
            # no maintainer relabel: nothing committed to the repository
            assert not [w for w in github.writes() if "/contents/" in w.path
                        or "/git/" in w.path], [w.path for w in github.writes()]
        finally:
            service.stop()


def test_a_worker_killed_after_committing_a_relabel_records_it_once(tmp_path, example_config):
    """A maintainer's relabel: SIGKILL the worker once GitHub committed the relabels row,
    before the answer came (so before scopeguard's label went and the comment noted it).
    The new worker finds the row in the file and commits nothing more; the label and the
    comment are finished."""
    from scopeguard.integrations.github.relabels import RELABELS_FILE

    with FakeGitHub(token=GH_TOKEN, login=GH_LOGIN) as github:
        github.add_repo(GH_REPO)
        number = github.add_issue(GH_REPO, *LAB, user="kingsway")
        service = github_service(tmp_path, example_config, github)
        try:
            opened = issues_event(github, number, "opened", "kingsway")
            assert service.post_github(opened, delivery="gh-open").status_code == 202
            service.wait(lambda: service.events()["github:gh-open"]["state"] == "done",
                         timeout=120, what="the first verdict")
            [given] = github.issue_labels(GH_REPO, number)
            predicted = next(k for k, name in GH_NAMES.items() if name == given)
            human = "core" if predicted != "core" else "one_off"
            github.set_issue(GH_REPO, number, actor="maintainer",
                             labels=[given, GH_NAMES[human]])
            contents = rf"/repos/{GH_REPO}/contents/{RELABELS_FILE}"
            kill_mid_call(service, github, "PUT", contents,
                          issues_event(github, number, "labeled", "maintainer",
                                       GH_NAMES[human]), "gh-label")
            assert len(github.calls("PUT", contents)) == 1  # not committed again
            rows = [json.loads(x) for x in github.file(GH_REPO, RELABELS_FILE).splitlines()]
            assert [(r["label"], r["predicted"], r["by"]) for r in rows] == [
                (human, predicted, "maintainer")]
            assert github.issue_labels(GH_REPO, number) == [GH_NAMES[human]]
            [comment] = github.comments(GH_REPO, number)
            assert "maintainer" in comment["body"]
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


def test_a_cache_locked_by_a_stalled_process_delays_no_event(tmp_path, jira, example_config):
    """A process that stalled holding the embedding cache's write lock (seen once in CI: a
    frozen worker) made the other worker's events wait 30 s, fail and retry for as long
    as it stalled. The worker now embeds without the cache and says so."""
    import sqlite3

    jira.add_issue("PAW-9", *BOOSTER, customer="Riverside")
    service = ServiceProcess(tmp_path, jira, example_config,
                             {"SCOPEGUARD_WEBHOOK_SECRET": SECRET, "SCOPEGUARD_MODEL": "hashing"},
                             args=("--workers", "1"))
    service.start()
    holder = sqlite3.connect(tmp_path / "cache.db", isolation_level=None, timeout=30)
    try:
        holder.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        assert service.post(issue_event("PAW-9"), delivery="lk-1").status_code == 202
        service.wait(lambda: service.events()["lk-1"]["state"] == "done", timeout=25,
                     what="the event, with the cache locked")
        assert time.monotonic() - started < 20  # not 30 s of SQLite's busy wait, retried
        assert service.events()["lk-1"]["attempts"] == 1
        assert len(jira.comments["PAW-9"]) == 1
        assert "embedding without the cache" in service.log_text()
    finally:
        holder.close()
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


def test_an_issue_store_sees_what_another_process_stored(store):
    """Each worker keeps its own matrix; ``similar`` first reads the rows other workers
    wrote (a second connection to the same store stands in for the other process)."""
    import numpy as np
    from scopeguard.integrations.service.store import IssueStore

    from scopeguard.backlog import Request

    one, two = store.queue(), store.queue()
    a, b = IssueStore(one, "m", shared=True), IssueStore(two, "m", shared=True)
    vector = np.ones(4, np.float32) / 2
    a.remember(Request(id="PAW-1", title="x", customer="Oakfield"), vector)
    assert len(b) == 0
    assert [r.id for r in b.similar(vector, 0.9)] == ["PAW-1"]
    assert len(b) == 1
    a.remember(Request(id="PAW-1", title="edited", customer="Oakfield"), vector)
    assert [r.title for r in b.similar(vector, 0.9)] == ["edited"]


def test_two_workers_never_hold_events_of_one_issue_at_once(store):
    """Created then updated for PAW-1, a moment apart: the second waits for the first's
    lease (two processes' connections to one store), while another issue's event goes."""
    now = [1000.0]
    first = store.queue(lease=30, clock=lambda: now[0])
    second = store.queue(lease=30, clock=lambda: now[0])
    first.accept("d1", b"{}", "jira:issue_created", "PAW-1")
    first.accept("d2", b"{}", "jira:issue_updated", "PAW-1")
    first.accept("d3", b"{}", "jira:issue_created", "PAW-2")
    a = first.claim("111:worker-1")
    b = second.claim("222:worker-1")
    assert (a.delivery_id, b.delivery_id) == ("d1", "d3")  # d2 waits for d1
    assert second.claim("222:worker-1") is None
    assert first.ack("d1", "111:worker-1", "core")
    assert second.claim("222:worker-1").delivery_id == "d2"
    # an expired lease no longer holds the issue: its worker is presumed dead
    first.accept("d4", b"{}", "jira:issue_updated", "PAW-3")
    first.accept("d5", b"{}", "jira:issue_updated", "PAW-3")
    assert first.claim("111:worker-1").delivery_id == "d4"
    now[0] += 31
    assert second.claim("222:worker-1").delivery_id in ("d4", "d5")


def test_an_event_that_keeps_killing_its_worker_fails_instead_of_stalling(store):
    now = [1000.0]
    queue = store.queue(lease=300, max_attempts=3, clock=lambda: now[0])
    queue.accept("poison", b"{}", "jira:issue_created", "PAW-9")
    queue.accept("fine", b"{}", "jira:issue_created", "PAW-10")
    for attempt in range(1, 4):
        event = queue.claim(queue.owner("worker-1", pid=100 + attempt))
        assert event.delivery_id == "poison" and event.attempts == attempt
        assert queue.release_owner(100 + attempt) == 1  # the worker died
        if attempt == 1:  # queued again after a backoff: the next event goes first
            assert queue.claim(queue.owner("worker-1", pid=999)).delivery_id == "fine"
            assert queue.ack("fine", queue.owner("worker-1", pid=999), "core")
        if attempt < 3:
            assert queue.claim(queue.owner("worker-1", pid=999)) is None  # backing off
            now[0] += 5 * 2 ** (attempt - 1)
    counts = queue.counts()
    assert (counts["failed"], counts["done"], counts["queued"], counts["leased"]) == (1, 1, 0, 0)
    row = queue._conn().execute("SELECT error FROM events WHERE delivery_id = 'poison'").fetchone()
    assert "died on each of its attempts" in row[0]


def test_a_new_service_waits_for_orphaned_workers_before_taking_their_events(
        tmp_path, jira, example_config):
    """A worker whose parent died may still be finishing an event; the next serve on the
    queue file waits for it (the workers' shared lock) before it takes back leases."""
    import fcntl

    service = ServiceProcess(tmp_path, jira, example_config,
                             {"SCOPEGUARD_WEBHOOK_SECRET": SECRET, "SCOPEGUARD_MODEL": "hashing"})
    orphan = open(service.queue + ".workers.lock", "a+")  # stands in for a live orphan
    fcntl.flock(orphan.fileno(), fcntl.LOCK_SH)
    import threading

    starting = threading.Thread(target=service.start)  # returns once the service is ready
    starting.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
                service.log.exists() and "waiting for the workers of an earlier" in
                service.log.read_text()):
            time.sleep(0.1)
        time.sleep(1)
        log = service.log.read_text()
        assert "waiting for the workers of an earlier" in log
        assert "taken back from a previous process" not in log  # no lease touched yet
        orphan.close()  # the orphan exits
        starting.join(90)
        assert service.get("/healthz").status_code == 200
    finally:
        orphan.close()
        service.stop()


def lock_state(path: str) -> str:
    """"missing", "held" (by someone) or "free", without making the file."""
    import fcntl

    if not os.path.exists(path):
        return "missing"
    with open(path, "a+") as probe:
        try:
            fcntl.flock(probe.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return "held"
        fcntl.flock(probe.fileno(), fcntl.LOCK_UN)
        return "free"


def test_the_workers_lock_deleted_is_made_again_and_held(tmp_path):
    """Deleted while workers run (a cleaner), the workers' lock would let a new serve take
    back an orphan's leases at once; each worker's watch locks the file made at the path
    too, without anyone asking."""
    from scopeguard.integrations.service.queue_lock import WorkersLock, wait_for_orphans

    queue = str(tmp_path / "queue.db")
    held = WorkersLock(queue)
    held.hold(every=0.05)
    assert wait_for_orphans(queue, timeout=0.3) is False  # a new serve waits for it
    os.remove(queue + ".workers.lock")
    deadline = time.monotonic() + 10
    while lock_state(queue + ".workers.lock") != "held" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert lock_state(queue + ".workers.lock") == "held"
    assert wait_for_orphans(queue, timeout=0.3) is False  # and waits again
    held.close()
    assert wait_for_orphans(queue, timeout=0.3) is True


def test_an_orphaned_worker_holds_the_workers_lock_made_again(tmp_path, jira, example_config):
    """Through a real serve: its parent killed, the worker finishes its event (Jira is
    slow); the lock file deleted meanwhile is made again and held by the orphan, so a new
    serve would wait for it."""
    jira.add_issue("PAW-77", *LAB, customer="Harbour Lane")
    service = ServiceProcess(tmp_path, jira, example_config,
                             {"SCOPEGUARD_WEBHOOK_SECRET": SECRET, "SCOPEGUARD_MODEL": "hashing"})
    service.start()
    [worker] = workers_of(service)
    lock = service.queue + ".workers.lock"
    jira.delay = 3.0
    try:
        assert service.post(issue_event("PAW-77"), delivery="orphan-1").status_code == 202
        queue = EventQueue(service.queue)
        service.wait(lambda: queue.counts()["leased"] == 1, 30, "the event leased")
        service.proc.kill()  # the worker is an orphan now, in the middle of its event
        service.proc.wait(10)
        os.remove(lock)  # a cleaner, while it finishes
        deadline = time.monotonic() + 10
        while lock_state(lock) != "held" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert alive(worker) and lock_state(lock) == "held"
    finally:
        jira.delay = 0.0
        deadline = time.monotonic() + 60
        while alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        service.stop()
    assert not alive(worker)
    assert "workers.lock was deleted while this worker ran" in service.log.read_text()


def test_a_worker_that_cannot_start_says_why_and_is_tried_again(tmp_path, jira, example_config):
    broken = tmp_path / "model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "t5"}')
    service = ServiceProcess(tmp_path, jira, example_config,
                             {"SCOPEGUARD_WEBHOOK_SECRET": SECRET,
                              "SCOPEGUARD_MODEL": str(broken)})
    service.start(ready=False)
    try:
        service.wait(lambda: service.get("/healthz").json()["status"] == "error", 90,
                     "/healthz to say error (not loading for ever)")
        service.wait(lambda: service.metrics().get("scopeguard_worker_restarts_total", 0) >= 1,
                     what="the pool to see the worker exit")
        health = service.get("/healthz")
        assert health.status_code == 503 and "model.safetensors" in health.json()["error"]
        response = service.post(issue_event("PAW-1"), delivery="x1")
        assert response.status_code == 503  # the sender keeps it and retries
        assert "restarting it in 30s" in service.log.read_text()
    finally:
        service.stop()


def test_the_pool_keeps_each_trackers_newest_report():
    """Worker processes report each tracker's write-back outcome with time.monotonic()
    (one clock for the machine): the newest wins per tracker, whichever worker sent it,
    and one tracker's success never clears another's failure."""
    from scopeguard.integrations.service.metrics import Metrics
    from scopeguard.integrations.service.pool import WorkerPool
    from scopeguard.integrations.service.settings import ServiceSettings

    pool = WorkerPool(ServiceSettings(), 2, Metrics(), lambda pid: 0, "info", [])
    try:
        rejected = "Jira rejected the credentials (401) while reading issue PAW-1."
        pool.apply("reach", 1, ("jira", 20.0, rejected))
        pool.apply("reach", 2, ("jira", 10.0, ""))  # older, read after: dropped
        pool.apply("reach", 2, ("github", 30.0, ""))  # GitHub's success: Jira's stays
        assert pool.reach == {"jira": (20.0, rejected), "github": (30.0, "")}
        pool.apply("reach", 2, ("jira", 25.0, ""))  # a newer Jira success clears it
        assert pool.reach["jira"] == (25.0, "")
    finally:
        pool.stopping.set()
        pool.wake.pending.set()


def test_a_worker_that_stalled_past_its_lease_writes_nothing_back(tmp_path, jira,
                                                                  example_config):
    """A worker frozen mid-event (SIGSTOP: a paused machine, a swap storm) loses its lease;
    the other worker handles the issue as it is now. When the frozen one resumes with what
    it read before, it must not write that back (it rewrote the comment with a stale
    verdict and a false 'a person removed the label' note): its lease is confirmed first."""
    jira.add_issue("PAW-8", *LAB, customer="Harbour Lane")
    service = ServiceProcess(tmp_path, jira, example_config,
                             {"SCOPEGUARD_WEBHOOK_SECRET": SECRET, "SCOPEGUARD_LEASE": "3",
                              "SCOPEGUARD_MODEL": "hashing"}, args=("--workers", "2"))
    service.start()
    real_handle, frozen = jira.handle, []

    def handle(method, path, query, body):
        if method == "GET" and path.endswith("/issue/PAW-8") and not frozen:
            [row] = service.sql("SELECT lease_owner FROM events WHERE delivery_id = 'st-1'")
            frozen.append(int(row["lease_owner"].split(":")[0]))
            os.kill(frozen[0], signal.SIGSTOP)  # its answer (the text before) waits for it
        return real_handle(method, path, query, body)

    jira.handle = handle
    try:
        assert service.post(issue_event("PAW-8"), delivery="st-1").status_code == 202
        service.wait(lambda: bool(frozen), what="the first worker to read the issue")
        jira.update_issue("PAW-8", summary=BOOSTER[0], description=BOOSTER[1])  # an edit
        assert service.post(issue_event("PAW-8", "jira:issue_updated", changed=("summary",)),
                            delivery="st-2").status_code == 202
        service.wait(lambda: service.events()["st-2"]["state"] == "done", timeout=60,
                     what="the other worker")
        writes = [c for c in jira.calls() if c.method in ("POST", "PUT", "DELETE")]
        comment = jira.comment_texts("PAW-8")
        os.kill(frozen[0], signal.SIGCONT)
        service.wait(lambda: "the lease ran out while this worker stalled" in
                     service.log_text(), what="the resumed worker to give up")
        assert [c for c in jira.calls() if c.method in ("POST", "PUT", "DELETE")] == writes
        assert jira.comment_texts("PAW-8") == comment and len(comment) == 1
        # nor what it stored: the issue's row (demand for others) is the edited request
        [row] = service.sql("SELECT request FROM issues WHERE key = 'PAW-8'")
        assert json.loads(row["request"])["title"] == BOOSTER[0]
    finally:
        if frozen:
            os.kill(frozen[0], signal.SIGCONT)
        service.stop()

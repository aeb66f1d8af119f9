"""The Jira webhook service, end to end: ``scopeguard serve`` runs as a real uvicorn process,
webhooks go to it over HTTP, and its write-back lands in a fake Jira REST server
(tests/fake_jira.py). The client, the queue and the comment formats are also tested
in-process against the same fake."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections import Counter

import pytest
from fake_jira import CUSTOMER_FIELD, FakeJira, ServiceProcess, adf_problem, issue_event
from samples import BOOSTER, LAB, WHATSAPP
from scopeguard.integrations import jira as jc
from scopeguard.integrations.jira import format as jf
from scopeguard.integrations.jira import webhook as jira_webhook
from scopeguard.integrations.jira.webhook import parse_webhook
from scopeguard.integrations.service import queue as jira_queue
from scopeguard.integrations.service import store as jira_store
from scopeguard.integrations.service.auth import sign
from scopeguard.integrations.service.queue import EventQueue, QueueError

from scopeguard import render
from scopeguard.cli import cli

JIRA_LABELS = {"core": "scope:core", "generalizable": "scope:generalizable",
               "one_off": "scope:one-off"}
SECRET = "whsec-7f3a9c1e5b2d"
TOKEN = "automation-token-91c4e2"
PAT = "pat-5d8e1f0a7b3c"
API_TOKEN = "atl-api-token-0e9d8c"

@pytest.fixture(scope="module")
def config(tmp_path_factory, example_config):
    """The example positioning file with a ``jira:`` section."""
    path = tmp_path_factory.mktemp("config") / "scopeguard.yml"
    path.write_text(example_config.read_text() + "\njira:\n  projects: [PAW]\n"
                    "  issue_types: [Story, New Feature]\n  customer_field: Clinic\n"
                    "filters:\n  skip_authors: [Release.Manager@pawtrack.example]\n")
    return path


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def server_store(request) -> dict[str, str]:
    """The Server-flavour service's tests run twice: on the SQLite queue file, and on a
    PostgreSQL store (``--store``) of their own."""
    if request.param == "sqlite":
        return {}
    cluster = request.getfixturevalue("pg_cluster")
    return {"SCOPEGUARD_STORE": cluster.create_database("jira_service")}


@pytest.fixture(scope="module")
def server_jira(server_store):
    with FakeJira(flavour="server", pat=PAT) as jira:
        yield jira


@pytest.fixture(scope="module")
def server(tmp_path_factory, server_jira, server_store, config, session_db):
    """Jira Server flavour, the real model (SCOPEGUARD_MODEL unset), signature and token."""
    tmp = tmp_path_factory.mktemp("server")
    service = ServiceProcess(tmp, server_jira, config, {
        "SCOPEGUARD_WEBHOOK_SECRET": SECRET, "SCOPEGUARD_WEBHOOK_TOKEN": TOKEN,
        "SCOPEGUARD_DB": str(session_db), "SCOPEGUARD_MAX_BODY": "65536",
        "SCOPEGUARD_JIRA_RETRIES": "1", "SCOPEGUARD_RETRY_BASE": "0.3", **server_store})
    yield service.start()
    service.stop()


@pytest.fixture(scope="module")
def cloud(tmp_path_factory, config):
    """Jira Cloud flavour (email + API token, ADF comments), the hashing embedder."""
    tmp = tmp_path_factory.mktemp("cloud")
    with FakeJira(flavour="cloud", email="bot@pawtrack.example", token=API_TOKEN) as jira:
        for n, clinic in enumerate(["Oakfield", "Harbour Lane", "Kingsway"]):
            jira.add_issue(f"PAW-{100 + n}", *WHATSAPP, customer=clinic)
        service = ServiceProcess(tmp, jira, config, {"SCOPEGUARD_MODEL": "hashing",
                                                     "SCOPEGUARD_WEBHOOK_SECRET": SECRET},
                                 args=("--seed-jql", "project = PAW"))
        yield service.start()
        service.stop()


def processed(service: ServiceProcess, delivery: str) -> None:
    service.wait(lambda: (service.events().get(delivery) or {}).get("state") == "done",
                 what=f"delivery {delivery} to be processed")


# --- Server / Data Center, real model ----------------------------------------------------------


@pytest.mark.model
def test_issue_created_labels_and_comments_once(server, server_jira):
    server_jira.add_issue("PAW-1", *BOOSTER, customer="Riverside Vets")
    response = server.post(issue_event("PAW-1"), delivery="created-1")
    assert response.status_code == 202, response.text
    assert response.json() == {"status": "queued", "delivery": "created-1", "issue": "PAW-1"}
    processed(server, "created-1")
    assert server_jira.labels("PAW-1") == ["scope:core"]
    [comment] = server_jira.comments["PAW-1"]
    assert isinstance(comment["body"], str)  # wiki markup, not ADF, on Server
    assert comment["body"].startswith("h3. scopeguard: *Core* ({{scope:core}})")
    assert render.COMMENT_MARKER in comment["body"] and "**" not in comment["body"]
    assert render.marked_label(comment["body"]) == "core"
    assert not server_jira.calls(path="/rest/api/3/")  # Server has no API v3


@pytest.mark.model
def test_the_service_gives_unsure_verdicts_the_needs_decision_label(tmp_path, config,
                                                                     session_db):
    """SCOPEGUARD_JIRA_NEEDS_DECISION: the shipped head's certainty for this core verdict is
    below 85%, so the issue gets the needs-decision label and the comment says so."""
    with FakeJira(flavour="server", pat=PAT) as jira:
        jira.add_issue("PAW-70", *BOOSTER, customer="Riverside Vets")
        service = ServiceProcess(tmp_path, jira, config, {
            "SCOPEGUARD_WEBHOOK_SECRET": SECRET, "SCOPEGUARD_DB": str(session_db),
            "SCOPEGUARD_JIRA_NEEDS_DECISION": "scope: needs-decision"}).start()
        try:
            processed(service, service.post(issue_event("PAW-70"), delivery="nd-1")
                      .json()["delivery"])
            assert jira.labels("PAW-70") == ["scope:needs-decision"]
            [comment] = jira.comments["PAW-70"]
            assert comment["body"].startswith("bq. *Needs a decision:* labelled "
                                              "{{scope:needs-decision}}")
            assert "h3. scopeguard: *Needs a decision*: leans Core ({{scope:core}})" in \
                comment["body"]
            assert "Not sure enough to decide alone" in comment["body"]
            # A person decides (the leaning label itself): the decision is exported marked
            # as what scopeguard asked for; an issue it labelled surely would not be.
            jira.update_issue("PAW-70", labels=["scope:needs-decision", "scope:core"])
            hook = issue_event("PAW-70", "jira:issue_updated", changed=("labels",))
            processed(service, service.post(hook, delivery="nd-2").json()["delivery"])
            assert jira.labels("PAW-70") == ["scope:core"]
            again = issue_event("PAW-70", "jira:issue_updated", changed=("description",))
            processed(service, service.post(again, delivery="nd-3").json()["delivery"])
            [row] = jira_store.read_relabels(service.queue).rows
            assert (row["id"], row["label"], row["predicted"], row["asked"]) == \
                ("PAW-70", "core", "core", "needs_decision")
            # the request is edited into a stated non-goal while their label stands: the
            # export keeps what scopeguard had leaned to when they decided, not today's
            jira.update_issue("PAW-70", summary=LAB[0], description=LAB[1])
            edited = issue_event("PAW-70", "jira:issue_updated", changed=("description",))
            processed(service, service.post(edited, delivery="nd-5").json()["delivery"])
            assert "h3. scopeguard: *One-off custom*" in jira.comments["PAW-70"][0]["body"]
            [row] = jira_store.read_relabels(service.queue).rows
            assert (row["label"], row["predicted"]) == ("core", "core")
            # they change their mind: still the decision scopeguard asked for
            jira.update_issue("PAW-70", labels=["scope:one-off"])
            third = issue_event("PAW-70", "jira:issue_updated", changed=("labels", "summary"))
            processed(service, service.post(third, delivery="nd-4").json()["delivery"])
            [row] = jira_store.read_relabels(service.queue).rows
            assert (row["label"], row["predicted"], row["asked"]) == \
                ("one_off", "core", "needs_decision")
        finally:
            service.stop()


@pytest.mark.model
def test_issue_updated_replaces_label_and_updates_comment_in_place(server, server_jira):
    server_jira.add_issue("PAW-2", *BOOSTER, customer="Oakfield")
    processed(server, server.post(issue_event("PAW-2"), delivery="u-1").json()["delivery"])
    assert server_jira.labels("PAW-2") == ["scope:core"]
    [before] = server_jira.comment_texts("PAW-2")
    first_id = server_jira.comments["PAW-2"][0]["id"]

    server_jira.update_issue("PAW-2", summary=LAB[0], description=LAB[1])
    hook = issue_event("PAW-2", "jira:issue_updated", changed=("summary", "description"))
    assert server.post(hook, delivery="u-2").status_code == 202
    processed(server, "u-2")
    assert server_jira.labels("PAW-2") == ["scope:one-off"]  # replaced, not added
    [comment] = server_jira.comments["PAW-2"]
    assert comment["id"] == first_id and comment["version"] == 2  # updated in place
    assert render.marked_label(comment["body"]) == "one_off" and comment["body"] != before
    assert len(server_jira.calls("POST", "/issue/PAW-2/comment")) == 1
    assert len(server_jira.calls("PUT", f"/issue/PAW-2/comment/{first_id}")) == 1


@pytest.mark.model
def test_same_delivery_twice_gives_one_comment(server, server_jira):
    server_jira.add_issue("PAW-3", *LAB, customer="Harbour Lane")
    first = server.post(issue_event("PAW-3"), delivery="dup-1")
    again = server.post(issue_event("PAW-3"), delivery="dup-1")
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json() == {"status": "duplicate", "delivery": "dup-1"}
    processed(server, "dup-1")
    # A later delivery of an unchanged issue finds the comment: nothing new is written.
    processed(server, server.post(issue_event("PAW-3"), delivery="dup-2").json()["delivery"])
    assert len(server_jira.comments["PAW-3"]) == 1
    assert len(server_jira.calls("POST", "/issue/PAW-3/comment")) == 1
    assert len(server_jira.calls("PUT", "/issue/PAW-3")) == 1  # the label, once
    assert "comment unchanged" in server.events()["dup-2"]["outcome"]


@pytest.mark.model
def test_unsigned_or_wrongly_signed_is_refused_and_not_queued(server, server_jira):
    server_jira.add_issue("PAW-4", *LAB)
    before = server.metrics().get('scopeguard_webhooks_rejected_total{reason="unauthorized"}', 0)
    body = json.dumps(issue_event("PAW-4")).encode()
    refused = [
        server.post(body, delivery="bad-1", sign=False),
        server.post(body, delivery="bad-2", secret="not-the-secret"),
        server.post(body, delivery="bad-3", token="not-the-token"),
        server.post(body, delivery="bad-4", sign=False,
                    headers={"X-Hub-Signature": sign(SECRET, b"{}")}),
        server.post(body, delivery="bad-5", sign=False,
                    headers={"X-Hub-Signature": "sha1=" + "0" * 40}),
    ]
    assert [r.status_code for r in refused] == [401] * 5
    assert "not signed" in refused[0].json()["error"]
    assert "SCOPEGUARD_WEBHOOK_SECRET" in refused[1].json()["error"]
    after = server.metrics()['scopeguard_webhooks_rejected_total{reason="unauthorized"}']
    assert after - before == 5
    assert not {f"bad-{n}" for n in range(1, 6)} & set(server.events())
    time.sleep(0.3)
    assert not server_jira.calls(path="/issue/PAW-4")


@pytest.mark.model
def test_malformed_or_oversize_webhooks_are_refused(server):
    events_before = len(server.events())
    cases = {
        b"{not json": (400, "not valid JSON"),
        b"[1, 2]": (400, "not an object"),
        json.dumps({"webhookEvent": "jira:issue_created"}).encode(): (400, "no 'issue'"),
        json.dumps({"webhookEvent": "jira:issue_created", "issue": {"id": "1"}}).encode():
            (400, "'issue.key'"),
        json.dumps({"webhookEvent": "jira:issue_updated", "issue": {"key": "no key"}}).encode():
            (400, "not an issue key"),
        json.dumps({"webhookEvent": 7}).encode(): (400, "'webhookEvent' must be a string"),
    }
    for body, (status, message) in cases.items():
        response = server.post(body)
        assert response.status_code == status, body
        assert message in response.json()["error"], response.json()
        assert "Fix:" in response.json()["error"]
    huge = json.dumps(issue_event("PAW-5", padding="x" * 70_000)).encode()
    response = server.post(huge)
    assert response.status_code == 413 and "larger than 65536" in response.json()["error"]
    assert len(server.events()) == events_before


@pytest.mark.model
def test_events_not_watched_are_acknowledged_and_ignored(server, server_jira):
    cases = [
        issue_event("PAW-6", "comment_created"),
        issue_event("PAW-6", "jira:issue_updated", changed=("assignee",)),
        issue_event("PAW-6", "jira:issue_updated", issue_event_type_name="issue_commented"),
        issue_event("OPS-1"),
        issue_event("PAW-6", issuetype="Bug"),
    ]
    reasons = []
    for n, payload in enumerate(cases):
        response = server.post(payload, delivery=f"ignored-{n}")
        assert response.status_code == 202 and response.json()["status"] == "ignored"
        reasons.append(response.json()["reason"])
    assert "not watched" in reasons[0] and "no change" in reasons[1]
    assert "comment" in reasons[2] and "jira.projects" in reasons[3]
    assert "jira.issue_types" in reasons[4]
    assert not {f"ignored-{n}" for n in range(len(cases))} & set(server.events())
    assert "ignored comment_created PAW-6" in server.log_text()


@pytest.mark.model
def test_automation_token_and_minimal_payload(server, server_jira):
    server_jira.add_issue("PAW-7", *BOOSTER, customer="Kingsway")
    response = server.post({"issue": {"key": "PAW-7"}}, token=TOKEN,
                           headers={"X-Scopeguard-Delivery": "auto-1"})
    assert response.status_code == 202, response.text
    processed(server, "auto-1")
    assert server.events()["auto-1"]["event"] == "automation"
    response = server.post({"issue": {"key": "PAW-7"}, "n": 2}, sign=False,
                           headers={"X-Scopeguard-Token": TOKEN})
    assert response.status_code == 202 and response.json()["delivery"].startswith("sha256:")
    processed(server, response.json()["delivery"])
    # The documented custom body, without a delivery header, on two runs of the rule (the
    # issue edited between them): both are classified, the second against the new text.
    runs = []
    for title in ("Book recurring booster visits", "Book recurring booster visits by SMS"):
        server_jira.update_issue("PAW-7", summary=title)
        response = server.post({"issue": {"key": "PAW-7"}}, sign=False,
                               headers={"X-Scopeguard-Token": TOKEN})
        assert response.status_code == 202 and response.json()["status"] == "queued", \
            response.text
        runs.append(response.json()["delivery"])
        processed(server, runs[-1])
    assert runs[0] != runs[1]
    # Jira Server webhooks can carry neither a secret nor a header: ?token= in the URL.
    response = server.post({"issue": {"key": "PAW-7"}, "n": 3}, sign=False,
                           path=f"/webhooks/jira?token={TOKEN}")
    assert response.status_code == 202
    processed(server, response.json()["delivery"])
    assert len(server_jira.comments["PAW-7"]) == 1


@pytest.mark.model
def test_issue_filtered_by_type_or_label_after_reading_it(server, server_jira):
    # The payload says Story, but the issue is now a Bug: the worker's fresh read decides.
    server_jira.add_issue("PAW-8", *BOOSTER, issuetype="Bug")
    server_jira.add_issue("PAW-9", *BOOSTER, labels=("bug",))
    server_jira.add_issue("PAW-14", "Please " * 200, BOOSTER[1])  # a title no one can read
    for key in ("PAW-8", "PAW-9", "PAW-14"):
        processed(server, server.post(issue_event(key), delivery=f"skip-{key}").json()["delivery"])
    assert "issue type 'Bug'" in server.events()["skip-PAW-8"]["outcome"]
    assert "not a feature request" in server.events()["skip-PAW-9"]["outcome"]
    assert "title is 1,400 characters" in server.events()["skip-PAW-14"]["outcome"]
    assert all(server_jira.comments[k] == [] for k in ("PAW-8", "PAW-9", "PAW-14"))


@pytest.mark.model
def test_jira_errors_are_retried_and_the_event_is_kept(server, server_jira):
    server_jira.add_issue("PAW-10", *LAB, customer="Harbour Lane")
    server_jira.fail(503, times=1, retry_after="1", path="/issue/PAW-10")
    server_jira.fail(429, times=1, retry_after="1", method="POST", path="/issue/PAW-10/comment")
    processed(server, server.post(issue_event("PAW-10"), delivery="retry-1").json()["delivery"])
    statuses = [c.status for c in server_jira.calls(path="/issue/PAW-10")]
    assert 503 in statuses and 429 in statuses
    assert len(server_jira.comments["PAW-10"]) == 1

    # More failures than the client retries (SCOPEGUARD_JIRA_RETRIES=1): the event goes
    # back to the queue and a later attempt succeeds.
    server_jira.add_issue("PAW-11", *LAB)
    server_jira.fail(500, times=4, path="/issue/PAW-11")
    retried = server.metrics()["scopeguard_events_retried_total"]
    processed(server, server.post(issue_event("PAW-11"), delivery="retry-2").json()["delivery"])
    assert server.events()["retry-2"]["attempts"] == 3
    assert server.metrics()["scopeguard_events_retried_total"] - retried == 2
    assert len(server_jira.comments["PAW-11"]) == 1
    assert "attempt 1 failed, retrying" in server.log_text()


@pytest.mark.model
def test_a_label_set_by_a_person_stands(server, server_jira):
    server_jira.add_issue("PAW-12", *LAB, labels=("scope:generalizable", "clinic-request"))
    processed(server, server.post(issue_event("PAW-12"), delivery="human-1").json()["delivery"])
    assert server_jira.labels("PAW-12") == ["scope:generalizable", "clinic-request"]
    [text] = server_jira.comment_texts("PAW-12")
    assert "A person's label stands:* {{scope:generalizable}}" in text
    # the marker claims no label of scopeguard's, so the person's is never read as its own
    # (even when its verdict agrees); the verdict is kept in the store, for the record
    assert render.marked_label(text) == render.PENDING
    [row] = server.sql("SELECT human, predicted FROM issues WHERE key = 'PAW-12'")
    assert row["human"] == "scope:generalizable" and row["predicted"] in JIRA_LABELS


@pytest.mark.model
def test_healthz_and_metrics(server):
    health = server.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ready", health.text
    assert health.json()["jira"] == "server"
    response = server.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    metrics = server.metrics()
    for name in ('scopeguard_webhooks_received_total{result="queued"}',
                 "scopeguard_queue_depth", "scopeguard_event_latency_seconds_count",
                 'scopeguard_webhook_accept_seconds_bucket{le="+Inf"}',
                 "scopeguard_events_failed_total", "scopeguard_worker_ready"):
        assert name in metrics, name
    assert metrics['scopeguard_events_processed_total{outcome="core"}'] >= 1
    assert metrics["scopeguard_worker_ready"] == 1


@pytest.mark.model
def test_secrets_never_in_logs_or_responses(server, server_jira):
    # Provoke the paths that handle credentials: a near-miss token, and Jira refusing the PAT.
    server.post({"issue": {"key": "PAW-13"}}, token=TOKEN[:-1])
    server_jira.add_issue("PAW-13", *LAB)
    server_jira.pat = "rotated-pat"
    try:
        server.post(issue_event("PAW-13"), delivery="secret-1")
        server.wait(lambda: "rejected the credentials" in server.log_text(),
                    what="the 401 from Jira in the log")
    finally:
        server_jira.pat = PAT
    log = server.log_text()
    assert "JIRA_PAT" in log  # the fix is named...
    for secret in (SECRET, TOKEN, PAT, TOKEN[:-1]):
        assert secret not in log  # ...the secret is not
        for response in server.responses:
            assert secret not in response.text
    processed(server, "secret-1")  # the event waited for the credentials to be fixed


# --- Cloud: ADF through API v3 -------------------------------------------------------------


def test_cloud_comment_is_adf_and_updated_in_place(cloud):
    jira = cloud.jira
    jira.add_issue("PAW-20", *WHATSAPP, customer="Riverside Vets")
    processed(cloud, cloud.post(issue_event("PAW-20"), delivery="c-1").json()["delivery"])
    [comment] = jira.comments["PAW-20"]
    assert isinstance(comment["body"], dict) and adf_problem(comment["body"]) == ""
    first_label = jira.labels("PAW-20")
    [text] = jira.comment_texts("PAW-20")
    assert first_label == [JIRA_LABELS[render.marked_label(text)]]
    # Demand counts the issues read at start (--seed-jql) through Cloud's search/jql.
    assert "seeded demand with 3 issues" in cloud.log_text()
    assert "4 distinct customers asked" in text and "PAW-101" in text
    assert jira.calls("POST", "/rest/api/3/issue/PAW-20/comment")
    jira.update_issue("PAW-20", summary=LAB[0], description=LAB[1])
    hook = issue_event("PAW-20", "jira:issue_updated", changed=("description",))
    processed(cloud, cloud.post(hook, delivery="c-2").json()["delivery"])
    [after] = jira.comments["PAW-20"]
    assert after["id"] == comment["id"] and after["version"] == 2
    assert jira.labels("PAW-20") == ["scope:one-off"] != first_label
    heading = after["body"]["content"][0]
    assert heading["type"] == "heading" and heading["content"][1]["marks"] == [{"type": "strong"}]
    assert API_TOKEN not in cloud.log_text()


def test_issues_by_bots_or_skipped_authors_are_not_classified(cloud):
    """Automation for Jira (an app account) and the release manager open issues too: they
    are skipped, neither labelled nor commented (filters.skip_bots, skip_authors)."""
    jira = cloud.jira
    jira.add_issue("PAW-60", *LAB, reporter="automation@pawtrack.example", reporter_type="app")
    jira.add_issue("PAW-61", *LAB, reporter="release.manager@pawtrack.example")
    outcomes = {}
    for key in ("PAW-60", "PAW-61"):
        delivery = cloud.post(issue_event(key), delivery=f"skip-{key}").json()["delivery"]
        processed(cloud, delivery)
        outcomes[key] = cloud.events()[delivery]["outcome"]
    assert outcomes["PAW-60"].startswith("skipped: not a feature request: it was opened by a bot")
    assert outcomes["PAW-61"].startswith("skipped") and "skip_authors" in outcomes["PAW-61"]
    for key in ("PAW-60", "PAW-61"):
        assert jira.labels(key) == [] and jira.comments[key] == []


# --- relabels: people's labels feed calibration ------------------------------------------------


WAITLIST = ("Waitlist for cancelled appointment slots",
            "When an owner cancels, offer the freed slot to owners on a waitlist for that vet and "
            "day, by SMS, first come first served.")
RELABEL_FIELDS = ["id", "title", "body", "author", "customer", "created_at", "url", "label",
                  "predicted", "recorded_at", "by"]


def test_relabels_from_jira_feed_calibrate(cloud, config, runner, tmp_path):
    """A person replaces scopeguard's label on Jira; `scopeguard relabels` exports the
    decision from the running service's queue file; `scopeguard calibrate` learns from it."""
    jira = cloud.jira
    asks = {"PAW-40": BOOSTER, "PAW-41": LAB, "PAW-42": WHATSAPP, "PAW-43": WAITLIST,
            "PAW-44": BOOSTER}
    for n, (key, ask) in enumerate(asks.items()):
        jira.add_issue(key, *ask, customer=f"Clinic {n}", reporter=f"pm{n}@clinic.example")
        processed(cloud, cloud.post(issue_event(key), delivery=f"rl-{key}").json()["delivery"])
    predicted = {key: render.marked_label(jira.comment_texts(key)[0]) for key in asks}
    # A person relabels four of them (PAW-44 keeps scopeguard's label): each pair of
    # decisions differs, so every calibration fold sees two labels.
    decided: dict[str, str] = {}
    last = ""
    for n, key in enumerate(list(asks)[:4]):
        options = [label for label in JIRA_LABELS if label != predicted[key]]
        choice = options[0] if n % 2 == 0 else next(o for o in options if o != last)
        decided[key] = last = choice
        jira.set_labels(key, ["clinic-request", JIRA_LABELS[choice]], by=f"Vet Lead {n}")
        hook = issue_event(key, "jira:issue_updated", changed=("labels",))
        processed(cloud, cloud.post(hook, delivery=f"rl-{key}-relabel").json()["delivery"])
        assert jira.labels(key) == ["clinic-request", JIRA_LABELS[choice]]  # it stands
        assert "A person's label stands:" in jira.comment_texts(key)[0]

    out = tmp_path / "jira-relabels.jsonl"
    result = runner.invoke(cli, ["relabels", "--queue", cloud.queue, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 4 people's labels" in result.stderr and "4 differ" in result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["id"] for r in rows} == set(decided)  # PAW-44 and the other issues: none
    for row in rows:
        key = row["id"]
        assert list(row) == RELABEL_FIELDS
        assert (row["label"], row["predicted"]) == (decided[key], predicted[key])
        assert (row["title"], row["body"]) == asks[key]
        assert row["customer"] == f"Clinic {list(asks).index(key)}"  # by the customer field
        assert row["url"] == f"{jira.url}/browse/{key}"
        assert row["author"].endswith("@clinic.example") and row["created_at"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", row["recorded_at"])
        assert row["by"] == f"Vet Lead {list(asks).index(key)}"  # from Jira's changelog
    # A later edit keeps the person's label, and the time it was first seen.
    first = rows[0]["id"]

    def human_at() -> tuple:
        conn = sqlite3.connect(cloud.queue)
        try:
            return conn.execute("SELECT human_key, human_at FROM issues WHERE key = ?",
                                (first,)).fetchone()
        finally:
            conn.close()

    before = human_at()
    jira.update_issue(first, description=asks[first][1] + " Thanks!")
    hook = issue_event(first, "jira:issue_updated", changed=("description",))
    processed(cloud, cloud.post(hook, delivery="rl-edit").json()["delivery"])
    assert human_at() == before and before[0] == decided[first]
    again = runner.invoke(cli, ["relabels", "--queue", cloud.queue])
    assert again.exit_code == 0
    assert json.loads(again.stdout.splitlines()[0]) == {**rows[0], "body": asks[first][1] + " Thanks!"}

    calibration = tmp_path / "calibration.json"
    result = runner.invoke(cli, ["calibrate", "--labels", str(out), "-c", str(config), "--out",
                                 str(calibration), "--db", str(tmp_path / "cache.db")],
                           env={"SCOPEGUARD_MODEL": "hashing"})
    assert result.exit_code == 0, result.output
    assert "fitted on 4 requests" in result.output
    fitted = json.loads(calibration.read_text())["fitted_on"]
    assert fitted["n"] == 4 and fitted["labels"] == dict(Counter(decided.values()))


# --- the CLI -----------------------------------------------------------------------------------


def test_serve_refuses_to_start_without_webhook_auth(runner, config, monkeypatch):
    monkeypatch.setenv("JIRA_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("JIRA_PAT", PAT)
    result = runner.invoke(cli, ["serve", "-c", str(config)])
    assert result.exit_code == 2
    assert "SCOPEGUARD_WEBHOOK_SECRET" in result.output and PAT not in result.output


def test_serve_refuses_to_start_without_jira_credentials(runner, config, monkeypatch, tmp_path):
    monkeypatch.setenv("SCOPEGUARD_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("JIRA_URL", "https://jira.example.com")
    result = runner.invoke(cli, ["serve", "-c", str(config), "--queue",
                                 str(tmp_path / "q.db")])
    assert result.exit_code == 2 and "no Jira credentials" in result.output
    assert "JIRA_PAT" in result.output and SECRET not in result.output


def test_one_serve_process_per_queue_file(tmp_path):
    first, second = EventQueue(tmp_path / "q.db"), EventQueue(tmp_path / "q.db")
    first.lock()
    with pytest.raises(QueueError, match="in use by another scopeguard serve"):
        second.lock()
    first.close()
    second.lock()  # free again once the holder is gone
    second.close()


# --- the client, in-process ----------------------------------------------------------------


@pytest.mark.parametrize("flavour", ["server", "cloud"])
def test_fetch_issues_paginates(flavour):
    with FakeJira(flavour=flavour, pat=PAT if flavour == "server" else "",
                  email="bot@x.example" if flavour == "cloud" else "", token=API_TOKEN,
                  page_cap=7) as jira:
        for n in range(1, 24):
            jira.add_issue(f"PAW-{n}", f"Request {n}", f"Body {n}", customer=f"Clinic {n}")
        jira.add_issue("OPS-1", "Elsewhere")
        client = jc.make_jira(environ=jira.env)
        assert client.flavour == flavour
        requests = jc.fetch_issues(client, "project = PAW ORDER BY created", page_size=10,
                                   customer_field="Clinic")
        assert [r.id for r in requests] == [f"PAW-{n}" for n in range(1, 24)]
        assert requests[4].customer == "Clinic 5" and requests[4].url.endswith("/browse/PAW-5")
        assert requests[4].extra == {"project": "PAW", "issue_type": "Story"}
        assert len(jc.fetch_issues(client, "project = PAW", limit=9)) == 9
        search = "/rest/api/2/search/jql" if flavour == "cloud" else "/rest/api/2/search"
        pages = [c for c in jira.calls("GET", search) if c.path == search]
        assert len(pages) == 4 + 2  # 23 issues at 7 a page, then 9 issues
        assert all(CUSTOMER_FIELD in c.query["fields"][0] for c in pages[:4])


def test_client_errors_name_the_fix_and_hide_credentials():
    with FakeJira(flavour="server", pat=PAT) as jira:
        jira.add_issue("PAW-1", "A request")
        wrong = jc.make_jira(jira.url, pat="wrong-" + PAT, environ={})
        with pytest.raises(jc.JiraAuthError) as err:
            wrong.get_issue("PAW-1")
        assert "JIRA_PAT" in str(err.value) and PAT not in str(err.value)
        client = jc.make_jira(jira.url, pat=PAT, environ={})
        with pytest.raises(jc.JiraNotFoundError, match="context path"):
            client.get_issue("PAW-404")
        with pytest.raises(jc.JiraRequestError, match="JQL"):
            jc.fetch_issues(client, "project in (")
        with pytest.raises(jc.JiraConfigError, match="not a Jira field"):
            jc.fetch_issues(client, "project = PAW", customer_field="Region")


class OddJira(FakeJira):
    """A fake Jira whose answers to chosen (method, path part) are replaced."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.odd: dict[tuple[str, str], tuple] = {}

    def route(self, method, path, query, body):
        for (m, part), answer in self.odd.items():
            if m == method and part in path:
                return answer
        return super().route(method, path, query, body)


ODD_ANSWERS = {
    "issue is a list": (("GET", "issue/PAW-1"), (200, [1, 2], {}), "the issue is a list"),
    "issue is text": (("GET", "issue/PAW-1"), (200, "hello", {}), "the issue is text"),
    "issue is null": (("GET", "issue/PAW-1"), (200, None, {}), "the issue is null"),
    "reporter is text": (("GET", "issue/PAW-1"), (200, {"key": "PAW-1", "fields": {
        "reporter": "bob"}}, {}), "'fields.reporter' is text"),
    "project is text": (("GET", "issue/PAW-1"), (200, {"key": "PAW-1", "fields": {
        "project": "PAW"}}, {}), "'fields.project' is text"),
    "comments is an object": (("GET", "PAW-1/comment"), (200, {"comments": {"a": 1},
                                                               "total": 1}, {}),
                              "'comments' is an object"),
    "total is text": (("GET", "PAW-1/comment"), (200, {"comments": [{"id": "1"}],
                                                       "total": "x"}, {}), "'total' is text"),
    "author is text": (("GET", "PAW-1/comment"), (200, {"comments": [
        {"id": "1", "author": "bob"}], "total": 1}, {}), "'author' is text"),
    "comment POST answers a list": (("POST", "PAW-1/comment"), (201, [], {}),
                                    "the comment is a list"),
}


@pytest.mark.parametrize("case", sorted(ODD_ANSWERS))
def test_jira_answers_of_the_wrong_shape_are_errors_naming_the_fix(case):
    """JSON of another shape than Jira's (a proxy, another service at JIRA_URL) is checked
    where the client reads it: a JiraError naming the fix, never AttributeError/TypeError
    (which the worker would log with a traceback, naming no fix)."""
    where, answer, words = ODD_ANSWERS[case]
    with OddJira(flavour="server", pat=PAT) as jira:
        jira.add_issue("PAW-1", *LAB)
        client = jc.make_jira(environ=jira.env, retry=jc.RetryPolicy(retries=0))
        jira.odd[where] = answer
        with pytest.raises(jc.JiraError) as caught:  # not AttributeError/TypeError
            client.get_issue("PAW-1")
            jc.write_back(client, "PAW-1", "core", verdict_markdown("core"), JIRA_LABELS, [])
    message = str(caught.value)
    assert words in message and "unexpected shape" in message, message
    assert "Fix: check that JIRA_URL points at Jira's REST API" in message
    assert isinstance(caught.value, jc.JiraAnswerError)


def test_retries_honour_retry_after_then_give_up():
    with FakeJira(flavour="server", pat=PAT) as jira:
        jira.add_issue("PAW-1", "A request")
        waits: list[float] = []
        client = jc.make_jira(jira.url, pat=PAT, environ={},
                              retry=jc.RetryPolicy(retries=3, backoff=0.01, max_wait=5))
        client.sleep = waits.append
        jira.fail(429, times=2, retry_after="2")
        jira.fail(503, times=1, retry_after="30")  # capped at max_wait
        assert client.get_issue("PAW-1")["key"] == "PAW-1"
        assert waits == [2.0, 2.0, 5.0]
        jira.fail(502, times=10)
        with pytest.raises(jc.JiraUnavailableError, match="kept answering 502"):
            client.get_issue("PAW-1")
        assert len(waits) == 6 and all(w <= 0.04 for w in waits[3:])  # backoff, no header
        # A POST that met a 5xx may have been applied: the comment is looked up, not re-posted.
        jira.failures.clear()
        jira.fail(500, times=1, method="POST")
        result = jc.write_back(client, "PAW-1", "core", lambda name, **_: render.COMMENT_MARKER +
                               "\nbody", {"core": "scope: core", "generalizable": "g",
                                          "one_off": "o"}, [])
        assert result.comment == "created" and len(jira.comments["PAW-1"]) == 1
        assert jira.labels("PAW-1") == ["scope:core"]


def test_make_jira_config_errors():
    with pytest.raises(jc.JiraConfigError, match="JIRA_URL"):
        jc.make_jira(environ={})
    with pytest.raises(jc.JiraConfigError, match="JIRA_EMAIL is not"):
        jc.make_jira("https://x.atlassian.net", token=API_TOKEN, environ={})
    with pytest.raises(jc.JiraConfigError, match="not cloud or server"):
        jc.make_jira("https://jira.example.com", pat=PAT, flavour="onprem", environ={})
    assert jc.make_jira("https://acme.atlassian.net", email="a@b.c", token="t",
                        environ={}).flavour == "cloud"
    assert jc.make_jira("https://jira.example.com", pat=PAT, environ={}).flavour == "server"
    assert jc.jira_label("scope: one-off") == "scope:one-off"
    assert jc.jira_label("needs product review") == "needs-product-review"


# --- formats and payloads --------------------------------------------------------------------


MARKDOWN = "\n".join([
    render.COMMENT_MARKER, "<!-- scopeguard:label=one_off confidence=0.900 -->",
    "### scopeguard: **One-off custom** (`scope:one-off`)", "",
    "Decline it. Confidence 90%.", "",
    "- Asked by *Acme* {panel} [x|http://evil.example] for feature_fit -now-", "",
    "| evidence | name | score |", "|---|---|---|", "| feature | Pipes \\| here | 0.35 |", "",
    "- [PAW-3](https://jira.example.com/browse/PAW-3) Similar (Clinic, 0.81)", "",
    "<details><summary>Signals used</summary>", "", "fit 0.1", "", "</details>", "",
    "<sub>Disagree? Replace the label.</sub>"])


def test_wiki_markup_escapes_what_requesters_wrote():
    wiki = jf.to_wiki(MARKDOWN)
    assert wiki.startswith("h3. scopeguard: *One-off custom* ({{scope:one-off}})")
    assert r"\*Acme\* \{panel\} \[x\|http://evil.example\]" in wiki
    assert r"feature_fit \-now\-" in wiki  # inside words left alone, at edges escaped
    assert "||evidence||name||score||\n|feature|Pipes \\| here|0.35|" in wiki
    assert "* [PAW-3|https://jira.example.com/browse/PAW-3] Similar" in wiki
    assert "*Signals used*" in wiki and "_Disagree? Replace the label._" in wiki
    footer = wiki.rsplit("\n\n", 1)[1]
    assert render.COMMENT_MARKER in footer and render.LABEL_MARKER.search(footer)


def test_adf_document_is_valid_and_keeps_the_markers():
    doc = jf.to_adf(MARKDOWN)
    assert adf_problem(doc) == ""
    kinds = [n["type"] for n in doc["content"]]
    assert kinds[:3] == ["heading", "paragraph", "bulletList"] and "table" in kinds
    text = jf.adf_text(doc)
    assert "*Acme* {panel} [x|http://evil.example]" in text  # ADF needs no escaping
    assert render.COMMENT_MARKER in text and render.marked_label(text) == "one_off"
    link = doc["content"][kinds.index("bulletList", 3)]["content"][0]["content"][0]["content"][0]
    assert link["marks"] == [{"type": "link",
                              "attrs": {"href": "https://jira.example.com/browse/PAW-3"}}]


def test_a_description_nested_hundreds_of_lists_deep_is_read():
    """Jira Cloud keeps whatever ADF an editor or the API gave it: 300 nested bullet lists
    (plus the ancestors of the frames that read them) exhausted a recursive walk."""
    deep = {"type": "doc", "version": 1, "content": []}
    node = deep
    for _ in range(300):
        inner = {"type": "bulletList", "content": []}
        node["content"].append(inner)
        node = inner
    node["content"].append({"type": "paragraph", "content": [
        {"type": "text", "text": "lab results in Pawtrack"}]})
    with FakeJira(flavour="cloud", email="bot@x.example", token=API_TOKEN) as jira:
        jira.add_issue("PAW-41", LAB[0])
        jira.issues["PAW-41"]["fields"]["description"] = deep
        client = jc.make_jira(environ=jira.env)
        request = jc.issue_to_request(client.get_issue("PAW-41"), client.server)
    assert request.body == "lab results in Pawtrack"
    assert jf.adf_text({"type": "doc", "content": [
        {"type": "tableRow", "content": [{"type": "tableCell", "content": [
            {"type": "paragraph", "content": [{"type": "text", "text": "a"}]}]},
            {"type": "tableHeader", "content": [{"type": "hardBreak"}]}]}]}) == "a |  | \n"


# --- security: only scopeguard's own comment is its own (issue 10) --------------------------------


def verdict_markdown(label: str):
    """What write_back is given to build the comment: markers, then the verdict."""
    return lambda name, pending=False, own=True: (
        f"{render.COMMENT_MARKER}\n<!-- scopeguard:label="
        f"{label if own and not pending else render.PENDING} "
        f"confidence=0.700 -->\n### scopeguard: {label} ({name})\n\n- reason")


def footer(label: str, flavour: str):
    """scopeguard's own footer, exactly as it writes it, in this flavour's body format."""
    markdown = verdict_markdown(label)("x")
    return jf.to_adf(markdown)["content"][-1] if flavour == "cloud" else \
        jf.to_wiki(markdown).rsplit("\n\n", 1)[1]


def person_comment(jira: FakeJira, key: str, text: str, flavour: str, ends_with_footer: str):
    """A person's comment that quotes scopeguard's footer as its last line."""
    if flavour == "cloud":
        body = {"type": "doc", "version": 1, "content": [
            {"type": "paragraph", "content": [{"type": "text", "text": text}]},
            footer(ends_with_footer, flavour)]}
    else:
        body = f"{text}\n\n{footer(ends_with_footer, flavour)}"
    return jira.add_comment(key, body, jira.person("Mallory Reply"))


@pytest.mark.parametrize("flavour", ["server", "cloud"])
def test_a_persons_comment_quoting_the_footer_is_never_edited_or_deleted(flavour):
    """A maintainer's reply quoting scopeguard's footer (even as its last line) is not
    scopeguard's comment: with no stored comment id, scopeguard neither rewrites it into
    the verdict nor deletes it as a duplicate; its own comment is the one it wrote."""
    creds = {"pat": PAT} if flavour == "server" else {"email": "bot@x.example",
                                                       "token": API_TOKEN}
    with FakeJira(flavour=flavour, **creds) as jira:
        jira.add_issue("PAW-50", *LAB)
        quoted = person_comment(jira, "PAW-50", "Replying to scopeguard:", flavour, "core")
        client = jc.make_jira(environ=jira.env)
        first = jc.write_back(client, "PAW-50", "one_off", verdict_markdown("one_off"),
                              JIRA_LABELS, [])
        assert first.comment == "created" and first.comment_id != quoted
        second = jc.write_back(client, "PAW-50", "core", verdict_markdown("core"),
                               JIRA_LABELS, jira.labels("PAW-50"))  # no comment_hint
        assert (second.comment, second.comment_id) == ("updated", first.comment_id)
        by_id = {c["id"]: c for c in jira.comments["PAW-50"]}
        assert set(by_id) == {quoted, first.comment_id}
        assert by_id[quoted]["version"] == 1 and "Replying" in jf.adf_text(
            by_id[quoted]["body"]) + str(by_id[quoted]["body"])
        assert not jira.calls("DELETE") and not jira.calls("PUT", f"/comment/{quoted}")
        # A hint pointing at someone else's comment is not trusted either.
        third = jc.write_back(client, "PAW-50", "one_off", verdict_markdown("one_off"),
                              JIRA_LABELS, jira.labels("PAW-50"), comment_hint=quoted)
        assert third.comment_id == first.comment_id
        assert by_id[quoted] == {c["id"]: c for c in jira.comments["PAW-50"]}[quoted]


@pytest.mark.parametrize("flavour", ["server", "cloud"])
def test_a_forged_label_marker_does_not_take_a_persons_label(flavour):
    """A person's scope:core stands although someone's comment claims scopeguard gave it."""
    creds = {"pat": PAT} if flavour == "server" else {"email": "bot@x.example",
                                                       "token": API_TOKEN}
    with FakeJira(flavour=flavour, **creds) as jira:
        jira.add_issue("PAW-51", *LAB, labels=("scope:core",))
        person_comment(jira, "PAW-51", "I labelled it core.", flavour, "core")
        client = jc.make_jira(environ=jira.env)
        result = jc.write_back(client, "PAW-51", "one_off", verdict_markdown("one_off"),
                               JIRA_LABELS, jira.labels("PAW-51"))
        assert jira.labels("PAW-51") == ["scope:core"]
        assert (result.human_label, result.human_key) == ("scope:core", "core")
        assert not result.added and not result.removed


@pytest.mark.parametrize("flavour", ["server", "cloud"])
def test_every_scope_label_a_person_set_stands(flavour):
    """Two scope labels a person set, none of them scopeguard's: both stay (scopeguard
    removes only a scope label it set itself); scopeguard's own gives way to theirs."""
    creds = {"pat": PAT} if flavour == "server" else {"email": "bot@x.example",
                                                       "token": API_TOKEN}
    with FakeJira(flavour=flavour, **creds) as jira:
        jira.add_issue("PAW-52", *LAB, labels=("scope:core", "scope:one-off", "customer-x"))
        client = jc.make_jira(environ=jira.env)
        result = jc.write_back(client, "PAW-52", "one_off", verdict_markdown("one_off"),
                               JIRA_LABELS, jira.labels("PAW-52"))
        assert jira.labels("PAW-52") == ["scope:core", "scope:one-off", "customer-x"]
        assert result.human_label == "scope:core" and not result.removed
        # scopeguard's own label (applied) still goes when a person sets another one
        jira.add_issue("PAW-53", *LAB, labels=("scope:generalizable", "scope:core"))
        result = jc.write_back(client, "PAW-53", "core", verdict_markdown("core"),
                               JIRA_LABELS, jira.labels("PAW-53"), applied="core")
        assert jira.labels("PAW-53") == ["scope:generalizable"]
        assert result.removed == ["scope:core"]


@pytest.mark.parametrize("flavour", ["server", "cloud"])
def test_scopeguards_label_put_back_by_a_person_stands(flavour):
    """A person takes scopeguard's label off and sets it again (they decided the same): a
    later verdict took it off as scopeguard's own. Who added it last is read from the
    issue's changelog (only before scopeguard would remove a label of its own): a
    person's stays; one put back by scopeguard's own account (or an app) still goes."""
    creds = {"pat": PAT} if flavour == "server" else {"email": "bot@x.example",
                                                       "token": API_TOKEN}
    with FakeJira(flavour=flavour, **creds) as jira:
        client = jc.make_jira(environ=jira.env)
        hands = [jira.person("Practice Manager"), jira.bot]
        if flavour == "cloud":  # Automation for Jira: an app account
            hands.append({"accountId": "557058:f58131cb-automation", "accountType": "app",
                          "displayName": "Automation for Jira", "active": True})
        for n, hand in enumerate(hands):
            key = f"PAW-7{n}"
            jira.add_issue(key, *LAB)
            first = jc.write_back(client, key, "core", verdict_markdown("core"),
                                  JIRA_LABELS, [])
            assert jira.labels(key) == ["scope:core"]
            assert not [c for c in jira.calls("GET", key) if "changelog" in c.path +
                        str(c.query)]  # nothing to take off: no changelog read
            jira.set_labels(key, [], author=hand)
            jira.set_labels(key, ["scope:core", "customer-x"], author=hand)
            later = jc.write_back(client, key, "one_off", verdict_markdown("one_off"),
                                  JIRA_LABELS, jira.labels(key), applied=first.applied,
                                  comment_hint=first.comment_id)
            if n == 0:  # a person's: theirs, noted, never removed
                assert jira.labels(key) == ["scope:core", "customer-x"]
                assert (later.human_key, later.removed, later.added) == ("core", [], [])
                assert later.human_by == "Practice Manager"
                assert "A person's label stands" in jira.comment_texts(key)[0]
            else:
                assert jira.labels(key) == ["customer-x", "scope:one-off"], hand
                assert later.removed == ["scope:core"] and not later.human_key


def gated_markdown(label: str):
    """verdict_markdown that also says whether the needs-decision headline was asked for."""
    def build(name: str, pending: bool = False, own: bool = True) -> str:
        head = f"Needs a decision: leans {label}" if pending else label
        marked = label if own and not pending else render.PENDING  # as render marks it
        return (f"{render.COMMENT_MARKER}\n<!-- scopeguard:label={marked} confidence=0.400 -->"
                f"\n### scopeguard: {head} ({name})\n\n- reason")
    return build


@pytest.mark.parametrize("flavour", ["server", "cloud"])
def test_an_unsure_verdict_gets_the_needs_decision_label_until_a_person_decides(flavour):
    creds = {"pat": PAT} if flavour == "server" else {"email": "bot@x.example",
                                                       "token": API_TOKEN}
    pending = "scope: needs-decision"
    with FakeJira(flavour=flavour, **creds) as jira:
        jira.add_issue("PAW-60", *LAB)
        client = jc.make_jira(environ=jira.env)
        # off (the default): the leaning label, as before
        sure = jc.write_back(client, "PAW-60", "core", gated_markdown("core"), JIRA_LABELS, [],
                             needs_decision=True)
        assert jira.labels("PAW-60") == ["scope:core"] and sure.applied == "core"
        # on: scopeguard's own scope label gives way to the needs-decision label
        gated = jc.write_back(client, "PAW-60", "one_off", gated_markdown("one_off"),
                              JIRA_LABELS, jira.labels("PAW-60"), applied=sure.applied,
                              comment_hint=sure.comment_id, pending=pending,
                              needs_decision=True)
        assert jira.labels("PAW-60") == ["scope:needs-decision"]
        assert gated.applied == "needs_decision" and gated.removed == ["scope:core"]
        [text] = jira.comment_texts("PAW-60")
        assert "Needs a decision: leans one_off" in text and "scope:needs-decision" in text
        # again, unchanged: nothing is written twice
        again = jc.write_back(client, "PAW-60", "one_off", gated_markdown("one_off"),
                              JIRA_LABELS, jira.labels("PAW-60"), applied=gated.applied,
                              comment_hint=gated.comment_id, pending=pending,
                              needs_decision=True)
        assert not again.added and not again.removed and again.comment == "unchanged"
        # a person decides, even for the leaning label: theirs stands, now and later, and
        # the needs-decision label goes
        jira.update_issue("PAW-60", labels=["scope:needs-decision", "scope:one-off"])
        applied = again.applied
        for _ in range(2):
            decided = jc.write_back(client, "PAW-60", "one_off", gated_markdown("one_off"),
                                    JIRA_LABELS, jira.labels("PAW-60"), applied=applied,
                                    comment_hint=again.comment_id, pending=pending,
                                    needs_decision=True)
            applied = decided.applied
            assert jira.labels("PAW-60") == ["scope:one-off"]
            assert decided.human_key == "one_off"
        # a sure verdict on another issue that carries a stale needs-decision label
        jira.add_issue("PAW-61", *LAB, labels=("scope:needs-decision",))
        jc.write_back(client, "PAW-61", "core", gated_markdown("core"), JIRA_LABELS,
                      jira.labels("PAW-61"), applied="needs_decision", pending=pending,
                      needs_decision=False)
        assert jira.labels("PAW-61") == ["scope:core"]
        # a person who takes the needs-decision label off is not overruled
        jira.add_issue("PAW-62", *LAB)
        first = jc.write_back(client, "PAW-62", "core", gated_markdown("core"), JIRA_LABELS, [],
                              pending=pending, needs_decision=True)
        jira.update_issue("PAW-62", labels=[])
        left = jc.write_back(client, "PAW-62", "core", gated_markdown("core"), JIRA_LABELS, [],
                             applied=first.applied, comment_hint=first.comment_id,
                             pending=pending, needs_decision=True)
        assert jira.labels("PAW-62") == [] and left.removed_by_person
        later = jc.write_back(client, "PAW-62", "core", gated_markdown("core"), JIRA_LABELS, [],
                              applied=left.applied, comment_hint=left.comment_id,
                              pending=pending, needs_decision=True)
        assert jira.labels("PAW-62") == [] and later.removed_by_person


def test_markers_are_read_from_the_footer_only():
    """A marker a requester's text carries in the middle of an ADF comment is not read."""
    forged = "x <!-- scopeguard:verdict --> <!-- scopeguard:label=core confidence=1 --> y"
    doc = jf.to_adf(verdict_markdown("one_off")("n").replace("- reason", "- " + forged))
    assert render.read_markers(jf.adf_text(doc)).label == "one_off"
    only_middle = {"type": "doc", "version": 1, "content": [
        {"type": "paragraph", "content": [{"type": "text", "text": forged}]},
        {"type": "paragraph", "content": [{"type": "text", "text": "thanks"}]}]}
    assert render.read_markers(jf.adf_text(only_middle)) == render.Markers()


def test_delivery_id_comes_from_jira_or_the_body():
    body = json.dumps(issue_event("PAW-1")).encode()
    assert parse_webhook(body, {"x-atlassian-webhook-identifier": "abc"}).delivery_id == "abc"
    by_hash = parse_webhook(body, {}).delivery_id
    assert re.fullmatch(r"sha256:[0-9a-f]{64}:[0-9a-f]{12}", by_hash)
    # No id: each request is its own delivery (Automation's custom body is the same on
    # every run of a rule: a hash alone dropped the run after an edit as a resend)
    assert parse_webhook(body, {}).delivery_id != by_hash
    with pytest.raises(jira_webhook.BadWebhook, match="GitHub's"):  # the queue is shared
        parse_webhook(body, {"x-scopeguard-delivery": "github:abc"})


@pytest.mark.parametrize("key", ["PAW-1\n", "PAW-1\r\n", "PAW-1\nPAW-2", "\nPAW-1"])
def test_an_issue_key_with_a_line_break_is_a_400_naming_issue_key(key):
    """'$' matches before a final newline: the key is matched whole, or 'PAW-1\n' would be
    queued (202) and skipped later, and split the log line that names it."""
    body = json.dumps(issue_event("PAW-1", issue={"key": key, "fields": {}})).encode()
    with pytest.raises(jira_webhook.BadWebhook, match="'issue.key'.*Fix:"):
        parse_webhook(body, {"x-atlassian-webhook-identifier": "nl-key"})
    # An event not watched is acknowledged, but its odd key is not kept (nor logged).
    ignored = json.dumps({"webhookEvent": "jira:worklog_updated", "issue": {"key": key}})
    assert parse_webhook(ignored.encode(), {}).key == ""
    assert parse_webhook(json.dumps(issue_event("PAW-1")).encode(), {}).key == "PAW-1"


def test_queue_leases_redeliver_and_retries_give_up(store):
    now = [1000.0]
    queue = store.queue(lease=30, max_attempts=2, clock=lambda: now[0])
    assert queue.enqueue("d1", b"{}", "jira:issue_created", "PAW-1")
    assert not queue.enqueue("d1", b"{}")  # idempotent on the delivery id
    event = queue.claim("a")
    assert event and event.delivery_id == "d1" and event.attempts == 1
    assert queue.claim("b") is None  # leased
    now[0] += 31  # a's lease expires: b gets it
    assert queue.claim("b").attempts == 2
    assert not queue.ack("d1", "a", "late")  # a lost its lease
    assert queue.retry("d1", "b", "boom", delay=10) == "failed"  # attempts exhausted
    assert queue.counts()["failed"] == 1 and queue.requeue_failed() == 1
    assert queue.claim("c").attempts == 1 and queue.retry("d1", "c", "x", 10) == "queued"
    assert queue.claim("c") is None and queue.next_due() == now[0] + 10
    now[0] += 10
    assert queue.claim("c") is not None and queue.ack("d1", "c", "done")
    assert queue.get("d1")["state"] == "done" and queue.depth() == 0


def test_queue_survives_a_crash(tmp_path):
    path = tmp_path / "q.db"
    queue = EventQueue(path)
    queue.enqueue("d1", b"payload")
    queue.claim("dead-process")
    # The process dies without a word; the next one takes the lease back at start.
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT state FROM events").fetchone() == ("leased",)
    conn.close()
    successor = EventQueue(path)
    assert successor.release_leases() == 1
    event = successor.claim("next-process")
    assert event.payload == b"payload" and event.attempts == 2


# Written before the queue file was versioned: people's labels, but not scopeguard's verdict.
OLD_ISSUE = ("INSERT INTO issues (key, request, model, comment_id, applied, human, updated_at) "
             "VALUES (?, ?, 'hashing', '10001', ?, ?, 1700000000)")


def test_old_queue_files_are_migrated_and_their_relabels_exported(tmp_path, runner):
    path = tmp_path / "queue.db"
    conn = sqlite3.connect(path)
    conn.executescript(jira_queue._SCHEMA)  # the first shipped layout, user_version 0
    for key, applied, human in (("PAW-1", "", "scope:one-off"), ("PAW-2", "", "triage:later"),
                                ("PAW-3", "generalizable", "")):
        request = {"id": key, "title": f"Request {key}", "body": "Body", "customer": "Oakfield"}
        conn.execute(OLD_ISSUE, (key, json.dumps(request), applied, human))
    conn.execute("INSERT INTO events (delivery_id, issue_key, state, received_at, available_at, "
                 "finished_at, outcome) VALUES ('d1', 'PAW-1', 'done', 1, 1, 2, "
                 "'core (81%): kept scope:one-off (set by a person); comment created')")
    conn.commit()
    conn.close()
    result = runner.invoke(cli, ["relabels", "--queue", str(path)])
    assert result.exit_code == 2 and "older scopeguard serve" in result.stderr
    assert "start scopeguard serve" in result.stderr

    queue = EventQueue(path)  # what scopeguard serve opens: the file is upgraded
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (jira_queue.SCHEMA_VERSION,)
    assert conn.execute("SELECT key, predicted, human_key, human_at FROM issues ORDER BY key"
                        ).fetchall() == [("PAW-1", "core", "", 1700000000.0),
                                         ("PAW-2", "", "", 1700000000.0),
                                         ("PAW-3", "generalizable", "", None)]
    conn.close()
    assert jira_store.read_relabels(path).unresolved == ["PAW-1", "PAW-2"]
    # At start, the service matches people's labels to the positioning file's label names.
    store = jira_store.IssueStore(queue, "hashing")
    assert store.resolve_human_keys(JIRA_LABELS) == 1
    queue.close()
    EventQueue(path).close()  # opening an upgraded file again changes nothing

    result = runner.invoke(cli, ["relabels", "--queue", str(path)])
    assert result.exit_code == 0, result.output
    [row] = [json.loads(line) for line in result.stdout.splitlines()]
    assert row == {"id": "PAW-1", "title": "Request PAW-1", "body": "Body", "author": "",
                   "customer": "Oakfield", "created_at": "", "url": "", "label": "one_off",
                   "predicted": "core", "recorded_at": "2023-11-14T22:13:20Z", "by": ""}
    assert "skipped 1 issue(s)" in result.stderr and "PAW-2" in result.stderr

    missing = runner.invoke(cli, ["relabels", "--queue", str(tmp_path / "nope.db")])
    assert missing.exit_code == 2 and "no such queue file" in missing.stderr
    (tmp_path / "notes.db").write_text("not a database")
    garbage = runner.invoke(cli, ["relabels", "--queue", str(tmp_path / "notes.db")])
    assert garbage.exit_code == 2 and "Fix: pass the --queue file" in garbage.stderr


class RecordingSocket:
    """A socket that records what each ``sendall`` wrote."""

    def __init__(self, sock):
        self.sock, self.writes = sock, []

    def sendall(self, data):
        self.writes.append(bytes(data))
        return self.sock.sendall(data)

    def __getattr__(self, name):
        return getattr(self.sock, name)


def test_the_jira_library_still_keeps_its_session():
    """transport.Transport sends through the jira library's private _session (it carries
    the credentials); pyproject.toml bounds jira, and this fails if the attribute goes."""
    import requests

    with FakeJira(flavour="server", pat=PAT) as jira:
        jira.add_issue("PAW-1", "A request")
        client = jc.make_jira(environ=jira.env)
        assert isinstance(client.jira._session, requests.Session)
        assert client.get_issue("PAW-1")["key"] == "PAW-1"
        assert jira.calls("GET", "/issue/PAW-1")[0].headers["authorization"] == f"Bearer {PAT}"


def test_a_request_leaves_in_one_write():
    """A killed service must leave Jira a whole POST or none (tests/test_jira_load.py): urllib3
    writes headers and body separately, and a kill between the two left Jira a bodiless POST
    while the restarted service posted the comment again."""
    from urllib3.connection import HTTPConnection

    with FakeJira(flavour="server", pat=PAT) as jira:
        jira.add_issue("PAW-1", "A request")
        port = int(jira.url.rsplit(":", 1)[1])
        whole = jc.whole_request_adapter().pool_classes["http"].ConnectionCls
        writes = {}
        for cls in (HTTPConnection, whole):
            conn = cls("127.0.0.1", port)
            conn.connect()
            conn.sock = recording = RecordingSocket(conn.sock)
            conn.request("POST", "/rest/api/2/issue/PAW-1/comment", body='{"body": "hi"}',
                         headers={"Content-Type": "application/json",
                                  "Authorization": f"Bearer {PAT}"})
            assert conn.getresponse().status == 201
            conn.close()
            writes[cls] = recording.writes
        assert len(writes[HTTPConnection]) == 2  # urllib3 alone: headers, then the body
        [one] = writes[whole]
        assert one.startswith(b"POST /rest/api/2/issue/PAW-1/comment ")
        assert one.endswith(b'\r\n\r\n{"body": "hi"}')
        client = jc.make_jira(jira.url, pat=PAT, environ={})
        assert isinstance(client.jira._session.get_adapter(jira.url), jc.whole_request_adapter())
        assert client.add_comment("PAW-1", "via the client")["id"]
        client.get_issue("PAW-1")  # a request without a body goes out as before
        assert jira.comment_texts("PAW-1") == ["hi", "hi", "via the client"]


def test_wrong_credentials_are_on_healthz_before_any_webhook(tmp_path, example_config):
    """Each worker checks Jira once it has loaded: a deploy's health check sees a wrong
    PAT (or URL) at once, not after the first webhook fails on it."""
    with FakeJira(flavour="server", pat="the-real-pat-1234") as jira:
        process = ServiceProcess(tmp_path, jira, example_config, {
            "SCOPEGUARD_WEBHOOK_SECRET": SECRET, "SCOPEGUARD_MODEL": "hashing",
            "JIRA_PAT": "a-mistyped-pat-1234"})
        process.start(ready=False)
        try:
            process.wait(lambda: "rejected the credentials" in process.get("/healthz").text,
                         what="the credentials' failure on /healthz")
            health = process.get("/healthz")
            assert health.status_code == 503 and health.json()["unreachable"] == ["jira"]
            assert process.events() == {}  # no webhook was needed to find it
            assert "a-mistyped-pat-1234" not in health.text
        finally:
            process.stop()


def test_jira_down_at_start_says_how_to_start_anyway():
    """Without JIRA_FLAVOUR, a Jira not on atlassian.net is asked what it is at start: down,
    the error names JIRA_FLAVOUR (serve then starts and queues), not a kept event."""
    with pytest.raises(jc.JiraError) as caught:
        jc.make_jira(environ={"JIRA_URL": "http://127.0.0.1:9", "JIRA_EMAIL": "a@b.example",
                              "JIRA_TOKEN": "tok-1234", "SCOPEGUARD_JIRA_RETRIES": "0"})
    assert "JIRA_FLAVOUR=server" in str(caught.value)
    assert "keeps the event" not in str(caught.value)
    with pytest.raises(jc.JiraConfigError, match="JIRA_EMAIL is set but JIRA_TOKEN is not"):
        jc.make_jira(environ={"JIRA_URL": "https://jira.example.com", "JIRA_EMAIL": "a@b.c"})


@pytest.mark.parametrize("flavour", ["server", "cloud"])
def test_who_set_a_persons_label_is_read_once_and_an_unreadable_changelog_costs_nothing(
        flavour):
    """The person's label's author comes from the changelog when the label is new to the
    records, not again while it stands (the caller passes what it recorded); a changelog
    Jira refuses leaves "by" empty and the label standing."""
    creds = {"pat": PAT} if flavour == "server" else {"email": "bot@x.example",
                                                       "token": API_TOKEN}
    with FakeJira(flavour=flavour, **creds) as jira:
        client = jc.make_jira(environ=jira.env)
        jira.add_issue("PAW-80", *LAB)
        jira.set_labels("PAW-80", ["scope:generalizable"], by="Clinic Owner")
        first = jc.write_back(client, "PAW-80", "core", verdict_markdown("core"), JIRA_LABELS,
                              jira.labels("PAW-80"))
        assert (first.human_key, first.human_by) == ("generalizable", "Clinic Owner")

        def reads() -> int:
            return len([c for c in jira.calls("GET", "PAW-80")
                        if "changelog" in c.path + str(c.query)])
        before = reads()
        again = jc.write_back(client, "PAW-80", "core", verdict_markdown("core"), JIRA_LABELS,
                              jira.labels("PAW-80"), comment_hint=first.comment_id,
                              known_human="scope:generalizable", known_by="Clinic Owner")
        assert again.human_by == "Clinic Owner" and reads() == before
        if flavour == "server":  # its changelog comes with the issue: no path of its own
            return
        jira.fail(403, times=1, path="/changelog")  # the changelog read is refused
        other = jc.write_back(client, "PAW-80", "core", verdict_markdown("core"), JIRA_LABELS,
                              jira.labels("PAW-80"), comment_hint=first.comment_id)
        assert (other.human_key, other.human_by) == ("generalizable", "?")  # looked up
        assert jira.labels("PAW-80") == ["scope:generalizable"]


def test_the_cloud_changelog_is_read_from_its_newest_page():
    """Cloud sends an issue's changelog oldest first, 100 at a time: the change that added
    the label last is near its end. Read from the last page back (it read 5,000 entries
    from the start before giving up, and read every page each time)."""
    with FakeJira(flavour="cloud", email="bot@x.example", token=API_TOKEN) as jira:
        client = jc.make_jira(environ=jira.env)
        jira.add_issue("PAW-90", *LAB)
        jira.set_labels("PAW-90", ["scope:core"], author=jira.bot)
        for n in range(260):  # a busy issue: 260 other label changes by someone else
            jira.set_labels("PAW-90", ["scope:core", f"sprint-{n}"], by="Sprint Bot")
        jira.set_labels("PAW-90", ["sprint-259"], by="Practice Manager")
        jira.set_labels("PAW-90", ["sprint-259", "scope:core"], by="Practice Manager")
        before = len(jira.calls("GET", "/changelog"))
        assert client.label_adder("PAW-90", "SCOPE:CORE")["displayName"] == \
            "Practice Manager"
        assert len(jira.calls("GET", "/changelog")) - before == 2  # the first page, the last
        jira.set_labels("PAW-90", [], by="Practice Manager")
        jira.add_issue("PAW-91", *LAB)
        jira.set_labels("PAW-91", ["scope:core"], by="Clinic Owner")  # on the first page only
        for n in range(150):
            jira.set_labels("PAW-91", ["scope:core", f"sprint-{n}"], by="Sprint Bot")
        assert client.label_adder("PAW-91", "scope:core")["displayName"] == "Clinic Owner"
        assert client.label_adder("PAW-91", "scope:one-off") is None


def test_a_label_the_issue_was_created_with_is_looked_up_once(tmp_path):
    """A person's label that came with the issue leaves no changelog entry: who set it is
    unknown, recorded as looked up, not read again at every event; the export says ""."""
    import numpy as np
    from scopeguard.integrations.jira.writeback import UNKNOWN_BY

    from scopeguard.backlog import Request

    with FakeJira(flavour="cloud", email="bot@x.example", token=API_TOKEN) as jira:
        client = jc.make_jira(environ=jira.env)
        jira.add_issue("PAW-95", *LAB, labels=("scope:core",))
        first = jc.write_back(client, "PAW-95", "one_off", verdict_markdown("one_off"),
                              JIRA_LABELS, jira.labels("PAW-95"))
        assert (first.human_key, first.human_by) == ("core", UNKNOWN_BY)
        reads = len(jira.calls("GET", "/changelog"))
        jc.write_back(client, "PAW-95", "one_off", verdict_markdown("one_off"), JIRA_LABELS,
                      jira.labels("PAW-95"), comment_hint=first.comment_id,
                      known_human="scope:core", known_by=first.human_by)
        assert len(jira.calls("GET", "/changelog")) == reads
    queue = EventQueue(tmp_path / "q.db")
    store = jira_store.IssueStore(queue, "hashing")
    store.remember(Request(id="PAW-95", title="t", body="b"), np.ones(4, np.float32) / 2)
    store.record_write_back("PAW-95", first.comment_id, "", "scope:core", predicted="one_off",
                            human_key="core", human_by=first.human_by)
    [row] = jira_store.read_relabels(tmp_path / "q.db").rows
    assert row["by"] == "" and row["label"] == "core"
    queue.close()

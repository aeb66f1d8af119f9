"""The queue and the issue store behave the same on SQLite and on PostgreSQL (the ``store``
fixture runs each test on both), and the PostgreSQL store's own parts: its URL, its
migrations, its errors (never the password), its command (``scopeguard store migrate``)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from scopeguard.integrations.service.queue_errors import QueueError
from scopeguard.integrations.service.storage import Queue, check_url, redact
from scopeguard.integrations.service.store import IssueStore

from scopeguard.backlog import Request
from scopeguard.cli import cli
from scopeguard.errors import ScopeguardError


def test_duplicates_and_replays_are_recognised(store):
    queue = store.queue()
    assert isinstance(queue, Queue)  # the one interface
    assert queue.accept("d1", b'{"a": 1}', "jira:issue_created", "PAW-1") == "queued"
    assert queue.accept("d1", b'{"a": 1}') == "duplicate"
    assert queue.accept("d2", b'{"a": 1}', replay_window=60) == "replay"
    assert queue.accept("d3", b'{"a": 1}') == "queued"  # no window: a token sender's resend
    assert queue.counts()["queued"] == 2 and queue.depth() == 2
    row = queue.get("d1")
    assert (row["state"], row["issue_key"], bytes(row["payload"])) == ("queued", "PAW-1",
                                                                       b'{"a": 1}')


def test_the_accepting_event_loop_awaits_accepts_on_either_store(store):
    """accept_async (what the webhook handler awaits) answers as accept does: a burst of
    coroutines, duplicates and a replay among them."""
    import asyncio

    queue = store.queue()
    ids = [f"a-{i}" for i in range(30)] + ["a-1", "a-2"]

    async def burst() -> list[str]:
        states = await asyncio.gather(*(queue.accept_async(d, f"body {d}".encode(), "e", "K")
                                        for d in ids))
        return [*states, await queue.accept_async("r-1", b"body a-3", replay_window=60)]

    states = asyncio.run(burst())
    assert states[:30] == ["queued"] * 30 and states[30:] == ["duplicate", "duplicate", "replay"]
    assert queue.depth() == 30 and bytes(queue.get("a-7")["payload"]) == b"body a-7"


def test_done_events_are_pruned_and_failed_ones_queued_again(store):
    now = [1000.0]
    queue = store.queue(clock=lambda: now[0])
    queue.accept("d1", b"{}", "e", "PAW-1")
    queue.accept("d2", b"{}", "e", "PAW-2")
    owner = queue.owner("worker-1")
    assert queue.ack(queue.claim(owner).delivery_id, owner, "core")
    queue.fail(queue.claim(owner).delivery_id, owner, "bad config")
    assert queue.get("d2")["state"] == "failed" and queue.get("d2")["error"] == "bad config"
    assert queue.get("d1")["payload"] is None  # a done row keeps only what recognises it
    now[0] += 100
    assert queue.prune(50) == 1 and queue.get("d1") is None
    assert queue.requeue_failed() == 1 and queue.claim(owner).attempts == 1


def test_concurrent_claimers_take_each_event_once_and_an_issue_one_at_a_time(store):
    """Four claimers, each its own connection (as four replicas), 120 events over 15
    issues: every event is done once, and no two events of one issue are ever held at
    the same time."""
    queue = store.queue()
    for n in range(120):
        queue.accept(f"d{n}", b"{}", "jira:issue_updated", f"PAW-{n % 15}")
    held, done, lock, clashes = set(), [], threading.Lock(), []

    def claimer(number: int) -> None:
        mine = store.queue()
        owner = mine.owner(f"worker-{number}")
        idle = 0
        while idle < 20:
            event = mine.claim(owner)
            if event is None:
                idle += 1
                time.sleep(0.01)
                continue
            idle = 0
            with lock:
                if event.issue_key in held:
                    clashes.append(event.issue_key)
                held.add(event.issue_key)
            time.sleep(0.002)
            with lock:
                held.discard(event.issue_key)
                done.append(event.delivery_id)
            assert mine.ack(event.delivery_id, owner, "core")

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not clashes
    assert sorted(done) == sorted(f"d{n}" for n in range(120))  # each once
    assert queue.counts()["done"] == 120


def test_issue_store_keeps_write_backs_and_peoples_labels(store):
    queue = store.queue()
    issues = IssueStore(queue, "m")
    vector = np.ones(4, np.float32) / 2
    issues.remember(Request(id="PAW-1", title="export", customer="Oakfield"), vector)
    issues.record_write_back("PAW-1", "10001", "core", "scope:one-off", predicted="core",
                             human_key="one_off")
    seen = issues.seen("PAW-1")
    assert (seen.comment_id, seen.applied) == ("10001", "core")
    assert issues.seen("PAW-2").comment_id == ""
    issues.record_write_back("PAW-1", "10001", "core", "Scope:One-Off")
    assert issues.resolve_human_keys({"one_off": "scope:one-off"}) == 1
    # while a person's label stands, scopeguard's verdict they answered is kept: an edit
    # classified differently since does not change it; once the label goes, it follows
    issues.record_write_back("PAW-1", "10001", "core", "Scope:One-Off", predicted="one_off",
                             human_key="one_off")
    predicted = "SELECT predicted FROM issues WHERE key = 'PAW-1'"
    assert queue._conn().execute(predicted).fetchone()[0] == "core"
    issues.record_write_back("PAW-1", "10001", "one_off", "", predicted="one_off")
    assert queue._conn().execute(predicted).fetchone()[0] == "one_off"
    again = IssueStore(store.queue(), "m")  # a new process reads it back
    assert [r.id for r in again.similar(vector, 0.9)] == ["PAW-1"] and not again.stale
    assert len(IssueStore(store.queue(), "other-model").stale) == 1


def test_relabels_are_exported_from_either_store(store, runner):
    import json

    issues = IssueStore(store.queue(), "m")
    issues.remember(Request(id="PAW-7", title="Sync the lab", customer="Oakfield"),
                    np.ones(4, np.float32) / 2)
    issues.record_write_back("PAW-7", "1", "core", "scope:one-off", predicted="core",
                             human_key="one_off")
    where = store.location if store.postgres else str(Path(store.location) / "queue.db")
    result = runner.invoke(cli, ["relabels", "--queue", where])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout.splitlines()[0])
    assert (row["id"], row["label"], row["predicted"]) == ("PAW-7", "one_off", "core")


# --- the PostgreSQL store's own parts ------------------------------------------------------


def test_urls_are_checked_and_passwords_never_shown():
    assert redact("postgresql://app:s3cret@db:5432/sg") == "postgresql://app:***@db:5432/sg"
    assert redact("postgresql://db/sg?password=s3cret&sslmode=require") == (
        "postgresql://db/sg?password=***&sslmode=require")
    assert redact("postgresql://app@db/sg") == "postgresql://app@db/sg"
    from scopeguard.integrations.service.pg.connect import describe
    from scopeguard.integrations.service.storage import password

    # a password given as a parameter is masked wherever the URL's text is repeated
    url = "postgresql://db/sg?sslmode=require&password=50%25zzoff"
    assert password(url) == "50%25zzoff"
    said = describe(url, RuntimeError('invalid token "50%zzoff" in "50%25zzoff"'))
    assert "zzoff" not in said and "password=***" in said
    for bad, says in (("mysql://app:s3cret@db/sg", "only PostgreSQL"),
                      ("postgresql://app:s3cret@db:port/sg", "not a valid URL"),
                      ("postgresql://", "names no host")):
        with pytest.raises(ScopeguardError, match=says) as err:
            check_url(bad)
        assert "s3cret" not in str(err.value) and "Fix:" in str(err.value)


@pytest.mark.parametrize("store", [
    "postgresql://user:s3cretpw@[::1:1/db",         # urlsplit refuses it; the driver quotes it
    "postgresql://user:s3c@retpw@127.0.0.1:1/db",   # libpq reads 'retpw@127.0.0.1' as a host
    "host=127.0.0.1 port=1 password=s3cretpw",      # a key=value connection string
])
def test_a_malformed_store_never_shows_its_password(runner, store):
    """The commands that open a store (relabels --queue, store migrate --store) name it
    with the password masked, even where the driver quotes the URL or parts of it back."""
    for args in (["relabels", "--queue", store], ["store", "migrate", "--store", store]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 2, result.output
        assert "Fix:" in result.output and "Traceback" not in result.output
        for piece in ("s3cretpw", "s3c@retpw", "retpw"):
            assert piece not in result.output, (args, result.output)


def test_the_store_setting_keeps_its_password_secret():
    from scopeguard.integrations.service.settings import ServiceSettings

    settings = ServiceSettings.from_env({"SCOPEGUARD_STORE": "postgresql://app:s3cret@db/sg",
                                         "SCOPEGUARD_WEBHOOK_SECRET": "x" * 32})
    assert settings.store.endswith("@db/sg") and "s3cret" not in repr(settings)
    assert "s3cret" in settings.secrets()  # the log scrubber masks it
    assert settings.location == "postgresql://app:***@db/sg"
    assert ServiceSettings.from_env({"SCOPEGUARD_WEBHOOK_SECRET": "x" * 32}).location == (
        "scopeguard-queue.db")


@pytest.mark.postgres
def test_an_unreachable_store_is_a_clear_error_without_the_password(pg_cluster):
    from fake_jira import free_port
    from scopeguard.integrations.service.pg.queue import PgEventQueue

    url = f"postgresql://app:s3cret@127.0.0.1:{free_port()}/sg"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(QueueError) as err:
        PgEventQueue(url)
    assert time.monotonic() - started < 10
    text = str(err.value)
    assert "s3cret" not in text and "app:***@127.0.0.1" in text
    assert "cannot be reached" in text and "Fix:" in text
    with pytest.raises(QueueError, match="does not exist"):
        PgEventQueue(pg_cluster.url("no_such_database"))


@pytest.mark.postgres
def test_serve_with_a_bad_store_exits_2_with_the_fix(runner, pg_cluster, tmp_path, monkeypatch,
                                                    example_config):
    monkeypatch.setenv("SCOPEGUARD_WEBHOOK_SECRET", "a-secret-of-enough-length")
    monkeypatch.setenv("JIRA_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("JIRA_PAT", "pat")
    for url, says in ((pg_cluster.url("missing").replace("postgres@", "postgres:hunter2@"),
                       "does not exist"), ("mysql://u:hunter2@h/db", "only PostgreSQL")):
        result = runner.invoke(cli, ["serve", "--config", str(example_config), "--store", url,
                                     "--port", "0"])
        assert result.exit_code == 2, result.output
        assert says in result.output and "Fix:" in result.output
        assert "hunter2" not in result.output and "Traceback" not in result.output


@pytest.mark.postgres
def test_store_migrate_creates_the_schema_once_and_refuses_a_newer_one(runner, pg_url):
    import psycopg
    from scopeguard.integrations.service.pg.queue import PgEventQueue
    from scopeguard.integrations.service.pg.schema import SCHEMA_VERSION

    result = runner.invoke(cli, ["store", "migrate", "--store", pg_url])
    assert result.exit_code == 0, result.output
    assert f"store schema 0 -> {SCHEMA_VERSION}" in result.output
    result = runner.invoke(cli, ["store", "migrate"], env={"SCOPEGUARD_STORE": pg_url})
    assert result.exit_code == 0 and "nothing to do" in result.output
    with psycopg.connect(pg_url, autocommit=True) as conn:
        tables = {r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert {"events", "issues", "embeddings", "models", "health",
                "scopeguard_schema"} <= tables
        conn.execute("INSERT INTO scopeguard_schema (version) VALUES (%s)",
                     (SCHEMA_VERSION + 1,))
    with pytest.raises(QueueError, match="newer scopeguard"):
        PgEventQueue(pg_url)
    result = runner.invoke(cli, ["store", "migrate", "--store", pg_url])
    assert result.exit_code == 2 and "upgrade scopeguard" in result.output


@pytest.mark.postgres
def test_a_stopped_server_is_503_material_and_the_queue_recovers(pg_cluster, pg_url):
    """While PostgreSQL is down, accepting raises QueueUnavailable (the app's 503) naming
    the store without its password; once it is back, the same queue object works."""
    from scopeguard.integrations.service.pg.queue import PgEventQueue
    from scopeguard.integrations.service.queue_errors import QueueUnavailable

    queue = PgEventQueue(pg_url)
    try:
        assert queue.accept("d1", b"{}") == "queued"
        pg_cluster.stop()
        try:
            with pytest.raises(QueueUnavailable, match="cannot be reached"):
                queue.accept("d2", b"{}")
            assert "cannot be reached" in queue.probe(every=0)
        finally:
            pg_cluster.start()
        deadline = time.monotonic() + 30
        while queue.probe(every=0) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert queue.accept("d2", b"{}") == "queued" and queue.depth() == 2
    finally:
        queue.close()


@pytest.mark.postgres
def test_an_ack_lost_to_an_outage_is_retried_not_the_event(pg_cluster, pg_url):
    """The write-back is done, then PostgreSQL goes away before the ack: the worker keeps
    trying the ack (its lease still stands), so the event is done once, not redone."""
    from scopeguard.integrations.service.metrics import Metrics
    from scopeguard.integrations.service.pg.queue import PgEventQueue
    from scopeguard.integrations.service.settings import ServiceSettings
    from scopeguard.integrations.service.worker import Worker

    queue = PgEventQueue(pg_url, lease=60)
    queue.accept("d1", b"{}", "jira:issue_created", "PAW-1")
    handled, restart = [], threading.Timer(7.0, pg_cluster.start)  # past the pool's 5 s

    def handle(event):
        handled.append(event.delivery_id)
        pg_cluster.stop()
        restart.start()
        return "core (labelled, comment written)"

    settings = ServiceSettings.from_env({}, webhook_secret="x" * 32)
    worker = Worker(queue, handle, Metrics(), settings, threading.Event(), threading.Event(),
                    3600)
    owner = queue.owner("worker-1")
    try:
        worker._run(queue.claim(owner), owner)
    finally:
        restart.join()
        queue.close()
    again = PgEventQueue(pg_url)
    try:
        row = again.get("d1")
        assert handled == ["d1"] and (row["state"], row["attempts"]) == ("done", 1)
        assert row["outcome"] == "core (labelled, comment written)"
    finally:
        again.close()



def test_a_slow_event_keeps_its_lease_and_an_expired_one_fails_after_max_attempts(store,
                                                                                 tmp_path):
    """The worker renews the lease of an event it is handling (a slow tracker must not let
    another worker or replica take it and comment twice); a lease that runs out on the
    last attempt fails the event instead of passing it round for ever."""
    import threading

    from scopeguard.integrations.service.metrics import Metrics
    from scopeguard.integrations.service.settings import ServiceSettings
    from scopeguard.integrations.service.worker import Worker

    queue = store.queue(lease=0.4, max_attempts=2)
    assert queue.accept("slow-1", b"{}", "jira:issue_updated", "PAW-1") == "queued"
    stolen = []

    def handle(event):
        for _ in range(8):  # 1.6 s: four leases long
            time.sleep(0.2)
            stolen.append(queue.claim(queue.owner("other")))
        return "done"

    worker = Worker(queue, handle, Metrics(), ServiceSettings(), threading.Event(),
                    threading.Event(), keep_seconds=60)
    owner = queue.owner("me")
    worker._run(queue.claim(owner), owner)
    assert stolen == [None] * 8  # nobody else took it while it was handled
    assert queue.get("slow-1")["state"] == "done"
    # no heartbeat (a dead worker): claimed, expired, claimed, expired -> failed
    assert queue.accept("dead-1", b"{}", "jira:issue_updated", "PAW-2") == "queued"
    assert queue.claim(queue.owner("a")).attempts == 1
    time.sleep(0.5)
    assert queue.claim(queue.owner("b")).attempts == 2
    time.sleep(0.5)
    assert queue.claim(queue.owner("c")) is None
    assert queue.get("dead-1")["state"] == "failed"
    # and a retry by a worker whose lease was taken changes nothing
    assert queue.accept("r-1", b"{}", "jira:issue_updated", "PAW-3") == "queued"
    first = queue.owner("first")
    queue.claim(first)
    time.sleep(0.5)
    second = queue.owner("second")
    assert queue.claim(second).delivery_id == "r-1"
    assert queue.retry("r-1", first, "late", 0) == "lost-lease"
    assert queue.get("r-1")["lease_owner"] == second
    assert queue.ack("r-1", second, "done")


@pytest.mark.postgres
def test_a_database_of_someone_elses_tables_is_never_changed(runner, pg_cluster):
    """A database scopeguard never migrated, holding an application's own 'issues' table:
    store migrate refuses it naming the tables (it added a column and an index to them),
    and relabels, a read-only export, refuses an unmigrated database instead of migrating
    it. Nothing of scopeguard's is left behind either."""
    import psycopg

    url = pg_cluster.create_database("someone_else")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE issues (id serial PRIMARY KEY, title text)")
    result = runner.invoke(cli, ["store", "migrate", "--store", url])
    assert result.exit_code == 2 and "tables scopeguard did not create (issues)" in \
        result.output and "Fix:" in result.output, result.output
    empty = pg_cluster.create_database("empty_one")
    for target in (url, empty):
        result = runner.invoke(cli, ["relabels", "--queue", target])
        assert result.exit_code == 2 and "not a scopeguard store" in result.output, \
            result.output
    for target in (url, empty):
        with psycopg.connect(target) as conn:
            tables = {r[0] for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
            columns = {r[0] for r in conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'issues'")}
        assert tables == ({"issues"} if target == url else set()), tables
        assert columns <= {"id", "title"}, columns


@pytest.mark.postgres
def test_a_user_without_rights_and_a_nul_in_a_text_get_answers_not_driver_errors(
        runner, pg_cluster, pg_url):
    """A user that may not create the tables gets a fix that names the owner (it got
    "Fix: see its log" with libpq's lines run together); a NUL in an error or a label,
    which SQLite stores, is stored as U+FFFD (PostgreSQL's text refuses NUL)."""
    import psycopg
    from scopeguard.integrations.service.pg.queue import PgEventQueue

    url = pg_cluster.create_database("not_mine")
    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS visitor")
        conn.execute("CREATE ROLE visitor LOGIN")
    result = runner.invoke(cli, ["store", "migrate", "--store",
                                 url.replace("postgres@", "visitor@")])
    assert result.exit_code == 2, result.output
    assert "may not do this" in result.output and "tables' owner" in result.output
    assert "publicLINE" not in result.output
    queue = PgEventQueue(pg_url)
    try:
        assert queue.accept("d-nul", b'{"issue": {"key": "PAW-1"}}', "jira:issue_created",
                            "PAW-1") == "queued"
        event = queue.claim(queue.owner("t"))
        queue.fail(event.delivery_id, queue.owner("t"), "Jira said: bad\x00label")
        assert queue.counts()["failed"] == 1
    finally:
        queue.close()


@pytest.mark.postgres
def test_relabels_from_an_older_postgresql_store_say_to_start_serve_once(runner, pg_url):
    """A store an older serve left (schema 2: no record of who set a person's label) gave
    'column human_by does not exist'; it says what to do, as the SQLite file does."""
    import psycopg
    from scopeguard.integrations.service.pg.schema import SCHEMA_VERSION

    assert runner.invoke(cli, ["store", "migrate", "--store", pg_url]).exit_code == 0
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DELETE FROM scopeguard_schema WHERE version = %s", (SCHEMA_VERSION,))
    result = runner.invoke(cli, ["relabels", "--queue", pg_url])
    assert result.exit_code == 2, result.output
    assert "older scopeguard serve" in result.output and "start scopeguard serve" in \
        result.output and "Traceback" not in result.output

"""Group commit of webhook accepts: concurrent accepts share SQLite transactions (and their
fsyncs), each still gets its own answer, and a failed transaction fails only its batch."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from contextlib import contextmanager

import pytest
from scopeguard.integrations.service.group_commit import GroupCommit
from scopeguard.integrations.service.queue import EventQueue


def burst(n: int, target) -> list:
    """Run ``target(i)`` in ``n`` threads released at once; their results in order."""
    results: list = [None] * n
    gate = threading.Barrier(n)

    def run(i: int) -> None:
        gate.wait()
        try:
            results[i] = target(i)
        except Exception as exc:  # noqa: BLE001 - compared by the test
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_a_burst_of_accepts_shares_transactions_and_answers_each(tmp_path):
    queue = EventQueue(tmp_path / "q.db", durable=True)
    # 60 threads: 50 distinct deliveries, each of the first 10 sent twice at once
    ids = [f"d-{i}" for i in range(50)] + [f"d-{i}" for i in range(10)]
    states = burst(len(ids), lambda i: queue.accept(ids[i], f"body {ids[i]}".encode(), "e",
                                                    f"K-{i % 7}"))
    assert states.count("queued") == 50 and states.count("duplicate") == 10, states
    for i in range(10):  # of the two copies, exactly one was stored
        assert sorted([states[i], states[50 + i]]) == ["duplicate", "queued"]
    assert queue.depth() == 50
    assert queue.accepts.writes == 60 and queue.accepts.transactions < 60  # fsyncs shared
    # a replayed body under a new id in the same burst is still recognised
    states = burst(4, lambda i: queue.accept(f"r-{i}", b"same signed body", "e", "K-1",
                                             replay_window=3600))
    assert sorted(states) == ["queued", "replay", "replay", "replay"]
    # and everything accepted is really there, in a fresh connection
    queue.close()
    again = EventQueue(tmp_path / "q.db")
    assert again.depth() == 51
    assert again.get("d-3")["payload"] == b"body d-3"


def test_a_failed_transaction_fails_its_whole_batch_and_nothing_else():
    stored: list[str] = []
    fail = threading.Event()

    @contextmanager
    def tx():
        pending: list[str] = []
        yield pending
        if fail.is_set():
            raise sqlite3.OperationalError("database or disk is full")
        stored.extend(pending)

    group = GroupCommit(tx)
    assert group.submit(lambda conn: conn.append("a") or "ok") == "ok"
    fail.set()
    with pytest.raises(sqlite3.OperationalError, match="disk is full"):
        group.submit(lambda conn: conn.append("b"))
    fail.clear()
    results = burst(20, lambda i: group.submit(lambda conn: conn.append(f"c{i}") or i))
    assert results == list(range(20))
    assert stored[0] == "a" and "b" not in stored and len(stored) == 21
    # a write that raises fails its batch: the callers learn it, the group goes on
    with pytest.raises(ZeroDivisionError):
        group.submit(lambda conn: 1 / 0)
    assert group.submit(lambda conn: "after") == "after"


def test_a_full_disk_during_a_burst_is_a_clear_error_for_every_sender(tmp_path):
    from scopeguard.integrations.service.queue_errors import QueueUnavailable

    queue = EventQueue(tmp_path / "q.db")
    original = queue._tx

    @contextmanager
    def full():  # the commit fails as a full disk makes it fail, after the inserts ran
        with original() as c:
            yield c
            raise sqlite3.OperationalError("database or disk is full")

    queue.accepts._tx = full
    results = burst(8, lambda i: queue.accept(f"f-{i}", b"x", "e", "K"))
    assert all(isinstance(r, QueueUnavailable) and "disk is full" in str(r) for r in results)
    queue.accepts._tx = original
    assert queue.depth() == 0 and queue.accept("f-0", b"x", "e", "K") == "queued"


def test_an_event_loops_accepts_share_transactions_without_a_thread_each(tmp_path):
    """The accepting event loop awaits its writes: a burst of 120 coroutines (20 of them
    duplicates) shares transactions, each gets its own answer, and the loop's own thread
    count does not grow with the burst."""
    import asyncio

    queue = EventQueue(tmp_path / "q.db", durable=True)
    ids = [f"a-{i}" for i in range(100)] + [f"a-{i}" for i in range(20)]

    async def main() -> tuple[list[str], int]:
        before = threading.active_count()
        states = await asyncio.gather(*(queue.accept_async(d, f"body {d}".encode(), "e", "K")
                                        for d in ids))
        return states, threading.active_count() - before

    states, new_threads = asyncio.run(main())
    assert states.count("queued") == 100 and states.count("duplicate") == 20
    assert new_threads <= 1  # the one committer thread, not a thread per request
    assert queue.accepts.writes == 120 and queue.accepts.transactions < 60
    queue.close()  # waits for the committer; everything accepted is in the file
    again = EventQueue(tmp_path / "q.db")
    assert again.depth() == 100 and again.get("a-7")["payload"] == b"body a-7"


def test_an_event_loops_failed_transaction_is_a_clear_error_and_the_group_goes_on(tmp_path):
    import asyncio

    from scopeguard.integrations.service.queue_errors import QueueUnavailable

    queue = EventQueue(tmp_path / "q.db")
    original = queue._tx

    @contextmanager
    def full():
        with original() as c:
            yield c
            raise sqlite3.OperationalError("database or disk is full")

    async def burst_async(prefix: str) -> list:
        return await asyncio.gather(*(queue.accept_async(f"{prefix}-{i}", b"x", "e", "K")
                                      for i in range(8)), return_exceptions=True)

    queue.accepts._tx = full
    failed = asyncio.run(burst_async("f"))
    assert all(isinstance(r, QueueUnavailable) and "disk is full" in str(r) for r in failed)
    queue.accepts._tx = original
    assert asyncio.run(burst_async("g")) == ["queued"] * 8
    assert queue.depth() == 8

    async def cancelled() -> str:  # a request cancelled while its write commits (the
        task = asyncio.ensure_future(queue.accept_async("c-1", b"y", "e", "K"))  # client
        await asyncio.sleep(0)                                                # went away)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return await queue.accept_async("c-2", b"z", "e", "K")  # the group still answers

    assert asyncio.run(cancelled()) == "queued"
    queue.close()
    assert queue.accept("after-close", b"w", "e", "K") == "queued"  # a write restarts it


def test_a_committer_that_cannot_start_fails_that_write_only(tmp_path, monkeypatch):
    """A thread that cannot start (too many threads) is an error for that caller; the
    next write starts the committer and nothing is left waiting."""
    queue = EventQueue(tmp_path / "q.db")
    real_start = threading.Thread.start

    def refuse(self):
        monkeypatch.setattr(threading.Thread, "start", real_start)  # once
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    with pytest.raises(RuntimeError, match="can't start new thread"):
        queue.accept("t-1", b"x", "e", "K")
    answered: list[str] = []  # in a thread: a stranded write would wait forever
    caller = threading.Thread(target=lambda: answered.append(queue.accept("t-2", b"y", "e",
                                                                         "K")), daemon=True)
    caller.start()
    caller.join(10)
    assert answered == ["queued"]
    assert queue.depth() == 1  # the refused write was not stored behind its caller's back


def test_closing_the_queue_closes_the_committers_connection(tmp_path):
    """After close() nothing holds the file: the committer's connection is closed too and
    the WAL folded in, so the .db alone is complete."""
    path = tmp_path / "q.db"
    queue = EventQueue(path)
    done = []
    worker = threading.Thread(target=lambda: done.append(queue.accept("c-1", b"x", "e", "K")))
    worker.start()
    worker.join(10)
    assert done == ["queued"]
    queue.close()
    assert queue.accepts._thread is None
    assert not path.with_name("q.db-wal").exists()  # the last connection closed
    assert EventQueue(path).get("c-1")["payload"] == b"x"


def test_a_batch_of_accepts_answers_as_the_accepts_one_by_one(tmp_path):
    """The committer stores a batch in three statements (accepts.accept_batch): for random
    batches over a stored history (replays inside and outside their windows, duplicates of
    stored ids and of ids earlier in the batch, token deliveries with no window) its answers
    and the rows it stores are those of each accept run in turn."""
    import random

    from scopeguard.integrations.service.accepts import Accept, accept_batch

    rng = random.Random(5)
    kinds: set[str] = set()
    for round_ in range(40):
        history = [(f"d-{rng.randrange(30)}", f"body {rng.randrange(12)}".encode(),
                    rng.choice([0.0, 100.0, 990.0])) for _ in range(rng.randrange(15))]
        batch = []
        for _ in range(rng.randrange(1, 60)):
            body = f"body {rng.randrange(12)}".encode()
            batch.append(Accept(f"d-{rng.randrange(30)}", body, "e", "K-1",
                                rng.choice([0.0, 60.0, 3600.0]), 1000.0,
                                hashlib.sha256(body).hexdigest()))
        answers, rows = [], []
        for batched in (True, False):
            queue = EventQueue(tmp_path / f"q-{round_}-{batched}.db")
            for delivery, body, at in history:  # stored before, at various times
                with queue._tx() as conn:
                    Accept(delivery, body, "e", "K-0", 0.0, at,
                           hashlib.sha256(body).hexdigest())(conn)
            with queue._tx() as conn:
                answers.append(accept_batch(conn, batch) if batched
                               else [write(conn) for write in batch])
            rows.append(queue._conn().execute(
                "SELECT delivery_id, issue_key, payload, received_at, body_sha256 FROM events "
                "ORDER BY seq").fetchall())
            queue.close()
        assert answers[0] == answers[1], (round_, batch)
        assert rows[0] == rows[1]
        kinds.update(answers[0])
    assert kinds == {"queued", "duplicate", "replay"}  # every answer was exercised


def test_a_batch_with_other_writes_runs_them_in_order(tmp_path):
    """Anything but accepts in a batch (none today) runs one by one, as before."""
    from scopeguard.integrations.service.accepts import accept_batch

    queue = EventQueue(tmp_path / "q.db")
    with queue._tx() as conn:
        out = accept_batch(conn, [lambda c: c.execute("SELECT 41 + 1").fetchone()[0],
                                         queue._accept_write("x", b"b", "e", "K", 0.0)])
    assert out == [42, "queued"] and queue.depth() == 1


def test_a_batch_fits_an_old_sqlites_limit_of_999_variables(tmp_path):
    """SQLite before 3.32 allows 999 variables a statement: a batch of 300 new events (2,100
    values) is inserted in several statements, with the answers of one by one."""
    from scopeguard.integrations.service.accepts import Accept, accept_batch

    queue = EventQueue(tmp_path / "q.db")
    conn = queue._conn()
    conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
    batch = [Accept(f"v-{i % 1100}", f"body {i}".encode(), "e", "K", 60.0, 1000.0,
                    hashlib.sha256(f"body {i}".encode()).hexdigest()) for i in range(1200)]
    with queue._tx() as tx:
        answers = accept_batch(tx, batch)
    assert answers.count("queued") == 1100 and answers.count("duplicate") == 100
    assert queue.depth() == 1100

"""The monitor that the worker pool and the acceptor processes share (real processes)."""

from __future__ import annotations

import logging
import time
from typing import Any

from scopeguard.integrations.service.children import Children


class Sleepers(Children):
    """Children that sleep a moment and exit; the second start fails (fork refused)."""

    kind = "sleeper"
    every = 0.05
    numbers = (1,)

    def __init__(self) -> None:
        super().__init__()
        self.starts, self.deaths, self.after = 0, [], []

    def spawn_process(self, number: int, conn: Any) -> Any:
        self.starts += 1
        if self.starts == 2:
            raise OSError(11, "Resource temporarily unavailable")
        return self.launch(0.05)

    def launch(self, seconds: float) -> Any:
        """A real child that sleeps ``seconds``, then exits."""
        process = self.context.Process(target=time.sleep, args=(seconds,), daemon=True)
        process.start()
        return process

    def apply(self, kind: str, number: int, data: Any) -> None:
        pass

    def died(self, number: int, process: Any) -> float:
        self.deaths.append((number, process.pid))
        return 0.05

    def restarted(self, number: int, ok: bool) -> None:
        self.after.append(ok)


def wait(condition: Any, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_child_whose_restart_fails_is_started_again_at_the_next_look(caplog):
    """A restart refused by the system (EAGAIN from fork: too many processes) is logged and
    tried again; the worker pool's restart thread used to die of it, leaving no worker."""
    pool = Sleepers()
    with caplog.at_level(logging.ERROR, logger="scopeguard.serve"):
        pool.start()
        try:
            wait(lambda: pool.starts >= 3)
            first = pool.deaths[0][1]
            wait(lambda: len(pool.after) >= 2)
        finally:
            pool.stop(5)
    assert pool.after[:2] == [False, True]
    # the dead child was found twice (once before the refused start, once after), once each
    assert [pid for _, pid in pool.deaths[:2]] == [first, first]
    assert "sleeper 1 could not be started again: [Errno 11]" in caplog.text
    assert not any(p.is_alive() for p in pool.processes.values())


def test_a_dead_child_is_restarted_once_while_its_delay_runs():
    """The monitor looks every 50 ms; a restart waiting out its delay is not doubled."""

    class Slow(Sleepers):
        def spawn_process(self, number: int, conn: Any) -> Any:
            self.starts += 1
            return self.launch(0.01)

        def died(self, number: int, process: Any) -> float:
            super().died(number, process)
            return 2.0

    pool = Slow()
    pool.numbers = [1, 2]
    pool.start()
    try:
        wait(lambda: len(pool.deaths) >= 2)
        time.sleep(0.5)  # ten looks of the monitor inside the delay
        assert sorted(n for n, _ in pool.deaths) == [1, 2] and pool.starts == 2
        wait(lambda: pool.starts >= 4)
    finally:
        pool.stop(5)
    assert sorted(n for n, _ in pool.deaths[:2]) == [1, 2]


def test_a_restart_thread_that_cannot_start_is_tried_again(monkeypatch):
    """Threads count against the same process limit as processes: a restart whose thread
    could not start ('can't start new thread') left the child marked as restarting, and
    it was never started again."""
    import threading

    real, refused = threading.Thread.start, []

    def start(self):
        if self.name.startswith("scopeguard-restart-") and not refused:
            refused.append(self.name)
            raise RuntimeError("can't start new thread")
        return real(self)

    monkeypatch.setattr(threading.Thread, "start", start)

    class Once(Sleepers):
        def spawn_process(self, number: int, conn: Any) -> Any:
            self.starts += 1
            return self.launch(0.05 if self.starts == 1 else 30)

    pool = Once()
    pool.start()
    try:
        # restarted() runs after the new process is registered; starts counts before it is
        wait(lambda: pool.after)
        assert pool.starts == 2 and pool.after == [True]
        assert refused == ["scopeguard-restart-sleeper-1"] and pool.processes[1].is_alive()
    finally:
        pool.stop(5)


def test_a_worker_whose_restart_failed_is_counted_dead_once():
    """A worker whose restart the system refused is found dead again at the next look:
    one death (one restart counted, its events released once), not one per attempt."""
    from scopeguard.integrations.service.metrics import Metrics
    from scopeguard.integrations.service.pool import WorkerPool
    from scopeguard.integrations.service.settings import ServiceSettings

    class Pool(WorkerPool):
        every = 0.05
        starts = 0
        launch = Sleepers.launch

        def spawn_process(self, number: int, conn: Any) -> Any:
            self.starts += 1
            if self.starts == 2:
                raise OSError(11, "Resource temporarily unavailable")
            return self.launch(0.05 if self.starts == 1 else 30)

    released: list[int] = []
    pool = Pool(ServiceSettings.from_env({"SCOPEGUARD_WEBHOOK_SECRET": "s" * 24}), 1, Metrics(),
                released.append, "warning", [])
    pool.start()
    try:
        first = pool.processes[1].pid
        wait(lambda: pool.starts >= 3 and pool.processes[1].is_alive(), 30)
        assert (pool.restarts, released) == (1, [first])
    finally:
        pool.stop(5)


def test_a_restart_under_way_when_stop_begins_leaves_no_child_running():
    """stop() began while a restart was spawning (slow: a loaded machine): the new child
    was registered after the 'stop' words went out and outlived the service."""
    import threading

    class Slow(Sleepers):
        def __init__(self) -> None:
            super().__init__()
            self.spawning = threading.Event()

        def spawn_process(self, number: int, conn: Any) -> Any:
            self.starts += 1
            if self.starts > 1:
                self.spawning.set()
                time.sleep(0.5)
            return self.launch(0.05 if self.starts == 1 else 60)

        def died(self, number: int, process: Any) -> float:
            super().died(number, process)
            return 0.0

    pool = Slow()
    pool.start()
    assert pool.spawning.wait(30)
    pool.stop(5)
    assert not any(p.is_alive() for p in pool.processes.values())

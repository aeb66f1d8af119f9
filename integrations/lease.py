"""Whether the worker handling an event still holds it, asked right before each write-back.

The service's worker (``service/worker.py``) leases an event while it handles it and
renews the lease as it goes. A worker that stalls longer than the lease (a paused
machine, a swap storm) loses it: another worker takes the event and writes back the
issue as it is now. On resuming, the stalled one must not write back what it read before
the stall. The trackers' flows (``jira`` via ``service/handlers.py``, ``github/action.py``)
call :func:`confirm_lease` before their writes; outside a worker (the GitHub Action, the
command line, tests) there is nothing to confirm.

Example::

    with leased(lambda: queue.renew(delivery_id, owner)):
        handle(event)  # raises LeaseLost at its next write once the lease is gone
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator


class LeaseLost(Exception):
    """This worker no longer holds its event's lease: another worker handles it."""


_lease = threading.local()


@contextlib.contextmanager
def leased(confirm: Callable[[], bool]) -> Iterator[None]:
    """While one event is handled on this thread: ``confirm()`` renews its lease and says
    whether this worker still holds it."""
    _lease.confirm = confirm
    try:
        yield
    finally:
        _lease.confirm = None


def confirm_lease() -> None:
    """Raise :class:`LeaseLost` when this thread's event was taken by another worker."""
    confirm = getattr(_lease, "confirm", None)
    if confirm is not None and not confirm():
        raise LeaseLost("the lease ran out while this worker stalled; another worker "
                        "handles the event: nothing written back")

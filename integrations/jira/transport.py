"""One REST call to Jira, retried: the transport under :class:`.client.JiraClient`.

Every call goes through :meth:`Transport.request` so that v2 and v3 endpoints share one
policy: 429 and 5xx answers are retried with exponential backoff (full jitter),
honouring ``Retry-After`` up to a cap; failures become :class:`.errors.JiraError`
subclasses. The HTTP session is the ``jira`` library's (it carries the credentials), and
its connections send each request in one write (:func:`whole_request_adapter`).

The library exposes its ``requests`` session only as the private ``JIRA._session``; the
alternative, a session of our own, would duplicate the library's authentication (basic,
bearer PAT, OAuth). pyproject.toml bounds ``jira`` below 4, and
tests/test_jira_service.py (test_the_jira_library_still_keeps_its_session) fails if the
attribute goes.
"""

from __future__ import annotations

import functools
import json
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from scopeguard.settings import env_number

from .errors import (
    RETRY_STATUSES,
    JiraAnswerError,
    JiraConfigError,
    JiraUnavailableError,
    _detail,
    retry_after,
    translate,
)

DEFAULT_RETRIES = 5
DEFAULT_MAX_WAIT = 60.0


@dataclass
class RetryPolicy:
    """How often and how long to wait on 429/5xx answers and connection failures."""

    retries: int = DEFAULT_RETRIES
    backoff: float = 0.5
    max_wait: float = DEFAULT_MAX_WAIT

    def delay(self, attempt: int, asked: float | None) -> float:
        """The wait before retry number ``attempt`` (1-based): Retry-After, else backoff."""
        if asked is not None:
            return min(asked, self.max_wait)
        # Full jitter keeps many workers from retrying in lockstep.
        return min(self.max_wait, self.backoff * 2 ** (attempt - 1) * random.uniform(0.5, 1.0))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RetryPolicy:
        env = os.environ if environ is None else environ
        return cls(retries=int(env_number(env, "SCOPEGUARD_JIRA_RETRIES", DEFAULT_RETRIES,
                                          JiraConfigError, integer=True)),
                   max_wait=env_number(env, "SCOPEGUARD_JIRA_MAX_WAIT", DEFAULT_MAX_WAIT,
                                       JiraConfigError))


@dataclass
class Transport:
    """The library's authenticated session, the retry policy, and how to wait.

    Args:
        jira: the ``jira.JIRA`` client; its session carries the credentials.
        retry: the retry policy for 429/5xx answers and connection failures.
        sleep: how to wait (tests pass a recorder).
    """

    jira: Any
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    sleep: Callable[[float], None] = time.sleep

    @property
    def server(self) -> str:
        return str(self.jira.server_url).rstrip("/")

    def request(self, method: str, path: str, *, action: str, api: str = "2",
                params: Mapping[str, Any] | None = None, body: Any = None,
                idempotent: bool | None = None) -> Any:
        """One REST call to ``/rest/api/{api}/{path}``, retried; the decoded JSON or None.

        Non-idempotent calls (POST by default) are retried only on 429, which Jira sends
        before doing anything; a 5xx there may have been applied, so the caller decides.
        """
        import requests

        url = f"{self.server}/rest/api/{api}/{path.lstrip('/')}"
        if idempotent is None:
            idempotent = method.upper() != "POST"
        session = self.jira._session  # the library's authenticated session
        attempt = 0
        while True:
            attempt += 1
            wait: float | None = None
            try:
                response = requests.Session.request(
                    session, method, url, params=params, timeout=session.timeout,
                    data=None if body is None else json.dumps(body),
                    headers={"Content-Type": "application/json"} if body is not None else None)
            except (requests.ConnectionError, requests.Timeout) as exc:
                if attempt > self.retry.retries or not idempotent:
                    raise JiraUnavailableError(
                        f"cannot reach Jira at {self.server} while {action} "
                        f"({type(exc).__name__}). Fix: check JIRA_URL and the network; the "
                        "webhook service keeps the event and retries it.") from None
            else:
                status = response.status_code
                if status < 400:
                    if status == 204 or not response.content:
                        return None
                    try:
                        return response.json()
                    except (ValueError, RecursionError):
                        raise JiraAnswerError(
                            f"Jira answered {action} with something that is not JSON (or "
                            "nested too deeply to read). Fix: check that JIRA_URL is the Jira "
                            "base URL, not a login or proxy page.", status) from None
                wait = retry_after(response.headers)
                retriable = status in RETRY_STATUSES and (idempotent or status == 429)
                if not retriable or attempt > self.retry.retries:
                    raise translate(status, _detail(response), action, wait)
            self.sleep(self.retry.delay(attempt, wait))


@functools.cache
def whole_request_adapter() -> type:
    """A ``requests`` adapter class whose connections send headers and body in one write.

    urllib3 sends a request's header block and its body with two ``send`` calls, and the
    thread gives the GIL up in between: with the workers busy, the body often follows 5-10
    ms later. A service killed in that gap (``kill -9``, the OOM killer, a crash)
    leaves Jira a POST with headers and no body: Jira answers it 400 and counts it, and the
    restarted service, finding no comment, posts the comment again, so Jira saw two POSTs
    for one comment (tests/test_jira_load.py caught it). One write leaves Jira the whole
    request or nothing: a kill cannot split a single ``sendall`` of a comment, which fits
    the socket's send buffer. Requests through an HTTP proxy keep urllib3's two writes.
    """
    import requests.adapters
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class WholeRequest:
        """Holds the header block back until the body's first chunk, then sends both."""

        _hold = False
        _held: bytes | None = None

        def request(self, method: str, url: str, body: Any = None, headers: Any = None,
                    **options: Any) -> None:
            self._hold, self._held = body is not None, None
            try:
                super().request(method, url, body=body, headers=headers,  # type: ignore[misc]
                                **options)
                if self._held is not None:  # the body was empty after all
                    super().send(self._held)  # type: ignore[misc]
            finally:
                self._hold, self._held = False, None

        def send(self, data: Any) -> None:
            if self._hold:
                if self._held is None:
                    self._held = bytes(data)  # the header block
                    return
                data, self._hold, self._held = self._held + bytes(data), False, None
            super().send(data)  # type: ignore[misc]

    class Connection(WholeRequest, HTTPConnection):
        pass

    class TLSConnection(WholeRequest, HTTPSConnection):
        pass

    class Pool(HTTPConnectionPool):
        ConnectionCls = Connection

    class TLSPool(HTTPSConnectionPool):
        ConnectionCls = TLSConnection

    class Adapter(requests.adapters.HTTPAdapter):
        pool_classes = {"http": Pool, "https": TLSPool}

        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = self.pool_classes

    return Adapter

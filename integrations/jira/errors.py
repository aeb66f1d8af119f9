"""Jira API failures as scopeguard errors whose messages say what to fix.

The ``jira`` library's own ``JIRAError`` prints request headers (credentials), so it is
never shown: :func:`translate` makes a :class:`JiraError` from the status and Jira's own
error text instead.
"""

from __future__ import annotations

import datetime
import email.utils
import math
import re
import time
from collections.abc import Mapping
from typing import Any

from scopeguard.errors import ScopeguardError

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
CREDENTIALS_FIX = ("for Jira Cloud set JIRA_EMAIL and JIRA_TOKEN (an API token from "
                   "https://id.atlassian.com/manage-profile/security/api-tokens); for Jira "
                   "Server/Data Center set JIRA_PAT (a personal access token)")


class JiraError(ScopeguardError):
    """A Jira API call failed; the message says what to fix."""

    def __init__(self, message: str, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class JiraConfigError(JiraError):
    """JIRA_URL or the credentials are missing or malformed."""


class JiraAuthError(JiraError):
    """Jira rejected the credentials (401)."""


class JiraPermissionError(JiraError):
    """The Jira user may not do this (403)."""


class JiraNotFoundError(JiraError):
    """The issue or comment does not exist, or the user cannot see it (404)."""


class JiraRequestError(JiraError):
    """Jira refused the request as malformed (400), e.g. a bad JQL query."""


class JiraUnavailableError(JiraError):
    """Jira kept answering 429/5xx, or could not be reached, after every retry."""


class JiraAnswerError(JiraError):
    """Jira answered 2xx with something its REST API does not send (not JSON, or JSON of
    another shape): a proxy, a login page or another service at JIRA_URL."""


ANSWER_FIX = ("Fix: check that JIRA_URL points at Jira's REST API (the address you open "
              "Jira at, with any context path), not at a proxy, login page or other service.")
_SHAPES = {dict: "an object", list: "a list", str: "text", type(None): "null", bool: "a boolean",
           int: "a number", float: "a number"}


def expect(value: Any, kind: type | tuple[type, ...], what: str, action: str) -> Any:
    """``value`` if it is a ``kind``, else :class:`JiraAnswerError`: Jira's answers are
    checked where they are read, so a wrong shape is a message, never a traceback."""
    if isinstance(value, kind) and not isinstance(value, bool):  # no answer holds a bool
        return value
    wanted = " or ".join(dict.fromkeys(_SHAPES.get(k, k.__name__) for k in (
        kind if isinstance(kind, tuple) else (kind,))))
    raise JiraAnswerError(f"Jira answered {action} with an unexpected shape ({what} is "
                          f"{_SHAPES.get(type(value), type(value).__name__)}, where Jira sends "
                          f"{wanted}). {ANSWER_FIX}")


def _detail(response: Any) -> str:
    """Jira's own error text from a response, short; never request headers."""
    try:
        data = response.json()
    except ValueError:
        return (response.text or "").strip()[:200]
    if not isinstance(data, dict):
        return ""
    parts = [str(m) for m in data.get("errorMessages") or []]
    errors = data.get("errors")
    if isinstance(errors, dict):
        parts += [f"{k}: {v}" for k, v in errors.items()]
    if data.get("message"):
        parts.append(str(data["message"]))
    return "; ".join(parts)[:300]


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header: delay-seconds or an HTTP date (RFC 9110),
    never negative; None when absent or unreadable (``inf``, ``nan``, garbage), so a
    broken header falls back to the backoff instead of parking an event forever."""
    value = (headers.get("Retry-After") or "").strip()
    if not value:
        return None
    if re.fullmatch(r"[0-9]+(?:\.[0-9]+)?", value):  # ASCII digits only ("²" is a digit)
        seconds = float(value)
        return seconds if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # HTTP dates are GMT
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def translate(status: int, detail: str, action: str, wait: float | None = None) -> JiraError:
    """The :class:`JiraError` for an HTTP ``status`` met while ``action``."""
    said = f": {detail}" if detail else ""
    if status == 401:
        return JiraAuthError(f"Jira rejected the credentials (401) while {action}. "
                             f"Fix: {CREDENTIALS_FIX}.", status)
    if status == 403:
        return JiraPermissionError(
            f"Jira refused {action} (403{said}). Fix: give the scopeguard user the Browse "
            "Projects, Edit Issues and Add Comments permissions in the project (a CAPTCHA "
            "after failed logins also gives 403: log in once in a browser).", status)
    if status == 404:
        return JiraNotFoundError(
            f"not found while {action} (404{said}). Fix: check the issue key, that JIRA_URL "
            "includes any context path (e.g. https://jira.example.com/jira), and that the "
            "scopeguard user can see the project.", status)
    if status == 400:
        return JiraRequestError(f"Jira refused {action} (400{said}). Fix: correct the "
                                "request named here (JQL syntax, field or label names).", status)
    if status in RETRY_STATUSES:
        return JiraUnavailableError(
            f"Jira kept answering {status} while {action}, after every retry. Fix: wait and "
            "retry (the webhook service keeps the event and retries it); raise "
            "SCOPEGUARD_JIRA_RETRIES if this Jira is often busy.", status, wait)
    return JiraError(f"Jira answered {status} while {action}{said}.", status)

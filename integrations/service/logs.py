"""Logging for ``scopeguard serve`` that cannot leak a secret: every line is scrubbed.

Example::

    setup_logging("info", settings.secrets() + client_secrets())
"""

from __future__ import annotations

import base64
import logging
import os
import re
import sys
from collections.abc import Mapping, Sequence

# Any user:password@ in a URL, up to its last '@' (a password may hold one).
_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://)(?:([^/\s:@]*):)?[^/\s]*@")
# Control characters (all but tab) and Unicode line breaks: a webhook's event name, key
# or delivery id holding "\n2026-... ERROR ..." must not start a forged log line.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def _escape(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


class Scrub(logging.Filter):
    """Replaces any configured secret in a log record with ``***`` (defence in depth), and
    writes control characters in the message escaped (``\\n``): one record, one line
    (a traceback, appended after, keeps its lines, each indented)."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        message = _CONTROL.sub(_escape, self.mask(record.getMessage()))
        if record.exc_info:
            trace = self.mask(logging.Formatter().formatException(record.exc_info))
            # indented, each line escaped: an exception's text (its last lines) may repeat
            # what a sender wrote, and must not start a line that reads as a record
            message += "".join("\n  " + _CONTROL.sub(_escape, line)
                               for line in trace.split("\n"))
            record.exc_info = None
            record.exc_text = None
        message = _USERINFO.sub(r"\1***@", message)  # credentials written into any URL
        record.msg, record.args = message, ()
        return True

    def mask(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


_scrub = Scrub([])  # this process's secrets (setup_logging's): what redact masks


def redact(text: str, secrets: Sequence[str] = ()) -> str:
    """``text`` fit to leave the process (a ``/healthz`` answer, an event's stored error, a
    command's error): the configured secrets and ``secrets``, the GitHub tokens its clients
    registered (cut ones too) and any URL's user:password masked, as the log masks them."""
    text = Scrub(secrets).mask(_scrub.mask(text))
    github = sys.modules.get(__name__.rsplit(".", 2)[0] + ".github.errors")
    if github is not None:  # imported: it may hold the tokens its clients registered
        text = github.scrub(text)
    # A URL's password (a user name alone may be a token: all of it), the user kept: the
    # error names who connects.
    return _USERINFO.sub(lambda m: m.group(1) + (m.group(2) + ":***@" if m.group(2)
                                                  else "***@"), text)


def setup_logging(level: str, secrets: Sequence[str]) -> None:
    global _scrub
    _scrub = Scrub(secrets)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_scrub)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # urllib3 would log URLs at DEBUG; the jira library dumps response headers at DEBUG.
    for noisy in ("urllib3", "jira", "github"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))


def client_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """The Jira and GitHub credentials in the environment, and their basic-auth encoding.

    Each is masked as the clients send it (stripped, as ``make_jira`` and the GitHub
    client strip it) and as the variable holds it: a token with a stray newline is still
    the token on the wire.
    """
    env = os.environ if environ is None else environ
    raw_email = env.get("JIRA_EMAIL") or env.get("JIRA_USER") or ""
    names = ("JIRA_TOKEN", "JIRA_PAT", "GITHUB_TOKEN", "GITHUB_APP_PRIVATE_KEY")
    out: list[str] = []
    for value in (env.get(name, "") for name in names):
        out += [value, value.strip()]
    token = env.get("JIRA_TOKEN", "")
    for email, tok in {(raw_email.strip(), token.strip()), (raw_email, token)}:
        if email and tok:
            out.append(base64.b64encode(f"{email}:{tok}".encode()).decode())
    return [s for s in dict.fromkeys(out) if s.strip()]

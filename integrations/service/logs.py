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

# Any userinfo in a URL (user:password@, or a token as the user), up to its last '@' (a
# password may hold one); one whose password is masked already ("postgres:***@", as
# storage.redact names a store) is left as it is: the error still says who connects.
_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://)(?![^/\s:@]*:\*\*\*@)[^/\s]*@")
# Control characters (all but tab) and Unicode line breaks: a webhook's event name, key
# or delivery id holding "\n2026-... ERROR ..." must not start a forged log line.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_known: set[str] = set()  # this process's secrets: setup_logging's, and the service's


def _escape(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


def keep_secrets(secrets: Sequence[str]) -> None:
    """Add secrets that nothing this process writes or answers may carry."""
    _known.update(s for s in secrets if len(s) >= 4)


def mask_secrets(text: str) -> str:
    """``text`` fit to leave the process (a log line, a ``/healthz`` answer, an event's
    stored error, a command's error): every secret kept (:func:`keep_secrets`) or in the
    environment's credentials (:func:`client_secrets`), longest first, the GitHub tokens
    its clients registered (cut ones too), and any URL's userinfo, masked."""
    every = _known | {s for s in client_secrets() if len(s) >= 4}
    for secret in sorted(every, key=len, reverse=True):
        text = text.replace(secret, "***")
    github = sys.modules.get(__name__.rsplit(".", 2)[0] + ".github.errors")
    if github is not None:  # imported, so it may hold the tokens its clients registered
        text = github.scrub(text)
    return _USERINFO.sub(r"\1***@", text)


class Scrub(logging.Filter):
    """Masks every secret in a log record (:func:`mask_secrets`: defence in depth), and
    writes control characters in the message escaped (``\\n``): one record, one line
    (a traceback, appended after, keeps its lines, each indented)."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        keep_secrets(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        message = _CONTROL.sub(_escape, mask_secrets(record.getMessage()))
        if record.exc_info:
            trace = mask_secrets(logging.Formatter().formatException(record.exc_info))
            # indented, each line escaped: an exception's text (its last lines) may repeat
            # what a sender wrote, and must not start a line that reads as a record
            message += "".join("\n  " + _CONTROL.sub(_escape, line)
                               for line in trace.split("\n"))
            record.exc_info = None
            record.exc_text = None
        record.msg, record.args = message, ()
        return True


def setup_logging(level: str, secrets: Sequence[str]) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(Scrub(secrets))
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

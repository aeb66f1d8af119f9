"""Logging for ``scopeguard serve`` that cannot leak a secret: every line is scrubbed.

Example::

    setup_logging("info", settings.secrets() + client_secrets())
"""

from __future__ import annotations

import base64
import logging
import os
import re
from collections.abc import Mapping, Sequence

# Any user:password@ in a URL, up to its last '@' (a password may hold one).
_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://)[^/\s]*@")


class Scrub(logging.Filter):
    """Replaces any configured secret in a log record with ``***`` (defence in depth)."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
            record.exc_text = None
        for secret in self.secrets:
            message = message.replace(secret, "***")
        message = _USERINFO.sub(r"\1***@", message)  # credentials written into any URL
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
    """The Jira and GitHub credentials in the environment, and their basic-auth encoding."""
    env = os.environ if environ is None else environ
    email = env.get("JIRA_EMAIL") or env.get("JIRA_USER") or ""
    token, pat = env.get("JIRA_TOKEN", ""), env.get("JIRA_PAT", "")
    out = [s for s in (token, pat, env.get("GITHUB_TOKEN", "").strip(),
                       env.get("GITHUB_APP_PRIVATE_KEY", "").strip()) if s]
    if email and token:
        out.append(base64.b64encode(f"{email}:{token}".encode()).decode())
    return out

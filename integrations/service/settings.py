"""What ``scopeguard serve`` is told: flags, else ``SCOPEGUARD_*`` variables, else defaults.

Example::

    settings = ServiceSettings.from_env(queue="/var/lib/scopeguard/queue.db")
    settings.secrets()   # for the log scrubber; never in repr
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from scopeguard.errors import ScopeguardError
from scopeguard.settings import parse_flag, parse_number

DEFAULT_MAX_BODY = 1024 * 1024
MIN_SECRET = 16  # characters: shorter webhook secrets and tokens are refused at start
SECRET_FIELDS = ("webhook_secret", "webhook_token", "github_webhook_secret")
# Durations that must be above 0 seconds (0 would spin, retry at once or forget at once).
POSITIVE = ("lease", "retry_base", "retry_max", "keep_days", "replay_window", "request_timeout")


@dataclass
class ServiceSettings:
    """Everything ``scopeguard serve`` is told; secrets are left out of ``repr``."""

    config: str | None = None
    db: str | None = None
    model: str | None = None
    queue: str = "scopeguard-queue.db"
    # A PostgreSQL URL: the queue, the issues and the embedding cache there instead of the
    # SQLite files, for several replicas (its password is a secret: never in repr or logs).
    store: str = field(default="", repr=False)
    workers: int = 1  # worker processes (threads with in_process)
    acceptors: int = 1  # processes accepting webhooks on the port (SO_REUSEPORT)
    # Added to each worker process's nice value: under load the cores go to the process
    # that accepts webhooks first (0: the workers run at its priority).
    worker_nice: int = 10
    # Classify in the accepting process (threads), as before worker processes: for
    # embedding the service in another app, or a machine where spawning is not allowed.
    in_process: bool = False
    max_body: int = DEFAULT_MAX_BODY
    lease: float = 300.0
    max_attempts: int = 10
    retry_base: float = 10.0  # seconds before the first re-try of a failed event; doubles
    retry_max: float = 600.0
    durable: bool = True
    keep_days: float = 14.0
    torch_threads: int = 1  # 0 leaves torch's default (one per core)
    requeue_failed: bool = False
    seed_jql: str = ""
    jira_url: str | None = None
    jira_flavour: str | None = None
    # The label for verdicts not sure enough to decide alone (README, "Needs decision"),
    # given instead of a scope label; "" (the default) gives every verdict its scope label.
    jira_needs_decision: str = ""
    webhook_secret: str = field(default="", repr=False)
    webhook_token: str = field(default="", repr=False)
    github_webhook_secret: str = field(default="", repr=False)
    github_repositories: str = ""  # comma-separated owner/repo; "" takes every repository
    github_relabels_branch: str = ""  # commit relabels there, not to the default branch
    # A signed body accepted within this many seconds is a duplicate whatever its delivery
    # id: the delivery id is outside the signature, so a captured body could be replayed.
    replay_window: float = 86400.0
    # Seconds a client has to send a whole request (headers and body), and the most
    # connections served at once; beyond it new requests get 503 (the sender retries).
    request_timeout: float = 10.0
    max_connections: int = 1000
    # The HTTP parser: httptools (C, the faster; the serve extra installs it), h11 (pure
    # Python), or auto (httptools when it is installed).
    http: str = "auto"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **given: Any) -> ServiceSettings:
        """Given values (not None), else ``SCOPEGUARD_*`` variables, else defaults."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            if given.get(f.name) is not None:
                values[f.name] = given[f.name]
                continue
            raw = env.get("SCOPEGUARD_" + f.name.upper())
            if raw is None or raw == "":
                continue
            name = "SCOPEGUARD_" + f.name.upper()
            kind = type(f.default)
            if kind is bool:
                values[f.name] = parse_flag(raw, name, f.default)
            elif kind in (int, float):
                values[f.name] = parse_number(raw, name, f.default, integer=kind is int)
            else:
                values[f.name] = raw
        for name in SECRET_FIELDS:  # a trailing newline from a secrets file is not the secret
            if isinstance(values.get(name), str):
                values[name] = values[name].strip()
        for name in SECRET_FIELDS:
            given_raw = given.get(name) if given.get(name) is not None else env.get(
                "SCOPEGUARD_" + name.upper())
            if given_raw and len(values.get(name, "")) < MIN_SECRET:
                variable = "SCOPEGUARD_" + name.upper()
                what = "is only whitespace" if not values.get(name) else (
                    f"is {len(values[name])} characters long")
                raise ScopeguardError(
                    f"{variable} {what}; a webhook secret or token needs at least "
                    f"{MIN_SECRET} characters, or it can be guessed. Fix: set it to a random "
                    "value, e.g. the output of `python -c \"import secrets; "
                    "print(secrets.token_hex(32))\"`, in scopeguard and in the webhook.")
        settings = cls(**values)
        for name in POSITIVE:
            value = getattr(settings, name)
            if not 0 < value < math.inf:
                raise ScopeguardError(f"SCOPEGUARD_{name.upper()}={value!r} is not a number of "
                                      "seconds above 0. Fix: set a positive number, or unset "
                                      "it for the default.")
        if settings.max_connections < 1 or settings.workers < 1:
            raise ScopeguardError("SCOPEGUARD_MAX_CONNECTIONS and SCOPEGUARD_WORKERS must be "
                                  "at least 1. Fix: set a positive whole number, or unset it.")
        if not 1 <= settings.acceptors <= 64:
            raise ScopeguardError(f"SCOPEGUARD_ACCEPTORS={settings.acceptors} is not a number "
                                  "of processes scopeguard serve runs. Fix: set 1 to 64, or "
                                  "unset it (1).")
        if settings.acceptors > 1 and settings.store:
            raise ScopeguardError("SCOPEGUARD_ACCEPTORS above 1 is for the SQLite queue; "
                                  "with --store (PostgreSQL) run more replicas instead. Fix: "
                                  "unset SCOPEGUARD_ACCEPTORS, or drop --store.")
        if settings.http not in ("auto", "httptools", "h11"):
            raise ScopeguardError(f"SCOPEGUARD_HTTP={settings.http!r} is not an HTTP parser "
                                  "scopeguard serve knows. Fix: set auto, httptools or h11, "
                                  "or unset it.")
        if settings.http == "httptools":
            from .http_guard import parser

            if parser() != "httptools":
                raise ScopeguardError("SCOPEGUARD_HTTP=httptools, but httptools is not "
                                      "installed. Fix: pip install 'scopeguard-issues[serve]', or "
                                      "unset it.")
        if settings.github_relabels_branch:  # checked at start, not at the first relabel
            from ..github.runner import branch_name

            try:
                settings.github_relabels_branch = branch_name(settings.github_relabels_branch)
            except ScopeguardError as exc:
                raise ScopeguardError(str(exc).replace(
                    "input relabels-branch", "SCOPEGUARD_GITHUB_RELABELS_BRANCH")) from None
        if not (settings.webhook_secret or settings.webhook_token
                or settings.github_webhook_secret):
            raise ScopeguardError(
                "no webhook authentication configured. Fix: set SCOPEGUARD_WEBHOOK_SECRET "
                "to the secret of the Jira webhook (Jira signs each delivery with it), "
                "and/or SCOPEGUARD_WEBHOOK_TOKEN to a shared token for Jira Automation's "
                "'Send web request' (header 'Authorization: Bearer <token>'); for GitHub, "
                "SCOPEGUARD_GITHUB_WEBHOOK_SECRET to the GitHub webhook's (or App's) secret.")
        return settings

    @property
    def repositories(self) -> list[str]:
        return [r.strip() for r in self.github_repositories.split(",") if r.strip()]

    @property
    def location(self) -> str:
        """Where the queue is, for logs and errors: the SQLite file, or the store's URL
        with its password masked."""
        from .storage import redact

        return redact(self.store) if self.store else self.queue

    def secrets(self) -> list[str]:
        from .storage import password

        return [s for s in (self.webhook_secret, self.webhook_token,
                            self.github_webhook_secret, password(self.store)) if s]

"""Exceptions raised by scopeguard's core.

Every message names the input at fault and says how to fix it. The CLI and the
integrations turn these into exit codes, ``::error::`` lines or HTTP 4xx answers.
"""

from __future__ import annotations


class ScopeguardError(Exception):
    """Base class: a problem the user can fix, with a message that says how."""


class ConfigError(ScopeguardError):
    """A positioning (or calibration) file is missing, unreadable or invalid."""

    def __init__(self, source: str, problem: str, fix: str = "", key: str = "") -> None:
        self.source = source
        self.key = key
        self.problem = problem
        self.fix = fix
        where = f"{source}: {key}: " if key else f"{source}: "
        message = where + problem
        if fix:
            message += f" Fix: {fix}"
        super().__init__(message)


class InputError(ScopeguardError):
    """A request, backlog or payload that cannot be classified as given."""

"""Reading numeric settings from environment variables, with errors that say the fix."""

from __future__ import annotations

from collections.abc import Mapping

from .errors import ScopeguardError


def env_number(env: Mapping[str, str], name: str, default: float,
               error: type[ScopeguardError] = ScopeguardError) -> float:
    """``env[name]`` as a number >= 0, ``default`` when unset or empty."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value < 0:
        raise error(f"{name}={raw!r} is not a number >= 0. Fix: set it to e.g. {default:g}, "
                    "or unset it.")
    return value

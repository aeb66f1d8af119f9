"""Yes/no and numeric settings from the environment (or Action inputs): one parser for all.

Every integration reads its switches and numbers through these, so a typo gets the same
answer everywhere: refused, naming the variable and what it accepts, never read as "no".

Example::

    durable = env_flag(os.environ, "SCOPEGUARD_DURABLE", True)
    retries = int(env_number(os.environ, "SCOPEGUARD_JIRA_RETRIES", 5))
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from .errors import ScopeguardError

# What runs the model (``SCOPEGUARD_BACKEND``, ``--backend``; scopeguard.runtime) and the
# ONNX build each reads. Here, not in runtime, so the command line names them without
# importing the engine.
BACKENDS = ("onnx", "onnx-fp32", "onnx-int8", "torch")
PRECISION = {"onnx": "compact", "onnx-fp32": "fp32", "onnx-int8": "int8"}

TRUE = ("true", "yes", "1", "on")
FALSE = ("false", "no", "0", "off")


def parse_flag(raw: str | None, name: str, default: bool,
               error: type[ScopeguardError] = ScopeguardError) -> bool:
    """``raw`` as yes or no; ``default`` when it is absent or empty.

    Args:
        raw: the value as given (case and surrounding spaces do not matter).
        name: what it is called where the user set it (a variable or an input), for the
            message.
        default: the value when ``raw`` is None or empty.
        error: the exception to raise for anything else.
    """
    value = (raw or "").strip().lower()
    if not value:
        return default
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise error(f"{name}={raw!r} is neither yes nor no. Fix: set it to one of "
                f"{', '.join(TRUE)} (yes) or {', '.join(FALSE)} (no), or unset it.")


def env_flag(env: Mapping[str, str], name: str, default: bool,
             error: type[ScopeguardError] = ScopeguardError) -> bool:
    """``env[name]`` as yes or no (see :func:`parse_flag`)."""
    return parse_flag(env.get(name), name, default, error)


def parse_number(raw: str | None, name: str, default: float, *, integer: bool = False,
                 error: type[ScopeguardError] = ScopeguardError) -> float:
    """``raw`` as a finite number >= 0 (a whole one with ``integer``); ``default`` when
    absent or empty."""
    value = (raw or "").strip()
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if number < 0 or not math.isfinite(number) or (integer and number != int(number)):
        kind = "a whole number" if integer else "a number"
        raise error(f"{name}={raw!r} is not {kind} >= 0. Fix: set it to e.g. {default:g}, "
                    "or unset it.")
    return int(number) if integer else number


def env_number(env: Mapping[str, str], name: str, default: float,
               error: type[ScopeguardError] = ScopeguardError, *, integer: bool = False) -> float:
    """``env[name]`` as a number >= 0 (whole with ``integer``), ``default`` when unset or empty."""
    return parse_number(env.get(name), name, default, integer=integer, error=error)

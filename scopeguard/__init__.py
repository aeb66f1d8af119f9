"""scopeguard: label feature requests core, generalizable or one-off against the positioning."""

from .backlog import Request, read_backlog
from .classify import Verdict, classify
from .engine import Scopeguard
from .errors import ConfigError, InputError, ScopeguardError
from .positioning import Positioning, load_positioning, parse_positioning
from .rules import Rules

__version__ = "0.1.0"
# The distribution name on PyPI ("scopeguard" there is an unrelated project).
DIST_NAME = "scopeguard-issues"

__all__ = [
    "ConfigError",
    "InputError",
    "Positioning",
    "Request",
    "Rules",
    "Scopeguard",
    "ScopeguardError",
    "Verdict",
    "classify",
    "load_positioning",
    "parse_positioning",
    "read_backlog",
]

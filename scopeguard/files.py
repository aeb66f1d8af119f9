"""Files written whole or not at all: a temporary file beside the target, then a rename.

A crash, a full disk or a second writer never leaves half a model, calibration head or
report where the old one was. (``scopeguard audit -o`` and the other CLI outputs use the
CLI's own variant, which also keeps the old file's mode and names the fix when the
directory takes no new files.)

Example::

    write_whole(Path("models/head.json"), lambda tmp: Path(tmp).write_text(text))
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_whole(out: Path, write: Callable[[str], object], mode: int = 0o644) -> Path:
    """``write(tmp)`` fills a temporary file beside ``out``, which then replaces ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out

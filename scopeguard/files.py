"""Files written whole or not at all: a temporary file beside the target, flushed to disk,
then renamed over it.

A crash, a power loss, a full disk or a second writer never leaves half a model,
calibration head or report where the old one was. A link is followed (the file it names
is replaced, the link stays); the old file's mode is kept (a new file gets the umask's).
(``scopeguard audit -o`` and the other CLI outputs use the CLI's own variant, which also
names the fix when the directory takes no new files.)

Example::

    write_whole(Path("models/head.json"), lambda tmp: Path(tmp).write_text(text))
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_whole(out: Path, write: Callable[[str], object]) -> Path:
    """``write(tmp)`` fills a temporary file beside ``out``, which then replaces ``out``."""
    target = Path(os.path.realpath(out))
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:  # on disk before the rename: never an empty file
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out

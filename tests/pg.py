"""A throwaway PostgreSQL server for the tests: a fresh cluster in a temporary directory, on
a free loopback port (and a unix socket in that directory), trust authentication, removed
after the run.

PostgreSQL refuses to run as root: as root, the cluster belongs to the ``postgres`` OS
user (created if missing) and its commands run through ``runuser``. The binaries come
from the Debian packages (/usr/lib/postgresql/<version>/bin) or PATH; ``make test``
installs them when missing.

Example::

    with Cluster() as cluster:
        url = cluster.create_database("t1")   # postgresql://postgres@127.0.0.1:PORT/t1
        cluster.restart()
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from fake_jira import free_port


def binaries() -> Path | None:
    """The directory of initdb and pg_ctl (the newest Debian version first), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name) if Path(
                       p).parent.parent.name.isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


class Cluster:
    """A PostgreSQL cluster of its own: ``start()``, ``stop()``, ``restart()``, ``remove()``.

    ``durable``: fsync as a production server does (the benchmark); the tests run without
    (faster; a stop, even ``immediate``, loses nothing short of the machine crashing).
    """

    def __init__(self, durable: bool = False) -> None:
        self.durable = durable
        self.bin = binaries()
        if self.bin is None:
            raise RuntimeError("PostgreSQL is not installed (no initdb). Fix: apt-get install "
                               "postgresql (make test does it), or set "
                               "SCOPEGUARD_TEST_SKIP_POSTGRES=1 to skip these tests locally.")
        self.root = Path(tempfile.mkdtemp(prefix="scopeguard-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            self._ensure_user()
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "--no-sync", "-E", "UTF8")

    def _ensure_user(self) -> None:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bin / tool), *args]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.root)
        if check and done.returncode:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr or done.stdout}")
        return done

    def start(self) -> Cluster:
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                   f"-c fsync={'on' if self.durable else 'off'} -c max_connections=200 "
                   "-c shared_buffers=32MB")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l",
                  str(self.root / "server.log"), "-w", "-t", "60", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self) -> None:
        self.stop()
        self.start()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.remove()

"""Shared fixtures. The real model (ONNX Runtime, the default backend) is loaded once per
session; its vectors are cached in a session SQLite file so every test that embeds the same
text reuses them. The ONNX file is built once per run into a temporary model cache, never
into the user's home."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from scopeguard.cache import EmbeddingCache
from scopeguard.embed import CachedEmbedder, HashingEmbedder
from scopeguard.onnx_embed import OnnxEmbedder
from scopeguard.positioning import load_positioning

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
# Subprocesses (uvicorn, the Action's entrypoint) inherit it: one build per test run.
MODEL_CACHE = os.environ.get("SCOPEGUARD_TEST_MODEL_CACHE") or tempfile.mkdtemp(
    prefix="scopeguard-onnx-")


def pytest_sessionfinish(session, exitstatus):
    if not os.environ.get("SCOPEGUARD_TEST_MODEL_CACHE"):
        shutil.rmtree(MODEL_CACHE, ignore_errors=True)


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch):
    """Keep the caller's scopeguard settings (and tokens) out of the tests."""
    for key in list(os.environ):
        if key.startswith(("SCOPEGUARD_", "GITHUB_", "JIRA_")):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SCOPEGUARD_MODEL_CACHE", MODEL_CACHE)


@pytest.fixture(autouse=True)
def no_service_left():
    """A real ``scopeguard serve`` a test started and left running (it failed before its
    stop) is stopped: its process and sockets would fail the next test as theirs."""
    from fake_jira import ServiceProcess

    before = set(ServiceProcess.started)
    yield
    for service in ServiceProcess.started - before:
        service.stop()
    ServiceProcess.started.intersection_update(before)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="session")
def example_config() -> Path:
    return EXAMPLES / "scopeguard.yml"


@pytest.fixture(scope="session")
def example_backlog() -> Path:
    return EXAMPLES / "backlog.jsonl"


@pytest.fixture
def positioning(example_config):
    return load_positioning(example_config)


@pytest.fixture
def hashing() -> HashingEmbedder:
    return HashingEmbedder()


@pytest.fixture(scope="session")
def session_db(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache") / "scopeguard.db"


@pytest.fixture(scope="session")
def real_embedder(session_db) -> CachedEmbedder:
    """all-MiniLM-L6-v2 from the bundled package, offline, in ONNX Runtime (the default
    backend), behind a session cache."""
    os.environ["SCOPEGUARD_MODEL_CACHE"] = MODEL_CACHE  # session fixtures precede autouse
    return CachedEmbedder(OnnxEmbedder(), EmbeddingCache(session_db))


# --- the two stores: SQLite files and a throwaway PostgreSQL server (tests/pg.py) -----------

# Read before clean_environ empties SCOPEGUARD_*: locally, skip the PostgreSQL tests when
# no server can be started. Unset (CI), such a failure fails them.
SKIP_POSTGRES = os.environ.get("SCOPEGUARD_TEST_SKIP_POSTGRES", "")


@pytest.fixture(scope="session")
def pg_cluster():
    """A PostgreSQL server of the test run's own, removed after it."""
    from pg import Cluster

    try:
        cluster = Cluster().start()
    except Exception as exc:  # noqa: BLE001 - said in the failure (or the skip)
        if SKIP_POSTGRES:
            pytest.skip(f"no PostgreSQL server ({exc}); SCOPEGUARD_TEST_SKIP_POSTGRES is set")
        pytest.fail(f"cannot start PostgreSQL for the tests marked postgres: {exc}")
    yield cluster
    cluster.remove()


@pytest.fixture
def pg_url(pg_cluster, request) -> str:
    """A fresh database for the test."""
    import hashlib

    return pg_cluster.create_database(
        "t_" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:16])


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request, tmp_path):
    """The service's store, once as SQLite files, once as a PostgreSQL database."""
    from stores import Store

    found = Store(request.param, request.getfixturevalue("pg_url")
                  if request.param == "postgresql" else str(tmp_path))
    yield found
    found.close()

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

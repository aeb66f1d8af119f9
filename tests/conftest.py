"""Shared fixtures. The real model is loaded once per session; its vectors are cached in a
session SQLite file so every test that embeds the same text reuses them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from scopeguard.cache import EmbeddingCache
from scopeguard.embed import CachedEmbedder, HashingEmbedder, SentenceTransformerEmbedder
from scopeguard.positioning import load_positioning

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch):
    """Keep the caller's scopeguard settings (and tokens) out of the tests."""
    for key in list(os.environ):
        if key.startswith(("SCOPEGUARD_", "GITHUB_", "JIRA_")):
            monkeypatch.delenv(key, raising=False)


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
    """all-MiniLM-L6-v2 from the bundled package, offline, behind a session cache."""
    return CachedEmbedder(SentenceTransformerEmbedder(), EmbeddingCache(session_db))

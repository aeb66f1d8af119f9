"""Wiring for the command line and the integrations: files and settings to a ``Scopeguard``.

Settings resolve as: explicit argument, then environment variable, then the
positioning file, then the default. ``SCOPEGUARD_DB`` names the SQLite cache,
``SCOPEGUARD_MODEL`` the sentence-transformers model (name or path; ``hashing`` selects
a deterministic word-hashing embedder that loads no model, for smoke runs and tests).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .cache import DEFAULT_DB, EmbeddingCache
from .embed import CachedEmbedder, Embedder, HashingEmbedder, SentenceTransformerEmbedder
from .engine import Scopeguard
from .positioning import Positioning, find_positioning, load_positioning


def db_path(db: str | None = None) -> str:
    return db or os.environ.get("SCOPEGUARD_DB") or DEFAULT_DB


def make_embedder(model: str | None = None, db: str | None = None,
                  positioning: Positioning | None = None,
                  cache: bool = True) -> CachedEmbedder:
    """The sentence-transformers embedder behind the SQLite cache."""
    model = model or os.environ.get("SCOPEGUARD_MODEL") or (positioning.model if positioning
                                                            else None)
    inner: Embedder
    if model and model.startswith("hashing"):
        # A deterministic word-hashing embedder: no model, for smoke runs and tests.
        inner = HashingEmbedder(int(model.partition(":")[2] or 512))
    else:
        inner = SentenceTransformerEmbedder(model)
    return CachedEmbedder(inner, EmbeddingCache(db_path(db)) if cache else None)


def load_config(config: str | Path | None = None) -> Positioning:
    config = config or os.environ.get("SCOPEGUARD_CONFIG") or "."
    return load_positioning(find_positioning(config))


def open_scopeguard(config: str | Path | None = None, db: str | None = None,
                    model: str | None = None, embedder: Embedder | None = None,
                    positioning: Positioning | None = None) -> Scopeguard:
    """A ready ``Scopeguard`` for the positioning file at ``config``."""
    positioning = positioning or load_config(config)
    embedder = embedder or make_embedder(model, db, positioning)
    from .calibration import head_for  # the calibrated head the positioning file selects

    return Scopeguard(positioning, embedder, head=head_for(positioning, embedder.model_id),
                      precedents=load_precedents(db))


def load_precedents(db: str | None = None) -> list[Any]:
    """The decided requests ``scopeguard history`` imported into the ``db`` file; none
    when the file does not exist yet (nothing is created for it)."""
    path = Path(db_path(db))
    if not path.is_file():
        return []
    from .history_store import HistoryStore

    store = HistoryStore(path)
    try:
        return store.decided()
    finally:
        store.close()

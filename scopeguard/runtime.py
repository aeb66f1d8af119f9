"""Wiring for the command line and the integrations: files and settings to a ``Scopeguard``.

Settings resolve as: explicit argument, then environment variable, then the
positioning file, then the default. ``SCOPEGUARD_DB`` names the SQLite cache,
``SCOPEGUARD_MODEL`` the sentence-transformers model (name or path; ``hashing`` selects
a deterministic word-hashing embedder that loads no model, for smoke runs and tests),
``SCOPEGUARD_BACKEND`` what runs it (``onnx``, the default: ONNX Runtime, no torch, the
bundled model as the wheel ships it, compact; ``onnx-fp32``: built from the model's
weights, the same vectors as torch; ``onnx-int8``: quantised, faster, close but not
identical; ``torch``: sentence-transformers, the ``train`` extra) and
``SCOPEGUARD_THREADS`` its inference threads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .cache import DEFAULT_DB, EmbeddingCache
from .embed import CachedEmbedder, Embedder, HashingEmbedder, SentenceTransformerEmbedder
from .engine import Scopeguard
from .errors import InputError, ScopeguardError
from .positioning import Positioning, find_positioning, load_positioning
from .settings import BACKENDS, PRECISION


def db_path(db: str | None = None) -> str:
    return db or os.environ.get("SCOPEGUARD_DB") or DEFAULT_DB


def backend_name(backend: str | None = None) -> str:
    name = (backend or os.environ.get("SCOPEGUARD_BACKEND") or "onnx").strip().lower()
    if name not in BACKENDS:
        raise InputError(f"unknown backend {name!r} (SCOPEGUARD_BACKEND or --backend; the "
                         f"Action's backend input). Fix: use one of {', '.join(BACKENDS)}.")
    return name


def threads_setting(threads: int | str | None = None) -> int | None:
    value = threads if threads is not None else os.environ.get("SCOPEGUARD_THREADS") or None
    if value is None:
        return None
    try:
        count = int(value)
    except ValueError:
        count = 0
    if not 1 <= count <= 256:
        raise ScopeguardError(f"threads must be a whole number from 1 to 256, not {value!r} "
                              "(SCOPEGUARD_THREADS or --threads).")
    return count


def make_inner(model: str | None = None, backend: str | None = None,
               threads: int | None = None) -> Embedder:
    """The embedder itself (no cache): the backend ``backend_name`` selects."""
    name, threads = backend_name(backend), threads_setting(threads)
    if model and (model == "hashing" or model.startswith("hashing:")):
        # A deterministic word-hashing embedder: no model, for smoke runs and tests.
        size = model.partition(":")[2] or "512"
        if not size.isdigit() or not 8 <= int(size) <= 65536:
            raise InputError(f"model {model!r}: the hashing embedder takes a size of 8 to "
                             "65536 ('hashing' or 'hashing:512'). Fix: give such a size.")
        return HashingEmbedder(int(size))
    if name == "torch":
        return SentenceTransformerEmbedder(model, threads=threads)
    from .onnx_embed import OnnxEmbedder

    return OnnxEmbedder(model, precision=PRECISION[name], threads=threads)


def make_embedder(model: str | None = None, db: str | None = None,
                  positioning: Positioning | None = None,
                  cache: bool = True, backend: str | None = None) -> CachedEmbedder:
    """The model's embedder (ONNX Runtime by default) behind the SQLite cache."""
    given = model or os.environ.get("SCOPEGUARD_MODEL")
    model = given or (positioning.model if positioning else None)
    try:
        inner = make_inner(model, backend)
    except ScopeguardError as exc:
        if given or positioning is None or not positioning.model:
            raise
        raise ScopeguardError(f"{positioning.source}: model: {exc} Or correct (or remove) "
                              "the 'model' key there, which named it.") from None
    return CachedEmbedder(inner, EmbeddingCache(db_path(db)) if cache else None)


def config_path(config: str | Path | None = None) -> Path:
    """The positioning file ``config`` names (a file, or a directory holding one), else
    SCOPEGUARD_CONFIG's, else the current directory's."""
    return find_positioning(config or os.environ.get("SCOPEGUARD_CONFIG") or ".")


def load_config(config: str | Path | None = None) -> Positioning:
    return load_positioning(config_path(config))


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

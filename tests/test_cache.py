import numpy as np

from scopeguard.cache import EmbeddingCache
from scopeguard.embed import CachedEmbedder, HashingEmbedder


def test_second_pass_embeds_nothing_and_persists(store):
    texts = ["alpha beta", "gamma delta", "alpha beta"]
    first = CachedEmbedder(HashingEmbedder(), store.cache())
    a = first.encode(texts)
    assert first.computed == 2  # the repeated text is embedded once
    second = CachedEmbedder(HashingEmbedder(), store.cache())  # a new process, same store
    b = second.encode(texts)
    assert second.computed == 0 and second.inner.calls == 0
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and np.allclose(np.linalg.norm(a, axis=1), 1.0)


def test_cache_is_keyed_by_model(store):
    cache = store.cache()
    CachedEmbedder(HashingEmbedder(64), cache).encode(["x"])
    other = CachedEmbedder(HashingEmbedder(128), cache)
    assert other.encode(["x"]).shape == (1, 128) and other.computed == 1
    assert cache.count() == 2


def test_progress_counts_hits_and_misses(store):
    cache = store.cache()
    CachedEmbedder(HashingEmbedder(), cache).encode(["a", "b"])
    seen = []
    CachedEmbedder(HashingEmbedder(), cache).encode(["a", "b", "c"], progress=seen.append)
    assert sum(seen) == 3


def test_empty_input():
    out = CachedEmbedder(HashingEmbedder(32), None).encode([])
    assert out.shape == (0, 32)


# --- a damaged cache never gives a confident wrong verdict (issue 15) -----------------------

import sqlite3  # noqa: E402

import pytest  # noqa: E402

from scopeguard.errors import ScopeguardError  # noqa: E402


def _flip(vector: np.ndarray, component: int, bit: int) -> bytes:
    raw = np.array(vector, dtype=np.float32).view(np.uint32).copy()
    raw[component] ^= np.uint32(1 << bit)
    return raw.view(np.float32).tobytes()


def _corrupt(store, model: str, text: str, dim: int, blob: bytes) -> None:
    from scopeguard.cache import text_hash

    store.sql("UPDATE embeddings SET dim = ?, vector = ? WHERE model = ? AND text_hash = ?",
              (dim, blob, model, text_hash(text)))


@pytest.mark.parametrize("damage", ["short blob", "wrong dimension", "nan", "inf", "zeros",
                                    "flipped bit", "not unit"])
def test_a_damaged_row_is_embedded_again_and_counted(store, damage, caplog):
    texts = ["dark mode for the app", "export invoices", "sync calendars"]
    first = CachedEmbedder(HashingEmbedder(64), store.cache())
    truth = first.encode(texts)
    first.cache.close()
    blob = {"short blob": (b"\x00" * 10, 64),
            "wrong dimension": (np.ones(3, np.float32).tobytes(), 3),
            "nan": (np.full(64, np.nan, np.float32).tobytes(), 64),
            "inf": (np.full(64, np.inf, np.float32).tobytes(), 64),
            "zeros": (np.zeros(64, np.float32).tobytes(), 64),
            # one exponent bit: a component of about 1e36, finite, and every cosine wrong
            "flipped bit": (_flip(truth[1], 0, 30), 64),
            "not unit": ((truth[1] * 3).astype(np.float32).tobytes(), 64)}[damage]
    _corrupt(store, "hashing-64", texts[1], blob[1], blob[0])
    again = CachedEmbedder(HashingEmbedder(64), store.cache())
    with caplog.at_level("WARNING", logger="scopeguard"):
        out = again.encode(texts)
    np.testing.assert_allclose(out, truth, atol=1e-6)
    assert again.computed == 1 and again.cache.damaged == 1
    assert "damaged" in caplog.text
    third = CachedEmbedder(HashingEmbedder(64), store.cache())  # it was overwritten
    np.testing.assert_allclose(third.encode(texts), truth, atol=1e-6)
    assert third.computed == 0 and third.cache.damaged == 0


def test_a_cache_whose_every_row_has_the_wrong_size_is_rebuilt(store):
    texts = ["alpha", "beta"]
    truth = CachedEmbedder(HashingEmbedder(64), store.cache()).encode(texts)
    for text in texts:  # every row: dimension 3, so the "dominant" size is wrong too
        _corrupt(store, "hashing-64", text, 3, np.ones(3, np.float32).tobytes())
    again = CachedEmbedder(HashingEmbedder(64), store.cache())
    np.testing.assert_allclose(again.encode(texts), truth, atol=1e-6)
    assert again.cache.damaged == 2
    np.testing.assert_allclose(again.encode(["gamma", *texts])[1:], truth, atol=1e-6)


def test_a_damaged_row_does_not_decide_a_verdict_with_the_real_model(tmp_path, positioning,
                                                                    real_embedder):
    """The real model behind a cache whose row for the request was overwritten with a
    3-number vector: the verdict is the one from a clean cache."""
    from scopeguard.backlog import Request
    from scopeguard.engine import Scopeguard

    request = Request(id="1", title="Let clinics export their invoices to a spreadsheet",
                      body="We need a CSV export of the invoices for our accountant.")
    clean = Scopeguard(positioning, real_embedder).classify(request)
    db = tmp_path / "c.db"
    embedder = CachedEmbedder(real_embedder.inner, EmbeddingCache(db))
    Scopeguard(positioning, embedder).classify(request)
    with sqlite3.connect(db) as conn:  # every row of the model: 3 numbers
        conn.execute("UPDATE embeddings SET dim = 3, vector = ?",
                     (np.ones(3, np.float32).tobytes(),))
    again = CachedEmbedder(real_embedder.inner, EmbeddingCache(db))
    verdict = Scopeguard(positioning, again).classify(request)
    assert again.cache.damaged > 0
    assert verdict.label == clean.label
    assert verdict.confidence == pytest.approx(clean.confidence, abs=1e-4)


def test_a_cache_file_that_is_not_a_database_is_a_clear_error(tmp_path):
    db = tmp_path / "c.db"
    db.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ScopeguardError) as err:
        CachedEmbedder(HashingEmbedder(), EmbeddingCache(db)).encode(["x"])
    assert "c.db" in str(err.value) and "move it aside" in str(err.value)
    assert "delete" not in str(err.value)  # --db may name a file that is not a cache


def test_a_full_disk_while_writing_the_cache_is_a_clear_error(tmp_path):
    """SQLite's own 'database or disk is full' (a page limit stands in for the device)."""
    db = tmp_path / "c.db"
    cache = EmbeddingCache(db)
    cache.conn.execute("PRAGMA max_page_count = 8")
    with pytest.raises(ScopeguardError) as err:
        CachedEmbedder(HashingEmbedder(512), cache).encode([f"text {n}" for n in range(400)])
    assert "full" in str(err.value) and "free space" in str(err.value)


def test_close_folds_the_write_ahead_log_into_the_file(tmp_path):
    db = tmp_path / "c.db"
    cache = EmbeddingCache(db)
    CachedEmbedder(HashingEmbedder(64), cache).encode(["one", "two", "three"])
    cache.close()
    wal = tmp_path / "c.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    copy = tmp_path / "copy.db"
    copy.write_bytes(db.read_bytes())  # the .db alone holds every row
    assert EmbeddingCache(copy).count() == 3


def test_retain_keeps_only_the_given_texts_of_every_model(store):
    cache = store.cache()
    CachedEmbedder(HashingEmbedder(64), cache).encode(["keep me", "drop me", "and me"])
    CachedEmbedder(HashingEmbedder(32), cache).encode(["keep me", "old"])
    assert cache.retain(["keep me"]) == 3
    assert cache.count() == 2  # "keep me" under both models
    again = CachedEmbedder(HashingEmbedder(64), cache)
    again.encode(["keep me"])
    assert again.computed == 0


def test_rows_whose_sizes_are_not_numbers_are_embedded_again(tmp_path):
    """A cache file edited or damaged so that a size column holds text: the vectors are
    computed again, never a traceback."""
    texts = ["dark mode for the app", "export invoices"]
    path = tmp_path / "c.db"
    first = CachedEmbedder(HashingEmbedder(64), EmbeddingCache(str(path)))
    truth = first.encode(texts)
    first.cache.close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE embeddings SET dim = 'sixty-four'")
        conn.execute("UPDATE models SET dim = 'x'")
    again = CachedEmbedder(HashingEmbedder(64), EmbeddingCache(str(path)))
    np.testing.assert_allclose(again.encode(texts), truth, atol=1e-6)
    assert again.computed == 2


def test_a_locked_cache_stops_a_command_but_not_a_tolerant_embedder(tmp_path, caplog):
    """Another process holding the cache's write lock (one that stalled mid-write) made the
    service's events wait 30 s and fail, again and again: the service's embedder goes on
    without the cache (a warning), while a command still stops and names the file."""
    import sqlite3

    import pytest

    from scopeguard.errors import ScopeguardError

    path = tmp_path / "cache.db"
    EmbeddingCache(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the write lock, held
    try:
        strict = EmbeddingCache(path)
        strict.busy(0.1)
        with pytest.raises(ScopeguardError, match=r"cache\.db: the embedding cache cannot be "
                                                  r"used \(database is locked\)"):
            CachedEmbedder(HashingEmbedder(), strict).encode(["alpha beta"])
        tolerant = CachedEmbedder(HashingEmbedder(), EmbeddingCache(path))
        tolerant.tolerate(busy=0.1)
        with caplog.at_level("WARNING", logger="scopeguard"):
            got = tolerant.encode(["alpha beta", "gamma"])
        np.testing.assert_array_equal(got, HashingEmbedder().encode(["alpha beta", "gamma"]))
        assert tolerant.cache_errors == 1 and tolerant.computed == 2
        assert "embedding without the cache" in caplog.text and "locked" in caplog.text
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    again = tolerant.encode(["alpha beta"])  # the lock is gone: stored as before
    assert tolerant.cache_errors == 1 and tolerant.cache.count() == 1
    np.testing.assert_array_equal(again, got[:1])

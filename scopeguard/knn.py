"""Neighbour search for audits: exact below a size, an HNSW index (faiss) above it.

Exact blocked search (``engine.neighbours_above``) grows with n^2: 53 s at 100,000 real
request vectors here, so about 1.5 h at a million. ``bench/knn.py`` measured faiss's
HNSW (inner product, M=32, efConstruction 80, efSearch 128) on backlogs made from the
corpus's real and synthetic request texts and their variants: recall of the exact
neighbour lists 1.0000 / 0.9999 / 0.9999 at 20k / 50k / 100k (recall@10 0.9997 at 100k),
0.53x / 1.22x / 2.23x the exact search's speed. So the index is used from 50,000
requests (``SCOPEGUARD_HNSW_MIN``; ``0`` never) when faiss is installed (the ``scale``
extra), and the audit report says which search found the neighbours and its measured
recall: a missed neighbour is a customer not counted.
"""

from __future__ import annotations

import os

import numpy as np

from .errors import ScopeguardError

HNSW_MIN = 50_000
HNSW_NOTE = ("HNSW index (faiss; recall 0.9999 of the exact neighbour lists, measured on "
             "100,000 real-text requests by bench/knn.py)")
EXACT_NOTE = "exact search"


def hnsw_min() -> int:
    raw = os.environ.get("SCOPEGUARD_HNSW_MIN", "")
    if not raw:
        return HNSW_MIN
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ScopeguardError(f"SCOPEGUARD_HNSW_MIN={raw!r} is not a number of requests. Fix: "
                              "a whole number (0: always exact), or unset it for 50000.")
    return value


def use_hnsw(n: int) -> bool:
    limit = hnsw_min()
    if not limit or n < limit:
        return False
    try:
        import faiss  # noqa: F401 - optional: the scale extra
    except ImportError:
        return False
    return True


def hnsw_neighbours(vectors: np.ndarray, threshold: float, limit: int = 50,
                    k: int = 64) -> list[list[tuple[int, float]]]:
    """For each row, the other rows at cosine >= ``threshold`` among its ``k`` nearest in
    an HNSW graph (best ``limit`` first; ties by position, as the exact search orders)."""
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    index = faiss.IndexHNSWFlat(vectors.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 80
    index.add(vectors)
    index.hnsw.efSearch = 128
    out: list[list[tuple[int, float]]] = []
    for start in range(0, len(vectors), 8192):  # bounded memory for the answers
        scores, ids = index.search(vectors[start:start + 8192], k + 1)
        for row in range(len(ids)):
            i = start + row
            pairs = [(int(j), float(s)) for j, s in zip(ids[row], scores[row], strict=True)
                     if j >= 0 and j != i and s >= threshold]
            out.append(sorted(pairs, key=lambda p: (-p[1], p[0]))[:limit])
    return out

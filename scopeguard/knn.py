"""Neighbour search for audits: exact below a size, an HNSW index (faiss) above it.

Exact blocked search (``engine.neighbours_above``) grows with n^2: 53 s at 100,000 real
request vectors here, so about 1.5 h at a million. ``bench/knn.py`` measured faiss's
HNSW (inner product, M=32, efConstruction 80, efSearch 128) on backlogs made from the
corpus's real and synthetic request texts and their variants: recall of the exact
neighbour lists 1.0000 / 0.9999 / 0.9999 at 20k / 50k / 100k (recall@10 0.9997 at 100k),
0.53x / 1.22x / 2.23x the exact search's speed; at 1,000,000 (``bench/million.py``, a
sample of 2,000 requests against their exact lists) 0.986, recall@10 0.998. So the index is used from 50,000
requests (``SCOPEGUARD_HNSW_MIN``; ``0`` never) when faiss is installed (the ``scale``
extra), and the audit report says which search found the neighbours and its measured
recall: a missed neighbour is a customer not counted.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence

import numpy as np

from .errors import ScopeguardError

HNSW_MIN = 50_000
HNSW_NOTE = ("HNSW index (faiss; recall of the exact neighbour lists 0.9999 at 100,000 "
             "real-text requests, 0.986 at 1,000,000 (recall@10 0.998): bench/knn.py, "
             "bench/million.py)")
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


class NeighbourLists(Sequence):
    """Every request's neighbour list, best first, held as flat arrays: 8 bytes a pair
    (int32 position, float32 cosine) instead of about 110 for a list of Python tuples,
    so a million requests with 50 neighbours each take 400 MB, not 5.5 GB. Row ``i``
    reads as the list of ``(position, cosine)`` tuples it stands for, with the same
    values (the cosines were float32 to begin with).

    Built row by row with :meth:`append` (positions and cosines, already ordered), or
    from lists with :meth:`of`.
    """

    _FLUSH = 4096  # rows buffered before their arrays are joined

    def __init__(self) -> None:
        self._index: list[np.ndarray] = []  # joined chunks
        self._score: list[np.ndarray] = []
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._lengths: list[int] = []
        self._flat: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @classmethod
    def of(cls, lists: Sequence[Sequence[tuple[int, float]]]) -> NeighbourLists:
        out = cls()
        for pairs in lists:
            out.append(np.array([j for j, _ in pairs], np.int32),
                       np.array([s for _, s in pairs], np.float32))
        return out

    def append(self, index: np.ndarray, score: np.ndarray) -> None:
        self._pending.append((np.asarray(index, np.int32), np.asarray(score, np.float32)))
        self._lengths.append(len(index))
        self._flat = None
        if len(self._pending) >= self._FLUSH:
            self._join()

    def _join(self) -> None:
        if self._pending:
            self._index.append(np.concatenate([i for i, _ in self._pending]))
            self._score.append(np.concatenate([s for _, s in self._pending]))
            self._pending = []

    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._flat is None:
            self._join()
            index = np.concatenate(self._index) if self._index else np.zeros(0, np.int32)
            score = np.concatenate(self._score) if self._score else np.zeros(0, np.float32)
            self._index, self._score = [index], [score]
            offsets = np.zeros(len(self._lengths) + 1, np.int64)
            np.cumsum(self._lengths, out=offsets[1:])
            self._flat = (offsets, index, score)
        return self._flat

    def __len__(self) -> int:
        return len(self._lengths)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        offsets, index, score = self._arrays()
        i = range(len(self))[i]  # negative positions, and IndexError past the end
        a, b = offsets[i], offsets[i + 1]
        return list(zip(index[a:b].tolist(), score[a:b].tolist(), strict=True))

    def __iter__(self) -> Iterator[list[tuple[int, float]]]:
        return (self[i] for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return len(self) == len(other) and all(
            list(a) == list(b) for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def pairs(self) -> int:
        """How many neighbour pairs the lists hold."""
        return int(sum(self._lengths))

    def sizes(self) -> list[int]:
        """Each row's length, without reading the rows."""
        return list(self._lengths)


RANK_STEP = 1e-4  # scores this close rank as a tie (the report shows 4 decimals)


def rank(score: float) -> int:
    """A score's rank bucket: scores within :data:`RANK_STEP` share one, so a tie is a tie
    however the pair's product was computed. One pair's cosine taken from either row, in
    another matrix product, can differ in its last bit; ranking on the raw float would
    then order two identical requests differently in a re-audit than in a fresh run."""
    return math.floor(float(score) / RANK_STEP + 0.5)


def ranks(score: np.ndarray) -> np.ndarray:
    """:func:`rank` of every score (the same float64 arithmetic, so the same buckets)."""
    return np.floor(np.asarray(score, dtype=np.float64) / RANK_STEP + 0.5)


def ordered(index: np.ndarray, score: np.ndarray,
            tie: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pairs best first, ties (scores in one :func:`rank`) by ``tie[index]`` (each
    request's place in an order that does not depend on the backlog's, see
    :func:`tie_order`), then by position: the order every neighbour list has. A list
    is cut at 50, so which of many tied requests make it must not depend on where they
    stand in the file (a reordered backlog kept other members than a fresh run chose)."""
    order = np.lexsort((index, index if tie is None else tie[index], -ranks(score)))
    return index[order], score[order]


def tie_order(keys: list[str]) -> np.ndarray:
    """Each request's place among the requests sorted by their keys (a hash of what the
    request says): the tie-break of :func:`ordered`, the same in any file order."""
    tie = np.empty(len(keys), dtype=np.int64)
    tie[np.argsort(np.array(keys, dtype=object), kind="stable")] = np.arange(len(keys))
    return tie


def hnsw_neighbours(vectors: np.ndarray, threshold: float, limit: int = 50,
                    k: int = 64, tie: np.ndarray | None = None) -> NeighbourLists:
    """For each row, the other rows at cosine >= ``threshold`` among its ``k`` nearest in
    an HNSW graph (best ``limit`` first; ties as the exact search orders them: ``tie``,
    then position)."""
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    index = faiss.IndexHNSWFlat(vectors.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 80
    index.add(vectors)
    index.hnsw.efSearch = 128
    out = NeighbourLists()
    for start in range(0, len(vectors), 8192):  # bounded memory for the answers
        scores, ids = index.search(vectors[start:start + 8192], k + 1)
        for row in range(len(ids)):
            keep = (ids[row] >= 0) & (ids[row] != start + row) & (scores[row] >= threshold)
            found, cosines = ordered(ids[row][keep], scores[row][keep], tie)
            out.append(found[:limit], cosines[:limit])
    return out

"""Glue between the pure classifier and the embedder: one object per product.

``Scopeguard`` embeds the positioning file once, embeds requests (through the
SQLite cache), finds each request's neighbours in the backlog and calls
``classify.classify``. The CLI and the integrations all go through it.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from .backlog import Request, check_request, resolve_customer
from .classify import (
    Precedent,
    ProductIndex,
    RequestVectors,
    Verdict,
    anchors_of,
    classify,
    with_precedent,
)
from .clean import Document, prepare
from .embed import Embedder, Progress
from .knn import EXACT_NOTE, HNSW_NOTE, NeighbourLists, hnsw_neighbours, ordered, rank, tie_order, use_hnsw
from .memo import AnalysisMemo, StoredVerdicts, digest
from .positioning import Positioning
from .rules import Head, Rules


class Scopeguard:
    """Classifies requests for one product.

    Args:
        positioning: the validated positioning file.
        embedder: any :class:`~scopeguard.embed.Embedder` (wrap it in a
            ``CachedEmbedder`` to reuse vectors across runs).
        head: an optional calibrated decision model; ``None`` uses the rules only.
        precedents: decided past requests (``scopeguard history``): the nearest one at or
            above ``rules.precedent`` is shown in the verdict.
    """

    #: Requests an audit embeds, or classifies, at a time when its vectors are cached:
    #: their cleaned texts and chunk vectors go once the batch is done.
    batch = 4096

    def __init__(self, positioning: Positioning, embedder: Embedder,
                 head: Head | None = None, rules: Rules | None = None,
                 precedents: Sequence[Any] = ()) -> None:
        self.positioning = positioning
        self.embedder = embedder
        self.rules = rules or Rules.from_thresholds(positioning.thresholds, positioning.source)
        self.head = head
        anchors = anchors_of(positioning)
        self.index = ProductIndex.build(anchors, embedder.encode([a.text for a in anchors]))
        self.precedents = list(precedents)
        self._precedent_vectors: np.ndarray | None = None

    def precedent_for(self, request: Request, mean: np.ndarray) -> Precedent | None:
        """The decided past request nearest to ``request`` (its mean vector), if close."""
        if not self.precedents:
            return None
        if self._precedent_vectors is None:  # embedded on first use (cached on disk)
            _, vecs = self.embed([d.request for d in self.precedents])
            self._precedent_vectors = np.vstack([v.mean for v in vecs]).astype(np.float32)
        scores = self._precedent_vectors @ mean
        for k in np.argsort(-scores):
            d = self.precedents[int(k)]
            if scores[k] < self.rules.precedent:
                return None
            if d.request.id == request.id or (d.request.url and d.request.url == request.url):
                continue  # the request itself, decided before and reopened
            return Precedent(d.request.id, d.request.title, d.decision, d.reason,
                             d.decided_at, d.request.url, round(float(scores[k]), 4))
        return None

    # --- embedding -------------------------------------------------------------------------

    def prepare(self, requests: Sequence[Request]) -> list[Request]:
        """Checked requests with their customer resolved by the positioning file's rule."""
        return [replace(check_request(r), customer=resolve_customer(r, self.positioning.customer))
                for r in requests]

    def embed(self, requests: Sequence[Request], progress: Progress | None = None
              ) -> tuple[list[Document], list[RequestVectors]]:
        """Clean, chunk and embed ``requests`` in one batch."""
        docs = [prepare(r.title, r.body) for r in requests]
        texts = [c for d in docs for c in d.chunks]
        matrix = self.embedder.encode(texts, progress=progress)
        out, at = [], 0
        for d in docs:
            out.append(RequestVectors(matrix[at:at + len(d.chunks)]))
            at += len(d.chunks)
        return docs, out

    # --- classifying -----------------------------------------------------------------------

    def classify(self, request: Request, backlog: Sequence[Request] = ()) -> Verdict:
        """Classify one request; ``backlog`` (other requests) supplies demand."""
        [request] = self.prepare([request])
        others = [r for r in self.prepare(backlog) if r.id != request.id]
        docs, vecs = self.embed([request, *others])
        means = np.vstack([v.mean for v in vecs])
        scores = means[1:] @ means[0] if others else np.zeros(0)
        neighbours = [(r, float(s)) for r, s in zip(others, scores, strict=True)
                      if s >= self.rules.similar]
        verdict = classify(request, docs[0], vecs[0], self.index, neighbours, self.rules,
                           self.head)
        return with_precedent(verdict, self.precedent_for(request, vecs[0].mean))

    def classify_all(self, requests: Sequence[Request], progress: Progress | None = None,
                     on_verdict: Callable[[Verdict], None] | None = None) -> list[Verdict]:
        """Classify every request against all the others."""
        return self.analyse(requests, progress, on_verdict).verdicts

    def analyse(self, requests: Sequence[Request], progress: Progress | None = None,
                on_verdict: Callable[[Verdict], None] | None = None,
                memo: AnalysisMemo | None = None) -> Analysis:
        """Embed a whole backlog once, find each request's neighbours, classify them all.

        ``memo``: neighbour lists and verdicts of earlier runs (:mod:`.memo`); only what
        changed since is recomputed."""
        requests = self.prepare(requests)
        if not requests:
            return Analysis([], np.zeros((0, 0), np.float32), [], [])
        keys = [request_key(r) for r in requests]
        if memo is None or len(set(keys)) != len(keys):  # no memo (or a repeated request)
            docs, vecs = self.embed(requests, progress=progress)
            means = np.vstack([v.mean for v in vecs]).astype(np.float32)
            lists, search = all_neighbours(means, self.rules.similar, tie=tie_order(keys))
            analysis = self._classify_all(requests, docs, vecs, means, lists, on_verdict)
            analysis.search = search
            return analysis
        # The memo: mean vectors of requests seen before (no cleaning, no cache lookup),
        # their neighbour lists and verdicts; what is missing is computed.
        model = f"{self.embedder.model_id}@{code_version('backlog', 'clean')}"  # cleaned
        stored = memo.means(model, keys)
        todo = [i for i, k in enumerate(keys) if k not in stored]
        # With the embedding cache, a batch's cleaned texts and chunk vectors are dropped
        # once its means are kept, and read back from the cache a batch at a time to
        # classify: memory holds one mean vector a request, not every chunk's.
        streamed = getattr(self.embedder, "cache", None) is not None
        docs: dict[int, Document] = {}
        vecs: dict[int, RequestVectors] = {}
        means = np.zeros((len(keys), 0), np.float32)
        for n, part in enumerate(_batches(todo, self.batch if streamed else len(todo))):
            self._embed_into(requests, part, docs, vecs, progress)
            if n == 0:  # the model's width is known now
                means = np.zeros((len(keys), len(vecs[part[0]].mean)), np.float32)
            for i in part:
                means[i] = vecs[i].mean
            if streamed:
                docs.clear()
                vecs.clear()
        if stored:
            if not todo:
                means = np.zeros((len(keys), len(next(iter(stored.values())))), np.float32)
            for i, k in enumerate(keys):
                if k in stored:
                    means[i] = stored[k]
        del stored
        if progress and len(keys) > len(todo):
            progress(len(keys) - len(todo))
        memo.save_means(model, {keys[i]: means[i] for i in todo})
        neighbour_lists, search = self._memo_neighbours(memo, keys, means)
        context = self.verdict_context()
        verdict_keys = [digest(context, keys[i], [(keys[j], round(s, 6)) for j, s in pairs])
                        for i, pairs in enumerate(neighbour_lists)]
        if streamed:  # verdicts go to the memo as they are made, and are read back in order
            sound = memo.sound_verdicts(verdict_keys)
            missing = [i for i, k in enumerate(verdict_keys) if k not in sound]
            del sound
            for part in _batches(missing, self.batch):
                self._embed_into(requests, part, docs, vecs, None)
                memo.save_verdicts({verdict_keys[i]: self._verdict(
                    requests, i, docs[i], vecs[i], neighbour_lists) for i in part},
                    prune=False)
                docs.clear()
                vecs.clear()
            memo.prune_verdicts()
            kept = StoredVerdicts(memo, verdict_keys, self.batch)
            if on_verdict:
                for verdict in kept:
                    on_verdict(verdict)
            analysis = Analysis(list(requests), means, neighbour_lists, kept, search)
        else:
            known = memo.verdicts(verdict_keys)
            verdicts: list[Verdict | None] = [known.get(k) for k in verdict_keys]
            del known
            missing = [i for i, v in enumerate(verdicts) if v is None]
            self._embed_into(requests, [i for i in missing if i not in docs], docs, vecs, None)
            analysis = self._classify_all(requests, docs, vecs, means, neighbour_lists,
                                          on_verdict, verdicts)
            analysis.search = search
            memo.save_verdicts({verdict_keys[i]: analysis.verdicts[i] for i in missing})
        memo.reused_verdicts += len(requests) - len(missing)
        memo.computed_verdicts += len(missing)
        return analysis

    def _embed_into(self, requests: Sequence[Request], rows: Sequence[int],
                    docs: dict[int, Document], vecs: dict[int, RequestVectors],
                    progress: Progress | None) -> None:
        if rows:
            found_docs, found_vecs = self.embed([requests[i] for i in rows], progress=progress)
            docs.update(zip(rows, found_docs, strict=True))
            vecs.update(zip(rows, found_vecs, strict=True))

    def _classify_all(self, requests: Sequence[Request], docs: Any, vecs: Any,
                      means: np.ndarray, neighbour_lists: Sequence[list[tuple[int, float]]],
                      on_verdict: Callable[[Verdict], None] | None,
                      known: Sequence[Verdict | None] | None = None) -> Analysis:
        """Verdicts for every request (``known[i]`` where given; the audit's memo path
        gives them all, computed a batch at a time); ``docs`` and ``vecs`` are indexed by
        request position (a list, or a dict of the ones needed)."""
        verdicts = []
        for i in range(len(requests)):
            verdict = known[i] if known else None
            if verdict is None:
                verdict = self._verdict(requests, i, docs[i], vecs[i], neighbour_lists)
            verdicts.append(verdict)
            if on_verdict:
                on_verdict(verdict)
        return Analysis(list(requests), means, neighbour_lists, verdicts)

    def _verdict(self, requests: Sequence[Request], i: int, doc: Document,
                 vectors: RequestVectors,
                 neighbour_lists: Sequence[list[tuple[int, float]]]) -> Verdict:
        """Request ``i``'s verdict against its neighbours (positions into ``requests``)."""
        pairs = [(requests[j], s) for j, s in neighbour_lists[i]]
        verdict = classify(requests[i], doc, vectors, self.index, pairs, self.rules, self.head)
        return with_precedent(verdict, self.precedent_for(requests[i], vectors.mean))

    def report_key(self, requests: Sequence[Request], *extra: Any) -> str:
        """What an audit report of ``requests`` depends on: every request, in order, and
        everything a verdict or a neighbour list depends on (``extra``: the format...)."""
        prepared = self.prepare(requests)  # the customer as resolved (it may come from extra)
        return digest("report", self.verdict_context(), self.embedder.model_id,
                      use_hnsw(len(prepared)), [request_key(r) for r in prepared], extra)

    def verdict_context(self) -> str:
        """What a verdict depends on beside the request and its neighbours: the positioning
        file's content, not the path it was named by (``./x.yml`` and ``x.yml`` are one)."""
        return digest(code_version(), replace(self.positioning, source=""),
                      self.embedder.model_id, self.rules,
                      self.head, [(d.request.id, d.request.title, d.request.body,
                                   d.request.url, d.decision, d.reason, d.decided_at)
                                  for d in self.precedents])

    def _memo_neighbours(self, memo: AnalysisMemo, keys: list[str], means: np.ndarray,
                         limit: int = 50) -> tuple[Sequence[list[tuple[int, float]]], str]:
        """Neighbour lists from the memo, with only the changed rows' similarities computed
        (and which search found them: changed rows are always searched exactly)."""
        indexed = use_hnsw(len(keys))  # lists kept from an indexed run say so
        tie = tie_order(keys)
        # "ties by key": lists kept when ties went by file position are chosen again
        context = digest("neighbours", code_version(), self.embedder.model_id,
                         self.rules.similar, limit, indexed, "ties by key")
        before = memo.members(context)
        cached = memo.neighbour_lists(context, keys) if before else {}
        at = {k: i for i, k in enumerate(keys)}
        lists: list[list[tuple[int, float]] | None] = [None] * len(keys)
        dirty: set[int] = set()  # rows whose stored list must be written again
        for i, key in enumerate(keys):
            old = cached.get(key) if before and key in before else None
            if old is None:
                continue
            kept = [(at[k], s) for k, s in old if k in at]
            if len(kept) < len(old):
                if len(old) >= limit:
                    continue  # a full list lost a member: its next best was never stored
                dirty.add(i)
            lists[i] = kept
        stale = [i for i, found in enumerate(lists) if found is None]
        memo.reused_lists += len(keys) - len(stale)
        memo.computed_rows += len(stale)
        search = HNSW_NOTE if indexed else EXACT_NOTE
        if len(stale) * 3 > len(keys):
            full, search = all_neighbours(means, self.rules.similar, limit=limit, tie=tie)
            dirty = set(range(len(keys)))
        else:
            full = [[] for _ in keys]
            new = {i for i in stale if keys[i] not in (before or ())}
            # every hit of a changed row, untruncated: a request far down the new row's own
            # list may still belong in the (shorter) list of the request it hit
            rows = rows_above(means, stale, self.rules.similar, limit=None,
                              tie=tie) if stale else []
            for i, hits in zip(stale, rows, strict=True):
                full[i] = hits[:limit]
                dirty.add(i)
                if i in new:
                    for j, s in hits:  # a new request joins the lists of those close to it
                        if lists[j] is not None:
                            lists[j].append((i, s))
                            dirty.add(j)
            for i in range(len(keys)):
                found = lists[i]
                if found is not None:  # the order a fresh run gives (knn.ordered)
                    full[i] = sorted(found, key=lambda p: (-rank(p[1]), tie[p[0]],
                                                           p[0]))[:limit]
            del lists
            full = NeighbourLists.of(full)
        # one list at a time: the rows of a whole backlog at once were a third of the peak
        memo.save_neighbours(context, ((keys[i], [(keys[j], s) for j, s in full[i]])
                                       for i in sorted(dirty)), keys, before)
        return full, search


@dataclass
class Analysis:
    """A classified backlog: requests, their vectors, neighbours and verdicts, aligned."""

    requests: list[Request]
    vectors: np.ndarray
    neighbours: Sequence[list[tuple[int, float]]]  # knn.NeighbourLists: compact
    verdicts: Sequence[Verdict]  # a list, or the memo's StoredVerdicts (read back in order)
    search: str = EXACT_NOTE  # how the neighbours were found (scopeguard/knn.py)


_KEY_FIELDS = [f.name for f in fields(Request) if f.name != "extra"]


def _batches(rows: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    """``rows`` in consecutive slices of ``size`` (none for no rows)."""
    for start in range(0, len(rows), max(size, 1)):
        yield rows[start:start + max(size, 1)]


@functools.cache
def code_version(*modules: str) -> str:
    """The package's version and a hash of its code (every module, or ``modules``): what
    the memo keeps is keyed by it, so an upgrade, or a local change, that alters how a
    verdict, a list or a report is made never reuses what an older build stored under the
    same version number. (Mean vectors: only the modules that clean and read requests;
    the embedding cache is keyed by the model and the cleaned text instead.)"""
    from . import __version__

    digest_ = hashlib.sha256(__version__.encode())
    here = Path(__file__).resolve().parent
    paths = ([here / f"{m}.py" for m in modules] if modules else sorted(here.glob("*.py")))
    for path in paths:
        digest_.update(path.name.encode() + b"\0")
        digest_.update(path.read_bytes() if path.is_file() else b"")
    return digest_.hexdigest()[:16]


def request_key(request: Request) -> str:
    """A hash of everything a request says (what its verdict and its neighbours' read)."""
    return digest("request", [getattr(request, name) for name in _KEY_FIELDS])


def all_neighbours(vectors: np.ndarray, threshold: float, limit: int = 50,
                   tie: np.ndarray | None = None
                   ) -> tuple[Sequence[list[tuple[int, float]]], str]:
    """Every row's neighbour list, and how it was found: exact, or an HNSW index for
    large backlogs when faiss is installed (:mod:`.knn`)."""
    if use_hnsw(len(vectors)):
        return hnsw_neighbours(vectors, threshold, limit, tie=tie), HNSW_NOTE
    return neighbours_above(vectors, threshold, limit=limit, tie=tie), EXACT_NOTE


def rows_above(vectors: np.ndarray, rows: Sequence[int], threshold: float, block: int = 512,
               limit: int | None = 50, tie: np.ndarray | None = None) -> NeighbourLists:
    """For each of ``rows``, the other rows with cosine >= ``threshold``, best first (ties
    by ``tie``, then position: :func:`.knn.ordered`), at most ``limit`` (``None``: every
    hit).

    Blocked matrix products keep memory at ``block x n`` floats instead of ``n x n``:
    for 100k requests a block of 512 rows is 200 MB, where the full matrix would be 40 GB.
    Time stays quadratic (exact search); :mod:`.knn` says when an index takes over.
    """
    out = NeighbourLists()
    for start in range(0, len(rows), block):
        chunk = list(rows[start:start + block])
        # every row: a slice, as full runs have always computed it (the same float bits,
        # so kept and fresh scores of one pair agree); some rows: a gathered copy
        block_vectors = vectors[start:start + block] if isinstance(rows, range) \
            and rows.step == 1 and rows.start == 0 else vectors[chunk]
        sims = block_vectors @ vectors.T
        for r, i in enumerate(chunk):
            sims[r, i] = -1.0
            hits = np.flatnonzero(sims[r] >= threshold)
            found, scores = ordered(hits, sims[r, hits], tie)
            out.append(found[:limit], scores[:limit])  # limit None: every hit
    return out


def neighbours_above(vectors: np.ndarray, threshold: float, block: int = 512,
                     limit: int = 50, tie: np.ndarray | None = None) -> NeighbourLists:
    """Every row's neighbour list (:func:`rows_above` over all rows)."""
    return rows_above(vectors, range(len(vectors)), threshold, block, limit, tie)

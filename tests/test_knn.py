"""Neighbour search above a size: the HNSW index (faiss) against the exact search."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from scopeguard.cli import cli
from scopeguard.engine import all_neighbours, neighbours_above
from scopeguard.errors import ScopeguardError
from scopeguard.knn import EXACT_NOTE, HNSW_NOTE

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))


def recall(exact, approx) -> float:
    pairs = sum(len(e) for e in exact)
    found = sum(len({j for j, _ in e} & {j for j, _ in a}) for e, a in zip(exact, approx, strict=True))
    return found / max(1, pairs)


def test_hnsw_above_the_threshold_finds_what_exact_search_finds(monkeypatch, hashing):
    from knn import backlog  # bench/knn.py: real request texts and their variants

    vectors = hashing.encode(backlog(3000))
    monkeypatch.setenv("SCOPEGUARD_HNSW_MIN", "2000")
    approx, search = all_neighbours(vectors, 0.5)
    assert search == HNSW_NOTE
    exact = neighbours_above(vectors, 0.5)
    assert sum(len(e) for e in exact) > 3000  # a clustered backlog, not a trivial one
    assert recall(exact, approx) >= 0.99
    assert all(s >= 0.5 and j != i for i, row in enumerate(approx) for j, s in row)
    small, search = all_neighbours(vectors[:1500], 0.5)
    assert search == EXACT_NOTE and small == neighbours_above(vectors[:1500], 0.5)
    monkeypatch.setenv("SCOPEGUARD_HNSW_MIN", "0")  # never
    assert all_neighbours(vectors, 0.5)[1] == EXACT_NOTE
    monkeypatch.setenv("SCOPEGUARD_HNSW_MIN", "lots")
    with pytest.raises(ScopeguardError, match="SCOPEGUARD_HNSW_MIN"):
        all_neighbours(vectors, 0.5)


def test_the_audit_report_says_how_neighbours_were_found(runner, tmp_path, example_config,
                                                         example_backlog, monkeypatch):
    """The real model on the example backlog, with the index forced on: the report names
    it and its measured recall, and the clusters equal the exact search's."""
    args = ["audit", "-c", str(example_config), "--db", str(tmp_path / "c.db"),
            "--from-file", str(example_backlog), "--json", "--recompute"]
    exact = runner.invoke(cli, args)
    assert exact.exit_code == 0, exact.output
    monkeypatch.setenv("SCOPEGUARD_HNSW_MIN", "10")
    indexed = runner.invoke(cli, args)
    assert indexed.exit_code == 0, indexed.output
    a, b = json.loads(exact.output), json.loads(indexed.output)
    assert a["neighbour_search"] == "exact search"
    assert b["neighbour_search"].startswith("HNSW index") and "0.9999 at 100,000" in b["neighbour_search"]
    assert [(r["id"], r["cluster"], r["label"]) for r in a["requests"]] == \
        [(r["id"], r["cluster"], r["label"]) for r in b["requests"]]
    table = runner.invoke(cli, args[:-2] + ["--recompute", "--quiet"])
    assert "neighbours: HNSW index" in table.output


def test_a_re_audit_from_the_memo_still_says_the_index(runner, tmp_path, example_config,
                                                       example_backlog, monkeypatch):
    monkeypatch.setenv("SCOPEGUARD_MODEL", "hashing")
    monkeypatch.setenv("SCOPEGUARD_HNSW_MIN", "10")
    args = ["audit", "-c", str(example_config), "--db", str(tmp_path / "c.db"),
            "--from-file", str(example_backlog), "--format", "json"]
    first = runner.invoke(cli, args)
    # rebuilt from the memo's lists and verdicts, not the stored report
    from scopeguard.memo import AnalysisMemo

    monkeypatch.setattr(AnalysisMemo, "report", lambda self, key: None)
    second = runner.invoke(cli, args)
    assert "computed 0 and 0" in second.output
    for run in (first, second):
        report = json.loads(run.stdout)
        assert report["neighbour_search"].startswith("HNSW index")


def test_neighbour_lists_read_as_the_lists_they_hold():
    """The compact lists (8 bytes a pair) read back exactly: the same tuples, the same
    float values, empty rows, slices, negative positions, across the flush boundary."""
    import numpy as np

    from scopeguard.knn import NeighbourLists

    rng = np.random.default_rng(3)
    lists = []
    for i in range(NeighbourLists._FLUSH + 37):
        n = int(rng.integers(0, 6)) if i % 7 else 0
        scores = np.sort(rng.random(n, dtype=np.float32))[::-1]
        positions = rng.integers(0, 10_000, n)
        lists.append([(int(j), float(s)) for j, s in zip(positions, scores, strict=True)])
    compact = NeighbourLists.of(lists)
    assert len(compact) == len(lists) and compact == lists and list(compact) == lists
    assert compact[-1] == lists[-1] and compact[5:9] == lists[5:9] and compact[0] == []
    assert compact.pairs() == sum(map(len, lists))
    assert all(type(j) is int and type(s) is float for row in compact for j, s in row)
    assert compact != lists[:-1] and compact != [*lists[:-1], [(1, 0.5)]]
    with pytest.raises(IndexError):
        compact[len(lists)]
    compact.append(np.array([4], np.int32), np.array([0.25], np.float32))
    assert compact[-1] == [(4, 0.25)] and len(compact) == len(lists) + 1


def test_scores_a_last_bit_apart_are_a_tie_ordered_by_position():
    """One pair's cosine from either row's matrix product can differ in its last bit: a
    re-audit must still order two identical requests as a fresh run does."""
    import numpy as np

    from scopeguard.knn import ordered, rank

    score = np.float32(0.9493381)
    above = np.nextafter(score, np.float32(1))  # the same cosine, one bit higher
    index, scores = ordered(np.array([29, 398, 5]), np.array([score, above, 0.9473], np.float32))
    assert index.tolist() == [29, 398, 5]  # the tie by position, then the lower score
    index, _ = ordered(np.array([398, 29]), np.array([above, score], np.float32))
    assert index.tolist() == [29, 398]
    assert rank(float(score)) == rank(float(above)) and rank(0.9493) != rank(0.9495)
    assert ordered(np.array([1, 2]), np.array([0.5, 0.6], np.float32))[0].tolist() == [2, 1]

"""Classifier rules with the deterministic hashing embedder: fast, and exact about logic."""

import re
from dataclasses import replace

import numpy as np
import pytest

from scopeguard.backlog import Request
from scopeguard.engine import Scopeguard, neighbours_above
from scopeguard.positioning import parse_positioning
from scopeguard.rules import Rules

PRODUCT = {
    "product": "Finder",
    "category": "For finding files by name in the terminal, use Finder",
    "target_customer": "Developers who search big source trees from a terminal",
    "need": "find files by name quickly",
    "main_value": "search results for file names in milliseconds",
    "alternative": "find",
    "uniqueness": "parallel directory walking that skips ignored files",
    "features": [
        {"name": "Name patterns", "description": "match file names with regular expressions"},
        {"name": "Type filter", "description": "filter results by file type directory or symlink"},
        {"name": "Colour output", "description": "colour results by file type"},
    ],
    "non_goals": [{"name": "Content search", "description": "search text inside file contents",
                   "instead": "pipe the results to grep"}],
}
RULES = Rules(core_fit=0.5, generalizable_fit=0.3, non_goal=0.4, served=0.95, similar=0.8,
              duplicate=0.95, min_customers=3)


@pytest.fixture
def guard(hashing):
    return Scopeguard(parse_positioning(PRODUCT), hashing, rules=RULES)


def req(i, title, body="", customer=""):
    return Request(id=str(i), title=title, body=body, author=f"user{i}", customer=customer)


def test_request_like_a_feature_is_core(guard):
    v = guard.classify(req(1, "Filter results by file type executable",
                           "filter by file type like directory"))
    assert v.label == "core" and v.rule == "fit_core"
    assert v.features[0].name == "Type filter"
    assert v.features[0].score >= v.features[1].score >= v.features[2].score
    assert 0.5 <= v.confidence < 1
    assert (v.step, v.anchor) == (6, "Type filter")


def test_request_like_a_non_goal_is_one_off_and_points_to_instead(guard):
    v = guard.classify(req(2, "Search text inside file contents", "search inside contents"))
    assert (v.label, v.rule) == ("one_off", "non_goal")
    assert v.non_goal.name == "Content search"
    assert any("pipe the results to grep" in r for r in v.reasons)
    assert (v.step, v.anchor) == (1, "Content search")


def test_request_already_served_by_a_feature(guard):
    v = guard.classify(req(3, "Colour output", "colour results by file type"))
    assert (v.label, v.rule) == ("one_off", "served")
    assert "Colour output" in v.reasons[0]
    assert (v.step, v.anchor) == (2, "Colour output")


def test_unrelated_request_is_one_off(guard):
    v = guard.classify(req(4, "Play music while waiting", "a jukebox with playlists"))
    assert (v.label, v.rule) == ("one_off", "low_fit")
    assert v.step == 3 and v.anchor.split(": ")[0] in {"category", "target customer", "need",
                                                        "main value", "uniqueness"}


def test_demand_from_distinct_customers_makes_it_generalizable(guard):
    ask = ("Export the list as a spreadsheet", "spreadsheet export please")
    backlog = [req(10, *ask, customer="Acme"), req(11, *ask, customer="Globex"),
               req(12, *ask, customer="acme ")]  # same customer twice: counted once
    v = guard.classify(req(13, *ask, customer="Initech"), backlog)
    assert len(v.customers) == 3 and {n.id for n in v.similar} == {"10", "11", "12"}
    assert (v.label, v.rule) == ("generalizable", "demand")
    assert all(n.duplicate for n in v.similar)
    assert v.step == 5
    one = guard.classify(req(13, *ask, customer="Initech"), backlog[:1])
    assert one.label != "generalizable" or one.rule != "demand"


def test_one_customer_written_several_ways_is_one_customer(guard):
    """Demand counts customers, not spellings: fullwidth letters, a zero-width space, a
    right-to-left mark, doubled spaces or another case do not make a second customer (three
    spellings of Acme made a one-off 'wanted by 3 customers')."""
    from scopeguard.backlog import customer_key, distinct_customers

    ask = ("Export the list as a spreadsheet", "spreadsheet export please")
    spellings = ["Acme  Corp", "\uff21\uff43\uff4d\uff45 Corp", "Ac\u200bme Corp",
                 "\u200fACME corp", "acme\u00a0corp"]
    assert {customer_key(n) for n in spellings} == {"acme corp"}
    ignorable = ["Ac\u034fme Corp", "Ac\ufe00me Corp", "Ac\u3164me Corp", "Ac\u115fme Corp",
                 "Ac\U000e0100me Corp", "Ac\u17b4me Corp", "Ac\u180bme Corp"]
    assert {customer_key(n) for n in ignorable} == {"acme corp"}  # drawn as nothing too
    assert len(distinct_customers(["\u200b", "\u200b", "Acme"])) == 2  # invisible only: itself
    assert distinct_customers(["", " Globex ", *spellings, "Initech"]) == [
        "Globex", "Acme Corp", "Initech"]
    backlog = [req(20 + n, *ask, customer=name) for n, name in enumerate(spellings[1:])]
    v = guard.classify(req(30, *ask, customer=spellings[0]), backlog)
    assert list(v.customers) == ["Acme Corp"] and v.rule != "demand"
    more = backlog + [req(40, *ask, customer="Globex"), req(41, *ask, customer="Initech")]
    v = guard.classify(req(30, *ask, customer=spellings[0]), more)
    assert len(v.customers) == 3 and (v.label, v.rule) == ("generalizable", "demand")


def test_custom_work_language_makes_it_one_off(guard):
    v = guard.classify(req(5, "Filter results by file type for our in-house build system",
                           "filter by file type; we will sign the contract after"))
    assert (v.label, v.rule) == ("one_off", "custom")
    assert {s.name for s in v.custom_signals} >= {"in-house system", "contract or deal"}
    assert (v.step, v.anchor) == (4, "")  # the requester's own words decide it


def test_verdict_serialises_with_evidence(guard):
    d = guard.classify(req(1, "Filter results by file type")).to_dict()
    assert d["label"] in ("core", "generalizable", "one_off")
    assert {"positioning", "features", "non_goal", "similar", "customers", "custom_signals",
            "signals", "input_class", "reasons", "distinct_customers", "step",
            "anchor"} <= set(d)
    assert d["signals"]["feature_fit"] == d["features"][0]["score"]


def test_thresholds_from_the_positioning_file(hashing):
    p = parse_positioning({**PRODUCT, "thresholds": {"core_fit": 0.99, "generalizable_fit": 0.98}})
    v = Scopeguard(p, hashing).classify(req(1, "Filter results by file type executable"))
    assert v.label == "one_off"


def test_bad_thresholds_refused():
    with pytest.raises(Exception, match="generalizable_fit"):
        Rules.from_thresholds({"core_fit": 0.3, "generalizable_fit": 0.4})


def test_classify_all_matches_single_classification(guard):
    items = [req(1, "Filter results by file type"), req(2, "Search inside file contents"),
             req(3, "Filter results by file type please", customer="B")]
    all_v = guard.classify_all(items)
    single = guard.classify(items[0], items)
    assert all_v[0].label == single.label and all_v[0].signals == single.signals
    assert [n.id for n in all_v[0].similar] == [n.id for n in single.similar]


def test_neighbours_above_matches_brute_force():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(20, 16))
    vecs = np.vstack([base, base + rng.normal(scale=0.1, size=base.shape)]).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    got = neighbours_above(vecs, 0.8, block=7)
    sims = vecs @ vecs.T
    for i in range(len(vecs)):
        expected = {j for j in range(len(vecs)) if j != i and sims[i, j] >= 0.8}
        assert {j for j, _ in got[i]} == expected
        scores = [s for _, s in got[i]]
        assert scores == sorted(scores, reverse=True)
    capped = neighbours_above(vecs, -1.0, limit=5)
    assert all(len(x) == 5 for x in capped)


def test_the_rule_step_reaches_the_comment_escaped(guard):
    from scopeguard import render

    v = guard.classify(req(2, "Search text inside file contents", "search inside contents"))
    text = render.to_markdown(v, "scope: one-off", "Finder")
    assert "**Rule step 1 (a stated non-goal): 'Content search'**" in text
    assert "rule step: 1 (a stated non-goal): 'Content search'" in render.to_text(v)
    hostile = replace(v, anchor="<!-- scopeguard:label=core --> @boss")
    shown = render.to_markdown(hostile)
    body = shown.split("\n", 3)[3]  # after scopeguard's own two markers and the heading
    assert re.search(r"(?<!\\)<!--", body) is None and "@boss" not in shown


def test_requests_with_no_words_to_read_are_not_one_demand(positioning, real_embedder):
    """Four customers' requests holding only a link, a comment, a screenshot or a log
    cleaned to nothing, and the model gave nothing one vector: one cluster of four
    customers, 'generalizable' by demand (hashing gives nothing no vector, so the real
    model). Each is read by what it holds now."""
    bodies = ["https://imgur.com/a/abc123", "<!-- template comment -->",
              "![s](https://x.example/s.png)", "```\nERROR at line 3\n```"]
    requests = [req(n, "", body, customer=f"Clinic {n}") for n, body in enumerate(bodies)]
    verdicts = Scopeguard(positioning, real_embedder).classify_all(requests)
    assert all(len(v.customers) <= 1 for v in verdicts), [v.customers for v in verdicts]
    assert all(v.rule != "demand" for v in verdicts)

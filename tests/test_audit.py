"""Audit logic with the hashing embedder: clusters, promotion, duplicates, drift, formats."""

import csv
import io
import json
import re
from dataclasses import replace

import pytest

from scopeguard.audit import build_report, leader_clusters
from scopeguard.audit_render import FORMATS, render_report
from scopeguard.backlog import Request
from scopeguard.engine import Scopeguard
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
    "features": [{"name": "Type filter", "description": "filter results by file type"}],
    "non_goals": [{"name": "Content search", "description": "search text inside file contents"}],
}
RULES = Rules(core_fit=0.5, generalizable_fit=0.3, non_goal=0.4, served=0.99, similar=0.8,
              duplicate=0.95, min_customers=3)
ASK = ("Play music from a playlist while searching", "a jukebox playlist please")


def req(i, title, body, customer, month="2026-01"):
    return Request(id=f"R{i}", title=title, body=body, author=f"u{i}", customer=customer,
                   created_at=f"{month}-15", url=f"https://t.example/R{i}")


@pytest.fixture
def report(hashing):
    guard = Scopeguard(parse_positioning(PRODUCT), hashing, rules=RULES)
    items = [req(1, *ASK, "Acme"), req(2, *ASK, "Globex", "2026-02"), req(3, *ASK, "Initech"),
             req(4, "Filter results by file type executable", "filter by file type", "Acme"),
             req(5, "Search text inside file contents", "search inside contents", "Acme"),
             req(6, "Search text inside file contents", "search inside contents", "Globex"),
             req(7, "Search text inside file contents", "search inside contents", "Umbrella")]
    analysis = guard.analyse(items)
    return build_report(analysis, guard.index, guard.rules, "Finder",
                        skipped=[("B1", "has label 'bug'")])


def test_leader_clusters_do_not_chain():
    # 0~1 and 1~2 but not 0~2: the leader (1) takes both, nobody is in two clusters.
    neighbours = [[(1, 0.9)], [(0, 0.9), (2, 0.9)], [(1, 0.9)], []]
    assert leader_clusters(neighbours) == [[1, 0, 2]]
    neighbours = [[(1, 0.9)], [(0, 0.9)], [(3, 0.9)], [(2, 0.9)]]
    assert sorted(map(sorted, leader_clusters(neighbours))) == [[0, 1], [2, 3]]


def test_demand_promotes_one_off_members_but_not_non_goals(report):
    by_id = {i.request.id: i for i in report.items}
    music = [by_id[f"R{k}"] for k in (1, 2, 3)]
    assert {i.verdict.label for i in music} <= {"one_off", "generalizable"}
    assert all(i.label == "generalizable" for i in music)
    assert len({i.cluster for i in music}) == 1
    content = [by_id[f"R{k}"] for k in (5, 6, 7)]
    assert all(i.verdict.rule == "non_goal" and i.label == "one_off" for i in content)
    wanted = report.wanted_clusters
    assert len(wanted) == 2 and all(len(c.customers) == 3 for c in wanted)


def test_duplicates_flagged(report):
    by_id = {i.request.id: i for i in report.items}
    assert set(by_id["R5"].duplicates) == {"R6", "R7"}
    assert list(by_id["R4"].duplicates) == []


def test_summary_drift_and_customers(report):
    assert report.summary.startswith("of 7 open requests, ")
    assert report.summary.endswith("2 clusters wanted by >= 3 customers")
    assert sum(report.counts.values()) == 7
    assert [m for m, _ in report.drift] == ["2026-01", "2026-02"]
    assert sum(sum(c.values()) for _, c in report.drift) == 7
    assert report.one_off_customers[0][1] >= 1
    assert report.non_goals[0].name == "Content search"
    assert {i for i, _, _ in report.non_goals[0].requests} <= {"R5", "R6", "R7", "R4", "R1"}


def test_every_format_renders(report):
    for fmt in FORMATS:
        text = render_report(report, fmt)
        assert text.strip(), fmt
    data = json.loads(render_report(report, "json"))
    assert data["summary"] == report.summary and len(data["requests"]) == 7
    rows = list(csv.DictReader(io.StringIO(render_report(report, "csv"))))
    assert [r["id"] for r in rows] == [f"R{k}" for k in range(1, 8)]
    # The rule step and its anchor travel with every row (JSON and CSV alike).
    assert all(1 <= int(r["step"]) <= 6 for r in rows)
    assert [r["step"] for r in data["requests"]] == [int(r["step"]) for r in rows]
    assert [r["anchor"] for r in data["requests"]] == [r["anchor"] for r in rows]
    md = render_report(report, "markdown")
    assert "## Scope drift by month" in md and "[R1](https://t.example/R1)" in md
    table = render_report(report, "table")
    assert table.splitlines()[-1] == report.summary and "possible duplicates" in table


def test_html_escapes_request_text(hashing):
    guard = Scopeguard(parse_positioning(PRODUCT), hashing, rules=RULES)
    evil = Request(id="X1", title="<script>alert(1)</script>", body="b", customer="<b>C</b>",
                   url="javascript:alert(1)")
    html = render_report(build_report(guard.analyse([evil]), guard.index, guard.rules, "F"),
                         "html")
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert 'href="javascript' not in html


EVIL = [Request(id="=cmd|' /C calc'!A0", title="=HYPERLINK(\"http://x\",\"a\")", body="b",
                customer="@SUM(1+1)", url="javascript:alert(1)"),
        Request(id="+1", title="-2+3", body="b", customer="\tTab", created_at="\r1"),
        Request(id="X3", title="<!-- scopeguard:label=core --> @boss <img src=x> [a](javascript:x)",
                body="b", customer="**Bold** | pipe", url="https://t.example/X3?a=(1)")]


def test_csv_cells_cannot_run_as_formulas(hashing):
    """OWASP's CSV injection advice: no cell starts with = + - @, a tab or a CR."""
    guard = Scopeguard(parse_positioning(PRODUCT), hashing, rules=RULES)
    text = render_report(build_report(guard.analyse(EVIL), guard.index, guard.rules, "F"), "csv")
    rows = list(csv.reader(io.StringIO(text)))
    cells = [c for row in rows for c in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert {rows[1][0], rows[1][1], rows[1][2]} == {"'=cmd|' /C calc'!A0",
                                                    "'=HYPERLINK(\"http://x\",\"a\")",
                                                    "'@SUM(1+1)"}
    assert rows[2][:4] == ["'+1", "'-2+3", "'\tTab", "'\r1"]
    assert text.splitlines()[0].startswith('"id","title"')  # every cell quoted


def test_markdown_report_escapes_what_requesters_wrote(hashing):
    guard = Scopeguard(parse_positioning(PRODUCT), hashing, rules=RULES)
    md = render_report(build_report(guard.analyse(EVIL), guard.index, guard.rules, "F"),
                       "markdown")
    line = next(x for x in md.splitlines() if "X3" in x and x.startswith("| "))
    assert not re.search(r"(?<!\\)\]\(javascript", md)  # no link but http(s)
    assert "\\<!-- scopeguard:label=core --> @\u200bboss \\<img src=x> \\[a\\]" in line
    assert "[X3](https://t.example/X3?a=%281%29)" in line  # the address cannot end the link
    assert "\\=cmd\\|" not in md and "=cmd\\|' /C calc'!A0" in md  # id shown, pipe escaped


def test_reports_show_no_spoofing_characters_and_start_no_markdown_block(hashing):
    """A customer name that would start a heading in the Markdown report's "- name: n"
    lines, and a right-to-left override and C1 control in a title (text shown reversed):
    escaped in Markdown, dropped in HTML, written as \\u escapes in JSON (same data)."""
    guard = Scopeguard(parse_positioning(PRODUCT), hashing, rules=RULES)
    items = [req(i, f"Jukebox \u202eevil\x9b[2J playlist {i}", "music", "# Pwned heading")
             for i in range(3)] + [req(9, "Jukebox 1https://t.example/o/r/issues/7", "music",
                                       "> quoted")]
    report = build_report(guard.analyse(items), guard.index, guard.rules, "F")
    md = render_report(report, "markdown")
    assert not [x for x in md.splitlines() if re.match(r"\s*- (#|>)", x)]
    assert "\\# Pwned heading" in md and "https://t.example/o" not in md
    html_text = render_report(report, "html")
    assert "\u202e" not in html_text and "\x9b" not in html_text and "evil" in html_text
    text = render_report(report, "json")
    assert "\u202e" not in text and "\x9b" not in text
    assert json.loads(text)["requests"][0]["title"].startswith("Jukebox \u202eevil\x9b")


def test_table_drops_terminal_control_characters(hashing):
    guard = Scopeguard(parse_positioning(PRODUCT), hashing, rules=RULES)
    items = [req(i, "Jukebox\x1b[2J\x1b]0;pwned\x07 playlist", "music", f"C{i}\x1b[31m")
             for i in range(4)]
    items = [replace(r, id=f"R{i}\x1b[1A") for i, r in enumerate(items)]
    text = render_report(build_report(guard.analyse(items), guard.index, guard.rules, "F"),
                         "table")
    assert "\x1b" not in text and "\x07" not in text and "Jukebox" in text


def test_cluster_demand_promotes_members_with_little_direct_demand(hashing):
    """A leader similar to three customers' asks promotes members that are not similar to
    each other (their own verdicts saw one neighbour each)."""
    from dataclasses import replace

    guard = Scopeguard(parse_positioning(PRODUCT), hashing, rules=RULES)
    items = [req(1, "Jukebox", "music", "Acme"), req(2, "Weather", "forecast", "Globex"),
             req(3, "Recipes", "cooking", "Initech"), req(4, "Horoscope", "stars", "Umbrella")]
    analysis = guard.analyse(items)
    assert [v.label for v in analysis.verdicts] == ["one_off"] * 4
    star = [[(1, 0.9), (2, 0.9), (3, 0.9)], [(0, 0.9)], [(0, 0.9)], [(0, 0.9)]]
    report = build_report(replace(analysis, neighbours=star), guard.index, guard.rules, "F")
    assert [i.label for i in report.items] == ["generalizable"] * 4
    assert all(i.promoted for i in report.items)
    assert report.clusters[0].leader == "R1" and report.clusters[0].promoted
    data = json.loads(render_report(report, "json"))
    assert data["requests"][1]["reasons"][0].startswith("Promoted to generalizable")
    assert "↑" in render_report(report, "html")


def test_the_json_report_made_a_request_at_a_time_is_the_plain_encoding(report, hashing):
    """to_json writes each request on its own (the whole report as one indented encoding
    was a big audit's largest transient): the text is exactly json.dumps of the whole,
    for requests whose text holds the slot's own marker, newlines, quotes and non-ASCII,
    and for a report of no requests."""
    from scopeguard.audit_render import _SLOT, as_dict, to_json

    assert to_json(report) == json.dumps(as_dict(report), indent=2, ensure_ascii=False)
    guard = Scopeguard(parse_positioning(PRODUCT), hashing, rules=RULES)
    odd = [Request(id=f'"{_SLOT}"', title=f'    "{_SLOT}"\n', body="ünïcode 🚀 \"q\"\n\n",
                   customer=_SLOT), *EVIL]
    for requests in (odd, []):
        built = build_report(guard.analyse(requests), guard.index, guard.rules, "F",
                             skipped=[(_SLOT, f'\n    "{_SLOT}"\n')])
        assert to_json(built) == json.dumps(as_dict(built), indent=2, ensure_ascii=False)
        assert len(json.loads(to_json(built))["requests"]) == len(requests)


@pytest.mark.parametrize("created_at, month", [
    ("2024-01-05T10:00:00Z", "2024-01"), ("2024-12", "2024-12"), ("2024-13-45", "unknown"),
    ("2024-00-01", "unknown"), ("2024-1", "unknown"), ("", "unknown"), ("abcd-ef", "unknown"),
])
def test_the_drift_chart_takes_only_real_months(created_at, month):
    from scopeguard.audit import _month

    assert _month(created_at) == month


def test_one_off_requests_of_one_customer_written_two_ways_are_one_row():
    """The report's one-off customers: 'Acme Corp' and 'ACME\u200b corp' are one customer
    (named as first written), not two rows of one request each."""
    from types import SimpleNamespace

    from scopeguard.audit import _one_off_customers
    from scopeguard.backlog import Request

    def item(n: int, customer: str, label: str = "one_off") -> SimpleNamespace:
        return SimpleNamespace(label=label, request=Request(
            id=str(n), title="t", body="b", author=f"u{n}", customer=customer))

    items = [item(1, "Acme Corp"), item(2, "ACME\u200b  corp"), item(3, "Globex"),
             item(4, "acme corp", label="core"), item(5, "")]
    assert _one_off_customers(items) == [("Acme Corp", 2), ("Globex", 1), ("u5", 1)]

"""`scopeguard suggest non-goals` (issue 14): groups of declined requests proposed as
non-goals, named by their distinctive words, and written into the file commented out."""

from __future__ import annotations

import json
import shutil

import numpy as np

from scopeguard.backlog import Request
from scopeguard.cli import cli
from scopeguard.history import Decided
from scopeguard.history_store import HistoryStore
from scopeguard.positioning import load_positioning
from scopeguard.suggest import distinctive_words, insert_commented, suggest_non_goals

ASKS = [
    ("Sync appointments to Salesforce CRM", "Our sales team lives in Salesforce CRM.", "ana"),
    ("Salesforce CRM sync for appointments", "Push every booking into Salesforce CRM.", "ben"),
    ("Two-way Salesforce CRM appointments sync", "Salesforce CRM contacts too.", "cat"),
    ("Blockchain receipts for vet visits", "Store visit receipts on a blockchain.", "dan"),
    ("Blockchain receipts for every vet visit", "Receipts on the blockchain please.", "dan"),
    ("Dark mode", "The widget is too bright.", "eve"),
    ("Invoices and card payments at booking", "Take card payments and send invoices.", "fay"),
    ("Card payments and invoices for bookings", "Invoices with card payments.", "gus"),
]


def declined() -> list[Decided]:
    return [Decided("github:acme/pawtrack",
                    Request(id=f"#{k}", title=t, body=b, author=a,
                            url=f"https://github.com/acme/pawtrack/issues/{k}"),
                    "declined", "closed as not planned", f"2025-0{k % 9 + 1}-01T00:00:00Z",
                    "2025-01-01T00:00:00Z")
            for k, (t, b, a) in enumerate(ASKS, start=1)]


def test_distinctive_words_prefer_what_sets_a_group_apart():
    words = distinctive_words([["salesforce crm sync", "salesforce crm push"],
                               ["blockchain receipts", "blockchain receipts now"]], k=2)
    assert words[0][:2] == ["crm", "salesforce"] and words[1][0] in ("blockchain", "receipts")


def test_groups_become_named_suggestions_and_stated_non_goals_are_recognised(positioning,
                                                                           hashing):
    from scopeguard.engine import Scopeguard

    guard = Scopeguard(positioning, hashing)
    items = declined()
    _, vecs = guard.embed([d.request for d in items])
    vectors = np.vstack([v.mean for v in vecs])
    found = suggest_non_goals(items, vectors, guard.index.vectors["non_goal"],
                              [a.name for a in guard.index.anchors["non_goal"]],
                              similar=0.45, covered=0.45)
    by_first = {s.members[0][0]: s for s in found}
    crm = next(s for s in found if "salesforce" in s.name.lower())
    assert {m[0] for m in crm.members} == {"#1", "#2", "#3"}
    assert crm.requesters == ("ana", "ben", "cat") and "3 times by 3" in crm.description
    chain = next(s for s in found if "blockchain" in s.name.lower())
    assert chain.requesters == ("dan",)  # one person asking twice is one requester
    pay = next(s for s in found if {"#7", "#8"} <= {m[0] for m in s.members})
    assert pay.covered_by == "Billing and payments"  # the file says it already
    assert "#6" not in {m[0] for s in found for m in s.members}  # alone: no group
    assert by_first  # suggestions are keyed by their leader


def test_insert_commented_keeps_the_file_loadable_and_enables_by_uncommenting(
        tmp_path, example_config):
    from scopeguard.suggest import Suggestion

    s = Suggestion("Salesforce crm sync", "Declined 3 times by 3 requester(s).",
                   (("#1", "t", "u"),), ("ana",), ("salesforce",))
    for original in (example_config.read_text(),
                     example_config.read_text().replace("non_goals:", "old_non_goals:", 1)
                     .split("old_non_goals:")[0] + "non_goals: []\n",
                     example_config.read_text().split("non_goals:")[0]):
        text = insert_commented(original, [s], "2026-12-01")
        path = tmp_path / "p.yml"
        path.write_text(text)
        before = load_positioning(path)
        enabled = text.replace("  # - name:", "  - name:").replace(
            "  #   description:", "    description:").replace('  #   instead: ""', "   ")
        path.write_text(enabled)
        after = load_positioning(path)
        # Under non_goals:, first: uncommented, it joins the stated ones and nothing else moves.
        assert [n.name for n in after.non_goals] == \
            ["Salesforce crm sync", *[n.name for n in before.non_goals]]


def test_requester_text_never_leaves_the_comment(tmp_path, example_config):
    """A title with YAML's other line breaks (LS, PS, NEL) or an id with newlines stays
    inside the commented-out block: the file loads with the same non-goals as before and
    the block keeps its four lines."""
    from scopeguard.suggest import Suggestion

    original = example_config.read_text()
    path = tmp_path / "p.yml"
    path.write_text(original)
    before = [n.name for n in load_positioning(path).non_goals]
    for breaker in ("\u2028", "\u2029", "\x85", "\r", "\n"):
        s = Suggestion(f"Bespoke report{breaker}  - {{name: Injected, description: x}} #",
                       f"Asked{breaker}calibration: none",
                       ((f"Y0{breaker}  - name: Reminders by SMS{breaker}    description: all"
                         f"{breaker}  #", "t", "u"), ("Y\ud800", "t", "u")),
                       ("ana",), ("bespoke",))
        text = insert_commented(original, [s], "2026-12-01")
        path.write_text(text, encoding="utf-8")
        assert [n.name for n in load_positioning(path).non_goals] == before, repr(breaker)
        lines = text.split("\n")
        added = lines[lines.index("non_goals:") + 1:][:4]
        assert [line.lstrip()[:1] for line in added] == ["#"] * 4, added
        assert "Injected" in text  # kept, in the comment, for the owner to read


def test_suggest_non_goals_cli_reads_the_store_and_writes_the_file(runner, example_config,
                                                                  tmp_path):
    db = tmp_path / "c.db"
    config = tmp_path / "scopeguard.yml"
    shutil.copy(example_config, config)
    empty = runner.invoke(cli, ["suggest", "non-goals", "-c", str(config), "--db", str(db),
                                "--model", "hashing"])
    assert empty.exit_code == 2 and "scopeguard history" in empty.output
    HistoryStore(db).put_many(declined())
    result = runner.invoke(cli, ["suggest", "non-goals", "-c", str(config), "--db", str(db),
                                 "--model", "hashing", "--similar", "0.45", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert any("salesforce" in s["name"].lower() and len(s["members"]) == 3 for s in data)
    written = runner.invoke(cli, ["suggest", "non-goals", "-c", str(config), "--db", str(db),
                                  "--model", "hashing", "--similar", "0.45", "--write"])
    assert written.exit_code == 0, written.output
    text = config.read_text()
    assert "# Suggested by scopeguard suggest non-goals" in text
    assert all(f"#{k}" in text.split("# Suggested")[1] for k in (1, 2, 3))
    assert len(load_positioning(config).non_goals) == 5  # nothing enabled by itself
    again = runner.invoke(cli, ["suggest", "non-goals", "-c", str(config), "--db", str(db),
                                "--model", "hashing", "--similar", "0.45", "--write"])
    assert again.exit_code == 0 and "nothing written" in again.output, again.output
    assert config.read_text() == text  # a second --write adds no copies


def test_open_one_off_requests_of_a_backlog_join_the_groups(runner, example_config, tmp_path):
    backlog = tmp_path / "backlog.jsonl"
    # One customer asking three times: no demand, so scopeguard labels them one_off.
    # ... whose name and first title carry a CSI introducer (U+009B) and a bidi override:
    # JSON keeps them, written as \u escapes, never raw to the terminal
    backlog.write_text("\n".join(json.dumps({"id": f"B{k}", "title": t + "\u202e" * (k == 1),
                                             "body": b, "customer": "Acme\x9b2J Vets"})
                                 for k, (t, b, _) in enumerate(ASKS[:3], start=1)) + "\n")
    result = runner.invoke(cli, ["suggest", "non-goals", "-c", str(example_config), "--db",
                                 str(tmp_path / "c.db"), "--model", "hashing", "--similar",
                                 "0.45", "--backlog", str(backlog), "--json"])
    assert result.exit_code == 0, result.output
    assert not {"\x9b", "\u202e"} & set(result.output)
    [group] = [s for s in json.loads(result.output) if "salesforce" in s["name"].lower()]
    assert {m["id"] for m in group["members"]} == {"B1", "B2", "B3"}
    assert "open request(s) scopeguard labels one_off" in group["description"]
    assert group["requesters"] == ["Acme\x9b2J Vets"]
    assert any(m["title"].endswith("\u202e") for m in group["members"])


def test_write_leaves_a_file_it_cannot_extend_unchanged_and_keeps_line_ends(
        runner, example_config, tmp_path):
    """non_goals written in flow style ([{name: ...}]): adding commented lines would break
    the file, so --write refuses (exit 2) and leaves it as it was. A CRLF file stays CRLF."""
    import yaml

    db = tmp_path / "c.db"
    HistoryStore(db).put_many(declined())
    data = yaml.safe_load(example_config.read_text())
    flow = tmp_path / "flow.yml"
    flow.write_text(yaml.safe_dump({k: v for k, v in data.items() if k != "non_goals"},
                                   sort_keys=False) + "non_goals: "
                    + json.dumps(data["non_goals"]) + "\n")
    before = flow.read_bytes()
    args = ["suggest", "non-goals", "--db", str(db), "--model", "hashing", "--similar",
            "0.45", "--write"]
    result = runner.invoke(cli, [*args, "-c", str(flow)])
    assert result.exit_code == 2 and "unchanged" in result.stderr, result.output
    assert "block list" in result.stderr and flow.read_bytes() == before
    crlf = tmp_path / "crlf.yml"
    crlf.write_bytes(example_config.read_bytes().replace(b"\r\n", b"\n").replace(b"\n",
                                                                                 b"\r\n"))
    result = runner.invoke(cli, [*args, "-c", str(crlf)])
    assert result.exit_code == 0, result.output
    written = crlf.read_bytes()
    assert b"# Suggested by scopeguard" in written
    assert written.count(b"\n") == written.count(b"\r\n")  # every line ends as before

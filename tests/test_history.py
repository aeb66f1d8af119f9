"""`scopeguard history` (issue 14): decided feature requests imported from GitHub and Jira
(fake servers over real HTTP, real payload shapes: state_reason, closed_at, type, labels,
pagination; Jira resolutions) into the SQLite store, and re-runs that read only what
changed."""

from __future__ import annotations

import pytest
from fake_github import FakeGitHub
from fake_jira import FakeJira

from scopeguard.backlog import Request
from scopeguard.cli import cli
from scopeguard.history import Decided, HistoryRules, github_decision, jira_decision
from scopeguard.history_store import HistoryStore

TOKEN = "ghp-history-secret-token"
REPO = "acme/pawtrack"


# --- reading a decision ---------------------------------------------------------------------


@pytest.mark.parametrize("issue, expected", [
    ({"state": "closed", "state_reason": "not_planned"}, ("declined", "closed as not planned")),
    ({"state": "closed", "state_reason": "completed"}, ("accepted", "closed as completed")),
    ({"state": "closed", "state_reason": "duplicate"}, ("declined", "closed as a duplicate")),
    ({"state": "closed", "state_reason": None, "labels": [{"name": "WontFix"}]},
     ("declined", "labelled 'wontfix'")),
    ({"state": "closed", "state_reason": "completed", "labels": ["out of scope"]},
     ("declined", "labelled 'out of scope'")),  # the label says more than the button
    ({"state": "closed", "state_reason": None}, None),  # closed before reasons existed
    ({"state": "open", "state_reason": None, "labels": ["wontfix"]}, None),
])
def test_github_decisions(issue, expected):
    assert github_decision(issue) == expected


def test_jira_decisions_and_renamed_rules():
    assert jira_decision("Won't Do") == ("declined", "resolution \"Won't Do\"")
    assert jira_decision("fixed") == ("accepted", "resolution 'fixed'")
    assert jira_decision("Cannot Reproduce") is None and jira_decision("") is None
    rules = HistoryRules.from_dict({"declined_resolutions": ["Not Now"],
                                    "accepted_labels": ["shipped"]})
    assert jira_decision("Not Now", rules)[0] == "declined"
    assert jira_decision("Won't Do", rules) is None  # the list replaces the default
    assert github_decision({"state": "closed", "labels": ["Shipped"]}, rules)[0] == "accepted"


def test_the_store_keeps_one_row_per_request_and_the_sync_mark(tmp_path):
    store = HistoryStore(tmp_path / "h.db")
    one = Decided("github:a/b", Request(id="#1", title="t", labels=("x",)), "declined",
                  "closed as not planned", "2025-01-02T00:00:00Z", "2025-01-02T00:00:00Z")
    store.put_many([one, one])
    assert store.counts() == {"accepted": 0, "declined": 1}
    store.put_many([Decided(one.source, one.request, "accepted", "closed as completed",
                            "2025-02-01T00:00:00Z", "2025-02-01T00:00:00Z")])
    [row] = store.decided("github:a/b")
    assert (row.decision, row.request.labels) == ("accepted", ("x",))
    store.forget("github:a/b", ["#1"])
    assert store.decided() == []
    assert store.synced("github:a/b") == ""
    store.mark_synced("github:a/b", "2025-02-01T00:00:00Z", "2025-02-02T00:00:00Z")
    assert store.synced("github:a/b") == "2025-02-01T00:00:00Z"


# --- GitHub over HTTP -----------------------------------------------------------------------


def _close(github: FakeGitHub, number: int, reason: str | None, stamp: str) -> None:
    github.set_issue(REPO, number, state="closed", state_reason=reason, closed_at=stamp)
    github.repos[REPO].issues[number]["updated_at"] = stamp


def run_history(runner, config, tmp_path, env, *source):
    return runner.invoke(cli, ["history", "-c", str(config), "--db", str(tmp_path / "h.db"),
                               "-q", *source],
                         env={"SCOPEGUARD_GITHUB_THROTTLE": "0", **env})


def test_github_history_imports_decided_requests_then_only_what_changed(
        runner, example_config, tmp_path):
    with FakeGitHub(token=TOKEN) as github:
        github.add_repo(REPO)
        declined = []
        for k in range(101):  # more than one page (scopeguard asks 100 a page)
            n = github.add_issue(REPO, f"Integrate with CRM number {k}", "For our sales team.")
            _close(github, n, "not_planned", f"2025-01-{k % 28 + 1:02d}T10:00:00Z")
            declined.append(n)
        done = github.add_issue(REPO, "Reminder texts in Welsh", "Many owners speak Welsh.")
        _close(github, done, "completed", "2025-02-01T10:00:00Z")
        label = github.add_issue(REPO, "Blockchain receipts", "", labels=["wontfix"])
        _close(github, label, None, "2025-02-02T10:00:00Z")
        bug = github.add_issue(REPO, "Reminders sent twice", "", labels=["bug"])
        _close(github, bug, "not_planned", "2025-02-03T10:00:00Z")
        typed = github.add_issue(REPO, "Calendar blank on Safari", "")
        github.set_issue(REPO, typed, type="Bug")
        _close(github, typed, "completed", "2025-02-04T10:00:00Z")
        pr = github.add_issue(REPO, "Add Welsh", "", pull_request=True)
        _close(github, pr, "completed", "2025-02-05T10:00:00Z")
        github.add_issue(REPO, "Still open", "")
        env = {"GITHUB_TOKEN": TOKEN, "GITHUB_API_URL": github.base_url}

        first = run_history(runner, example_config, tmp_path, env, "--github", REPO)
        assert first.exit_code == 0, first.output
        assert "103 decided (102 declined, 1 accepted)" in first.output
        assert "2 not decided or not feature requests" in first.output  # the bug, the typed
        store = HistoryStore(tmp_path / "h.db")
        rows = {d.request.id: d for d in store.decided(f"github:{REPO}")}
        assert rows[f"#{label}"].reason == "labelled 'wontfix'"
        assert rows[f"#{done}"].decision == "accepted"
        assert rows[f"#{done}"].decided_at == "2025-02-01T10:00:00Z"
        assert rows[f"#{done}"].request.url.endswith(f"/issues/{done}")
        assert f"#{bug}" not in rows and f"#{pr}" not in rows
        assert len([r for r in github.calls("GET", rf"/repos/{REPO}/issues")]) >= 2  # paged
        assert store.synced(f"github:{REPO}") == "2025-02-04T10:00:00Z"  # the PR's is not

        # Later: one decision is reopened, one new request is declined.
        github.set_issue(REPO, declined[0], state="open", state_reason="reopened")
        github.repos[REPO].issues[declined[0]]["updated_at"] = "2025-03-01T10:00:00Z"
        late = github.add_issue(REPO, "SAP export", "Our ERP.")
        _close(github, late, "not_planned", "2025-03-02T10:00:00Z")
        before = len(github.calls("GET", rf"/repos/{REPO}/issues"))
        again = run_history(runner, example_config, tmp_path, env, "--github", REPO)
        assert again.exit_code == 0, again.output
        [call] = github.calls("GET", rf"/repos/{REPO}/issues")[before:]
        assert call.query["since"] == ["2025-02-04T10:00:00Z"] and call.query["state"] == ["all"]
        # The mark's own, the reopened one, the new one, and the still open one (now updated).
        assert "read 4 issues changed since" in again.output
        assert "1 no longer decided" in again.output
        rows = {d.request.id for d in store.decided(f"github:{REPO}")}
        assert f"#{declined[0]}" not in rows and f"#{late}" in rows
        assert store.counts(f"github:{REPO}") == {"accepted": 1, "declined": 102}
        assert TOKEN not in first.output + again.output


def test_odd_github_answers_neither_crash_the_import_nor_poison_its_mark(
        runner, example_config, tmp_path):
    """A title with a lone surrogate and a NUL (JSON allows "\\ud800") is stored repaired;
    an 'updated_at' that is no time never becomes the mark (every later import failed on
    it until --full), and a stored mark that is no time reads everything again."""
    with FakeGitHub(token=TOKEN) as github:
        github.add_repo(REPO)
        odd = github.add_issue(REPO, "Cut emoji \ud83d and a \x00 NUL", "Body \udc4b.")
        _close(github, odd, "not_planned", "2025-01-05T10:00:00Z")
        plain = github.add_issue(REPO, "Reminders in Welsh", "")
        _close(github, plain, "not_planned", "2025-01-04T10:00:00Z")
        github.repos[REPO].issues[odd]["updated_at"] = "not-a-date"
        env = {"GITHUB_TOKEN": TOKEN, "GITHUB_API_URL": github.base_url}
        first = run_history(runner, example_config, tmp_path, env, "--github", REPO)
        assert first.exit_code == 0, first.output
        store = HistoryStore(tmp_path / "h.db")
        rows = {d.request.id: d for d in store.decided(f"github:{REPO}")}
        assert rows[f"#{odd}"].request.title == "Cut emoji \ufffd and a \x00 NUL"
        assert store.synced(f"github:{REPO}") == "2025-01-04T10:00:00Z"
        again = run_history(runner, example_config, tmp_path, env, "--github", REPO)
        assert again.exit_code == 0, again.output
        store.mark_synced(f"github:{REPO}", "not-a-date", "2025-01-06T00:00:00Z")
        before = len(github.calls("GET", rf"/repos/{REPO}/issues"))
        third = run_history(runner, example_config, tmp_path, env, "--github", REPO)
        assert third.exit_code == 0, third.output
        [call] = github.calls("GET", rf"/repos/{REPO}/issues")[before:]
        assert "since" not in call.query and call.query["state"] == ["closed"]


def test_history_needs_exactly_one_source(runner, example_config, tmp_path):
    result = run_history(runner, example_config, tmp_path, {})
    assert result.exit_code == 2 and "give one source" in result.output


# --- Jira over HTTP -------------------------------------------------------------------------


def test_jira_history_reads_resolutions_and_re_runs_from_the_last_change(
        runner, example_config, tmp_path):
    config = tmp_path / "scopeguard.yml"
    config.write_text(example_config.read_text() +
                      "\nhistory:\n  declined_resolutions: [\"Won't Do\", Declined]\n")
    with FakeJira(flavour="cloud", email="bot@clinic.example", token="jira-api-token",
                  page_cap=3) as jira:
        stamps = iter(f"2025-0{m}-{d:02d}T09:00:00.000+0000" for m in (1, 2, 3)
                      for d in range(1, 29))
        jira.add_issue("PAW-1", "Sync with Salesforce", "For our CRM.")
        jira.resolve("PAW-1", "Won't Do", next(stamps))
        jira.add_issue("PAW-2", "WhatsApp reminders", "Owners ignore SMS.")
        jira.resolve("PAW-2", "Done", next(stamps))
        jira.add_issue("PAW-3", "Printer support", "")
        jira.resolve("PAW-3", "Cannot Reproduce", next(stamps))  # says nothing about scope
        jira.add_issue("PAW-4", "Login fails", "", issuetype="Bug")
        jira.resolve("PAW-4", "Won't Do", next(stamps))  # a bug: not a feature request
        jira.add_issue("PAW-5", "Open idea", "")
        for k in range(6, 11):
            jira.add_issue(f"PAW-{k}", f"Custom report {k} for our board", "")
            jira.resolve(f"PAW-{k}", "Declined", next(stamps))

        first = run_history(runner, config, tmp_path, jira.env, "--jira", "PAW")
        assert first.exit_code == 0, first.output + first.stderr
        assert "7 decided (6 declined, 1 accepted)" in first.output
        [query] = {r.query.get("jql", [""])[0] for r in jira.calls("GET", "/search/jql")}
        assert "resolution is not EMPTY" in query
        store = HistoryStore(tmp_path / "h.db")
        rows = {d.request.id: d for d in store.decided("jira:PAW")}
        assert rows["PAW-1"].reason == "resolution \"Won't Do\""
        assert rows["PAW-1"].decided_at == "2025-01-01T09:00:00Z"
        assert set(rows) == {"PAW-1", "PAW-2", "PAW-6", "PAW-7", "PAW-8", "PAW-9", "PAW-10"}

        # Later: PAW-2 is reopened (resolution cleared), PAW-5 is declined.
        jira.resolve("PAW-2", None, "2025-04-01T09:00:00.000+0000")
        jira.resolve("PAW-5", "Won't Do", "2025-04-02T09:00:00.000+0000")
        calls = len(jira.calls("GET", "/search/jql"))
        again = run_history(runner, config, tmp_path, jira.env, "--jira", "PAW")
        assert again.exit_code == 0, again.output
        queries = [r.query["jql"][0] for r in jira.calls("GET", "/search/jql")[calls:]]
        assert all('updated >= "2025-01-08 09:00"' in q for q in queries), queries  # a day early
        rows = {d.request.id for d in store.decided("jira:PAW")}
        assert "PAW-2" not in rows and "PAW-5" in rows
        assert "jira-api-token" not in first.output + again.output


def test_a_partial_read_does_not_move_the_mark(runner, example_config, tmp_path):
    with FakeGitHub(token=TOKEN) as github:
        github.add_repo(REPO)
        for k in range(3):
            n = github.add_issue(REPO, f"Idea {k}", "")
            _close(github, n, "not_planned", f"2025-01-0{k + 1}T10:00:00Z")
        env = {"GITHUB_TOKEN": TOKEN, "GITHUB_API_URL": github.base_url}
        result = run_history(runner, example_config, tmp_path, env, "--github", REPO,
                             "--limit", "2")
        assert result.exit_code == 0 and "2 decided" in result.output
        assert HistoryStore(tmp_path / "h.db").synced(f"github:{REPO}") == ""


# --- precedents -----------------------------------------------------------------------------


def _decided(n: int, title: str, decision: str = "declined") -> Decided:
    return Decided("github:acme/pawtrack", Request(id=f"#{n}", title=title,
                                                   url=f"https://github.com/acme/pawtrack/"
                                                       f"issues/{n}"),
                   decision, "closed as not planned" if decision == "declined"
                   else "closed as completed", "2025-03-04T10:00:00Z", "2025-03-04T10:00:00Z")


def test_a_close_decided_request_is_shown_as_a_precedent(positioning, hashing):
    from scopeguard import render
    from scopeguard.engine import Scopeguard

    precedents = [_decided(412, "Sync appointments with Salesforce CRM"),
                  _decided(9, "Dark mode for the booking widget", "accepted")]
    guard = Scopeguard(positioning, hashing, precedents=precedents)
    v = guard.classify(Request(id="#500", title="Sync appointments with Salesforce CRM",
                               body="our sales team"))
    assert v.precedent and (v.precedent.id, v.precedent.decision) == ("#412", "declined")
    assert v.precedent.score >= guard.rules.precedent
    assert any(r.startswith("Like #412") and "2025-03" in r for r in v.reasons)
    assert v.label  # the precedent is evidence: the rule still decides the label
    md = render.to_markdown(v)
    assert "**Precedent:** [#\u200b412](https://github.com/acme/pawtrack/issues/412)" in md
    assert v.to_dict()["precedent"]["decision"] == "declined"
    # Nothing close: no precedent; the request itself (reopened) is never its own.
    far = guard.classify(Request(id="#501", title="Print vaccination certificates"))
    assert far.precedent is None
    itself = guard.classify(Request(id="#412", title="Sync appointments with Salesforce CRM"))
    assert itself.precedent is None or itself.precedent.id != "#412"
    # The same through a whole backlog (audit).
    [audited] = guard.classify_all([Request(id="#600", title="Sync appointments with "
                                                            "Salesforce CRM")])
    assert audited.precedent and audited.precedent.id == "#412"


def test_classify_reads_precedents_from_the_store(runner, example_config, tmp_path):
    import json

    db = tmp_path / "c.db"
    HistoryStore(db).put_many([_decided(412, "Sync appointments with Salesforce CRM")])
    result = runner.invoke(cli, ["classify", "-c", str(example_config), "--db", str(db),
                                 "--model", "hashing", "-t",
                                 "Sync appointments with Salesforce CRM", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["precedent"]["id"] == "#412"
    fresh = tmp_path / "none.db"  # no history imported: nothing, and no file created for it
    result = runner.invoke(cli, ["classify", "-c", str(example_config), "--db", str(fresh),
                                 "--model", "hashing", "-t", "Anything", "--format", "json"])
    assert result.exit_code == 0 and json.loads(result.output)["precedent"] is None


def test_history_shows_a_progress_bar_unless_quiet(runner, example_config, tmp_path):
    with FakeGitHub(token=TOKEN) as github:
        github.add_repo(REPO)
        n = github.add_issue(REPO, "Idea", "")
        _close(github, n, "not_planned", "2025-01-01T10:00:00Z")
        env = {"GITHUB_TOKEN": TOKEN, "GITHUB_API_URL": github.base_url,
               "SCOPEGUARD_GITHUB_THROTTLE": "0"}
        loud = runner.invoke(cli, ["history", "-c", str(example_config), "--db",
                                   str(tmp_path / "h.db"), "--github", REPO], env=env)
        assert loud.exit_code == 0 and f"reading github:{REPO}" in loud.stderr
        quiet = runner.invoke(cli, ["history", "-c", str(example_config), "--db",
                                    str(tmp_path / "h.db"), "--github", REPO, "-q",
                                    "--full"], env=env)
        assert quiet.exit_code == 0 and "reading" not in quiet.stderr


def test_a_sync_mark_jira_could_not_have_meant_reads_everything_again():
    """The mark is the newest 'updated' a tracker gave; one that is no timestamp (stored
    from an odd answer) must not stop every later sync with a traceback: it is no mark."""
    from scopeguard.integrations.jira.history import history_jql

    full = history_jql("PAW")
    assert history_jql("PAW", since="2025/01/02 9am") == full
    assert "updated >=" in history_jql("PAW", since="2025-01-02T09:00:00.000+0000")

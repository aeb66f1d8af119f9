"""`scopeguard backtest` (issue 14): past decided requests replayed through today's file,
demand counted only among earlier requests, agreement with what the maintainers did."""

from __future__ import annotations

import json

import pytest
from fake_github import FakeGitHub

from scopeguard.backlog import Request
from scopeguard.backtest import Backtest, render, replay
from scopeguard.cli import cli
from scopeguard.history import Decided

TOKEN = "ghp-backtest-secret-token"
REPO = "acme/pawtrack"


def decided(k: int, title: str, decision: str, created: str) -> Decided:
    return Decided(f"github:{REPO}", Request(id=f"#{k}", title=title, author=f"user{k}",
                                             created_at=created,
                                             url=f"https://github.com/{REPO}/issues/{k}"),
                   decision, "closed as not planned" if decision == "declined"
                   else "closed as completed", created, created)


def test_replay_counts_demand_only_among_earlier_requests(positioning, hashing):
    from scopeguard.engine import Scopeguard

    guard = Scopeguard(positioning, hashing)
    seen: dict[str, list[str]] = {}

    def classify_one(request, earlier):
        seen[request.id] = [r.id for r in earlier]
        return guard.classify(request, earlier)
    items = [decided(3, "Pay deposits by card", "declined", "2025-03-01"),
             decided(1, "Reminder texts in Welsh", "accepted", "2025-01-01"),
             decided(2, "Card deposits at booking", "declined", "2025-02-01")]
    result = replay(items, classify_one)
    assert [r.decided.request.id for r in result.rows] == ["#1", "#2", "#3"]  # oldest first
    assert seen == {"#1": [], "#2": ["#1"], "#3": ["#1", "#2"]}  # never a later one
    table = result.table()
    assert sum(v for row in table.values() for v in row.values()) == 3
    assert result.base_rate() == pytest.approx(2 / 3)
    expected = sum((r.verdict.label == "one_off") == (r.decided.decision == "declined")
                   for r in result.rows) / 3
    assert result.agreement == pytest.approx(expected)
    wrong = result.disagreements()
    assert all(not r.agrees for r in wrong)


def test_the_report_shows_agreement_base_rate_table_and_escaped_disagreements(positioning,
                                                                              hashing):
    from scopeguard.engine import Scopeguard

    guard = Scopeguard(positioning, hashing)
    hostile = decided(7, "<!-- x --> @boss [click](javascript:alert(1))", "declined",
                      "2025-01-01")
    result = replay([hostile, decided(8, "Reminder texts", "accepted", "2025-01-02")],
                    lambda r, e: guard.classify(r, e))
    data = json.loads(render(result, "json"))
    assert data["requests"] == 2 and set(data["table"]) == {"core", "generalizable", "one_off"}
    text = render(result, "table")
    assert "always saying \"accepted\" would agree on 50%" in text
    md = render(result, "markdown")
    assert "<!--" not in md and "@boss" not in md and "javascript:" not in md.split(
        "issues/7")[0].split("\n")[-1]
    assert Backtest("x", ()).agreement == 0.0


def _close(github, n, reason, stamp):
    github.set_issue(REPO, n, state="closed", state_reason=reason, closed_at=stamp,
                     created_at=stamp)
    github.repos[REPO].issues[n]["updated_at"] = stamp


@pytest.fixture
def github():
    with FakeGitHub(token=TOKEN) as fake:
        fake.add_repo(REPO)
        asks = [("Sync appointments to Salesforce CRM", "not_planned"),
                ("Reminder texts in Welsh", "completed"),
                ("Card payments and invoices at booking", "not_planned"),
                ("Let owners reschedule from the reminder", "completed"),
                ("Blockchain receipts for vet visits", "not_planned"),
                ("Waitlist for cancelled slots", "completed")]
        for k, (title, reason) in enumerate(asks, start=1):
            n = fake.add_issue(REPO, title, "")
            _close(fake, n, reason, f"2025-0{k}-01T10:00:00Z")
        yield fake


def test_backtest_cli_imports_then_replays(runner, example_config, tmp_path, github):
    env = {"GITHUB_TOKEN": TOKEN, "GITHUB_API_URL": github.base_url,
           "SCOPEGUARD_GITHUB_THROTTLE": "0"}
    args = ["backtest", "-c", str(example_config), "--db", str(tmp_path / "c.db"),
            "--model", "hashing", "--github", REPO, "-q"]
    result = runner.invoke(cli, [*args, "--format", "json"], env=env)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["requests"] == 6 and data["declined_share"] == 0.5
    assert {r["decision"] for r in data["rows"]} == {"accepted", "declined"}
    assert all(1 <= r["step"] <= 6 for r in data["rows"])
    since = runner.invoke(cli, [*args, "--since", "2025-04-01", "--offline"], env={})
    assert since.exit_code == 0, since.output
    assert "3 decided requests replayed" in since.output and TOKEN not in since.output
    bad = runner.invoke(cli, [*args, "--since", "April"], env=env)
    assert bad.exit_code == 2 and "YYYY-MM-DD" in bad.output
    none = runner.invoke(cli, [*args, "--since", "2030-01-01", "--offline"], env={})
    assert none.exit_code == 2 and "no decided feature requests" in none.output
    # a past issue with a title past the limit is left out and said, not a stopped run
    long = github.add_issue(REPO, "Export " + "x" * 5000, "")
    _close(github, long, "not_planned", "2025-07-01T10:00:00Z")
    result = runner.invoke(cli, [*args, "--format", "json"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["requests"] == 6
    assert f"left out 1 request(s) that cannot be classified: #{long} (title is 5,007" in \
        result.stderr


@pytest.mark.model
def test_backtest_with_the_real_model(runner, example_config, tmp_path, github):
    """The bundled all-MiniLM-L6-v2, offline: the path a team runs before enabling."""
    env = {"GITHUB_TOKEN": TOKEN, "GITHUB_API_URL": github.base_url,
           "SCOPEGUARD_GITHUB_THROTTLE": "0"}
    result = runner.invoke(cli, ["backtest", "-c", str(example_config), "--db",
                                 str(tmp_path / "real.db"), "--github", REPO, "-q",
                                 "--format", "markdown"], env=env)
    assert result.exit_code == 0, result.output
    assert "6 decided requests replayed" in result.output
    assert "| scopeguard said | accepted | declined | agrees |" in result.output

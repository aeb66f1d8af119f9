"""`scopeguard audit --github` and `--jira/--jql` against local fake REST servers over real
HTTP: pagination, pull requests and non-features skipped, rate limits and 5xx retried, and
the token kept out of every output."""

import json

import pytest
from fake_github import FakeGitHub
from fake_jira import FakeJira

from scopeguard.cli import cli

TOKEN = "ghp-audit-secret-token"
REPO = "acme/pawtrack"


@pytest.fixture
def github():
    with FakeGitHub(token=TOKEN) as fake:
        fake.add_repo(REPO)
        yield fake


def run_audit(runner, example_config, tmp_path, env, *source):
    args = ["audit", "-c", str(example_config), "--model", "hashing",
            "--db", str(tmp_path / "c.db"), "--json", *source]
    return runner.invoke(cli, args, env={"SCOPEGUARD_GITHUB_MAX_WAIT": "2",
                                         "SCOPEGUARD_GITHUB_THROTTLE": "0", **env})


def test_github_audit_paginates_and_skips(runner, github, example_config, tmp_path):
    for i in range(230):  # three pages of 100
        github.add_issue(REPO, f"Waitlist idea {i}", f"Offer cancelled slot {i} by text",
                         user=f"clinic{i % 40}", labels=["enhancement"])
    github.add_issue(REPO, "Crash when saving", "stack trace", labels=["bug"])
    github.add_issue(REPO, "Add SMS", "a pull request", pull_request=True)
    github.add_issue(REPO, "Closed idea", "old", state="closed")
    env = {"GITHUB_TOKEN": TOKEN, "GITHUB_API_URL": github.base_url}
    result = run_audit(runner, example_config, tmp_path, env, "--github", REPO)
    assert result.exit_code == 0, result.output + result.stderr
    data = json.loads(result.output)
    assert len(data["requests"]) == 230
    assert [s["why"] for s in data["skipped"]] == ["has label 'bug'"]
    # an issue with neither title nor body (nobody can fix it here): skipped, said, not a stop
    github.add_issue(REPO, "", "", labels=["enhancement"])
    result = run_audit(runner, example_config, tmp_path, env, "--github", REPO)
    assert result.exit_code == 0, result.output
    assert sorted(s["why"] for s in json.loads(result.output)["skipped"]) == [
        "cannot be classified: title and body are both empty", "has label 'bug'"]
    pages = [r for r in github.requests if r.method == "GET" and r.path.endswith("/issues")]
    assert len(pages) >= 3
    assert TOKEN not in result.output + result.stderr


def test_github_audit_label_filter_and_retries(runner, github, example_config, tmp_path):
    github.add_issue(REPO, "Reminders by WhatsApp", "please", labels=["enhancement"])
    github.add_issue(REPO, "Dark mode", "please", labels=["ui"])
    github.fail(502, times=2, method="GET")
    github.rate_limit(1, retry_after=1, method="GET")
    env = {"GITHUB_TOKEN": TOKEN, "GITHUB_API_URL": github.base_url}
    result = run_audit(runner, example_config, tmp_path, env, "--github", REPO,
                       "--label", "enhancement")
    assert result.exit_code == 0, result.output + result.stderr
    assert [r["title"] for r in json.loads(result.output)["requests"]] == [
        "Reminders by WhatsApp"]


def test_github_audit_bad_token_is_a_clear_error(runner, github, example_config, tmp_path):
    env = {"GITHUB_TOKEN": "wrong-token-value", "GITHUB_API_URL": github.base_url}
    result = run_audit(runner, example_config, tmp_path, env, "--github", REPO)
    assert result.exit_code == 2
    assert "401" in result.stderr and "Fix" in result.stderr
    assert "wrong-token-value" not in result.stderr


def test_jira_audit_paginates_retries_and_reads_the_customer_field(
        runner, example_config, tmp_path):
    config = tmp_path / "scopeguard.yml"
    config.write_text(example_config.read_text() + "jira:\n  customer_field: Clinic\n")
    with FakeJira(flavour="server", pat="jira-pat-secret", page_cap=7) as jira:
        for i in range(20):
            jira.add_issue(f"PAW-{i + 1}", f"Waitlist idea {i}", f"Offer slot {i} by text",
                           customer=f"Clinic {i % 4}")
        jira.fail(429, times=1, retry_after="1")
        jira.fail(503, times=1, retry_after="1")
        result = runner.invoke(cli, ["audit", "-c", str(config), "--model", "hashing",
                                     "--db", str(tmp_path / "c.db"), "--jira", "PAW", "--json"],
                               env={**jira.env, "SCOPEGUARD_JIRA_MAX_WAIT": "2"})
        assert result.exit_code == 0, result.output + result.stderr
        data = json.loads(result.output)
        assert len(data["requests"]) == 20
        assert {r["customer"] for r in data["requests"]} == {f"Clinic {k}" for k in range(4)}
        pages = [r for r in jira.calls("GET", "/search") if r.status == 200]
        assert len(pages) == 3  # 20 issues in pages of at most 7
        assert {r.status for r in jira.calls()} >= {429, 503}  # refused, then retried
        assert "jira-pat-secret" not in result.output + result.stderr


def test_a_token_the_tracker_repeats_never_reaches_the_error(runner, github, example_config,
                                                               tmp_path):
    """A proxy or an old server that repeats the credentials in its error answer: the
    command's error keeps the answer's message and masks the token (GitHub, Jira), and a
    malformed GITHUB_API_URL is named without its user:password."""
    github.add_issue(REPO, "Dark mode", "please")
    github.fail(422, times=5, method="GET", path=rf"/repos/{REPO}/issues", body={
        "message": f"Validation Failed for a request with Authorization: token {TOKEN}"})
    env = {"GITHUB_TOKEN": TOKEN, "GITHUB_API_URL": github.base_url,
           "SCOPEGUARD_GITHUB_RETRIES": "0"}
    result = run_audit(runner, example_config, tmp_path, env, "--github", REPO)
    assert result.exit_code == 2 and "Validation Failed" in result.stderr, result.stderr
    assert TOKEN not in result.output + result.stderr and "***" in result.stderr

    env["GITHUB_API_URL"] = f"https://x-access-token:{TOKEN}@ghe.example:notaport/api/v3"
    result = run_audit(runner, example_config, tmp_path, env, "--github", REPO)
    assert result.exit_code == 2 and "GITHUB_API_URL" in result.stderr, result.stderr
    assert TOKEN not in result.stderr and "https://***@ghe.example" in result.stderr

    class EchoingJira(FakeJira):
        def handle(self, method, path, query, body):
            if "search" in path:
                return 400, {"errorMessages": [f"Bad request from Bearer {self.pat}"]}, {}
            return super().handle(method, path, query, body)

    with EchoingJira(flavour="server", pat="jira-pat-echoed-77aa99") as jira:
        result = runner.invoke(cli, ["audit", "-c", str(example_config), "--model", "hashing",
                                     "--db", str(tmp_path / "j.db"), "--jira", "PAW"],
                               env={**jira.env, "SCOPEGUARD_JIRA_RETRIES": "0"})
    assert result.exit_code == 2 and "Bad request from Bearer ***" in result.stderr, \
        result.stderr
    assert "jira-pat-echoed-77aa99" not in result.output + result.stderr

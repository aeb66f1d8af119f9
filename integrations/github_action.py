"""The GitHub Action: label an issue core, generalizable or one-off, and explain why.

Run as ``python -m scopeguard.integrations.github_action`` (action.yml does). It reads the
event (``GITHUB_EVENT_PATH``, ``GITHUB_EVENT_NAME``), ``GITHUB_REPOSITORY``,
``GITHUB_API_URL``, the positioning file from the checked-out workspace
(``GITHUB_WORKSPACE``: run actions/checkout first) and the ``INPUT_*`` variables action.yml
sets (``INPUT_DRY_RUN`` or GitHub's own ``INPUT_DRY-RUN`` spelling), then:

- ``issues`` opened, edited, reopened, or labeled with a label that is not a scope label:
  classify the issue against the positioning file and the repository's other open
  issues (demand), set the scope label (creating the three labels if missing, removing
  an older one scopeguard set) and create or update ONE comment, found by its hidden
  marker. A scope label a maintainer set is never changed: the comment says it stands.
- ``issues`` labeled with a scope label, by a person, that differs from scopeguard's
  verdict: a correction. It is committed as one JSONL row (the labelled-backlog format
  ``scopeguard calibrate --labels`` reads) to ``.github/scopeguard-relabels.jsonl``
  through the contents API, scopeguard's own label is removed, the comment notes it.
  A correction no ``labeled`` run recorded (cancelled while pending in the workflow's
  concurrency group, or no ``labeled`` trigger) is recorded by the issue's next run, with
  the labeller taken from the issue's events.
- Pull requests and issues the positioning file's ``filters`` exclude (bugs, questions)
  are skipped with a ``::notice::``. ``dry-run`` changes nothing on GitHub.

Outputs (``GITHUB_OUTPUT``): label, confidence, input-class, skipped. The verdict goes to
the job summary before anything is written, so a failed write never loses it. Failures
print ``::error::`` with the fix, add it to the summary, and exit with status 1.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from github import GithubException

from scopeguard import render
from scopeguard.backlog import Request, check_request, is_feature_request, resolve_customer
from scopeguard.errors import ConfigError, InputError, ScopeguardError
from scopeguard.positioning import (
    DEFAULT_FILENAMES,
    LABELS,
    Positioning,
    find_positioning,
    load_positioning,
)

from .github_client import (
    DEFAULT_API_URL,
    GitHubError,
    fetch_open_issues,
    get_repository,
    github_errors,
    is_pull_request,
    issue_to_request,
    make_client,
    raw_json,
    settings_from_env,
)

RELABELS_FILE = ".github/scopeguard-relabels.jsonl"
# Colours and descriptions of the labels scopeguard creates (GitHub allows 100 characters).
LABEL_STYLE = {
    "core": ("0e8a16", "scopeguard: fits the product's positioning; extends what it is for"),
    "generalizable": ("fbca04", "scopeguard: not core today; a general form would serve the "
                                "target customers"),
    "one_off": ("d93f0b", "scopeguard: one customer's situation, outside the positioning"),
}
# A maintainer's scope label that stands, recorded in the comment so later runs keep it even
# when scopeguard's own verdict comes to agree with it.
HUMAN_MARKER = re.compile(r"<!-- scopeguard:human-label=(\w+)(?: by=(\S+))? -->")
NOTE_PREFIXES = ("> **Maintainer's label stands", "> **Not labelled")
CLASSIFY_ACTIONS = ("opened", "edited", "reopened", "labeled")
TRUE, FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


# --- settings --------------------------------------------------------------------------------


def _input_set(env: Mapping[str, str], name: str) -> str | None:
    """An action input as given (None when absent): composite actions pass INPUT_DRY_RUN,
    JavaScript and Docker actions INPUT_DRY-RUN."""
    upper = name.upper()
    for key in (f"INPUT_{upper.replace('-', '_')}", f"INPUT_{upper}"):
        if key in env:
            return env[key].strip()
    return None


def _input(env: Mapping[str, str], name: str, default: str = "") -> str:
    return _input_set(env, name) or default


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _input(env, name).lower()
    if not raw:
        return default
    if raw in TRUE or raw in FALSE:
        return raw in TRUE
    raise InputError(f"input {name}: {raw!r} is not true or false. Fix: `{name}: true` or "
                     f"`{name}: false`.")


@dataclass(frozen=True)
class Settings:
    """What the job and the action's inputs say."""

    token: str
    repository: str
    api_url: str
    event_name: str
    event_path: str
    workspace: Path
    db: str
    positioning_file: str = ""
    label_overrides: tuple[tuple[str, str], ...] = ()
    dry_run: bool = False
    min_confidence: float = 0.0
    comment: bool = True
    relabels_file: str = RELABELS_FILE
    backlog_limit: int = 500
    issue_number: int | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        token = _input(env, "token") or env.get("GITHUB_TOKEN", "").strip()
        if not token:
            raise InputError("no GitHub token. Fix: keep the token input's default "
                             "(`${{ github.token }}`) or pass `token: ${{ secrets.MY_TOKEN }}`.")
        raw = _input(env, "min-confidence", "0")
        try:
            min_confidence = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
        except ValueError:
            min_confidence = -1.0
        if not 0 <= min_confidence <= 1:
            raise InputError(f"input min-confidence: {raw!r} is not a number from 0 to 1. "
                             "Fix: e.g. `min-confidence: 0.6` (or 60%); 0 labels everything.")
        limit, number = _input(env, "backlog-limit", "500"), _input(env, "issue-number")
        if not limit.isdigit():
            raise InputError(f"input backlog-limit: {limit!r} is not a whole number. Fix: "
                             "e.g. `backlog-limit: 500`; 0 ignores the other issues.")
        if number and not number.lstrip("#").isdigit():
            raise InputError(f"input issue-number: {number!r} is not an issue number. "
                             "Fix: e.g. `issue-number: 12`, or leave it empty.")
        overrides = tuple((key, _input(env, f"label-{key.replace('_', '-')}")) for key in LABELS)
        db = env.get("SCOPEGUARD_DB") or os.path.join(
            env.get("RUNNER_TEMP") or tempfile.gettempdir(), "scopeguard.db")
        return cls(
            token=token, repository=env.get("GITHUB_REPOSITORY", ""),
            api_url=env.get("GITHUB_API_URL") or DEFAULT_API_URL,
            event_name=env.get("GITHUB_EVENT_NAME", ""),
            event_path=env.get("GITHUB_EVENT_PATH", ""),
            workspace=Path(env.get("GITHUB_WORKSPACE") or os.getcwd()), db=db,
            positioning_file=_input(env, "positioning-file"),
            label_overrides=tuple((k, v) for k, v in overrides if v),
            dry_run=_bool(env, "dry-run", False), min_confidence=min_confidence,
            comment=_bool(env, "comment", True),
            # An empty relabels-file turns recording off, so absent and empty differ here.
            relabels_file=_input_set(env, "relabels-file") if _input_set(env, "relabels-file")
            is not None else RELABELS_FILE,
            backlog_limit=int(limit), issue_number=int(number.lstrip("#")) if number else None)


def load_repo_positioning(settings: Settings) -> Positioning:
    """The positioning file from the checked-out repository."""
    workspace = settings.workspace
    if settings.positioning_file:
        path = Path(settings.positioning_file)
        path = path if path.is_absolute() else workspace / path
        if not path.is_file():
            raise ConfigError(settings.positioning_file, f"positioning file not found in the "
                              f"workspace ({workspace}).", "check the positioning-file input "
                              "(a path from the repository root) and run actions/checkout "
                              "before scopeguard.")
        return load_positioning(path)
    try:
        return load_positioning(find_positioning(workspace))
    except ConfigError as exc:
        if "no positioning file" not in str(exc):
            raise
        raise ConfigError(str(workspace), "no positioning file in the workspace (looked for "
                          + ", ".join(DEFAULT_FILENAMES) + ").",
                          "commit a scopeguard.yml (`scopeguard init` writes a template), run "
                          "actions/checkout before this step, or set the positioning-file "
                          "input.") from None


def label_names(positioning: Positioning, overrides: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Tracker label names by key: the positioning file's, then the label-* inputs."""
    names = {**positioning.labels, **dict(overrides)}
    if len({n.lower() for n in names.values()}) != len(names):
        raise InputError(f"label names must differ, got {names}. Fix: give label-core, "
                         "label-generalizable and label-one-off (or the positioning file's "
                         "labels) distinct names.")
    return names


# --- reporting: outputs, summary, annotations -------------------------------------------------


def _escape(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


class Report:
    """GITHUB_OUTPUT, GITHUB_STEP_SUMMARY and workflow commands, with secrets scrubbed."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.output_path = env.get("GITHUB_OUTPUT", "")
        self.summary_path = env.get("GITHUB_STEP_SUMMARY", "")
        self.secrets: list[str] = []

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, "***")
        return text

    def log(self, text: str) -> None:
        print(self.scrub(text), flush=True)

    def notice(self, text: str) -> None:
        self.log(f"::notice::{_escape(text)}")

    def warning(self, text: str) -> None:
        self.log(f"::warning::{_escape(text)}")

    def outputs(self, **values: str) -> None:
        if not self.output_path:
            return
        with open(self.output_path, "a", encoding="utf-8") as out:
            for key, value in values.items():
                value = self.scrub(str(value)).replace("\n", " ")
                out.write(f"{key.replace('_', '-')}={value}\n")

    def summary(self, markdown: str) -> None:
        if self.summary_path:
            with open(self.summary_path, "a", encoding="utf-8") as out:
                out.write(self.scrub(markdown).rstrip("\n") + "\n\n")

    def skip(self, reason: str) -> int:
        self.notice(f"scopeguard skipped: {reason}")
        self.outputs(label="", confidence="", input_class="", skipped=reason)
        self.summary(f"### scopeguard skipped\n\n{reason}")
        return 0

    def fail(self, message: str) -> int:
        message = self.scrub(message)
        self.summary(f"### scopeguard failed\n\n**Error:** {message}")
        self.log(f"::error::{_escape(message)}")
        return 1


# --- the scopeguard comment -------------------------------------------------------------------


@dataclass
class Thread:
    """scopeguard's comment(s) on an issue and what their hidden markers say."""

    comments: list[Any]  # PyGithub IssueComment, oldest first

    @property
    def body(self) -> str:
        return self.comments[0].body if self.comments else ""

    @property
    def predicted(self) -> str | None:
        """The label scopeguard last gave, or None when it never commented."""
        found = render.LABEL_MARKER.search(self.body)
        return found.group(1) if found else None

    @property
    def human(self) -> tuple[str, str] | None:
        found = HUMAN_MARKER.search(self.body)
        return (found.group(1), found.group(2) or "") if found else None


def read_thread(issue: Any) -> Thread:
    with github_errors(f"reading the comments of #{issue.number}", needs="issues: read"):
        return Thread([c for c in issue.get_comments()
                       if (c.body or "").lstrip().startswith(render.COMMENT_MARKER)])


def compose(markdown: str, notes: Sequence[str], human: tuple[str, str] | None) -> str:
    """The comment: ``markdown`` with earlier notes dropped and ``notes`` after the markers."""
    lines = [line for line in markdown.split("\n")
             if not HUMAN_MARKER.fullmatch(line.strip()) and not line.startswith(NOTE_PREFIXES)]
    head = 2 if len(lines) > 1 and render.LABEL_MARKER.search(lines[1]) else 1
    rest = lines[head:]
    while rest and not rest[0].strip():  # the blank line an earlier note left
        rest.pop(0)
    extra = []
    if human:
        by = f" by={human[1]}" if human[1] else ""
        extra.append(f"<!-- scopeguard:human-label={human[0]}{by} -->")
    extra += [*notes, ""] if notes else []
    return "\n".join(lines[:head] + extra + rest)


def human_note(name: str, by: str) -> str:
    who = f" (set by @{by})" if by else ""
    return (f"> **Maintainer's label stands:** `{name}`{who}. scopeguard's own verdict is "
            "below for reference; it never changes a maintainer's label.")


def upsert_comment(issue: Any, thread: Thread, body: str) -> tuple[Any, str]:
    """Update scopeguard's comment (or create it): one comment per issue, whatever happens.

    A retried POST or two runs racing can leave a second marked comment; it is deleted.
    """
    with github_errors(f"commenting on #{issue.number}"):
        if not thread.comments:
            return issue.create_comment(body), "created"
        first, what = thread.comments[0], "unchanged"
        if first.body != body:
            first.edit(body)
            what = "updated"
        for extra in thread.comments[1:]:
            extra.delete()
        return first, what


# --- labels ------------------------------------------------------------------------------------


def scope_keys(label_list: Sequence[str], names: Mapping[str, str]) -> list[str]:
    """The scope labels (keys, in LABELS order) among an issue's labels."""
    present = {x.lower() for x in label_list}
    return [key for key in LABELS if names[key].lower() in present]


def key_of(label: str, names: Mapping[str, str]) -> str | None:
    return next((k for k, n in names.items() if n.lower() == label.lower()), None)


def ensure_labels(repo: Any, names: Mapping[str, str]) -> list[str]:
    """Create the three scope labels that the repository lacks; returns those created."""
    created = []
    with github_errors("creating the scope labels"):
        existing = {label.name.lower() for label in repo.get_labels()}
        for key, name in names.items():
            if name.lower() in existing:
                continue
            color, description = LABEL_STYLE[key]
            try:
                repo.create_label(name, color, description)
                created.append(name)
            except GithubException as exc:
                if exc.status != 422:  # 422: another run created it meanwhile
                    raise
    return created


def remove_label(issue: Any, name: str) -> None:
    with github_errors(f"removing the label {name!r} from #{issue.number}"):
        try:
            issue.remove_from_labels(name)
        except GithubException as exc:
            if exc.status != 404:  # already gone
                raise


# --- maintainers' corrections -----------------------------------------------------------------


def is_bot(login: str, kind: str = "") -> bool:
    return kind == "Bot" or login.endswith("[bot]")


def labeler(issue: Any, name: str) -> str:
    """Who last added the label ``name`` to ``issue``, from its events ("" if unknown)."""
    who = ""
    with github_errors(f"reading the events of #{issue.number}", needs="issues: read"):
        for event in issue.get_events():
            data = raw_json(event)
            label = (data.get("label") or {}).get("name") or ""
            if data.get("event") == "labeled" and label.lower() == name.lower():
                who = (data.get("actor") or {}).get("login") or ""
    return who


def correction_row(positioning: Positioning, request: Request, label: str, predicted: str,
                   by: str) -> dict[str, str]:
    """A maintainer's correction as a labelled-backlog row (``scopeguard calibrate --labels``)."""
    return {"id": request.id, "title": request.title, "body": request.body,
            "author": request.author, "customer": resolve_customer(request, positioning.customer),
            "created_at": request.created_at, "url": request.url, "label": label,
            "predicted": predicted,
            "recorded_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "by": by}


def commit_relabel(repo: Any, path: str, row: Mapping[str, Any], message: str) -> str:
    """Add ``row`` to the JSONL file at ``path`` (replacing an older row of the same id).

    Goes through the contents API: create, or update with the file's ``sha``; a conflict
    (another run committed meanwhile) is retried on the fresh file. Returns the commit sha,
    or "" when the file already holds the row.
    """
    line = json.dumps(row, ensure_ascii=False)

    def same_id(existing: str) -> bool:
        try:
            return json.loads(existing).get("id") == row["id"]
        except (ValueError, AttributeError):
            return False  # keep lines scopeguard cannot read; calibrate names them

    with github_errors(f"recording the relabel in {path}", needs="contents: write"):
        for _attempt in range(4):
            try:
                current = repo.get_contents(path)
                text, sha = current.decoded_content.decode("utf-8"), current.sha
            except GithubException as exc:
                if exc.status != 404:
                    raise
                text, sha = "", None
            kept = [x for x in text.splitlines() if x.strip() and not same_id(x)]
            new = "\n".join([*kept, line]) + "\n"
            if new == text:
                return ""
            try:
                if sha:
                    result = repo.update_file(path, message, new, sha)
                else:
                    result = repo.create_file(path, message, new)
                return result["commit"].sha
            except GithubException as exc:
                if exc.status not in (409, 422):  # a stale sha, or created meanwhile
                    raise
    raise GitHubError(f"{path} kept changing while scopeguard recorded a relabel. Fix: "
                      "re-run the job.")


def describe_correction(ctx: Context, row: Mapping[str, str]) -> str:
    """The job summary's account of a correction, with the row to be committed."""
    target, names = ctx.settings.relabels_file, ctx.names
    verb = "would record" if ctx.settings.dry_run else "recording"
    where = f"{verb.capitalize()} in `{target}`:" if target else "Recording is off."
    return (f"Maintainer's correction by @{row['by'] or 'unknown'}: scopeguard said "
            f"`{names[row['predicted']]}`, the maintainer's label is `{names[row['label']]}`. "
            f"{where}\n\n```json\n{json.dumps(row, indent=2, ensure_ascii=False)}\n```")


def save_correction(ctx: Context, number: int, row: Mapping[str, str]) -> str:
    """Commit ``row`` to the relabels file; returns what was done, for the summary."""
    target = ctx.settings.relabels_file
    if not target:
        return "recording is off"
    sha = commit_relabel(ctx.repo, target, row,
                         f"scopeguard: #{number} relabelled {row['predicted']} -> "
                         f"{row['label']} by @{row['by'] or 'unknown'}\n\n[skip ci]")
    return f"correction committed to `{target}` ({sha[:7]})" if sha else "already recorded"


# --- the two flows ----------------------------------------------------------------------------


@dataclass
class Context:
    settings: Settings
    report: Report
    positioning: Positioning
    names: dict[str, str]
    repo: Any


def other_requests(ctx: Context, request: Request) -> list[Request]:
    """The repository's other open feature requests: demand and similar requests."""
    limit = ctx.settings.backlog_limit
    if limit == 0:
        return []
    out = []
    for other in fetch_open_issues(ctx.repo, limit=limit + 1):
        if other.id == request.id or not is_feature_request(other, ctx.positioning.filters)[0]:
            continue
        try:
            out.append(check_request(other))
        except InputError:  # an unusable issue does not stop this one's verdict
            continue
    return out[:limit]


def classify_issue(ctx: Context, issue: Any, data: Mapping[str, Any]) -> int:
    """Classify, label, comment: for opened, edited and reopened issues."""
    settings, report, names = ctx.settings, ctx.report, ctx.names
    request = issue_to_request(data)
    ok, why = is_feature_request(request, ctx.positioning.filters)
    if not ok:
        return report.skip(f"#{issue.number} is not a feature request: it {why} (the "
                           "positioning file's filters decide).")
    thread = read_thread(issue)
    backlog = other_requests(ctx, request)
    from scopeguard.runtime import open_scopeguard  # loads the model: only when classifying

    guard = open_scopeguard(positioning=ctx.positioning, db=settings.db)
    verdict = guard.classify(request, backlog)
    name = names[verdict.label]
    report.outputs(label=verdict.label, confidence=f"{verdict.confidence:.3f}",
                   input_class=verdict.input_class, skipped="")
    on_issue = scope_keys(request.labels, names)
    predicted = thread.predicted if thread.predicted in names else None
    if thread.human and thread.human[0] in on_issue:
        human: tuple[str, str] | None = thread.human
    else:
        # Without a verdict comment, every scope label on the issue is a maintainer's.
        others = [k for k in on_issue if k != predicted]
        human = (others[0], "") if others else None
    correction = None
    if human and predicted and not (thread.human and thread.human[0] == human[0]):
        # A maintainer's label no `labeled` run recorded (cancelled while pending behind
        # another run of the concurrency group, or the workflow lacks the trigger).
        by = labeler(issue, names[human[0]])
        human = (human[0], by)
        if not is_bot(by):
            correction = correction_row(ctx.positioning, request, human[0], predicted, by)
    notes: list[str] = []
    add, remove = None, []
    if human:
        notes.append(human_note(names[human[0]], human[1]))
        # scopeguard's own earlier label goes; the maintainer's stays.
        remove = [names[k] for k in on_issue if k == predicted and k != human[0]]
    elif verdict.confidence < settings.min_confidence:
        notes.append(f"> **Not labelled:** confidence {verdict.confidence:.0%} is below the "
                     f"`min-confidence` of {settings.min_confidence:.0%}; a maintainer decides.")
        remove = [names[k] for k in on_issue]
    else:
        add = name if verdict.label not in on_issue else None
        remove = [names[k] for k in on_issue if k != verdict.label]
    body = compose(render.to_markdown(verdict, name, ctx.positioning.product), notes, human)
    plan = [f"keep the maintainer's label `{names[human[0]]}`"] if human else []
    plan += ["record the correction"] if correction and settings.relabels_file else []
    plan += [f"remove `{r}`" for r in remove] + ([f"add `{add}`"] if add else [])
    if not add and not remove and not human:
        plan.append("labels unchanged" if verdict.label in on_issue else "no label")
    if settings.comment:
        plan.append("update the comment" if thread.comments else "post the comment")
    # The verdict reaches the summary before any write, so a failed write cannot lose it.
    report.summary(f"## scopeguard: #{issue.number} {request.title}\n\n{body}\n\n---\n"
                   + (describe_correction(ctx, correction) + "\n\n" if correction else "")
                   + ("**Dry run:** would " if settings.dry_run else "**Plan:** ")
                   + "; ".join(plan) + ".")
    report.log(f"#{issue.number}: {verdict.label} ({verdict.confidence:.0%}, "
               f"{verdict.input_class}); " + "; ".join(plan))
    if settings.dry_run:
        report.notice(f"dry run: #{issue.number} is {name} ({verdict.confidence:.0%}); "
                      "nothing was changed on GitHub.")
        return 0
    done = [save_correction(ctx, issue.number, correction)] if correction else []
    if add:
        ensure_labels(ctx.repo, names)
    if settings.comment:
        comment, what = upsert_comment(issue, thread, body)
        done.append(f"comment {what}: {comment.html_url}")
    for label in remove:
        remove_label(issue, label)
    if add:
        with github_errors(f"labelling #{issue.number} {add!r}"):
            issue.add_to_labels(add)
    done += [f"removed `{r}`" for r in remove] + ([f"labelled `{add}`"] if add else [])
    report.summary("**Done:** " + "; ".join(done or ["nothing to change"]) + ".")
    return 0


def record_relabel(ctx: Context, issue: Any, data: Mapping[str, Any], label: str,
                   sender: Mapping[str, Any]) -> int:
    """A scope label was added: if a maintainer corrected scopeguard, record it."""
    settings, report, names = ctx.settings, ctx.report, ctx.names
    key = key_of(label, names)
    assert key is not None
    login = str(sender.get("login") or "")
    if is_bot(login, str(sender.get("type") or "")):
        return report.skip(f"`{label}` on #{issue.number} was set by {login or 'a bot'}, not "
                           "a maintainer: nothing to record.")
    thread = read_thread(issue)
    predicted = thread.predicted
    if predicted not in names:
        return report.skip(f"#{issue.number} has no scopeguard verdict, so `{label}` corrects "
                           "nothing.")
    earlier = thread.human[0] if thread.human else None
    if key == predicted and earlier in (None, key):
        return report.skip(f"`{label}` on #{issue.number} agrees with scopeguard's verdict.")
    request = issue_to_request(data)
    row = correction_row(ctx.positioning, request, key, predicted, login)
    report.outputs(label=key, confidence="", input_class="", skipped="")
    report.summary(f"## scopeguard: #{issue.number} relabelled by @{login}\n\n"
                   + describe_correction(ctx, row))
    if settings.dry_run:
        report.notice(f"dry run: would record @{login}'s relabel of #{issue.number}.")
        return 0
    # The record first: the comment's marker then means "recorded", and a failed commit
    # is retried by the next run of the issue.
    done = [save_correction(ctx, issue.number, row)]
    if key != predicted and names[predicted].lower() in {x.lower() for x in request.labels}:
        remove_label(issue, names[predicted])
        done.append(f"removed scopeguard's `{names[predicted]}`")
    if settings.comment:
        body = compose(thread.body, [human_note(label, login)], (key, login))
        comment, what = upsert_comment(issue, thread, body)
        done.append(f"comment {what}")
    report.log(f"#{issue.number}: @{login} relabelled {predicted} -> {key}; " + "; ".join(done))
    report.summary("**Done:** " + "; ".join(done) + ".")
    return 0


# --- entry point ------------------------------------------------------------------------------


def read_event(settings: Settings) -> dict[str, Any]:
    if not settings.event_path:
        if settings.issue_number:
            return {}
        raise InputError("GITHUB_EVENT_PATH is not set. Fix: run scopeguard as a step of a "
                         "workflow triggered by `issues` events, or set the issue-number input.")
    try:
        return json.loads(Path(settings.event_path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the event file {settings.event_path} "
                         f"({type(exc).__name__}). Fix: run scopeguard inside GitHub Actions, "
                         "or point GITHUB_EVENT_PATH at an event JSON file.") from None


def run(settings: Settings, report: Report, env: Mapping[str, str]) -> int:
    event = read_event(settings)
    action = "dispatch"
    if settings.issue_number is None:
        name = settings.event_name
        if name.startswith("pull_request"):
            return report.skip("pull requests are not feature requests.")
        if name and name != "issues":
            return report.skip(f"scopeguard runs on `issues` events; this was `{name}`.")
        action = str(event.get("action") or "")
        payload = event.get("issue") or {}
        if action not in CLASSIFY_ACTIONS:
            return report.skip(f"nothing to do for `issues.{action or '?'}`.")
        if is_pull_request(payload):
            return report.skip(f"#{payload.get('number')} is a pull request, not a feature "
                               "request.")
        if not payload.get("number"):
            raise InputError(f"the event in {settings.event_path} has no issue. Fix: trigger "
                             "scopeguard with `on: issues`.")
        number = int(payload["number"])
    else:
        number = settings.issue_number
    positioning = load_repo_positioning(settings)
    names = label_names(positioning, settings.label_overrides)
    client = make_client(settings.token, settings.api_url, **settings_from_env(env))
    repo = get_repository(client, settings.repository)
    with github_errors(f"reading issue #{number}", needs="issues: read"):
        issue = repo.get_issue(number)
        data = raw_json(issue)
    if is_pull_request(data):
        return report.skip(f"#{number} is a pull request, not a feature request.")
    ctx = Context(settings, report, positioning, names, repo)
    label = str((event.get("label") or {}).get("name") or "")
    if action == "labeled" and key_of(label, names):
        return record_relabel(ctx, issue, data, label, event.get("sender") or {})
    return classify_issue(ctx, issue, data)


def main(environ: Mapping[str, str] | None = None) -> int:
    """Run the Action; returns the exit status (0 done or skipped, 1 failed)."""
    env = os.environ if environ is None else environ
    report = Report(env)
    report.secrets = [s for s in (env.get("INPUT_TOKEN", "").strip(),
                                  env.get("GITHUB_TOKEN", "").strip()) if s]
    try:
        return run(Settings.from_env(env), report, env)
    except ScopeguardError as exc:
        return report.fail(str(exc))
    except Exception as exc:  # a bug: still fail clearly, with the token scrubbed
        print(report.scrub(traceback.format_exc()), file=sys.stderr)
        return report.fail(f"unexpected {type(exc).__name__}: {exc}. This is a bug in "
                           "scopeguard; please report it with this log.")


if __name__ == "__main__":
    sys.exit(main())

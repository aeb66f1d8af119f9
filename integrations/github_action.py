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
  verdict: a correction. It is committed as one JSONL row to the relabels file
  (github_relabels.py), scopeguard's own label is removed, the comment notes it. A
  correction no ``labeled`` run recorded is recorded by the issue's next run.
- Pull requests and issues the positioning file's ``filters`` exclude (bugs, questions)
  are skipped with a ``::notice::``. ``dry-run`` changes nothing on GitHub.

Outputs (``GITHUB_OUTPUT``): label, confidence, input-class, skipped. The verdict goes to
the job summary before anything is written, so a failed write never loses it. Failures
print ``::error::`` with the fix, add it to the summary, and exit with status 1
(github_io.py reads the inputs and writes the outputs, the summary and the log).
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from github import GithubException

from scopeguard import render
from scopeguard.backlog import (
    Request,
    check_request,
    is_bot,
    is_feature_request,
    skipped_author,
)
from scopeguard.errors import ConfigError, InputError, ScopeguardError
from scopeguard.markup import md_code, md_text
from scopeguard.positioning import (
    DEFAULT_FILENAMES,
    LABELS,
    Positioning,
    find_positioning,
    load_positioning,
)

from .github_client import (
    fetch_open_issues,
    get_repository,
    github_errors,
    is_pull_request,
    issue_to_request,
    make_client,
    own_login,
    raw_json,
    settings_from_env,
)
from .github_io import Report, Settings, read_event
from .github_relabels import MaintainerLabel, Relabels

# Colours and descriptions of the labels scopeguard creates (GitHub allows 100 characters).
LABEL_STYLE = {
    "core": ("0e8a16", "scopeguard: fits the product's positioning; extends what it is for"),
    "generalizable": ("fbca04", "scopeguard: not core today; a general form would serve the "
                                "target customers"),
    "one_off": ("d93f0b", "scopeguard: one customer's situation, outside the positioning"),
}
# A maintainer's scope label that stands: see render.HUMAN_MARKER.
HUMAN_MARKER = render.HUMAN_MARKER
NOTE_PREFIXES = ("> **Maintainer's label stands", "> **Not labelled")
CLASSIFY_ACTIONS = ("opened", "edited", "reopened", "labeled")


# --- the positioning file and label names -----------------------------------------------------


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


# --- the scopeguard comment -------------------------------------------------------------------


@dataclass
class Thread:
    """scopeguard's own comment(s) on an issue and what their hidden markers say.

    Only comments whose author is scopeguard's account (``login``) and which open with
    the verdict marker are its own; their markers are read from the header lines alone.
    A comment anyone else wrote is never read, edited or deleted, whatever it contains.
    """

    comments: list[Any]  # PyGithub IssueComment, scopeguard's own, oldest first

    @property
    def current(self) -> Any:
        """The comment scopeguard keeps: its newest."""
        return self.comments[-1] if self.comments else None

    @property
    def body(self) -> str:
        return self.current.body if self.comments else ""

    @property
    def markers(self) -> render.Markers:
        return render.read_markers(self.body)

    @property
    def predicted(self) -> str | None:
        """The label scopeguard last gave, or None when it never commented."""
        return self.markers.label

    @property
    def human(self) -> MaintainerLabel | None:
        """The maintainer's label the comment records as standing."""
        markers = self.markers
        return MaintainerLabel(markers.human, markers.human_by) if markers.human else None


def is_own(comment: Any, login: str) -> bool:
    """Whether ``comment`` is scopeguard's: written by ``login`` and opening with the marker."""
    user = comment.user.login if comment.user else ""
    return (bool(login) and user.lower() == login.lower()
            and render.read_markers(comment.body or "").verdict)


def read_thread(issue: Any, login: str) -> Thread:
    """scopeguard's own comments on ``issue`` (``login`` is its account; see :class:`Thread`)."""
    with github_errors(f"reading the comments of #{issue.number}", needs="issues: read"):
        return Thread([c for c in issue.get_comments() if is_own(c, login)])


def compose(markdown: str, notes: Sequence[str], human: MaintainerLabel | None) -> str:
    """The comment: ``markdown`` with earlier notes dropped and ``notes`` after the markers."""
    lines = markdown.split("\n")
    head = render.marker_lines(lines)
    lines = [line for n, line in enumerate(lines)
             if not (n < head and HUMAN_MARKER.fullmatch(line.strip()))
             and not line.startswith(NOTE_PREFIXES)]
    head = render.marker_lines(lines)
    rest = lines[head:]
    while rest and not rest[0].strip():  # the blank line an earlier note left
        rest.pop(0)
    extra = []
    if human:
        by = f" by={human.by}" if re.fullmatch(r"[\w.\[\]-]+", human.by or "") else ""
        extra.append(f"<!-- scopeguard:human-label={human.key}{by} -->")
    extra += [*notes, ""] if notes else []
    return "\n".join(lines[:head] + extra + rest)


def human_note(name: str, by: str) -> str:
    """The comment's note that the maintainer's label ``name`` (set by ``by``) stands."""
    who = f" (set by {md_text('@' + by)})" if by else ""
    return (f"> **Maintainer's label stands:** {md_code(name)}{who}. scopeguard's own "
            "verdict is below for reference; it never changes a maintainer's label.")


def upsert_comment(issue: Any, thread: Thread, body: str) -> tuple[Any, str]:
    """Update scopeguard's comment (or create it): one comment per issue, whatever happens.

    A retried POST or two runs racing can leave a second comment of scopeguard's own:
    the newest is kept and the older ones of its own are deleted. Nobody else's comment
    is touched (``thread`` holds scopeguard's own only).
    """
    with github_errors(f"commenting on #{issue.number}"):
        if not thread.comments:
            return issue.create_comment(body), "created"
        keep, what = thread.current, "unchanged"
        if keep.body != body:
            keep.edit(body)
            what = "updated"
        for extra in thread.comments[:-1]:
            extra.delete()
        return keep, what


# --- labels -----------------------------------------------------------------------------------


def key_of(label: str, names: Mapping[str, str]) -> str | None:
    """The key (core, generalizable, one_off) of a scope label name; None for other labels.
    GitHub label names are case-insensitive."""
    return next((k for k, n in names.items() if n.lower() == label.lower()), None)


def scope_keys(label_list: Sequence[str], names: Mapping[str, str]) -> list[str]:
    """The scope labels (keys, in LABELS order) among an issue's labels."""
    present = {key_of(label, names) for label in label_list}
    return [key for key in LABELS if key in present]


def ensure_labels(repo: Any, names: Mapping[str, str]) -> None:
    """Create the three scope labels that the repository lacks."""
    with github_errors("creating the scope labels"):
        existing = {label.name.lower() for label in repo.get_labels()}
        for key, name in names.items():
            if name.lower() in existing:
                continue
            color, description = LABEL_STYLE[key]
            try:
                repo.create_label(name, color, description)
            except GithubException as exc:
                if exc.status != 422:  # 422: another run created it meanwhile
                    raise


def remove_label(issue: Any, name: str) -> None:
    """Remove the label ``name`` from ``issue``; one already gone is fine."""
    with github_errors(f"removing the label {name!r} from #{issue.number}"):
        try:
            issue.remove_from_labels(name)
        except GithubException as exc:
            if exc.status != 404:  # already gone
                raise


# --- the two flows ----------------------------------------------------------------------------


@dataclass
class Context:
    """What both flows share: the settings, the report and the repository's setup."""

    settings: Settings
    report: Report
    positioning: Positioning
    names: dict[str, str]
    repo: Any
    relabels: Relabels
    login: str  # the account scopeguard writes as: its own comments are this account's
    guard: Any = None  # a loaded Scopeguard (the webhook service's); None: load one here


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


def classify_issue(ctx: Context, issue: Any, request: Request) -> int:
    """Classify, label, comment: for opened, edited and reopened issues."""
    settings, report, names = ctx.settings, ctx.report, ctx.names
    thread = read_thread(issue, ctx.login)
    backlog = other_requests(ctx, request)
    guard = ctx.guard
    if guard is None:
        from scopeguard.runtime import open_scopeguard  # loads the model: only when classifying

        guard = open_scopeguard(positioning=ctx.positioning, db=settings.db)
    verdict = guard.classify(request, backlog)
    name = names[verdict.label]
    report.outputs(label=verdict.label, confidence=f"{verdict.confidence:.3f}",
                   input_class=verdict.input_class, skipped="")
    on_issue = scope_keys(request.labels, names)
    predicted = thread.predicted if thread.predicted in names else None
    # A maintainer's label stands; one no `labeled` run recorded is a correction to record.
    human, correction = ctx.relabels.find(issue, request, on_issue, predicted, thread.human,
                                          own_login=ctx.login)
    notes: list[str] = []
    add, remove = None, []
    if human:
        notes.append(human_note(names[human.key], human.by))
        # scopeguard's own earlier label goes; the maintainer's stays.
        remove = [names[k] for k in on_issue if k == predicted and k != human.key]
    elif verdict.confidence < settings.min_confidence:
        notes.append(f"> **Not labelled:** confidence {verdict.confidence:.0%} is below the "
                     f"`min-confidence` of {settings.min_confidence:.0%}; a maintainer decides.")
        remove = [names[k] for k in on_issue]
    else:
        add = name if verdict.label not in on_issue else None
        remove = [names[k] for k in on_issue if k != verdict.label]
    body = compose(render.to_markdown(verdict, name, ctx.positioning.product), notes, human)
    plan = [f"keep the maintainer's label `{names[human.key]}`"] if human else []
    plan += ["record the correction"] if correction and settings.relabels_file else []
    plan += [f"remove `{r}`" for r in remove] + ([f"add `{add}`"] if add else [])
    if not add and not remove and not human:
        plan.append("labels unchanged" if verdict.label in on_issue else "no label")
    if settings.comment:
        plan.append("update the comment" if thread.comments else "post the comment")
    # The verdict reaches the summary before any write, so a failed write cannot lose it.
    report.summary(f"## scopeguard: #{issue.number} {md_text(request.title)}\n\n{body}\n\n---\n"
                   + (ctx.relabels.describe(correction) + "\n\n" if correction else "")
                   + ("**Dry run:** would " if settings.dry_run else "**Plan:** ")
                   + "; ".join(plan) + ".")
    report.log(f"#{issue.number}: {verdict.label} ({verdict.confidence:.0%}, "
               f"{verdict.input_class}); " + "; ".join(plan))
    if settings.dry_run:
        report.notice(f"dry run: #{issue.number} is {name} ({verdict.confidence:.0%}); "
                      "nothing was changed on GitHub.")
        return 0
    done = [ctx.relabels.save(issue.number, correction)] if correction else []
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
    return report.done(done)


def record_relabel(ctx: Context, issue: Any, request: Request, label: str,
                   sender: Mapping[str, Any]) -> int:
    """A scope label was added: if a maintainer corrected scopeguard, record it."""
    settings, report, names = ctx.settings, ctx.report, ctx.names
    key = key_of(label, names)
    assert key is not None
    login = str(sender.get("login") or "")
    if is_bot(login, str(sender.get("type") or "")) or login.lower() == ctx.login.lower():
        return report.skip(f"{md_code(label)} on #{issue.number} was set by "
                           f"{md_text(login or 'a bot')}, not a maintainer: nothing to record.")
    thread = read_thread(issue, ctx.login)
    predicted = thread.predicted
    if predicted not in names:
        return report.skip(f"#{issue.number} has no scopeguard verdict, so `{label}` corrects "
                           "nothing.")
    earlier = thread.human.key if thread.human else None
    if key == predicted and earlier in (None, key):
        return report.skip(f"{md_code(label)} on #{issue.number} agrees with scopeguard's "
                           "verdict.")
    row = ctx.relabels.row(request, key, predicted, login)
    report.outputs(label=key, confidence="", input_class="", skipped="")
    report.summary(f"## scopeguard: #{issue.number} relabelled by {md_text('@' + login)}\n\n"
                   + ctx.relabels.describe(row))
    if settings.dry_run:
        report.notice(f"dry run: would record @{login}'s relabel of #{issue.number}.")
        return 0
    # The record first: the comment's marker then means "recorded", and a failed commit
    # is retried by the next run of the issue.
    done = [ctx.relabels.save(issue.number, row)]
    if key != predicted and predicted in scope_keys(request.labels, names):
        remove_label(issue, names[predicted])
        done.append(f"removed scopeguard's `{names[predicted]}`")
    if settings.comment:
        body = compose(thread.body, [human_note(label, login)], MaintainerLabel(key, login))
        comment, what = upsert_comment(issue, thread, body)
        done.append(f"comment {what}")
    report.log(f"#{issue.number}: @{login} relabelled {predicted} -> {key}; " + "; ".join(done))
    return report.done(done)


# --- entry point ------------------------------------------------------------------------------


def run(settings: Settings, report: Report, env: Mapping[str, str]) -> int:
    """Dispatch the event to a flow, or skip it; returns the exit status."""
    return handle_event(settings, report, read_event(settings), env)


def handle_event(settings: Settings, report: Report, event: Mapping[str, Any],
                 env: Mapping[str, str], *, positioning: Positioning | None = None,
                 guard: Any = None, login: str | None = None) -> int:
    """Handle one ``issues`` event (the Action's, or a webhook delivery of the service).

    Args:
        positioning: the positioning file; default: the one in the checked-out workspace.
        guard: a loaded ``Scopeguard`` to classify with; default: load one.
        login: the account the token writes as (whose comments are scopeguard's own);
            default: from the settings, else asked of GitHub (``own_login``).
    """
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
    positioning = positioning or load_repo_positioning(settings)
    if settings.exclude_authors:
        filters = positioning.filters
        positioning = replace(positioning, filters=replace(
            filters, skip_authors=(*filters.skip_authors, *settings.exclude_authors)))
    names = label_names(positioning, settings.label_overrides)
    payload = event.get("issue") or {}
    if payload.get("user"):  # a bot's issue is skipped before any call to GitHub
        why = skipped_author(issue_to_request({"number": number, **payload}),
                             positioning.filters)
        if why:
            return report.skip(f"#{number} is not a feature request: it {why}.")
    client = make_client(settings.token, settings.api_url, **settings_from_env(env))
    repo = get_repository(client, settings.repository)
    with github_errors(f"reading issue #{number}", needs="issues: read"):
        issue = repo.get_issue(number)
        data = raw_json(issue)
    if is_pull_request(data):
        return report.skip(f"#{number} is a pull request, not a feature request.")
    relabels = Relabels(repo, positioning, names, settings.relabels_file, settings.dry_run)
    login = login or own_login(client, settings.token, configured=settings.bot_login,
                               workflow_token=settings.workflow_token)
    ctx = Context(settings, report, positioning, names, repo, relabels, login, guard)
    request = issue_to_request(data)
    ok, why = is_feature_request(request, positioning.filters)
    if not ok:
        return report.skip(f"#{number} is not a feature request: it {why} (the "
                           "positioning file's filters decide).")
    label = str((event.get("label") or {}).get("name") or "")
    if action == "labeled" and key_of(label, names):
        return record_relabel(ctx, issue, request, label, event.get("sender") or {})
    return classify_issue(ctx, issue, request)


def main(environ: Mapping[str, str] | None = None) -> int:
    """Run the Action; returns the exit status (0 done or skipped, 1 failed)."""
    env = os.environ if environ is None else environ
    report = Report(env)  # scrubs the token from everything it writes
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

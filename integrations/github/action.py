"""The GitHub Action: label an issue core, generalizable or one-off, and explain why.

Run as ``python -m scopeguard.integrations.github`` (action.yml does). It reads the
event (``GITHUB_EVENT_PATH``, ``GITHUB_EVENT_NAME``), ``GITHUB_REPOSITORY``,
``GITHUB_API_URL``, the positioning file from the checked-out workspace
(``GITHUB_WORKSPACE``: run actions/checkout first) and the ``INPUT_*`` variables action.yml
sets (``INPUT_DRY_RUN`` or GitHub's own ``INPUT_DRY-RUN`` spelling), then:

- ``issues`` opened, edited, reopened, or labeled with a label that is not a scope label:
  classify the issue against the positioning file and the repository's other open
  issues (demand), set the scope label (creating the three labels if missing, removing
  an older one scopeguard set) and create or update ONE comment, its own
  (:mod:`.comments`). A scope label a maintainer set is never changed: the comment says it stands.
- ``issues`` labeled with a scope label, by a person, that differs from scopeguard's
  verdict: a correction. It is committed as one JSONL row to the relabels file
  (:mod:`.relabels`), scopeguard's own label is removed, the comment notes it. A
  correction no ``labeled`` run recorded is recorded by the issue's next run.
- Pull requests and issues the positioning file's ``filters`` exclude (bugs, questions)
  are skipped with a ``::notice::``. ``dry-run`` changes nothing on GitHub.

Outputs (``GITHUB_OUTPUT``): label, confidence, input-class, skipped. The verdict goes to
the job summary before anything is written, so a failed write never loses it. Failures
print ``::error::`` with the fix, add it to the summary, and exit with status 2 for bad
input (the inputs, the event file, the positioning file) or 1 when GitHub or the network
failed (:mod:`.runner` reads the inputs and writes the outputs, the summary and the log).

One run goes down these modules and never back: :mod:`.runner` (settings, event) ->
:mod:`.client` (the repository, the account scopeguard writes as) -> :mod:`.issues`
(the issue as a request) -> :mod:`.comments` (its own comment) -> :mod:`.relabels` (a
maintainer's label) -> the classifier -> :mod:`.labels` and :mod:`.comments` (writes).
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from scopeguard import render
from scopeguard.backlog import (
    Request,
    check_request,
    is_bot,
    is_feature_request,
    skipped_author,
    sound_request,
)
from scopeguard.errors import ConfigError, InputError, ScopeguardError
from scopeguard.markup import md_code, md_text
from scopeguard.positioning import DEFAULT_FILENAMES, Positioning, find_positioning, load_positioning

from ..lease import confirm_lease
from .client import get_repository, make_client, own_login, settings_from_env
from .comments import MaintainerLabel, compose, human_note, read_thread, upsert_comment
from .errors import GitHubPermissionError, github_errors
from .issues import fetch_open_issues, is_pull_request, issue_json, issue_to_request
from .labels import check_label_name, ensure_labels, has_label, key_of, label_names, remove_label, scope_keys
from .relabels import Relabels, RelabelsRefused, set_by_person
from .runner import Report, Settings, read_event

CLASSIFY_ACTIONS = ("opened", "edited", "reopened", "labeled")


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
    if thread.others and not thread.comments:
        report.notice(f"#{issue.number} has comments with scopeguard's marker by "
                      f"{', '.join(thread.others)}, not by {ctx.login} (the account scopeguard "
                      "writes as): they are left alone. If scopeguard used to write as that "
                      "account, set the bot-login input to it.")
    backlog = other_requests(ctx, request)
    guard = ctx.guard
    if guard is None:
        from scopeguard.runtime import open_scopeguard  # loads the model: only when classifying

        guard = open_scopeguard(positioning=ctx.positioning, db=settings.db)
    verdict = guard.classify(request, backlog)
    if ctx.guard is None:  # the Action's own cache, carried between runs: keep it small
        prune_cache(guard, report)
    name = names[verdict.label]
    pending = settings.needs_decision_label
    on_issue = scope_keys(request.labels, names)
    has_pending = has_label(request.labels, pending)
    predicted = thread.predicted if thread.predicted in names else None
    # A maintainer's label stands; one no `labeled` run recorded is a correction to record.
    human, correction = ctx.relabels.find(issue, request, on_issue, predicted, thread.human,
                                          own_login=ctx.login, leaning=thread.leaning,
                                          written_at=thread.written_at)
    if not human and predicted in on_issue and (verdict.label != predicted or (
            pending and verdict.needs_decision) or verdict.confidence < settings.min_confidence):
        human = set_by_person(issue, predicted, names[predicted], ctx.login)  # else removed
    gated = bool(pending) and verdict.needs_decision and not human
    below = not human and not gated and verdict.confidence < settings.min_confidence
    report.outputs(label=verdict.label, confidence=f"{verdict.confidence:.3f}",
                   input_class=verdict.input_class, skipped="",
                   needs_decision=str(gated).lower())
    notes: list[str] = []
    add, remove = None, []
    if human:
        notes.append(human_note(names[human.key], human.by))
        # scopeguard's own earlier label goes; the maintainer's stays.
        remove = [names[k] for k in on_issue if k == predicted and k != human.key]
    elif gated:
        notes.append(f"> **Needs a decision:** labelled {md_code(pending)}; scopeguard leans "
                     f"{md_code(name)}, but decisions like this were right "
                     + (f"{verdict.certainty:.0%}" if verdict.certainty is not None
                        else "an unmeasured share")
                     + " of the time on products its head never saw. Set a scope label to "
                     "decide.")
        add = pending if not has_pending else None
        remove = [names[k] for k in on_issue]
    elif below:
        notes.append(f"> **Not labelled:** confidence {verdict.confidence:.0%} is below the "
                     f"`min-confidence` of {settings.min_confidence:.0%}; a maintainer decides.")
        remove = [names[k] for k in on_issue]
    else:
        add = name if verdict.label not in on_issue else None
        remove = [names[k] for k in on_issue if k != verdict.label]
    if has_pending and not gated and not below:
        remove.append(pending)  # decided: by a maintainer, or surely enough by scopeguard
    # A decision scopeguard asked for keeps its leaning (and a marker claiming no label of
    # its own) while the person's label stands: a change of that decision is one too.
    asked = thread.leaning if human else None
    body = compose(render.to_markdown(verdict, name, ctx.positioning.product, pending=gated,
                                      own=not asked, leaning=asked), notes, human)
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
    confirm_lease()  # the service's worker still holds the event (integrations/lease.py)
    done = [save_relabel(ctx, issue.number, correction, missed=True)] if correction else []
    if add:
        ensure_labels(ctx.repo, {"needs_decision": add} if add == pending else names)
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
    """A scope label was added: if a maintainer corrected scopeguard, or decided what it
    asked them to (its needs-decision label), record it."""
    settings, report, names = ctx.settings, ctx.report, ctx.names
    key = key_of(label, names)
    assert key is not None
    login = str(sender.get("login") or "")
    if is_bot(login, str(sender.get("type") or "")):
        return report.skip(f"{md_code(label)} on #{issue.number} was set by "
                           f"{md_text(login or 'a bot')}, not a maintainer: nothing to record.")
    if not has_label(request.labels, label):  # a re-run of an old event, say
        return report.skip(f"{md_code(label)} is no longer on #{issue.number}: nothing to "
                           "record (the label that stands is recorded by its own event or "
                           "the issue's next run).")
    thread = read_thread(issue, ctx.login)
    predicted, earlier = thread.predicted, thread.human.key if thread.human else None
    # scopeguard's account: its own verdict label (its comment names it before it is set),
    # or a person working under that account (a personal token's owner): their label.
    if login.lower() == ctx.login.lower() and key == predicted:
        return report.skip(f"{md_code(label)} on #{issue.number} is scopeguard's own "
                           "verdict label: nothing to record.")
    pending = settings.needs_decision_label
    if has_label(request.labels, pending) and not settings.dry_run:
        confirm_lease()  # the service's worker still holds the event (integrations/lease.py)
        remove_label(issue, pending)  # a maintainer's scope label is the decision
    asked = predicted == render.PENDING and thread.leaning in names
    if asked and earlier == key:
        return report.skip(f"{md_code(label)} on #{issue.number} is the decision recorded "
                           "already.")
    if asked:  # scopeguard withheld its label and asked: this label is the decision
        predicted = thread.leaning
    elif predicted == render.PENDING:
        return report.skip(f"{md_code(label)} on #{issue.number} decides what scopeguard left "
                           "to a maintainer: it stands, and the needs-decision label goes.")
    if predicted not in names:
        return report.skip(f"#{issue.number} has no scopeguard verdict, so `{label}` corrects "
                           "nothing.")
    if not asked and key == predicted and earlier in (None, key):
        return report.skip(f"{md_code(label)} on #{issue.number} agrees with scopeguard's "
                           "verdict.")
    row = ctx.relabels.row(request, key, predicted, login, asked=asked)
    what, noun = ("decided", "decision") if asked else ("relabelled", "relabel")
    report.outputs(label=key, confidence="", input_class="", skipped="")
    report.summary(f"## scopeguard: #{issue.number} {what} by {md_text('@' + login)}\n\n"
                   + ctx.relabels.describe(row))
    if settings.dry_run:
        report.notice(f"dry run: would record @{login}'s {noun} of #{issue.number}.")
        return 0
    # The record first: the comment's marker then means "recorded", and a failed commit
    # is retried by the next run of the issue.
    confirm_lease()
    done = [save_relabel(ctx, issue.number, row)]
    if not asked and key != predicted and predicted in scope_keys(request.labels, names):
        remove_label(issue, names[predicted])
        done.append(f"removed scopeguard's `{names[predicted]}`")
    if settings.comment:
        body = compose(thread.body, [human_note(label, login)], MaintainerLabel(key, login))
        _, written = upsert_comment(issue, thread, body)
        done.append(f"comment {written}")
    report.log(f"#{issue.number}: @{login} {what} {predicted} -> {key}; " + "; ".join(done))
    return report.done(done)


def prune_cache(guard: Any, report: Report) -> None:
    """Leave in the embeddings cache only what this run used (the issue, the open backlog,
    the positioning): the file then tracks the backlog instead of every edit ever made."""
    embedder = getattr(guard, "embedder", None)
    cache, seen = getattr(embedder, "cache", None), getattr(embedder, "seen", None)
    if cache is None or not seen:
        return
    gone = cache.retain(seen)
    if gone:
        report.log(f"embeddings cache: dropped {gone} texts no open issue has any more")


def save_relabel(ctx: Context, number: int, row: Mapping[str, str], missed: bool = False,
                 ) -> str:
    """Commit a correction; when GitHub refuses it for good (push protection, a protected
    branch), say so with the fix and go on: the label and the comment still get done, and
    the comment's marker keeps the maintainer's label, so nothing is fought or lost.

    ``missed``: a correction that an earlier run failed to record, tried again by the
    issue's next run. A token without ``contents: write`` is then a warning too (the
    ``labeled`` run failed on it, naming the fix): it must not block every later run of
    the issue."""
    try:
        return ctx.relabels.save(number, row)
    except RelabelsRefused as exc:
        ctx.report.warning(f"#{number}: the correction was not recorded: {exc}")
        return f"correction not recorded ({exc.kind}: see the warning)"
    except GitHubPermissionError as exc:
        if not missed:
            raise
        ctx.report.warning(f"#{number}: the correction was not recorded (it is in this "
                           f"run's summary): {exc}")
        return "correction not recorded (no contents: write: see the warning)"


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
    check_label_name(settings.needs_decision_label, "input label-needs-decision")
    if settings.needs_decision_label.lower() in {n.lower() for n in names.values()}:
        raise InputError(f"input label-needs-decision: {settings.needs_decision_label!r} is "
                         "also a scope label. Fix: give it a name of its own (default "
                         "`scope: needs-decision`).")
    payload = event.get("issue") or {}
    # A bot's issue is skipped before any call (the event's issue: not issue-number's)
    if payload.get("user") and payload.get("number") == number:
        why = skipped_author(issue_to_request({"number": number, **payload}),
                             positioning.filters)
        if why:
            return report.skip(f"#{number} is not a feature request: it {why}.")
    client = make_client(settings.token, settings.api_url, **settings_from_env(env))
    repo = get_repository(client, settings.repository)
    with github_errors(f"reading issue #{number}", needs="issues: read"):
        issue = repo.get_issue(number)
    data = issue_json(issue, number)
    if is_pull_request(data):
        return report.skip(f"#{number} is a pull request, not a feature request.")
    relabels = Relabels(repo, positioning, names, settings.relabels_file, settings.dry_run,
                        settings.relabels_branch)
    login = login or own_login(client, settings.token, configured=settings.bot_login,
                               workflow_token=settings.workflow_token)
    ctx = Context(settings, report, positioning, names, repo, relabels, login, guard)
    request = sound_request(issue_to_request(data))
    ok, why = is_feature_request(request, positioning.filters)
    if not ok:
        return report.skip(f"#{number} is not a feature request: it {why} (the "
                           "positioning file's filters decide).")
    label = str((event.get("label") or {}).get("name") or "")
    if action == "labeled" and label and label.lower() == settings.needs_decision_label.lower():
        return report.skip(f"{md_code(label)} on #{number} is scopeguard's needs-decision "
                           "label: nothing to classify again.")
    if action == "labeled" and key_of(label, names):
        return record_relabel(ctx, issue, request, label, event.get("sender") or {})
    return classify_issue(ctx, issue, request)


def main(environ: Mapping[str, str] | None = None) -> int:
    """Run the Action; returns the exit status (0 done or skipped, 2 bad input, 1 failed)."""
    env = os.environ if environ is None else environ
    report = Report(env)  # scrubs the token from everything it writes
    try:
        report.check_files()
        return run(Settings.from_env(env), report, env)
    except (InputError, ConfigError) as exc:  # the inputs, event or positioning file: 2
        return report.fail(str(exc), 2)
    except ScopeguardError as exc:
        return report.fail(str(exc))
    except Exception as exc:  # a bug: still fail clearly, with the token scrubbed
        print(report.scrub(traceback.format_exc()), file=sys.stderr)
        return report.fail(f"unexpected {type(exc).__name__}: {exc}. This is a bug in "
                           "scopeguard; please report it with this log.")


if __name__ == "__main__":
    sys.exit(main())

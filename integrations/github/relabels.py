"""Maintainers' corrections of scopeguard's scope labels, recorded for ``scopeguard calibrate``.

A maintainer corrects scopeguard by setting a scope label other than the one its verdict
comment names. Each correction becomes one row of the labelled-backlog format
(``scopeguard calibrate --labels`` reads it) in a JSONL file in the repository, committed
through the contents API: no checkout and no push, so a ``labeled`` run needs only
``contents: write``. A later correction of the same issue replaces its row.

:class:`Relabels` is what the Action's entrypoint uses; it is bound to one repository,
positioning file and set of label names::

    relabels = Relabels(repo, positioning, names, path=".github/scopeguard-relabels.jsonl")
    human, row = relabels.find(issue, request, on_issue=["one_off"], predicted="core",
                               recorded=None)   # the label, and the row a run missed
    if row:
        print(relabels.describe(row))            # for the job summary
        relabels.save(issue.number, row)         # the commit

The ``labeled`` event names who set the label (``sender``); a correction no ``labeled`` run
recorded (cancelled while pending in the workflow's concurrency group, or no ``labeled``
trigger) is found by the issue's next run, which takes the labeller from the issue's events.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from github import GithubException

from scopeguard.backlog import Request, is_bot, jsonl_lines, resolve_customer
from scopeguard.markup import json_safe, md_code, md_fence, md_text
from scopeguard.positioning import Positioning

from .comments import MaintainerLabel
from .errors import GitHubError, github_errors
from .issues import raw_json

RELABELS_FILE = ".github/scopeguard-relabels.jsonl"
COMMIT_ATTEMPTS = 4  # each conflict means another run committed; a few retries settle it


@dataclass
class Relabels:
    """Finds, describes and commits maintainers' corrections in one repository.

    Args:
        repo: a PyGithub ``Repository``.
        positioning: the positioning file: its ``customer`` rule fills the row's customer.
        names: tracker label names by key (core, generalizable, one_off).
        path: the JSONL file in the repository; "" turns recording off.
        dry_run: describe what would be recorded (``save`` is then not called).
    """

    repo: Any
    positioning: Positioning
    names: Mapping[str, str]
    path: str = RELABELS_FILE
    dry_run: bool = False
    branch: str = ""  # "" commits to the default branch

    def find(self, issue: Any, request: Request, on_issue: Sequence[str], predicted: str | None,
             recorded: MaintainerLabel | None, own_login: str = "", leaning: str | None = None,
             written_at: str = "") -> tuple[MaintainerLabel | None, dict[str, str] | None]:
        """The maintainer's scope label on ``issue``, and the correction no run recorded.

        Args:
            issue: the PyGithub ``Issue`` (its events name the labeller).
            request: the issue as a request, for the row.
            on_issue: the scope labels (keys) the issue carries.
            predicted: scopeguard's last verdict, or None when it never commented: every
                scope label a person set is then a maintainer's (one a bot set is not).
            recorded: the maintainer's label the verdict comment already records.
            own_login: the account scopeguard writes as (its comment's author): a label it
                set is scopeguard's own, left over from a run whose writes did not all
                land, not a maintainer's; unless it was set after ``written_at``.
            written_at: when scopeguard's comment last changed (GitHub's ISO 8601 time;
                "" when unknown). A run writes its comment, naming its label, before it
                sets that label, so a label other than ``predicted`` that scopeguard's
                account set after that moment is none of its verdicts: a person working
                under the same account (a personal token's owner; another workflow of
                the repository using the job's token), whose label stands.
            leaning: what scopeguard leaned to when it withheld its label and asked for a
                decision (``predicted`` is then None): a maintainer's scope label is that
                decision, recorded whichever label it is.

        Returns:
            ``(label, row)``: the label that stands (None: no maintainer's label) and the
            correction to record (None: recorded already, nothing to correct, or a bot's).
        """
        if recorded and recorded.key in on_issue:
            return recorded, None
        others = [key for key in on_issue if key != predicted]
        if not others:
            return None, None
        by, when, kind = labeller(issue, self.names[others[0]])
        human = MaintainerLabel(others[0], by)
        bot = is_bot(by, kind)
        if own_login and by.lower() == own_login.lower() and not (
                written_at and when > written_at):
            return None, None
        if not predicted:  # no verdict of scopeguard's to correct
            # A bot's scope label on an issue scopeguard has not commented on is no one's
            # decision: typically scopeguard's own under an account it no longer writes as.
            if bot:
                return None, None
            return human, (self.row(request, human.key, leaning, human.by, asked=True)
                           if leaning in self.names else None)
        if bot:
            return human, None
        return human, self.row(request, human.key, predicted, human.by)

    def row(self, request: Request, label: str, predicted: str, by: str,
            asked: bool = False) -> dict[str, str]:
        """A correction as a labelled-backlog row (``scopeguard calibrate --labels``).

        ``asked``: scopeguard withheld its label and asked a maintainer to decide;
        ``predicted`` is then what it leaned to, and the row is recorded even when the
        maintainer's label agrees with it (``"asked": "needs_decision"``).
        """
        row = {"id": request.id, "title": request.title, "body": request.body,
               "author": request.author,
               "customer": resolve_customer(request, self.positioning.customer),
               "created_at": request.created_at, "url": request.url, "label": label,
               "predicted": predicted,
               "recorded_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "by": by}
        return {**row, "asked": "needs_decision"} if asked else row

    def describe(self, row: Mapping[str, str]) -> str:
        """The job summary's account of a correction, with the row to be committed."""
        verb = "would record" if self.dry_run else "recording"
        where = (f"{verb.capitalize()} in {md_code(self.path)}:" if self.path
                 else "Recording is off.")
        # The row repeats the requester's title and body: a fence they cannot close.
        who = md_text("@" + (row["by"] or "unknown"))
        said, label = md_code(self.names[row["predicted"]]), md_code(self.names[row["label"]])
        what = (f"Maintainer's decision by {who}: scopeguard leaned {said} and asked; the "
                f"maintainer's label is {label}." if row.get("asked")
                else f"Maintainer's correction by {who}: scopeguard said {said}, the "
                f"maintainer's label is {label}.")
        return (f"{what} {where}\n\n"
                + md_fence(json_safe(json.dumps(row, indent=2, ensure_ascii=False)), "json"))

    def save(self, number: int, row: Mapping[str, str]) -> str:
        """Commit ``row`` for issue ``number``; returns what was done, for the summary.

        Push protection (a secret in the issue's text) gets one more try with the row's
        title and body left out (the url still leads to them); a refusal that stays is
        raised as :class:`RelabelsRefused`, for the caller to report while it finishes the
        label and the comment, whose marker keeps the maintainer's label meanwhile.
        """
        if not self.path:
            return "recording is off"
        verb = "decided (leaned " + row["predicted"] + ")" if row.get("asked") else \
            f"relabelled {row['predicted']} ->"
        message = (f"scopeguard: #{number} {verb} {row['label']} by @{row['by'] or 'unknown'}"
                   "\n\n[skip ci]")
        where = f"`{self.path}`" + (f" on `{self.branch}`" if self.branch else "")
        try:
            sha = commit_row(self.repo, self.path, row, message, self.branch)
        except RelabelsRefused as exc:
            if exc.kind != "secret":
                raise
            bare = {**row, "title": "", "body": "",
                    "omitted": "title and body: push protection found a secret in them"}
            try:
                sha = commit_row(self.repo, self.path, bare, message, self.branch)
            except RelabelsRefused:
                raise RelabelsRefused(
                    f"GitHub's push protection refused {self.path} even without the issue's "
                    "title and body. Fix: allow the secret (push protection bypass) or set "
                    "`relabels-file: ''` to stop recording.", "secret") from None
            return (f"correction committed to {where} ({sha[:7]}) without the issue's text "
                    "(push protection found a secret in it)") if sha else "already recorded"
        return f"correction committed to {where} ({sha[:7]})" if sha else "already recorded"


def set_by_person(issue: Any, key: str, name: str, own_login: str) -> MaintainerLabel | None:
    """The scope label ``key`` (named ``name``) as a maintainer's when a person added it
    last: scopeguard's predicted label put back by hand (or set by hand after one of its
    label writes failed) is a decision that agrees, not scopeguard's own to remove. Asked
    only before scopeguard would remove it (one call for the issue's events)."""
    by, _, kind = labeller(issue, name)
    if not by or is_bot(by, kind) or (own_login and by.lower() == own_login.lower()):
        return None
    return MaintainerLabel(key, by)


def labeller(issue: Any, name: str) -> tuple[str, str, str]:
    """Who last added the label ``name`` to ``issue``, when (GitHub's ISO 8601 time) and
    the account's type ("User", "Bot": a bot's login may lack "[bot]", as Copilot's),
    from its events (``("", "", "")`` if unknown)."""
    who = when = kind = ""
    with github_errors(f"reading the events of #{issue.number}", needs="issues: read"):
        for event in issue.get_events():
            data = raw_json(event)
            label = (data.get("label") or {}).get("name") or ""
            if data.get("event") == "labeled" and label.lower() == name.lower():
                actor = data.get("actor") or {}
                who, kind = str(actor.get("login") or ""), str(actor.get("type") or "")
                when = str(data.get("created_at") or "")
    return who, when, kind


class RelabelsRefused(GitHubError):
    """GitHub refused the relabels commit for good (push protection found a secret in the
    row, or the branch is protected): retrying cannot help; the message says what can."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message, 409)
        self.kind = kind  # "secret" | "protected"


def refusal(exc: GithubException) -> str:
    """Why a 409 (or 422) from the contents API happened: "race" (a stale sha: another run
    committed; retry on the fresh file), "secret" (push protection) or "protected" (branch
    protection or a ruleset: a pull request or a status check is required)."""
    data = exc.data if isinstance(exc.data, dict) else {}
    message = str(data.get("message") or "").lower()
    metadata = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
    if "secret_scanning" in metadata or "secret" in message:
        return "secret"
    docs = str(data.get("documentation_url") or "").lower()
    if any(words in message for words in ("protected branch", "pull request",
                                           "status check", "rule violation", "ruleset")) \
            or "protected-branches" in docs or "rulesets" in docs:
        return "protected"
    return "race"


def commit_row(repo: Any, path: str, row: Mapping[str, Any], message: str,
               branch: str = "") -> str:
    """Add ``row`` to the JSONL file at ``path`` (replacing an older row of the same id).

    Goes through the contents API: create, or update with the file's ``sha``; a conflict
    (another run committed meanwhile) is retried on the fresh file. Returns the commit sha,
    or "" when the file already holds the row (recorded at any time: a retried run does
    not commit the same correction again). ``branch`` commits there instead of the default
    branch (created from it when missing). Raises :class:`RelabelsRefused` when GitHub
    refuses the commit itself (push protection, a protected branch).
    """
    line = jsonl_line(row)
    decision = {k: v for k, v in row.items() if k != "recorded_at"}
    on = {"branch": branch} if branch else {}

    def parsed(existing: str) -> dict[str, Any]:
        try:
            found = json.loads(existing)
        except ValueError:
            return {}  # keep lines scopeguard cannot read; calibrate names them
        return found if isinstance(found, dict) else {}

    with github_errors(f"recording the relabel in {path}", needs="contents: write"):
        if branch:
            ensure_branch(repo, branch)
        for _attempt in range(COMMIT_ATTEMPTS):
            try:
                current = repo.get_contents(path, **({"ref": branch} if branch else {}))
                text, sha = current.decoded_content.decode("utf-8"), current.sha
            except GithubException as exc:
                if exc.status != 404:
                    raise
                text, sha = "", None
            rows = [(x, parsed(x)) for x in jsonl_lines(text) if x.strip()]
            if any({k: v for k, v in r.items() if k != "recorded_at"} == decision
                   for _, r in rows):
                return ""
            kept = [json_safe(x) for x, r in rows if r.get("id") != row["id"]]
            new = "\n".join([*kept, line]) + "\n"
            try:
                if sha:
                    result = repo.update_file(path, message, new, sha, **on)
                else:
                    result = repo.create_file(path, message, new, **on)
                return result["commit"].sha
            except GithubException as exc:
                if exc.status not in (409, 422):
                    raise
                why = refusal(exc)
                if why == "secret":
                    raise RelabelsRefused(
                        f"GitHub's push protection refused {path}: it found a secret in the "
                        "row (the row repeats the issue's text).", "secret") from None
                if why == "protected":
                    raise RelabelsRefused(
                        f"the branch {branch or 'that holds ' + path} is protected: GitHub "
                        "refused the commit. Fix: set the `relabels-branch` input to a branch "
                        "without protection, e.g. `relabels-branch: scopeguard-relabels` "
                        "(scopeguard creates it), or `relabels-file: ''` to stop recording.",
                        "protected") from None
    raise GitHubError(f"{path} kept changing while scopeguard recorded a relabel: other runs "
                      "committed to it each time. Fix: re-run the job.")


def jsonl_line(row: Mapping[str, Any]) -> str:
    """``row`` as one JSONL line: U+2028, U+2029 and U+0085 (NEL), which JSON leaves raw
    and ``str.splitlines`` splits on, are escaped (with what else a terminal acts on:
    ``markup.json_safe``), so only ``\\n`` ends a line."""
    return json_safe(json.dumps(row, ensure_ascii=False))


def ensure_branch(repo: Any, branch: str) -> None:
    """Create ``branch`` from the default branch's head when it does not exist yet."""
    try:
        repo.get_branch(branch)
        return
    except GithubException as exc:
        if exc.status != 404:
            raise
    head = repo.get_branch(repo.default_branch).commit.sha
    try:
        repo.create_git_ref(f"refs/heads/{branch}", head)
    except GithubException as exc:
        if exc.status != 422:  # created meanwhile by another run
            raise



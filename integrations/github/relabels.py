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

from scopeguard.backlog import Request, is_bot, resolve_customer
from scopeguard.markup import md_code, md_fence, md_text
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

    def find(self, issue: Any, request: Request, on_issue: Sequence[str], predicted: str | None,
             recorded: MaintainerLabel | None, own_login: str = "",
             ) -> tuple[MaintainerLabel | None, dict[str, str] | None]:
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
                land, not a maintainer's.

        Returns:
            ``(label, row)``: the label that stands (None: no maintainer's label) and the
            correction to record (None: recorded already, nothing to correct, or a bot's).
        """
        if recorded and recorded.key in on_issue:
            return recorded, None
        others = [key for key in on_issue if key != predicted]
        if not others:
            return None, None
        human = MaintainerLabel(others[0], labeller(issue, self.names[others[0]]))
        if own_login and human.by.lower() == own_login.lower():
            return None, None
        if not predicted:  # no verdict of scopeguard's to correct
            # A bot's scope label on an issue scopeguard has not commented on is no one's
            # decision: typically scopeguard's own under an account it no longer writes as.
            return (None if is_bot(human.by) else human), None
        if is_bot(human.by):
            return human, None
        return human, self.row(request, human.key, predicted, human.by)

    def row(self, request: Request, label: str, predicted: str, by: str) -> dict[str, str]:
        """A correction as a labelled-backlog row (``scopeguard calibrate --labels``)."""
        return {"id": request.id, "title": request.title, "body": request.body,
                "author": request.author,
                "customer": resolve_customer(request, self.positioning.customer),
                "created_at": request.created_at, "url": request.url, "label": label,
                "predicted": predicted,
                "recorded_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "by": by}

    def describe(self, row: Mapping[str, str]) -> str:
        """The job summary's account of a correction, with the row to be committed."""
        verb = "would record" if self.dry_run else "recording"
        where = (f"{verb.capitalize()} in {md_code(self.path)}:" if self.path
                 else "Recording is off.")
        # The row repeats the requester's title and body: a fence they cannot close.
        return (f"Maintainer's correction by {md_text('@' + (row['by'] or 'unknown'))}: "
                f"scopeguard said {md_code(self.names[row['predicted']])}, the maintainer's "
                f"label is {md_code(self.names[row['label']])}. {where}\n\n"
                + md_fence(json.dumps(row, indent=2, ensure_ascii=False), "json"))

    def save(self, number: int, row: Mapping[str, str]) -> str:
        """Commit ``row`` for issue ``number``; returns what was done, for the summary."""
        if not self.path:
            return "recording is off"
        sha = commit_row(self.repo, self.path, row,
                         f"scopeguard: #{number} relabelled {row['predicted']} -> "
                         f"{row['label']} by @{row['by'] or 'unknown'}\n\n[skip ci]")
        return f"correction committed to `{self.path}` ({sha[:7]})" if sha else "already recorded"


def labeller(issue: Any, name: str) -> str:
    """Who last added the label ``name`` to ``issue``, from its events ("" if unknown)."""
    who = ""
    with github_errors(f"reading the events of #{issue.number}", needs="issues: read"):
        for event in issue.get_events():
            data = raw_json(event)
            label = (data.get("label") or {}).get("name") or ""
            if data.get("event") == "labeled" and label.lower() == name.lower():
                who = (data.get("actor") or {}).get("login") or ""
    return who


def commit_row(repo: Any, path: str, row: Mapping[str, Any], message: str) -> str:
    """Add ``row`` to the JSONL file at ``path`` (replacing an older row of the same id).

    Goes through the contents API: create, or update with the file's ``sha``; a conflict
    (another run committed meanwhile) is retried on the fresh file. Returns the commit sha,
    or "" when the file already holds the row (recorded at any time: a retried run does
    not commit the same correction again).
    """
    line = json.dumps(row, ensure_ascii=False)
    decision = {k: v for k, v in row.items() if k != "recorded_at"}

    def parsed(existing: str) -> dict[str, Any]:
        try:
            found = json.loads(existing)
        except ValueError:
            return {}  # keep lines scopeguard cannot read; calibrate names them
        return found if isinstance(found, dict) else {}

    with github_errors(f"recording the relabel in {path}", needs="contents: write"):
        for _attempt in range(COMMIT_ATTEMPTS):
            try:
                current = repo.get_contents(path)
                text, sha = current.decoded_content.decode("utf-8"), current.sha
            except GithubException as exc:
                if exc.status != 404:
                    raise
                text, sha = "", None
            rows = [(x, parsed(x)) for x in text.splitlines() if x.strip()]
            if any({k: v for k, v in r.items() if k != "recorded_at"} == decision
                   for _, r in rows):
                return ""
            kept = [x for x, r in rows if r.get("id") != row["id"]]
            new = "\n".join([*kept, line]) + "\n"
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

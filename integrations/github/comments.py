"""scopeguard's one comment on a GitHub issue: found by its author and marker, composed, kept.

A comment is scopeguard's own only when its author is the account scopeguard writes as
*and* it opens with the verdict marker; its header marker lines (``render.read_header``) say
which label scopeguard gave and which maintainer's label stands. Nobody else's comment is
read for markers, edited or deleted (see docs/security.md).

Example::

    thread = read_thread(issue, login="github-actions[bot]")
    body = compose(render.to_markdown(verdict, name), notes, thread.human)
    comment, what = upsert_comment(issue, thread, body)   # created | updated | unchanged
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from github import GithubException

from scopeguard import render
from scopeguard.errors import InputError
from scopeguard.markup import md_code, md_text

from .errors import github_errors
from .issues import raw_json

# A maintainer's scope label that stands: see render.HUMAN_MARKER.
HUMAN_MARKER = render.HUMAN_MARKER
NOTE_PREFIXES = ("> **Maintainer's label stands", "> **Not labelled", "> **Needs a decision")


class LoginMismatch(InputError):
    """GitHub posts scopeguard's comments as another account than the one it looks for
    (``author``): every run would add one more comment."""

    def __init__(self, message: str, author: str) -> None:
        super().__init__(message)
        self.author = author


class MaintainerLabel(NamedTuple):
    """A scope label a person set: its key (core, generalizable, one_off) and their login."""

    key: str
    by: str = ""  # "" when unknown


@dataclass
class Thread:
    """scopeguard's own comment(s) on an issue and what their hidden markers say.

    Only comments whose author is scopeguard's account (``login``) and which open with
    the verdict marker are its own; their markers are read from the header lines alone.
    A comment anyone else wrote is never read, edited or deleted, whatever it contains.
    """

    comments: list[Any]  # PyGithub IssueComment, scopeguard's own, oldest first
    # Authors of other comments that open with scopeguard's markers (ignored): scopeguard
    # under an account it no longer writes as, or someone imitating it.
    others: tuple[str, ...] = ()
    login: str = ""  # the account scopeguard writes as

    @property
    def current(self) -> Any:
        """The comment scopeguard keeps: its newest."""
        return self.comments[-1] if self.comments else None

    @property
    def body(self) -> str:
        return self.current.body if self.comments else ""

    @property
    def markers(self) -> render.Markers:
        return render.read_header(self.body)

    @property
    def written_at(self) -> str:
        """When scopeguard's comment last changed (GitHub's ISO 8601 time), "" if never."""
        if not self.comments:
            return ""
        return str(raw_json(self.current).get("updated_at") or "")

    @property
    def predicted(self) -> str | None:
        """The label scopeguard last gave, or None when it never commented."""
        return self.markers.label

    @property
    def leaning(self) -> str | None:
        """What scopeguard leaned to when it withheld its label (a maintainer decides)."""
        markers = self.markers
        return markers.leaning if markers.label == render.PENDING else None

    @property
    def human(self) -> MaintainerLabel | None:
        """The maintainer's label the comment records as standing."""
        markers = self.markers
        return MaintainerLabel(markers.human, markers.human_by) if markers.human else None


def is_own(comment: Any, login: str) -> bool:
    """Whether ``comment`` is scopeguard's: written by ``login`` and opening with the marker."""
    user = comment.user.login if comment.user else ""
    return (bool(login) and user.lower() == login.lower()
            and render.read_header(comment.body or "").verdict)


def read_thread(issue: Any, login: str) -> Thread:
    """scopeguard's own comments on ``issue`` (``login`` is its account; see :class:`Thread`)."""
    with github_errors(f"reading the comments of #{issue.number}", needs="issues: read"):
        comments = list(issue.get_comments())
    own = [c for c in comments if is_own(c, login)]
    others = {c.user.login for c in comments if c.user and not is_own(c, login)
              and render.read_header(c.body or "").verdict}
    return Thread(own, tuple(sorted(others)), login)


def compose(markdown: str, notes: Sequence[str], human: MaintainerLabel | None) -> str:
    """The comment: ``markdown`` with earlier notes dropped and ``notes`` after the markers,
    cut to GitHub's limit on a comment (``render.fit_markdown``: a requester's text must
    not make it refuse the comment)."""
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
    return render.fit_markdown("\n".join(lines[:head] + extra + rest))


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
            created = issue.create_comment(body)
            author = created.user.login if created.user else ""
            if thread.login and author and author.lower() != thread.login.lower():
                _delete(created)  # this run's own, just made: nothing else changes
                raise LoginMismatch(
                    f"scopeguard finds its comment as {thread.login}'s, but GitHub posts "
                    f"it as {author}: every run would add one more. Fix: set the bot-login "
                    f"input (SCOPEGUARD_GITHUB_LOGIN for scopeguard serve) to {author}, or "
                    "leave it empty for the workflow's own token.", author)
            # A POST that timed out after GitHub carried it out and was sent again, or a
            # run racing this one: another comment of scopeguard's own. The newest stays.
            fresh = read_thread(issue, thread.login) if thread.login else thread
            for extra in fresh.comments[:-1]:
                _delete(extra)
            return (fresh.current or created), "created"
        keep, what = thread.current, "unchanged"
        if keep.body != body:
            keep.edit(body)
            what = "updated"
        for extra in thread.comments[:-1]:
            _delete(extra)
        return keep, what


def _delete(comment: Any) -> None:
    """Delete a comment of scopeguard's own; one a racing run deleted first is fine."""
    try:
        comment.delete()
    except GithubException as exc:
        if exc.status != 404:
            raise

"""Write a verdict back to a Jira issue: the scope label, and exactly one comment of its own.

:func:`write_back` sets the scope label, replacing the one scopeguard set before, and
keeps exactly one verdict comment per issue: scopeguard's own, written by the account
``/myself`` names and ending with its marker footer (``render.COMMENT_MARKER``), updated in
place: wiki markup on Server/Data Center, an Atlassian Document Format (ADF) body through
REST API v3 on Cloud (:mod:`.format`). A scope label that a person set stands; the
comment says so. Nobody else's comment is read for markers, edited or deleted.

Example::

    result = write_back(client, "PAW-12", "core",
                        lambda name, **flags: render.to_markdown(v, name, **flags),
                        positioning.labels, issue_labels, applied=seen.applied)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from scopeguard import render
from scopeguard.backlog import is_bot
from scopeguard.positioning import LABELS

from .client import USER_IDS, JiraClient
from .errors import JiraError, JiraNotFoundError, JiraUnavailableError
from .format import adf_text, to_adf, to_wiki


def jira_label(name: str) -> str:
    """A label name as Jira accepts it: no spaces (``scope: core`` -> ``scope:core``)."""
    return re.sub(r"\s+", "-", re.sub(r"\s*:\s*", ":", name.strip()))


@dataclass
class WriteBack:
    """What :func:`write_back` did to one issue."""

    key: str
    label: str  # the Jira label of scopeguard's verdict
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    human_label: str = ""  # a scope label a person set, which stands
    human_key: str = ""  # its verdict label (core, generalizable or one_off)
    removed_by_person: bool = False  # scopeguard's label was taken off by a person
    human_by: str = ""  # who set the person's label (the changelog's name, or UNKNOWN_BY)
    applied: str = ""  # the verdict label whose Jira label scopeguard now keeps on the issue
    comment_id: str = ""
    comment: str = "unchanged"  # created | updated | unchanged

    def summary(self) -> str:
        parts = [f"added {', '.join(self.added)}"] if self.added else []
        parts += [f"removed {', '.join(self.removed)}"] if self.removed else []
        if self.human_label:
            parts.append(f"kept {self.human_label} (set by a person)")
        if self.removed_by_person:
            parts.append(f"left {self.label} off (a person removed it)")
        parts.append(f"comment {self.comment}")
        return "; ".join(parts)


def comment_text(comment: Mapping[str, Any]) -> str:
    body = comment.get("body")
    return adf_text(body) if isinstance(body, dict | list) else str(body or "")


def same_user(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two Jira user objects are one account (by the first id both carry)."""
    for key in USER_IDS:
        if a.get(key) and b.get(key):
            return str(a[key]) == str(b[key])
    return False


def set_by_person(client: JiraClient, key: str, name: str) -> dict[str, Any] | None:
    """The person (not scopeguard's account, nor an app) who added the label ``name`` to
    ``key`` last, else None: scopeguard's label removed and put back by hand is their
    decision. Asked (one changelog read) only before scopeguard would remove its label."""
    by = client.label_adder(key, name)
    if by and not same_user(by, client.myself()) and \
            not is_bot(str(by.get("name") or ""), str(by.get("accountType") or "")):
        return by
    return None


def user_name(user: Mapping[str, Any] | None) -> str:
    """How Jira shows a user: their display name, else an id."""
    user = user or {}
    return next((str(user[k]) for k in ("displayName", "name", "accountId", "key")
                 if user.get(k)), "")


UNKNOWN_BY = "?"  # who set a person's label was looked up and Jira did not say: not again


def who_added(client: JiraClient, key: str, name: str) -> str:
    """Who added the label ``name`` to ``key`` last; :data:`UNKNOWN_BY` when the changelog
    does not say (a label the issue was created with) or cannot be read."""
    try:
        return user_name(client.label_adder(key, name)) or UNKNOWN_BY
    except JiraError:  # the label stands either way; only the record's "by" stays unknown
        return UNKNOWN_BY


def is_own(client: JiraClient, comment: Mapping[str, Any]) -> bool:
    """Whether ``comment`` is scopeguard's: written by its account and ending with its
    marker footer. Anyone else's comment is never edited or deleted, whatever it quotes."""
    return (same_user(comment.get("author") or {}, client.myself())
            and render.read_footer(comment_text(comment)).verdict)


def find_comment(client: JiraClient, key: str, hint: str = "") -> list[dict[str, Any]]:
    """scopeguard's own verdict comments on ``key`` (normally one), oldest first.

    ``hint`` is the comment id scopeguard recorded last time: one GET instead of paging
    through every comment, unless a person deleted it.
    """
    if hint:
        try:
            found = client.get_comment(key, hint)
            if is_own(client, found):
                return [found]
        except JiraNotFoundError:
            pass
    return [c for c in client.comments(key) if is_own(client, c)]


HUMAN_NOTE = ("> **A person's label stands:** `{label}`. scopeguard's own verdict is below "
              "for reference; it never replaces a label a person set.")
REMOVED_NOTE = ("> **A person removed the label** `{label}`; scopeguard leaves it off. Its "
                "verdict is below for reference.")


def compose(markdown: str, note: str) -> str:
    """The comment Markdown with ``note`` placed after the hidden marker lines."""
    if not note:
        return markdown
    lines = markdown.split("\n")
    head = render.marker_lines(lines)
    return "\n".join([*lines[:head], note, "", *lines[head:]])


PENDING = render.PENDING  # ``applied`` when scopeguard keeps its needs-decision label on
PENDING_NOTE = ("> **Needs a decision:** labelled `{pending}`; scopeguard leans `{label}` but "
                "is not sure enough to decide alone (its reasons below). Set a scope label "
                "to decide.")


def write_back(client: JiraClient, key: str, verdict_label: str, markdown: Callable[..., str],
               label_names: Mapping[str, str], issue_labels: Sequence[str], *,
               applied: str = "", comment_hint: str = "", pending: str = "",
               needs_decision: bool = False, known_human: str = "",
               known_by: str = "") -> WriteBack:
    """Label ``key`` with the verdict and keep exactly one verdict comment on it.

    Args:
        client: the Jira client.
        key: the issue key.
        verdict_label: ``core``, ``generalizable`` or ``one_off``.
        markdown: builds the comment Markdown (``render.to_markdown``) given the Jira label
            name shown in it.
        label_names: the positioning file's label names by verdict label.
        issue_labels: the labels on the issue now.
        applied: the verdict label whose Jira label scopeguard put on the issue last time
            (the caller's records), if any.
        comment_hint: the comment id recorded last time, if any.
        pending: the needs-decision label ("" turns the gate off); with ``needs_decision``
            (the verdict is not sure enough) it goes on instead of the scope label, and
            ``markdown`` is called with ``pending=True``; beside a person's label that
            stands, with ``own=False`` (its marker then claims no label: see render).
            ``markdown(name, pending=..., own=...)`` is ``render.to_markdown``'s shape.
        known_human, known_by: the person's label recorded last and who set it: not read
            from the changelog again while that label stands.

    Returns:
        a :class:`WriteBack`; its ``applied`` is what the caller should record.

    Scope labels scopeguard did not give (neither the comment's ``LABEL_MARKER`` nor
    ``applied``) were set by a person: they stay, and the comment says so; a label of
    scopeguard's that a person removed stays off while the verdict is unchanged. The
    comment is written before the labels and the caller records ``applied`` last, so a
    crash at any point is repaired by running again: an unchanged verdict writes nothing,
    and the comment is found again rather than posted twice.
    """
    names = {k: jira_label(label_names[k]) for k in LABELS}
    mine = find_comment(client, key, comment_hint)
    ours = {k for k in (render.read_footer(comment_text(mine[-1])).label if mine else None,
                        applied) if k in names}
    present = {x.lower(): x for x in issue_labels}
    on_issue = [k for k in LABELS if names[k].lower() in present]
    human = next((k for k in on_issue if k not in ours), None)
    pending = jira_label(pending) if pending else ""
    adder = None
    if human is None:  # scopeguard's own label it would take off: a person's, if put back
        gate = bool(pending) and needs_decision
        for k in on_issue:
            if k in ours and (gate or k != verdict_label):
                adder = set_by_person(client, key, names[k])
                if adder is not None:
                    human = k
                    ours.discard(k)
                    break
    result = WriteBack(key, names[verdict_label])
    add: list[str] = []
    remove: list[str] = []
    note = ""
    gated = bool(pending) and needs_decision and not human
    if human:
        result.human_label, result.human_key = names[human], human
        if adder is not None:  # read just now
            result.human_by = user_name(adder) or UNKNOWN_BY
        elif known_by and known_human.lower() == names[human].lower():  # recorded before
            result.human_by = known_by
        else:
            result.human_by = who_added(client, key, names[human])
        # Only scopeguard's own scope label gives way: any other a person set stays too.
        remove = [present[names[k].lower()] for k in on_issue if k in ours]
        note = HUMAN_NOTE.format(label=names[human])
    elif gated:
        result.label = pending
        remove = [present[names[k].lower()] for k in on_issue]
        if applied == PENDING and pending.lower() not in present:
            note = REMOVED_NOTE.format(label=pending)
            result.removed_by_person = True
            result.applied = PENDING  # still: a later event leaves it off too
        else:
            add = [] if pending.lower() in present else [pending]
            note = PENDING_NOTE.format(pending=pending, label=names[verdict_label])
            result.applied = PENDING
    elif applied == verdict_label and verdict_label not in on_issue:
        note = REMOVED_NOTE.format(label=names[verdict_label])
        result.removed_by_person = True
        result.applied = verdict_label  # still: a later event leaves it off too
    else:
        remove = [present[names[k].lower()] for k in on_issue if k != verdict_label]
        add = [] if verdict_label in on_issue else [names[verdict_label]]
        result.applied = verdict_label
    if pending and not gated and pending.lower() in present:
        remove.append(present[pending.lower()])  # decided: by a person, or surely enough
    text = compose(markdown(names[verdict_label], pending=gated, own=not human), note)
    body: Any = to_adf(text) if client.cloud else to_wiki(text)
    result.comment_id, result.comment = _upsert(client, key, mine, body,
                                                comment_text({"body": body}))
    client.update_labels(key, add=add, remove=remove)
    result.added, result.removed = add, remove
    return result


def _normal(text: str) -> str:
    return " ".join(text.split())


def _upsert(client: JiraClient, key: str, mine: list[dict[str, Any]], body: Any,
            new_text: str) -> tuple[str, str]:
    for attempt in range(1, client.retry.retries + 2):
        if mine:
            keep = mine[-1]  # the newest of scopeguard's own; `mine` holds nobody else's
            for extra in mine[:-1]:  # a race left a second one: one comment, always
                client.delete_comment(key, str(extra["id"]))
            if _normal(comment_text(keep)) == _normal(new_text):
                return str(keep["id"]), "unchanged"
            client.update_comment(key, str(keep["id"]), body)
            return str(keep["id"]), "updated"
        try:
            return str(client.add_comment(key, body)["id"]), "created"
        except JiraUnavailableError as exc:
            # A 5xx after a POST may still have created the comment: look before retrying.
            if attempt > client.retry.retries:
                raise
            client.sleep(client.retry.delay(attempt, exc.retry_after))
            mine = find_comment(client, key)
    raise AssertionError("unreachable")  # pragma: no cover

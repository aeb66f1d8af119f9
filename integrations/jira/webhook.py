"""Jira webhook payloads for ``scopeguard serve``: what a delivery is, and which to ignore.

:func:`parse_webhook` reads the delivery id, the event and the issue key of a Jira webhook
(or of Jira Automation's "Send web request"); :func:`ignore_reason` says which deliveries
are acknowledged without queueing (events, comment changes and projects or issue types
not watched). The route is :mod:`scopeguard.integrations.service.app`; the worker reads
the issue fresh from Jira, so the payload's fields are only a first filter.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scopeguard.errors import InputError
from scopeguard.positioning import Positioning

WATCHED_EVENTS = ("jira:issue_created", "jira:issue_updated")
# Jira reports comment changes as issue_updated too; scopeguard's own comment must not
# trigger another round (issue_event_type_name, Jira's name for what happened).
COMMENT_EVENT_TYPES = ("issue_commented", "issue_comment_edited", "issue_comment_deleted")
RELEVANT_FIELDS = {"summary", "description", "issuetype", "labels", "project", "key"}
# Matched whole (fullmatch): "$" would let a trailing newline through.
_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]*-\d+")
_DELIVERY = re.compile(r"[\x21-\x7e]{1,200}")
# The service's queue is shared with GitHub's deliveries, whose ids start with this.
GITHUB_PREFIX = "github:"


class BadWebhook(InputError):
    """A webhook body that cannot be queued (the message is the 400 answer)."""


@dataclass(frozen=True)
class Webhook:
    delivery_id: str
    event: str
    key: str
    payload: dict[str, Any]


def parse_webhook(body: bytes, headers: Mapping[str, str]) -> Webhook:
    """The delivery id, event name and issue key of a webhook body, or :class:`BadWebhook`.

    The delivery id is Jira's ``X-Atlassian-Webhook-Identifier`` (the same on every retry
    of a delivery), else an ``X-Scopeguard-Delivery`` header, else the body's hash and a
    random part: each request without an id is queued (see below).
    """
    payload = load_json_object(body, "send the Jira webhook payload, or Automation's 'Issue "
                                     "data (Jira format)'", BadWebhook)
    if "issue" not in payload and "webhookEvent" not in payload and isinstance(
            payload.get("fields"), dict) and "key" in payload:
        # Automation's "Issue data (Automation format)": the issue itself, at the top.
        payload = {"issue": payload}
    event = payload.get("webhookEvent")
    if event is not None and not isinstance(event, str):
        raise BadWebhook("'webhookEvent' must be a string. Fix: send the Jira webhook payload "
                         "(e.g. 'webhookEvent': 'jira:issue_created'), or leave it out.")
    issue = payload.get("issue")
    key = issue.get("key") if isinstance(issue, dict) else None
    if (event is None or event in WATCHED_EVENTS) and not (isinstance(key, str)
                                                          and _KEY.fullmatch(key)):
        problem = ("has no 'issue'" if not isinstance(issue, dict) else "has no 'issue.key'"
                   if key is None else f"has {str(key)[:40]!r} as 'issue.key', not an issue "
                   "key like PAW-12")
        raise BadWebhook(f"the payload {problem}. Fix: send the Jira webhook payload; from "
                         "Automation use the body 'Issue data (Jira format)', or custom data "
                         "like {\"issue\": {\"key\": \"{{issue.key}}\"}}.")
    _check_shapes(payload)
    given = (headers.get("x-atlassian-webhook-identifier") or
             headers.get("x-scopeguard-delivery"))
    # Without an id each request is a delivery of its own: Automation's custom body
    # {"issue": {"key": ...}} is the same on every run of a rule, so its hash would take
    # the run after an edit for a resend of the first one and drop it. A repeated request
    # is classified again, which changes nothing (the comment is updated in place).
    delivery = given.strip() if given else (
        f"sha256:{hashlib.sha256(body).hexdigest()}:{uuid.uuid4().hex[:12]}")
    if not _DELIVERY.fullmatch(delivery):
        raise BadWebhook("the delivery id header is longer than 200 characters or not "
                         "printable ASCII. Fix: send a short X-Scopeguard-Delivery id.")
    if delivery.startswith(GITHUB_PREFIX):
        raise BadWebhook(f"delivery ids starting {GITHUB_PREFIX!r} are GitHub's (the queue is "
                         "shared). Fix: send another X-Scopeguard-Delivery id.")
    # An event not watched may carry anything as its key: only a real key is kept (logged).
    key = key if isinstance(key, str) and _KEY.fullmatch(key) else ""
    return Webhook(delivery, event or "automation", key, payload)


_OBJECTS = (("issue", "fields"), ("issue", "fields", "project"),
            ("issue", "fields", "issuetype"), ("changelog",), ("user",))


def _check_shapes(payload: dict[str, Any]) -> None:
    """Keys Jira sends as objects must be objects (and changelog.items a list): a body
    where they are not is not from Jira, so it is refused, not guessed at."""
    for path in _OBJECTS:
        value: Any = payload
        for name in path:
            if not isinstance(value, dict) or name not in value:
                value = None
                break
            value = value[name]
        if value is not None and not isinstance(value, dict):
            where = ".".join(path)
            raise BadWebhook(f"'{where}' is {type(value).__name__}, where Jira sends an object. "
                             "Fix: send the Jira webhook payload unchanged, or leave "
                             f"'{where}' out.")
    items = _dict(payload.get("changelog")).get("items")
    if items is not None and not isinstance(items, list):
        raise BadWebhook("'changelog.items' must be a list. Fix: send the Jira webhook payload "
                         "unchanged, or leave 'changelog' out.")


def ignore_reason(hook: Webhook, positioning: Positioning, customer_field: str = "") -> str:
    """Why a webhook is acknowledged without queueing it, or "" to queue it."""
    if hook.event not in (*WATCHED_EVENTS, "automation"):
        return f"event {hook.event!r} is not watched"
    payload = hook.payload
    if payload.get("issue_event_type_name") in COMMENT_EVENT_TYPES:
        return f"{payload['issue_event_type_name']} (a comment changed, not the request)"
    items = _dict(payload.get("changelog")).get("items")
    if hook.event == "jira:issue_updated" and isinstance(items, list) and items:
        relevant = RELEVANT_FIELDS | {customer_field.lower()}
        changed = {str(i.get(k, "")).lower() for i in items if isinstance(i, dict)
                   for k in ("field", "fieldId")}
        if not changed & relevant:
            return "no change to the summary, description, type, labels or customer"
    fields_ = _dict(payload.get("issue")).get("fields")
    if isinstance(fields_, dict):
        project = str(_dict(fields_.get("project")).get("key", ""))
        issue_type = str(_dict(fields_.get("issuetype")).get("name", ""))
        return watch_reason(positioning, project, issue_type)
    return ""


def _dict(value: Any) -> dict[str, Any]:
    """A JSON object, or {} for anything else (a payload's shape is not trusted)."""
    return value if isinstance(value, dict) else {}


def load_json_object(body: bytes, fix: str, error: type[InputError]) -> dict[str, Any]:
    """The body as a JSON object, or ``error`` naming ``fix`` (also for nesting deep
    enough to exhaust the parser: a 400, not a crash)."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise error(f"the body is not valid JSON ({exc}). Fix: {fix}.") from None
    except RecursionError:
        raise error(f"the body's JSON is nested too deeply to read. Fix: {fix}.") from None
    if not isinstance(payload, dict):
        raise error(f"the body is JSON but not an object. Fix: {fix}.")
    return payload


def watch_reason(positioning: Positioning, project: str, issue_type: str) -> str:
    """Why the positioning file's ``jira:`` section does not watch an issue, or ""."""
    jira = positioning.jira
    if project and jira.projects and project.upper() not in {p.upper() for p in jira.projects}:
        return f"project {project} is not in jira.projects"
    if issue_type and jira.issue_types and issue_type.lower() not in {
            t.lower() for t in jira.issue_types}:
        return f"issue type {issue_type!r} is not in jira.issue_types"
    return ""

"""scopeguard's three scope labels on GitHub: their names, colours, and adding or removing one.

Example::

    names = label_names(positioning, overrides=[("core", "triage: core")])
    ensure_labels(repo, names)                 # created with colours and descriptions
    scope_keys(["bug", "triage: core"], names)  # ['core']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from github import GithubException

from scopeguard.errors import InputError
from scopeguard.positioning import LABELS, Positioning

from .errors import github_errors

# Colours and descriptions of the labels scopeguard creates (GitHub allows 100 characters).
LABEL_STYLE = {
    "core": ("0e8a16", "scopeguard: fits the product's positioning; extends what it is for"),
    "generalizable": ("fbca04", "scopeguard: not core today; a general form would serve the "
                                "target customers"),
    "one_off": ("d93f0b", "scopeguard: one customer's situation, outside the positioning"),
    "needs_decision": ("c5def5", "scopeguard: leans one way, not surely enough; a maintainer "
                                 "decides with a scope label"),
}
# A maintainer's scope label that stands: see render.HUMAN_MARKER.


def label_names(positioning: Positioning, overrides: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Tracker label names by key: the positioning file's, then the label-* inputs."""
    given = dict(overrides)
    names = {**positioning.labels, **given}
    for key, name in names.items():
        check_label_name(name, f"label-{key.replace('_', '-')}" if key in given
                         else f"the positioning file's labels.{key}")
    if len({n.lower() for n in names.values()}) != len(names):
        raise InputError(f"label names must differ, got {names}. Fix: give label-core, "
                         "label-generalizable and label-one-off (or the positioning file's "
                         "labels) distinct names.")
    return names


MAX_LABEL = 50  # characters GitHub allows in a label's name


def check_label_name(name: str, where: str) -> None:
    """Refuse a label name GitHub would refuse (422 on creating it, after the comment that
    names it was posted), naming where it came from."""
    if len(name) > MAX_LABEL:
        raise InputError(f"{where}: {name[:60]!r} is {len(name)} characters; GitHub allows "
                         f"{MAX_LABEL} in a label's name. Fix: a shorter name.")


def key_of(label: str, names: Mapping[str, str]) -> str | None:
    """The key (core, generalizable, one_off) of a scope label name; None for other labels.
    GitHub label names are case-insensitive."""
    return next((k for k, n in names.items() if n.lower() == label.lower()), None)


def has_label(label_list: Sequence[str], name: str) -> bool:
    """Whether the issue carries the label ``name`` (case-insensitive; "" never)."""
    return bool(name) and name.lower() in {label.lower() for label in label_list}


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
                if not _already_exists(exc):  # another run created it meanwhile: fine
                    raise


def _already_exists(exc: GithubException) -> bool:
    """Whether GitHub refused to create a label because one of that name exists (a 422
    whose errors say ``already_exists``; other 422s are real refusals)."""
    data = exc.data if isinstance(exc.data, dict) else {}
    return exc.status == 422 and any(isinstance(e, dict) and e.get("code") == "already_exists"
                                     for e in data.get("errors") or [])


def remove_label(issue: Any, name: str) -> None:
    """Remove the label ``name`` from ``issue``; one already gone is fine."""
    with github_errors(f"removing the label {name!r} from #{issue.number}"):
        try:
            issue.remove_from_labels(name)
        except GithubException as exc:
            if exc.status != 404:  # already gone
                raise

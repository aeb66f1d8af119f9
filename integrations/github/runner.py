"""The GitHub Action's runner interface: what the job gives it and what it writes back.

- :class:`Settings` reads the ``INPUT_*`` variables action.yml sets (composite actions
  spell them ``INPUT_DRY_RUN``; GitHub's own spelling ``INPUT_DRY-RUN`` works too) and the
  job's ``GITHUB_*`` variables. A bad input is an :class:`~scopeguard.errors.InputError`
  naming the input and the fix.
- :func:`read_event` loads the event JSON (``GITHUB_EVENT_PATH``).
- :class:`Report` appends to ``GITHUB_OUTPUT`` and ``GITHUB_STEP_SUMMARY`` and prints
  workflow commands (``::notice::``, ``::error::``), with the token scrubbed from all of them.

Example::

    report = Report(os.environ)    # scrubs the token input and GITHUB_TOKEN
    settings = Settings.from_env(os.environ)
    report.outputs(label="core", confidence="0.910", input_class="necessity", skipped="")
    report.summary("## scopeguard: #12 ...")
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scopeguard.errors import InputError
from scopeguard.positioning import LABELS
from scopeguard.render import COMMENT_LIMIT, fit_markdown
from scopeguard.settings import parse_flag

from .client import DEFAULT_API_URL, check_api_url
from .errors import keep_secret, scrub
from .relabels import RELABELS_FILE

# --- inputs -----------------------------------------------------------------------------------


def _input_set(env: Mapping[str, str], name: str) -> str | None:
    """An action input as given (None when absent): composite actions pass INPUT_DRY_RUN,
    JavaScript and Docker actions INPUT_DRY-RUN."""
    upper = name.upper()
    for key in (f"INPUT_{upper.replace('-', '_')}", f"INPUT_{upper}"):
        if key in env:
            return env[key].strip()
    return None


def _input(env: Mapping[str, str], name: str, default: str = "") -> str:
    """An action input; ``default`` when absent or empty."""
    return _input_set(env, name) or default


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    return parse_flag(_input(env, name), f"input {name}", default, InputError)


NEEDS_DECISION_LABEL = "scope: needs-decision"
SUMMARY_BYTES = 1024 * 1024  # GitHub's limit on one step's job summary


@dataclass(frozen=True)
class Settings:
    """What the job and the action's inputs say."""

    token: str = field(repr=False)  # kept out of repr: a logged Settings must not leak it
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
    # Verdicts whose measured certainty is below the rules' threshold get this label
    # instead of a scope label ("" turns it off: they get their leaning label).
    needs_decision_label: str = ""
    comment: bool = True
    relabels_file: str = RELABELS_FILE
    relabels_branch: str = ""  # "" commits relabels to the default branch
    backlog_limit: int = 500
    issue_number: int | None = None
    bot_login: str = ""  # the account the token writes as; "" asks GitHub (client.own_login)
    workflow_token: str = field(default="", repr=False)  # the job's own github.token
    exclude_authors: tuple[str, ...] = ()  # added to the positioning file's filters.skip_authors

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
        # ASCII digits only: str.isdigit() also takes "²" and "٣", which int() refuses.
        if not re.fullmatch(r"[0-9]+", limit):
            raise InputError(f"input backlog-limit: {limit!r} is not a whole number. Fix: "
                             "e.g. `backlog-limit: 500`; 0 ignores the other issues.")
        if number and (not re.fullmatch(r"#?[0-9]{1,18}", number)
                       or int(number.lstrip("#")) == 0):
            raise InputError(f"input issue-number: {number!r} is not an issue number. "
                             "Fix: e.g. `issue-number: 12`, or leave it empty.")
        overrides = tuple((key, _input(env, f"label-{key.replace('_', '-')}")) for key in LABELS)
        db = env.get("SCOPEGUARD_DB") or os.path.join(
            env.get("RUNNER_TEMP") or tempfile.gettempdir(), "scopeguard.db")
        # An empty relabels-file turns recording off, so absent and empty differ here.
        relabels_file = _input_set(env, "relabels-file")
        excluded = tuple(a for a in re.split(r"[\s,]+", _input(env, "exclude-authors")) if a)
        return cls(
            token=token, repository=env.get("GITHUB_REPOSITORY", ""),
            api_url=check_api_url(env.get("GITHUB_API_URL", "").strip() or DEFAULT_API_URL),
            event_name=env.get("GITHUB_EVENT_NAME", ""),
            event_path=env.get("GITHUB_EVENT_PATH", ""),
            workspace=Path(env.get("GITHUB_WORKSPACE") or os.getcwd()), db=db,
            positioning_file=_input(env, "positioning-file"),
            label_overrides=tuple((k, v) for k, v in overrides if v),
            dry_run=_bool(env, "dry-run", False), min_confidence=min_confidence,
            needs_decision_label=(_input(env, "label-needs-decision") or NEEDS_DECISION_LABEL)
            if _bool(env, "needs-decision", True) else "",
            comment=_bool(env, "comment", True),
            relabels_file=RELABELS_FILE if relabels_file is None
            else relabels_path(relabels_file),
            relabels_branch=branch_name(_input(env, "relabels-branch")),
            backlog_limit=int(limit) if len(limit) < 19 else 10**18,  # int() stops at 4300
            issue_number=int(number.lstrip("#")) if number else None,
            bot_login=_input(env, "bot-login") or env.get("SCOPEGUARD_GITHUB_LOGIN", "").strip(),
            workflow_token=env.get("SCOPEGUARD_WORKFLOW_TOKEN", "").strip(),
            exclude_authors=excluded)


def relabels_path(path: str) -> str:
    """``relabels-file`` checked: a path inside the repository (the contents API would
    take ``../`` out of it, even into another repository); "" turns recording off."""
    parts = path.replace("\\", "/").split("/")
    if path and (path.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", path)
                 or any(part in ("", ".", "..") for part in parts)):
        raise InputError(f"input relabels-file: {path[:80]!r} is not a path inside the "
                         "repository (no leading /, no empty, . or .. parts). Fix: a path from "
                         "the repository root, e.g. `relabels-file: "
                         f"{RELABELS_FILE}`, or '' to stop recording.")
    return path


def branch_name(name: str) -> str:
    """A branch name for ``relabels-branch`` ("" for the default branch), checked the way
    git checks ref names, so a typo fails before any write."""
    name = name.strip().removeprefix("refs/heads/")
    if name and (not re.fullmatch(r"[A-Za-z0-9._/-]{1,200}", name) or ".." in name
                 or name.startswith(("/", "-", ".")) or name.endswith(("/", ".", ".lock"))
                 or "//" in name):
        raise InputError(f"input relabels-branch: {name[:80]!r} is not a branch name. Fix: "
                         "e.g. `relabels-branch: scopeguard-relabels`, or leave it empty for "
                         "the default branch.")
    return name


def read_event(settings: Settings) -> dict[str, Any]:
    """The event JSON; ``{}`` for a run on the issue-number input without one."""
    if not settings.event_path:
        if settings.issue_number:
            return {}
        raise InputError("GITHUB_EVENT_PATH is not set. Fix: run scopeguard as a step of a "
                         "workflow triggered by `issues` events, or set the issue-number input.")
    where = f"GITHUB_EVENT_PATH ({settings.event_path})"
    fix = ("Fix: run scopeguard inside GitHub Actions, or point GITHUB_EVENT_PATH at the "
           "event's JSON file (an object, as GitHub writes it).")
    try:
        raw = Path(settings.event_path).read_bytes()
    except OSError as exc:
        raise InputError(f"{where}: cannot read the event file ({type(exc).__name__}). "
                         + fix) from None
    if not raw.strip():
        raise InputError(f"{where}: the event file is empty. {fix}")
    try:
        event = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"{where}: the event file is not UTF-8 text. {fix}") from None
    except RecursionError:
        raise InputError(f"{where}: the event JSON nests too deeply. {fix}") from None
    except ValueError as exc:
        raise InputError(f"{where}: the event file is not valid JSON ({exc}). {fix}") from None
    return check_event(event, where, fix)


def check_event(event: Any, where: str, fix: str) -> dict[str, Any]:
    """``event`` if the parts scopeguard reads have the types GitHub gives them; else an
    :class:`InputError` naming the part (a forged or broken file must not crash the run,
    nor turn ``"number": 1.5`` into issue #1)."""
    if not isinstance(event, dict):
        raise InputError(f"{where}: the event is a JSON {_kind(event)}, not an object. {fix}")
    for key in ("issue", "label", "sender"):
        if event.get(key) is not None and not isinstance(event[key], dict):
            raise InputError(f"{where}: \"{key}\" is a JSON {_kind(event[key])}, not an "
                             f"object. {fix}")
    if event.get("action") is not None and not isinstance(event["action"], str):
        raise InputError(f"{where}: \"action\" is a JSON {_kind(event['action'])}, not a "
                         f"string. {fix}")
    label = event.get("label") or {}
    if label.get("name") is not None and not isinstance(label["name"], str):
        raise InputError(f"{where}: the label's \"name\" is a JSON {_kind(label['name'])}, "
                         f"not a string. {fix}")
    issue = event.get("issue") or {}
    number = issue.get("number")
    if "number" in issue and (type(number) is not int or number <= 0):
        raise InputError(f"{where}: the issue's \"number\" is {json.dumps(number)[:40]}, not an "
                         f"issue number (a whole number from 1). {fix}")
    return event


def _kind(value: Any) -> str:
    """A JSON value's type, as JSON names it."""
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
            float: "number", type(None): "null"}.get(type(value), type(value).__name__)


# --- outputs, summary, annotations ------------------------------------------------------------


def _escape(text: str) -> str:
    """A workflow command's message: GitHub's escapes for %, CR and LF."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


_OUTPUT_FIX = ("GITHUB_OUTPUT={path} cannot be written, so the step's outputs (label, "
               "confidence...) would be lost. Fix: leave GITHUB_OUTPUT as the runner sets it "
               "(a writable file).")


def _appendable(path: str) -> bool:
    """Whether ``path`` can be opened to append to (made if missing, as the runner does)."""
    try:
        with open(path, "a", encoding="utf-8"):
            return True
    except OSError:
        return False


class Report:
    """GITHUB_OUTPUT, GITHUB_STEP_SUMMARY and workflow commands, with the tokens scrubbed.

    The tokens are those ``env`` holds: the token input and ``GITHUB_TOKEN`` (either may be
    the one in use, and a traceback may show either).
    """

    def __init__(self, env: Mapping[str, str]) -> None:
        self.output_path = env.get("GITHUB_OUTPUT", "")
        self.summary_path = env.get("GITHUB_STEP_SUMMARY", "")
        self.summary_size = 0  # bytes written to the summary by this run
        self.secrets = [_input(env, "token"), env.get("GITHUB_TOKEN", "").strip(),
                        env.get("SCOPEGUARD_WORKFLOW_TOKEN", "").strip()]

    @property
    def secrets(self) -> list[str]:
        return self._secrets

    @secrets.setter
    def secrets(self, values: Iterable[str]) -> None:
        """The tokens to scrub, registered with :mod:`.errors` too: it scrubs GitHub's
        answers of them before it clips them."""
        self._secrets = [s for s in values if s]
        keep_secret(*self._secrets)

    def scrub(self, text: str) -> str:
        return scrub(text, self.secrets)

    def log(self, text: str) -> None:
        """One log line: a line break in ``text`` (from anything a requester wrote) could
        otherwise start a workflow command of its own."""
        print(self.scrub(" ".join(text.splitlines())), flush=True)

    def notice(self, text: str) -> None:
        self.log(f"::notice::{_escape(text)}")

    def warning(self, text: str) -> None:
        """Something not done that the run could not fix (the rest of its work went on)."""
        self.log(f"::warning::{_escape(text)}")

    def check_files(self) -> None:
        """Before anything is done: an outputs file that cannot be written is bad input
        (the next steps would miss the label); a summary that cannot be written is said
        once and left out (the log has everything)."""
        if self.summary_path and not _appendable(self.summary_path):
            path, self.summary_path = self.summary_path, ""
            self.warning(f"the job summary cannot be written (GITHUB_STEP_SUMMARY={path}): "
                         "it is left out; the log has everything.")
        if self.output_path and not _appendable(self.output_path):
            raise InputError(_OUTPUT_FIX.format(path=self.output_path))

    def outputs(self, **values: str) -> None:
        """Step outputs; ``input_class`` is written as ``input-class``."""
        if not self.output_path:
            return
        try:
            with open(self.output_path, "a", encoding="utf-8", errors="replace") as out:
                for key, value in values.items():
                    value = self.scrub(str(value)).replace("\n", " ")
                    out.write(f"{key.replace('_', '-')}={value}\n")
        except OSError:
            raise InputError(_OUTPUT_FIX.format(path=self.output_path)) from None

    def summary(self, markdown: str) -> None:
        """Append to the job summary: each part clipped to a comment's limit, and the
        whole kept under GitHub's 1 MiB for a step's summary (GitHub drops a larger one,
        failure and all)."""
        if not self.summary_path:
            return
        text = fit_markdown(self.scrub(markdown).rstrip("\n"), COMMENT_LIMIT) + "\n\n"
        size = len(text.encode("utf-8", "replace"))
        if self.summary_size + size > SUMMARY_BYTES:
            text = "*(the job summary is full: the rest is in the log)*\n\n"
            size = len(text)
            if self.summary_size + size > SUMMARY_BYTES:
                return
        self.summary_size += size
        try:
            with open(self.summary_path, "a", encoding="utf-8", errors="replace") as out:
                out.write(text)
        except OSError as exc:  # never the run's failure: said once, then left out
            path, self.summary_path = self.summary_path, ""
            self.warning(f"the job summary cannot be written (GITHUB_STEP_SUMMARY={path}: "
                         f"{exc.strerror or exc}): it is left out; the log has everything.")

    def done(self, done: Iterable[str]) -> int:
        """The summary's account of the writes made; the run's exit status (0)."""
        self.summary("**Done:** " + "; ".join(list(done) or ["nothing to change"]) + ".")
        return 0

    def skip(self, reason: str) -> int:
        """A run with nothing to do: a notice, empty outputs, exit status 0."""
        self.notice(f"scopeguard skipped: {reason}")
        self.outputs(label="", confidence="", input_class="", skipped=reason)
        self.summary(f"### scopeguard skipped\n\n{reason}")
        return 0

    def fail(self, message: str, status: int = 1) -> int:
        """A failed run: the error in the summary and as ``::error::``; returns ``status``
        (2: bad input, which the user fixes; 1: GitHub or the network failed)."""
        message = self.scrub(message)
        self.summary(f"### scopeguard failed\n\n**Error:** {message}")
        self.log(f"::error::{_escape(message)}")
        return status

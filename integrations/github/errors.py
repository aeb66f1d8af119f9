"""GitHub API failures as scopeguard errors whose messages say what to fix.

``github_errors`` turns PyGithub and ``requests`` exceptions raised inside it into
:class:`GitHubError` subclasses (auth, permission, not found, rate limit, unavailable);
their messages name the permission or setting to fix and never carry the token.

Example::

    with github_errors("labelling #12", needs="issues: write"):
        issue.add_to_labels("scope: core")
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from github import GithubException
from github.GithubException import RateLimitExceededExceedsMaxWait

from scopeguard.errors import ScopeguardError

DEFAULT_MAX_WAIT = 60.0  # seconds: the cap on any single wait (SCOPEGUARD_GITHUB_MAX_WAIT)
DETAIL_LIMIT = 200  # characters of an error body without a message that a message quotes
# The tokens in use (the Action's Report registers those it scrubs): GitHub's answers are
# scrubbed of them *before* being clipped, as a clip could cut a token and keep a piece of it
# that no later scrub of the whole token would find.
_SECRETS: dict[str, None] = {}
_PIECE = 8  # characters of a token's own (after its public prefix) that mark a cut token
# What every token of a kind starts with (GitHub's token prefixes, a PEM key's header):
# public, so a text holding it alone ("github_pages", "-----BEGIN CERTIFICATE-----") is
# no piece of a token; a cut token is recognised by the characters after it.
_PUBLIC_PREFIX = re.compile(r"github_pat_|gh[opusr]_|-----BEGIN [A-Z0-9 ]*-----\s*")


def keep_secret(*secrets: str) -> None:
    """Register tokens that no error message may carry (the newest 64 are kept: a
    long-running service sees a new installation token every hour)."""
    for secret in secrets:
        if secret:
            _SECRETS.pop(secret, None)
            _SECRETS[secret] = None
    for old in list(_SECRETS)[:-64]:
        del _SECRETS[old]


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with each of ``secrets`` (and the registered ones) replaced by ``***``, and
    so is a cut one: any run of a token's start, its public prefix and 8 characters more,
    as a text clipped elsewhere can end in."""
    for secret in sorted({*secrets, *_SECRETS}, key=len, reverse=True):
        text = text.replace(secret, "***")
        public = _PUBLIC_PREFIX.match(secret)
        head = secret[:(public.end() if public else 0) + _PIECE]
        start = text.find(head) if len(secret) > len(head) else -1
        while start != -1:
            end = start + len(head)
            while end - start < len(secret) and end < len(text) \
                    and text[end] == secret[end - start]:
                end += 1
            text = text[:start] + "***" + text[end:]
            start = text.find(head, start + 3)
    return text


def clip_detail(text: str, limit: int = DETAIL_LIMIT) -> str:
    """``text`` scrubbed, then cut to ``limit`` characters before a word the cut would go
    through: a token (one word) in it is whole or gone, never cut."""
    text = scrub(text)
    if len(text) <= limit:
        return text
    cut = text[:limit]
    if re.match(r"[\w.~+/=-]", text[limit]):
        cut = re.sub(r"[\w.~+/=-]+$", "", cut)
    return cut.rstrip() + "…"


class GitHubError(ScopeguardError):
    """A GitHub API call failed; the message says what to fix."""

    status: int | None = None

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class GitHubAuthError(GitHubError):
    """The token is missing, wrong or expired (401)."""


class GitHubPermissionError(GitHubError):
    """The token may not do this (403)."""


class GitHubNotFoundError(GitHubError):
    """The repository, issue or file does not exist, or the token cannot see it (404)."""


class GitHubRateLimitError(GitHubError):
    """Rate limited for longer than scopeguard is willing to wait."""


class GitHubUnavailableError(GitHubError):
    """GitHub kept answering 5xx, or could not be reached, after every retry."""


def _message(exc: GithubException) -> str:
    """GitHub's message, else the start of its answer: scrubbed of the tokens before it is
    clipped (a token GitHub echoes must not survive as a piece)."""
    data = exc.data
    if isinstance(data, dict) and data.get("message"):
        # A 422's "Validation Failed" says what failed in its errors (code, field, message)
        details = [" ".join(str(e[k]) for k in ("field", "code", "message") if e.get(k))
                   for e in data.get("errors") or [] if isinstance(e, dict)]
        found = "; ".join(d for d in details if d)
        return scrub(str(data["message"]) + (f" ({found})" if found else ""))
    return clip_detail(str(data or ""))


def translate(exc: BaseException, action: str, needs: str = "issues: write") -> GitHubError:
    """The :class:`GitHubError` for ``exc``, raised while ``action`` (e.g. "labelling #12").

    Args:
        exc: a PyGithub ``GithubException`` or a ``requests`` exception.
        action: what scopeguard was doing, for the message.
        needs: the workflow permission the call needs, named in the 403 fix.
    """
    import requests

    if isinstance(exc, GitHubError):
        return exc
    if isinstance(exc, RateLimitExceededExceedsMaxWait) or (
            isinstance(exc, GithubException) and exc.status in (403, 429)
            and "rate limit" in _message(exc).lower()):
        return GitHubRateLimitError(
            f"GitHub rate limit hit while {action}, and the wait it asks for exceeds "
            "scopeguard's cap. Fix: run it again later (re-run the job), or raise "
            "SCOPEGUARD_GITHUB_MAX_WAIT "
            f"(seconds; default {DEFAULT_MAX_WAIT:g}).", 429)
    if isinstance(exc, GithubException):
        status, detail = exc.status, _message(exc)
        if status == 401:
            return GitHubAuthError(
                f"GitHub rejected the token (401 {detail or 'Bad credentials'}) while {action}. "
                "Fix: pass a valid token (the default `token: ${{ github.token }}`, or a "
                "personal access token that has not expired).", 401)
        if status == 403 and "locked" in detail.lower():
            return GitHubPermissionError(
                f"GitHub refused {action}: the issue is locked ({detail}). Fix: unlock the "
                "issue to let scopeguard comment, or leave it (nothing else to change).", 403)
        if status == 403:
            return GitHubPermissionError(
                f"GitHub refused {action} (403 {detail or 'Forbidden'}). Fix: give the workflow "
                f"`permissions: {needs}` (or use a token allowed to do it).", 403)
        if status == 404:
            return GitHubNotFoundError(
                f"not found while {action} (404). Fix: check the repository and issue number, "
                "and that the token can see the repository (a token for another repository "
                "or without access to a private one gets 404).", 404)
        if status == 410:
            return GitHubError(
                f"GitHub answered 410 ({detail or 'Gone'}) while {action}: the issue was "
                "deleted or the repository's issues are turned off. Fix: nothing to do for a "
                "deleted issue; else turn Issues on in the repository's settings.", 410)
        if status == 422:
            return GitHubError(
                f"GitHub refused what scopeguard sent while {action} (422 "
                f"{detail or 'Unprocessable Entity'}). Fix: the field GitHub names is what "
                "it did not take: a label's name comes from the positioning file's labels "
                "(change it there); anything else (a colour, a comment) is a scopeguard bug "
                "to report with this message.", 422)
        return GitHubError(f"GitHub answered {status} while {action}: {detail}.", status)
    if isinstance(exc, requests.exceptions.RetryError):
        found = re.search(r"too many (\d{3}) error responses", str(exc))
        status = int(found.group(1)) if found else None
        if status in (403, 429):
            return GitHubRateLimitError(
                f"GitHub kept rate-limiting scopeguard while {action}, after every retry. "
                "Fix: run it again later (in the Action: re-run the job).", status)
        return GitHubUnavailableError(
            f"GitHub kept failing ({status or 'server error'}) while {action}, after every "
            "retry. Fix: run it again (re-run the job); see https://www.githubstatus.com.",
            status)
    if isinstance(exc, requests.exceptions.RequestException):
        return GitHubUnavailableError(
            f"cannot reach the GitHub API while {action} ({type(exc).__name__}). Fix: check "
            "GITHUB_API_URL and the network, then run it again (re-run the job).")
    return GitHubError(f"{action} failed: {type(exc).__name__}.")


@contextmanager
def github_errors(action: str, needs: str = "issues: write") -> Iterator[None]:
    """Raise PyGithub/requests failures inside the block as :class:`GitHubError`."""
    import requests

    try:
        yield
    except (GithubException, requests.exceptions.RequestException) as exc:
        raise translate(exc, action, needs) from None
    except (TypeError, KeyError, AttributeError, ValueError) as exc:
        if not _raised_in_pygithub(exc):  # a bug of scopeguard's own: its traceback stays
            raise
        raise not_the_api(action) from None


def not_the_api(action: str) -> GitHubError:
    """An answer that is not GitHub's API's JSON (PyGithub reads it without complaint)."""
    return GitHubError(f"the answer while {action} was not what GitHub's API sends (not "
                       "its JSON: a proxy, a login page or a wrong GITHUB_API_URL?). Fix: "
                       "check GITHUB_API_URL (unset for github.com; https://HOST/api/v3 "
                       "for GitHub Enterprise Server) and any proxy between.")


def _raised_in_pygithub(exc: BaseException) -> bool:
    """Whether ``exc`` came from inside PyGithub (reading an answer it did not expect)."""
    trace = exc.__traceback__
    last = None
    while trace is not None:
        last, trace = trace, trace.tb_next
    module = last.tb_frame.f_globals.get("__name__", "") if last else ""
    return module == "github" or module.startswith("github.")

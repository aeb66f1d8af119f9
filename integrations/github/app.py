"""How the webhook service reaches GitHub: a token, or a GitHub App's installation tokens,
and the account each writes as (whose comments are scopeguard's own).

``GITHUB_TOKEN`` (a fine-grained or classic token, or an App installation's token, with
issues: write, and contents: write for the relabels file), or, for a GitHub App,
``GITHUB_APP_ID`` and ``GITHUB_APP_PRIVATE_KEY`` (the PEM, or a path to it): each event
then gets a token of the installation it came from, cached until 5 minutes before it
expires. ``SCOPEGUARD_GITHUB_LOGIN`` names the account when GitHub cannot say.

Example::

    access = GitHubAccess.from_env()
    token = access.token_for(payload)          # the installation's, else GITHUB_TOKEN
    login = access.login_for(payload, token)   # e.g. "scopeguard-app[bot]"
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scopeguard.errors import ConfigError, InputError

from .client import DEFAULT_API_URL, check_api_url, make_client, own_login, settings_from_env
from .errors import github_errors, keep_secret


@dataclass
class GitHubAccess:
    """How the service authenticates to GitHub: a token, or a GitHub App's key."""

    api_url: str = DEFAULT_API_URL
    token: str = field(default="", repr=False)
    app_id: str = ""
    private_key: str = field(default="", repr=False)
    login: str = ""  # SCOPEGUARD_GITHUB_LOGIN: the account the token writes as; "" asks GitHub
    _tokens: dict[int, tuple[str, float]] = field(default_factory=dict, repr=False)
    _logins: dict[str, str] = field(default_factory=dict, repr=False)
    # Why the login is known wrong, per kind of token ("app": an installation's, "token"):
    # GitHub posted a comment as another account. Later events with that kind of token
    # fail with it before they post, not one comment posted and deleted each.
    wrong_login: dict[str, str] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GitHubAccess:
        env = os.environ if environ is None else environ
        key = env.get("GITHUB_APP_PRIVATE_KEY", "").strip()
        if key and not key.startswith("-----BEGIN"):
            try:
                key = Path(key).expanduser().read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError("GITHUB_APP_PRIVATE_KEY", f"cannot read the key file "
                                  f"({type(exc).__name__}).", "set it to the App's private "
                                  "key (PEM text) or the path of the .pem file.") from None
        if key:
            from cryptography.hazmat.primitives.serialization import load_pem_private_key

            try:
                load_pem_private_key(key.encode(), password=None)
            except (ValueError, TypeError):
                raise ConfigError("GITHUB_APP_PRIVATE_KEY", "is not an unencrypted PEM private "
                                  "key.", "use the .pem file GitHub generated for the App "
                                  "(Settings > Developer settings > GitHub Apps > Private "
                                  "keys).") from None
        # A wrong URL refuses the start (exit 2), rather than fail every GitHub event.
        api_url = check_api_url((env.get("GITHUB_API_URL") or DEFAULT_API_URL).strip())
        access = cls(api_url=api_url.rstrip("/"),
                     token=env.get("GITHUB_TOKEN", "").strip(),
                     app_id=env.get("GITHUB_APP_ID", "").strip(), private_key=key,
                     login=env.get("SCOPEGUARD_GITHUB_LOGIN", "").strip())
        if bool(access.app_id) != bool(access.private_key):
            raise ConfigError("GITHUB_APP_ID", "a GitHub App needs both GITHUB_APP_ID and "
                              "GITHUB_APP_PRIVATE_KEY.", "set both, or neither and "
                              "GITHUB_TOKEN instead.")
        return access

    @property
    def configured(self) -> bool:
        return bool(self.token or self.app_id)

    def secrets(self) -> list[str]:
        return [s for s in (self.token, self.private_key) if s]

    def forget(self, token: str) -> None:
        """Drop a cached installation token GitHub refused."""
        with self._lock:
            for installation, (cached, _) in list(self._tokens.items()):
                if cached == token:
                    del self._tokens[installation]

    def _app_installation(self, payload: Mapping[str, Any]) -> int | None:
        installation = (payload.get("installation") or {}).get("id")
        return installation if self.app_id and isinstance(installation, int) else None

    def token_kind(self, payload: Mapping[str, Any]) -> str:
        """``app`` when the event is written back with its installation's token, else
        ``token`` (GITHUB_TOKEN)."""
        return "app" if self._app_installation(payload) is not None else "token"

    def login_for(self, payload: Mapping[str, Any], token: str) -> str:
        """The account ``token`` (the event's, from :meth:`token_for`) writes as: only its
        comments are scopeguard's own. SCOPEGUARD_GITHUB_LOGIN wins; an App's is its bot
        (``<slug>[bot]``, read once with the App's key); a token's is asked of GitHub."""
        kind = self.token_kind(payload)
        if kind in self.wrong_login:
            raise InputError(self.wrong_login[kind])
        if self.login:
            return self.login
        with self._lock:
            if kind in self._logins:
                return self._logins[kind]
        if kind == "app":
            from github import Auth, GithubIntegration

            with github_errors("reading the GitHub App (GET /app)",
                               needs="the App's own key (GITHUB_APP_PRIVATE_KEY)"):
                app = GithubIntegration(auth=Auth.AppAuth(self.app_id, self.private_key),
                                        base_url=self.api_url).get_app()
                login = f"{app.slug}[bot]"
        else:
            login = own_login(make_client(token, self.api_url, **settings_from_env()), token)
        with self._lock:
            self._logins[kind] = login
        return login

    def check(self) -> None:
        """One cheap authenticated call, not retried: ``GET /app`` with the App's key, else
        ``GET /user`` with GITHUB_TOKEN (a 403 there, an installation token's, still means
        GitHub took it). Raises :class:`.errors.GitHubError` when it fails."""
        from .errors import GitHubPermissionError

        if self.app_id:
            from github import Auth, GithubIntegration

            with github_errors("checking the GitHub App's key (GET /app)", needs="the App"):
                GithubIntegration(auth=Auth.AppAuth(self.app_id, self.private_key),
                                  base_url=self.api_url, retry=0, timeout=15).get_app()
            return
        client = make_client(self.token, self.api_url, retries=0, throttle=False, timeout=15)
        try:
            with github_errors("checking that GitHub takes GITHUB_TOKEN (GET /user)"):
                client.get_user().login  # noqa: B018 - the call is the check
        except GitHubPermissionError:
            pass

    def token_for(self, payload: Mapping[str, Any]) -> str:
        """A token for the event: the App installation's it came from, else GITHUB_TOKEN."""
        installation = self._app_installation(payload)
        if installation is not None:
            with self._lock:
                token, until = self._tokens.get(installation, ("", 0.0))
                if token and time.time() < until:
                    return token
                from github import Auth, GithubIntegration

                with github_errors(f"getting a token for the App's installation "
                                   f"{installation}", needs="the App installed on the "
                                   "repository"):
                    integration = GithubIntegration(
                        auth=Auth.AppAuth(self.app_id, self.private_key),
                        base_url=self.api_url)
                    issued = integration.get_access_token(installation)
                expires = (issued.expires_at.timestamp() if issued.expires_at
                           else time.time() + 3600)
                # Kept until 5 minutes before it expires (GitHub issues them for an hour).
                self._tokens[installation] = (issued.token, expires - 300)
                keep_secret(issued.token)  # no error message carries it, from the start
                return issued.token
        if self.token:
            return self.token
        raise ConfigError("GITHUB_TOKEN", "no GitHub token for this event" + (
            " (it names no App installation)" if self.app_id else "") + ".",
            "set GITHUB_TOKEN, or GITHUB_APP_ID and GITHUB_APP_PRIVATE_KEY for the App "
            "whose webhook this is.")

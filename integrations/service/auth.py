"""Webhook authentication for the service: HMAC signatures (Jira's and GitHub's) or a token.

A GitHub webhook (or App) signs each delivery with its secret: ``X-Hub-Signature-256:
sha256=<HMAC-SHA256 of the raw body>`` (:func:`verify_github`). A Jira webhook with a
secret signs each delivery: ``X-Hub-Signature: sha256=<HMAC-SHA256
of the raw body>``. Jira Automation's "Send web request" and older Server webhooks cannot
sign, so a shared token is accepted too (``Authorization: Bearer <token>``,
``X-Scopeguard-Token: <token>`` or ``?token=``). Both are compared in constant time, and
checked before the body is parsed.

Example::

    how, why = authenticate(request.headers, request.query_params, body,
                            secret=settings.webhook_secret, token=settings.webhook_token)
    if not how:
        return JSONResponse({"error": why}, status_code=401)
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping


def sign(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature`` value Jira sends for ``body`` (GitHub's
    ``X-Hub-Signature-256`` is the same)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def authenticate(headers: Mapping[str, str], query: Mapping[str, str], body: bytes, *,
                 secret: str, token: str) -> tuple[str, str]:
    """How a webhook proved itself, or why it did not.

    Args:
        headers: the request headers, names lower-case (Starlette's ``Headers`` are).
        query: the query parameters (``?token=``).
        body: the raw body, exactly as received: the signature covers its bytes.
        secret: ``SCOPEGUARD_WEBHOOK_SECRET`` ("" when unset).
        token: ``SCOPEGUARD_WEBHOOK_TOKEN`` ("" when unset).

    Returns:
        ``("signature" | "token", "")`` when authentic, else ``("", why)``: the 401
        answer, which names the fix and never the secret.
    """
    signature = headers.get("x-hub-signature", "").strip()
    if signature and secret:
        if hmac.compare_digest(signature.lower().encode(), sign(secret, body).encode()):
            return "signature", ""
        return "", ("the X-Hub-Signature does not match the body. Fix: set the Jira webhook's "
                    "secret to the value of SCOPEGUARD_WEBHOOK_SECRET.")
    auth = headers.get("authorization", "")
    given = (auth[7:].strip() if auth.lower().startswith("bearer ") else
             headers.get("x-scopeguard-token", "").strip())
    # A '+' sent unencoded in ?token= reads as a space (form encoding): the value with
    # '+' kept is tried too. Both compared, in constant time.
    tried = [given] if given else [query.get("token", "")]
    tried += [tried[0].replace(" ", "+")] if not given and " " in tried[0] else []
    if tried[0] and token:
        matches = [hmac.compare_digest(t.encode(), token.encode()) for t in tried]
        if any(matches):
            return "token", ""
        return "", ("the token does not match. Fix: send the value of "
                    "SCOPEGUARD_WEBHOOK_TOKEN in 'Authorization: Bearer <token>' (in ?token= "
                    "URL-encode it: '+' as %2B, '/' as %2F, '=' as %3D).")
    return "", ("the webhook is not signed and carries no token. Fix: give the Jira webhook "
                "the secret in SCOPEGUARD_WEBHOOK_SECRET (Jira then sends X-Hub-Signature), or "
                "send 'Authorization: Bearer <SCOPEGUARD_WEBHOOK_TOKEN>' from Jira Automation.")


def verify_github(headers: Mapping[str, str], body: bytes, secret: str) -> str:
    """Why a GitHub delivery is not authentic, or "" when its signature matches the body."""
    given = headers.get("x-hub-signature-256", "").strip().lower()
    if not given:
        return ("the webhook carries no X-Hub-Signature-256. Fix: set the GitHub webhook's "
                "(or App's) secret to the value of SCOPEGUARD_GITHUB_WEBHOOK_SECRET.")
    if not hmac.compare_digest(given.encode(), sign(secret, body).encode()):
        return ("the X-Hub-Signature-256 does not match the body. Fix: set the GitHub "
                "webhook's (or App's) secret to the value of SCOPEGUARD_GITHUB_WEBHOOK_SECRET.")
    return ""

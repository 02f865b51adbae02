"""``spec.loginProbe``: log in to the mail server with each new token and show the outcome in status.

The same login as ``emailtoken check-mail`` (:func:`emailtoken.checkmail.check_login`: SASL
XOAUTH2, INBOX opened read-only or STAT), run by the engine in a worker thread after a new token
is published. :func:`condition_of` and :func:`advise` are pure: the outcome becomes the
``MailLogin`` condition, whose reason on a refusal is the likely cause from
:mod:`emailtoken.mailanswers` and whose message carries the fixing commands; one Event per change.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from emailtoken import conditions
from emailtoken.checkmail import LoginOutcome, check_login, parse_endpoint
from emailtoken.conditions import Condition
from emailtoken.consumer import AccessToken
from emailtoken.model import LoginProbe

MAIL_LOGIN = "MailLogin"
#: Seconds per network step of a probe; below the stop grace, so a stopping operator waits for it.
TIMEOUT = 15.0
_LABEL = {"imap": "IMAP", "pop3": "POP3", "smtp": "SMTP"}
_STAGE_REASONS = {
    "connect": "MailServerUnreachable",
    "tls": "TLSFailed",
    "capability": "OAuthNotOffered",
}


def run(probe: LoginProbe, access_token: str, username: str, scope: str, expires_at: datetime) -> Condition:
    """Log in once (blocking: call it from a worker thread) and return the ``MailLogin`` condition."""
    try:
        endpoint = parse_endpoint(probe.server, probe.protocol, probe.security)
    except ValueError as exc:
        return Condition(MAIL_LOGIN, False, "InvalidProbe", f"spec.loginProbe.server: {exc}")
    token = AccessToken("probe", access_token, username, expires_at, scope=scope)
    outcome = check_login(endpoint, token, timeout=TIMEOUT)
    what = f"{_LABEL[probe.protocol]} XOAUTH2 login as {username} to {endpoint} ({probe.security})"
    return condition_of(outcome, what)


def condition_of(outcome: LoginOutcome, what: str) -> Condition:
    """A probe's outcome as the condition: the cause as its reason, the server's words and the fix as its message."""
    if outcome.ok:
        return Condition(MAIL_LOGIN, True, "LoginSucceeded", f"{what} succeeded; {outcome.info}")
    parts = [f"{what} failed at {outcome.stage}"]
    if outcome.server_reply:
        parts.append(f"server said: {outcome.server_reply}")
    if outcome.challenge:
        parts.append(f"error details: {outcome.challenge}")
    parts.extend(outcome.details)
    parts.extend(f"fix: {fix}" for fix in outcome.fixes)
    reason = outcome.cause or _STAGE_REASONS.get(outcome.stage, "LoginRefused")
    return Condition(MAIL_LOGIN, False, reason, "; ".join(parts))


def advise(
    configured: bool, latest: Condition | None, status: Mapping[str, Any]
) -> tuple[list[Condition], list[tuple[str, str, str]]]:
    """The ``MailLogin`` condition to show and the Event for a change (none while it stays the same).

    ``latest``: the last probe's condition (None: none since start; status keeps the one before).
    Without a probe configured, a condition shown before turns Unknown.
    """
    shown = conditions.get(status.get("conditions"), MAIL_LOGIN)
    if not configured:
        if shown and shown.get("status") != "Unknown":
            return [Condition(MAIL_LOGIN, None, "NoProbe", "spec.loginProbe is not set")], []
        return [], []
    if latest is None:
        return [], []
    same = shown is not None and shown.get("status") == latest.status_text and shown.get("reason") == latest.reason
    if same:
        return [latest], []
    if latest.status:
        event = ("Normal", "MailLoginSucceeded", latest.message) if shown is not None else None
        return [latest], [event] if event else []
    return [latest], [("Warning", "MailLoginFailed", f"{latest.reason}: {latest.message}")]

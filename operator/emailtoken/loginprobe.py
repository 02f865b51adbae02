"""``spec.loginProbe``: log in to the mail server with each new token and show the outcome in status.

The same login as ``emailtoken check-mail`` (:func:`emailtoken.checkmail.check_login`: SASL
XOAUTH2, INBOX opened read-only or STAT), run by the engine after a new token is published.
:func:`condition_of` and :func:`advise` are pure: the outcome becomes the ``MailLogin``
condition, whose reason on a refusal is the likely cause from :mod:`emailtoken.mailanswers` and
whose message carries the fixing commands; one Event per change.

The server is the token author's choice, so :func:`target` admits only the installer's mail
hosts (:mod:`emailtoken.mailhosts`) before anything is resolved or connected. :class:`Probes`
keeps the operator's time: a probe runs in a daemon thread of its own (never in asyncio's
default pool, which the Kubernetes client's name lookups share, nor in the provider pool), at
most :data:`MAX_RUNNING` at once operator-wide and :data:`MAX_PER_NAMESPACE` per namespace (one
more is skipped, not queued: one tenant's slow servers cannot take every slot), and a step
waits for it at most :data:`DEADLINE` seconds, then cuts its connections
(:class:`emailtoken.checkmail.Dialer`), so a mail server that hangs or answers a byte at a time
cannot hold a step, a thread, its scheduler slot or a stopping operator for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from emailtoken import conditions, mailhosts
from emailtoken.checkmail import Dialer, Endpoint, LoginOutcome, check_login, parse_endpoint, server_text
from emailtoken.conditions import Condition
from emailtoken.consumer import AccessToken
from emailtoken.mailhosts import MailHost
from emailtoken.model import LoginProbe

MAIL_LOGIN = "MailLogin"
#: Seconds per network step of a probe (connect, TLS, each answer).
TIMEOUT = 10.0
#: The longest a step waits for its probe; below the default stop grace (25 s).
DEADLINE = 20.0
#: Probes in flight at once, operator-wide and per namespace (tenants choose their servers).
MAX_RUNNING = 4
MAX_PER_NAMESPACE = 1
_LABEL = {"imap": "IMAP", "pop3": "POP3", "smtp": "SMTP"}
_STAGE_REASONS = {
    "connect": "MailServerUnreachable",
    "tls": "TLSFailed",
    "capability": "OAuthNotOffered",
}


def target(probe: LoginProbe, hosts: Iterable[MailHost]) -> Endpoint | Condition:
    """Where the probe may log in, or the condition saying why not (pure: nothing resolved or connected)."""
    try:
        endpoint = parse_endpoint(probe.server, probe.protocol, probe.security)
    except ValueError as exc:
        return Condition(MAIL_LOGIN, False, "InvalidProbe", f"spec.loginProbe.server: {exc}")
    if not mailhosts.allowed(endpoint.host, endpoint.port, hosts):
        return Condition(MAIL_LOGIN, False, "MailHostNotAllowed", mailhosts.refusal(endpoint.host, endpoint.port))
    return endpoint


def describe(probe: LoginProbe, endpoint: Endpoint, username: str) -> str:
    """The login a condition speaks of (the user name, from the spec or the provider, without control characters)."""
    return f"{_LABEL[probe.protocol]} XOAUTH2 login as {server_text(username)} to {endpoint} ({probe.security})"


def run(
    probe: LoginProbe,
    endpoint: Endpoint,
    access_token: str,
    username: str,
    scope: str,
    expires_at: datetime,
    dialer: Dialer | None = None,
) -> Condition:
    """Log in once (blocking: :class:`Probes` calls it in a thread) and return the ``MailLogin`` condition."""
    token = AccessToken("probe", access_token, username, expires_at, scope=scope)
    outcome = check_login(endpoint, token, timeout=TIMEOUT, dialer=dialer)
    return condition_of(outcome, describe(probe, endpoint, username))


class Probes:
    """Runs probes against allowed hosts only, in threads of their own, bounded in number and wait."""

    def __init__(
        self,
        hosts: Iterable[MailHost],
        *,
        limit: int = MAX_RUNNING,
        per_namespace: int = MAX_PER_NAMESPACE,
        deadline: float = DEADLINE,
    ) -> None:
        self.hosts = tuple(hosts)
        self.limit = limit
        self.per_namespace = per_namespace
        self.deadline = deadline
        #: threads still running, in all and per namespace (changed on the event loop only)
        self.running = 0
        self.running_in: Counter[str] = Counter()

    async def login(
        self,
        probe: LoginProbe,
        access_token: str,
        username: str,
        scope: str,
        expires_at: datetime,
        *,
        namespace: str = "",
    ) -> Condition:
        """The ``MailLogin`` condition of one probe; never raises for the server's or the host's sake."""
        endpoint = target(probe, self.hosts)
        if isinstance(endpoint, Condition):
            return endpoint
        what = describe(probe, endpoint, username)
        busy = self._busy(namespace)
        if busy:
            return Condition(MAIL_LOGIN, None, "ProbeBusy", f"{what} was not tried: {busy}; the next new token is")
        dialer = Dialer()
        found = self._start(lambda: run(probe, endpoint, access_token, username, scope, expires_at, dialer), namespace)
        try:
            return await asyncio.wait_for(asyncio.shield(found), self.deadline)
        except TimeoutError:
            dialer.cut()  # the thread's blocked read returns: it ends now, not when the server stops talking
            why = f"no complete answer within {self.deadline:g}s (a firewall, or a slow or stalled server)"
            return Condition(MAIL_LOGIN, False, "MailServerTimeout", f"{what} failed: {why}")

    def _busy(self, namespace: str) -> str:
        """Why no probe may start now ("" when one may); "" as namespace: only the operator-wide limit."""
        if namespace and self.running_in[namespace] >= self.per_namespace:
            return f"{self.running_in[namespace]} other login probe(s) in this namespace are still running"
        if self.running >= self.limit:
            return f"{self.running} other login probes are still waiting for their mail servers"
        return ""

    def _start(self, work: Callable[[], Condition], namespace: str) -> asyncio.Future[Condition]:
        """Run ``work`` in a daemon thread (a hung one never holds up the process's exit)."""
        loop = asyncio.get_running_loop()
        found: asyncio.Future[Condition] = loop.create_future()

        def done(cond: Condition) -> None:
            self.running -= 1
            self.running_in[namespace] -= 1
            if self.running_in[namespace] <= 0:
                del self.running_in[namespace]
            if not found.done():
                found.set_result(cond)

        def thread() -> None:
            try:
                cond = work()
            except Exception as exc:  # a library's surprise is the server's trouble, not the step's
                cond = Condition(MAIL_LOGIN, False, "ProbeFailed", f"the login probe failed ({type(exc).__name__})")
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits any more
                loop.call_soon_threadsafe(done, cond)

        self.running += 1
        self.running_in[namespace] += 1
        threading.Thread(target=thread, name="emailtoken-mailprobe", daemon=True).start()
        return found


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
    failed = "MailLoginFailed" if latest.status is False else "MailLoginNotTried"
    return [latest], [("Warning", failed, f"{latest.reason}: {latest.message}")]

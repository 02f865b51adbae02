"""From what a step found to what the EmailToken says: conditions, phase, status fields.

Pure policy (cert-manager's habit: read inputs, decide, write only what changed): no I/O,
no clock. The engine collects a step's findings in a :class:`Report` (its conditions, its
Events, extra status fields, the metrics outcome), renders the status with
:func:`render_status` and patches only :func:`changed` fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from emailtoken import conditions
from emailtoken.conditions import Condition
from emailtoken.failures import Failure
from emailtoken.model import EmailTokenSpec, TokenRef
from emailtoken.outcomes import ErrorKind
from emailtoken.providers.base import DeviceFlow
from emailtoken.secretdata import PublishedToken
from emailtoken.timefmt import rfc3339

#: the Event after the grant was dropped on request (emailtoken.io/reauthorize)
GRANT_DROPPED = ("Normal", "GrantDropped", "the grant was dropped on request; sign in again")


@dataclass
class Report:
    """What a step found out, turned into status and Events at the end."""

    ready: Condition | None = None
    authorized: Condition | None = None
    #: (type, reason, message) of each Event to post
    events: list[tuple[str, str, str]] = field(default_factory=list)
    #: status fields set by the step itself (they win over the rendered ones)
    fields: dict[str, Any] = field(default_factory=dict)
    #: the refresh attempt's outcome for the metrics (None: no attempt)
    outcome: str | None = None
    #: warnings ahead of a known failure (emailtoken.advisories: GrantExpiring, ServiceRetiring)
    advisories: list[Condition] = field(default_factory=list)

    def copy(self) -> Report:
        """A copy whose lists and fields can change without changing this one."""
        return replace(self, events=list(self.events), fields=dict(self.fields), advisories=list(self.advisories))

    def failed(self, error: Failure, published: PublishedToken | None, *, token_valid: bool) -> None:
        """Conditions for a token whose last attempt failed with ``error``.

        Ready stays True while the published access token is valid; Authorized turns False
        unless the failure says nothing about the grant (transient, permission).
        """
        until = rfc3339(published.expires_at) if published is not None else ""
        if token_valid:
            self.ready = Condition(
                conditions.READY, True, "TokenValid", f"the access token stays valid until {until}; {error.message}"
            )
        else:
            self.ready = Condition(conditions.READY, False, error.reason, error.message)
        if error.kind not in (ErrorKind.TRANSIENT, ErrorKind.PERMISSION_DENIED):  # the grant itself is fine then
            self.authorized = Condition(conditions.AUTHORIZED, False, error.reason, error.message)

    def steady(self, published: PublishedToken | None, provider: str, *, token_valid: bool) -> None:
        """Conditions for a token with no failure standing."""
        if published is None or not token_valid:
            self.ready = Condition(conditions.READY, False, "Pending", "no access token has been issued yet")
            return
        self.ready = Condition(
            conditions.READY, True, "TokenValid", f"access token valid until {rfc3339(published.expires_at)}"
        )
        who = published.username or "the application"
        self.authorized = Condition(conditions.AUTHORIZED, True, "Authorized", f"{provider} issues tokens for {who}")

    def standing(
        self, error: Failure | None, published: PublishedToken | None, provider: str, *, token_valid: bool
    ) -> None:
        """Conditions for a step that changed nothing: the standing failure's, else the steady ones."""
        if error is not None:
            self.failed(error, published, token_valid=token_valid)
        else:
            self.steady(published, provider, token_valid=token_valid)


@dataclass(frozen=True)
class Findings:
    """The token's state after a step, as far as status shows it."""

    published: PublishedToken | None
    attempt_at: datetime | None
    error: Failure | None
    failures: int
    device: DeviceFlow | None
    handled: Mapping[str, str]


@dataclass(frozen=True)
class Links:
    """Operator-wide URLs shown in status."""

    redirect_base_url: str | None = None
    admin_url: str | None = None


def phase_of(ready: Mapping[str, Any] | None, authorized: Mapping[str, Any] | None) -> str:
    """The printer column: Ready, or the reason of the condition that is not."""
    if authorized is not None and authorized.get("status") == "False":
        return str(authorized.get("reason", "Error"))
    if ready is None or ready.get("status") != "True":
        return str((ready or {}).get("reason", "Pending"))
    return "Ready"


def render_status(
    body: Mapping[str, Any],
    token: TokenRef,
    spec: EmailTokenSpec | None,
    found: Findings,
    report: Report,
    links: Links,
    now: datetime,
) -> dict[str, Any]:
    """The whole status the token should have (compare with :func:`changed` before writing)."""
    status_in: Mapping[str, Any] = body.get("status") or {}
    generation = (body.get("metadata") or {}).get("generation")
    updates = [c for c in (report.ready, report.authorized, *report.advisories) if c is not None]
    conds = conditions.merge(status_in.get("conditions"), updates, now=now, generation=generation)
    status: dict[str, Any] = {"conditions": conds}
    status["phase"] = phase_of(conditions.get(conds, conditions.READY), conditions.get(conds, conditions.AUTHORIZED))
    if spec is not None:
        status.update(_links(token, spec, links))
    pub = found.published
    if pub is not None:
        status["expiresAt"] = rfc3339(pub.expires_at)
        if pub.username:
            status["account"] = pub.username
        if pub.obtained_at is not None:
            status["lastRefreshTime"] = rfc3339(pub.obtained_at)
    status["nextRefreshTime"] = rfc3339(found.attempt_at) if found.attempt_at is not None else None
    status["deviceCode"] = _device_code(found)
    status["refreshFailures"] = found.failures
    if generation is not None:
        status["observedGeneration"] = generation
    if found.handled:
        status["handledAnnotations"] = dict(found.handled)
    status.update(report.fields)
    return status


def _links(token: TokenRef, spec: EmailTokenSpec, links: Links) -> dict[str, Any]:
    out: dict[str, Any] = {"secretName": spec.secret_name}
    if spec.interactive and links.redirect_base_url:
        out["redirectUri"] = links.redirect_base_url.rstrip("/") + "/callback"
    if spec.flow == "AuthorizationCode" and links.admin_url:
        out["authorizeUrl"] = f"{links.admin_url.rstrip('/')}/authorize/{token.namespace}/{token.name}"
    return out


def _device_code(found: Findings) -> dict[str, str] | None:
    device = found.device
    if device is None or found.error is None or found.error.reason != "AwaitingAuthorization":
        return None
    return {
        "userCode": device.user_code,
        "verificationUri": device.verification_uri,
        "expiresAt": rfc3339(device.expires_at),
    }


def first_authorization(published: PublishedToken | None, error: Failure | None, failures: int) -> bool:
    """Is a token about to be published the first one, or the first after a failure (Authorized Event)?"""
    return published is None or error is not None or failures > 0


def announced(asked: bool, spec_current: bool, routine: bool) -> bool:
    """Does a refresh get a Refreshed Event: someone asked (refresh-now), the published token is from
    another spec, or every refresh is announced (``--refresh-events all``)?"""
    return asked or not spec_current or routine


def refresh_event(
    provider: str, username: str, expires_at: datetime, attempt_at: datetime, *, first: bool, announce: bool
) -> tuple[str, str, str] | None:
    """The Event for a published access token: Authorized for the first (or the first after a
    failure), Refreshed when ``announce`` (someone asked, the spec changed, or every refresh is
    announced), else none: at 5,000 tokens a second Event each was a tenth of the start-up CPU."""
    if not first and not announce:
        return None  # the routine refresh: nothing to format
    validity = f"valid until {rfc3339(expires_at)}, next refresh at {rfc3339(attempt_at)}"
    if first:
        who = username or "the application"
        return ("Normal", "Authorized", f"{provider} accepted the credentials for {who}; access token {validity}")
    return ("Normal", "Refreshed", f"access token refreshed; {validity}")


def known_status(body: Mapping[str, Any], written: tuple[str, Mapping[str, Any]] | None) -> Mapping[str, Any]:
    """The token's status as last known: the body's, plus what we wrote since, when the body is the
    very version our last status writes were computed from (a step woken by a timer or a Secret,
    before the watch brought their echo); diffing against the stale body alone would leave a field
    we changed back to the body's value unwritten (refreshFailures 1 after a recovery)."""
    status = body.get("status") or {}
    if written is not None and written[0] == _version(body):
        return {**status, **written[1]}
    return status


def after_write(
    body: Mapping[str, Any], written: tuple[str, Mapping[str, Any]] | None, patch: Mapping[str, Any]
) -> tuple[str, Mapping[str, Any]]:
    """What to remember of a status write: the fields written since the body's version (only
    those: the body holds the rest, so no token keeps a second copy of its whole status)."""
    version = _version(body)
    earlier = written[1] if written is not None and written[0] == version else {}
    return version, {**earlier, **patch}


def _version(body: Mapping[str, Any]) -> str | None:
    return str((body.get("metadata") or {}).get("resourceVersion", "")) or None


def changed(status: Mapping[str, Any], status_in: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of ``status`` that differ from the token's current status: the patch to write."""
    return {k: v for k, v in status.items() if status_in.get(k) != v}


def is_true(condition: Mapping[str, Any] | None) -> bool:
    return bool(condition and condition.get("status") == "True")

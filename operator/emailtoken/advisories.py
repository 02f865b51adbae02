"""Warnings ahead of a failure the provider announces: a grant close to a known limit, a retiring service.

Pure policy (no Kubernetes, no HTTP, no clock): the engine hands in what it knows and gets the
conditions, Events and status field to show, so an alert can fire days before a mail task fails.

What is known in advance:

- a refresh token with a stated end: Google's token answer carries ``refresh_token_expires_in``
  for time-limited grants (an app whose OAuth consent screen is in "Testing" gets 7 days);
- refresh tokens that die unused: Microsoft's after 90 days, Google's after 6 months. Every
  refresh renews them, so this limit only comes close when refreshes have failed for weeks;
- Exchange Web Services, switched off in Exchange Online (MC1227454).

Not knowable here: Google's limit of 100 refresh tokens per account and OAuth client (the 101st
sign-in silently revokes the oldest); docs/consuming-tokens.md says how to stay below it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from emailtoken import conditions, scopes
from emailtoken.conditions import Condition
from emailtoken.model import EmailTokenSpec
from emailtoken.outcomes import TokenSet
from emailtoken.secretdata import Grant
from emailtoken.timefmt import parse_rfc3339, rfc3339

GRANT_EXPIRING = "GrantExpiring"
SERVICE_RETIRING = "ServiceRetiring"
#: Condition reasons, whether the end is near (True) or not yet (False): the provider stated the
#: refresh token's end / the limit on an unused refresh token.
STATED_LIFETIME = "StatedLifetime"
UNUSED_LIMIT = "UnusedLimit"
EWS_RETIREMENT = "EWSRetirement"
#: How long a refresh token lives unused (each refresh starts it again).
UNUSED_LIMITS = {"Microsoft": timedelta(days=90), "Google": timedelta(days=183)}
DEFAULT_WINDOW = timedelta(days=3)
#: A stated lifetime beyond this is not believed (a broken answer must not overflow a datetime).
MAX_STATED = timedelta(days=3650)
STATUS_FIELD = "reauthorizationRequiredBy"


@dataclass(frozen=True)
class GrantLimit:
    """When the grant stops working unless someone acts, and why."""

    at: datetime
    reason: str
    cause: str


@dataclass(frozen=True)
class Advice:
    """What to add to a step's report, and the condition types now warned about (kept in memory)."""

    conditions: list[Condition] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)
    warned: frozenset[str] = frozenset()
    deadline: datetime | None = None


def stated_expiry(seconds: Any, now: datetime) -> datetime | None:
    """``refresh_token_expires_in`` of a token answer as a time; None when absent or unusable."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float | str):
        return None
    try:
        value = float(seconds)
    except ValueError:
        return None
    if not 0 < value < MAX_STATED.total_seconds():
        return None
    return now + timedelta(seconds=int(value))


#: why a provider states a refresh token's end, and what lifts the limit
_STATED_WHY = {
    "Google": "Google gives apps whose OAuth consent screen is in Testing refresh tokens for 7 days: "
    "publish the app to In production",
    "Microsoft": "Entra ID gives single-page-application redirect URIs refresh tokens for 24 hours: "
    "register the redirect URI under the Web platform",
}


def _stated_why(provider: str) -> str:
    """The message for a stated end: the provider's known reason, else only that it stated one."""
    why = _STATED_WHY.get(provider)
    return f"{provider} stated when this refresh token expires" + (f" ({why})" if why else "")


def grant_limit(provider: str, stated: datetime | None, last_used: datetime | None) -> GrantLimit | None:
    """The earliest known end of a delegated grant: its stated lifetime or its unused limit."""
    found: list[GrantLimit] = []
    if stated is not None:
        found.append(GrantLimit(stated, STATED_LIFETIME, _stated_why(provider)))
    unused = UNUSED_LIMITS.get(provider)
    if unused is not None and last_used is not None:
        days = unused.days
        found.append(
            GrantLimit(
                last_used + unused,
                UNUSED_LIMIT,
                f"{provider} refresh tokens expire after {days} days unused and no refresh has succeeded "
                f"since {rfc3339(last_used)} (see the Ready condition for why)",
            )
        )
    return min(found, key=lambda limit: limit.at) if found else None


def remembered_stated(status: Mapping[str, Any]) -> datetime | None:
    """A stated grant end read back from status after a restart (until the next refresh restates it)."""
    cond = conditions.get(status.get("conditions"), GRANT_EXPIRING)
    if not cond or cond.get("reason") != STATED_LIFETIME:
        return None
    return deadline_of(status)


def deadline_of(status: Mapping[str, Any]) -> datetime | None:
    """``status.reauthorizationRequiredBy`` as a time (for the gauge, equal to status by construction)."""
    text = status.get(STATUS_FIELD)
    try:
        return parse_rfc3339(str(text)) if text else None
    except ValueError:
        return None


def stated_end(tokens: TokenSet, grant: Grant) -> datetime | None:
    """The refresh token's end as the provider states it: in this answer, else as the grant Secret
    recorded it (a provider states it on some answers only)."""
    return tokens.refresh_expires_at or parsed(grant.refresh_expires_at)


def parsed(text: str) -> datetime | None:
    """A grant Secret's stated end (``refresh_token_expires_at``), None when absent or unreadable."""
    try:
        return parse_rfc3339(text) if text else None
    except ValueError:
        return None


def _span(delta: timedelta) -> str:
    hours = max(0, int(delta.total_seconds() // 3600))
    days = f"{hours // 24} day{'s' if hours // 24 != 1 else ''}"
    if hours < 24:
        return f"{hours} hour{'s' if hours != 1 else ''}"
    return days if hours % 24 == 0 else f"{days} {hours % 24} hour{'s' if hours % 24 != 1 else ''}"


def _grant_condition(token: str, limit: GrantLimit, now: datetime, window: timedelta) -> Condition:
    when = f"re-authorization is needed by {rfc3339(limit.at)}"
    if limit.at - now > window:
        return Condition(GRANT_EXPIRING, False, limit.reason, f"{when}; a warning comes {_span(window)} before")
    left = "the grant has expired" if limit.at <= now else f"in {_span(limit.at - now)}"
    return Condition(
        GRANT_EXPIRING,
        True,
        limit.reason,
        f"{when} ({left}): {limit.cause}. Sign in again before then (`emailtoken authorize {token}` "
        "or the callback service's admin page); the new grant replaces this one without a gap",
    )


def _ews_condition() -> Condition:
    return Condition(
        SERVICE_RETIRING,
        True,
        EWS_RETIREMENT,
        f"this token is for Exchange Web Services (EWS), which Exchange Online switches off in phases from "
        f"{scopes.EWS_RETIREMENT_STARTS} and for good on {scopes.EWS_RETIREMENT_ENDS} (message center "
        "MC1227454): move the mail task to Microsoft Graph (services GraphMailRead, GraphMailReadWrite, "
        "GraphMailSend; docs/consuming-tokens.md)",
    )


def advise(
    spec: EmailTokenSpec,
    token: str,
    limit: GrantLimit | None,
    *,
    grant_usable: bool,
    status: Mapping[str, Any],
    warned: Iterable[str],
    now: datetime,
    window: timedelta = DEFAULT_WINDOW,
) -> Advice:
    """Conditions, Warning Events (once per stretch a condition is True) and the status field.

    ``grant_usable``: False while a person must sign in anyway (no grant, or a dead one).
    A condition shown before and not applicable now turns False rather than lingering True.
    """
    previous = status.get("conditions")
    found: list[Condition] = []
    deadline = limit.at if spec.interactive and grant_usable and limit is not None else None
    if deadline is not None and limit is not None:
        found.append(_grant_condition(token, limit, now, window))
    elif conditions.get(previous, GRANT_EXPIRING):
        found.append(Condition(GRANT_EXPIRING, False, "NoGrant", "no usable grant: nothing to warn about"))
    if spec.provider == "Microsoft" and scopes.uses_ews(spec.scopes, spec.raw.get("services") or ()):
        found.append(_ews_condition())
    elif conditions.get(previous, SERVICE_RETIRING):
        found.append(Condition(SERVICE_RETIRING, False, "NoRetiringService", "no service of this token is retiring"))
    events: list[tuple[str, str, str]] = []
    now_warned: set[str] = set()
    for cond in found:
        if not cond.status:
            continue
        now_warned.add(cond.type)
        shown = conditions.get(previous, cond.type)
        if cond.type not in warned and not (shown and shown.get("status") == "True"):
            events.append(("Warning", cond.type, cond.message))
    fields = {STATUS_FIELD: rfc3339(deadline) if deadline is not None else None}
    return Advice(found, events, fields, frozenset(now_warned), deadline)

"""What the admin page shows about one EmailToken, derived from the object alone (pure).

Keeping this apart from the HTML and the handlers makes the rules testable: which
tokens get a "Get Email Token" button, which a "Re-authorize", which none.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from emailtoken import endpoints
from emailtoken.api import consumer_secret_name
from emailtoken.failures import SIGN_IN_FIXES
from emailtoken.model import SpecError, parse_spec
from emailtoken.timefmt import parse_rfc3339

#: Flows the callback service can sign in (a confidential web client and a redirect URI).
CALLBACK_FLOWS = ("AuthorizationCode",)
APP_ONLY_FLOWS = ("ClientCredentials", "ServiceAccount")


class Action(enum.Enum):
    """What the admin page offers for a token."""

    SIGN_IN = "Get Email Token"
    REAUTHORIZE = "Re-authorize"
    APP_ONLY = "app-only, nothing to sign in"
    DEVICE_CODE = "device code (see status)"
    FIX_SPEC = "fix the spec first"


class Tone(enum.Enum):
    """How a state reads at a glance (a CSS class; the text says it too)."""

    OK = "ok"
    WAIT = "wait"
    BAD = "bad"


@dataclass(frozen=True)
class TokenRow:
    """One EmailToken as the admin page lists it."""

    namespace: str
    name: str
    uid: str
    provider: str
    mailbox: str
    flow: str
    phase: str
    tone: Tone
    ready_reason: str
    authorized_reason: str
    message: str
    expires_at: datetime | None
    last_refresh: datetime | None
    account: str
    secret_name: str
    action: Action
    device_code: Mapping[str, Any] | None = None
    #: the host the browser is sent to for the sign-in (from the spec: show it, a tenant chose it)
    sign_in_host: str = ""

    @property
    def key(self) -> str:
        """``namespace/name``, as kubectl and the CLI write it."""
        return f"{self.namespace}/{self.name}"

    @property
    def can_sign_in(self) -> bool:
        """True when the admin page offers a sign-in button."""
        return self.action in (Action.SIGN_IN, Action.REAUTHORIZE)


def _condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    for cond in status.get("conditions") or ():
        if cond.get("type") == type_:
            return cond
    return {}


def _time(text: Any) -> datetime | None:
    if not text:
        return None
    try:
        return parse_rfc3339(str(text))
    except ValueError:
        return None


def _spec_view(spec_raw: Mapping[str, Any], name: str) -> tuple[str, str, str | None]:
    """(consumer Secret name, sign-in host, why the spec does not parse): the Secret name even then."""
    try:
        spec = parse_spec(spec_raw, name)
    except SpecError as exc:
        return consumer_secret_name(name, spec_raw), "", str(exc)
    return spec.secret_name, endpoints.host_of(spec.authorization_url), None


def _action(flow: str, authorized: Mapping[str, Any], spec_error: str | None) -> Action:
    """What the page offers for the token."""
    if spec_error is not None:
        return Action.FIX_SPEC
    if flow in APP_ONLY_FLOWS:
        return Action.APP_ONLY
    if flow == "DeviceCode":
        return Action.DEVICE_CODE
    if authorized.get("status") == "False" and authorized.get("reason") in SIGN_IN_FIXES:
        return Action.REAUTHORIZE
    return Action.SIGN_IN


def _tone(phase: str, ready: Mapping[str, Any]) -> Tone:
    if ready.get("status") == "True":
        return Tone.OK
    if phase in ("Pending", "AwaitingAuthorization", "ProviderUnavailable", "APIUnavailable"):
        return Tone.WAIT
    return Tone.BAD


def row_of(obj: Mapping[str, Any]) -> TokenRow:
    """The admin page's view of one EmailToken object."""
    meta = obj.get("metadata") or {}
    spec_raw: Mapping[str, Any] = obj.get("spec") or {}
    status: Mapping[str, Any] = obj.get("status") or {}
    ready = _condition(status, "Ready")
    authorized = _condition(status, "Authorized")
    flow = str(spec_raw.get("flow") or "AuthorizationCode")
    secret_name, sign_in_host, spec_error = _spec_view(spec_raw, str(meta.get("name", "")))
    action = _action(flow, authorized, spec_error)
    phase = str(status.get("phase") or ("InvalidSpec" if spec_error else "Pending"))
    tone = _tone(phase, ready)
    message = spec_error or str(
        (authorized.get("message") if authorized.get("status") == "False" else None) or ready.get("message") or ""
    )
    return TokenRow(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        provider=str(spec_raw.get("provider", "")),
        mailbox=str(spec_raw.get("emailAddress") or ""),
        flow=flow,
        phase=phase,
        tone=tone,
        ready_reason=str(ready.get("reason") or ""),
        authorized_reason=str(authorized.get("reason") or ""),
        message=message,
        expires_at=_time(status.get("expiresAt")),
        last_refresh=_time(status.get("lastRefreshTime")),
        account=str(status.get("account") or ""),
        secret_name=secret_name,
        action=action,
        device_code=status.get("deviceCode") if isinstance(status.get("deviceCode"), Mapping) else None,
        sign_in_host=sign_in_host,
    )


def rows_of(objects: Iterable[Mapping[str, Any]]) -> list[TokenRow]:
    """Rows sorted by namespace and name (a stable page)."""
    return sorted((row_of(o) for o in objects), key=lambda r: (r.namespace, r.name))


def relative(moment: datetime, now: datetime) -> str:
    """``in 59m`` / ``3m ago``: what a person reads first next to a timestamp (two units at most)."""
    seconds = int((moment - now).total_seconds())
    if seconds == 0:
        return "now"
    left = abs(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, left = divmod(left, size)
        if amount:
            parts.append(f"{amount}{unit}")
    # Two units ("1h30m", "1d2h"), except that seconds next to minutes are noise ("1m", not "1m30s").
    text = parts[0] if parts[0].endswith("m") else "".join(parts[:2])
    return f"in {text}" if seconds > 0 else f"{text} ago"

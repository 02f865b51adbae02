"""What every provider offers the engine, and the inputs it needs."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from emailtoken.model import EmailTokenSpec
from emailtoken.outcomes import TokenSet

#: Bounds on what a provider's answer may say (the answer is hostile input; see providers.http).
MAX_LIFETIME = timedelta(days=1)  # real access tokens live an hour or so
MAX_DEVICE_CODE_LIFETIME = timedelta(hours=1)
MAX_POLL_INTERVAL = 60.0
MAX_TEXT = 512  # provider text quoted in status and Events


def seconds(value: Any, default: float, *, low: float = 0.0, high: float) -> float:
    """A provider's number of seconds (``expires_in``, ``interval``), bounded; ``default`` when unusable."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    if math.isnan(number):
        return default
    return min(max(number, low), high)


def lifetime(value: Any, default: float = 3600.0) -> timedelta:
    """``expires_in`` as a bounded timedelta (0 up to a day): no overflow, no negative lifetimes."""
    return timedelta(seconds=seconds(value, default, high=MAX_LIFETIME.total_seconds()))


def text(value: Any) -> str:
    """Provider text for a message: one line, at most MAX_TEXT characters."""
    line = " ".join(str(value or "").split())
    return line if len(line) <= MAX_TEXT else line[: MAX_TEXT - 1] + "…"


@dataclass(frozen=True)
class ClientCredentials:
    """Secret material read from the referenced Secrets (never logged)."""

    client_secret: str | None = field(default=None, repr=False)
    service_account_info: dict[str, Any] | None = field(default=None, repr=False)
    #: reads the pod's projected ServiceAccount token (emailtoken.clientauth); instead of a client secret
    client_assertion: Callable[[], str] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class DeviceFlow:
    """A started device-code sign-in."""

    user_code: str
    verification_uri: str
    expires_at: datetime
    interval: float
    message: str
    state: dict[str, Any] = field(repr=False, default_factory=dict)


class Provider(Protocol):
    """Blocking calls to one identity provider; run them in a worker thread."""

    def acquire_app_token(self, spec: EmailTokenSpec, creds: ClientCredentials) -> TokenSet:
        """App-only token (client credentials / service account)."""
        ...

    def refresh(self, spec: EmailTokenSpec, creds: ClientCredentials, refresh_token: str) -> TokenSet:
        """New access token from a refresh token; the result may carry a rotated refresh token."""
        ...

    def authorization_url(
        self, spec: EmailTokenSpec, *, redirect_uri: str, state: str, code_challenge: str, login_hint: str | None
    ) -> str:
        """Where to send the browser for an interactive sign-in (PKCE S256)."""
        ...

    def exchange_code(
        self, spec: EmailTokenSpec, creds: ClientCredentials, *, code: str, redirect_uri: str, code_verifier: str
    ) -> TokenSet:
        """Redeem an authorization code; the result carries the refresh token and account."""
        ...


class DeviceCodeProvider(Protocol):
    """Providers that support the device authorization grant (Microsoft)."""

    def start_device_flow(self, spec: EmailTokenSpec, creds: ClientCredentials) -> DeviceFlow:
        """Start a device-code sign-in."""
        ...

    def poll_device_flow(self, spec: EmailTokenSpec, creds: ClientCredentials, flow: DeviceFlow) -> TokenSet | None:
        """Poll once: TokenSet when approved, None while pending."""
        ...

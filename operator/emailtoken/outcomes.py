"""Typed results of talking to an OAuth provider.

Providers translate library answers (msal dicts, google-auth exceptions) into these
types so the engine can decide what to do without knowing any provider's dialect.
Messages here are shown in status and Events, so they must never carry secret values.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class ErrorKind(enum.Enum):
    """What the engine should do about a failure."""

    TRANSIENT = "transient"  # retry with backoff: 5xx, 429, timeouts, connection errors
    REAUTHORIZE = "reauthorize"  # the grant is dead: a person must sign in again
    INVALID_CLIENT = "invalid_client"  # client id/secret wrong: retry slowly, watch the Secret
    BAD_CONFIG = "bad_config"  # spec or referenced material is unusable: wait for a change
    #: the Kubernetes API refused one of our calls (RBAC, 401/403): retry often, nobody tells us of the fix
    PERMISSION_DENIED = "permission_denied"


#: Condition reasons per kind, as written to status.
REASONS: dict[ErrorKind, str] = {
    ErrorKind.TRANSIENT: "ProviderUnavailable",
    ErrorKind.REAUTHORIZE: "ReauthorizationRequired",
    ErrorKind.INVALID_CLIENT: "InvalidClient",
    ErrorKind.BAD_CONFIG: "InvalidConfiguration",
    ErrorKind.PERMISSION_DENIED: "PermissionDenied",
}


@dataclass(frozen=True)
class TokenSet:
    """An access token and what came with it."""

    access_token: str = field(repr=False)
    expires_at: datetime
    scope: str = ""
    token_type: str = "Bearer"
    refresh_token: str | None = field(default=None, repr=False)
    account: str | None = None
    #: when the refresh token expires, if the provider said so (Google: ``refresh_token_expires_in``)
    refresh_expires_at: datetime | None = None


class ProviderError(Exception):
    """A provider call failed; ``message`` is safe to show to users."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        reason: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.reason = reason or REASONS[kind]
        self.code = code
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"ProviderError({self.kind.value}, {self.reason}, {self.message!r})"

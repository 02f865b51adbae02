"""What the engine reports about its work, for metrics (no secret ever passes through here).

The engine calls an :class:`Observer`; :mod:`emailtoken.metrics` implements it with
prometheus-client. The default does nothing, so the core stays free of metrics code.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from emailtoken.api import Key


class Observer(Protocol):
    """Hooks called by the engine."""

    def provider_call(self, provider: str, operation: str, seconds: float, outcome: str) -> None:
        """One provider request finished: ``outcome`` is ``ok`` or an error reason."""

    def refresh_attempt(self, key: Key, provider: str, outcome: str) -> None:
        """A refresh was attempted: ``outcome`` is ``ok`` or the failure reason."""

    def token_state(
        self,
        key: Key,
        *,
        provider: str,
        ready: bool,
        authorized: bool,
        expires_at: datetime | None,
        next_refresh: datetime | None,
        reauthorize_by: datetime | None = None,
    ) -> None:
        """The token's state after a step (``reauthorize_by``: status.reauthorizationRequiredBy)."""

    def forget(self, key: Key) -> None:
        """The token is gone."""


class NullObserver:
    """Observes nothing."""

    def provider_call(self, provider: str, operation: str, seconds: float, outcome: str) -> None:
        return None

    def refresh_attempt(self, key: Key, provider: str, outcome: str) -> None:
        return None

    def token_state(
        self,
        key: Key,
        *,
        provider: str,
        ready: bool,
        authorized: bool,
        expires_at: datetime | None,
        next_refresh: datetime | None,
        reauthorize_by: datetime | None = None,
    ) -> None:
        return None

    def forget(self, key: Key) -> None:
        return None

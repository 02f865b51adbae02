"""What the engine remembers about each EmailToken between steps, and what a step returns.

Plain data (no I/O, no policy): :class:`TokenState` per token, the provider results still to
be written (:class:`Rotation`, :class:`Unpublished`), :class:`StepResult`. Lost on restart by
design: what matters is in the Secrets and status.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from emailtoken.conditions import Condition
from emailtoken.failures import Failure, Refusal
from emailtoken.model import EmailTokenSpec
from emailtoken.outcomes import TokenSet
from emailtoken.providers.base import ClientCredentials, DeviceFlow
from emailtoken.secretdata import Grant, PublishedToken


@dataclass(frozen=True)
class Rotation:
    """A refresh token the grant Secret must receive before anything else happens.

    ``spent`` is the grant as read before its refresh token was presented (the provider has
    rotated it since); None for a sign-in the operator completed itself (device code).
    """

    successor: Grant = field(repr=False)
    spent: Grant | None = field(repr=False)


@dataclass(frozen=True)
class Unpublished:
    """An access token the provider issued that the consumer Secret does not hold yet."""

    result: TokenSet = field(repr=False)
    obtained_at: datetime
    username: str
    fingerprint: str


@dataclass
class TokenState:
    """What the engine remembers about one token between steps (lost on restart by design)."""

    loaded: bool = False
    published: PublishedToken | None = None
    #: when the next attempt is due (the planned refresh, or a retry after a failure; shown as
    #: status.nextRefreshTime); None: only on a change
    attempt_at: datetime | None = None
    fingerprint: str | None = None
    failures: int = 0
    error: Failure | None = None
    last_warning: tuple[str, str] | None = None
    #: a rotated refresh token not yet in the grant Secret (the one there is spent)
    rotation: Rotation | None = field(default=None, repr=False)
    #: an access token not yet published; published instead of a new provider call until it expires
    unpublished: Unpublished | None = field(default=None, repr=False)
    refs: frozenset[str] = frozenset()
    credential_refs: frozenset[str] = frozenset()
    #: the last attempt the provider refused: what it presented and the earliest retry (a nudge
    #: moves attempt_at, not this)
    refusal: Refusal | None = None
    #: annotation values already acted on; status.handledAnnotations says the same, but the body a
    #: step gets may predate our own status write (a step right after a wake-up), so memory wins
    handled: dict[str, str] = field(default_factory=dict)
    consumer: str = ""
    #: does the consumer Secret exist, as far as this process knows (it read or wrote it)
    consumer_exists: bool = True
    device: DeviceFlow | None = field(default=None, repr=False)
    #: the refresh token's end as the provider last stated it (Google app in Testing); None: unstated
    grant_stated: datetime | None = None
    #: advisory conditions (emailtoken.advisories) whose Warning Event this process already posted
    warned: frozenset[str] = frozenset()
    #: the MailLogin condition of the last login probe (spec.loginProbe); None: none since start
    login: Condition | None = None
    #: the status fields this process wrote since the body's resourceVersion it computed them from:
    #: a body still at that version predates the writes, which are the newer truth (report.known_status)
    status_written: tuple[str, Mapping[str, Any]] | None = field(default=None, repr=False)
    #: the spec as the body last held it, and what it parsed to (or the complaint, for a spec that
    #: failed): a step whose body holds an equal spec (every routine refresh) does not parse it again
    parsed: tuple[Mapping[str, Any], EmailTokenSpec | str] | None = field(default=None, repr=False)

    def valid_at(self, now: datetime) -> bool:
        """Does the consumer Secret hold an access token still valid at ``now``?"""
        pub = self.published
        return pub is not None and pub.has_token and pub.expires_at > now

    def start_over(self, fingerprint: str, at: datetime) -> None:
        """A new spec (``fingerprint``) is followed: earlier failures were the old spec's; next attempt ``at``."""
        self.fingerprint = fingerprint
        self.failures, self.error = 0, None
        self.attempt_at = at

    def recovered(self, published: PublishedToken, next_at: datetime) -> None:
        """A new token is published: failures, warnings and refusals are over; the next refresh ``next_at``."""
        self.unpublished = None
        self.published = published
        self.failures, self.error, self.last_warning, self.refusal = 0, None, None, None
        self.attempt_at = next_at

    def undo_point(self) -> dict[str, Any]:
        """What publishing a token and reporting it change (:meth:`recovered`, the advisories'
        warnings): :meth:`undo` puts it back when the write that was to publish it did not land."""
        return {name: getattr(self, name) for name in _PUBLISHING}

    def undo(self, saved: Mapping[str, Any]) -> None:
        """Back to :meth:`undo_point`'s values (only those fields: what else changed meanwhile stays)."""
        for name, value in saved.items():
            setattr(self, name, value)

    def grant_replaced(self, now: datetime) -> None:
        """A new sign-in or a reauthorization changed the grant while we refreshed: theirs wins.
        What our refresh bought (a rotation, an access token) belongs to the grant it replaced;
        step again now with what is there."""
        self.rotation, self.unpublished = None, None
        self.attempt_at = now

    def grant_dropped(self, now: datetime) -> None:
        """The grant was dropped on request: as :meth:`grant_replaced`, and a sign-in in progress
        or a standing failure belongs to it too."""
        self.grant_replaced(now)
        self.device, self.error = None, None


_PUBLISHING = ("unpublished", "published", "failures", "error", "last_warning", "refusal", "attempt_at", "warned")


@dataclass(frozen=True)
class StepResult:
    """When to step again: seconds, or None to wait for a change to the object or its Secrets."""

    delay: float | None
    refreshed: bool = False


def inputs_digest(creds: ClientCredentials, refresh_token: str | None) -> str:
    """A digest of what a provider call presents (kept in memory only, never the values), each part
    length-prefixed; JSON only for a service account key, the rare case (it runs every refresh)."""
    key = json.dumps(creds.service_account_info, sort_keys=True) if creds.service_account_info else ""
    digest = hashlib.sha256()
    for part in (creds.client_secret or "", key, refresh_token or ""):  # each length-prefixed: unambiguous
        data = part.encode()
        digest.update(len(data).to_bytes(4, "big") + data)
    return digest.hexdigest()

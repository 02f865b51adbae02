"""Sign-ins in flight, kept in this process's memory: the PKCE verifier never leaves the server.

Each entry is keyed by a random nonce that the signed state carries. Taking an entry
removes it (single use) and remembers the nonce until it would have expired, so a
replayed callback is told "already used" rather than "not found". Memory is bounded: a
flood of started sign-ins evicts the oldest ones, it cannot exhaust the process.

Why memory and not a cookie: the admin page (``kubectl port-forward``, localhost) and
``/callback`` (the public host) are different origins, so a cookie set by one is not
sent to the other. The consequence: the callback must reach the replica that started
the sign-in (one replica, or see the README's multi-replica notes).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from emailtoken.model import TokenRef

MAX_PENDING = 1000


class AlreadyUsed(Exception):
    """The nonce was taken before: the callback is being replayed."""


@dataclass(frozen=True)
class PendingSignIn:
    """One started sign-in."""

    nonce: str
    token: TokenRef
    verifier: str = field(repr=False)
    redirect_uri: str
    expires_at: float


class PendingStore:
    """Thread-safe, TTL-bounded, size-bounded map nonce -> :class:`PendingSignIn`."""

    def __init__(
        self, *, ttl: float = 600, max_entries: int = MAX_PENDING, clock: Callable[[], float] = time.time
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self._pending: OrderedDict[str, PendingSignIn] = OrderedDict()
        self._used: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, token: TokenRef, *, verifier: str, redirect_uri: str) -> PendingSignIn:
        """Remember a new sign-in under a fresh random nonce."""
        entry = PendingSignIn(
            nonce=secrets.token_urlsafe(24),
            token=token,
            verifier=verifier,
            redirect_uri=redirect_uri,
            expires_at=self.clock() + self.ttl,
        )
        with self._lock:
            self._prune()
            while len(self._pending) >= self.max_entries:
                self._pending.popitem(last=False)
            self._pending[entry.nonce] = entry
        return entry

    def take(self, nonce: str) -> PendingSignIn | None:
        """Remove and return the sign-in; None when unknown or expired; AlreadyUsed on replay."""
        with self._lock:
            self._prune()
            if nonce in self._used:
                raise AlreadyUsed(nonce)
            entry = self._pending.pop(nonce, None)
            if entry is None:
                return None
            self._used[nonce] = entry.expires_at
            while len(self._used) > self.max_entries * 4:
                self._used.popitem(last=False)
            return entry

    def __len__(self) -> int:
        with self._lock:
            self._prune()
            return len(self._pending)

    def _prune(self) -> None:
        now = self.clock()
        for nonce in [n for n, e in self._pending.items() if e.expires_at <= now]:
            del self._pending[nonce]
        for nonce in [n for n, t in self._used.items() if t <= now]:
            del self._used[nonce]

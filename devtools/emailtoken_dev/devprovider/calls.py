"""A record of what clients asked, so tests and benchmarks can count calls per endpoint.

Only routing facts are kept (endpoint, grant type, client id, status, OAuth error): never
a body, header or query value that could carry a secret.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Call:
    """One request as seen by the provider."""

    endpoint: str
    method: str
    provider: str
    tenant: str | None
    grant_type: str | None
    client_id: str | None
    time: float
    status: int
    error: str | None = None
    error_code: int | None = None
    account: str | None = None
    fault: bool = False
    duration: float = 0.0
    #: how the client authenticated at the token endpoint: client_secret, client_assertion or None
    client_auth: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for the control API."""
        return asdict(self)


class CallLog:
    """Thread-safe list of calls plus per-endpoint counters."""

    def __init__(self, limit: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._calls: list[Call] = []
        self._limit = limit
        self._counters: Counter[str] = Counter()

    def record(self, call: Call) -> None:
        """Append a call; the oldest are dropped past ``limit`` (counters keep counting)."""
        with self._lock:
            self._calls.append(call)
            if len(self._calls) > self._limit:
                del self._calls[: len(self._calls) - self._limit]
            self._counters[call.endpoint] += 1
            if call.grant_type:
                self._counters[f"{call.endpoint}:{call.grant_type}"] += 1

    @property
    def calls(self) -> list[Call]:
        """A copy of the calls so far."""
        with self._lock:
            return list(self._calls)

    @property
    def counters(self) -> dict[str, int]:
        """Calls per endpoint, and per ``endpoint:grant_type`` for the token endpoint."""
        with self._lock:
            return dict(self._counters)

    def count(
        self,
        endpoint: str | None = None,
        *,
        grant_type: str | None = None,
        status: int | None = None,
        provider: str | None = None,
        client_id: str | None = None,
    ) -> int:
        """How many recorded calls match all the given fields."""
        with self._lock:
            return sum(
                1
                for c in self._calls
                if endpoint in (None, c.endpoint)
                and grant_type in (None, c.grant_type)
                and status in (None, c.status)
                and provider in (None, c.provider)
                and client_id in (None, c.client_id)
            )

    def reset(self) -> None:
        """Forget calls and counters."""
        with self._lock:
            self._calls.clear()
            self._counters.clear()

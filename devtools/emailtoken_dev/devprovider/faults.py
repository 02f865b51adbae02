"""Scripted failures: the outages, throttling and slow answers the refresh engine must survive.

A fault is matched against each incoming request (endpoint, provider, grant type, client)
and consumed in the order queued, so a test can say "the next two token calls answer 503
with Retry-After: 7, then one takes 3 s" and know exactly what the operator saw.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any

from .errors import error_from_code

ENDPOINTS = (
    "token",
    "authorize",
    "devicecode",
    "devicelogin",
    "discovery",
    "jwks",
    "introspect",
    "userinfo",
    "tokeninfo",
    "revoke",
    "*",
)


@dataclass
class Fault:
    """One scripted behaviour.

    ``status`` None with a ``delay`` means "answer normally, but late". ``drop`` closes the
    connection without an answer. ``count`` None repeats until cleared.
    """

    endpoint: str = "token"
    status: int | None = None
    retry_after: float | None = None
    delay: float | None = None
    body: Any = None
    count: int | None = 1
    error_code: str | None = None
    match_grant_type: str | None = None
    match_provider: str | None = None
    match_client_id: str | None = None
    drop: bool = False

    def __post_init__(self) -> None:
        if self.endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint must be one of {ENDPOINTS}, not {self.endpoint!r}")
        if self.error_code:
            error_from_code(self.error_code, "microsoft")  # validate early, at the call site
        if self.status is None and self.error_code is None and self.delay is None and not self.drop:
            raise ValueError("a fault needs a status, an error_code, a delay or drop=True")
        if self.count is not None and self.count < 1:
            raise ValueError("count must be at least 1 (or None for 'until cleared')")

    def matches(self, endpoint: str, provider: str, grant_type: str | None, client_id: str | None) -> bool:
        """Whether this fault applies to a request."""
        return (
            self.endpoint in ("*", endpoint)
            and self.match_provider in (None, provider)
            and self.match_grant_type in (None, grant_type)
            and self.match_client_id in (None, client_id)
        )


class FaultQueue:
    """Ordered, thread-safe list of pending faults (``p.faults``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(
        self,
        endpoint: str = "token",
        status: int | None = None,
        *,
        retry_after: float | None = None,
        delay: float | None = None,
        body: Any = None,
        count: int | None = 1,
        error_code: str | None = None,
        match_grant_type: str | None = None,
        match_provider: str | None = None,
        match_client_id: str | None = None,
        drop: bool = False,
    ) -> Fault:
        """Queue a fault; see :class:`Fault` for the meaning of each field."""
        fault = Fault(
            endpoint=endpoint,
            status=status,
            retry_after=retry_after,
            delay=delay,
            body=body,
            count=count,
            error_code=error_code,
            match_grant_type=match_grant_type,
            match_provider=match_provider,
            match_client_id=match_client_id,
            drop=drop,
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def take(self, endpoint: str, provider: str, grant_type: str | None, client_id: str | None) -> Fault | None:
        """Consume one use of the first matching fault."""
        with self._lock:
            for i, fault in enumerate(self._faults):
                if fault.matches(endpoint, provider, grant_type, client_id):
                    if fault.count is not None:
                        fault.count -= 1
                        if fault.count == 0:
                            del self._faults[i]
                    return fault
            return None

    def clear(self) -> None:
        """Drop every pending fault."""
        with self._lock:
            self._faults.clear()

    def pending(self) -> list[dict[str, Any]]:
        """What is still queued (for assertions and the control API)."""
        with self._lock:
            return [asdict(f) for f in self._faults]

    def __len__(self) -> int:
        with self._lock:
            return len(self._faults)

"""Client for the ``/_control/`` API, for tests and benchmarks whose provider is another process."""

from __future__ import annotations

from typing import Any

import requests


class RemoteProvider:
    """Drive a provider started with ``python -m emailtoken_dev.devprovider`` (pass its ready line)."""

    def __init__(self, url: str, control_token: str, ca: str | bool = True, *, timeout: float = 30) -> None:
        self.url = url.rstrip("/")
        self._http = requests.Session()
        self._http.trust_env = False
        self._http.verify = ca
        self._http.headers["Authorization"] = f"Bearer {control_token}"
        self._timeout = timeout

    @classmethod
    def from_ready(cls, ready: dict[str, Any]) -> RemoteProvider:
        """Build from the JSON ready line."""
        return cls(ready["url"], ready["control_token"], ready.get("ca") or True)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        response = self._http.request(method, f"{self.url}/_control/{path}", json=body, timeout=self._timeout)
        response.raise_for_status()
        return response.json()

    def add_fault(self, **fault: Any) -> None:
        """Queue a fault (``FaultQueue.add`` fields)."""
        self._call("POST", "faults", fault)

    def clear_faults(self) -> None:
        """Drop queued faults."""
        self._call("DELETE", "faults")

    def calls(self) -> list[dict[str, Any]]:
        """Recorded calls."""
        calls: list[dict[str, Any]] = self._call("GET", "calls")["calls"]
        return calls

    def counters(self) -> dict[str, int]:
        """Calls per endpoint (and per ``token:<grant_type>``)."""
        counters: dict[str, int] = self._call("GET", "calls")["counters"]
        return counters

    def reset_counters(self) -> None:
        """Forget calls and counters."""
        self._call("POST", "reset")

    def configure(self, config: dict[str, Any]) -> dict[str, dict[str, str]]:
        """Add clients/users/service accounts; returns generated service-account keys."""
        keys: dict[str, dict[str, str]] = self._call("POST", "config", config)["service_account_keys"]
        return keys

    def settings(self, **changes: Any) -> dict[str, Any]:
        """Read settings, or change some (``token_lifetime=5``)."""
        result: dict[str, Any] = self._call("PATCH", "settings", changes) if changes else self._call("GET", "settings")
        return result

    def revoke_grant(self, target: str, *, revoke_access_tokens: bool = False) -> int:
        """Revoke by e-mail or refresh token."""
        count: int = self._call("POST", "revoke", {"target": target, "revoke_access_tokens": revoke_access_tokens})[
            "revoked"
        ]
        return count

    def expire_all_refresh_tokens(self) -> int:
        """Expire every live refresh token."""
        count: int = self._call("POST", "expire-refresh-tokens")["expired"]
        return count

    def approve_device(self, user_code: str, email: str) -> None:
        """Approve a device code."""
        self._call("POST", "device", {"user_code": user_code, "email": email, "approve": True})

    def deny_device(self, user_code: str) -> None:
        """Deny a device code."""
        self._call("POST", "device", {"user_code": user_code, "approve": False})

    def token_info(self, access_token: str) -> dict[str, Any] | None:
        """Whether a token is live and whose it is."""
        info: dict[str, Any] | None = self._call("POST", "token-info", {"access_token": access_token})["info"]
        return info

    def advance_clock(self, seconds: float) -> None:
        """Move the provider's clock forward."""
        self._call("POST", "clock", {"advance": seconds})

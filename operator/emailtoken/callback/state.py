"""The OAuth ``state`` parameter: HMAC-signed, time-limited, bound to one token and one sign-in.

Why sign it when the pending sign-in is kept server-side anyway: a forged or tampered
state is refused before anything is looked up or exchanged, the token identity
(namespace, name, uid) travels with the browser and is checked against both the pending
sign-in and the live object, and several replicas that share the key can at least tell
"not mine" from "forged". The state carries no secret: the PKCE verifier never leaves
the server.

Format: ``v1.<base64url(JSON claims)>.<base64url(HMAC-SHA256(key, "v1." + claims))>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

VERSION = "v1"
#: Longer states are refused unread (a state we sign is about 250 characters).
MAX_STATE_LENGTH = 2048
MIN_KEY_BYTES = 16
ENV_KEY = "EMAILTOKEN_STATE_KEY"


class StateError(Exception):
    """The state cannot be trusted; ``reason`` is a stable word for pages and logs."""

    reason = "InvalidState"


class ExpiredState(StateError):
    """The state was genuine but is older than the TTL."""

    reason = "StateExpired"


@dataclass(frozen=True)
class StateClaims:
    """What a state vouches for."""

    namespace: str
    name: str
    uid: str
    nonce: str
    expires_at: int  # Unix seconds


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def derive_key(master: bytes, purpose: str) -> bytes:
    """A sub-key per purpose, so a CSRF token can never pass as a state (or the reverse)."""
    return hmac.new(master, f"emailtoken-callback/{purpose}".encode(), hashlib.sha256).digest()


class StateSigner:
    """Signs and verifies states with one key and one time-to-live."""

    def __init__(self, key: bytes, *, ttl: float = 600, clock: Callable[[], float] = time.time) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"the state key must have at least {MIN_KEY_BYTES} bytes")
        self._key = derive_key(key, "state")
        self.ttl = ttl
        self.clock = clock

    def _mac(self, signed_part: str) -> bytes:
        return hmac.new(self._key, signed_part.encode("ascii"), hashlib.sha256).digest()

    def sign(self, *, namespace: str, name: str, uid: str, nonce: str) -> str:
        """A state for one sign-in of one token, valid for ``ttl`` seconds from now."""
        claims = {"ns": namespace, "n": name, "u": uid, "x": nonce, "e": int(self.clock() + self.ttl)}
        body = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
        signed_part = f"{VERSION}.{body}"
        return f"{signed_part}.{_b64(self._mac(signed_part))}"

    def verify(self, state: str) -> StateClaims:
        """The claims of a genuine, unexpired state; :class:`StateError` otherwise.

        The MAC is checked (in constant time) before the claims are parsed, so nothing
        an attacker wrote is interpreted unless we signed it.
        """
        if not state or len(state) > MAX_STATE_LENGTH:
            raise StateError("the state parameter is missing or too long")
        parts = state.split(".")
        if len(parts) != 3 or parts[0] != VERSION:
            raise StateError("the state parameter is not one this service issued")
        signed_part = f"{parts[0]}.{parts[1]}"
        try:
            mac = _unb64(parts[2])
        except (binascii.Error, ValueError):
            raise StateError("the state parameter is not one this service issued") from None
        if not hmac.compare_digest(mac, self._mac(signed_part)):
            raise StateError("the state parameter's signature is wrong (forged, altered, or signed with another key)")
        try:
            raw = json.loads(_unb64(parts[1]))
            claims = StateClaims(
                namespace=str(raw["ns"]),
                name=str(raw["n"]),
                uid=str(raw["u"]),
                nonce=str(raw["x"]),
                expires_at=int(raw["e"]),
            )
        except (binascii.Error, ValueError, KeyError, TypeError):
            raise StateError("the state parameter is malformed") from None
        if self.clock() >= claims.expires_at:
            raise ExpiredState("the sign-in took too long: its state has expired")
        return claims


def load_key(path: str | None = None, *, environ: dict[str, str] | None = None) -> tuple[bytes, str]:
    """The master key and where it came from: a file, ``$EMAILTOKEN_STATE_KEY``, or random.

    A file or variable lets replicas and restarts agree on signatures; the random key
    means sign-ins in flight fail (clearly) after a restart.
    """
    env = os.environ if environ is None else environ
    if path:
        key = Path(path).read_bytes().strip()
        source = f"file {path}"
    elif env.get(ENV_KEY):
        key = env[ENV_KEY].strip().encode()
        source = f"${ENV_KEY}"
    else:
        return secrets.token_bytes(32), "random (per process)"
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"the state key from {source} is shorter than {MIN_KEY_BYTES} bytes")
    return key, source

"""The OAuth ``state`` parameter: the whole sign-in in flight, sealed (AES-256-GCM) and time-limited.

Why sealed rather than remembered: the callback keeps nothing between the two legs of a
sign-in, so any replica sharing the key can finish a sign-in another replica started,
and a restart or a rolling update loses nothing. The state carries the token identity
(namespace, name, uid), a random sign-in id (what single use is recorded against, see
:mod:`.signin`), the expiry and the PKCE verifier. AES-GCM authenticates all of it (a
forged or altered state is refused before anything is parsed) and keeps the verifier
secret from the browser, the provider and anyone who sees the redirect URL: a leaked
authorization code stays useless without it, which is what PKCE is for.

Format: ``v2.<base64url(96-bit IV || AES-GCM(key, IV, JSON claims, AAD "emailtoken-state/v2"))>``;
the key is derived from the master state key (a purpose of its own, see :func:`derive_key`).
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
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from emailtoken.callback import pkce
from emailtoken.model import TokenRef

VERSION = "v2"
_AAD = b"emailtoken-state/v2"
_IV_BYTES = 12
_TAG_BYTES = 16
#: Longer states are refused unread (a state we seal is 300 to 800 characters).
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
class SignInState:
    """What a state vouches for: one sign-in of one token."""

    namespace: str
    name: str
    uid: str
    sign_in_id: str
    expires_at: int  # Unix seconds
    verifier: str = field(repr=False)

    @property
    def token(self) -> TokenRef:
        """The token the sign-in is for (uid included: a re-created token is another token)."""
        return TokenRef(self.namespace, self.name, self.uid)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def derive_key(master: bytes, purpose: str) -> bytes:
    """A sub-key per purpose, so a CSRF token can never pass as a state (or the reverse)."""
    return hmac.new(master, f"emailtoken-callback/{purpose}".encode(), hashlib.sha256).digest()


class StateSealer:
    """Seals and opens states with one key and one time-to-live."""

    def __init__(self, key: bytes, *, ttl: float = 600, clock: Callable[[], float] = time.time) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"the state key must have at least {MIN_KEY_BYTES} bytes")
        self._aead = AESGCM(derive_key(key, "state-v2"))
        self.ttl = ttl
        self.clock = clock

    def seal(self, token: TokenRef, *, verifier: str) -> tuple[str, SignInState]:
        """A state for a new sign-in of ``token``, valid for ``ttl`` seconds; and what it says."""
        if not pkce.is_valid_verifier(verifier):
            raise ValueError("not a valid PKCE code verifier")
        sign_in = SignInState(
            namespace=token.namespace,
            name=token.name,
            uid=token.uid,
            sign_in_id=secrets.token_urlsafe(16),
            expires_at=int(self.clock() + self.ttl),
            verifier=verifier,
        )
        claims = {
            "ns": sign_in.namespace,
            "n": sign_in.name,
            "u": sign_in.uid,
            "i": sign_in.sign_in_id,
            "e": sign_in.expires_at,
            "v": sign_in.verifier,
        }
        iv = os.urandom(_IV_BYTES)
        sealed = self._aead.encrypt(iv, json.dumps(claims, separators=(",", ":")).encode(), _AAD)
        return f"{VERSION}.{_b64(iv + sealed)}", sign_in

    def open(self, state: str) -> SignInState:
        """The sign-in of a genuine, unexpired state; :class:`StateError` otherwise.

        The GCM tag is checked before anything is parsed, so nothing an attacker wrote
        is interpreted unless we sealed it.
        """
        if not state or len(state) > MAX_STATE_LENGTH:
            raise StateError("the state parameter is missing or too long")
        version, _, body = state.partition(".")
        if version == "v1":
            raise StateError("this sign-in was started before the callback service was upgraded")
        if version != VERSION or not body:
            raise StateError("the state parameter is not one this service issued")
        try:
            raw = _unb64(body)
        except (binascii.Error, ValueError):
            raise StateError("the state parameter is not one this service issued") from None
        if len(raw) < _IV_BYTES + _TAG_BYTES:
            raise StateError("the state parameter is not one this service issued")
        try:
            plain = self._aead.decrypt(raw[:_IV_BYTES], raw[_IV_BYTES:], _AAD)
        except InvalidTag:
            raise StateError(
                "the state parameter failed authentication (forged, altered, or sealed with another key)"
            ) from None
        try:
            claims = json.loads(plain)
            sign_in = SignInState(
                namespace=str(claims["ns"]),
                name=str(claims["n"]),
                uid=str(claims["u"]),
                sign_in_id=str(claims["i"]),
                expires_at=int(claims["e"]),
                verifier=str(claims["v"]),
            )
        except (ValueError, KeyError, TypeError):
            raise StateError("the state parameter is malformed") from None
        if not sign_in.sign_in_id or not pkce.is_valid_verifier(sign_in.verifier):
            raise StateError("the state parameter is malformed")
        if self.clock() >= sign_in.expires_at:
            raise ExpiredState("the sign-in took too long: its state has expired")
        return sign_in


def load_key(path: str | None = None, *, environ: dict[str, str] | None = None) -> tuple[bytes, str]:
    """The master key and where it came from: a file, ``$EMAILTOKEN_STATE_KEY``, or random.

    A file or variable lets replicas and restarts open each other's states; the random
    key means sign-ins in flight fail (clearly) after a restart or on another replica.
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

"""RS256 keys: signing id_tokens, publishing JWKS and checking service-account assertions.

Named ``jws`` rather than ``jwt`` so it can never be mistaken for PyJWT (which it uses;
msal already depends on it).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def new_rsa_key() -> rsa.RSAPrivateKey:
    """A fresh 2048-bit key: the size Google issues for service-account keys."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def private_pem(key: rsa.RSAPrivateKey) -> str:
    """PKCS#8 PEM, the form Google puts in a key file's ``private_key``."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def public_pem(key: rsa.RSAPrivateKey | rsa.RSAPublicKey) -> str:
    """SubjectPublicKeyInfo PEM of a key (or of a private key's public half)."""
    pub = key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key
    return pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def b64url(data: bytes) -> str:
    """Unpadded base64url, as JOSE and Entra's client_info use it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class SigningKey:
    """The provider's id_token signing key with a stable key id."""

    def __init__(self, pem: str | None = None) -> None:
        if pem is None:
            self._key = new_rsa_key()
        else:
            loaded = serialization.load_pem_private_key(pem.encode(), password=None)
            if not isinstance(loaded, rsa.RSAPrivateKey):
                raise ValueError("signing key must be RSA")
            self._key = loaded
        self.kid = b64url(hashlib.sha256(public_pem(self._key).encode()).digest()[:15])

    def pem(self) -> str:
        """The private key, for the state file only."""
        return private_pem(self._key)

    def sign(self, claims: dict[str, Any]) -> str:
        """A compact RS256 JWS over ``claims``."""
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid, "typ": "JWT"})

    def jwk(self) -> dict[str, Any]:
        """The public JWK as Entra and Google publish it (``use``, ``kid``, ``alg``)."""
        data: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self._key.public_key()))
        data.update({"use": "sig", "kid": self.kid, "alg": "RS256"})
        return data


def service_account_key(
    email: str, client_id: str, *, token_uri: str, auth_uri: str, project_id: str
) -> tuple[dict[str, str], str, str]:
    """Make a Google service-account key file (dict) and return it with its key id and public PEM.

    Only the public half stays with the provider, like at Google.
    """
    key = new_rsa_key()
    key_id = secrets.token_hex(20)
    info = {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": key_id,
        "private_key": private_pem(key),
        "client_email": email,
        "client_id": client_id,
        "auth_uri": auth_uri,
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{email}",
        "universe_domain": "googleapis.com",
    }
    return info, key_id, public_pem(key)


class AssertionRejected(Exception):
    """A JWT-bearer assertion could not be accepted; ``reason`` picks the Google error."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def unverified(assertion: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims without checking anything, to find which key to check with."""
    try:
        return jwt.get_unverified_header(assertion), jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise AssertionRejected("malformed") from exc


def verify_rs256(assertion: str, public_pems: list[str]) -> dict[str, Any]:
    """Claims of an RS256 assertion signed by one of ``public_pems``; time and audience are the
    caller's business because Google words those failures differently."""
    header, _ = unverified(assertion)
    if header.get("alg") != "RS256":
        raise AssertionRejected("signature")
    for pem in public_pems:
        try:
            return jwt.decode(
                assertion,
                pem,
                algorithms=["RS256"],
                options={"verify_aud": False, "verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
        except jwt.InvalidSignatureError:
            continue
        except jwt.PyJWTError as exc:
            raise AssertionRejected("malformed") from exc
    raise AssertionRejected("signature")

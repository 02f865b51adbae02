"""Entra's workload identity federation: client assertions checked against a trusted OIDC issuer.

An app registration may carry federated identity credentials (issuer, subject, audiences).
A client then authenticates with ``client_assertion`` (type
``urn:ietf:params:oauth:client-assertion-type:jwt-bearer``): a JWT from that issuer, for
example a Kubernetes projected ServiceAccount token. As at Entra, the keys come from the
issuer itself (``{iss}/.well-known/openid-configuration``, whose ``issuer`` must equal the
token's ``iss``, then its ``jwks_uri``), fetched anonymously over HTTPS, and each refusal is
Entra's AADSTS error with its wording: 700211 (no record for the issuer), 700213 (none for
the subject), 700212 (none for the audience), 70021 (neither matches), 50013 (signature),
700024 (time range), 90061 (issuer unreachable or its discovery document names another
issuer), 50027 (not a JWT). Assertions are never logged or stored.
"""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt

from .errors import microsoft_error

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
DEFAULT_AUDIENCE = "api://AzureADTokenExchange"
_FETCH_TIMEOUT = aiohttp.ClientTimeout(total=10)


@dataclass(frozen=True)
class FederatedCredential:
    """One federated identity credential of an app registration (Entra's fields)."""

    issuer: str
    subject: str
    audiences: tuple[str, ...] = (DEFAULT_AUDIENCE,)
    name: str = "kubernetes"
    #: trust for the issuer's TLS certificate (Entra trusts public CAs; a test cluster has its own)
    ca_bundle: str | None = field(default=None, compare=False)


class Federation:
    """Federated credentials per client id; kept beside the provider state (``Context.extra``)."""

    def __init__(self) -> None:
        self._by_client: dict[str, list[FederatedCredential]] = {}

    def add(self, client_id: str, credential: FederatedCredential) -> None:
        """Trust one more issuer/subject/audience for ``client_id``."""
        self._by_client.setdefault(client_id, []).append(credential)

    def of(self, client_id: str) -> list[FederatedCredential]:
        """The client's federated credentials (none: assertions are refused like an unknown issuer)."""
        return list(self._by_client.get(client_id, ()))

    async def verify(self, client_id: str, assertion: str, now: float) -> dict[str, Any]:
        """The assertion's claims if it authenticates ``client_id``; else Entra's error."""
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise microsoft_error(50027) from None
        issuer = str(claims.get("iss") or "")
        trusted = [c for c in self.of(client_id) if c.issuer == issuer]
        if not trusted:
            raise microsoft_error(700211, issuer=issuer)
        keys = await _issuer_keys(issuer, trusted[0].ca_bundle)
        _check_signature(assertion, header, keys)
        _check_time(claims, now)
        return _match(trusted, claims)


def _match(trusted: list[FederatedCredential], claims: dict[str, Any]) -> dict[str, Any]:
    """Entra's record matching among the issuer's records: subject and audience, both exact (case too)."""
    subject = str(claims.get("sub") or "")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else [str(a) for a in aud or ()]
    subject_ok = [c for c in trusted if c.subject == subject]
    audience_ok = [c for c in trusted if any(a in c.audiences for a in audiences)]
    if any(c in audience_ok for c in subject_ok):
        return claims
    if not subject_ok and not audience_ok:
        raise microsoft_error(70021, issuer=trusted[0].issuer, subject=subject, audience=", ".join(audiences))
    if not subject_ok:
        raise microsoft_error(700213, subject=subject)
    raise microsoft_error(700212, audience=", ".join(audiences))


def _check_time(claims: dict[str, Any], now: float) -> None:
    exp, nbf = claims.get("exp"), claims.get("nbf", claims.get("iat"))
    if not isinstance(exp, int | float) or exp <= now or (isinstance(nbf, int | float) and nbf > now + 300):
        raise microsoft_error(700024, now=_entra_time(now), nbf=_entra_time(nbf or 0), exp=_entra_time(exp))


def _check_signature(assertion: str, header: dict[str, Any], keys: list[dict[str, Any]]) -> None:
    kid = header.get("kid")
    key = next((k for k in keys if k.get("kid") == kid), None)
    if key is None or header.get("alg") != "RS256":
        raise microsoft_error(50013, reason=f"The key was not found., Thumbprint of key used by client: '{kid}'")
    try:
        jwt.decode(
            assertion,
            jwt.algorithms.RSAAlgorithm.from_jwk(key),
            algorithms=["RS256"],
            options={"verify_aud": False, "verify_exp": False, "verify_iat": False, "verify_nbf": False},
        )
    except jwt.InvalidSignatureError:
        raise microsoft_error(
            50013, reason="Key was found, but use of the key to verify the signature failed."
        ) from None
    except jwt.PyJWTError:
        raise microsoft_error(50027) from None


async def _issuer_keys(issuer: str, ca_bundle: str | None) -> list[dict[str, Any]]:
    """The issuer's signing keys, read the way Entra reads them: discovery, then ``jwks_uri``."""
    tls = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else ssl.create_default_context()
    try:
        async with aiohttp.ClientSession(timeout=_FETCH_TIMEOUT) as http:
            discovery = await _get_json(http, issuer.rstrip("/") + "/.well-known/openid-configuration", tls)
            if discovery.get("issuer") != issuer:  # OpenID Connect Discovery 1.0 section 4.3, as Entra checks
                raise microsoft_error(90061, detail="The issuer in the discovery document does not match.")
            jwks = await _get_json(http, str(discovery.get("jwks_uri") or ""), tls)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise microsoft_error(90061, detail=type(exc).__name__) from None
    keys = jwks.get("keys")
    if not isinstance(keys, list):
        raise microsoft_error(90061, detail="no keys")
    return [k for k in keys if isinstance(k, dict)]


async def _get_json(http: aiohttp.ClientSession, url: str, tls: ssl.SSLContext) -> dict[str, Any]:
    if not url.startswith("https://"):
        raise ValueError("not https")
    async with http.get(url, ssl=tls) as response:
        response.raise_for_status()
        body = await response.json(content_type=None)
    if not isinstance(body, dict):
        raise ValueError("not an object")
    return body


def _entra_time(value: Any) -> str:
    """Entra's timestamps in AADSTS700024, e.g. ``2026-12-05T11:48:07.0000000Z``."""
    if not isinstance(value, int | float):
        return ""
    stamp = datetime.datetime.fromtimestamp(value, datetime.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond * 10:07d}Z"


def federation_of(extra: dict[str, Any]) -> Federation:
    """The provider's federation registry (created on first use)."""
    registry = extra.setdefault("federation", Federation())
    assert isinstance(registry, Federation)
    return registry


def reject_unusable(data: dict[str, str]) -> None:
    """A client assertion needs both parameters (msal sends them together)."""
    if data.get("client_assertion_type") != ASSERTION_TYPE:
        raise microsoft_error(900144, param="client_assertion_type")
    if not data.get("client_assertion"):
        raise microsoft_error(900144, param="client_assertion")

"""Short-lived ServiceAccount tokens from the TokenRequest API, the client assertion of
``spec.federatedCredential.serviceAccountName``.

The ServiceAccount is always one of the EmailToken's own namespace, so the token's subject
(``system:serviceaccount:<namespace>:<name>``) is that namespace's and nobody else's: an app
registration that trusts team A's subject refuses team B, whatever client ID B writes. The
audience is checked against the installer's list first (:func:`emailtoken.clientauth.check`).
Tokens are kept in memory per (namespace, ServiceAccount, audience) and requested again
:data:`RENEW_BEFORE` seconds before they expire, as the kubelet renews projected tokens
early; they are never logged, stored or put in a message.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from emailtoken import clientauth
from emailtoken.kube import KubeError
from emailtoken.model import FederatedCredential
from emailtoken.outcomes import ErrorKind, ProviderError

#: Lifetime asked for (the API server's minimum is 600 s; --service-account-max-token-expiration may cap it).
TOKEN_SECONDS = 3600
#: A cached token is used while it has more than this left, so that a request, or a device code's
#: polling (at most 15 minutes), never presents an expired one.
RENEW_BEFORE = 1200.0
REASON = "ServiceAccountTokenUnavailable"

#: (namespace, ServiceAccount, audience)
_CacheKey = tuple[str, str, str]


class TokenRequests(Protocol):
    """The one API call this module makes (``kube.KubernetesApi`` has it)."""

    async def create_service_account_token(
        self, namespace: str, name: str, audience: str, seconds: int
    ) -> dict[str, Any]: ...


@dataclass(frozen=True)
class _Cached:
    token: str = field(repr=False)
    expires: float


def _expiry(answer: dict[str, Any], now: float) -> float:
    """``status.expirationTimestamp`` as epoch seconds (the requested lifetime when it is missing)."""
    stamp = str((answer.get("status") or {}).get("expirationTimestamp") or "")
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return now + TOKEN_SECONDS


def _refusal(exc: KubeError, namespace: str, name: str) -> Exception | None:
    """A missing ServiceAccount is the token owner's to fix (a condition, no retry storm); a
    refusal stays the API error it is (the engine's PermissionDenied path, retried in seconds),
    its words naming the rule to add; None: anything else, re-raised as it is."""
    if exc.status == 404:
        why = f"ServiceAccount {namespace}/{name} (federatedCredential.serviceAccountName) does not exist"
        return ProviderError(ErrorKind.BAD_CONFIG, why, reason=REASON)
    if exc.status == 403:
        hint = (
            f" (RBAC: create serviceaccounts/token in namespace {namespace}; "
            "chart: providers.federatedCredential.enabled=true)"
        )
        return KubeError(exc.status, exc.message + hint)
    return None


class ServiceAccountTokens:
    """TokenRequest tokens of one process, cached until :data:`RENEW_BEFORE` before their expiry."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._cache: dict[_CacheKey, _Cached] = {}

    async def get(self, api: TokenRequests, namespace: str, name: str, audience: str) -> str:
        """A token of ``namespace/name`` for ``audience``; raises :class:`ProviderError` (bad
        configuration) when the ServiceAccount does not exist, :class:`KubeError` for the rest
        (a 403 among them: the process lacks RBAC, retried as any refused API call)."""
        key, now = (namespace, name, audience), self._clock()
        cached = self._cache.get(key)
        if cached is not None and cached.expires - now > RENEW_BEFORE:
            return cached.token
        try:
            answer = await api.create_service_account_token(namespace, name, audience, TOKEN_SECONDS)
        except KubeError as exc:
            refusal = _refusal(exc, namespace, name)
            if refusal is None:
                raise
            raise refusal from None
        token = str((answer.get("status") or {}).get("token") or "")
        if not token:
            raise ProviderError(ErrorKind.TRANSIENT, "the TokenRequest API answered without a token", reason=REASON)
        self._cache = {k: v for k, v in self._cache.items() if v.expires > now}
        self._cache[key] = _Cached(token, _expiry(answer, now))
        return token


async def assertion(
    federation: clientauth.Federation,
    tokens: ServiceAccountTokens,
    api: TokenRequests,
    namespace: str,
    credential: FederatedCredential,
) -> Callable[[], str]:
    """The client assertion for an EmailToken of ``namespace`` (what msal calls per request), after
    the installer's rules (:func:`clientauth.check`): its own ServiceAccount's token, or, where
    allowed, this pod's projected one."""
    name, audience = credential.service_account_name, credential.audience
    clientauth.check(federation, namespace, audience, name)
    if name is None:
        return clientauth.assertion_source(federation.token_files, audience)
    token = await tokens.get(api, namespace, name, audience)
    return lambda: token

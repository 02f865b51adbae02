"""Finishing an interactive sign-in: code exchange, account check, grant write.

Shared by the callback service and ``emailtoken authorize`` so both refuse the same
things the same way. Nothing here knows HTTP servers; failures are
:class:`SignInRefused` with a stable ``reason``, a message safe to show (never a code,
token or secret) and the HTTP status a web page would use.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from emailtoken.callback import pkce
from emailtoken.kube import Conflict, KubeApi, KubeError, NotFound
from emailtoken.model import EmailTokenSpec, SpecError, TokenRef, parse_spec
from emailtoken.outcomes import ProviderError, TokenSet
from emailtoken.providers.base import ClientCredentials, Provider
from emailtoken.secretdata import GRANT_TYPE, LABEL_GRANT_FOR, Grant
from emailtoken.store import GrantStore, SecretMissing, read_secret_key
from emailtoken.timefmt import rfc3339, utcnow

GRANT_WRITE_ATTEMPTS = 3


class SignInRefused(Exception):
    """The sign-in cannot go on; nothing was stored."""

    def __init__(self, reason: str, message: str, *, status: int = 400) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.status = status


@dataclass(frozen=True)
class SignInResult:
    """What a person is told after a successful sign-in."""

    token: TokenRef
    account: str
    expires_at: datetime
    secret_name: str
    provider: str


async def load_token(
    api: KubeApi, namespace: str, name: str, *, flows: Sequence[str]
) -> tuple[TokenRef, EmailTokenSpec]:
    """The live token and its spec, if it exists and uses one of ``flows``."""
    try:
        obj = await api.get_token(namespace, name)
    except KubeError as exc:
        raise SignInRefused(
            "APIUnavailable", f"the Kubernetes API could not be read (HTTP {exc.status})", status=503
        ) from None
    if obj is None:
        raise SignInRefused("TokenNotFound", f"there is no EmailToken {namespace}/{name}", status=404)
    meta = obj.get("metadata") or {}
    token = TokenRef(namespace, name, str(meta.get("uid") or ""))
    try:
        spec = parse_spec(obj.get("spec") or {}, name)
    except SpecError as exc:
        raise SignInRefused("InvalidSpec", f"the EmailToken's spec is not usable: {exc}", status=409) from None
    if spec.flow not in flows:
        raise SignInRefused(
            "FlowNotSupported",
            f"EmailToken {token} uses flow {spec.flow}; this sign-in works for flow {' or '.join(flows)}",
            status=409,
        )
    return token, spec


def authorization_url(provider: Provider, spec: EmailTokenSpec, *, redirect_uri: str, state: str, verifier: str) -> str:
    """Where to send the browser (blocking: Microsoft reads the tenant's discovery document)."""
    challenge = pkce.challenge(verifier)
    url = provider.authorization_url(
        spec, redirect_uri=redirect_uri, state=state, code_challenge=challenge, login_hint=spec.email_address
    )
    return pkce.ensure_pkce(url, challenge)


def same_account(expected: str, account: str | None) -> bool:
    """The one rule for "this is the mailbox's account": equal after casefold, and never empty.

    Providers report the case the directory holds (``Alice@Contoso.com``) while specs are
    often written in lower case; an empty account proves nothing, so it never matches.
    """
    if not account or not account.strip() or not expected:
        return False
    return account.casefold() == expected.casefold()


def check_account(spec: EmailTokenSpec, account: str | None) -> str:
    """The signed-in account, if it may hold this token's grant (pinned to emailAddress).

    An unnamed account is refused even when nothing is pinned: the account becomes the
    SASL user name mail tasks log in with, and an empty one cannot log in anywhere.
    """
    if not account or not account.strip():
        why = f", so it cannot be checked against {spec.email_address}" if spec.email_address else ""
        raise SignInRefused(
            "AccountMismatch",
            f"the provider did not say which account signed in{why}; nothing was stored",
            status=403,
        )
    if spec.email_address and not same_account(spec.email_address, account):
        raise SignInRefused(
            "AccountMismatch",
            f"signed in as {account}, but this token is for {spec.email_address}; nothing was stored. "
            f"Sign in again as {spec.email_address}",
            status=403,
        )
    return account


async def credentials(api: KubeApi, token: TokenRef, spec: EmailTokenSpec) -> ClientCredentials:
    """The client secret the code exchange needs (none for public clients)."""
    if spec.client_secret_ref is None:
        return ClientCredentials()
    try:
        return ClientCredentials(client_secret=await read_secret_key(api, token.namespace, spec.client_secret_ref))
    except SecretMissing as exc:
        raise SignInRefused("SecretNotFound", str(exc), status=500) from None
    except KubeError as exc:
        raise SignInRefused(
            "APIUnavailable", f"the client secret could not be read (HTTP {exc.status})", status=503
        ) from None


async def exchange(
    provider: Provider,
    spec: EmailTokenSpec,
    creds: ClientCredentials,
    *,
    code: str,
    redirect_uri: str,
    verifier: str,
) -> TokenSet:
    """Redeem the code with the PKCE verifier; provider messages are already redacted."""
    try:
        return await asyncio.to_thread(
            provider.exchange_code, spec, creds, code=code, redirect_uri=redirect_uri, code_verifier=verifier
        )
    except ProviderError as exc:
        raise SignInRefused(
            "ExchangeFailed", f"{spec.provider} did not accept the authorization code: {exc.message}", status=502
        ) from None


async def replace_grant(api: KubeApi, token: TokenRef, grant: Grant) -> Grant:
    """Write the grant, replacing whatever grant exists (a new sign-in wins).

    Compare-and-swap against the grant Secret's current resourceVersion: if the operator
    rotates the old refresh token in between, read again and retry rather than
    overwrite blindly. A Secret of that name that is not a grant is never touched.
    """
    store = GrantStore(api)
    for attempt in range(GRANT_WRITE_ATTEMPTS):
        try:
            current = await api.get_secret(token.namespace, token.grant_secret_name)
            version: str | None = None
            if current is not None:
                meta = current.get("metadata") or {}
                labels = meta.get("labels") or {}
                if current.get("type") != GRANT_TYPE and labels.get(LABEL_GRANT_FOR) != token.name:
                    raise SignInRefused(
                        "SecretConflict",
                        f"Secret {token.namespace}/{token.grant_secret_name} exists and is not this token's "
                        "grant; delete or rename it",
                        status=409,
                    )
                # Real API servers always set resourceVersion; "" (no precondition) is for test doubles.
                version = str(meta.get("resourceVersion") or "")
            return await store.save(token, grant, expected_version=version)
        except (Conflict, NotFound):
            if attempt == GRANT_WRITE_ATTEMPTS - 1:
                raise SignInRefused(
                    "GrantWriteConflict", "the grant Secret kept changing while it was written; try again", status=409
                ) from None
        except KubeError as exc:
            raise SignInRefused(
                "APIUnavailable", f"the grant could not be written (HTTP {exc.status}); try again", status=503
            ) from None
    raise AssertionError("unreachable")


async def complete(
    api: KubeApi,
    provider: Provider,
    token: TokenRef,
    spec: EmailTokenSpec,
    *,
    code: str,
    redirect_uri: str,
    verifier: str,
) -> SignInResult:
    """Exchange, check the account, store the grant; the operator takes it from there."""
    creds = await credentials(api, token, spec)
    tokens = await exchange(provider, spec, creds, code=code, redirect_uri=redirect_uri, verifier=verifier)
    account = check_account(spec, tokens.account)
    if not tokens.refresh_token:
        raise SignInRefused(
            "NoRefreshToken",
            f"{spec.provider} issued no refresh token (offline access was not granted); nothing was stored",
            status=502,
        )
    now = rfc3339(utcnow())
    grant = Grant(
        refresh_token=tokens.refresh_token,
        account=account,
        scope=tokens.scope or spec.scope_string,
        obtained_at=now,
        updated_at=now,
    )
    await replace_grant(api, token, grant)
    return SignInResult(
        token=token,
        account=grant.account,
        expires_at=tokens.expires_at,
        secret_name=spec.secret_name,
        provider=spec.provider,
    )

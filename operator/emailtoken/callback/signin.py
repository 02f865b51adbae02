"""Finishing an interactive sign-in: code exchange, account check, grant write.

Shared by the callback service and ``emailtoken authorize`` so both refuse the same
things the same way. Nothing here knows HTTP servers; failures are
:class:`SignInRefused` with a stable ``reason``, a message safe to show (never a code,
token or secret) and the HTTP status a web page would use.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from emailtoken import grants, satokens
from emailtoken.api import ANNOTATION_SIGN_INS
from emailtoken.callback import pkce
from emailtoken.callback.state import SignInState
from emailtoken.clientauth import DEFAULTS, Federation
from emailtoken.kube import Conflict, KubeApi, KubeError, NotFound
from emailtoken.model import EmailTokenSpec, SpecError, TokenRef, parse_spec
from emailtoken.outcomes import ProviderError, TokenSet
from emailtoken.providers.base import ClientCredentials, Provider
from emailtoken.satokens import ServiceAccountTokens
from emailtoken.secretdata import Grant, grant_secret, read_grant
from emailtoken.signinrule import NO_REFRESH_TOKEN, sign_in_problem
from emailtoken.store import SecretMissing, read_secret_key
from emailtoken.timefmt import utcnow

#: How long a finished sign-in keeps trying to store its grant through write conflicts and API
#: hiccups. Its code is already spent, so giving up loses the sign-in; bounded by time, not by a
#: count, so that a burst of relabelling (a policy engine, a backup tool) cannot exhaust it.
GRANT_WRITE_PATIENCE = 10.0
#: More completed sign-ins of one token within one state TTL than this is not a person at work.
MAX_RECORDED_SIGN_INS = 32
log = logging.getLogger("emailtoken.callback")


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


async def existing_token(api: KubeApi, namespace: str, name: str) -> dict[str, Any]:
    """The EmailToken as the API server has it; refused (TokenNotFound, 404) when there is none."""
    try:
        obj = await api.get_token(namespace, name)
    except KubeError as exc:
        raise api_refused(exc, f"reading EmailToken {namespace}/{name}") from None
    if obj is None:
        raise SignInRefused("TokenNotFound", f"there is no EmailToken {namespace}/{name}", status=404)
    return obj


async def load_token(
    api: KubeApi, namespace: str, name: str, *, flows: Sequence[str]
) -> tuple[TokenRef, EmailTokenSpec]:
    """The live token and its spec, if it exists and uses one of ``flows``."""
    obj = await existing_token(api, namespace, name)
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


def check_sign_in(spec: EmailTokenSpec, tokens: TokenSet) -> str:
    """The signed-in account, if this answer may become the token's grant (pinned to
    emailAddress, with a refresh token).

    The rule is :func:`emailtoken.signinrule.sign_in_problem`, shared with the operator's device flow.
    """
    problem = sign_in_problem(spec, tokens)
    if problem is None:
        assert tokens.account is not None
        return tokens.account
    if problem.reason == NO_REFRESH_TOKEN:
        raise SignInRefused(problem.reason, f"{problem.message}; nothing was stored", status=502)
    again = f" Sign in again as {spec.email_address}" if spec.email_address and tokens.account else ""
    raise SignInRefused(problem.reason, f"{problem.message}; nothing was stored.{again}", status=403)


async def _assertion(
    api: KubeApi, token: TokenRef, spec: EmailTokenSpec, federation: Federation, sa_tokens: ServiceAccountTokens
) -> ClientCredentials:
    """The client assertion of ``spec.federatedCredential`` (:func:`emailtoken.satokens.assertion`).

    The page may be the public listener's: it names the reason only, the log says the rest
    (which ServiceAccount, file or audience)."""
    assert spec.federated_credential is not None
    try:
        return ClientCredentials(
            client_assertion=await satokens.assertion(
                federation, sa_tokens, api, token.namespace, spec.federated_credential
            )
        )
    except ProviderError as exc:
        log.warning("sign-in for %s: cannot authenticate the client: %s", token, exc.message)
        message = "this service cannot authenticate the OAuth client (its log says why); nothing was stored"
        raise SignInRefused(exc.reason, message, status=500) from None
    except KubeError as exc:
        raise api_refused(exc, f"requesting a ServiceAccount token in namespace {token.namespace}") from None


async def credentials(
    api: KubeApi,
    token: TokenRef,
    spec: EmailTokenSpec,
    federation: Federation = DEFAULTS,
    sa_tokens: ServiceAccountTokens | None = None,
) -> ClientCredentials:
    """How the code exchange authenticates the client: a client secret, a ServiceAccount token
    (``spec.federatedCredential``), or nothing (public clients)."""
    if spec.federated_credential is not None:
        return await _assertion(api, token, spec, federation, sa_tokens or ServiceAccountTokens())
    if spec.client_secret_ref is None:
        return ClientCredentials()
    try:
        return ClientCredentials(client_secret=await read_secret_key(api, token.namespace, spec.client_secret_ref))
    except SecretMissing as exc:
        raise SignInRefused("SecretNotFound", str(exc), status=500) from None
    except KubeError as exc:
        raise api_refused(exc, f"reading Secret {token.namespace}/{spec.client_secret_ref.name}") from None


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


def _grant_version(current: Mapping[str, Any] | None, token: TokenRef) -> str | None:
    """The grant Secret's resourceVersion ("" when a test double sets none; None when absent).

    A Secret of that name that is not this token's grant is refused, never touched.
    """
    if current is None:
        return None
    meta = current.get("metadata") or {}
    if not grants.is_grant_of(current, token.name):
        raise SignInRefused(
            "SecretConflict",
            f"Secret {token.namespace}/{token.grant_secret_name} exists and is not this token's grant; "
            "delete or rename it",
            status=409,
        )
    return str(meta.get("resourceVersion") or "")


def used_sign_ins(current: Mapping[str, Any] | None, now: float) -> dict[str, int]:
    """Sign-in ids the grant Secret records as completed and whose states have not expired yet.

    Expired ones are dropped: their states are refused as expired anyway. An unreadable
    record counts as empty (the provider's single-use codes still stand behind it).
    """
    annotations = ((current or {}).get("metadata") or {}).get("annotations") or {}
    try:
        raw = json.loads(annotations.get(ANNOTATION_SIGN_INS) or "{}")
    except ValueError:
        return {}
    if not isinstance(raw, dict):
        return {}
    return {str(k): int(v) for k, v in raw.items() if isinstance(v, int) and v > now}


def api_refused(exc: KubeError, doing: str) -> SignInRefused:
    """An API error as a refusal: a missing permission named in the API server's words (verb,
    resource, namespace), which waiting will not fix; anything else is worth another try."""
    if exc.status in (401, 403):
        words = (exc.message or "no message").strip()[:300]
        return SignInRefused(
            "PermissionDenied",
            f"the Kubernetes API refused {doing} (HTTP {exc.status}): {words}; the identity this "
            "runs as needs that permission (the chart's callback Role grants it)",
            status=500,
        )
    return SignInRefused("APIUnavailable", f"{doing} failed (HTTP {exc.status}); try again", status=503)


def _already_used() -> SignInRefused:
    return SignInRefused("AlreadyUsed", "this sign-in was already completed", status=400)


async def ensure_unused(api: KubeApi, token: TokenRef, sign_in: SignInState) -> None:
    """Refuse a sign-in the grant Secret records as completed, before its code is spent."""
    try:
        current = await api.get_secret(token.namespace, token.grant_secret_name)
    except KubeError as exc:
        raise api_refused(exc, f"reading Secret {token.namespace}/{token.grant_secret_name}") from None
    _grant_version(current, token)
    if sign_in.sign_in_id in used_sign_ins(current, time.time()):
        raise _already_used()


def _grant_body(token: TokenRef, grant: Grant, used: Mapping[str, int]) -> dict[str, Any]:
    body = grant_secret(token, grant)
    recent = sorted(used.items(), key=lambda item: item[1])[-MAX_RECORDED_SIGN_INS:]
    body["metadata"]["annotations"] = {ANNOTATION_SIGN_INS: json.dumps(dict(recent), separators=(",", ":"))}
    return body


async def replace_grant(
    api: KubeApi,
    token: TokenRef,
    grant: Grant,
    *,
    sign_in: SignInState | None = None,
    patience: float = GRANT_WRITE_PATIENCE,
) -> None:
    """Write the grant, replacing whatever grant exists (a new sign-in wins); single use of ``sign_in``.

    Compare-and-swap against the grant Secret's current resourceVersion: if the operator
    rotates the old refresh token in between, or someone relabels the Secret, read again and
    retry rather than overwrite blindly, for up to ``patience`` seconds. The sign-in's id is
    recorded in the same write, so of two replicas finishing the same sign-in at once exactly
    one writes: the other's write conflicts, and its re-read finds the id recorded.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    doing = f"storing the grant in Secret {token.namespace}/{token.grant_secret_name}"
    attempt = 0
    while True:
        try:
            await _write_grant(api, token, grant, sign_in, retried=attempt > 0)
            return
        except (Conflict, NotFound):
            # Someone wrote in between: read again after a short pause (growing, so a burst of
            # writers does not turn this into a tight loop).
            pause = min(0.05 * 2**attempt, 0.5)
            if loop.time() + pause >= deadline:
                raise SignInRefused(
                    "GrantWriteConflict",
                    f"the grant Secret kept changing for {patience:g} s while it was written; nothing was stored",
                    status=409,
                ) from None
        except KubeError as exc:
            # The code is spent: a transient API failure must not lose the grant it bought.
            refusal = api_refused(exc, doing)
            pause = min(0.2 * 2**attempt, 2.0)
            transient = exc.status in (0, 429) or exc.status >= 500
            if not transient or loop.time() + pause >= deadline:
                raise refusal from None
        await asyncio.sleep(pause)
        attempt += 1


async def _write_grant(
    api: KubeApi, token: TokenRef, grant: Grant, sign_in: SignInState | None, *, retried: bool
) -> None:
    """One compare-and-swap write of the grant that records the sign-in's id (refused if recorded)."""
    current = await api.get_secret(token.namespace, token.grant_secret_name)
    version = _grant_version(current, token)
    used = used_sign_ins(current, time.time())
    if sign_in is not None and sign_in.sign_in_id in used:
        existing = read_grant(current)
        if retried and existing and existing.refresh_token == grant.refresh_token:
            return  # our own earlier attempt landed; only its answer was lost
        raise _already_used()
    if sign_in is not None:
        used[sign_in.sign_in_id] = sign_in.expires_at
    body = _grant_body(token, grant, used)
    if version is None:
        await api.create_secret(token.namespace, body)
        return
    meta = body["metadata"]
    patch = {
        "metadata": {k: meta[k] for k in ("labels", "annotations", "ownerReferences")},
        "type": body["type"],
        "data": body["data"],
    }
    # Real API servers always set resourceVersion; "" (no precondition) is for test doubles.
    await api.patch_secret(token.namespace, token.grant_secret_name, patch, resource_version=version or None)


async def complete(
    api: KubeApi,
    provider: Provider,
    token: TokenRef,
    spec: EmailTokenSpec,
    *,
    code: str,
    redirect_uri: str,
    verifier: str,
    sign_in: SignInState | None = None,
    federation: Federation = DEFAULTS,
    sa_tokens: ServiceAccountTokens | None = None,
) -> SignInResult:
    """Exchange, check the account, store the grant; the operator takes it from there.

    With ``sign_in`` (the callback service), a sign-in completes at most once: checked
    before the code is spent and enforced by the grant write. Nothing is consumed by a
    refusal, so a stranger's bad code or ``?error=`` cannot cancel a sign-in in flight.
    """
    creds = await credentials(api, token, spec, federation, sa_tokens)
    if sign_in is not None:
        await ensure_unused(api, token, sign_in)
    tokens = await exchange(provider, spec, creds, code=code, redirect_uri=redirect_uri, verifier=verifier)
    account = check_sign_in(spec, tokens)
    grant = grants.from_sign_in(spec, tokens, account, utcnow())
    await replace_grant(api, token, grant, sign_in=sign_in)
    return SignInResult(
        token=token,
        account=grant.account,
        expires_at=tokens.expires_at,
        secret_name=spec.secret_name,
        provider=spec.provider,
    )

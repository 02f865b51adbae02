"""Whose grant it is, where it may be presented, and how one is built: one rule each, for every flow.

The operator (refresh, rotation, device code), the callback service and ``emailtoken
authorize`` all decide these questions; they used to decide them three ways (``lower()``
here, ``casefold()`` there, an empty account accepted by one and refused by another).
Pure: no Kubernetes, no HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from emailtoken import endpoints
from emailtoken.model import EmailTokenSpec
from emailtoken.outcomes import TokenSet
from emailtoken.secretdata import GRANT_TYPE, LABEL_GRANT_FOR, Grant
from emailtoken.timefmt import rfc3339


def same_account(expected: str | None, account: str | None) -> bool:
    """ "This is the mailbox's account": equal after casefold, and never empty.

    Providers report the case the directory holds (``Alice@Contoso.com``) while specs are
    often written in lower case; an empty account proves nothing, so it never matches.
    """
    if not account or not account.strip() or not expected:
        return False
    return account.casefold() == expected.casefold()


def account_problem(spec: EmailTokenSpec, account: str | None) -> str | None:
    """Why ``account`` may not hold this token's grant, or None when it may.

    An unnamed account is refused even when nothing is pinned: the account becomes the
    SASL user name mail tasks log in with, and an empty one cannot log in anywhere.
    """
    if not account or not account.strip():
        why = f", so it cannot be checked against {spec.email_address}" if spec.email_address else ""
        return f"the provider did not say which account signed in{why}"
    if spec.email_address and not same_account(spec.email_address, account):
        return f"signed in as {account}, but this token is for {spec.email_address}"
    return None


def published_account(spec: EmailTokenSpec, grant: Grant | None, tokens: TokenSet) -> str:
    """The account the consumer Secret names (``username``, the SASL user): the mailbox the spec
    pins, else the account the grant was signed in as, else the one the provider's answer names."""
    return spec.email_address or (grant.account if grant is not None else "") or tokens.account or ""


def endpoint_problem(grant: Grant, spec: EmailTokenSpec) -> str | None:
    """Why this grant's refresh token may not be presented to ``spec.tokenUrl``, or None.

    A grant is only ever presented to the endpoint it was issued for: editing
    ``spec.tokenUrl`` of an authorized token must not send its refresh token elsewhere.
    Grants stored before the endpoint was recorded carry none and are bound at their
    next rotation.
    """
    if not grant.token_url or grant.token_url == spec.token_url:
        return None
    return (
        f"the grant was issued by {endpoints.host_of(grant.token_url)} and spec.tokenUrl now names "
        f"{endpoints.host_of(spec.token_url)}; a refresh token is never presented to another endpoint. "
        "Sign in again for the new endpoint (set the emailtoken.io/reauthorize annotation)"
    )


def from_sign_in(spec: EmailTokenSpec, tokens: TokenSet, account: str, now: datetime) -> Grant:
    """The grant a completed sign-in (authorization code or device code) stores."""
    assert tokens.refresh_token, "callers refuse an answer without a refresh token first"
    stamp = rfc3339(now)
    return Grant(
        refresh_token=tokens.refresh_token,
        account=account,
        scope=tokens.scope or spec.scope_string,
        obtained_at=stamp,
        updated_at=stamp,
        token_url=spec.token_url,
        refresh_expires_at=rfc3339(tokens.refresh_expires_at) if tokens.refresh_expires_at else "",
    )


def successor(grant: Grant, spec: EmailTokenSpec, tokens: TokenSet, now: datetime) -> Grant | None:
    """The grant after a refresh that rotated the refresh token; None when it did not rotate."""
    if not tokens.refresh_token or tokens.refresh_token == grant.refresh_token:
        return None
    return Grant(
        refresh_token=tokens.refresh_token,
        account=grant.account or (tokens.account or ""),
        scope=tokens.scope or grant.scope,
        obtained_at=grant.obtained_at,
        updated_at=rfc3339(now),
        token_url=grant.token_url or spec.token_url,
        refresh_expires_at=rfc3339(tokens.refresh_expires_at) if tokens.refresh_expires_at else "",
    )


def is_grant_of(secret: Mapping[str, Any], token_name: str) -> bool:
    """A Secret is a token's grant only with the grant type and that token's label.

    Anything else with the grant's name (a tenant's Secret squatting it) is never read,
    replaced or deleted.
    """
    labels = (secret.get("metadata") or {}).get("labels") or {}
    return secret.get("type") == GRANT_TYPE and labels.get(LABEL_GRANT_FOR) == token_name

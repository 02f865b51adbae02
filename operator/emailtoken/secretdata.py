"""Render and read the two Secrets the operator owns.

The consumer Secret is the public contract with mail tasks; the grant Secret holds the
refresh token and is never mounted. Bodies are plain dicts ready for the API.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from emailtoken.api import (
    ANNOTATION_OBTAINED_AT,
    ANNOTATION_SPEC_HASH,
    API_VERSION,
    GRANT_TYPE,
    KIND,
    LABEL_GRANT_FOR,
    LABEL_MANAGED_BY,
    LABEL_TOKEN,
    MANAGED_BY,
)
from emailtoken.model import TokenRef
from emailtoken.timefmt import parse_rfc3339, rfc3339

CONSUMER_KEYS = ("access_token", "token_type", "expires_at", "username", "xoauth2", "scope")


def xoauth2(username: str, access_token: str) -> str:
    """The base64 SASL XOAUTH2 initial client response."""
    raw = f"user={username}\x01auth=Bearer {access_token}\x01\x01"
    return base64.b64encode(raw.encode()).decode()


def _b64(values: Mapping[str, str]) -> dict[str, str]:
    return {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}


def decode_data(secret: Mapping[str, Any]) -> dict[str, str]:
    """Decoded ``data`` (and ``stringData``, which test API servers may keep as is).

    Values are read as UTF-8 text; a binary neighbour (a ``.pfx`` next to the client secret)
    must not make the whole Secret unreadable, so undecodable bytes are replaced.
    """
    out = {k: base64.b64decode(v).decode("utf-8", "replace") for k, v in (secret.get("data") or {}).items()}
    out.update(secret.get("stringData") or {})
    return out


def owner_reference(token: TokenRef) -> dict[str, Any]:
    """Owner reference so the Secrets go when the EmailToken goes."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": token.name,
        "uid": token.uid,
        "controller": True,
        "blockOwnerDeletion": False,
    }


@dataclass(frozen=True)
class PublishedToken:
    """What the consumer Secret currently says (without the token itself)."""

    expires_at: datetime
    obtained_at: datetime | None
    username: str
    scope: str
    spec_hash: str | None
    has_token: bool = field(default=True)


def consumer_secret(
    token: TokenRef,
    secret_name: str,
    *,
    access_token: str,
    token_type: str,
    expires_at: datetime,
    obtained_at: datetime,
    username: str,
    scope: str,
    spec_hash: str,
) -> dict[str, Any]:
    """The full consumer Secret body."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": secret_name,
            "namespace": token.namespace,
            "labels": {LABEL_MANAGED_BY: MANAGED_BY, LABEL_TOKEN: token.name},
            "annotations": {ANNOTATION_SPEC_HASH: spec_hash, ANNOTATION_OBTAINED_AT: rfc3339(obtained_at)},
            "ownerReferences": [owner_reference(token)] if token.uid else [],
        },
        "data": _b64(
            {
                "access_token": access_token,
                "token_type": token_type,
                "expires_at": rfc3339(expires_at),
                "username": username,
                "xoauth2": xoauth2(username, access_token),
                "scope": scope,
            }
        ),
    }


def read_published(secret: Mapping[str, Any] | None) -> PublishedToken | None:
    """Read the consumer Secret's metadata; None when absent or unreadable."""
    if not secret:
        return None
    data = decode_data(secret)
    annotations = (secret.get("metadata") or {}).get("annotations") or {}
    try:
        expires_at = parse_rfc3339(data["expires_at"])
        obtained_raw = annotations.get(ANNOTATION_OBTAINED_AT)
        obtained_at = parse_rfc3339(obtained_raw) if obtained_raw else None
    except (KeyError, ValueError):
        return None
    return PublishedToken(
        expires_at=expires_at,
        obtained_at=obtained_at,
        username=data.get("username", ""),
        scope=data.get("scope", ""),
        spec_hash=annotations.get(ANNOTATION_SPEC_HASH),
        has_token=bool(data.get("access_token")),
    )


@dataclass(frozen=True)
class Grant:
    """A usable delegated grant: the refresh token and whose it is."""

    refresh_token: str = field(repr=False)
    account: str
    scope: str = ""
    obtained_at: str = ""
    updated_at: str = ""
    #: the token endpoint that issued it: its refresh token is presented nowhere else
    token_url: str = ""
    resource_version: str | None = field(default=None, compare=False)
    #: RFC 3339 end of the refresh token when the provider stated one (a Google app in Testing); "" unknown
    refresh_expires_at: str = ""


def grant_secret(token: TokenRef, grant: Grant) -> dict[str, Any]:
    """The grant Secret body (operator-only)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": GRANT_TYPE,
        "metadata": {
            "name": token.grant_secret_name,
            "namespace": token.namespace,
            "labels": {LABEL_MANAGED_BY: MANAGED_BY, LABEL_GRANT_FOR: token.name},
            "ownerReferences": [owner_reference(token)] if token.uid else [],
        },
        "data": _b64(
            {
                "refresh_token": grant.refresh_token,
                "account": grant.account,
                "scope": grant.scope,
                "obtained_at": grant.obtained_at,
                "updated_at": grant.updated_at,
                "token_url": grant.token_url,
                "refresh_token_expires_at": grant.refresh_expires_at,
            }
        ),
    }


def read_grant(secret: Mapping[str, Any] | None) -> Grant | None:
    """The grant in a grant Secret, or None when there is none (or it was emptied)."""
    if not secret:
        return None
    data = decode_data(secret)
    if not data.get("refresh_token"):
        return None
    return Grant(
        refresh_token=data["refresh_token"],
        account=data.get("account", ""),
        scope=data.get("scope", ""),
        obtained_at=data.get("obtained_at", ""),
        updated_at=data.get("updated_at", ""),
        token_url=data.get("token_url", ""),
        resource_version=(secret.get("metadata") or {}).get("resourceVersion"),
        refresh_expires_at=data.get("refresh_token_expires_at", ""),
    )

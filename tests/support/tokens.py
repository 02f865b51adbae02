"""EmailToken manifests for tests, one builder per provider and flow (shared by every tier)."""

from __future__ import annotations

from typing import Any

from emailtoken_dev.devprovider import DevProviderThread

API_VERSION = "emailtoken.io/v1alpha1"


def emailtoken(name: str, spec: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "EmailToken", "metadata": {"name": name, **metadata}, "spec": spec}


def _microsoft(
    provider: DevProviderThread, name: str, client_id: str, mailbox: str, secret: str, tenant: str, **spec: Any
) -> dict[str, Any]:
    return emailtoken(
        name,
        {
            "provider": "Microsoft",
            "tenantId": tenant,
            "clientId": client_id,
            "clientSecretRef": {"name": secret, "key": "client_secret"},
            "emailAddress": mailbox,
            "services": ["IMAP", "SMTP"],
            "tokenUrl": provider.microsoft_token_url(tenant),
            **spec,
        },
    )


def client_credentials(
    provider: DevProviderThread,
    name: str,
    *,
    client_id: str,
    mailbox: str,
    secret: str = "app-secret",
    tenant: str = "contoso",
    **spec: Any,
) -> dict[str, Any]:
    """A Microsoft app-only token against the local provider (no sign-in needed)."""
    return _microsoft(provider, name, client_id, mailbox, secret, tenant, flow="ClientCredentials", **spec)


def authorization_code(
    provider: DevProviderThread,
    name: str,
    *,
    client_id: str,
    mailbox: str,
    secret: str = "app-secret",
    tenant: str = "contoso",
    **spec: Any,
) -> dict[str, Any]:
    """A Microsoft delegated token against the local provider; it waits for a sign-in."""
    return _microsoft(provider, name, client_id, mailbox, secret, tenant, **spec)


def device_code(
    provider: DevProviderThread, name: str, *, client_id: str, mailbox: str, tenant: str = "contoso", **spec: Any
) -> dict[str, Any]:
    """A Microsoft device-code token against the local provider (a public client: no secret)."""
    return emailtoken(
        name,
        {
            "provider": "Microsoft",
            "flow": "DeviceCode",
            "tenantId": tenant,
            "clientId": client_id,
            "emailAddress": mailbox,
            "services": ["IMAP", "SMTP"],
            "tokenUrl": provider.microsoft_token_url(tenant),
            **spec,
        },
    )

"""Client-credentials msal applications are kept per client and secret, and keep no tokens."""

from __future__ import annotations

from typing import Any

import pytest

from emailtoken.model import parse_spec
from emailtoken.providers import microsoft
from emailtoken.providers.base import ClientCredentials
from emailtoken.providers.microsoft import MicrosoftProvider
from tests.unit.test_provider_errors import SECRET, Endpoint, session_with


def app_spec(client_id: str = "m") -> Any:
    return parse_spec(
        {
            "provider": "Microsoft",
            "flow": "ClientCredentials",
            "tenantId": "contoso",
            "clientId": client_id,
            "clientSecretRef": {"name": "s"},
            "emailAddress": "a@contoso.com",
            "services": ["IMAP"],
            "tokenUrl": "https://login.test/contoso/oauth2/v2.0/token",
        },
        "box",
    )


def hour_tokens(n: int) -> Endpoint:
    return Endpoint(
        *[(200, {"access_token": f"at-{i}", "expires_in": 3600, "token_type": "Bearer"}, {}) for i in range(n)]
    )


def test_every_refresh_reaches_the_provider_although_the_application_is_kept() -> None:
    """msal answers from its token cache while a token has 5 minutes left; the operator asks when
    its schedule says a new token is due, so each call must be a new token from the provider."""
    endpoint = hour_tokens(3)
    provider = MicrosoftProvider(session_with(endpoint))
    creds = ClientCredentials(client_secret=SECRET)
    tokens = [provider.acquire_app_token(app_spec(), creds).access_token for _ in range(3)]
    assert tokens == ["at-0", "at-1", "at-2"]
    assert endpoint.posts == 3
    assert sum(1 for method, _, _ in endpoint.requests if method == "GET") == 1  # discovery once
    assert provider._client_app(app_spec(), creds) is provider._client_app(app_spec(), creds)


def test_a_new_secret_or_client_gets_its_own_application_and_the_cache_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(microsoft, "APP_CACHE_SIZE", 2)
    provider = MicrosoftProvider(session_with(hour_tokens(0)))
    old, new = ClientCredentials(client_secret=SECRET), ClientCredentials(client_secret=SECRET + "-rotated")
    first = provider._client_app(app_spec(), old)
    assert provider._client_app(app_spec(), new) is not first
    assert provider._client_app(app_spec("other"), old) is not first
    assert len(provider._apps) == 2  # the least recently used (the old secret's) was dropped
    assert provider._client_app(app_spec(), old) is not first

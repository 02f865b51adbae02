"""Driving a sign-in through the callback service or `emailtoken authorize`: the web client, the token, the checks.

Shared by the integration suites that sign in against the local provider
(test_callback_security, test_callback_replicas, test_authorize_cli).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests

from emailtoken_dev.devprovider import DevProviderThread
from tests.support.kube import ApiClient
from tests.support.tokens import authorization_code

#: the Secret holding the web client's secret, in each test's namespace
WEB_SECRET = "web-secret"


def web_client(
    provider: DevProviderThread,
    api: ApiClient,
    namespace: str,
    client_id: str,
    *,
    client_secret: str,
    redirect_uris: list[str],
    users: Iterable[str],
) -> str:
    """Register a web client and its users at the provider and store its secret: the client id."""
    provider.add_client(client_id, client_secret, redirect_uris=redirect_uris)
    for user in users:
        provider.add_user(user)
    api.create_secret(namespace, WEB_SECRET, {"client_secret": client_secret})
    return client_id


def web_token(provider: DevProviderThread, name: str, client_id: str, mailbox: str) -> dict[str, Any]:
    """A delegated Microsoft EmailToken signed in through the provider's authorize page."""
    return authorization_code(
        provider,
        name,
        client_id=client_id,
        mailbox=mailbox,
        secret=WEB_SECRET,
        authorizationUrl=provider.microsoft_authorize_url("contoso"),
    )


def state_key_file(path: Path) -> Path:
    """A fresh callback state key at ``path`` (replicas that share it can finish each other's sign-ins)."""
    path.write_text(secrets.token_hex(32))
    return path


def with_params(url: str, **changes: str) -> str:
    """``url`` with these query parameters replaced (a forged or moved redirect)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query=urlencode({**dict(parse_qsl(parts.query)), **changes})))


def assert_refused(answer: requests.Response, status: int, reason: str, *texts: str) -> None:
    """The callback refused the sign-in with this status and reason, and its page says ``texts``."""
    assert answer.status_code == status, (answer.status_code, answer.text[-1500:])
    assert f"Reason: <code>{reason}</code>" in answer.text, answer.text[-1500:]
    for text in texts:
        assert text in answer.text, (text, answer.text[-1500:])


def grant_of(api: ApiClient, ns: str, name: str) -> dict[str, Any] | None:
    """The token's grant Secret, or None."""
    return api.get("secrets", ns, f"emailtoken-grant-{name}")

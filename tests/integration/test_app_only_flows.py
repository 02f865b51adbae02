"""The real operator (kopf over HTTP against kmock) issuing app-only tokens from a local
provider that speaks Entra ID v2.0 and Google over HTTPS (msal and google-auth unpatched)."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from emailtoken_dev.devprovider import DevProviderThread
from tests.support.kube import ApiClient, wait_for
from tests.support.operator_process import OperatorProcess
from tests.support.tokens import authorization_code, client_credentials

pytestmark = pytest.mark.usefixtures("operator")
CONSUMER_KEYS = {"access_token", "token_type", "expires_at", "username", "xoauth2", "scope"}


def ready(api: ApiClient, ns: str, name: str) -> dict[str, Any] | None:
    cond = api.condition(ns, name, "Ready")
    return cond if cond and cond["status"] == "True" else None


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_client_credentials_publishes_consumer_secret(api: ApiClient, provider: DevProviderThread, namespace: str):
    client_id = f"app-{namespace}"
    provider.add_client(client_id, "s3cret-value-1", mailboxes=["shared@contoso.com"])
    api.create_secret(namespace, "app-secret", {"client_secret": "s3cret-value-1"})
    api.create(
        "emailtokens",
        namespace,
        client_credentials(provider, "shared-inbox", client_id=client_id, mailbox="shared@contoso.com"),
    )

    wait_for(lambda: ready(api, namespace, "shared-inbox"), 30, what="Ready=True")
    data = api.secret_data(namespace, "shared-inbox")
    assert data is not None and set(data) == CONSUMER_KEYS
    info = provider.token_info(data["access_token"])
    assert info and info["active"], info
    assert data["username"] == "shared@contoso.com"
    assert data["token_type"] == "Bearer"
    assert data["scope"]
    expected = f"user=shared@contoso.com\x01auth=Bearer {data['access_token']}\x01\x01"
    assert base64.b64decode(data["xoauth2"]).decode() == expected
    expires = parse_time(data["expires_at"])
    assert 3500 < (expires - datetime.now(UTC)).total_seconds() <= 3600

    secret = api.get("secrets", namespace, "shared-inbox")
    token = api.get("emailtokens", namespace, "shared-inbox")
    assert secret["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "emailtoken-operator",
        "emailtoken.io/token": "shared-inbox",
    }
    assert secret["metadata"]["ownerReferences"][0]["uid"] == token["metadata"]["uid"]
    status = token["status"]
    assert status["phase"] == "Ready"
    assert status["secretName"] == "shared-inbox"
    assert status["account"] == "shared@contoso.com"
    assert status["expiresAt"] == data["expires_at"]
    assert parse_time(status["lastRefreshTime"]) <= datetime.now(UTC)
    assert parse_time(status["lastRefreshTime"]) < parse_time(status["nextRefreshTime"]) < expires
    authorized = api.condition(namespace, "shared-inbox", "Authorized")
    assert authorized["status"] == "True" and authorized["observedGeneration"] == 1
    reasons = wait_for(
        lambda: (
            {e["reason"] for e in api.events_for(namespace, "shared-inbox")} >= {"Authorized"}
            and {e["reason"] for e in api.events_for(namespace, "shared-inbox")}
        ),
        10,
    )
    assert "RefreshFailed" not in reasons
    assert provider.count("token", grant_type="client_credentials", client_id=client_id) == 1


def test_token_is_refreshed_ahead_of_expiry(api: ApiClient, provider: DevProviderThread, namespace: str):
    """With 20-second tokens and refreshBefore 8s, a new token arrives before the old one expires."""
    client_id = f"app-{namespace}"
    provider.add_client(client_id, "short-lived-secret")
    api.create_secret(namespace, "app-secret", {"client_secret": "short-lived-secret"})
    provider.token_lifetime = 20
    try:
        api.create(
            "emailtokens",
            namespace,
            client_credentials(provider, "short", client_id=client_id, mailbox="a@contoso.com", refreshBefore="8s"),
        )
        first = wait_for(lambda: ready(api, namespace, "short") and api.secret_data(namespace, "short"), 30)
    finally:
        provider.token_lifetime = 3600
    first_expiry = parse_time(first["expires_at"])
    second = wait_for(
        lambda: (d := api.secret_data(namespace, "short")) and d["access_token"] != first["access_token"] and d,
        30,
        what="a refreshed token",
    )
    assert datetime.now(UTC) < first_expiry, "refresh came after the old token expired"
    assert provider.token_info(second["access_token"])["active"]
    assert parse_time(second["expires_at"]) > first_expiry
    status = api.get("emailtokens", namespace, "short")["status"]
    assert status["expiresAt"] == second["expires_at"] or parse_time(status["expiresAt"]) >= parse_time(
        second["expires_at"]
    )
    # One call per refresh, nothing in between.
    assert provider.count("token", client_id=client_id) == 2
    # The routine refresh is in status, not another Event (Events are posted in batches: allow time).
    time.sleep(3)
    reasons = [e["reason"] for e in api.events_for(namespace, "short")]
    assert reasons.count("Authorized") == 1 and reasons.count("Refreshed") == 0, reasons


def test_google_service_account_domain_wide_delegation(api: ApiClient, provider: DevProviderThread, namespace: str):
    provider.add_user("mailbox@example.com", provider="google")
    key = provider.add_service_account(f"sa-{namespace}@proj.iam.gserviceaccount.com", f"1{namespace[2:]}")
    api.create_secret(namespace, "sa-key", {"key.json": json.dumps(key)})
    api.create(
        "emailtokens",
        namespace,
        {
            "apiVersion": "emailtoken.io/v1alpha1",
            "kind": "EmailToken",
            "metadata": {"name": "gmail"},
            "spec": {
                "provider": "Google",
                "flow": "ServiceAccount",
                "emailAddress": "mailbox@example.com",
                "serviceAccountKeyRef": {"name": "sa-key"},
                "services": ["Gmail"],
                "tokenUrl": provider.google_token_url,
            },
        },
    )
    wait_for(lambda: ready(api, namespace, "gmail"), 30, what="Ready=True")
    data = api.secret_data(namespace, "gmail")
    info = provider.token_info(data["access_token"])
    assert info["active"] and info["email"] == "mailbox@example.com"
    assert data["username"] == "mailbox@example.com"
    assert "https://mail.google.com/" in data["scope"]


def test_missing_client_secret_is_reported_and_recovers(api: ApiClient, provider: DevProviderThread, namespace: str):
    client_id = f"app-{namespace}"
    provider.add_client(client_id, "late-secret")
    api.create(
        "emailtokens", namespace, client_credentials(provider, "late", client_id=client_id, mailbox="a@contoso.com")
    )
    cond = wait_for(lambda: (c := api.condition(namespace, "late", "Ready")) and c["status"] == "False" and c, 30)
    assert cond["reason"] == "SecretNotFound"
    assert f"Secret {namespace}/app-secret does not exist" in cond["message"]
    assert api.get("emailtokens", namespace, "late")["status"]["phase"] == "SecretNotFound"
    warning = wait_for(lambda: [e for e in api.events_for(namespace, "late") if e["type"] == "Warning"], 10)
    assert "app-secret" in warning[0]["message"]
    assert api.get("secrets", namespace, "late") is None

    started = time.monotonic()
    api.create_secret(namespace, "app-secret", {"client_secret": "late-secret"})
    wait_for(lambda: ready(api, namespace, "late"), 20, what="recovery after the Secret appeared")
    assert time.monotonic() - started < 20  # woken by the Secret's watch event, not the 10-minute retry
    assert api.condition(namespace, "late", "Authorized")["status"] == "True"


def test_wrong_client_secret_is_invalid_client_and_recovers(
    api: ApiClient, provider: DevProviderThread, namespace: str
):
    client_id = f"app-{namespace}"
    provider.add_client(client_id, "the-right-secret")
    api.create_secret(namespace, "app-secret", {"client_secret": "a-wrong-secret"})
    api.create(
        "emailtokens", namespace, client_credentials(provider, "wrong", client_id=client_id, mailbox="a@contoso.com")
    )
    cond = wait_for(lambda: (c := api.condition(namespace, "wrong", "Authorized")) and c["status"] == "False" and c, 30)
    assert cond["reason"] == "InvalidClient"
    assert "AADSTS7000215" in cond["message"]
    assert api.condition(namespace, "wrong", "Ready")["status"] == "False"

    api.patch(
        "secrets", namespace, "app-secret", {"data": {"client_secret": base64.b64encode(b"the-right-secret").decode()}}
    )
    wait_for(lambda: ready(api, namespace, "wrong"), 20, what="recovery after fixing the secret")
    assert api.condition(namespace, "wrong", "Authorized")["status"] == "True"


def test_authorization_code_without_grant_awaits_authorization(
    api: ApiClient, provider: DevProviderThread, namespace: str
):
    api.create_secret(namespace, "web-secret", {"client_secret": "whatever"})
    user_box = authorization_code(
        provider, "user-box", client_id="web-app", mailbox="alice@contoso.com", secret="web-secret", services=["IMAP"]
    )
    api.create("emailtokens", namespace, user_box)
    cond = wait_for(lambda: (c := api.condition(namespace, "user-box", "Authorized")) and c, 30)
    assert cond["status"] == "False" and cond["reason"] == "AwaitingAuthorization"
    status = api.get("emailtokens", namespace, "user-box")["status"]
    assert status["phase"] == "AwaitingAuthorization"
    assert status["redirectUri"] == "https://emailtoken.example.test/callback"
    assert provider.count("token", client_id="web-app") == 0


def test_deleted_token_is_no_longer_acted_on(
    api: ApiClient, provider: DevProviderThread, namespace: str, operator: OperatorProcess
):
    client_id = f"app-{namespace}"
    provider.add_client(client_id, "del-secret")
    api.create_secret(namespace, "app-secret", {"client_secret": "del-secret"})
    provider.token_lifetime = 6
    try:
        api.create(
            "emailtokens", namespace, client_credentials(provider, "gone", client_id=client_id, mailbox="a@contoso.com")
        )
        wait_for(lambda: ready(api, namespace, "gone"), 30)
    finally:
        provider.token_lifetime = 3600
    api.delete("emailtokens", namespace, "gone")
    wait_for(lambda: api.get("emailtokens", namespace, "gone") is None, 10)
    calls = provider.count("token", client_id=client_id)
    api.delete("secrets", namespace, "gone")  # a real cluster's GC would do this via ownerReferences
    time.sleep(6)  # longer than the 6 s token lifetime: a live schedule would have refreshed by now
    assert provider.count("token", client_id=client_id) == calls
    assert api.get("secrets", namespace, "gone") is None
    assert "Traceback" not in operator.log


def test_no_secret_material_in_logs_events_or_status(
    api: ApiClient, provider: DevProviderThread, operator: OperatorProcess, kube
):
    """Runs last in this module: scans everything the operator wrote during the module."""
    secrets: set[str] = {
        "s3cret-value-1",
        "short-lived-secret",
        "late-secret",
        "the-right-secret",
        "a-wrong-secret",
        "del-secret",
        "whatever",
    }
    everything: list[str] = [operator.log]
    for ns in {e["metadata"]["namespace"] for e in _all(api, "emailtokens")}:
        for s in api.list("secrets", ns):
            data = api.secret_data(ns, s["metadata"]["name"]) or {}
            if "access_token" in data:
                secrets.add(data["access_token"])
                secrets.add(data["xoauth2"])
        for kind in ("emailtokens", "events"):
            everything.append(json.dumps(api.list(kind, ns)))
    blob = "\n".join(everything)
    assert len(secrets) > 7
    leaked = [s[:6] + "…" for s in secrets if s in blob]
    assert not leaked, f"secret values found in logs/events/status: {leaked}"


def _all(api: ApiClient, kind: str) -> list[dict[str, Any]]:
    r = api.http.get(api.url + "/apis/emailtoken.io/v1alpha1/emailtokens", timeout=10)
    r.raise_for_status()
    return r.json().get("items") or []

"""The operator process against the real API server: an app-only token becomes Ready, and its
first Event (posted by emailtoken.events, not kopf) lands on it as ``kubectl describe`` shows it."""

from __future__ import annotations

from collections.abc import Callable

from emailtoken_dev.devprovider import DevProviderThread
from tests.support.kube import ApiClient, wait_for
from tests.support.tokens import client_credentials


def test_app_only_token_becomes_ready(
    admin: ApiClient, provider: DevProviderThread, namespace: str, start_operator: Callable
) -> None:
    client_id = f"app-{namespace}"
    provider.add_client(client_id, "s3cret-1", mailboxes=["shared@contoso.com"])
    admin.create_secret(namespace, "app-secret", {"client_secret": "s3cret-1"})
    start_operator([namespace])
    admin.create(
        "emailtokens",
        namespace,
        client_credentials(provider, "inbox", client_id=client_id, mailbox="shared@contoso.com"),
    )
    wait_for(lambda: (admin.condition(namespace, "inbox", "Ready") or {}).get("status") == "True", 30, what="Ready")
    data = admin.secret_data(namespace, "inbox")
    assert data and provider.token_info(data["access_token"])["active"]
    token = admin.get("emailtokens", namespace, "inbox")
    events = wait_for(
        lambda: [e for e in admin.events_for(namespace, "inbox") if e.get("reason") == "Authorized"], 15, what="Event"
    )
    assert len(events) == 1
    event = events[0]
    assert event["type"] == "Normal" and "access token" in event["message"]
    assert event["source"] == {"component": "emailtoken-operator"}
    assert event["involvedObject"]["uid"] == token["metadata"]["uid"]
    assert event["involvedObject"]["kind"] == "EmailToken" and event["involvedObject"]["namespace"] == namespace
    assert event["firstTimestamp"] and event["lastTimestamp"] and event["count"] == 1

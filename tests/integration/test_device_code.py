"""flow: DeviceCode end to end: the code appears in status and an Event, approval yields a grant
and a Ready token; expiry and denial give clear conditions and the reauthorize annotation restarts."""

from __future__ import annotations

from typing import Any

import pytest

from emailtoken_dev.devprovider import DevProviderThread
from tests.support.kube import ApiClient, wait_for
from tests.support.tokens import device_code as device_code_token

pytestmark = pytest.mark.usefixtures("operator")


@pytest.fixture(autouse=True)
def quick_device_codes(provider: DevProviderThread):
    provider.settings.device_interval = 1
    yield
    provider.settings.device_interval = 5
    provider.settings.device_expires_in = 900


def device_token(provider: DevProviderThread, client_id: str) -> dict[str, Any]:
    return device_code_token(provider, "kiosk", client_id=client_id, mailbox="bob@contoso.com")


def device_code(api: ApiClient, ns: str) -> dict[str, Any] | None:
    return ((api.get("emailtokens", ns, "kiosk") or {}).get("status") or {}).get("deviceCode")


def test_device_code_approved(api: ApiClient, provider: DevProviderThread, namespace: str):
    client_id = f"device-{namespace}"
    provider.add_client(client_id, public=True)
    provider.add_user("bob@contoso.com")
    api.create("emailtokens", namespace, device_token(provider, client_id))

    code = wait_for(lambda: device_code(api, namespace), 30, what="status.deviceCode")
    assert code["verificationUri"].startswith(provider.url)
    authorized = api.condition(namespace, "kiosk", "Authorized")
    assert authorized["reason"] == "AwaitingAuthorization" and code["userCode"] in authorized["message"]
    events = wait_for(lambda: [e for e in api.events_for(namespace, "kiosk") if e["reason"] == "DeviceCodeIssued"], 10)
    assert code["userCode"] in events[0]["message"]

    provider.approve_device(code["userCode"], "bob@contoso.com")
    wait_for(lambda: (c := api.condition(namespace, "kiosk", "Ready")) and c["status"] == "True", 30, what="Ready")
    data = api.secret_data(namespace, "kiosk")
    info = provider.token_info(data["access_token"])
    assert info["active"] and info["email"] == "bob@contoso.com"
    grant = api.secret_data(namespace, "emailtoken-grant-kiosk")
    assert grant["refresh_token"] and grant["account"] == "bob@contoso.com"
    assert grant["refresh_token"] not in str(api.get("secrets", namespace, "kiosk"))
    status = api.get("emailtokens", namespace, "kiosk")["status"]
    assert "deviceCode" not in status
    assert status["account"] == "bob@contoso.com"


def test_device_code_denied_then_restarted(api: ApiClient, provider: DevProviderThread, namespace: str):
    client_id = f"device-{namespace}"
    provider.add_client(client_id, public=True)
    api.create("emailtokens", namespace, device_token(provider, client_id))
    first = wait_for(lambda: device_code(api, namespace), 30)
    provider.deny_device(first["userCode"])
    cond = wait_for(
        lambda: (c := api.condition(namespace, "kiosk", "Authorized")) and c["reason"] == "AuthorizationDeclined" and c,
        30,
    )
    assert cond["status"] == "False" and "declined" in cond["message"]
    assert api.get("secrets", namespace, "emailtoken-grant-kiosk") is None

    api.patch("emailtokens", namespace, "kiosk", {"metadata": {"annotations": {"emailtoken.io/reauthorize": "1"}}})
    second = wait_for(lambda: (c := device_code(api, namespace)) and c["userCode"] != first["userCode"] and c, 30)
    provider.approve_device(second["userCode"], "bob@contoso.com")
    wait_for(lambda: (c := api.condition(namespace, "kiosk", "Ready")) and c["status"] == "True", 30)


def test_device_code_expires(api: ApiClient, provider: DevProviderThread, namespace: str):
    client_id = f"device-{namespace}"
    provider.add_client(client_id, public=True)
    provider.settings.device_expires_in = 3
    api.create("emailtokens", namespace, device_token(provider, client_id))
    wait_for(lambda: device_code(api, namespace), 30)
    cond = wait_for(
        lambda: (c := api.condition(namespace, "kiosk", "Authorized")) and c["reason"] == "DeviceCodeExpired" and c, 30
    )
    assert "reauthorize" in cond["message"] or "expired" in cond["message"]
    assert device_code(api, namespace) is None
    polls = provider.count("token", client_id=client_id)
    import time

    time.sleep(3)
    assert provider.count("token", client_id=client_id) == polls, "kept polling an expired code"

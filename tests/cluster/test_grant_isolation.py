"""A token's grant is its own: never read, replaced or deleted when it is not, never presented elsewhere.

Against a real API server (ownership is labels, types and resourceVersions) with the real
operator process. The token's author is the adversary: they plant a Secret under the
grant's name, or move an authorized token's ``spec.tokenUrl`` to another host the
installer happens to allow.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

from emailtoken_dev.devprovider import DevProviderThread
from tests.support.faultkit import (
    SecretLedger,
    annotate,
    condition,
    delegated_token,
    is_ready,
    refresh_calls,
    warnings,
)
from tests.support.kube import ApiClient, wait_for

REFRESH_NOW = "emailtoken.io/refresh-now"
REAUTHORIZE = "emailtoken.io/reauthorize"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_a_secret_squatting_the_grant_name_is_never_used_or_deleted(
    admin: ApiClient, provider: DevProviderThread, namespace: str, start_operator: Callable
) -> None:
    ledger = SecretLedger()
    token = delegated_token(admin, provider, ledger, namespace=namespace, create=False)
    # The adversary replaces the grant with a plain Secret holding a refresh token of their choosing.
    admin.delete("secrets", namespace, "emailtoken-grant-box")
    planted = admin.create(
        "secrets",
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "emailtoken-grant-box"},
            "data": {"refresh_token": b64("planted-refresh-token"), "account": b64(token.mailbox)},
        },
    )
    start_operator([namespace])
    token.create(admin)

    wait_for(lambda: condition(admin, namespace, "box", "Authorized").get("reason") == "SecretConflict", 30)
    assert "is not this token's grant" in condition(admin, namespace, "box", "Authorized")["message"]
    assert not is_ready(admin, namespace, "box")
    annotate(admin, namespace, "box", REAUTHORIZE, "1")
    wait_for(
        lambda: (
            (admin.get("emailtokens", namespace, "box") or {})
            .get("status", {})
            .get("handledAnnotations", {})
            .get("reauthorize")
            == "1"
        ),
        30,
        what="reauthorize handled",
    )
    after = admin.get("secrets", namespace, "emailtoken-grant-box")
    assert after is not None, "the reauthorize annotation deleted a Secret that is not the token's grant"
    assert after["metadata"]["resourceVersion"] == planted["metadata"]["resourceVersion"]
    assert refresh_calls(provider, token.client_id) == [], "the planted refresh token was presented"
    assert warnings(admin, namespace, "box")


def test_a_grant_is_presented_only_to_the_endpoint_that_issued_it(
    admin: ApiClient, provider: DevProviderThread, namespace: str, start_operator: Callable
) -> None:
    ledger = SecretLedger()
    token = delegated_token(admin, provider, ledger, namespace=namespace, create=False)
    issued_by = token.manifest["spec"]["tokenUrl"]
    admin.patch("secrets", namespace, "emailtoken-grant-box", {"data": {"token_url": b64(issued_by)}})
    # The installer allows a second host (the same local provider under another name).
    start_operator([namespace], extra_args=["--allow-provider-host", "localhost"])
    token.create(admin)
    wait_for(lambda: is_ready(admin, namespace, "box"), 30, what="Ready")
    calls = len(refresh_calls(provider, token.client_id))
    grant_before = admin.secret_data(namespace, "emailtoken-grant-box")

    moved = issued_by.replace("127.0.0.1", "localhost")
    admin.patch("emailtokens", namespace, "box", {"spec": {"tokenUrl": moved}})
    annotate(admin, namespace, "box", REFRESH_NOW, "1")
    wait_for(lambda: condition(admin, namespace, "box", "Authorized").get("reason") == "EndpointChanged", 30)
    message = condition(admin, namespace, "box", "Authorized")["message"]
    assert "never presented to another endpoint" in message and "localhost" in message
    assert len(refresh_calls(provider, token.client_id)) == calls, "the refresh token went to the new endpoint"
    assert admin.secret_data(namespace, "emailtoken-grant-box") == grant_before

    # Moving it back is all it takes: the grant works again where it was issued.
    admin.patch("emailtokens", namespace, "box", {"spec": {"tokenUrl": issued_by}})
    annotate(admin, namespace, "box", REFRESH_NOW, "2")
    wait_for(lambda: condition(admin, namespace, "box", "Authorized").get("status") == "True", 30, what="back")

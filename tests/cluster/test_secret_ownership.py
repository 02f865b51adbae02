"""Who owns which Secret, judged by a real API server and kube-controller-manager.

* The consumer and grant Secrets carry an ownerReference to their EmailToken, so the
  controller manager's garbage collector deletes them with the token (and nothing else).
* A Secret that already has the token's ``secretName`` and is not labelled for that token
  is never taken over: the token reports ``SecretConflict`` in its Ready condition and a
  Warning Event, and the Secret keeps its data, labels, owners and resourceVersion.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from emailtoken_dev.devprovider import DevProviderThread
from tests.support.cluster import ControlPlane
from tests.support.faultkit import SecretLedger, condition, delegated_token, is_ready, warnings
from tests.support.kube import ApiClient, wait_for
from tests.support.tokens import client_credentials

MAILBOX = "shared@contoso.com"


def needs_garbage_collector(cluster: ControlPlane) -> None:
    if not cluster.assets.get("controller_manager"):
        pytest.skip("no kube-controller-manager in $KUBEBUILDER_ASSETS: nothing collects garbage")


def app_client(admin: ApiClient, provider: DevProviderThread, ns: str) -> str:
    """An app registration at the local provider and its client secret in ``ns`` (Secret app-only)."""
    client_id = f"app-{ns}"
    provider.add_client(client_id, f"secret-{ns}", mailboxes=[MAILBOX])
    admin.create_secret(ns, "app-only", {"client_secret": f"secret-{ns}"})
    return client_id


def owners(admin: ApiClient, ns: str, name: str) -> list[dict[str, Any]]:
    return ((admin.get("secrets", ns, name) or {}).get("metadata") or {}).get("ownerReferences") or []


def token_calls(provider: DevProviderThread, client_id: str) -> int:
    return sum(1 for c in provider.calls if c.client_id == client_id and c.endpoint == "token")


def test_deleting_a_token_garbage_collects_its_secrets(
    cluster: ControlPlane,
    admin: ApiClient,
    provider: DevProviderThread,
    namespace: str,
    start_operator: Callable[..., Any],
) -> None:
    """A delegated token (consumer + grant Secret) and an app-only one with its own secretName: both
    owned by their token (controller, blockOwnerDeletion false); deleting the tokens makes the
    garbage collector delete exactly those Secrets, not the client secrets or a bystander."""
    needs_garbage_collector(cluster)
    ns = namespace
    delegated = delegated_token(admin, provider, SecretLedger(), name="box", namespace=ns, create=False)
    client_id = app_client(admin, provider, ns)
    admin.create_secret(ns, "bystander", {"note": "not ours"})
    start_operator([ns])
    delegated.create(admin)
    admin.create(
        "emailtokens",
        ns,
        client_credentials(
            provider, "sender", client_id=client_id, mailbox=MAILBOX, secret="app-only", secretName="sender-creds"
        ),
    )
    for name in ("box", "sender"):
        wait_for(lambda name=name: is_ready(admin, ns, name), 30, what=f"{name} Ready")

    owned = {"box": ["box", "emailtoken-grant-box"], "sender": ["sender-creds"]}
    for token, secrets in owned.items():
        uid = admin.get("emailtokens", ns, token)["metadata"]["uid"]
        for secret in secrets:
            refs = owners(admin, ns, secret)
            assert [(r["kind"], r["name"], r["uid"]) for r in refs] == [("EmailToken", token, uid)], (secret, refs)
            assert refs[0]["controller"] is True and refs[0]["blockOwnerDeletion"] is False

    deleted = time.monotonic()
    for token in owned:
        admin.delete("emailtokens", ns, token)
    every = [s for secrets in owned.values() for s in secrets]
    wait_for(
        lambda: all(admin.get("secrets", ns, s) is None for s in every),
        60,
        what=f"the garbage collector deletes {every}",
    )
    print(f"\nowned Secrets collected {time.monotonic() - deleted:.1f}s after their tokens were deleted")
    for survivor in ("app-secret", "app-only", "bystander"):
        assert admin.get("secrets", ns, survivor) is not None, f"{survivor} was not the tokens' to delete"


def test_a_foreign_secret_with_the_tokens_secret_name_is_left_untouched(
    cluster: ControlPlane,
    admin: ApiClient,
    provider: DevProviderThread,
    namespace: str,
    start_operator: Callable[..., Any],
) -> None:
    """Two squatters: an unlabelled Secret named like the token, and one labelled for another token
    under a token's spec.secretName. Neither is written, owned or relabelled; each token says
    SecretConflict in Ready and in one Warning Event, and asks the provider nothing. Once the
    squatter is deleted the token publishes at once; a token deleted while squatted on leaves the
    squatter in place (the garbage collector only follows owners)."""
    ns = namespace
    client_id = app_client(admin, provider, ns)
    plain = admin.create_secret(ns, "inbox", {"password": "legacy-value"}, labels={"app": "legacy"})
    other = admin.create_secret(
        ns, "shared-creds", {"token": "someone-elses"}, labels={"emailtoken.io/token": "another-token"}
    )
    squatters = {"inbox": plain, "outbox": other}
    start_operator([ns])
    admin.create(
        "emailtokens",
        ns,
        client_credentials(provider, "inbox", client_id=client_id, mailbox=MAILBOX, secret="app-only"),
    )
    admin.create(
        "emailtokens",
        ns,
        client_credentials(
            provider, "outbox", client_id=client_id, mailbox=MAILBOX, secret="app-only", secretName="shared-creds"
        ),
    )
    for token in squatters:
        wait_for(
            lambda token=token: condition(admin, ns, token, "Ready").get("reason") == "SecretConflict",
            30,
            what=f"{token}: Ready=False SecretConflict",
        )
        wait_for(lambda token=token: warnings(admin, ns, token), 10, what=f"{token}: a Warning Event")
    time.sleep(2)  # a second look (a Secret event, a resync) must neither write nor warn again
    for token, before in squatters.items():
        secret_name = before["metadata"]["name"]
        ready = condition(admin, ns, token, "Ready")
        assert ready["status"] == "False"
        assert f"Secret {ns}/{secret_name} exists and is not managed by this EmailToken" in ready["message"]
        warned = warnings(admin, ns, token)
        assert len(warned) == 1, warned
        assert warned[0]["reason"] == "RefreshFailed"
        assert warned[0]["message"].startswith("SecretConflict: ")
        assert secret_name in warned[0]["message"]
        now = admin.get("secrets", ns, secret_name)
        assert now["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"], token
        assert now["data"] == before["data"] and now["metadata"].get("labels") == before["metadata"].get("labels")
        assert "ownerReferences" not in now["metadata"]
    assert token_calls(provider, client_id) == 0, "a known conflict is found before the provider is asked"

    admin.delete("secrets", ns, "inbox")
    freed = time.monotonic()
    wait_for(lambda: is_ready(admin, ns, "inbox"), 20, what="inbox publishes once the squatter is gone")
    print(f"\ninbox Ready {time.monotonic() - freed:.1f}s after the foreign Secret was deleted")
    assert (admin.secret_data(ns, "inbox") or {}).get("access_token")
    assert [r["name"] for r in owners(admin, ns, "inbox")] == ["inbox"]

    admin.delete("emailtokens", ns, "outbox")
    if cluster.assets.get("controller_manager"):
        wait_for(lambda: admin.get("emailtokens", ns, "outbox") is None, 10, what="outbox deleted")
        time.sleep(3)  # the garbage collector has had time to act, were there anything to collect
    kept = admin.get("secrets", ns, "shared-creds")
    assert kept is not None and kept["metadata"]["resourceVersion"] == other["metadata"]["resourceVersion"]

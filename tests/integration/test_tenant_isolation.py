"""Whoever may write an EmailToken reaches only its own mailbox: the real operator against hostile specs.

The operator process runs as an installer would run it for the local provider
(``--allow-provider-host 127.0.0.1``); the token's author then names other hosts.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from emailtoken_dev.devprovider import DevProviderThread
from tests.support.kube import ApiClient, wait_for
from tests.support.operator_process import OperatorProcess
from tests.support.tokens import client_credentials

pytestmark = pytest.mark.usefixtures("operator")
SECRET = "tenant-client-secret-93c1"


def reason(api: ApiClient, namespace: str, name: str, condition: str = "Ready") -> str | None:
    return (api.condition(namespace, name, condition) or {}).get("reason")


def elsewhere(url: str) -> str:
    """The same local provider under a host name the installer did not allow."""
    return url.replace("127.0.0.1", "localhost")


def setup(api: ApiClient, provider: DevProviderThread, namespace: str) -> str:
    client_id = f"app-{namespace}"
    provider.add_client(client_id, SECRET, mailboxes=["shared@contoso.com"])
    api.create_secret(namespace, "app-secret", {"client_secret": SECRET})
    return client_id


def test_a_token_naming_another_host_sends_nothing(
    api: ApiClient, provider: DevProviderThread, namespace: str, operator: OperatorProcess
) -> None:
    client_id = setup(api, provider, namespace)
    body: dict[str, Any] = client_credentials(provider, "evil", client_id=client_id, mailbox="shared@contoso.com")
    body["spec"]["tokenUrl"] = elsewhere(body["spec"]["tokenUrl"])
    before = provider.count(client_id=client_id)
    api.create("emailtokens", namespace, body)

    wait_for(lambda: reason(api, namespace, "evil") == "EndpointNotAllowed", 30, what="EndpointNotAllowed")
    message = api.condition(namespace, "evil", "Ready")["message"]
    assert "'localhost' is not allowed" in message and "--allow-provider-host" in message
    assert api.get("secrets", namespace, "evil") is None
    assert provider.count(client_id=client_id) == before, "a request reached the provider"
    warnings = [(e.get("reason"), e.get("message") or "") for e in api.events_for(namespace, "evil")]
    assert any(r == "RefreshFailed" and m.startswith("EndpointNotAllowed: ") for r, m in warnings), warnings
    assert SECRET not in operator.log


def test_moving_an_authorized_token_to_another_host_spends_nothing(
    api: ApiClient, provider: DevProviderThread, namespace: str, operator: OperatorProcess
) -> None:
    """The attack of the issue: edit tokenUrl of a working token; the operator must not send its secret there."""
    client_id = setup(api, provider, namespace)
    body = client_credentials(provider, "moved", client_id=client_id, mailbox="shared@contoso.com")
    api.create("emailtokens", namespace, body)
    wait_for(
        lambda: (
            reason(api, namespace, "moved") == "Refreshed"
            or (api.condition(namespace, "moved", "Ready") or {}).get("status") == "True"
        ),
        30,
        what="Ready",
    )
    published = api.secret_data(namespace, "moved")
    assert published is not None
    calls = provider.count(client_id=client_id)

    api.patch(
        "emailtokens",
        namespace,
        "moved",
        {
            "spec": {"tokenUrl": elsewhere(body["spec"]["tokenUrl"])},
            "metadata": {"annotations": {"emailtoken.io/refresh-now": "1"}},
        },
    )
    wait_for(lambda: reason(api, namespace, "moved", "Authorized") == "EndpointNotAllowed", 30, what="refused")
    # The token it already has stays valid and published; only the grant is reported unusable.
    assert api.condition(namespace, "moved", "Ready")["status"] == "True"
    assert provider.count(client_id=client_id) == calls
    assert api.secret_data(namespace, "moved") == published, "the valid token stays published"


def test_a_provider_claiming_zero_lifetimes_cannot_spin_the_operator(
    api: ApiClient, provider: DevProviderThread, namespace: str, operator: OperatorProcess
) -> None:
    """``expires_in: 0`` once made one token refresh in a hot loop (66 provider calls in 3 s).

    Tests run the operator with a 1 s floor (``--min-refresh-interval 1s``; the product's is 15 s),
    so 6 s allow at most about 7 calls.
    """
    client_id = setup(api, provider, namespace)
    saved = provider.token_lifetime
    provider.token_lifetime = 0
    try:
        api.create(
            "emailtokens",
            namespace,
            client_credentials(provider, "zero", client_id=client_id, mailbox="shared@contoso.com"),
        )
        wait_for(lambda: provider.count(client_id=client_id) >= 1, 30, what="the first call")
        first = provider.count(client_id=client_id)
        time.sleep(6)
        calls = provider.count(client_id=client_id) - first
    finally:
        provider.token_lifetime = saved
    assert 3 <= calls <= 8, calls
    assert operator.proc is not None and operator.proc.poll() is None


def test_client_secret_ref_cannot_aim_at_any_secret_of_the_namespace(
    api: ApiClient, provider: DevProviderThread, namespace: str, operator: OperatorProcess
) -> None:
    """A registry credential (or a ServiceAccount token, a TLS key, a grant) is never sent as a client secret."""
    client_id = setup(api, provider, namespace)
    api.create(
        "secrets",
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": "registry"},
            "data": {".dockerconfigjson": "eyJhdXRocyI6e319"},
        },
    )
    before = provider.count(client_id=client_id)
    body = client_credentials(provider, "aimed", client_id=client_id, mailbox="shared@contoso.com")
    body["spec"]["clientSecretRef"] = {"name": "registry", "key": ".dockerconfigjson"}
    api.create("emailtokens", namespace, body)
    wait_for(
        lambda: "only an Opaque Secret" in (api.condition(namespace, "aimed", "Ready") or {}).get("message", ""), 30
    )
    assert provider.count(client_id=client_id) == before

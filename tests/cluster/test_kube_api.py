"""emailtoken.kube's own requests (Secrets, status, Events) against a real API server.

These calls skip the generated client's layers and talk to its connection pool directly,
so what those layers did is checked here: the server's answers and refusals become the
same :class:`KubeError` kinds with the server's words, a status patch reaches the status
subresource only, the credentials come from the configuration (its refresh hook
included, which is how an in-cluster token is re-read: once in a while, and at once after
a 401), and no answer at all is :class:`Unreachable`.
"""

from __future__ import annotations

import base64
import socket
from typing import Any

import kubernetes
import pytest

from emailtoken import kube
from emailtoken.kube import Conflict, KubeError, KubernetesApi, NotFound, Unreachable
from tests.support.cluster import ControlPlane
from tests.support.kube import ApiClient


def configuration(cluster: ControlPlane) -> kubernetes.client.Configuration:
    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(cluster.admin_kubeconfig), client_configuration=config)
    return config


def secret(name: str, value: str = "v1") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "labels": {"app": "kube-api-test"}},
        "data": {"key": base64.b64encode(value.encode()).decode()},
    }


def token_body(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "emailtoken.io/v1alpha1",
        "kind": "EmailToken",
        "metadata": {"name": name},
        "spec": {
            "provider": "Microsoft",
            "flow": "ClientCredentials",
            "tenantId": "contoso",
            "clientId": "app-id",
            "clientSecretRef": {"name": "app-secret"},
            "emailAddress": f"{name}@contoso.example",
            "services": ["IMAP"],
        },
    }


async def test_secret_calls_and_refusals_carry_the_servers_answer(cluster: ControlPlane, namespace: str) -> None:
    api = KubernetesApi(threads=2, configuration=configuration(cluster))

    assert await api.get_secret(namespace, "s1") is None
    created = await api.create_secret(namespace, secret("s1"))
    assert created["metadata"]["resourceVersion"]
    assert (await api.get_secret(namespace, "s1") or {})["data"]["key"] == base64.b64encode(b"v1").decode()

    with pytest.raises(Conflict, match="already exists"):
        await api.create_secret(namespace, secret("s1"))

    patched = await api.patch_secret(namespace, "s1", {"data": {"key": base64.b64encode(b"v2").decode()}})
    assert patched["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]
    assert patched["metadata"]["labels"] == {"app": "kube-api-test"}  # a merge patch, not a replace

    stale = created["metadata"]["resourceVersion"]
    with pytest.raises(Conflict, match="the object has been modified"):
        await api.patch_secret(namespace, "s1", {"data": {}}, resource_version=stale)

    with pytest.raises(NotFound, match='"missing" not found'):
        await api.patch_secret(namespace, "missing", {"data": {}})

    with pytest.raises(KubeError) as invalid:
        await api.create_secret(namespace, secret("Not_A_Name"))
    assert invalid.value.status == 422
    assert "Not_A_Name" in invalid.value.message


async def test_status_patch_reaches_the_status_only_and_events_are_created(
    cluster: ControlPlane, admin: ApiClient, namespace: str
) -> None:
    before = admin.create("emailtokens", namespace, token_body("box"))
    api = KubernetesApi(threads=2, configuration=configuration(cluster))

    await api.patch_token_status(namespace, "box", {"phase": "Test", "spec": "ignored"})
    await api.patch_token_status(namespace, "box", {"lastRefreshTime": "2026-12-05T10:00:00Z"})

    after = admin.get("emailtokens", namespace, "box") or {}
    assert after["status"]["lastRefreshTime"] == "2026-12-05T10:00:00Z"
    assert after["spec"] == before["spec"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"]

    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": "box."},
        "involvedObject": {"kind": "EmailToken", "namespace": namespace, "name": "box"},
        "reason": "Tested",
        "message": "an Event from the lean path",
        "type": "Normal",
    }
    assert await api.create_event(namespace, event) == {}  # the answer is not decoded
    assert [e["reason"] for e in admin.events_for(namespace, "box")] == ["Tested"]

    with pytest.raises(NotFound):
        await api.patch_token_status(namespace, "no-such-token", {"phase": "Test"})


async def test_credentials_come_from_the_configuration_and_its_refresh_hook(
    cluster: ControlPlane, namespace: str
) -> None:
    """A rejected token is a 401; a refresh hook (an in-cluster token re-read from its file,
    an exec plugin's new token) gives the credentials."""
    config = configuration(cluster)
    config.api_key = {"BearerToken": "not-a-token"}
    config.api_key_prefix = {"BearerToken": "Bearer"}
    rejected = KubernetesApi(threads=1, configuration=config)
    with pytest.raises(KubeError) as refused:
        await rejected.get_secret(namespace, "anything")
    assert refused.value.status == 401

    asked: list[str] = []

    def refresh(conf: kubernetes.client.Configuration) -> None:
        asked.append("refresh")
        conf.api_key = {"BearerToken": cluster.ADMIN_TOKEN}

    config = configuration(cluster)
    config.api_key = {"BearerToken": "expired-token"}
    config.api_key_prefix = {"BearerToken": "Bearer"}
    config.refresh_api_key_hook = refresh
    api = KubernetesApi(threads=1, configuration=config)
    assert await api.get_secret(namespace, "anything") is None
    assert asked


async def test_credentials_are_read_once_in_a_while_and_again_after_a_401(
    cluster: ControlPlane, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refresh hook runs once for many requests (it re-derives proxies from the whole
    environment each time), and at once when the server refuses the credentials it gave: the
    request refused is sent again with the new ones."""
    monkeypatch.setattr(kube, "AUTH_REUSE", 3600.0)  # however slow the machine, all within one reuse
    tokens = iter(["rotated-away", cluster.ADMIN_TOKEN])
    asked: list[str] = []

    def refresh(conf: kubernetes.client.Configuration) -> None:
        token = next(tokens, cluster.ADMIN_TOKEN)
        asked.append(token)
        conf.api_key = {"BearerToken": token}

    config = configuration(cluster)
    config.api_key_prefix = {"BearerToken": "Bearer"}
    config.refresh_api_key_hook = refresh
    api = KubernetesApi(threads=1, configuration=config)

    assert await api.get_secret(namespace, "anything") is None  # 401 with the first token, then the second
    assert asked == ["rotated-away", cluster.ADMIN_TOKEN]
    created = await api.create_secret(namespace, secret("s1"))
    await api.patch_secret(namespace, "s1", {"data": {}}, resource_version=created["metadata"]["resourceVersion"])
    assert await api.get_secret(namespace, "s1") is not None
    assert asked == ["rotated-away", cluster.ADMIN_TOKEN], "credentials reused, not asked for per request"


async def test_no_answer_is_unreachable_and_says_where(namespace: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before the call: connection refused
    config = kubernetes.client.Configuration()
    config.host = f"https://127.0.0.1:{port}"
    api = KubernetesApi(threads=1, request_timeout=2, configuration=config)
    with pytest.raises(Unreachable) as gone:
        await api.patch_secret(namespace, "s1", {"data": {}})
    assert gone.value.status == 0
    assert str(port) in str(gone.value)


async def test_secret_then_status_in_one_call(cluster: ControlPlane, admin: ApiClient, namespace: str) -> None:
    """write_secret_and_status: the status only after the Secret landed (created or patched); the
    Secret's refusal raises (nothing written), the status's is returned (the Secret stays written)."""
    admin.create("emailtokens", namespace, token_body("box"))
    api = KubernetesApi(threads=2, configuration=configuration(cluster))
    v2, v3 = base64.b64encode(b"v2").decode(), base64.b64encode(b"v3").decode()

    def status() -> dict[str, Any]:
        return (admin.get("emailtokens", namespace, "box") or {}).get("status") or {}

    def key() -> str:
        return (admin.get("secrets", namespace, "box") or {})["data"]["key"]

    first = {"lastRefreshTime": "2026-12-05T10:00:00Z"}
    assert await api.write_secret_and_status(namespace, "box", secret("box"), "box", first, create=True) is None
    assert key() == base64.b64encode(b"v1").decode()
    assert status()["lastRefreshTime"] == first["lastRefreshTime"]

    second = {"lastRefreshTime": "2026-12-05T11:00:00Z"}
    with pytest.raises(Conflict, match="already exists"):
        await api.write_secret_and_status(namespace, "box", secret("box"), "box", second, create=True)
    with pytest.raises(NotFound):
        await api.write_secret_and_status(namespace, "gone", {"data": {"key": v2}}, "box", second, create=False)
    assert status()["lastRefreshTime"] == first["lastRefreshTime"], "no status after a refused Secret write"

    patch = {"data": {"key": v2}}
    error = await api.write_secret_and_status(namespace, "box", patch, "no-such-token", second, create=False)
    assert isinstance(error, NotFound)
    assert key() == v2

    patch = {"data": {"key": v3}}
    assert await api.write_secret_and_status(namespace, "box", patch, "box", second, create=False) is None
    assert (key(), status()["lastRefreshTime"]) == (v3, second["lastRefreshTime"])

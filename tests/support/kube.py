"""A real Kubernetes API double (kmock) on a loopback port, and a small HTTP client for tests.

The operator under test talks to it over HTTP exactly as it would to an API server;
tests read and write objects through :class:`ApiClient` (plain requests, no mocks).
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import kubernetes
import requests

from emailtoken_dev.localapi import LocalKubernetesThread

CRD_RESOURCE = "emailtoken.io/v1alpha1/emailtokens"


class KmockThread(LocalKubernetesThread):
    """kmock's API served on 127.0.0.1 from a background thread (see :mod:`emailtoken_dev.localapi`)."""


_PATHS = {
    "emailtokens": "/apis/emailtoken.io/v1alpha1/namespaces/{ns}/emailtokens",
    "secrets": "/api/v1/namespaces/{ns}/secrets",
    "events": "/api/v1/namespaces/{ns}/events",
    "serviceaccounts": "/api/v1/namespaces/{ns}/serviceaccounts",
    "configmaps": "/api/v1/namespaces/{ns}/configmaps",
    "leases": "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
    "roles": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
    "rolebindings": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
}


def _path(kind: str, namespace: str, name: str | None = None) -> str:
    base = _PATHS[kind].format(ns=namespace)
    return f"{base}/{name}" if name else base


class ApiClient:
    """Just enough of the Kubernetes REST API for tests, over HTTP.

    Against kmock (the default) ``create`` fills in what kmock does not assign (uid,
    resourceVersion, generation); against a real API server (``kmock=False``, with an
    authenticated ``session``) the server assigns them and a stale write is a 409.
    """

    def __init__(self, url: str, session: requests.Session | None = None, *, kmock: bool = True) -> None:
        self.url = url
        self.kmock = kmock
        if session is None:
            session = requests.Session()
            session.trust_env = False
        self.http = session

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        r = self.http.get(self.url + _path(kind, namespace, name), timeout=10)
        if r.status_code == 404:
            return None
        r.raise_for_status()
        return r.json()

    def list(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        r = self.http.get(self.url + _path(kind, namespace), timeout=10)
        r.raise_for_status()
        return r.json().get("items") or []

    def bind_role(self, namespace: str, name: str, rules: list[dict[str, Any]], account: tuple[str, str]) -> None:
        """A Role ``name`` with exactly ``rules`` in ``namespace``, bound to the ServiceAccount
        ``account`` (namespace, name): what the chart grants a component in a watched namespace."""
        rbac_v1 = "rbac.authorization.k8s.io/v1"
        self.create(
            "roles", namespace, {"apiVersion": rbac_v1, "kind": "Role", "metadata": {"name": name}, "rules": rules}
        )
        binding = {
            "apiVersion": rbac_v1,
            "kind": "RoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "namespace": account[0], "name": account[1]}],
        }
        self.create("rolebindings", namespace, binding)

    def create(self, kind: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        body = json.loads(json.dumps(body))
        meta = body.setdefault("metadata", {})
        meta.setdefault("namespace", namespace)
        if self.kmock:
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("resourceVersion", "1")  # kmock assigns none; kopf's patches need one
            meta.setdefault("generation", 1)
        r = self.http.post(self.url + _path(kind, namespace), json=body, timeout=10)
        r.raise_for_status()
        return r.json()

    def patch(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        r = self.http.patch(
            self.url + _path(kind, namespace, name),
            data=json.dumps(patch),
            headers={"Content-Type": "application/merge-patch+json"},
            timeout=10,
        )
        r.raise_for_status()
        return r.json()

    def delete(self, kind: str, namespace: str, name: str) -> None:
        r = self.http.delete(self.url + _path(kind, namespace, name), timeout=10)
        if r.status_code != 404:
            r.raise_for_status()

    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        secret = self.get("secrets", namespace, name)
        if secret is None:
            return None
        out = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
        out.update(secret.get("stringData") or {})
        return out

    def create_secret(self, namespace: str, name: str, data: dict[str, str], **meta: Any) -> dict[str, Any]:
        return self.create(
            "secrets",
            namespace,
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, **meta},
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
            },
        )

    def events_for(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return [e for e in self.list("events", namespace) if (e.get("involvedObject") or {}).get("name") == name]

    def condition(self, namespace: str, name: str, type_: str) -> dict[str, Any] | None:
        obj = self.get("emailtokens", namespace, name) or {}
        for cond in (obj.get("status") or {}).get("conditions") or []:
            if cond.get("type") == type_:
                return cond
        return None


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1, what: str = "") -> Any:
    """Poll until ``predicate`` returns something truthy; fail with a description otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate!r}; last value: {last!r}")


def free_env() -> dict[str, str]:
    """The environment for child processes, minus variables that would redirect TLS trust."""
    env = dict(os.environ)
    env.pop("REQUESTS_CA_BUNDLE", None)
    return env


def client_config(port: int, scheme: str = "http") -> kubernetes.client.Configuration:
    """The official client's configuration for a local server (or none) on ``port``: no credentials."""
    configuration = kubernetes.client.Configuration()
    configuration.host = f"{scheme}://127.0.0.1:{port}"
    return configuration

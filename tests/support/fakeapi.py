"""An in-process API double that enforces resourceVersion preconditions.

kmock accepts stale resourceVersions, so compare-and-swap semantics are tested
against this double at the store layer (it implements :class:`emailtoken.kube.KubeApi`).
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

from emailtoken.kube import Conflict, KubeError, NotFound


class InMemoryApi:
    """Secrets, EmailToken status and Leases in dicts; every write bumps resourceVersion.

    A write that carries ``metadata.resourceVersion`` (or ``resource_version=``) lands only
    on that version, else :class:`Conflict`, as on a real API server.
    """

    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.tokens: dict[tuple[str, str], dict[str, Any]] = {}
        self.leases: dict[tuple[str, str], dict[str, Any]] = {}
        self._rv = itertools.count(100)
        self.writes: list[tuple[str, str, str]] = []
        self.reads: list[tuple[str, str, str]] = []
        self.fail_next: list[KubeError] = []

    def _maybe_fail(self) -> None:
        if self.fail_next:
            raise self.fail_next.pop(0)

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads.append(("get", "secret", name))
        secret = self.secrets.get((namespace, name))
        return copy.deepcopy(secret) if secret else None

    async def create_secret(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self._maybe_fail()
        name = body["metadata"]["name"]
        if (namespace, name) in self.secrets:
            raise Conflict(409, f"secrets {name!r} already exists")
        obj = copy.deepcopy(body)
        obj["metadata"]["resourceVersion"] = str(next(self._rv))
        self.secrets[(namespace, name)] = obj
        self.writes.append(("create", "secret", name))
        return copy.deepcopy(obj)

    async def patch_secret(
        self, namespace: str, name: str, patch: dict[str, Any], *, resource_version: str | None = None
    ) -> dict[str, Any]:
        self._maybe_fail()
        obj = self.secrets.get((namespace, name))
        if obj is None:
            raise NotFound(404, f"secrets {name!r} not found")
        if resource_version is not None and obj["metadata"]["resourceVersion"] != resource_version:
            raise Conflict(409, "the object has been modified")
        merged = _merge(obj, patch)
        merged["metadata"]["resourceVersion"] = str(next(self._rv))
        self.secrets[(namespace, name)] = merged
        self.writes.append(("patch", "secret", name))
        return copy.deepcopy(merged)

    async def delete_secret(self, namespace: str, name: str, *, resource_version: str | None = None) -> None:
        self._maybe_fail()
        obj = self.secrets.get((namespace, name))
        if obj is not None and resource_version is not None and obj["metadata"]["resourceVersion"] != resource_version:
            raise Conflict(409, "the object has been modified")
        if self.secrets.pop((namespace, name), None) is not None:
            self.writes.append(("delete", "secret", name))

    async def get_token(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.tokens.get((namespace, name)))

    async def patch_token_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self._maybe_fail()
        obj = self.tokens.setdefault((namespace, name), {"metadata": {"name": name, "namespace": namespace}})
        merged = _merge(obj, {"status": status})
        self.tokens[(namespace, name)] = merged
        self.writes.append(("patch", "status", name))

    async def write_secret_and_status(
        self, namespace: str, name: str, body: dict[str, Any], token: str, status: dict[str, Any], *, create: bool
    ) -> KubeError | None:
        """As the real client: the Secret first (its failure raises), then the status (its failure returned)."""
        if create:
            await self.create_secret(namespace, body)
        else:
            await self.patch_secret(namespace, name, body)
        try:
            await self.patch_token_status(namespace, token, status)
        except KubeError as exc:
            return exc
        return None

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads.append(("get", "lease", name))
        lease = self.leases.get((namespace, name))
        return copy.deepcopy(lease) if lease else None

    async def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self._maybe_fail()
        name = body["metadata"]["name"]
        if (namespace, name) in self.leases:
            raise Conflict(409, f"leases {name!r} already exists")
        obj = copy.deepcopy(body)
        obj["metadata"]["resourceVersion"] = str(next(self._rv))
        self.leases[(namespace, name)] = obj
        self.writes.append(("create", "lease", name))
        return copy.deepcopy(obj)

    async def patch_lease(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self._maybe_fail()
        obj = self.leases.get((namespace, name))
        if obj is None:
            raise NotFound(404, f"leases {name!r} not found")
        expected = (body.get("metadata") or {}).get("resourceVersion")
        if expected is not None and obj["metadata"]["resourceVersion"] != expected:
            raise Conflict(409, "the object has been modified")
        merged = _merge(obj, body)
        merged["metadata"]["resourceVersion"] = str(next(self._rv))
        self.leases[(namespace, name)] = merged
        self.writes.append(("patch", "lease", name))
        return copy.deepcopy(merged)


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out

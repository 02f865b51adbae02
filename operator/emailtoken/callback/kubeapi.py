"""The Kubernetes calls the callback service makes beyond the operator's (reading and listing tokens).

The callback's RBAC (``emailtoken.rbac``, component ``callback``) grants exactly:
EmailTokens get/list, Secrets get/create/patch. Reading one EmailToken lives here, not in
:class:`~emailtoken.kube.KubernetesApi`: the operator only watches them (kopf) and its
Role has no ``get`` on EmailTokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from emailtoken.api import GROUP, PLURAL, VERSION
from emailtoken.kube import KubernetesApi, NotFound


class CallbackApi(KubernetesApi):
    """:class:`~emailtoken.kube.KubernetesApi` plus reading and listing EmailTokens."""

    async def get_token(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The EmailToken, or None."""
        try:
            return await self._run(self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name)
        except NotFound:
            return None

    async def list_tokens(self, namespaces: Sequence[str] = ()) -> list[dict[str, Any]]:
        """EmailTokens of the given namespaces, or of all namespaces when none are given."""
        if not namespaces:
            answer = await self._run(self.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL)
            return list(answer.get("items") or [])
        items: list[dict[str, Any]] = []
        for namespace in namespaces:
            answer = await self._run(self.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL)
            items.extend(answer.get("items") or [])
        return items

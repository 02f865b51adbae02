"""The Kubernetes calls the callback service makes beyond the operator's (listing tokens).

The callback's RBAC (``emailtoken.rbac``, component ``callback``) grants exactly:
EmailTokens get/list, Secrets get/create/patch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from emailtoken import GROUP, PLURAL, VERSION
from emailtoken.kube import KubernetesApi


class CallbackApi(KubernetesApi):
    """:class:`~emailtoken.kube.KubernetesApi` plus listing EmailTokens."""

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

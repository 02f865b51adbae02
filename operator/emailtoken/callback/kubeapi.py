"""The Kubernetes calls the callback service makes beyond the operator's (reading and listing tokens).

The callback's RBAC (``emailtoken.rbac``, component ``callback``) grants exactly:
EmailTokens get/list, Secrets get/create/patch. Reading one EmailToken lives here, not in
:class:`~emailtoken.kube.KubernetesApi`: the operator only watches them (kopf) and its
Role has no ``get`` on EmailTokens. With ``--manage-tokens`` (Helm
``callback.manageTokens.enabled``) the ``tokenWriter`` rows add what the admin page's
form needs: server-side apply of EmailTokens and their credential Secrets, deleting
both, and posting Events.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import kubernetes

from emailtoken.api import GROUP, PLURAL, VERSION
from emailtoken.kube import KubernetesApi, NotFound

APPLY_PATCH = "application/apply-patch+yaml"


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

    async def apply_token(self, body: dict[str, Any], *, manager: str) -> dict[str, Any]:
        """Server-side apply of an EmailToken under ``manager`` (a conflict with another manager is a 409)."""
        meta = body["metadata"]
        return await self._run(
            self.custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            meta["namespace"],
            PLURAL,
            meta["name"],
            body,
            field_manager=manager,
            _content_type=APPLY_PATCH,
        )

    async def apply_secret(self, body: dict[str, Any], *, manager: str) -> dict[str, Any]:
        """Server-side apply of a Secret under ``manager``."""
        meta = body["metadata"]
        return await self._run(
            self.core.patch_namespaced_secret,
            meta["name"],
            meta["namespace"],
            body,
            field_manager=manager,
            _content_type=APPLY_PATCH,
        )

    async def delete_token(self, namespace: str, name: str, *, uid: str) -> None:
        """Delete that EmailToken (its uid as precondition: never a namesake created since); missing is fine."""
        options = kubernetes.client.V1DeleteOptions(preconditions=kubernetes.client.V1Preconditions(uid=uid))
        try:
            await self._run(
                self.custom.delete_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name, body=options
            )
        except NotFound:
            return

    async def create_event(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Post a core v1 Event."""
        return await self._run(self.core.create_namespaced_event, namespace, body)

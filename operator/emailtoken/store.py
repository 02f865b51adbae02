"""Secrets the operator owns, written with the guarantees the design promises.

* The grant Secret is written compare-and-swap (resourceVersion precondition): a
  stale writer loses with :class:`~emailtoken.kube.Conflict` instead of overwriting a
  newer refresh token.
* The consumer Secret is written with one call (patch, else create) so a refresh
  costs as few API writes as possible.
"""

from __future__ import annotations

import asyncio
from typing import Any

from emailtoken.credcache import CredentialSecrets
from emailtoken.kube import Conflict, KubeApi, KubeError, NotFound
from emailtoken.model import SecretKeyRef, TokenRef
from emailtoken.secretdata import LABEL_TOKEN, Grant, decode_data, grant_secret, read_grant

WRITE_RETRIES = 5


class SecretMissing(Exception):
    """A referenced Secret or key does not exist; the message names it (never its value)."""


async def read_secret_key(
    api: KubeApi, namespace: str, ref: SecretKeyRef, cache: CredentialSecrets | None = None
) -> str:
    """The value of one key of a Secret in the token's namespace (from ``cache`` when it has it)."""
    secret = cache.get(namespace, ref.name) if cache is not None else None
    if secret is None:
        secret = await api.get_secret(namespace, ref.name)
        if secret is not None and cache is not None:
            cache.fill(namespace, ref.name, secret)
    if secret is None:
        raise SecretMissing(f"Secret {namespace}/{ref.name} does not exist")
    value = decode_data(secret).get(ref.key)
    if not value:
        raise SecretMissing(f"Secret {namespace}/{ref.name} has no key {ref.key!r}")
    return value.strip()


class GrantStore:
    """Load and save the operator-only grant Secret."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api

    async def load(self, token: TokenRef) -> Grant | None:
        """The current grant (with its resourceVersion), or None."""
        return read_grant(await self.api.get_secret(token.namespace, token.grant_secret_name))

    async def save(self, token: TokenRef, grant: Grant, *, expected_version: str | None) -> Grant:
        """Write the grant only if nobody changed it since ``expected_version``.

        ``expected_version=None`` means "there was no grant": create, and a Conflict if
        one appeared meanwhile. Transient API errors are retried here, so a rotated
        refresh token is never lost for want of a second attempt at the write.
        """
        body = grant_secret(token, grant)
        for attempt in range(WRITE_RETRIES):
            try:
                if expected_version is None:
                    written = await self.api.create_secret(token.namespace, body)
                else:
                    written = await self.api.patch_secret(
                        token.namespace, token.grant_secret_name, _patch_of(body), resource_version=expected_version
                    )
                saved = read_grant(written) if written else None
                version = saved.resource_version if saved else None
                return Grant(**{**grant.__dict__, "resource_version": version})
            except (Conflict, NotFound):
                raise
            except KubeError:
                if attempt == WRITE_RETRIES - 1:
                    raise
                await asyncio.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")

    async def drop(self, token: TokenRef) -> None:
        """Forget the grant (re-authorization starts from scratch)."""
        await self.api.delete_secret(token.namespace, token.grant_secret_name)


def _patch_of(body: dict[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    return {
        "metadata": {"labels": meta["labels"], "ownerReferences": meta["ownerReferences"]},
        "type": body["type"],
        "data": body["data"],
    }


def check_owner(secret: dict[str, Any] | None, namespace: str, name: str, token_name: str) -> None:
    """A consumer Secret that exists must carry this token's label: never take over someone else's."""
    if secret is None:
        return
    labels = (secret.get("metadata") or {}).get("labels") or {}
    if labels.get(LABEL_TOKEN) != token_name:
        raise SecretMissing(
            f"Secret {namespace}/{name} exists and is not managed by this EmailToken; "
            "delete it or choose another spec.secretName"
        )


async def publish(api: KubeApi, namespace: str, body: dict[str, Any], *, exists: bool = True) -> None:
    """Write the consumer Secret: patch in place (mounts update), create when missing.

    ``exists=False`` (the step knows there is none) creates first: a new token costs one
    write instead of a refused patch and a create. If the create finds a Secret after all
    (made since the step looked), it is patched only when it carries this token's label;
    anyone else's raises :class:`SecretMissing`.
    """
    meta = body["metadata"]
    patch = {
        "metadata": {
            "labels": meta["labels"],
            "annotations": meta["annotations"],
            "ownerReferences": meta["ownerReferences"],
        },
        "data": body["data"],
    }

    async def owned() -> None:
        check_owner(await api.get_secret(namespace, meta["name"]), namespace, meta["name"], meta["labels"][LABEL_TOKEN])

    if not exists:
        try:
            await api.create_secret(namespace, body)
            return
        except Conflict:
            await owned()
    try:
        await api.patch_secret(namespace, meta["name"], patch)
    except NotFound:
        try:
            await api.create_secret(namespace, body)
        except Conflict:
            await owned()
            await api.patch_secret(namespace, meta["name"], patch)

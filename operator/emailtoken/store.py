"""Secrets the operator owns, written with the guarantees the design promises.

* The grant Secret is written compare-and-swap (resourceVersion precondition): a
  stale writer loses with :class:`~emailtoken.kube.Conflict` instead of overwriting a
  newer refresh token. A conflict is not a verdict by itself: anything that touches the
  Secret (``kubectl label``, a policy engine's annotation) moves its resourceVersion, so
  :meth:`GrantStore.save_successor` reads it again and only a different refresh token
  (a new sign-in) or no grant at all (a reauthorization) beats the one just rotated.
* The consumer Secret is written with one call (patch, else create) so a refresh
  costs as few API writes as possible.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from emailtoken import grants
from emailtoken.credcache import CredentialSecrets
from emailtoken.kube import Conflict, KubeApi, KubeError, NotFound
from emailtoken.model import SecretKeyRef, TokenRef
from emailtoken.secretdata import (
    LABEL_MANAGED_BY,
    LABEL_TOKEN,
    MANAGED_BY,
    Grant,
    decode_data,
    grant_secret,
    read_grant,
)

log = logging.getLogger(__name__)
WRITE_RETRIES = 5
#: Writes of a rotated refresh token that may meet a changed-but-same grant before giving up for now.
#: Each round is a GET and a PATCH at the version it read: against a grant Secret relabelled ~100
#: times a second (tests/cluster/test_grant_safety.py's churn) 5 rounds ran out in 2 of 7 loaded
#: test runs, and the successor then waited for the next attempt behind a Warning Event.
CONFLICT_RETRIES = 10


def retryable(exc: KubeError) -> bool:
    """May the same call succeed if simply made again (an outage, throttling, a busy server)?

    A refusal (401/403: RBAC), an invalid object (4xx) would only be refused again.
    """
    return exc.status == 0 or exc.status == 429 or exc.status >= 500


class SecretMissing(Exception):
    """A referenced Secret or key does not exist; the message names it (never its value)."""


class NotOurGrant(SecretMissing):
    """A Secret has the grant's name but is not this token's grant (type and label): never read, replaced or deleted."""


class GrantReplaced(Exception):
    """The grant Secret no longer holds the grant a write was meant to follow: it now holds
    another refresh token (a new sign-in won) or none (dropped for reauthorization)."""


async def read_secret_key(
    api: KubeApi, namespace: str, ref: SecretKeyRef, cache: CredentialSecrets | None = None
) -> str:
    """The value of one key of a Secret in the token's namespace (from ``cache`` when it has it)."""
    secret = cache.get(namespace, ref.name) if cache is not None else None
    if secret is None:
        secret = await api.get_secret(namespace, ref.name)
        if secret is None:
            raise SecretMissing(f"Secret {namespace}/{ref.name} does not exist")
        _check_credential_secret(namespace, ref.name, secret)
        if cache is not None:
            cache.fill(namespace, ref.name, secret)
    value = decode_data(secret).get(ref.key)
    if not value:
        raise SecretMissing(f"Secret {namespace}/{ref.name} has no key {ref.key!r}")
    return value.strip()


def _check_credential_secret(namespace: str, name: str, secret: dict[str, Any]) -> None:
    """Only a plain (Opaque) Secret a person made may serve as client credentials.

    A token's author names ``clientSecretRef`` but may not read Secrets: pointing it at a
    ServiceAccount token, a registry credential, a TLS key, a Helm release or the
    operator's own grant and consumer Secrets would send that value to the token endpoint.
    A Secret's type cannot change after creation, so the check holds for its lifetime.
    """
    kind = str(secret.get("type") or "Opaque")
    labels = (secret.get("metadata") or {}).get("labels") or {}
    if kind != "Opaque" or labels.get(LABEL_MANAGED_BY) == MANAGED_BY:
        what = "the operator's own" if labels.get(LABEL_MANAGED_BY) == MANAGED_BY else f"of type {kind}"
        raise SecretMissing(
            f"Secret {namespace}/{name} is {what}: only an Opaque Secret made for it can hold client credentials"
        )


class GrantStore:
    """Load and save the operator-only grant Secret."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api

    async def load(self, token: TokenRef) -> Grant | None:
        """The current grant (with its resourceVersion), or None; :class:`NotOurGrant` for a squatter."""
        return read_grant(self._own(token, await self.api.get_secret(token.namespace, token.grant_secret_name)))

    @staticmethod
    def _own(token: TokenRef, secret: dict[str, Any] | None) -> dict[str, Any] | None:
        if secret is not None and not grants.is_grant_of(secret, token.name):
            raise NotOurGrant(
                f"Secret {token.namespace}/{token.grant_secret_name} exists but is not this token's grant "
                "(wrong type or label); the operator will not read, replace or delete it: rename or delete it"
            )
        return secret

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
            except KubeError as exc:
                if attempt == WRITE_RETRIES - 1 or not retryable(exc):
                    raise
                await asyncio.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")

    async def save_successor(self, token: TokenRef, spent: Grant, successor: Grant) -> Grant:
        """Replace ``spent`` (as read before its refresh token was presented) by ``successor``.

        The provider has already rotated ``spent``'s refresh token, so losing ``successor``
        loses the grant. On a conflict the Secret is read again: still the spent token (only
        labels, annotations or an identical rewrite moved the resourceVersion), so the
        successor is written at the new version; the successor itself, so an earlier attempt
        of ours landed and only its answer was lost; anything else raises
        :class:`GrantReplaced`. :class:`Conflict` after :data:`CONFLICT_RETRIES` busy rounds
        means "not now" (keep the successor, try again later), never "drop it".
        """
        expected = spent.resource_version
        for _ in range(CONFLICT_RETRIES):
            try:
                return await self.save(token, successor, expected_version=expected)
            except NotFound:
                raise GrantReplaced("the grant Secret was deleted") from None
            except Conflict:
                pass
            current = await self.load(token)
            if current is None:
                raise GrantReplaced("the grant Secret holds no grant any more")
            if current.refresh_token == successor.refresh_token:
                return current
            if current.refresh_token != spent.refresh_token:
                raise GrantReplaced("the grant Secret holds another refresh token")
            log.info(
                "%s: the grant Secret changed during the refresh but still holds the refresh token it spent "
                "(labels or annotations); writing the rotated one at the new resourceVersion",
                token,
            )
            expected = current.resource_version
        raise Conflict(409, "the grant Secret kept changing while the rotated refresh token was written")

    async def save_new(self, token: TokenRef, grant: Grant) -> Grant:
        """Store a grant from a sign-in the operator completed itself (device code).

        Created when there is no grant Secret. One that exists but holds no grant (emptied
        for reauthorization) is written over at its resourceVersion; one that holds a
        refresh token is someone else's newer sign-in and wins (:class:`GrantReplaced`).
        """
        for _ in range(CONFLICT_RETRIES):
            current_secret = self._own(token, await self.api.get_secret(token.namespace, token.grant_secret_name))
            if current_secret is not None and read_grant(current_secret) is not None:
                current = read_grant(current_secret)
                if current is not None and current.refresh_token == grant.refresh_token:
                    return current  # an earlier attempt of ours landed
                raise GrantReplaced("another sign-in stored a grant meanwhile")
            version = None if current_secret is None else (current_secret.get("metadata") or {}).get("resourceVersion")
            try:
                return await self.save(token, grant, expected_version=version)
            except (Conflict, NotFound):
                continue  # created, changed or deleted since the read: look again
        raise Conflict(409, "the grant Secret kept changing while the new grant was written")

    async def drop(self, token: TokenRef) -> None:
        """Forget the grant (re-authorization starts from scratch): this token's grant only, as read."""
        secret = self._own(token, await self.api.get_secret(token.namespace, token.grant_secret_name))
        if secret is None:
            return
        version = (secret.get("metadata") or {}).get("resourceVersion") or None
        try:
            await self.api.delete_secret(token.namespace, token.grant_secret_name, resource_version=version)
        except Conflict:
            # Written since we read it: a sign-in that completed after the annotation was set wins.
            log.info("%s: the grant changed since the reauthorization was asked for; keeping the newer one", token)


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
    name, patch = body["metadata"]["name"], _consumer_patch(body)
    if not exists:
        try:
            await api.create_secret(namespace, body)
            return
        except Conflict:
            await _owned(api, namespace, body)
    try:
        await api.patch_secret(namespace, name, patch)
    except NotFound:
        try:
            await api.create_secret(namespace, body)
        except Conflict:
            await _owned(api, namespace, body)
            await api.patch_secret(namespace, name, patch)


async def _owned(api: KubeApi, namespace: str, body: dict[str, Any]) -> None:
    """A consumer Secret appeared under the name since the step looked: raise unless it is this token's."""
    meta = body["metadata"]
    check_owner(await api.get_secret(namespace, meta["name"]), namespace, meta["name"], meta["labels"][LABEL_TOKEN])


async def publish_with_status(
    api: KubeApi, namespace: str, body: dict[str, Any], token: str, status: dict[str, Any], *, exists: bool = True
) -> KubeError | None:
    """:func:`publish`, then write ``status`` to EmailToken ``token`` once the Secret landed, both in
    one thread hand-off (:meth:`KubeApi.write_secret_and_status`) when the first write lands.

    The Secret's failure raises as in :func:`publish` (no status written then); the status
    write's failure is returned. What :func:`publish` does next when its first write meets
    another state (a Secret deleted since the step looked, or one that appeared) it does here
    too, and writes the status after it.
    """
    if not status:
        await publish(api, namespace, body, exists=exists)
        return None
    name = body["metadata"]["name"]
    try:
        if not exists:
            return await api.write_secret_and_status(namespace, name, body, token, status, create=True)
        return await api.write_secret_and_status(namespace, name, _consumer_patch(body), token, status, create=False)
    except NotFound:  # the patch found none: deleted since the step looked
        if not exists:
            raise
        await publish(api, namespace, body, exists=False)
    except Conflict:  # the create met one made since the step looked: only this token's is written
        if exists:
            raise
        await _owned(api, namespace, body)
        await publish(api, namespace, body)
    try:
        await api.patch_token_status(namespace, token, status)
    except KubeError as exc:
        return exc
    return None


def _consumer_patch(body: dict[str, Any]) -> dict[str, Any]:
    """The merge patch that makes an existing consumer Secret hold ``body`` (its labels, annotations,
    owner and data; nothing else of what others added to it is touched)."""
    meta = body["metadata"]
    return {
        "metadata": {
            "labels": meta["labels"],
            "annotations": meta["annotations"],
            "ownerReferences": meta["ownerReferences"],
        },
        "data": body["data"],
    }

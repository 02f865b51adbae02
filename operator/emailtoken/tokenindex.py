"""Secret events → which tokens to wake: the rules in one place.

The informer (:mod:`emailtoken.informer`) reports Secrets in batches: the metadata of every
Secret in scope, and the operator's own consumer Secrets with their data. This module answers
what each event means for the EmailTokens:

- :class:`TokenIndex` knows which tokens read which Secret (client secret or key, grant,
  consumer Secret), so an event finds its tokens without a scan over every token;
- :func:`secret_events` drops a changed credential kept from a GET, tells the engine a
  consumer Secret was deleted, and wakes the tokens that read the Secret, except for the
  echo of a healthy token's own consumer-Secret write (:func:`own_write`);
- :func:`own_secret_events` hands the engine what each consumer Secret holds, for a token not
  stepped yet (a restart reads them here instead of one GET per token).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from emailtoken.api import LABEL_MANAGED_BY, LABEL_TOKEN, MANAGED_BY, Key

if TYPE_CHECKING:
    from emailtoken.engine import Engine
    from emailtoken.informer import Event
    from emailtoken.model import EmailTokenSpec
    from emailtoken.secretdata import PublishedToken


class Waker(Protocol):
    """Runs a token's step soon (the scheduler)."""

    def wake(self, key: Key) -> None: ...


class TokenIndex:
    """(namespace, Secret name) → the tokens whose step reads that Secret."""

    def __init__(self) -> None:
        self._readers: dict[Key, set[Key]] = {}

    def track(self, key: Key, old: frozenset[str], new: frozenset[str]) -> None:
        """Token ``key`` read the Secrets ``old`` (names in its namespace) and now reads ``new``."""
        namespace = key[0]
        for name in old - new:
            readers = self._readers.get((namespace, name))
            if readers is not None:
                readers.discard(key)
                if not readers:
                    del self._readers[(namespace, name)]
        for name in new - old:
            self._readers.setdefault((namespace, name), set()).add(key)

    def referencing(self, namespace: str, secret_name: str) -> list[Key]:
        """Tokens whose step reads this Secret (client secret, key, grant, consumer)."""
        return sorted(self._readers.get((namespace, secret_name), ()))


def _identity(secret: Mapping[str, Any]) -> tuple[Mapping[str, Any], str, str]:
    metadata = secret.get("metadata") or {}
    return metadata, metadata.get("namespace") or "", metadata.get("name") or ""


def secret_events(engine: Engine, waker: Waker, events: list[Event]) -> None:
    """Secrets changed (the informer's batch of metadata): drop stale credentials, let waiting tokens retry now.

    A Secret a token reads (client secret, key, grant, its consumer Secret) changing wakes a
    failing token at once instead of at its next backoff; a credential Secret's value kept
    from a GET is dropped, so the step reads the new one.
    """
    for kind, secret in events:
        metadata, namespace, name = _identity(secret)
        deleted = kind == "DELETED"
        engine.consumer_version(namespace, name, metadata, deleted=deleted)
        if deleted:
            engine.credential_secrets.removed(namespace, name)
        else:
            engine.credential_secrets.observed(namespace, name, secret, kind=kind)
        for key in engine.index.referencing(namespace, name):
            if deleted:
                engine.secret_deleted(key, name)
            elif own_write(engine, key, name, metadata):
                continue
            engine.nudge(key)
            waker.wake(key)


def own_secret_events(engine: Engine, events: list[Event]) -> None:
    """The operator's own Secrets with their data: what each consumer Secret holds, for a token
    not stepped yet (a restart reads them here instead of one GET per token)."""
    for kind, secret in events:
        metadata, namespace, name = _identity(secret)
        if (metadata.get("labels") or {}).get(LABEL_MANAGED_BY) != MANAGED_BY:
            continue  # a server that ignored the label selector (kmock)
        engine.consumer_observed(namespace, name, secret, deleted=kind == "DELETED")


def own_write(engine: Engine, key: Key, name: str, metadata: Mapping[str, Any]) -> bool:
    """The echo of a healthy token's own consumer-Secret write: stepping again would do nothing.

    Every refresh comes back as one such event; waking the token for it cost a second step
    per refresh, and that step could carry the body from before this step's status write
    and so write the same status again.
    """
    st = engine.states.get(key)
    return (
        st is not None
        and st.loaded
        and st.error is None
        and name == st.consumer
        and (metadata.get("labels") or {}).get(LABEL_TOKEN) == key[1]
    )


def keeps_watched_copy(deleted: bool, loaded: bool) -> bool:
    """Is a consumer Secret the list delivered worth remembering for its token's first step? Not
    once it is deleted, nor once the token has read its Secret itself."""
    return not deleted and not loaded


def watched_copy(seen: tuple[str, PublishedToken | None, str] | None, secret_name: str) -> PublishedToken | None:
    """What a remembered consumer Secret holds, if it is the Secret the spec names and holds a
    token's data (else the step looks it up)."""
    if seen is None or seen[0] != secret_name:
        return None
    return seen[1]


def secrets_read(spec: EmailTokenSpec, grant_secret_name: str) -> tuple[frozenset[str], frozenset[str]]:
    """The Secrets a token's step reads, whose events wake it (credentials, grant, consumer Secret),
    and of those the credentials, which are kept from a GET until their watch reports a change."""
    credentials = frozenset(r.name for r in (spec.client_secret_ref, spec.service_account_key_ref) if r is not None)
    return credentials | {grant_secret_name, spec.secret_name}, credentials

"""The Secrets tokens read their client credentials from: read once, kept until the watch says they changed.

Reading a client secret with a GET before every refresh would be one API read per refresh.
Like a controller-runtime informer cache, this keeps the value, but only for Secrets some
token names as a credential, and only while one does. The Secret watch carries metadata
only (the operator follows every Secret of its namespaces, most of them none of its
business: issues #15 and #20), so the value comes from one GET when a step needs it, and
the watch's next word about that Secret (a new resourceVersion, a deletion) drops it: the
next step reads it again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from emailtoken.api import Key


class CredentialSecrets:
    """Secret data by (namespace, name), kept only for Secrets a token reads credentials from."""

    def __init__(self) -> None:
        self._users: dict[Key, set[Key]] = {}
        #: (resourceVersion, {"data": ...}) as a GET answered
        self._data: dict[Key, tuple[str, dict[str, Any]]] = {}
        #: the resourceVersion the watch last reported for a tracked Secret ("" once deleted)
        self._seen: dict[Key, str] = {}

    def __len__(self) -> int:
        return len(self._data)

    def track(self, token: Key, old: frozenset[str], new: frozenset[str]) -> None:
        """``token`` now reads credentials from the Secrets named ``new`` (in its namespace)."""
        namespace = token[0]
        for name in old - new:
            users = self._users.get((namespace, name))
            if users is not None:
                users.discard(token)
                if not users:
                    del self._users[(namespace, name)]
                    self._data.pop((namespace, name), None)
                    self._seen.pop((namespace, name), None)
        for name in new - old:
            self._users.setdefault((namespace, name), set()).add(token)

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Secret as last read (``{"data": ...}``), or None when it must be read."""
        kept = self._data.get((namespace, name))
        return kept[1] if kept is not None else None

    def fill(self, namespace: str, name: str, secret: Mapping[str, Any]) -> None:
        """A GET's answer: kept unless the watch has reported another version since (then it may be stale)."""
        key = (namespace, name)
        if key not in self._users or key in self._data:
            return
        version = _version(secret)
        seen = self._seen.get(key)
        if seen is not None and seen != version:
            return
        self._data[key] = (version, {"data": dict(secret.get("data") or {})})

    def observed(self, namespace: str, name: str, secret: Mapping[str, Any], *, kind: str = "MODIFIED") -> None:
        """The watch's word on a Secret (metadata is enough): a change drops the value kept.

        A list's ADDED with the version already kept changes nothing. A MODIFIED always drops
        it: a server that assigns no new resourceVersion (kmock) must not keep an old secret.
        """
        key = (namespace, name)
        if key not in self._users:
            return
        version = _version(secret)
        self._seen[key] = version
        kept = self._data.get(key)
        if kept is not None and not (kind == "ADDED" and version and kept[0] == version):
            del self._data[key]

    def removed(self, namespace: str, name: str) -> None:
        """The Secret was deleted: the next read asks the API (and finds it missing)."""
        key = (namespace, name)
        self._data.pop(key, None)
        if key in self._users:
            self._seen[key] = ""


def _version(secret: Mapping[str, Any]) -> str:
    return str((secret.get("metadata") or {}).get("resourceVersion") or "")

"""The Secrets tokens read their client credentials from, as the Secret watch last saw them.

The operator watches Secrets anyway (to retry a failing token the moment its Secret is
fixed), so reading the same Secret with a GET before every refresh is a second copy of what
the watch already delivered: one API read per refresh. Like a controller-runtime informer
cache, this keeps the watched value, but only for Secrets some token names as a
credential, and only while one does. A value not seen yet is read once with a GET.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Key = tuple[str, str]


class CredentialSecrets:
    """Secret data by (namespace, name), kept only for Secrets a token reads credentials from."""

    def __init__(self) -> None:
        self._users: dict[Key, set[Key]] = {}
        self._data: dict[Key, dict[str, Any]] = {}

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
        for name in new - old:
            self._users.setdefault((namespace, name), set()).add(token)

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Secret as last seen (``{"data": ...}``), or None when not known yet."""
        return self._data.get((namespace, name))

    def fill(self, namespace: str, name: str, secret: Mapping[str, Any]) -> None:
        """A GET's answer: kept unless the watch has already said something newer."""
        if (namespace, name) in self._users and (namespace, name) not in self._data:
            self._data[(namespace, name)] = _slim(secret)

    def observed(self, namespace: str, name: str, secret: Mapping[str, Any]) -> None:
        """The watch's latest version of a Secret (ignored unless a token reads it)."""
        if (namespace, name) in self._users:
            self._data[(namespace, name)] = _slim(secret)

    def removed(self, namespace: str, name: str) -> None:
        """The Secret was deleted: the next read asks the API (and finds it missing)."""
        self._data.pop((namespace, name), None)


def _slim(secret: Mapping[str, Any]) -> dict[str, Any]:
    return {"data": dict(secret.get("data") or {})}

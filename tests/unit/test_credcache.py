"""emailtoken.credcache: the watch's copy of credential Secrets, and only those."""

from __future__ import annotations

from emailtoken.credcache import CredentialSecrets

TOKEN = ("mail", "inbox")
OTHER = ("mail", "outbox")


def secret(value: str) -> dict:
    return {"metadata": {"name": "app", "resourceVersion": "7"}, "data": {"client_secret": value}}


def test_a_get_fills_but_never_overwrites_what_the_watch_said() -> None:
    """A GET answered before a rotation must not replace the rotated value the watch delivered."""
    cache = CredentialSecrets()
    cache.track(TOKEN, frozenset(), frozenset({"app"}))
    cache.observed("mail", "app", secret("new"))
    cache.fill("mail", "app", secret("old"))
    assert cache.get("mail", "app") == {"data": {"client_secret": "new"}}


def test_untracked_secrets_are_not_kept() -> None:
    cache = CredentialSecrets()
    cache.observed("mail", "app", secret("x"))
    cache.fill("mail", "app", secret("x"))
    assert cache.get("mail", "app") is None and len(cache) == 0


def test_dropped_with_its_last_reader_and_on_delete() -> None:
    cache = CredentialSecrets()
    cache.track(TOKEN, frozenset(), frozenset({"app"}))
    cache.track(OTHER, frozenset(), frozenset({"app"}))
    cache.fill("mail", "app", secret("x"))
    cache.track(TOKEN, frozenset({"app"}), frozenset())
    assert cache.get("mail", "app") is not None  # outbox still reads it
    cache.removed("mail", "app")
    assert cache.get("mail", "app") is None
    cache.fill("mail", "app", secret("y"))
    cache.track(OTHER, frozenset({"app"}), frozenset({"other"}))
    assert cache.get("mail", "app") is None and len(cache) == 0

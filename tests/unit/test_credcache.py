"""emailtoken.credcache: credential Secrets read once, dropped when the watch reports a change, and only those."""

from __future__ import annotations

from emailtoken.credcache import CredentialSecrets

TOKEN = ("mail", "inbox")
OTHER = ("mail", "outbox")


def secret(value: str, version: str = "7") -> dict:
    return {"metadata": {"name": "app", "resourceVersion": version}, "data": {"client_secret": value}}


def meta(version: str) -> dict:
    """What the metadata watch delivers: no data."""
    return {"metadata": {"name": "app", "resourceVersion": version}}


def tracked() -> CredentialSecrets:
    cache = CredentialSecrets()
    cache.track(TOKEN, frozenset(), frozenset({"app"}))
    return cache


def test_a_get_is_kept_until_the_watch_reports_a_new_version() -> None:
    cache = tracked()
    cache.fill("mail", "app", secret("x", "7"))
    cache.observed("mail", "app", meta("7"), kind="ADDED")  # a (re)list announcing what was read
    assert cache.get("mail", "app") == {"data": {"client_secret": "x"}}
    cache.observed("mail", "app", meta("8"), kind="ADDED")  # a relist after a change missed by the watch
    assert cache.get("mail", "app") is None


def test_a_change_always_drops_the_value_even_without_a_new_version() -> None:
    """kmock assigns no resourceVersion: a MODIFIED carrying the same one still means new data."""
    cache = tracked()
    cache.fill("mail", "app", secret("x", "1"))
    cache.observed("mail", "app", meta("1"), kind="MODIFIED")
    assert cache.get("mail", "app") is None
    cache.fill("mail", "app", secret("y", "1"))
    assert cache.get("mail", "app") == {"data": {"client_secret": "y"}}


def test_a_get_older_than_what_the_watch_reported_is_not_kept() -> None:
    """A GET answered before a rotation, arriving after the watch's word on it, would keep the old secret."""
    cache = tracked()
    cache.observed("mail", "app", meta("8"))
    cache.fill("mail", "app", secret("old", "7"))
    assert cache.get("mail", "app") is None
    cache.fill("mail", "app", secret("new", "8"))
    assert cache.get("mail", "app") == {"data": {"client_secret": "new"}}


def test_a_get_answered_before_a_delete_is_not_kept() -> None:
    cache = tracked()
    cache.removed("mail", "app")
    cache.fill("mail", "app", secret("gone", "7"))
    assert cache.get("mail", "app") is None


def test_untracked_secrets_are_not_kept() -> None:
    cache = CredentialSecrets()
    cache.observed("mail", "app", meta("7"))
    cache.fill("mail", "app", secret("x"))
    assert cache.get("mail", "app") is None and len(cache) == 0


def test_dropped_with_its_last_reader_and_on_delete() -> None:
    cache = tracked()
    cache.track(OTHER, frozenset(), frozenset({"app"}))
    cache.fill("mail", "app", secret("x"))
    cache.track(TOKEN, frozenset({"app"}), frozenset())
    assert cache.get("mail", "app") is not None  # outbox still reads it
    cache.removed("mail", "app")
    assert cache.get("mail", "app") is None
    cache.fill("mail", "app", secret("y"))
    cache.track(OTHER, frozenset({"app"}), frozenset({"other"}))
    assert cache.get("mail", "app") is None and len(cache) == 0

"""emailtoken.store: the grant is written compare-and-swap; the consumer Secret with one call."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import pytest

from emailtoken.kube import Conflict, KubeError, NotFound
from emailtoken.model import SecretKeyRef, TokenRef
from emailtoken.secretdata import Grant, consumer_secret, decode_data, grant_secret
from emailtoken.store import (
    CONFLICT_RETRIES,
    WRITE_RETRIES,
    GrantReplaced,
    GrantStore,
    SecretMissing,
    publish,
    publish_with_status,
    read_secret_key,
    retryable,
)
from emailtoken.timefmt import parse_rfc3339
from tests.support.fakeapi import InMemoryApi

TOKEN = TokenRef("mail", "box", "uid-1")
GRANT_NAME = "emailtoken-grant-box"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def stored_refresh_token(api: InMemoryApi) -> str:
    return decode_data(api.secrets[("mail", GRANT_NAME)])["refresh_token"]


async def test_save_creates_when_there_was_no_grant() -> None:
    """expected_version=None creates the Secret and returns the grant with its new version."""
    api = InMemoryApi()
    saved = await GrantStore(api).save(TOKEN, Grant("rt-1", "box@x"), expected_version=None)
    assert api.writes == [("create", "secret", GRANT_NAME)]
    assert stored_refresh_token(api) == "rt-1"
    assert saved.resource_version == api.secrets[("mail", GRANT_NAME)]["metadata"]["resourceVersion"]
    loaded = await GrantStore(api).load(TOKEN)
    assert loaded == Grant("rt-1", "box@x")
    assert loaded is not None and loaded.resource_version == saved.resource_version


async def test_save_create_conflicts_when_a_grant_appeared_meanwhile() -> None:
    """A sign-in that landed first wins; ours is not written over it."""
    api = InMemoryApi()
    store = GrantStore(api)
    await store.save(TOKEN, Grant("theirs", "a"), expected_version=None)
    with pytest.raises(Conflict):
        await store.save(TOKEN, Grant("ours", "a"), expected_version=None)
    assert stored_refresh_token(api) == "theirs"


async def test_save_patches_on_the_expected_version() -> None:
    """A rotation is written over the version it was read at."""
    api = InMemoryApi()
    store = GrantStore(api)
    first = await store.save(TOKEN, Grant("rt-1", "a"), expected_version=None)
    second = await store.save(TOKEN, Grant("rt-2", "a"), expected_version=first.resource_version)
    assert stored_refresh_token(api) == "rt-2"
    assert second.resource_version != first.resource_version
    assert api.writes[-1] == ("patch", "secret", GRANT_NAME)
    assert api.secrets[("mail", GRANT_NAME)]["type"] == "emailtoken.io/grant"
    assert api.secrets[("mail", GRANT_NAME)]["metadata"]["labels"]["emailtoken.io/grant-for"] == "box"


async def test_save_conflicts_on_a_stale_version() -> None:
    """Two replicas never both land a rotated refresh token: the stale writer loses."""
    api = InMemoryApi()
    store = GrantStore(api)
    first = await store.save(TOKEN, Grant("rt-1", "a"), expected_version=None)
    await store.save(TOKEN, Grant("rt-2", "a"), expected_version=first.resource_version)
    writes = len(api.writes)
    with pytest.raises(Conflict):
        await store.save(TOKEN, Grant("rt-stale", "a"), expected_version=first.resource_version)
    assert stored_refresh_token(api) == "rt-2"
    assert len(api.writes) == writes


async def test_save_not_found_when_the_grant_was_deleted() -> None:
    """A patch on a deleted grant is not retried: it can never succeed."""
    api = InMemoryApi()
    with pytest.raises(NotFound):
        await GrantStore(api).save(TOKEN, Grant("rt", "a"), expected_version="123")
    assert api.fail_next == []


@pytest.mark.looptime
async def test_save_retries_transient_errors_then_succeeds(looptime: float) -> None:
    """A rotated refresh token is not lost for want of a second attempt."""
    api = InMemoryApi()
    store = GrantStore(api)
    first = await store.save(TOKEN, Grant("rt-1", "a"), expected_version=None)
    api.fail_next = [KubeError(500, "etcd"), KubeError(503, "busy")]
    saved = await store.save(TOKEN, Grant("rt-2", "a"), expected_version=first.resource_version)
    assert stored_refresh_token(api) == "rt-2"
    assert saved.resource_version == api.secrets[("mail", GRANT_NAME)]["metadata"]["resourceVersion"]
    assert api.fail_next == []
    assert looptime == pytest.approx(0.2 + 0.4)  # backed off between attempts


@pytest.mark.looptime
async def test_save_gives_up_after_retries() -> None:
    """A persistent API failure surfaces (the engine keeps the grant in memory)."""
    api = InMemoryApi()
    api.fail_next = [KubeError(500, "down") for _ in range(WRITE_RETRIES + 1)]
    with pytest.raises(KubeError) as info:
        await GrantStore(api).save(TOKEN, Grant("rt", "a"), expected_version=None)
    assert info.value.status == 500
    assert len(api.fail_next) == 1  # exactly WRITE_RETRIES attempts
    assert ("mail", GRANT_NAME) not in api.secrets


async def test_drop_deletes_and_tolerates_absence() -> None:
    """Dropping twice is fine."""
    api = InMemoryApi()
    store = GrantStore(api)
    await store.save(TOKEN, Grant("rt", "a"), expected_version=None)
    await store.drop(TOKEN)
    await store.drop(TOKEN)
    assert await store.load(TOKEN) is None


async def test_load_emptied_grant_is_none() -> None:
    """An admin may empty the refresh token instead of deleting the Secret."""
    api = InMemoryApi()
    body = grant_secret(TOKEN, Grant("rt", "a"))
    body["data"]["refresh_token"] = ""
    await api.create_secret("mail", body)
    assert await GrantStore(api).load(TOKEN) is None


def consumer(token: str, **kw: object) -> dict:
    args: dict = {
        "access_token": token,
        "token_type": "Bearer",
        "expires_at": datetime(2026, 1, 1, 1, tzinfo=UTC),
        "obtained_at": datetime(2026, 1, 1, tzinfo=UTC),
        "username": "box@x",
        "scope": "s",
        "spec_hash": "h1",
    }
    args.update(kw)
    return consumer_secret(TOKEN, "box", **args)


async def test_publish_creates_when_missing() -> None:
    """The first publish tries a patch, finds nothing, and creates."""
    api = InMemoryApi()
    await publish(api, "mail", consumer("at-1"))
    assert api.writes == [("create", "secret", "box")]
    assert decode_data(api.secrets[("mail", "box")])["access_token"] == "at-1"


async def test_publish_patches_in_place() -> None:
    """Later publishes patch (one write): mounted files update without a new Secret."""
    api = InMemoryApi()
    await publish(api, "mail", consumer("at-1"))
    extra = api.secrets[("mail", "box")]
    extra["metadata"]["labels"]["team"] = "mail"  # someone else's label survives a merge patch
    await publish(api, "mail", consumer("at-2", spec_hash="h2"))
    assert api.writes == [("create", "secret", "box"), ("patch", "secret", "box")]
    secret = api.secrets[("mail", "box")]
    data = decode_data(secret)
    assert data["access_token"] == "at-2"
    assert secret["metadata"]["annotations"]["emailtoken.io/spec-hash"] == "h2"
    assert secret["metadata"]["labels"]["team"] == "mail"
    assert secret["metadata"]["labels"]["emailtoken.io/token"] == "box"
    assert parse_rfc3339(data["expires_at"]).year == 2026


async def test_publish_known_missing_creates_with_one_write() -> None:
    """When the step has just seen there is no Secret, it creates at once (no refused patch)."""
    api = InMemoryApi()
    calls: list[str] = []
    original = api.patch_secret

    async def patch(namespace: str, name: str, body: dict) -> dict:
        calls.append(name)
        return await original(namespace, name, body)

    api.patch_secret = patch  # type: ignore[method-assign]
    await publish(api, "mail", consumer("at-1"), exists=False)
    assert calls == []
    assert api.writes == [("create", "secret", "box")]
    await publish(api, "mail", consumer("at-2"), exists=False)  # it was there after all: patched
    assert calls == ["box"]
    assert decode_data(api.secrets[("mail", "box")])["access_token"] == "at-2"


async def test_publish_create_race_falls_back_to_patch() -> None:
    """Created by someone between our patch and create: patch again instead of failing."""

    class RacingApi(InMemoryApi):
        async def create_secret(self, namespace: str, body: dict) -> dict:
            await InMemoryApi.create_secret(self, namespace, consumer("other"))
            return await InMemoryApi.create_secret(self, namespace, body)

    api = RacingApi()
    await publish(api, "mail", consumer("at-1"))
    assert decode_data(api.secrets[("mail", "box")])["access_token"] == "at-1"
    assert api.writes[-1] == ("patch", "secret", "box")


async def test_publish_never_takes_over_a_secret_it_did_not_expect() -> None:
    """A create that meets someone else's Secret (made since the step looked) leaves it alone."""
    foreign = {"metadata": {"name": "box", "labels": {"app": "other"}}, "data": {"x": b64("y")}}

    class VanishingApi(InMemoryApi):
        async def patch_secret(self, namespace: str, name: str, patch: dict, **kw: Any) -> dict:
            raise NotFound(404, "gone")  # deleted under us, then someone else's took the name

        async def create_secret(self, namespace: str, body: dict) -> dict:
            if ("mail", "box") not in self.secrets:
                await InMemoryApi.create_secret(self, namespace, foreign)
            return await InMemoryApi.create_secret(self, namespace, body)

    for api, exists in ((InMemoryApi(), False), (VanishingApi(), True)):
        if exists is False:
            await api.create_secret("mail", foreign)
        with pytest.raises(SecretMissing, match="is not managed by this EmailToken"):
            await publish(api, "mail", consumer("at-1"), exists=exists)
        assert api.secrets[("mail", "box")]["data"] == {"x": b64("y")}
        assert ("patch", "secret", "box") not in api.writes


STATUS = {"lastRefreshTime": "2026-01-01T00:00:00Z"}


async def test_publish_with_status_writes_the_status_after_the_secret_whatever_the_first_write_met() -> None:
    """Known missing: created; known present: patched; deleted since: created; appeared since:
    patched when it is this token's. The status follows each, once."""
    api = InMemoryApi()
    assert await publish_with_status(api, "mail", consumer("at-1"), "box", STATUS, exists=False) is None
    assert api.writes == [("create", "secret", "box"), ("patch", "status", "box")]

    api.writes.clear()
    assert await publish_with_status(api, "mail", consumer("at-2"), "box", STATUS) is None
    assert api.writes == [("patch", "secret", "box"), ("patch", "status", "box")]

    api.writes.clear()
    await api.delete_secret("mail", "box")
    assert await publish_with_status(api, "mail", consumer("at-3"), "box", STATUS) is None
    assert api.writes[1:] == [("create", "secret", "box"), ("patch", "status", "box")]  # after the refused patch

    api.writes.clear()
    assert await publish_with_status(api, "mail", consumer("at-4"), "box", STATUS, exists=False) is None
    assert api.writes == [("patch", "secret", "box"), ("patch", "status", "box")]  # the create met ours
    assert decode_data(api.secrets[("mail", "box")])["access_token"] == "at-4"
    assert api.tokens[("mail", "box")]["status"] == STATUS


async def test_publish_with_status_writes_no_status_when_the_secret_is_not_written() -> None:
    foreign = {"metadata": {"name": "box", "labels": {"app": "other"}}, "data": {"x": b64("y")}}
    api = InMemoryApi()
    await api.create_secret("mail", foreign)
    with pytest.raises(SecretMissing, match="is not managed by this EmailToken"):
        await publish_with_status(api, "mail", consumer("at-1"), "box", STATUS, exists=False)
    api.fail_next = [KubeError(403, "forbidden")]
    with pytest.raises(KubeError):
        await publish_with_status(api, "mail", consumer("at-1"), "box", STATUS)
    assert ("mail", "box") not in api.tokens
    assert api.secrets[("mail", "box")]["data"] == {"x": b64("y")}


async def test_publish_with_status_returns_the_status_writes_failure() -> None:
    api = InMemoryApi()
    await publish(api, "mail", consumer("at-1"))

    class RefusesStatus(InMemoryApi):
        async def patch_token_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
            raise KubeError(503, "etcd leader changed")

    refusing = RefusesStatus()
    refusing.secrets = api.secrets
    error = await publish_with_status(refusing, "mail", consumer("at-2"), "box", STATUS)
    assert isinstance(error, KubeError) and error.status == 503
    assert decode_data(refusing.secrets[("mail", "box")])["access_token"] == "at-2"


async def test_read_secret_key() -> None:
    """The value is stripped (a trailing newline from `kubectl create secret --from-file`)."""
    api = InMemoryApi()
    await api.create_secret("mail", {"metadata": {"name": "app"}, "data": {"client_secret": b64("s3cret\n")}})
    assert await read_secret_key(api, "mail", SecretKeyRef("app", "client_secret")) == "s3cret"


async def test_read_secret_key_missing_secret_or_key() -> None:
    """The message names the Secret and key, never a value."""
    api = InMemoryApi()
    with pytest.raises(SecretMissing) as info:
        await read_secret_key(api, "mail", SecretKeyRef("app", "client_secret"))
    assert str(info.value) == "Secret mail/app does not exist"
    await api.create_secret("mail", {"metadata": {"name": "app"}, "data": {"other": b64("s3cret-value")}})
    with pytest.raises(SecretMissing) as info:
        await read_secret_key(api, "mail", SecretKeyRef("app", "client_secret"))
    assert str(info.value) == "Secret mail/app has no key 'client_secret'"
    assert "s3cret-value" not in str(info.value)


# --------------------------------------------------------------------------- a rotation's write after a 409


async def _seeded(api: InMemoryApi) -> Grant:
    return await GrantStore(api).save(TOKEN, Grant("rt-spent", "a"), expected_version=None)


def _bump(api: InMemoryApi, **meta: Any) -> None:
    """Someone else's write that leaves the grant as it was (a label, an annotation)."""
    stored = api.secrets[("mail", GRANT_NAME)]
    for key, value in meta.items():
        stored["metadata"].setdefault(key, {}).update(value)
    stored["metadata"]["resourceVersion"] = str(int(stored["metadata"]["resourceVersion"]) + 500)


async def test_save_successor_writes_over_a_label_change() -> None:
    """A 409 caused by a label is not a new sign-in: the successor lands at the new version."""
    api = InMemoryApi()
    spent = await _seeded(api)
    _bump(api, labels={"team": "mail"})
    saved = await GrantStore(api).save_successor(TOKEN, spent, Grant("rt-next", "a"))
    assert stored_refresh_token(api) == "rt-next"
    assert api.secrets[("mail", GRANT_NAME)]["metadata"]["labels"]["team"] == "mail"
    assert saved.resource_version == api.secrets[("mail", GRANT_NAME)]["metadata"]["resourceVersion"]


async def test_save_successor_loses_to_another_refresh_token() -> None:
    """A new sign-in (another refresh token) wins; nothing is written over it."""
    api = InMemoryApi()
    spent = await _seeded(api)
    await GrantStore(api).save(TOKEN, Grant("rt-new-sign-in", "a"), expected_version=spent.resource_version)
    writes = len(api.writes)
    with pytest.raises(GrantReplaced):
        await GrantStore(api).save_successor(TOKEN, spent, Grant("rt-next", "a"))
    assert stored_refresh_token(api) == "rt-new-sign-in"
    assert len(api.writes) == writes


async def test_save_successor_loses_to_a_dropped_grant() -> None:
    """Deleted (reauthorize) or emptied: the grant is gone on purpose, and stays gone."""
    api = InMemoryApi()
    spent = await _seeded(api)
    await api.delete_secret("mail", GRANT_NAME)
    with pytest.raises(GrantReplaced):
        await GrantStore(api).save_successor(TOKEN, spent, Grant("rt-next", "a"))
    assert ("mail", GRANT_NAME) not in api.secrets

    spent = await _seeded(api)
    api.secrets[("mail", GRANT_NAME)]["data"]["refresh_token"] = ""
    _bump(api)
    with pytest.raises(GrantReplaced):
        await GrantStore(api).save_successor(TOKEN, spent, Grant("rt-next", "a"))
    assert stored_refresh_token(api) == ""


async def test_save_successor_recognises_its_own_landed_write() -> None:
    """Our write landed and only its answer was lost: the re-read shows our successor, not a rival."""
    api = InMemoryApi()
    spent = await _seeded(api)
    await GrantStore(api).save(TOKEN, Grant("rt-next", "a"), expected_version=spent.resource_version)
    saved = await GrantStore(api).save_successor(TOKEN, spent, Grant("rt-next", "a"))
    assert saved.refresh_token == "rt-next"
    assert saved.resource_version == api.secrets[("mail", GRANT_NAME)]["metadata"]["resourceVersion"]


class EverBusy(InMemoryApi):
    """Every write to the grant meets a fresh label change first."""

    async def patch_secret(
        self, namespace: str, name: str, patch: dict[str, Any], *, resource_version: str | None = None
    ) -> dict[str, Any]:
        _bump(self, annotations={"busy": "yes"})
        return await super().patch_secret(namespace, name, patch, resource_version=resource_version)


async def test_save_successor_gives_up_for_now_with_a_conflict_not_a_verdict() -> None:
    """A Secret that changes under every attempt: Conflict (keep the successor, retry later), bounded."""
    api = EverBusy()
    spent = await _seeded(api)
    with pytest.raises(Conflict) as info:
        await GrantStore(api).save_successor(TOKEN, spent, Grant("rt-next", "a"))
    assert not isinstance(info.value, GrantReplaced)
    assert stored_refresh_token(api) == "rt-spent"
    assert sum(1 for r in api.reads if r[2] == GRANT_NAME) == CONFLICT_RETRIES


async def test_save_new_creates_or_fills_an_emptied_secret_but_never_replaces_a_grant() -> None:
    api = InMemoryApi()
    store = GrantStore(api)
    await store.save_new(TOKEN, Grant("rt-device", "a"))
    assert stored_refresh_token(api) == "rt-device"
    assert (await store.save_new(TOKEN, Grant("rt-device", "a"))).refresh_token == "rt-device"  # ours already
    with pytest.raises(GrantReplaced):
        await store.save_new(TOKEN, Grant("rt-other", "a"))
    assert stored_refresh_token(api) == "rt-device"

    api.secrets[("mail", GRANT_NAME)]["data"]["refresh_token"] = ""
    saved = await store.save_new(TOKEN, Grant("rt-again", "a"))
    assert stored_refresh_token(api) == "rt-again"
    assert saved.resource_version == api.secrets[("mail", GRANT_NAME)]["metadata"]["resourceVersion"]


async def test_save_does_not_retry_a_refusal() -> None:
    """403/422 would be answered the same way again: one attempt, at once."""
    api = InMemoryApi()
    api.fail_next = [KubeError(403, "forbidden"), KubeError(403, "forbidden")]
    with pytest.raises(KubeError):
        await GrantStore(api).save(TOKEN, Grant("rt", "a"), expected_version=None)
    assert len(api.fail_next) == 1
    assert [retryable(KubeError(s, "")) for s in (0, 403, 409, 422, 429, 500, 503)] == [
        True,
        False,
        False,
        False,
        True,
        True,
        True,
    ]


@pytest.mark.parametrize(
    ("kind", "labels"),
    [
        ("kubernetes.io/service-account-token", {}),
        ("kubernetes.io/dockerconfigjson", {}),
        ("emailtoken.io/grant", {}),
        ("helm.sh/release.v1", {}),
        ("Opaque", {"app.kubernetes.io/managed-by": "emailtoken-operator"}),  # a consumer Secret: an access token
    ],
)
async def test_only_plain_secrets_serve_as_client_credentials(kind: str, labels: dict[str, str]) -> None:
    """clientSecretRef is the token author's to name, not to aim at any Secret of the namespace."""
    from emailtoken.model import SecretKeyRef
    from emailtoken.store import SecretMissing, read_secret_key
    from tests.support.fakeapi import InMemoryApi

    api = InMemoryApi()
    body = {
        "metadata": {"name": "target", "namespace": "mail", "labels": labels},
        "type": kind,
        "data": {"token": base64.b64encode(b"valuable").decode()},
    }
    await api.create_secret("mail", body)
    with pytest.raises(SecretMissing, match="only an Opaque Secret made for it"):
        await read_secret_key(api, "mail", SecretKeyRef("target", "token"))
    await api.delete_secret("mail", "target")
    await api.create_secret("mail", {**body, "type": "Opaque", "metadata": {"name": "target", "namespace": "mail"}})
    assert await read_secret_key(api, "mail", SecretKeyRef("target", "token")) == "valuable"

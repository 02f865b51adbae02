"""emailtoken.engine: what a provider call bought survives every failed or contested Secret write.

A conflict on the grant Secret is judged by what the Secret holds after it, not by the 409
alone; a refused (403) or unreachable API keeps the new tokens in memory and retries the
write, never the provider call; a step cancelled after presenting a refresh token still
stores its successor. Same harness as test_engine (in-memory API that enforces
resourceVersion, scripted provider, hand-moved clock).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from emailtoken.failures import PERMISSION_RETRY_CAP
from emailtoken.kube import KubeError
from emailtoken.model import EmailTokenSpec
from emailtoken.outcomes import TokenSet
from emailtoken.providers.base import ClientCredentials, DeviceFlow
from emailtoken.secretdata import Grant, decode_data, grant_secret
from emailtoken.store import CONFLICT_RETRIES
from tests.unit.test_engine import (
    GRANT,
    INITIAL_RT,
    MAILBOX,
    NAME,
    NS,
    SCOPE,
    TOKEN,
    Harness,
    RecordingApi,
    ScriptedProvider,
    app_harness,
    b64,
    delegated_harness,
)

FORBIDDEN_PATCH = (
    f'secrets "{NAME}" is forbidden: User "system:serviceaccount:ops:emailtoken" cannot patch resource '
    f'"secrets" in API group "" in the namespace "{NS}"'
)


def touch_grant(api: RecordingApi, how: str) -> None:
    """What kubectl label / annotate or a policy engine does to the grant Secret: a new version, same grant."""
    stored = api.secrets[(NS, GRANT)]
    if how == "label":
        stored["metadata"].setdefault("labels", {})["team"] = "mail"
    elif how == "annotation":
        stored["metadata"].setdefault("annotations", {})["policy.example/checked"] = "yes"
    elif how == "same-data":
        stored["data"] = dict(stored["data"])  # an apply that rewrites identical data
    stored["metadata"]["resourceVersion"] = str(int(stored["metadata"]["resourceVersion"]) + 1000)


def adopt(h: Harness, api: RecordingApi) -> Any:
    """Give the harness another API double with the same objects (and version counter)."""
    api.secrets, api.tokens, api._rv = h.api.secrets, h.api.tokens, h.api._rv
    h.api = api
    h.engine = h.new_engine()
    return api


def during_refresh(h: Harness, action: Callable[[], None]) -> None:
    """Run ``action`` while the provider answers the next refresh (after the engine read the grant)."""

    def answer() -> TokenSet:
        action()
        n = len(h.provider.issued) + 1
        return TokenSet(
            access_token=f"access-token-value-{n:04d}-xyz",
            expires_at=h.clock() + timedelta(hours=1),
            scope=SCOPE,
            refresh_token=f"rotated-refresh-token-value-{n:04d}",
        )

    h.provider.script.append(answer)


# --------------------------------------------------------------------------- conflicts on the grant


@pytest.mark.parametrize("how", ["label", "annotation", "same-data"])
async def test_a_grant_touched_during_the_refresh_still_gets_the_rotated_token(how: str) -> None:
    """The 409 came from someone relabelling the Secret, not from a new sign-in: the rotated refresh
    token is written at the new resourceVersion, published, and the next refresh presents it."""
    h = await delegated_harness()
    during_refresh(h, lambda: touch_grant(h.api, how))
    result = await h.step()
    rotated = h.provider.issued[0].refresh_token
    assert result.refreshed is True
    assert h.grant_rt() == rotated
    assert h.api.grant_at_publish == [rotated]
    assert h.consumer()["access_token"] == h.provider.issued[0].access_token
    stored = h.api.secrets[(NS, GRANT)]["metadata"]
    if how == "label":
        assert stored["labels"]["team"] == "mail"  # the merge patch keeps what others added
    if how == "annotation":
        assert stored["annotations"]["policy.example/checked"] == "yes"
    assert h.cond("Ready")["status"] == "True"
    h.clock.set(h.due_time())
    await h.step()
    assert h.provider.refreshed_with == [INITIAL_RT, rotated]


async def test_a_grant_emptied_during_the_refresh_is_not_refilled() -> None:
    """Emptying the refresh token is how an admin drops a grant: that wins over our rotation."""
    h = await delegated_harness()

    def empty() -> None:
        stored = h.api.secrets[(NS, GRANT)]
        stored["data"]["refresh_token"] = ""
        stored["metadata"]["resourceVersion"] = "5000"

    during_refresh(h, empty)
    result = await h.step()
    assert result.refreshed is False
    assert decode_data(h.api.secrets[(NS, GRANT)])["refresh_token"] == ""
    assert (NS, NAME) not in h.api.secrets
    await h.step()
    assert h.cond("Authorized")["reason"] == "AwaitingAuthorization"
    assert h.provider.refreshed_with == [INITIAL_RT]


class LosesAnswers(RecordingApi):
    """The grant write lands, but its answer is lost (a 503 from a proxy after the commit)."""

    def __init__(self) -> None:
        super().__init__()
        self.lose_next_grant_answer = False

    async def patch_secret(
        self, namespace: str, name: str, patch: dict[str, Any], *, resource_version: str | None = None
    ) -> dict[str, Any]:
        result = await super().patch_secret(namespace, name, patch, resource_version=resource_version)
        if name == GRANT and self.lose_next_grant_answer:
            self.lose_next_grant_answer = False
            raise KubeError(503, "the answer was lost")
        return result


@pytest.mark.looptime
async def test_our_own_landed_write_is_not_mistaken_for_a_new_sign_in() -> None:
    """The retry of a write that landed meets a 409 against our own version: the re-read finds our
    successor, so the refresh goes on and publishes."""
    h = await delegated_harness()
    api = adopt(h, LosesAnswers())
    api.lose_next_grant_answer = True
    result = await h.step()
    rotated = h.provider.issued[0].refresh_token
    assert result.refreshed is True
    assert h.grant_rt() == rotated
    assert h.consumer()["access_token"] == h.provider.issued[0].access_token
    assert h.provider.refreshed_with == [INITIAL_RT]


class BusyGrant(RecordingApi):
    """Something rewrites the grant Secret's metadata before every one of our writes lands."""

    def __init__(self) -> None:
        super().__init__()
        self.busy = 0

    async def patch_secret(
        self, namespace: str, name: str, patch: dict[str, Any], *, resource_version: str | None = None
    ) -> dict[str, Any]:
        if name == GRANT and self.busy > 0:
            self.busy -= 1
            touch_grant(self, "annotation")
        return await super().patch_secret(namespace, name, patch, resource_version=resource_version)


async def test_a_grant_that_keeps_changing_keeps_the_successor_for_later() -> None:
    """After a few busy rounds the write gives up for now, but never drops the rotated token: the
    next step writes it and publishes the access token that came with it, with no second refresh."""
    h = await delegated_harness()
    api = adopt(h, BusyGrant())
    api.busy = CONFLICT_RETRIES
    result = await h.step()
    rotated = h.provider.issued[0].refresh_token
    assert result.refreshed is False
    assert h.grant_rt() == INITIAL_RT
    assert (NS, NAME) not in h.api.secrets
    ready = h.cond("Ready")
    assert ready["reason"] == "APIUnavailable"
    assert "kept in memory" in ready["message"]
    h.clock.advance(seconds=result.delay or 0)
    result = await h.step()
    assert result.refreshed is True
    assert h.grant_rt() == rotated
    assert h.provider.refreshed_with == [INITIAL_RT]
    assert h.consumer()["access_token"] == h.provider.issued[0].access_token


# --------------------------------------------------------------------------- refused and unreachable writes


async def test_a_refused_consumer_write_keeps_the_token_and_names_verb_and_resource() -> None:
    """403 on the consumer Secret: PermissionDenied with the API server's words in the condition and a
    Warning Event; retried every few seconds (at most the cap) with the same access token, so the
    provider is asked once; Authorized stays True (the credentials are fine)."""
    h = await app_harness()
    await h.step()
    first = h.consumer()["access_token"]
    h.clock.set(h.due_time())
    api = adopt(h, RefusesWrites(NAME, FORBIDDEN_PATCH))
    delays = []
    for _ in range(6):
        result = await h.step()
        assert result.refreshed is False
        assert result.delay is not None
        delays.append(result.delay)
        h.clock.advance(seconds=result.delay)
    assert h.provider.app_calls == 2  # the first token, and this refresh once
    assert h.consumer()["access_token"] == first  # nothing written meanwhile
    ready = h.cond("Ready")
    assert (ready["status"], ready["reason"]) == ("True", "TokenValid")  # the old token is still good
    assert 'cannot patch resource "secrets"' in ready["message"]
    h.clock.set(h.clock() + timedelta(minutes=30))  # past the old token's expiry, within the held one's
    result = await h.step()
    assert result.delay is not None
    h.clock.advance(seconds=result.delay)
    ready = h.cond("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "PermissionDenied")
    assert 'cannot patch resource "secrets"' in ready["message"]
    assert h.cond("Authorized")["status"] == "True"
    assert h.status["phase"] == "PermissionDenied"
    warnings = [e for e in h.events if e[0] == "Warning"]
    assert warnings and warnings[0][1] == "RefreshFailed"
    assert warnings[0][2].startswith("PermissionDenied: ")
    assert 'cannot patch resource "secrets"' in warnings[0][2]
    assert len(warnings) <= 3  # not one per retry
    assert delays[0] <= 2.0
    assert max(delays) <= PERMISSION_RETRY_CAP.total_seconds()
    assert delays[-1] > delays[0]
    assert api.refusals == 7  # one write per attempt

    api.refusing = False  # the permission is back
    result = await h.step()
    assert result.refreshed is True
    assert h.provider.app_calls == 2
    assert h.consumer()["access_token"] == h.provider.issued[1].access_token
    assert h.cond("Ready")["status"] == "True"
    assert h.status["refreshFailures"] == 0


async def test_a_refused_grant_write_keeps_the_rotated_token_and_is_not_retried_in_a_loop() -> None:
    """403 on the grant Secret: one write attempt per step (a refusal is not retried on the spot),
    the rotated refresh token stays in memory, nothing is published ahead of it."""
    h = await delegated_harness()
    h.api.fail_next = [KubeError(403, FORBIDDEN_PATCH.replace(f'"{NAME}"', f'"{GRANT}"'))]
    result = await h.step()
    assert h.api.fail_next == []  # exactly one attempt
    assert h.grant_rt() == INITIAL_RT
    assert (NS, NAME) not in h.api.secrets
    ready = h.cond("Ready")
    assert ready["reason"] == "PermissionDenied"
    assert f"writing Secret {NS}/{GRANT}" in ready["message"]
    assert "kept in memory" in ready["message"]
    h.clock.advance(seconds=result.delay or 0)
    await h.step()
    rotated = h.provider.issued[0].refresh_token
    assert h.provider.refreshed_with == [INITIAL_RT]
    assert h.grant_rt() == rotated
    assert h.api.grant_at_publish == [rotated]


async def test_an_unreachable_api_during_the_publish_backs_off_and_keeps_the_token() -> None:
    """Connection refused (status 0) is an outage: the documented backoff (5 s, jittered), no
    exception out of the step, the same access token published once the API answers."""
    h = await app_harness()
    h.api.fail_next = [KubeError(0, "[Errno 111] Connection refused")]
    result = await h.step()
    assert result.delay is not None and 2.5 <= result.delay <= 5
    ready = h.cond("Ready")
    assert ready["reason"] == "APIUnavailable"
    assert "unreachable" in ready["message"] and "Connection refused" in ready["message"]
    h.clock.advance(seconds=result.delay)
    result = await h.step()
    assert result.refreshed is True
    assert h.provider.app_calls == 1
    assert h.consumer()["access_token"] == h.provider.issued[0].access_token


async def test_a_held_token_is_not_published_after_it_expired() -> None:
    """Kept only while it is worth something: once expired, the next attempt asks the provider."""
    h = await app_harness()
    h.api.fail_next = [KubeError(403, FORBIDDEN_PATCH)]
    await h.step()
    h.clock.advance(hours=1, seconds=1)
    await h.step()
    assert h.provider.app_calls == 2
    assert h.consumer()["access_token"] == h.provider.issued[1].access_token


async def test_a_held_token_from_an_older_spec_is_not_published() -> None:
    """A spec change (another app registration) makes the held token the wrong one."""
    h = await app_harness()
    h.api.fail_next = [KubeError(403, FORBIDDEN_PATCH)]
    await h.step()
    h.spec["clientId"] = "another-app-id"
    await h.step()
    assert h.provider.app_calls == 2
    assert h.consumer()["access_token"] == h.provider.issued[1].access_token


class RefusesWrites(RecordingApi):
    """Writes to one Secret are refused (RBAC without patch and create) while ``refusing``."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__()
        self.refused, self.message, self.refusing = name, message, True
        self.refusals = 0

    def _check(self, name: str) -> None:
        if self.refusing and name == self.refused:
            self.refusals += 1
            raise KubeError(403, self.message)

    async def create_secret(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self._check(body["metadata"]["name"])
        return await super().create_secret(namespace, body)

    async def patch_secret(
        self, namespace: str, name: str, patch: dict[str, Any], *, resource_version: str | None = None
    ) -> dict[str, Any]:
        self._check(name)
        return await super().patch_secret(namespace, name, patch, resource_version=resource_version)


class RefusesReads(RecordingApi):
    """GET on one Secret is refused (RBAC without get)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.refused = name

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        if name == self.refused:
            raise KubeError(403, f'secrets "{name}" is forbidden: User "x" cannot get resource "secrets"')
        return await super().get_secret(namespace, name)


async def test_a_refused_read_of_the_consumer_secret_is_reported_not_raised() -> None:
    h = await app_harness()
    adopt(h, RefusesReads(NAME))
    result = await h.step()
    assert result.delay is not None and result.delay <= 2.0
    ready = h.cond("Ready")
    assert ready["reason"] == "PermissionDenied"
    assert 'cannot get resource "secrets"' in ready["message"]
    assert h.provider.calls == 0


async def test_an_api_error_dropping_the_grant_backs_off_without_raising() -> None:
    """The reauthorize annotation's delete failing is an outage like any other, not a crash."""
    h = await delegated_harness()
    await h.step()
    h.annotations["emailtoken.io/reauthorize"] = "1"
    h.api.fail_next = [KubeError(503, "etcd leader changed")]
    result = await h.step()
    assert result.delay is not None and 0 < result.delay <= 5
    assert h.grant_rt() is not None


async def test_a_foreign_consumer_secret_gets_one_warning_event() -> None:
    """SecretConflict is a Warning Event too (once, not at every look), besides the condition."""
    h = await app_harness()
    await h.api.create_secret(NS, {"metadata": {"name": NAME, "namespace": NS}, "data": {"x": b64("y")}})
    await h.step()
    h.clock.advance(minutes=10)
    await h.step()
    warnings = [e for e in h.events if e[0] == "Warning"]
    assert len(warnings) == 1
    assert warnings[0][1] == "RefreshFailed"
    assert warnings[0][2].startswith("SecretConflict: ")
    assert f"Secret {NS}/{NAME} exists and is not managed by this EmailToken" in warnings[0][2]


# --------------------------------------------------------------------------- cancellation


class BlockingProvider(ScriptedProvider):
    """The refresh call waits in its thread until the test lets it answer."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.entered = threading.Event()
        self.release = threading.Event()

    def refresh(self, spec: EmailTokenSpec, creds: ClientCredentials, refresh_token: str) -> TokenSet:
        self.entered.set()
        assert self.release.wait(10)
        return super().refresh(spec, creds, refresh_token)


async def _cancel_mid_refresh(h: Harness, meanwhile: Callable[[], None] = lambda: None) -> None:
    provider = BlockingProvider(h.clock)
    h.provider = provider
    h.engine = h.new_engine()
    step = asyncio.create_task(h.step())
    await asyncio.to_thread(provider.entered.wait, 10)
    step.cancel()  # shutdown or lost leadership while the refresh token is at the provider
    await asyncio.sleep(0.05)
    meanwhile()
    provider.release.set()
    with pytest.raises(asyncio.CancelledError):
        await step


async def test_a_step_cancelled_after_presenting_the_refresh_token_still_stores_its_successor() -> None:
    h = await delegated_harness()
    await _cancel_mid_refresh(h)
    assert h.grant_rt() == h.provider.issued[0].refresh_token
    assert (NS, NAME) not in h.api.secrets  # publishing is left to the next leader: its step is gone
    await h.engine.drain(1)


async def test_a_cancelled_step_loses_to_a_newer_writer_by_compare_and_swap() -> None:
    """Fenced by the resourceVersion, not by the cancellation: if a new leader already stored a newer
    refresh token, the cancelled step's successor does not overwrite it."""
    h = await delegated_harness()

    def new_leader_wrote() -> None:
        stored = h.api.secrets[(NS, GRANT)]
        stored["data"]["refresh_token"] = b64("refresh-token-from-the-new-leader")
        stored["metadata"]["resourceVersion"] = "7000"

    await _cancel_mid_refresh(h, new_leader_wrote)
    assert h.grant_rt() == "refresh-token-from-the-new-leader"


async def test_drain_waits_for_a_refresh_whose_step_stopped_waiting() -> None:
    """A second cancel ends the step's wait; the refresh unit runs on, and drain() is how a process
    about to exit waits for it."""
    h = await delegated_harness()
    provider = BlockingProvider(h.clock)
    h.provider = provider
    h.engine = h.new_engine()
    step = asyncio.create_task(h.step())
    await asyncio.to_thread(provider.entered.wait, 10)
    step.cancel()
    await asyncio.sleep(0.05)
    step.cancel()
    with pytest.raises(asyncio.CancelledError):
        await step
    assert h.grant_rt() == INITIAL_RT
    provider.release.set()
    await h.engine.drain(5)
    assert h.grant_rt() == h.provider.issued[0].refresh_token


# --------------------------------------------------------------------------- device code


class DeviceProvider(ScriptedProvider):
    """Device-code sign-in that is approved at the first poll."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.polls = 0

    def start_device_flow(self, spec: EmailTokenSpec, creds: ClientCredentials) -> DeviceFlow:
        return DeviceFlow("ABCD-EFGH", "https://login.example/device", self.clock() + timedelta(minutes=15), 5, "")

    def poll_device_flow(self, spec: EmailTokenSpec, creds: ClientCredentials, flow: DeviceFlow) -> TokenSet | None:
        self.polls += 1
        if self.polls > 1:
            raise AssertionError("a redeemed device code was polled again")
        return TokenSet(
            access_token="access-token-value-device-xyz",
            expires_at=self.clock() + timedelta(hours=1),
            scope=SCOPE,
            refresh_token="device-refresh-token-value-0001",
            account=MAILBOX,
        )


async def device_harness() -> Harness:
    h = await delegated_harness(grant=False)
    h.spec["flow"] = "DeviceCode"
    h.provider = DeviceProvider(h.clock)
    h.engine = h.new_engine()
    await h.step()  # the code is issued
    h.clock.advance(seconds=5)
    return h


async def test_a_failed_grant_write_after_a_device_sign_in_keeps_the_grant() -> None:
    """The device code is single-use: the grant it bought stays in memory until written."""
    h = await device_harness()
    h.api.fail_next = [KubeError(403, "cannot create resource secrets")]
    await h.step()
    assert (NS, GRANT) not in h.api.secrets
    assert h.cond("Ready")["reason"] == "PermissionDenied"
    h.clock.advance(seconds=3)
    await h.step()
    assert h.grant_rt() == "device-refresh-token-value-0001"
    assert h.consumer()["access_token"] == "access-token-value-device-xyz"
    assert h.provider.polls == 1


async def test_a_device_sign_in_fills_an_emptied_grant_secret() -> None:
    """A grant Secret left empty (the admin way of dropping a grant) is written over, not a conflict."""
    h = await delegated_harness(grant=False)
    body = grant_secret(TOKEN, Grant("x", MAILBOX))
    body["data"]["refresh_token"] = ""
    await h.api.create_secret(NS, body)
    h.spec["flow"] = "DeviceCode"
    h.provider = DeviceProvider(h.clock)
    h.engine = h.new_engine()
    await h.step()
    h.clock.advance(seconds=5)
    await h.step()
    assert h.grant_rt() == "device-refresh-token-value-0001"
    assert h.cond("Ready")["status"] == "True"


async def test_a_sign_in_stored_elsewhere_during_the_device_flow_wins() -> None:
    """Someone ran `emailtoken authorize` meanwhile: their grant stays, ours is not written over it."""
    h = await device_harness()

    def theirs() -> None:
        body = grant_secret(TOKEN, Grant("grant-from-authorize-cli", MAILBOX))
        body["metadata"]["resourceVersion"] = "900"
        h.api.secrets[(NS, GRANT)] = body

    poll = h.provider.poll_device_flow

    def poll_then_race(*args: Any) -> TokenSet | None:
        result = poll(*args)
        theirs()
        return result

    h.provider.poll_device_flow = poll_then_race  # type: ignore[method-assign]
    await h.step()
    assert h.grant_rt() == "grant-from-authorize-cli"
    await h.step()
    assert h.provider.refreshed_with == ["grant-from-authorize-cli"]
    assert h.provider.polls == 1


# --------------------------------------------------------------------------- Secret and status together


class CountsCombined(RecordingApi):
    """Counts the Secret-then-status writes, and refuses the status write ``refuse_status`` times."""

    def __init__(self) -> None:
        super().__init__()
        self.combined = 0
        self.refuse_status = 0

    async def write_secret_and_status(
        self, namespace: str, name: str, body: dict[str, Any], token: str, status: dict[str, Any], *, create: bool
    ) -> KubeError | None:
        self.combined += 1
        return await super().write_secret_and_status(namespace, name, body, token, status, create=create)

    async def patch_token_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        if self.refuse_status:
            self.refuse_status -= 1
            raise KubeError(503, "etcd leader changed")
        await super().patch_token_status(namespace, name, status)


async def combined_harness() -> Harness:
    h = await app_harness()
    h.api = api = CountsCombined()
    api.secrets = {}
    h.engine = h.new_engine()
    await h.add_client_secret()
    api.writes.clear()
    await h.step()  # the first token: the consumer Secret is created, then the status written
    assert api.combined == 1
    assert api.writes == [("create", "secret", NAME), ("patch", "status", NAME)]
    api.combined = 0
    api.writes.clear()
    h.clock.set(h.due_time())
    return h


async def test_a_routine_refresh_hands_both_writes_to_one_call() -> None:
    """The Secret and then the status, in one hand-off to a thread (KubeApi.write_secret_and_status)."""
    h = await combined_harness()
    result = await h.step()
    assert result.refreshed is True
    assert h.api.combined == 1
    assert h.api.writes == [("patch", "secret", NAME), ("patch", "status", NAME)]
    assert h.consumer()["access_token"] == h.provider.issued[1].access_token
    assert h.status["expiresAt"] == decode_data(h.api.secrets[(NS, NAME)])["expires_at"]
    assert h.cond("Ready")["status"] == "True"


async def test_a_refused_secret_write_puts_the_state_back_and_reports_it() -> None:
    """The status was rendered as if the Secret write landed; it did not: the failure is what status
    shows (with a write of its own), and the new access token is published next time without a
    provider call."""
    h = await combined_harness()
    before = dict(h.status)
    h.api.fail_next = [KubeError(403, FORBIDDEN_PATCH)]
    result = await h.step()
    assert result.refreshed is False
    assert h.provider.app_calls == 2
    assert h.consumer()["access_token"] == h.provider.issued[0].access_token
    assert h.status["lastRefreshTime"] == before["lastRefreshTime"]
    assert h.status["expiresAt"] == before["expiresAt"]
    assert h.status["refreshFailures"] == 1
    ready = h.cond("Ready")
    assert (ready["status"], ready["reason"]) == ("True", "TokenValid")  # the old token is still valid
    assert "cannot patch resource" in ready["message"]
    assert [e[:2] for e in h.events][-1] == ("Warning", "RefreshFailed")
    assert h.api.writes[-1] == ("patch", "status", NAME)

    h.clock.set(h.due_time())
    assert (await h.step()).refreshed is True
    assert h.provider.app_calls == 2  # the held token
    assert h.consumer()["access_token"] == h.provider.issued[1].access_token
    assert h.status["refreshFailures"] == 0


async def test_a_refused_status_write_after_the_secret_landed_is_written_by_the_next_step(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = await combined_harness()
    h.api.refuse_status = 1
    assert (await h.step()).refreshed is True
    assert h.consumer()["access_token"] == h.provider.issued[1].access_token
    assert "could not write status of mail/box: HTTP 503" in caplog.text
    assert h.status["expiresAt"] != decode_data(h.api.secrets[(NS, NAME)])["expires_at"]

    await h.step()  # not due: no provider call, but the status it could not write
    assert h.provider.app_calls == 2
    assert h.status["expiresAt"] == decode_data(h.api.secrets[(NS, NAME)])["expires_at"]


async def test_a_consumer_secret_deleted_while_its_write_was_in_flight_is_published_again() -> None:
    """The state moved on before the write; a deletion the watch reports meanwhile still counts:
    the next step finds the Secret gone and publishes again."""
    h = await combined_harness()

    class DeletedMeanwhile(CountsCombined):
        async def write_secret_and_status(self, *args: Any, **kwargs: Any) -> KubeError | None:
            error = await super().write_secret_and_status(*args, **kwargs)
            await self.delete_secret(NS, NAME)  # someone deletes it right after it landed
            h.engine.secret_deleted((NS, NAME), NAME)  # and the watch says so before the step resumes
            return error

    racing = DeletedMeanwhile()
    racing.secrets, racing.tokens = h.api.secrets, h.api.tokens
    h.engine.api = racing
    assert (await h.step()).refreshed is True
    assert (NS, NAME) not in racing.secrets

    h.engine.api = h.api
    await h.step()  # not due, but the Secret is gone: published again
    assert h.consumer()["access_token"] == h.provider.issued[-1].access_token

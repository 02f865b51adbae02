"""emailtoken.leader and the single-writer guarantees, against an API double that enforces
resourceVersion (kmock accepts stale versions, so compare-and-swap is proven here).

Covers the Lease itself (create, renew, take over only after a full lease of silence, a
lost race, a stale leader), the fence that stops a stalled leader from spending refresh
tokens, and a stale grant writer losing its compare-and-swap.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from emailtoken.engine import Engine, EngineConfig
from emailtoken.kube import Conflict, KubeError, KubernetesApi, NotFound, Unreachable
from emailtoken.leader import CALL_MARGIN, LeaderElector, LeaseConfig, LeaseProblem, holder_of, timing_problem
from emailtoken.model import TokenRef
from emailtoken.outcomes import TokenSet
from emailtoken.providers.base import ClientCredentials
from emailtoken.scheduler import Scheduler
from emailtoken.secretdata import Grant, decode_data
from emailtoken.store import GrantStore
from tests.support.fakeapi import InMemoryApi
from tests.support.kube import client_config
from tests.support.ports import free_port

pytestmark = pytest.mark.looptime

NS = "ops"
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def config(identity: str, **kw: Any) -> LeaseConfig:
    return LeaseConfig(
        namespace=NS, identity=identity, lease_duration=15.0, renew_deadline=10.0, retry_period=2.0, **kw
    )


def elector(api: InMemoryApi, identity: str) -> LeaderElector:
    return LeaderElector(api, config(identity), clock=lambda: T0)


def lease(api: InMemoryApi) -> dict[str, Any]:
    return api.leases[(NS, "emailtoken-operator")]


class RaceApi(InMemoryApi):
    """Lets a test run code between a candidate's read of the Lease and its write."""

    def __init__(self) -> None:
        super().__init__()
        self.between: list[Any] = []

    async def patch_lease(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        while self.between:
            await self.between.pop(0)()
        return await super().patch_lease(namespace, name, body)


# --------------------------------------------------------------------------- the Lease


async def test_first_candidate_creates_the_lease_and_is_fresh() -> None:
    api = InMemoryApi()
    a = elector(api, "a")
    assert not a.fresh()
    assert await a.try_acquire()
    assert holder_of(lease(api)) == "a"
    assert lease(api)["spec"]["leaseDurationSeconds"] == 15
    assert a.fresh()


async def test_a_held_lease_is_taken_only_after_a_full_lease_of_silence() -> None:
    """The standby measures silence itself: renewals keep it out, only 15 s unchanged let it in."""
    api = InMemoryApi()
    a, b = elector(api, "a"), elector(api, "b")
    assert await a.try_acquire()
    for _ in range(10):  # the leader renews every 5 s for 50 s; the standby never gets in
        assert not await b.try_acquire()
        await asyncio.sleep(5)
        assert await a.try_acquire()
    assert not await b.try_acquire()  # sees the latest renewal: the clock starts again
    await asyncio.sleep(14)
    assert not await b.try_acquire()
    await asyncio.sleep(1)
    assert await b.try_acquire()
    assert holder_of(lease(api)) == "b"
    assert lease(api)["spec"]["leaseTransitions"] == 1


async def test_two_candidates_racing_for_an_expired_lease_only_one_wins() -> None:
    """Both read the same version of an abandoned Lease; the slower write gets 409 and loses."""
    api = RaceApi()
    dead = elector(api, "dead")
    assert await dead.try_acquire()
    a, b = elector(api, "a"), elector(api, "b")
    assert not await a.try_acquire() and not await b.try_acquire()  # both start watching the silence
    await asyncio.sleep(15)

    results: dict[str, bool] = {}

    async def b_goes_first() -> None:
        results["b"] = await b.try_acquire()

    api.between.append(b_goes_first)  # a has read the Lease; b reads, writes and wins before a writes
    results["a"] = await a.try_acquire()
    assert results == {"b": True, "a": False}
    assert holder_of(lease(api)) == "b"
    assert lease(api)["spec"]["leaseTransitions"] == 1
    assert a.holder != "a" and not a.fresh()


async def test_a_stale_leader_cannot_renew_and_stops() -> None:
    """A leader that was silent for a lease (paused) finds another holder: its write with the old
    version conflicts, keep() reports the loss, and fresh() has been False since the deadline."""
    api = RaceApi()
    a, b = elector(api, "a"), elector(api, "b")
    assert await a.try_acquire()
    assert not await b.try_acquire()
    await asyncio.sleep(10)
    assert not a.fresh(), "past the renew deadline the stalled leader may not act"
    await asyncio.sleep(5)

    async def b_takes_over() -> None:
        assert await b.try_acquire()

    api.between.append(b_takes_over)  # a read the Lease as its own; b writes first
    assert not await a.try_acquire(), "the stale write must conflict"
    await a.keep()  # returns at once: the Lease is someone else's
    assert a.lost.is_set()
    assert holder_of(lease(api)) == "b" and b.fresh() and not a.fresh()


async def test_fresh_needs_a_renewal_within_the_renew_deadline() -> None:
    api = InMemoryApi()
    a = elector(api, "a")
    assert await a.try_acquire()
    await asyncio.sleep(9.9)
    assert a.fresh()
    await asyncio.sleep(0.2)
    assert not a.fresh()
    assert await a.try_acquire()
    assert a.fresh()


class FlakyApi(InMemoryApi):
    """Lets a test take the API away (every Lease call fails with ``error``) and give it back."""

    def __init__(self) -> None:
        super().__init__()
        self.error: BaseException | None = None
        self.create_error: BaseException | None = None

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        if self.error is not None:
            raise self.error
        return await super().get_lease(namespace, name)

    async def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.error is not None or self.create_error is not None:
            raise self.error or self.create_error  # type: ignore[misc]
        return await super().create_lease(namespace, body)

    async def patch_lease(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.error is not None:
            raise self.error
        return await super().patch_lease(namespace, name, body)


class Partition:
    """One candidate's view of a shared API; ``cut`` makes every call of this view fail (a network partition)."""

    def __init__(self, api: InMemoryApi) -> None:
        self.api = api
        self.cut = False

    def _check(self) -> None:
        if self.cut:
            raise REFUSED

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._check()
        return await self.api.get_lease(namespace, name)

    async def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self._check()
        return await self.api.create_lease(namespace, body)

    async def patch_lease(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self._check()
        return await self.api.patch_lease(namespace, name, body)


REFUSED = Unreachable("HTTPSConnection(host='127.0.0.1', port=6443): Failed to establish a new connection")
FORBIDDEN = KubeError(
    403,
    'leases.coordination.k8s.io "emailtoken-operator" is forbidden: User "system:serviceaccount:ops:op" '
    'cannot get resource "leases" in API group "coordination.k8s.io" in the namespace "ops"',
)


async def test_an_api_outage_pauses_the_leader_and_it_resumes_without_losing_the_lease() -> None:
    """API gone for 40 s (longer than the lease): the leader stops acting at the renew deadline,
    keeps trying without raising, and renews (still the holder) as soon as the API answers."""
    api = FlakyApi()
    problems: list[LeaseProblem | None] = []
    a = LeaderElector(api, config("a"), clock=lambda: T0, on_problem=problems.append)
    assert await a.try_acquire()
    keeper = asyncio.create_task(a.keep())
    api.error = REFUSED
    loop = asyncio.get_running_loop()
    went_down = loop.time()
    while a.fresh():
        await asyncio.sleep(0.1)
    assert loop.time() - went_down <= 10, "stops acting within the renew deadline of the last renewal"
    await asyncio.sleep(40)
    assert not keeper.done() and not a.lost.is_set() and not a.fresh()
    assert a.problem is not None and a.problem.reason == "Unreachable" and not a.problem.blocking
    assert problems == [a.problem], "reported once, not once per attempt"

    api.error = None
    came_back = loop.time()
    while not a.fresh():
        await asyncio.sleep(0.1)
    assert loop.time() - came_back <= 2.1, "the next retry (every retry period) renews"
    assert holder_of(lease(api)) == "a" and lease(api)["spec"]["leaseTransitions"] == 0
    assert a.problem is None and problems[-1] is None
    keeper.cancel()


async def test_after_an_outage_the_standby_counts_silence_afresh() -> None:
    """The standby saw nothing during the outage, so it cannot know the leader was silent: it
    waits a full lease from its first answer, and the leader, which renews first, stays leader."""
    api = FlakyApi()
    a, b = elector(api, "a"), elector(api, "b")
    assert await a.try_acquire()
    assert not await b.try_acquire()
    api.error = REFUSED
    await asyncio.sleep(30)
    assert not await b.try_acquire() and not await a.try_acquire()
    api.error = None
    assert not await b.try_acquire(), "a record unchanged since before the outage is not proof of silence"
    assert await a.try_acquire()
    await asyncio.sleep(14)
    assert not await b.try_acquire()
    assert holder_of(lease(api)) == "a"
    # If the leader really is gone, the standby takes over a full lease after the API is back.
    await asyncio.sleep(15)
    assert await b.try_acquire()


async def test_a_leader_cut_off_while_the_standby_takes_over_stops_when_it_reconnects() -> None:
    """Only the leader loses the API (a partition): it stops acting at the renew deadline, the
    standby takes over after a full lease, and on reconnecting the old leader sees the new
    holder and gives up (``lost``) instead of renewing."""
    api = InMemoryApi()
    view = Partition(api)
    a = LeaderElector(view, config("a"), clock=lambda: T0)
    b = elector(api, "b")
    assert await a.try_acquire()
    keeper = asyncio.create_task(a.keep())
    assert not await b.try_acquire()
    view.cut = True
    while not await b.try_acquire():
        assert holder_of(lease(api)) == "a"
        await asyncio.sleep(1)
    assert not a.fresh(), "the old leader stopped acting before the standby could take over"
    view.cut = False
    await asyncio.wait_for(keeper, timeout=5)
    assert a.lost.is_set() and not a.fresh()
    assert holder_of(lease(api)) == "b"


async def test_a_missing_permission_is_named_not_mistaken_for_a_held_lease(caplog: pytest.LogCaptureFixture) -> None:
    """403 on the Lease: the log line and the problem carry the API server's words (verb,
    resource, namespace); it is blocking (waiting will not fix it); acquire() keeps waiting."""
    api = FlakyApi()
    api.error = FORBIDDEN
    problems: list[LeaseProblem | None] = []
    a = LeaderElector(api, config("a"), clock=lambda: T0, on_problem=problems.append)
    with caplog.at_level(logging.INFO, logger="emailtoken.leader"):
        waiting = asyncio.create_task(a.acquire())
        await asyncio.sleep(30)
        assert not waiting.done()
        text = caplog.text
        assert 'HTTP 403 Forbidden: leases.coordination.k8s.io "emailtoken-operator" is forbidden' in text
        assert 'cannot get resource "leases"' in text
        assert "is held" not in text
        assert [r.levelno for r in caplog.records] == [logging.ERROR], "logged once while it lasts"
        assert problems == [a.problem] and a.problem is not None and a.problem.blocking

        api.error = None
        await asyncio.sleep(2.1)
        assert waiting.done() and holder_of(lease(api)) == "a"
        assert a.problem is None and problems[-1] is None
        assert "the API server answers again (was: Forbidden)" in caplog.text


@pytest.mark.parametrize(
    ("error", "reason", "blocking"),
    [
        (KubeError(401, "Unauthorized"), "Unauthorized", True),
        (NotFound(404, 'namespaces "ops" not found'), "NotFound", True),
        (KubeError(503, "etcdserver: request timed out"), "ServerError", False),
        (REFUSED, "Unreachable", False),
        (ConnectionResetError(104, "reset"), "Error", False),
    ],
)
async def test_each_failure_is_named_for_what_it_is(error: BaseException, reason: str, blocking: bool) -> None:
    """A 404 from create is a missing namespace, not a race; nothing escapes try_acquire or release."""
    api = FlakyApi()
    api.create_error = error
    a = elector(api, "a")
    assert not await a.try_acquire()
    assert a.problem is not None and (a.problem.reason, a.problem.blocking) == (reason, blocking)
    if isinstance(error, KubeError) and error.message:
        assert error.message in str(a.problem)
    api.error = error
    await a.release()  # logs, does not raise


async def test_a_lease_deleted_between_read_and_write_is_a_race_not_a_problem() -> None:
    api = RaceApi()
    a = elector(api, "a")
    assert await a.try_acquire()

    async def delete() -> None:
        del api.leases[(NS, "emailtoken-operator")]

    api.between.append(delete)
    assert not await a.try_acquire()
    assert a.problem is None
    assert await a.try_acquire()


async def test_a_lease_deleted_under_a_live_leader_is_not_taken_by_the_standby() -> None:
    """Deleting the Lease (kubectl, a GitOps prune) freed it at once: a standby created it while
    the leader, still running, could have a refresh at the provider. A standby that saw the Lease
    held now waits a full lease of absence; the live leader creates it again when it renews."""
    api = InMemoryApi()
    a, b = elector(api, "a"), elector(api, "b")
    assert await a.try_acquire()
    assert not await b.try_acquire()
    del api.leases[(NS, "emailtoken-operator")]
    assert not await b.try_acquire(), "an absent Lease is not a free one to a standby that saw it held"
    await asyncio.sleep(5)
    assert await a.try_acquire()
    assert holder_of(lease(api)) == "a"
    assert not await b.try_acquire()
    # A leader that really is gone: the standby creates the Lease after a full lease of absence.
    del api.leases[(NS, "emailtoken-operator")]
    assert not await b.try_acquire()
    await asyncio.sleep(14.9)
    assert not await b.try_acquire()
    await asyncio.sleep(0.2)
    assert await b.try_acquire()
    assert holder_of(lease(api)) == "b"


async def test_only_the_holder_releases() -> None:
    api = InMemoryApi()
    a, b = elector(api, "a"), elector(api, "b")
    assert await a.try_acquire()
    await b.release()
    assert holder_of(lease(api)) == "a"
    await a.release()
    assert holder_of(lease(api)) == ""
    assert await b.try_acquire()  # a released Lease is free at once


# --------------------------------------------------------------------------- the real client, no server


@pytest.mark.looptime(False)
async def test_a_refused_connection_is_a_kube_error_and_the_elector_rides_it_out() -> None:
    """Issue #16: the client raised urllib3's MaxRetryError, which try_acquire did not catch."""
    api = KubernetesApi(threads=2, configuration=client_config(free_port()))
    with pytest.raises(Unreachable) as caught:
        await api.get_lease(NS, "emailtoken-operator")
    assert isinstance(caught.value, KubeError) and caught.value.status == 0
    assert "refused" in str(caught.value).lower()
    a = LeaderElector(api, config("a"), clock=lambda: T0)
    assert not await a.try_acquire()
    assert a.problem is not None and a.problem.reason == "Unreachable"
    await a.release()


@pytest.mark.looptime(False)
async def test_a_server_that_never_answers_costs_one_timeout_not_a_hang() -> None:
    """A listening socket that never answers (a hung API server): each call ends after the
    instance's request timeout, with no urllib3 retries multiplying it."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        api = KubernetesApi(threads=2, request_timeout=0.5, configuration=client_config(listener.getsockname()[1]))
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(Unreachable):
            await api.get_lease(NS, "emailtoken-operator")
        assert loop.time() - started < 1.5


@pytest.mark.looptime(False)
async def test_a_tls_failure_is_unreachable_too() -> None:
    """A server that does not speak TLS on the API port: no HTTP answer, so Unreachable (not HTTP 0)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.settimeout(10)

        def answer_in_plain_text() -> None:
            conn, _ = listener.accept()  # one attempt: request_timeout turns urllib3's retries off
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

        server = threading.Thread(target=answer_in_plain_text, daemon=True)
        server.start()
        configuration = client_config(listener.getsockname()[1])
        configuration.host = configuration.host.replace("http://", "https://")
        api = KubernetesApi(threads=2, request_timeout=2, configuration=configuration)
        with pytest.raises(Unreachable) as caught:
            await api.get_lease(NS, "emailtoken-operator")
        assert "ssl" in str(caught.value).lower()
        server.join(5)


# --------------------------------------------------------------------------- the engine's side


MAILBOX = "box@contoso.example"
SPEC = {
    "provider": "Microsoft",
    "flow": "AuthorizationCode",
    "tenantId": "contoso",
    "clientId": "app-id",
    "clientSecretRef": {"name": "app-secret"},
    "emailAddress": MAILBOX,
    "services": ["IMAP"],
}
TOKEN = TokenRef(NS, "box", "uid-1")


class Rotating:
    """A provider that rotates on every refresh and records what it was given."""

    def __init__(self, clock: Any, prefix: str = "") -> None:
        self.clock, self.prefix = clock, prefix
        self.presented: list[str] = []

    def for_spec(self, provider: str) -> Rotating:
        return self

    def refresh(self, spec: Any, creds: ClientCredentials, refresh_token: str) -> TokenSet:
        self.presented.append(refresh_token)
        n = len(self.presented)
        return TokenSet(
            f"{self.prefix}access-token-{n:03d}",
            self.clock() + timedelta(hours=1),
            refresh_token=f"{self.prefix}rt-{n:03d}",
        )


def body() -> dict[str, Any]:
    return {"metadata": {"namespace": NS, "name": "box", "uid": "uid-1", "generation": 1}, "spec": dict(SPEC)}


async def seeded_api() -> InMemoryApi:
    api = InMemoryApi()
    secret = {"metadata": {"name": "app-secret", "namespace": NS}, "data": {"client_secret": "c2VjcmV0LXZhbHVl"}}
    await api.create_secret(NS, secret)
    await GrantStore(api).save(TOKEN, Grant("rt-000", MAILBOX), expected_version=None)
    return api


def grant_rt(api: InMemoryApi) -> str:
    return decode_data(api.secrets[(NS, "emailtoken-grant-box")])["refresh_token"]


async def test_a_fenced_engine_neither_calls_the_provider_nor_writes() -> None:
    """While leadership is not confirmed a step does nothing at all and looks again in a second."""
    api = await seeded_api()
    provider = Rotating(lambda: T0)
    leader = {"fresh": False}
    engine = Engine(
        api,
        provider,
        events=lambda *a, **k: None,
        clock=lambda: T0,
        config=EngineConfig(may_act=lambda: leader["fresh"]),
    )
    writes = list(api.writes)
    result = await engine.step(body())
    assert result.delay == 1.0
    assert provider.presented == [] and api.writes == writes
    leader["fresh"] = True
    assert (await engine.step(body())).refreshed
    assert provider.presented == ["rt-000"] and grant_rt(api) == "rt-001"


async def test_leadership_lost_during_a_step_stops_before_the_provider_call() -> None:
    """The fence is checked again right before the refresh token is presented (the point of no return)."""
    api = await seeded_api()
    provider = Rotating(lambda: T0)
    checks = iter([True, False])
    engine = Engine(
        api,
        provider,
        events=lambda *a, **k: None,
        clock=lambda: T0,
        config=EngineConfig(may_act=lambda: next(checks, False)),
    )
    result = await engine.step(body())
    assert result.delay == 1.0 and provider.presented == []
    assert grant_rt(api) == "rt-000"


async def test_a_stale_grant_writer_loses_and_publishes_nothing() -> None:
    """Two engines (a stale leader still running, and its successor): the successor's grant write
    lands between the stale one's provider answer and its write; the stale write conflicts and
    nothing of it is kept. (The compare-and-swap keeps the Secret right; not spending the token
    twice at the provider is the fence's job, above.)"""
    api = await seeded_api()
    successor = Engine(api, Rotating(lambda: T0, "new-"), events=lambda *a, **k: None, clock=lambda: T0)
    stale = Engine(api, Rotating(lambda: T0, "stale-"), events=lambda *a, **k: None, clock=lambda: T0)
    save = stale.grants.save

    async def successor_saves_first(token: TokenRef, grant: Grant, *, expected_version: str | None) -> Grant:
        assert (await successor.step(body())).refreshed  # it read rt-000 as well, rotated and saved
        return await save(token, grant, expected_version=expected_version)

    stale.grants.save = successor_saves_first  # type: ignore[method-assign]
    result = await stale.step(body())
    assert result.refreshed is False
    assert grant_rt(api) == "new-rt-001", "the stale writer did not overwrite the newer grant"
    assert decode_data(api.secrets[(NS, "box")])["access_token"] == "new-access-token-001"
    with pytest.raises(Conflict):
        await GrantStore(api).save(TOKEN, Grant("stale-rt", MAILBOX), expected_version="1")


# --------------------------------------------------------------------------- provider calls fenced by time


def timed_config(identity: str, provider_timeout: float = 5.0) -> LeaseConfig:
    """The runner's proportions for a 15 s Lease and a 5 s provider timeout (call budget 8 s)."""
    return LeaseConfig(
        namespace=NS,
        identity=identity,
        lease_duration=15.0,
        renew_deadline=10.0,
        retry_period=2.0,
        call_budget=provider_timeout + CALL_MARGIN,
    )


async def test_a_provider_call_may_start_only_while_it_can_end_before_a_takeover() -> None:
    """fresh() alone let a call start up to the renew deadline (10 s) after the last renewal and run
    for the provider timeout past the lease. The call window closes a call budget before the lease
    could pass on: the last call it admits, running its whole budget, ends before the standby gets in."""
    api = InMemoryApi()
    a = LeaderElector(api, timed_config("a"), clock=lambda: T0)
    b = elector(api, "b")
    assert await a.try_acquire()
    assert not await b.try_acquire()  # the standby starts counting the leader's silence
    loop = asyncio.get_running_loop()
    renewed = loop.time()
    while a.call_window() > 0:
        await asyncio.sleep(0.1)
    closed = loop.time() - renewed
    assert closed == pytest.approx(15.0 - 8.0, abs=0.11)
    assert a.fresh(), "the leader may still write (store what it has) but starts no provider call"
    await asyncio.sleep(8.0 - 0.1)  # the last admitted call, lasting its whole budget, ends now
    assert not await b.try_acquire(), "the standby must not be able to take over before that call ended"
    await asyncio.sleep(0.2)
    assert await b.try_acquire()


def test_the_renewal_keeps_the_call_window_open() -> None:
    """The leader renews twice per window when the window is shorter than a third of the lease."""
    assert LeaseConfig(namespace=NS, lease_duration=15.0).renew_every == 5.0  # client-go's proportions
    assert LeaseConfig(namespace=NS, lease_duration=30.0, call_budget=23.0).renew_every == 3.5  # the defaults
    assert LeaseConfig(namespace=NS, lease_duration=25.0, call_budget=23.0).renew_every == 1.0  # the tightest allowed


async def test_a_healthy_leader_never_closes_the_call_window() -> None:
    """With the defaults (30 s Lease, 20 s provider timeout) a leader that renews without trouble
    always admits provider calls: nothing waits in normal operation."""
    api = InMemoryApi()
    a = LeaderElector(
        api,
        LeaseConfig(namespace=NS, identity="a", lease_duration=30, renew_deadline=20, call_budget=20 + CALL_MARGIN),
        clock=lambda: T0,
    )
    assert await a.try_acquire()
    keeper = asyncio.create_task(a.keep())
    lowest = 30.0
    for _ in range(1200):  # two minutes
        await asyncio.sleep(0.1)
        lowest = min(lowest, a.call_window())
    keeper.cancel()
    assert lowest > 2.5, f"the window fell to {lowest:.2f}s"


@pytest.mark.parametrize(
    ("lease", "timeout", "ok"), [(30, 20, True), (25, 20, True), (24.9, 20, False), (15, 20, False), (10, 5, True)]
)
def test_timings_that_cannot_fence_a_provider_call_are_refused(lease: float, timeout: float, ok: bool) -> None:
    problem = timing_problem(lease, timeout)
    assert (problem is None) is ok
    if problem:
        assert f"--lease-duration {lease:g}" in problem and f"--provider-timeout {timeout:g}" in problem
        assert f"({timeout + 5:g} s)" in problem and "\n" not in problem


class SlowRotating(Rotating):
    """Rotating, but each call holds its thread for ``hold`` real seconds first."""

    def __init__(self, clock: Any, hold: float) -> None:
        super().__init__(clock)
        self.hold = hold

    def refresh(self, spec: Any, creds: ClientCredentials, refresh_token: str) -> TokenSet:
        time.sleep(self.hold)
        return super().refresh(spec, creds, refresh_token)


async def test_a_step_finding_the_window_closed_waits_for_the_renewal_then_refreshes() -> None:
    """Leadership confirmed, but too little of the Lease left for a call: the step waits for the
    next renewal (not a second's poll, no log line), then refreshes in the same step."""
    api = await seeded_api()
    provider = Rotating(lambda: T0)
    a = LeaderElector(api, timed_config("a"), clock=lambda: T0)
    assert await a.try_acquire()
    await asyncio.sleep(8)  # fresh (renew deadline 10 s), but the window closed at 7 s
    engine = Engine(api, provider, events=lambda *a, **k: None, clock=lambda: T0, config=EngineConfig(may_act=a))
    loop = asyncio.get_running_loop()
    began = loop.time()
    step = asyncio.create_task(engine.step(body()))
    await asyncio.sleep(1.5)
    assert not step.done() and provider.presented == []
    assert await a.try_acquire()
    result = await step
    assert result.refreshed and provider.presented == ["rt-000"] and grant_rt(api) == "rt-001"
    assert loop.time() - began == pytest.approx(1.5, abs=0.1)


@pytest.mark.looptime(False)
async def test_a_provider_call_queued_past_its_window_is_not_made() -> None:
    """Every provider thread busy: a call admitted by the window but still queued when it closes
    is never made (the thread checks the window again before presenting the token)."""
    api = await seeded_api()
    await GrantStore(api).save(TokenRef(NS, "other", "uid-2"), Grant("rt-other", MAILBOX), expected_version=None)
    provider = SlowRotating(lambda: T0, hold=1.5)
    # A 3 s Lease and a 1 s budget: calls may start during the first 2 s after a renewal.
    a = LeaderElector(
        api,
        LeaseConfig(namespace=NS, identity="a", lease_duration=3, renew_deadline=2.5, call_budget=1.0),
        clock=lambda: T0,
    )
    assert await a.try_acquire()
    engine = Engine(
        api,
        provider,
        events=lambda *a, **k: None,
        clock=lambda: T0,
        config=EngineConfig(may_act=a, provider_threads=1),
    )
    other = body()
    other["metadata"].update(name="other", uid="uid-2")
    await asyncio.sleep(0.8)  # 1.2 s of window left when both steps pass it; the first call holds the thread 1.5 s
    first, second = await asyncio.gather(engine.step(body()), engine.step(other))
    assert first.refreshed and not second.refreshed
    assert provider.presented == ["rt-000"], "the queued call must not present its refresh token"
    stored = decode_data(api.secrets[(NS, "emailtoken-grant-other")])["refresh_token"]
    assert stored == "rt-other"


# --------------------------------------------------------------------------- a pause


def box(i: int) -> dict[str, Any]:
    b = body()
    b["metadata"].update(name=f"box-{i}", uid=f"uid-box-{i}")
    return b


async def test_a_paused_leader_logs_once_and_its_steps_wait_instead_of_polling(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue #16: while a leader could not renew, every token logged a warning and was stepped again
    every second (5,000 lines and no-op steps per second at 5,000 tokens). Now a 60 s outage with
    50 due tokens logs one line when acting pauses and one when it resumes; the steps wait for the
    renewal and the tokens refresh as soon as it comes."""
    api = FlakyApi()
    secret = {"metadata": {"name": "app-secret", "namespace": NS}, "data": {"client_secret": "c2VjcmV0LXZhbHVl"}}
    await api.create_secret(NS, secret)
    tokens = 50
    for i in range(tokens):
        await GrantStore(api).save(
            TokenRef(NS, f"box-{i}", f"uid-box-{i}"), Grant("rt", MAILBOX), expected_version=None
        )
    provider = Rotating(lambda: T0)
    a = LeaderElector(api, timed_config("a"), clock=lambda: T0)
    assert await a.try_acquire()
    keeper = asyncio.create_task(a.keep())
    engine = Engine(api, provider, events=lambda *a, **k: None, clock=lambda: T0, config=EngineConfig(may_act=a))
    steps: list[float] = []
    loop = asyncio.get_running_loop()

    async def step(b: dict[str, Any]) -> float | None:
        steps.append(loop.time())
        return (await engine.step(b)).delay

    scheduler = Scheduler(step, concurrency=4)
    running = asyncio.create_task(scheduler.run())
    api.error = REFUSED
    await asyncio.sleep(11)  # past the renew deadline: paused
    assert not a.fresh()
    with caplog.at_level(logging.INFO, logger="emailtoken.fence"):
        paused_at = loop.time()
        for i in range(tokens):  # every token due now (a restart's first steps, or refresh times reached)
            scheduler.upsert(("ops", f"box-{i}"), box(i))
        await asyncio.sleep(60)
        during = len(steps)
        api.error = None
        await asyncio.sleep(2.5)  # the keeper retries every 2 s
        assert a.fresh()
        for _ in range(100):
            if len(provider.presented) == tokens:
                break
            await asyncio.sleep(0.1)
        resumed_after = loop.time() - paused_at - 60
    keeper.cancel()
    running.cancel()
    await asyncio.gather(keeper, running, return_exceptions=True)
    lines = [r.getMessage() for r in caplog.records]
    assert sum("leadership not confirmed" in line for line in lines) == 1, lines[:5]
    assert sum("tokens act again" in line for line in lines) == 1
    # 4 slots, each step waiting up to 5 s for a renewal: about 4 x 60 / 5 steps, not 50 x 60.
    assert during <= 4 * (60 / 5 + 1), f"{during} steps during a 60 s pause"
    assert len(provider.presented) == tokens, "every due token refreshed once leadership returned"
    assert resumed_after < 5

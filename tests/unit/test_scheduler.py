"""emailtoken.scheduler: due times, wake-ups, errors and concurrency over simulated hours (looptime)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import pytest

from emailtoken.scheduler import Key, Scheduler

pytestmark = pytest.mark.looptime

A: Key = ("ns", "a")
B: Key = ("ns", "b")


def body(key: Key, **extra: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": key[0], "name": key[1]}, **extra}


def key_of(b: Mapping[str, Any]) -> Key:
    return (b["metadata"]["namespace"], b["metadata"]["name"])


def now() -> float:
    return asyncio.get_running_loop().time()


@asynccontextmanager
async def running(scheduler: Scheduler) -> AsyncIterator[asyncio.Task[None]]:
    """Run the dispatcher for the duration of the block, then cancel it as kopf's cleanup does."""
    task = asyncio.create_task(scheduler.run())
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class Log:
    """Records (key, loop time) of every step; the step's answer comes from ``answer``."""

    def __init__(self, answer: Callable[[Key, int], Awaitable[float | None] | float | None]) -> None:
        self.answer = answer
        self.calls: list[tuple[Key, float]] = []

    async def __call__(self, b: Mapping[str, Any]) -> float | None:
        key = key_of(b)
        self.calls.append((key, now()))
        result = self.answer(key, len(self.times(key)))
        if asyncio.iscoroutine(result):
            result = await result
        return result  # type: ignore[return-value]

    def times(self, key: Key) -> list[float]:
        return [t for k, t in self.calls if k == key]


async def test_steps_run_at_their_due_times_over_hours() -> None:
    """Each token is stepped again after the delay its step returned, for hours on end."""
    log = Log(lambda key, n: 3600.0 if key == A else 1800.0)
    scheduler = Scheduler(log)
    start = now()
    async with running(scheduler):
        scheduler.upsert(A, body(A))
        scheduler.upsert(B, body(B))
        await asyncio.sleep(5 * 3600 + 10)
    assert [t - start for t in log.times(A)] == pytest.approx([0, 3600, 7200, 10800, 14400, 18000])
    assert [t - start for t in log.times(B)] == pytest.approx([1800.0 * i for i in range(11)])
    assert scheduler.steps == 17


async def test_due_in_reports_the_next_step() -> None:
    """Metrics and tests can see when a token is next due."""
    scheduler = Scheduler(Log(lambda key, n: 600.0))
    async with running(scheduler):
        scheduler.upsert(A, body(A))
        await asyncio.sleep(100)
        assert scheduler.due_in(A) == pytest.approx(500.0)
    assert scheduler.due_in(B) is None


async def test_wake_runs_at_once_and_replaces_the_old_due_time() -> None:
    """A Secret change wakes the token now; the old due time does not cause an extra step."""
    log = Log(lambda key, n: 3600.0)
    scheduler = Scheduler(log)
    start = now()
    async with running(scheduler):
        scheduler.upsert(A, body(A))
        await asyncio.sleep(100)
        scheduler.wake(A)
        await asyncio.sleep(2 * 3600)
    assert [t - start for t in log.times(A)] == pytest.approx([0, 100, 3700])


async def test_wake_during_a_running_step_steps_again_right_after() -> None:
    """A change seen mid-step is not lost: the token is stepped once more when the step ends."""

    async def slow(key: Key, n: int) -> float:
        await asyncio.sleep(10)
        return 3600.0

    log = Log(slow)
    scheduler = Scheduler(log)
    start = now()
    async with running(scheduler):
        scheduler.upsert(A, body(A))
        await asyncio.sleep(5)
        scheduler.wake(A)
        scheduler.wake(A)  # twice is still once more
        await asyncio.sleep(60)
    assert [t - start for t in log.times(A)] == pytest.approx([0, 10])


async def test_upsert_keeps_the_latest_body_and_wakes_only_when_asked() -> None:
    """The next step sees the newest body; wake=False does not step early."""
    seen: list[Any] = []

    async def step(b: Mapping[str, Any]) -> float:
        seen.append((b["v"], now()))
        return 1000.0

    scheduler = Scheduler(step)
    start = now()
    async with running(scheduler):
        scheduler.upsert(A, body(A, v=1))
        await asyncio.sleep(10)
        scheduler.upsert(A, body(A, v=2))
        await asyncio.sleep(10)
        assert [v for v, _ in seen] == [1]
        scheduler.upsert(A, body(A, v=3), wake=True)
        await asyncio.sleep(1)
    assert [(v, t - start) for v, t in seen] == [(1, pytest.approx(0)), (3, pytest.approx(20))]


async def test_step_returning_none_waits_for_a_wake() -> None:
    """None means: nothing to do until something changes."""
    log = Log(lambda key, n: None)
    scheduler = Scheduler(log)
    start = now()
    async with running(scheduler):
        scheduler.upsert(A, body(A))
        await asyncio.sleep(24 * 3600)
        assert len(log.times(A)) == 1
        scheduler.wake(A)
        await asyncio.sleep(1)
    assert [t - start for t in log.times(A)] == pytest.approx([0, 24 * 3600])


async def test_raising_step_is_retried_after_error_retry(caplog: pytest.LogCaptureFixture) -> None:
    """A bug in one token's step is logged and retried later, not fatal to the dispatcher."""

    def answer(key: Key, n: int) -> float:
        if key == A and n == 1:
            raise RuntimeError("boom")
        return 3600.0

    log = Log(answer)
    scheduler = Scheduler(log, error_retry=30.0)
    start = now()
    async with running(scheduler) as task:
        scheduler.upsert(A, body(A))
        scheduler.upsert(B, body(B))
        await asyncio.sleep(100)
        assert not task.done()
    assert [t - start for t in log.times(A)] == pytest.approx([0, 30])
    assert [t - start for t in log.times(B)] == pytest.approx([0])
    assert "step of ns/a failed unexpectedly; retrying in 30s" in caplog.text


async def test_remove_stops_rescheduling() -> None:
    """A deleted token is never stepped again."""
    log = Log(lambda key, n: 60.0)
    scheduler = Scheduler(log)
    async with running(scheduler):
        scheduler.upsert(A, body(A))
        scheduler.upsert(B, body(B))
        await asyncio.sleep(90)
        scheduler.remove(A)
        scheduler.remove(("ns", "never-added"))
        await asyncio.sleep(3600)
    assert len(log.times(A)) == 2
    assert len(log.times(B)) == 62
    assert len(scheduler) == 1


async def test_remove_while_running_is_not_rescheduled() -> None:
    """A step in flight finishes, but its delay is ignored once the token is gone."""

    async def slow(key: Key, n: int) -> float:
        await asyncio.sleep(10)
        return 1.0

    log = Log(slow)
    scheduler = Scheduler(log)
    async with running(scheduler):
        scheduler.upsert(A, body(A))
        await asyncio.sleep(5)
        scheduler.remove(A)
        scheduler.wake(A)  # a wake for a removed token is ignored
        await asyncio.sleep(100)
    assert len(log.times(A)) == 1
    assert scheduler.steps == 1
    assert len(scheduler) == 0


async def test_concurrency_bound_is_respected() -> None:
    """At most ``concurrency`` steps run at once; the rest queue and all get their turn."""
    active = 0
    peak = 0

    async def step(b: Mapping[str, Any]) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(10)
        active -= 1
        return None

    scheduler = Scheduler(step, concurrency=4)
    start = now()
    async with running(scheduler):
        for i in range(20):
            scheduler.upsert(("ns", f"t{i}"), body(("ns", f"t{i}")))
        await asyncio.sleep(49)
        assert scheduler.steps == 16
        await asyncio.sleep(2)
        assert scheduler.steps == 20
    assert peak == 4
    assert now() - start == pytest.approx(51)


async def test_a_thousand_tokens_are_all_dispatched() -> None:
    """Thousands of tokens on one loop: each is stepped, none twice, within the concurrency budget."""
    log = Log(lambda key, n: asyncio.sleep(1, result=None))
    scheduler = Scheduler(log, concurrency=16)
    keys = [("ns", f"token-{i:04d}") for i in range(1000)]
    start = now()
    async with running(scheduler):
        for key in keys:
            scheduler.upsert(key, body(key))
        await asyncio.sleep(1000 / 16 + 2)
    assert len(scheduler) == 1000
    assert scheduler.steps == 1000
    assert sorted(k for k, _ in log.calls) == keys
    assert max(t for _, t in log.calls) - start == pytest.approx(62, abs=1)


async def test_cancelling_run_cancels_steps_in_flight() -> None:
    """kopf's cleanup cancels the dispatcher; steps still running after the drain are cancelled with it."""
    cancelled = asyncio.Event()

    async def step(b: Mapping[str, Any]) -> float:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 1.0

    scheduler = Scheduler(step)
    async with running(scheduler):
        scheduler.upsert(A, body(A))
        await asyncio.sleep(1)
    assert cancelled.is_set()


async def test_recreated_token_waits_for_the_old_step_to_finish():
    """Delete + recreate with the same name while a step runs: never two steps for one key at once."""
    active = 0
    peak = 0

    async def answer(key: Key, n: int) -> float | None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(10)
        active -= 1
        return None

    log = Log(answer)
    scheduler = Scheduler(log)
    async with running(scheduler):
        scheduler.upsert(A, body(A))
        await asyncio.sleep(1)
        scheduler.remove(A)
        scheduler.upsert(A, body(A, generation=2))
        await asyncio.sleep(30)
    assert peak == 1
    assert len(log.times(A)) == 2
    assert log.times(A)[1] >= 10  # the replacement ran only after the first step finished


async def test_stopping_lets_steps_in_flight_finish_within_the_drain() -> None:
    """A rolling update stops the operator while a step waits for the provider: the step finishes
    (and saves the rotated refresh token it got) instead of being cancelled; nothing new starts."""
    finished: list[Key] = []

    async def step(b: Mapping[str, Any]) -> float:
        await asyncio.sleep(10 if key_of(b) == A else 0)
        finished.append(key_of(b))
        return 60.0

    scheduler = Scheduler(step, drain=25)
    async with running(scheduler):
        scheduler.upsert(A, body(A))
        await asyncio.sleep(1)
        started = now()
    assert finished == [A]
    assert now() - started == pytest.approx(9, abs=0.1)
    assert scheduler.steps == 1


async def test_the_drain_is_bounded() -> None:
    cancelled = asyncio.Event()

    async def step(b: Mapping[str, Any]) -> float:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 1.0

    scheduler = Scheduler(step, drain=25)
    async with running(scheduler):
        scheduler.upsert(A, body(A))
        await asyncio.sleep(1)
        started = now()
    assert cancelled.is_set()
    assert now() - started == pytest.approx(25, abs=0.1)


@pytest.mark.parametrize("turns", range(4))
async def test_a_cancel_that_meets_a_wake_still_stops_the_dispatcher(turns: int) -> None:
    """kopf cancels the dispatcher at shutdown, often just as a step ends and wakes it; on Python
    3.11 asyncio.wait_for returns instead of raising when both land together, and the operator
    would keep stepping tokens instead of stopping."""
    log = Log(lambda key, n: 60.0)
    scheduler = Scheduler(log)
    task = asyncio.create_task(scheduler.run())
    scheduler.upsert(A, body(A))
    await asyncio.sleep(10)
    scheduler.wake(A)
    for _ in range(turns):
        await asyncio.sleep(0)
    task.cancel()
    async with asyncio.timeout(100):
        await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    assert len(log.times(A)) <= 2


# Fair share per namespace (issue #15): a tenant whose token endpoint hangs must not stop the others.

DEADLINE = 20.0  # the provider timeout: how long a hanging endpoint holds a slot


class Holding:
    """Counts each namespace's steps in flight, as the steps themselves see it."""

    def __init__(self) -> None:
        self.now: dict[str, int] = {}
        self.peak: dict[str, int] = {}

    @asynccontextmanager
    async def step(self, key: Key) -> AsyncIterator[None]:
        ns = key[0]
        self.now[ns] = self.now.get(ns, 0) + 1
        self.peak[ns] = max(self.peak.get(ns, 0), self.now[ns])
        try:
            yield
        finally:
            self.now[ns] -= 1

    def __call__(self, *namespaces: str) -> tuple[int, ...]:
        return tuple(self.now.get(ns, 0) for ns in namespaces)


async def test_one_namespace_alone_uses_every_slot() -> None:
    """A single-namespace install (or the only namespace with due work) is not held to a share."""
    holding = Holding()

    async def step(b: Mapping[str, Any]) -> float | None:
        if key_of(b)[0] == "other":
            return 3600.0
        async with holding.step(key_of(b)):
            await asyncio.sleep(DEADLINE)
        return None

    scheduler = Scheduler(step, concurrency=4)
    async with running(scheduler):
        scheduler.upsert(("other", "idle"), body(("other", "idle")))  # known, but not due again for an hour
        await asyncio.sleep(1)
        for i in range(12):
            scheduler.upsert(("busy", f"t{i}"), body(("busy", f"t{i}")))
        await asyncio.sleep(5)
        assert holding("busy") == (4,)
        await asyncio.sleep(3 * DEADLINE)
    assert holding.peak["busy"] == 4
    assert scheduler.steps == 13


async def test_a_hanging_namespace_delays_another_by_at_most_one_deadline() -> None:
    """Forty tokens whose endpoint always hangs for the deadline (then back off 5 s) against four
    slots: the other namespace's refreshes still start within one deadline of their due time.
    By due time alone they would queue behind the whole hanging namespace (~200 s late)."""
    starts: dict[Key, list[float]] = {}

    async def step(b: Mapping[str, Any]) -> float:
        key = key_of(b)
        starts.setdefault(key, []).append(now())
        if key[0] == "hostile":
            await asyncio.sleep(DEADLINE)
            return 5.0
        await asyncio.sleep(0.1)
        return 60.0

    scheduler = Scheduler(step, concurrency=4)
    healthy = [("healthy", f"h{i}") for i in range(3)]
    start = now()
    async with running(scheduler):
        for i in range(40):
            scheduler.upsert(("hostile", f"x{i:02d}"), body(("hostile", f"x{i:02d}")))
        for key in healthy:
            scheduler.upsert(key, body(key))
        await asyncio.sleep(1800)
    lateness = [
        later - (earlier + 0.1 + 60.0)
        for key in healthy
        for earlier, later in itertools.pairwise([start, *starts[key]][1:])
    ]
    assert len(lateness) >= 3 * 25
    assert max(lateness) <= DEADLINE + 0.01
    assert min(starts[key][0] for key in healthy) - start == pytest.approx(0)
    # The hanging namespace keeps every slot the healthy one does not need (work-conserving).
    hostile_steps = sum(len(times) for key, times in starts.items() if key[0] == "hostile")
    assert hostile_steps >= 0.95 * 4 * 1800 / DEADLINE


async def test_a_namespace_gives_up_slots_to_others_as_they_come_free() -> None:
    """A namespace that took every slot while alone keeps at most half of them once another has due work."""

    holding = Holding()

    async def step(b: Mapping[str, Any]) -> None:
        async with holding.step(key_of(b)):
            await asyncio.sleep(10 if key_of(b)[0] == "first" else 30)

    scheduler = Scheduler(step, concurrency=4)
    async with running(scheduler):
        for i in range(20):
            scheduler.upsert(("first", f"t{i:02d}"), body(("first", f"t{i:02d}")))
        await asyncio.sleep(5)
        assert holding("first", "second") == (4, 0)
        for i in range(6):
            scheduler.upsert(("second", f"t{i}"), body(("second", f"t{i}")))
        await asyncio.sleep(10)  # t=15: the first namespace's steps ended at t=10
        assert holding("first", "second") == (2, 2)
        await asyncio.sleep(10)  # t=25: the first namespace's next two ended at t=20
        assert holding("first", "second") == (2, 2)


async def test_busy_namespaces_share_the_slots_evenly_and_keep_their_own_order() -> None:
    """The first namespace to come due takes all six slots; once three namespaces have more due
    work than slots, each holds two as slots come free. Within a namespace, due order still rules."""
    holding = Holding()

    async def answer(key: Key, n: int) -> None:
        async with holding.step(key):
            await asyncio.sleep(10)

    log = Log(answer)
    scheduler = Scheduler(log, concurrency=6)
    namespaces = ["a", "b", "c"]
    async with running(scheduler):
        for ns in namespaces:
            for i in range(10):
                scheduler.upsert((ns, f"t{i}"), body((ns, f"t{i}")))
                await asyncio.sleep(0.01)  # distinct due times, all of a's first
        assert holding(*namespaces) == (6, 0, 0)
        await asyncio.sleep(10.2)  # t=10.5: a's first six steps ended at t=10.00..10.05
        assert holding(*namespaces) == (2, 2, 2)
        await asyncio.sleep(10)
        assert holding(*namespaces) == (2, 2, 2)
        await asyncio.sleep(40)
    assert scheduler.steps == 30
    for ns in namespaces:
        assert [k[1] for k, _ in log.calls if k[0] == ns] == [f"t{i}" for i in range(10)]


async def test_waiting_for_a_slot_is_not_a_busy_loop() -> None:
    """While every slot hangs and hundreds of steps wait, the dispatcher sleeps: an hour of loop
    time passes in a blink of real time, and nothing starts beyond the slots."""
    started = 0

    async def step(b: Mapping[str, Any]) -> None:
        nonlocal started
        started += 1
        await asyncio.sleep(7200)

    scheduler = Scheduler(step, concurrency=4)
    real = time.monotonic()
    async with running(scheduler):
        for i in range(300):
            scheduler.upsert((f"ns{i % 3}", f"t{i}"), body((f"ns{i % 3}", f"t{i}")))
            scheduler.wake((f"ns{i % 3}", f"t{i}"))
        await asyncio.sleep(3600)
        assert started == 4
        assert scheduler.due_in(("ns2", "t299")) == pytest.approx(-3600)
    assert time.monotonic() - real < 2

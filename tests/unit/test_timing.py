"""emailtoken.timing: refresh margins, jitter, keepalive and backoff, with pinned randomness."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from emailtoken.secretdata import PublishedToken
from emailtoken.timing import (
    BACKOFF_CAP,
    DEFAULT_KEEPALIVE,
    INVALID_CLIENT_CAP,
    MIN_REFRESH_INTERVAL,
    Plan,
    SpecFollow,
    attempt_due,
    backoff,
    follow_spec,
    invalid_client_backoff,
    next_refresh,
    ready_until,
    refresh_margin,
    restored_plan,
    step_delay,
    worth_publishing,
)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


class FixedRandom(random.Random):
    """random() always returns the same value: pins the jitter to an extreme."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


@pytest.mark.parametrize(
    ("lifetime", "refresh_before", "margin"),
    [
        (HOUR, None, timedelta(minutes=20)),  # a third of an hour
        (timedelta(hours=2), None, timedelta(minutes=40)),
        (timedelta(minutes=12), None, timedelta(minutes=5)),  # the 5 minute floor (a third is 4m)
        (timedelta(minutes=6), None, timedelta(minutes=3)),  # floor capped at half the lifetime
        (timedelta(seconds=60), None, timedelta(seconds=30)),
        (HOUR, timedelta(minutes=10), timedelta(minutes=10)),  # explicit wins
        (HOUR, timedelta(minutes=2), timedelta(minutes=2)),  # explicit may go below the 5m floor
        (HOUR, timedelta(minutes=45), timedelta(minutes=30)),  # explicit capped at half
        (HOUR, timedelta(0), timedelta(0)),
        (timedelta(0), None, timedelta(0)),
    ],
)
def test_refresh_margin(lifetime: timedelta, refresh_before: timedelta | None, margin: timedelta) -> None:
    """Default max(lifetime/3, 5m), capped at lifetime/2 so short tokens do not loop."""
    assert refresh_margin(lifetime, refresh_before) == margin


def test_next_refresh_is_margin_and_seeded_jitter_before_expiry() -> None:
    """The jitter is drawn from the given rng: the same seed gives the same time."""
    expected_jitter = random.Random(42).uniform(0, 0.1) * timedelta(minutes=20)
    due = next_refresh(T0, T0 + HOUR, rng=random.Random(42))
    assert due == T0 + HOUR - timedelta(minutes=20) - expected_jitter
    assert due == next_refresh(T0, T0 + HOUR, rng=random.Random(42))


@pytest.mark.parametrize("seed", range(50))
def test_next_refresh_jitter_bounds(seed: int) -> None:
    """Jitter only ever moves the refresh earlier, and by at most 10% of the margin."""
    margin = timedelta(minutes=20)
    due = next_refresh(T0, T0 + HOUR, rng=random.Random(seed))
    assert T0 + HOUR - margin * 1.1 <= due <= T0 + HOUR - margin


def test_next_refresh_jitter_extremes() -> None:
    """random() of 0 gives exactly expiry - margin; of ~1 gives expiry - 1.1 * margin."""
    assert next_refresh(T0, T0 + HOUR, rng=FixedRandom(0.0)) == T0 + timedelta(minutes=40)
    almost_one = next_refresh(T0, T0 + HOUR, rng=FixedRandom(0.999999))
    assert abs(almost_one - (T0 + timedelta(minutes=38))) < timedelta(milliseconds=5)


def test_next_refresh_honours_refresh_before() -> None:
    """An explicit margin replaces the default third."""
    due = next_refresh(T0, T0 + HOUR, timedelta(minutes=5), rng=FixedRandom(0.0))
    assert due == T0 + timedelta(minutes=55)


def test_seeded_jitter_spreads_tokens_issued_together() -> None:
    """Tokens issued at the same moment do not all refresh at the same moment."""
    rng = random.Random(7)
    times = {next_refresh(T0, T0 + HOUR, rng=rng) for _ in range(20)}
    assert len(times) == 20


def test_keepalive_caps_long_lived_tokens() -> None:
    """An idle grant is exercised at least every keepalive, far inside the idle limits."""
    due = next_refresh(T0, T0 + timedelta(days=30), rng=random.Random(1))
    assert due == T0 + DEFAULT_KEEPALIVE
    short = next_refresh(T0, T0 + timedelta(hours=2), keepalive=timedelta(minutes=30), rng=random.Random(1))
    assert short == T0 + timedelta(minutes=30)


def test_a_token_born_expired_is_not_refreshed_in_a_loop() -> None:
    """``expires_in: 0`` (or clock skew) used to make the token due at once, again and again:
    a tenant's endpoint could spin the operator. One refresh per MIN_REFRESH_INTERVAL at most."""
    assert next_refresh(T0, T0, rng=random.Random(1)) == T0 + MIN_REFRESH_INTERVAL
    assert next_refresh(T0, T0 - timedelta(minutes=1), rng=random.Random(1)) == T0 + MIN_REFRESH_INTERVAL
    assert next_refresh(T0, T0 + timedelta(seconds=4), rng=random.Random(1)) == T0 + MIN_REFRESH_INTERVAL
    # Without a floor (tests of seconds-long tokens) the old rule holds: due at once.
    assert next_refresh(T0, T0 - timedelta(minutes=1), min_interval=timedelta(0), rng=random.Random(1)) <= T0
    # An hour-long token is not affected.
    assert next_refresh(T0, T0 + timedelta(hours=1), rng=random.Random(1)) > T0 + timedelta(minutes=30)


@pytest.mark.parametrize(
    ("failures", "ceiling"),
    [
        (0, timedelta(seconds=5)),
        (1, timedelta(seconds=5)),
        (2, timedelta(seconds=10)),
        (3, timedelta(seconds=20)),
        (6, timedelta(seconds=160)),
        (7, BACKOFF_CAP),
        (20, BACKOFF_CAP),
    ],
)
def test_backoff_exponential_with_cap(failures: int, ceiling: timedelta) -> None:
    """Doubling from 5s up to 5 minutes; full jitter keeps it within [ceiling/2, ceiling]."""
    assert backoff(failures, rng=FixedRandom(0.0)) == ceiling / 2
    assert backoff(failures, rng=FixedRandom(1.0)) == ceiling
    seeded = backoff(failures, rng=random.Random(3))
    assert seeded == ceiling * (0.5 + random.Random(3).random() * 0.5)


def test_backoff_grows_then_flattens() -> None:
    """Later failures never wait less than earlier ones (same random draw)."""
    delays = [backoff(n, rng=FixedRandom(0.5)) for n in range(1, 15)]
    assert delays == sorted(delays)
    assert delays[0] < delays[5] < delays[-1] == BACKOFF_CAP * 0.75


@pytest.mark.parametrize("failures", [45, 64, 100, 10_000])
def test_backoff_survives_very_long_outages(failures: int) -> None:
    """After hours of failures the delay stays capped instead of overflowing timedelta."""
    assert backoff(failures, rng=FixedRandom(1.0)) == BACKOFF_CAP
    assert invalid_client_backoff(failures, rng=FixedRandom(1.0)) == INVALID_CLIENT_CAP


def test_retry_after_is_a_floor() -> None:
    """A provider's Retry-After wins when longer than our backoff, never shortens it."""
    assert backoff(1, retry_after=120, rng=FixedRandom(1.0)) == timedelta(seconds=120)
    assert backoff(1, retry_after=1, rng=FixedRandom(1.0)) == timedelta(seconds=5)
    assert backoff(20, retry_after=3600, rng=FixedRandom(0.0)) == timedelta(hours=1)


def test_invalid_client_backoff_is_slow() -> None:
    """A wrong client secret is retried from a minute up to half an hour."""
    assert invalid_client_backoff(1, rng=FixedRandom(1.0)) == timedelta(minutes=1)
    assert invalid_client_backoff(1, rng=FixedRandom(0.0)) == timedelta(seconds=30)
    assert invalid_client_backoff(3, rng=FixedRandom(1.0)) == timedelta(minutes=4)
    assert invalid_client_backoff(10, rng=FixedRandom(1.0)) == INVALID_CLIENT_CAP
    for failures in range(1, 12):
        assert invalid_client_backoff(failures, rng=FixedRandom(0.5)) > backoff(failures, rng=FixedRandom(0.5))


def test_a_plan_in_status_is_kept_after_a_restart_unless_it_belongs_to_an_older_token() -> None:
    published = PublishedToken(expires_at=T0 + HOUR, obtained_at=T0, username="", scope="", spec_hash=None)
    assert restored_plan("2026-01-01T12:40:00Z", published) == T0 + timedelta(minutes=40)
    assert restored_plan("2026-01-01T12:00:00Z", published) is None  # not later than obtained: an older plan
    assert restored_plan("2026-01-01T13:30:00Z", published) is None  # after expiry: not this token's
    assert restored_plan("not a time", published) is None
    assert restored_plan("2026-01-01T12:40:00Z", None) is None


def test_the_next_step_is_the_next_attempt_or_sooner_the_expiry_of_a_failing_token() -> None:
    assert step_delay(T0, T0 + HOUR, None) == 3600
    assert step_delay(T0, T0 + HOUR, T0 + timedelta(minutes=5)) == 300  # Ready turns False then
    assert step_delay(T0, None, T0 - HOUR) is None  # expired already, nothing planned: wait for a change
    assert step_delay(T0, T0 - HOUR, None) == 0.0


def test_the_plan_is_restored_or_new_and_now_without_a_published_token() -> None:
    plan = Plan(keepalive=DEFAULT_KEEPALIVE, min_interval=MIN_REFRESH_INTERVAL, rng=FixedRandom(0.0))
    published = PublishedToken(expires_at=T0 + HOUR, obtained_at=T0, username="", scope="", spec_hash="a")
    assert plan.refresh_at(None, None, T0) == T0
    assert plan.refresh_at(published, None, T0, restored=T0 + timedelta(minutes=7)) == T0 + timedelta(minutes=7)
    assert plan.refresh_at(published, timedelta(minutes=10), T0) == T0 + timedelta(minutes=50)
    unknown_start = PublishedToken(expires_at=T0 + HOUR, obtained_at=None, username="", scope="", spec_hash="a")
    assert plan.refresh_at(unknown_start, timedelta(minutes=10), T0) == T0 + timedelta(minutes=50)  # an hour assumed


def test_a_new_spec_starts_over_now_unless_the_published_token_is_from_it() -> None:
    plan = Plan(rng=FixedRandom(0.0))
    ours = PublishedToken(expires_at=T0 + HOUR, obtained_at=T0, username="", scope="", spec_hash="new")
    older = PublishedToken(expires_at=T0 + HOUR, obtained_at=T0, username="", scope="", spec_hash="old")
    emptied = PublishedToken(T0 + HOUR, T0, "", "", "new", has_token=False)
    restored = T0 + timedelta(minutes=30)
    same = follow_spec("new", "new", ours, None, T0, restored=restored, plan=plan)
    assert same == SpecFollow(current=True, start_over_at=None)  # the spec it follows: nothing starts over
    assert follow_spec(None, "new", ours, None, T0, restored=restored, plan=plan) == SpecFollow(True, restored)
    assert follow_spec("old", "new", older, None, T0, restored=restored, plan=plan) == SpecFollow(False, T0)
    assert follow_spec("old", "new", emptied, None, T0, restored=None, plan=plan) == SpecFollow(False, T0)
    assert follow_spec(None, "new", None, None, T0, restored=None, plan=plan) == SpecFollow(False, T0)


def test_an_attempt_is_due_at_its_time_or_when_asked() -> None:
    assert attempt_due(T0, T0, force=False)
    assert not attempt_due(T0, T0 + timedelta(seconds=1), force=False)
    assert not attempt_due(T0, None, force=False)  # waits for a change
    assert attempt_due(T0, None, force=True)  # refresh-now


def test_a_held_access_token_is_published_only_for_its_spec_and_before_it_expires() -> None:
    assert worth_publishing("a", T0 + HOUR, "a", T0)
    assert not worth_publishing("a", T0 + HOUR, "b", T0)  # issued for another spec
    assert not worth_publishing("a", T0, "a", T0)  # expired


def test_a_failing_token_steps_again_when_its_published_token_expires() -> None:
    published = PublishedToken(expires_at=T0 + HOUR, obtained_at=T0, username="", scope="", spec_hash=None)
    assert ready_until(published, True) == T0 + HOUR
    assert ready_until(published, False) is None
    assert ready_until(None, True) is None

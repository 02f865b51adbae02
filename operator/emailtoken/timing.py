"""When to refresh, and how long to wait after a failure.

Pure functions of times and counts; randomness comes in through ``rng`` so tests can pin it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from emailtoken.secretdata import PublishedToken
from emailtoken.timefmt import parse_rfc3339

MIN_MARGIN = timedelta(minutes=5)
#: However short-lived the provider says a token is (``expires_in: 0``), one token is not
#: refreshed more often than this: a tenant's endpoint must not turn the operator into a loop.
MIN_REFRESH_INTERVAL = timedelta(seconds=15)
JITTER_FRACTION = 0.1
BACKOFF_BASE = timedelta(seconds=5)
BACKOFF_CAP = timedelta(minutes=5)
INVALID_CLIENT_BASE = timedelta(minutes=1)
INVALID_CLIENT_CAP = timedelta(minutes=30)
#: Even an idle grant is refreshed this often, far inside Microsoft's 90-day and Google's
#: 6-month (7-day for apps in Testing) idle limits.
DEFAULT_KEEPALIVE = timedelta(days=3)


def refresh_margin(lifetime: timedelta, refresh_before: timedelta | None) -> timedelta:
    """How long before expiry to refresh.

    Default: a third of the lifetime but at least five minutes. Whatever is asked, the
    margin is capped at half the lifetime so that short-lived tokens (demos, tests) do
    not refresh in a tight loop.
    """
    margin = refresh_before if refresh_before is not None else max(lifetime / 3, MIN_MARGIN)
    return max(timedelta(0), min(margin, lifetime / 2))


def next_refresh(
    obtained_at: datetime,
    expires_at: datetime,
    refresh_before: timedelta | None = None,
    *,
    keepalive: timedelta = DEFAULT_KEEPALIVE,
    min_interval: timedelta = MIN_REFRESH_INTERVAL,
    rng: random.Random | None = None,
) -> datetime:
    """The moment to refresh a token obtained at ``obtained_at`` that expires at ``expires_at``.

    A little jitter (up to 10% of the margin, earlier only) spreads tokens issued together.
    """
    lifetime = max(expires_at - obtained_at, timedelta(0))
    margin = refresh_margin(lifetime, refresh_before)
    jitter = (rng or random).uniform(0, JITTER_FRACTION) * margin
    due = expires_at - margin - jitter
    return max(min(due, obtained_at + keepalive), obtained_at + min_interval)


@dataclass(frozen=True)
class Plan:
    """How this operator plans refreshes (its flags), with the jitter's source."""

    keepalive: timedelta = DEFAULT_KEEPALIVE
    min_interval: timedelta = MIN_REFRESH_INTERVAL
    rng: random.Random | None = None

    def refresh_at(
        self,
        published: PublishedToken | None,
        refresh_before: timedelta | None,
        now: datetime,
        restored: datetime | None = None,
    ) -> datetime:
        """When to refresh the published token: the plan ``restored`` from status, else a new one; now
        when nothing is published."""
        if published is None:
            return now
        if restored is not None:
            return restored
        obtained = published.obtained_at or (published.expires_at - timedelta(hours=1))
        return next_refresh(
            obtained,
            published.expires_at,
            refresh_before,
            keepalive=self.keepalive,
            min_interval=self.min_interval,
            rng=self.rng,
        )


@dataclass(frozen=True)
class SpecFollow:
    """What the spec a step reads means for the plan."""

    #: the published token was issued for this spec (an Event is worth it otherwise)
    current: bool
    #: a spec not followed before: forget the failures and attempt at this time; None: the same spec
    start_over_at: datetime | None


def follow_spec(
    followed: str | None,
    fingerprint: str,
    published: PublishedToken | None,
    refresh_before: timedelta | None,
    now: datetime,
    *,
    restored: datetime | None,
    plan: Plan,
) -> SpecFollow:
    """A new spec (``fingerprint`` differs from the ``followed`` one) starts over: refresh now, unless
    the published token is from this spec (a restart), then at the ``restored`` plan or a new one."""
    current = published is not None and published.has_token and published.spec_hash == fingerprint
    if followed == fingerprint:
        return SpecFollow(current, None)
    return SpecFollow(current, plan.refresh_at(published, refresh_before, now, restored) if current else now)


def attempt_due(now: datetime, attempt_at: datetime | None, *, force: bool) -> bool:
    """Does this step attempt a refresh: asked for (refresh-now), or its planned or retry time has come?"""
    return force or (attempt_at is not None and now >= attempt_at)


def worth_publishing(issued_for: str, expires_at: datetime, fingerprint: str, now: datetime) -> bool:
    """Is an access token obtained earlier and not yet published still worth publishing rather than
    asking again: issued for this spec, and not expired?"""
    return issued_for == fingerprint and expires_at > now


def ready_until(published: PublishedToken | None, failing: bool) -> datetime | None:
    """While a token fails, the moment its published access token expires (Ready turns False then:
    step at that moment too); None when it does not fail or nothing is published."""
    return published.expires_at if published is not None and failing else None


def restored_plan(next_refresh_time: str | None, published: PublishedToken | None) -> datetime | None:
    """After a restart, the refresh time already in status, if it still holds (no status writes, no storm).

    A plan not later than when the published token was obtained belongs to an older token: the
    previous process died after writing the consumer Secret and before writing status.
    Following it would refresh a token that is brand new, so it is ignored.
    """
    if not next_refresh_time or published is None:
        return None
    try:
        planned = parse_rfc3339(next_refresh_time)
    except ValueError:
        return None
    obtained = published.obtained_at
    # (both are written to the second, and a plan that was due made the refresh in that very second)
    if planned <= published.expires_at and (obtained is None or planned > obtained):
        return planned
    return None


def step_delay(now: datetime, attempt_at: datetime | None, ready_until: datetime | None) -> float | None:
    """Seconds until the next step (None: only on a change): the next attempt, or sooner the moment
    ``ready_until`` a failing token's published access token expires (Ready turns False then)."""
    candidates = []
    if attempt_at is not None:
        candidates.append((attempt_at - now).total_seconds())
    if ready_until is not None and ready_until > now:
        candidates.append((ready_until - now).total_seconds())
    return max(0.0, min(candidates)) if candidates else None


def backoff(
    failures: int,
    *,
    retry_after: float | None = None,
    base: timedelta = BACKOFF_BASE,
    cap: timedelta = BACKOFF_CAP,
    rng: random.Random | None = None,
) -> timedelta:
    """Exponential backoff with full jitter after ``failures`` consecutive failures (>= 1).

    A provider's Retry-After is honoured as a floor.
    """
    # Doubling in float seconds with a bounded exponent: a timedelta times 2**44 and more
    # overflows, which a few hours of outage reach.
    doublings = min(max(failures - 1, 0), 64)
    ceiling = timedelta(seconds=min(base.total_seconds() * 2.0**doublings, cap.total_seconds()))
    delay = ceiling * (0.5 + (rng or random).random() * 0.5)
    if retry_after is not None:
        delay = max(delay, timedelta(seconds=retry_after))
    return delay


def invalid_client_backoff(failures: int, *, rng: random.Random | None = None) -> timedelta:
    """Slow retries for a wrong client secret: a fix to the Secret wakes the token anyway."""
    return backoff(failures, base=INVALID_CLIENT_BASE, cap=INVALID_CLIENT_CAP, rng=rng)

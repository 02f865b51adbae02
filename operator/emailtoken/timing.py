"""When to refresh, and how long to wait after a failure.

Pure functions of times and counts; randomness comes in through ``rng`` so tests can pin it.
"""

from __future__ import annotations

import random
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


def is_due(now: datetime, refresh_at: datetime) -> bool:
    """True when the refresh time has come."""
    return now >= refresh_at


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

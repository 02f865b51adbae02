"""Turning what the servers and the harness recorded into the benchmark's numbers (pure functions)."""

from __future__ import annotations

import bisect
import itertools
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bench.kubeserver import READ_VERBS, WRITE_VERBS

Key = tuple[str, str]
#: A server log row: (time, verb, resource, namespace, name).
LogRow = Sequence[Any]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100), nearest-rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def rounded(value: float | None, digits: int = 3) -> float | None:
    """Round, keeping None."""
    return None if value is None else round(value, digits)


def in_window(t: float, start: float, end: float) -> bool:
    """start <= t < end."""
    return start <= t < end


def token_calls(calls: Iterable[Mapping[str, Any]], start: float, end: float) -> list[Mapping[str, Any]]:
    """Successful token-endpoint calls in the window (each one is a refresh)."""
    return [
        c for c in calls if c.get("endpoint") == "token" and c.get("status") == 200 and in_window(c["time"], start, end)
    ]


def refresh_intervals(calls: Iterable[Mapping[str, Any]], start: float, end: float) -> list[float]:
    """Per token, the time since its previous refresh, for every refresh in [start, end).

    Counting refreshes in a window is biased when tokens refresh in step (all created at
    once; the baseline refreshes all of them in one pass): a window holds 2 or 3 cycles
    depending on where it starts. The mean interval is the refresh period itself.
    """
    by_client: dict[str, list[float]] = {}
    for c in calls:
        if c.get("endpoint") == "token" and c.get("status") == 200 and c.get("client_id"):
            by_client.setdefault(c["client_id"], []).append(c["time"])
    out: list[float] = []
    for times in by_client.values():
        times.sort()
        out += [b - a for a, b in itertools.pairwise(times) if in_window(b, start, end)]
    return out


def all_calls(calls: Iterable[Mapping[str, Any]], start: float, end: float) -> list[Mapping[str, Any]]:
    """Every provider call in the window (discovery included)."""
    return [c for c in calls if in_window(c["time"], start, end)]


def api_counts(log: Iterable[LogRow], start: float, end: float) -> dict[str, Any]:
    """Subject API requests in the window: reads, writes, and per ``verb resource``."""
    by: Counter[str] = Counter()
    for row in log:
        if in_window(row[0], start, end):
            by[f"{row[1]} {row[2]}"] += 1
    return request_counts(by)


def request_counts(by: Mapping[str, int]) -> dict[str, Any]:
    """Reads, writes, Lease writes and the rest from counts by ``"verb resource"``."""
    reads = sum(n for k, n in by.items() if k.split()[0] in READ_VERBS)
    writes = sum(n for k, n in by.items() if k.split()[0] in WRITE_VERBS)
    lease_writes = sum(n for k, n in by.items() if k.split()[0] in WRITE_VERBS and k.split()[1] == "leases")
    return {
        "reads": reads,
        "writes": writes,
        "lease_writes": lease_writes,  # leader election: a fixed cost per minute, not per token
        "token_writes": writes - lease_writes,
        "by_request": dict(sorted(by.items())),
    }


def latest_before(history: Sequence[tuple[float, float]], t: float) -> float | None:
    """The value of a (seen at, value) history as it stood just before ``t``."""
    index = bisect.bisect_left(history, (t, -math.inf)) - 1
    return history[index][1] if index >= 0 else None


def lateness(
    calls: Iterable[Mapping[str, Any]],
    client_key: Mapping[str, Key],
    plans: Mapping[Key, Sequence[tuple[float, float]]],
) -> list[float]:
    """For each refresh: provider call time minus the nextRefreshTime status showed before it.

    Status carries whole seconds (rounded down), so a refresh can look up to ~1 s late
    that was on time; it can never look early unless it was.
    """
    out = []
    for c in calls:
        key = client_key.get(c.get("client_id") or "")
        due = latest_before(plans.get(key, ()), c["time"]) if key else None
        if due is not None:
            out.append(c["time"] - due)
    return out


def remaining_at_refresh(
    calls: Iterable[Mapping[str, Any]],
    client_key: Mapping[str, Key],
    expiries: Mapping[Key, Sequence[tuple[float, float]]],
) -> list[float]:
    """For each refresh: how long the token it replaced was still valid (from the consumer Secret)."""
    out = []
    for c in calls:
        key = client_key.get(c.get("client_id") or "")
        expires = latest_before(expiries.get(key, ()), c["time"]) if key else None
        if expires is not None:
            out.append(expires - c["time"])
    return out


def expired_exposure(expiries: Mapping[Key, Sequence[tuple[float, float]]], start: float, end: float) -> dict[str, Any]:
    """From the consumer Secrets' version history: how long any of them held an expired token.

    A version seen at s_k with expiry e_k was replaced when the next version was seen; if
    that came after e_k (or never, before ``end``), the Secret held an expired token meanwhile.
    """
    tokens, seconds = 0, 0.0
    for versions in expiries.values():
        bad = 0.0
        for i, (_seen, expires) in enumerate(versions):
            replaced = versions[i + 1][0] if i + 1 < len(versions) else end
            lo, hi = max(expires, start), min(replaced, end)
            if hi > lo:
                bad += hi - lo
        if bad > 0:
            tokens += 1
            seconds += bad
    return {"tokens": tokens, "token_seconds": round(seconds, 2)}


def summary(values: Sequence[float]) -> dict[str, Any]:
    """count, min, p50, p99, max."""
    return {
        "count": len(values),
        "min": rounded(min(values) if values else None),
        "p50": rounded(percentile(values, 50)),
        "p99": rounded(percentile(values, 99)),
        "max": rounded(max(values) if values else None),
    }


def median(values: Sequence[float | None]) -> float | None:
    """Median of the values that are not None (lower middle for an even count)."""
    present = sorted(v for v in values if v is not None)
    if not present:
        return None
    mid = len(present) // 2
    return present[mid] if len(present) % 2 else (present[mid - 1] + present[mid]) / 2


def modelled_period(lifetime: float, refresh_before: float | None = None) -> float:
    """Mean seconds between a token's refreshes under the operator's policy (``emailtoken.timing``).

    A token obtained at t is refreshed at t + lifetime - margin - jitter, the jitter uniform
    in [0, JITTER_FRACTION x margin] (mean half of that), never sooner than the minimum interval.
    This is the figure the steady window measures as ``refresh_period_s`` (plus lateness).
    """
    from datetime import timedelta

    from emailtoken import timing

    before = None if refresh_before is None else timedelta(seconds=refresh_before)
    margin = timing.refresh_margin(timedelta(seconds=lifetime), before).total_seconds()
    period = lifetime - margin * (1 + timing.JITTER_FRACTION / 2)
    return max(period, timing.MIN_REFRESH_INTERVAL.total_seconds())


def modelled_calls(lifetime: float, refresh_before: float | None = None) -> dict[str, float]:
    """Provider calls per token per lifetime and per hour under the operator's policy."""
    period = modelled_period(lifetime, refresh_before)
    return {"per_lifetime": round(lifetime / period, 3), "per_hour": round(3600 / period, 3)}


def steady_rates(calls: Sequence[Mapping[str, Any]], start: float, end: float, lifetime: float) -> dict[str, Any]:
    """Refresh period and provider calls per token per hour / per token lifetime, from intervals."""
    intervals = refresh_intervals(calls, start, end)
    if not intervals:
        return {
            "refresh_period_s": None,
            "provider_calls_per_token_hour": None,
            "provider_calls_per_token_lifetime": None,
        }
    mean = sum(intervals) / len(intervals)
    return {
        "refresh_period_s": rounded(mean, 2),
        "provider_calls_per_token_hour": rounded(3600 / mean, 2),
        "provider_calls_per_token_lifetime": rounded(lifetime / mean, 3),
    }

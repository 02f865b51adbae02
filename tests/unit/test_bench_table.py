"""bench.run's table: medians per configuration and operator/baseline ratios."""

from __future__ import annotations

from bench.run import METRICS, medians, table


def run(writes: float, rss: float) -> dict:
    return {"steady": {"api_writes_per_refresh": writes}, "process": {"subject_rss_mib": rss}}


def test_medians_and_ratio_column() -> None:
    summary = {
        "100": {
            "operator": medians([run(2.0, 120), run(2.2, 130), run(9.0, 110)]),
            "baseline": medians([run(4.0, 60), run(4.0, 70), run(4.0, 65)]),
        }
    }
    assert summary["100"]["operator"]["API writes per refresh (excluding Lease)"] == 2.2
    text = table(summary, [100], ["operator", "baseline"])
    head, _, *rows = text.splitlines()
    assert head == "| Metric (median of runs) | N=100 operator | N=100 baseline | N=100 ratio |"
    assert len(rows) == len(METRICS)
    assert "| API writes per refresh (excluding Lease) | 2.20 | 4.00 | 0.55 |" in rows
    assert "| Subject RSS (MiB) | 120 | 65 | 1.85 |" in rows
    dash = "\u2013"  # not measured: a dash, not a zero
    assert f"| Idle: provider calls | {dash} | {dash} | {dash} |" in rows


def test_refresh_rate_comes_from_intervals_not_window_counts() -> None:
    """Ten tokens refreshed in step every 40 s: a 90-s window starting on a refresh holds three
    of them per token (a count says 2 per minute); the intervals say 1.5 per minute."""
    from bench.analysis import refresh_intervals, steady_rates

    calls = [
        {"endpoint": "token", "status": 200, "client_id": f"c{i}", "time": 1000.0 + 40 * k}
        for i in range(10)
        for k in range(-1, 4)
    ]
    calls.append({"endpoint": "token", "status": 400, "client_id": "c0", "time": 1010.0})  # a refused call
    window = [c for c in calls if c["status"] == 200 and 1000 <= c["time"] < 1090]
    assert len(window) == 30
    assert set(refresh_intervals(calls, 1000, 1090)) == {40.0}
    rates = steady_rates(calls, 1000, 1090, lifetime=60)
    assert rates == {
        "refresh_period_s": 40.0,
        "provider_calls_per_token_hour": 90.0,
        "provider_calls_per_token_lifetime": 1.5,
    }
    assert steady_rates([], 0, 1, lifetime=60)["refresh_period_s"] is None

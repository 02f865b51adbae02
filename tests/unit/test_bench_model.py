"""The refresh model the benchmark validates: calls per token from the policy in emailtoken.timing."""

from __future__ import annotations

import pytest
from bench.analysis import modelled_calls, modelled_period


def test_default_margin_costs_1_54_calls_per_lifetime_at_any_lifetime() -> None:
    # a third of the lifetime, up to 10 % of it earlier (5 % on average): every 0.65 lifetimes
    for lifetime in (3600, 5400, 86400):
        assert modelled_calls(lifetime)["per_lifetime"] == pytest.approx(1.538, abs=0.001)
    assert modelled_calls(3600)["per_hour"] == pytest.approx(1.54, abs=0.01)  # 60-minute tokens
    assert modelled_calls(5400)["per_hour"] == pytest.approx(1.03, abs=0.01)  # 90-minute tokens


def test_bench_lifetimes_match_the_periods_measured() -> None:
    # the benchmark's 60-s and 120-s tokens with refreshBefore a third: 39 s and 78 s (measured 39.0, 78.0)
    assert modelled_period(60, 20) == pytest.approx(39.0)
    assert modelled_period(120, 40) == pytest.approx(78.0)


def test_margin_is_the_trade_off_between_outage_tolerance_and_calls() -> None:
    # a longer margin survives a longer provider outage and costs more calls; capped at half the lifetime
    calls = [modelled_calls(3600, minutes * 60)["per_hour"] for minutes in (10, 20, 30, 45)]
    assert calls == sorted(calls)
    assert calls[2] == calls[3]  # 45 minutes is capped at 30
    assert modelled_calls(600)["per_lifetime"] > modelled_calls(3600)["per_lifetime"]  # the 5-minute floor

"""emailtoken.metrics in-process: the Observer's families, label hygiene, forget, probes.

The real operator process exporting these over HTTP is tested in
tests/integration/test_metrics.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import requests
from prometheus_client import generate_latest

from emailtoken import metrics

EXPIRES = datetime(2026, 11, 29, 13, 0, 0, 750000, tzinfo=UTC)


def value(obs: metrics.MetricsObserver, metric: str, /, **labels: str) -> float | None:
    return obs.registry.get_sample_value(metric, labels)


def test_token_state_and_forget() -> None:
    obs = metrics.MetricsObserver()
    key = ("mail", "inbox")
    obs.token_state(key, provider="Microsoft", ready=True, authorized=True, expires_at=EXPIRES, next_refresh=EXPIRES)
    labels = {"namespace": "mail", "name": "inbox", "provider": "Microsoft"}
    # Whole seconds, as status.expiresAt shows them.
    assert (
        value(obs, "emailtoken_token_expiry_timestamp_seconds", **labels) == EXPIRES.replace(microsecond=0).timestamp()
    )
    assert (
        value(obs, "emailtoken_token_next_refresh_timestamp_seconds", **labels)
        == EXPIRES.replace(microsecond=0).timestamp()
    )
    assert value(obs, "emailtoken_token_ready", **labels) == 1.0
    assert value(obs, "emailtoken_token_authorized", **labels) == 1.0
    assert value(obs, "emailtoken_tokens") == 1.0
    # A provider change replaces the series instead of leaving a stale one behind.
    obs.token_state(key, provider="Google", ready=False, authorized=True, expires_at=None, next_refresh=None)
    assert value(obs, "emailtoken_token_ready", **labels) is None
    google = {**labels, "provider": "Google"}
    assert value(obs, "emailtoken_token_ready", **google) == 0.0
    assert value(obs, "emailtoken_token_expiry_timestamp_seconds", **google) is None
    assert value(obs, "emailtoken_token_next_refresh_timestamp_seconds", **google) is None
    obs.forget(key)
    obs.forget(key)  # twice is fine
    assert value(obs, "emailtoken_token_authorized", **google) is None
    assert value(obs, "emailtoken_tokens") == 0.0


def test_counters_and_histogram() -> None:
    obs = metrics.MetricsObserver()
    key = ("mail", "inbox")
    obs.refresh_attempt(key, "Microsoft", "ok")
    obs.refresh_attempt(key, "Microsoft", "InvalidClient")
    obs.refresh_attempt(key, "Microsoft", "InvalidClient")
    obs.provider_call("Microsoft", "app_token", 0.2, "ok")
    obs.provider_call("Microsoft", "app_token", 3.0, "ProviderUnavailable")
    assert value(obs, "emailtoken_refresh_attempts_total", provider="Microsoft", outcome="ok") == 1
    assert value(obs, "emailtoken_refresh_attempts_total", provider="Microsoft", outcome="error") == 2
    assert value(obs, "emailtoken_refresh_failures_total", provider="Microsoft", reason="InvalidClient") == 2
    ok = {"provider": "Microsoft", "operation": "app_token", "outcome": "ok"}
    assert value(obs, "emailtoken_provider_request_duration_seconds_count", **ok) == 1
    assert value(obs, "emailtoken_provider_request_duration_seconds_bucket", **ok, le="0.25") == 1
    assert value(obs, "emailtoken_provider_request_duration_seconds_bucket", **ok, le="0.1") == 0
    err = {**ok, "outcome": "error"}
    assert value(obs, "emailtoken_provider_request_duration_seconds_sum", **err) == 3.0


def test_labels_never_carry_free_text() -> None:
    obs = metrics.MetricsObserver()
    leak = "eyJ0eXAiOiJKV1QiLCJhbGciOi.secret"
    obs.refresh_attempt(("ns", "t"), leak, f"error: {leak}")
    obs.provider_call(leak, leak, 1.0, leak)
    obs.token_state(("ns", "t"), provider=leak, ready=False, authorized=False, expires_at=None, next_refresh=None)
    text = generate_latest(obs.registry).decode()
    assert leak not in text and "secret" not in text
    assert value(obs, "emailtoken_refresh_failures_total", provider="unknown", reason="Other") == 1
    assert metrics.reason_label("ReauthorizationRequired") == "ReauthorizationRequired"
    assert metrics.operation_label("device_poll") == "device_poll"


def test_health_phases() -> None:
    now = [100.0]
    health = metrics.Health(clock=lambda: now[0])
    assert health.alive() and not health.ready()  # starting, no beat yet
    health.beat()
    health.phase = metrics.STANDBY
    assert health.ready()
    health.phase = metrics.RUNNING
    assert health.ready()
    now[0] += metrics.STALE_AFTER + 1  # the loop stopped beating
    assert not health.alive() and not health.ready()
    health.beat()
    health.phase = metrics.STOPPING
    assert health.alive() and not health.ready()


def test_health_names_a_problem_and_only_a_blocking_one_fails_readiness() -> None:
    """A missing Lease permission cannot be waited out (not ready); an unreachable API server can."""
    health = metrics.Health()
    health.beat()
    health.phase = metrics.STANDBY
    health.problem = 'lease ops/x: HTTP 403 Forbidden: ... cannot get resource "leases" ...'
    health.blocked = True
    assert not health.ready()
    assert health.describe() == 'standby: lease ops/x: HTTP 403 Forbidden: ... cannot get resource "leases" ...'
    health.problem, health.blocked = "lease ops/x: API server unreachable: refused", False
    assert health.ready() and health.describe().endswith("API server unreachable: refused")
    health.problem = ""
    assert health.describe() == "standby"


def test_http_endpoints() -> None:
    obs = metrics.observer()
    assert metrics.observer() is obs and metrics.health() is obs.health
    server = metrics.serve(0, "127.0.0.1")
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        body = requests.get(base + "/metrics", timeout=5).text
        assert "emailtoken_tokens " in body and "process_resident_memory_bytes" in body
        assert requests.get(base + "/healthz", timeout=5).status_code == 200
        previous = obs.health.phase, obs.health.last_beat
        try:
            obs.health.phase = metrics.STARTING
            assert requests.get(base + "/readyz", timeout=5).status_code == 503
            obs.health.beat()
            obs.health.phase = metrics.STANDBY
            r = requests.get(base + "/readyz", timeout=5)
            assert (r.status_code, r.text) == (200, "standby\n")
        finally:
            obs.health.phase, obs.health.last_beat = previous
        assert requests.get(base + "/other", timeout=5).status_code == 404
    finally:
        server.shutdown()
        server.server_close()


def test_expiry_rounding_matches_rfc3339() -> None:
    from emailtoken.timefmt import parse_rfc3339, rfc3339

    moment = datetime.now(UTC) + timedelta(seconds=3599.9)
    assert metrics._seconds(moment) == parse_rfc3339(rfc3339(moment)).timestamp()

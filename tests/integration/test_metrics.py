"""The real operator process with ``--metrics-port``: what Prometheus scrapes from it.

Runs against the local Kubernetes API and the local provider like the other integration
tests; the module's own operator fixture adds the metrics port. Checks every family's
values against the EmailToken's status, the failure counters for a wrong client secret,
the probes, that a deleted token's series go away, and (last) that no secret value ever
appears in a scrape.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from emailtoken_dev.devprovider import DevProviderThread
from tests.integration.conftest import REDIRECT_BASE
from tests.support.kube import ApiClient, KmockThread, wait_for
from tests.support.operator_process import OperatorProcess
from tests.support.ports import free_port
from tests.support.tokens import client_credentials

pytestmark = pytest.mark.usefixtures("operator")
CLIENT_SECRETS: set[str] = set()  # every client secret this module hands to the operator
NAMESPACES: set[str] = set()


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def operator(
    kube: KmockThread, provider: DevProviderThread, workdir: Path, metrics_port: int
) -> Iterator[OperatorProcess]:
    """The conftest operator plus ``--metrics-port`` (overrides the shared fixture for this module)."""
    op = OperatorProcess(
        kube.kubeconfig,
        workdir,
        ca_bundle=provider.ca_pem_path,
        extra_args=["--redirect-base-url", REDIRECT_BASE, "--metrics-port", str(metrics_port)],
        name="operator-metrics",
    ).start()
    op.wait_log("emailtoken operator started")
    yield op
    op.stop()


def scrape_text(port: int) -> str:
    r = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    r.raise_for_status()
    assert r.headers["Content-Type"].startswith("text/plain")
    return r.text


Labels = frozenset[tuple[str, str]]


def scrape(port: int) -> dict[str, dict[Labels, float]]:
    """Sample name -> {labels: value}."""
    out: dict[str, dict[Labels, float]] = {}
    for family in text_string_to_metric_families(scrape_text(port)):
        for sample in family.samples:
            out.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return out


def value(samples: dict[str, dict[Labels, float]], metric: str, /, **labels: str) -> float | None:
    """The value of the one series with exactly these labels, or None."""
    return samples.get(metric, {}).get(frozenset(labels.items()))


def app_token(provider: DevProviderThread, name: str, client_id: str, **spec: Any) -> dict[str, Any]:
    return client_credentials(provider, name, client_id=client_id, mailbox="shared@contoso.com", **spec)


def add_app(api: ApiClient, provider: DevProviderThread, namespace: str, *, right: str, given: str) -> str:
    client_id = f"app-{namespace}"
    provider.add_client(client_id, right, mailboxes=["shared@contoso.com"])
    api.create_secret(namespace, "app-secret", {"client_secret": given})
    CLIENT_SECRETS.update({right, given})
    NAMESPACES.add(namespace)
    return client_id


def ready(api: ApiClient, ns: str, name: str) -> bool:
    cond = api.condition(ns, name, "Ready")
    return bool(cond and cond["status"] == "True")


def timestamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_probes_answer(metrics_port: int) -> None:
    base = f"http://127.0.0.1:{metrics_port}"
    assert requests.get(base + "/healthz", timeout=5).status_code == 200
    # Ready once the Lease is held (or while standing by): the local API grants it at once.
    wait_for(lambda: requests.get(base + "/readyz", timeout=5).status_code == 200, 20, what="/readyz 200")
    assert requests.get(base + "/nothing-here", timeout=5).status_code == 404
    assert value(scrape(metrics_port), "emailtoken_leader") == 1.0


def test_a_refreshed_token_is_reported(
    api: ApiClient, provider: DevProviderThread, namespace: str, metrics_port: int
) -> None:
    client_id = add_app(api, provider, namespace, right="metrics-secret-1", given="metrics-secret-1")
    provider.token_lifetime = 20
    try:
        api.create("emailtokens", namespace, app_token(provider, "inbox", client_id, refreshBefore="8s"))
        first = wait_for(lambda: ready(api, namespace, "inbox") and api.secret_data(namespace, "inbox"), 30)
        second = wait_for(
            lambda: (d := api.secret_data(namespace, "inbox")) and d["access_token"] != first["access_token"] and d,
            30,
            what="a refreshed token",
        )
    finally:
        provider.token_lifetime = 3600
    status = wait_for(
        lambda: (
            (s := api.get("emailtokens", namespace, "inbox")["status"]) and s["expiresAt"] == second["expires_at"] and s
        ),
        10,
        what="status of the refresh",
    )
    labels = {"namespace": namespace, "name": "inbox", "provider": "Microsoft"}

    def consistent() -> dict[str, dict[Labels, float]] | None:
        # Status and the scrape are read separately; retry until both show the same step.
        current = api.get("emailtokens", namespace, "inbox")["status"]
        samples = scrape(metrics_port)
        expiry = value(samples, "emailtoken_token_expiry_timestamp_seconds", **labels)
        return samples if expiry == timestamp(current["expiresAt"]) else None

    samples = wait_for(consistent, 10, what="expiry gauge == status.expiresAt")
    assert value(samples, "emailtoken_token_expiry_timestamp_seconds", **labels) == timestamp(second["expires_at"])
    assert value(samples, "emailtoken_token_ready", **labels) == 1.0
    assert value(samples, "emailtoken_token_authorized", **labels) == 1.0
    next_refresh = value(samples, "emailtoken_token_next_refresh_timestamp_seconds", **labels)
    assert next_refresh is not None and next_refresh < timestamp(status["expiresAt"])
    assert value(samples, "emailtoken_tokens") >= 1
    # Counters are per provider (no per-token series): at least this token's two issues.
    assert value(samples, "emailtoken_refresh_attempts_total", provider="Microsoft", outcome="ok") >= 2
    ok_calls = value(
        samples,
        "emailtoken_provider_request_duration_seconds_count",
        provider="Microsoft",
        operation="app_token",
        outcome="ok",
    )
    assert ok_calls is not None and ok_calls >= 2
    duration = value(
        samples,
        "emailtoken_provider_request_duration_seconds_sum",
        provider="Microsoft",
        operation="app_token",
        outcome="ok",
    )
    assert duration is not None and 0 < duration < 60 * ok_calls
    inf_bucket = value(
        samples,
        "emailtoken_provider_request_duration_seconds_bucket",
        provider="Microsoft",
        operation="app_token",
        outcome="ok",
        le="+Inf",
    )
    assert inf_bucket == ok_calls
    # Only namespace/name/provider on per-token series.
    for name in (
        "emailtoken_token_expiry_timestamp_seconds",
        "emailtoken_token_next_refresh_timestamp_seconds",
        "emailtoken_token_ready",
        "emailtoken_token_authorized",
    ):
        assert all({k for k, _ in series} == {"namespace", "name", "provider"} for series in samples[name])


def test_a_wrong_client_secret_is_reported(
    api: ApiClient, provider: DevProviderThread, namespace: str, metrics_port: int
) -> None:
    before = value(
        scrape(metrics_port), "emailtoken_refresh_failures_total", provider="Microsoft", reason="InvalidClient"
    )
    client_id = add_app(api, provider, namespace, right="metrics-right-secret", given="metrics-wrong-secret")
    api.create("emailtokens", namespace, app_token(provider, "broken", client_id))
    wait_for(
        lambda: (c := api.condition(namespace, "broken", "Authorized")) and c["reason"] == "InvalidClient",
        30,
        what="Authorized=False InvalidClient",
    )
    labels = {"namespace": namespace, "name": "broken", "provider": "Microsoft"}
    samples = wait_for(
        lambda: (s := scrape(metrics_port)) and value(s, "emailtoken_token_ready", **labels) is not None and s, 10
    )
    assert value(samples, "emailtoken_token_ready", **labels) == 0.0
    assert value(samples, "emailtoken_token_authorized", **labels) == 0.0
    assert value(samples, "emailtoken_token_expiry_timestamp_seconds", **labels) is None  # nothing published
    failures = value(samples, "emailtoken_refresh_failures_total", provider="Microsoft", reason="InvalidClient")
    assert failures is not None and failures >= (before or 0) + 1
    assert value(samples, "emailtoken_refresh_attempts_total", provider="Microsoft", outcome="error") >= 1
    errors = value(
        samples,
        "emailtoken_provider_request_duration_seconds_count",
        provider="Microsoft",
        operation="app_token",
        outcome="error",
    )
    assert errors is not None and errors >= 1

    # Fixing the Secret flips the gauges.
    fixed = base64.b64encode(b"metrics-right-secret").decode()
    api.patch("secrets", namespace, "app-secret", {"data": {"client_secret": fixed}})
    wait_for(lambda: ready(api, namespace, "broken"), 20, what="recovery")
    wait_for(lambda: value(scrape(metrics_port), "emailtoken_token_ready", **labels) == 1.0, 10, what="ready gauge 1")


def test_a_deleted_token_leaves_no_series(
    api: ApiClient, provider: DevProviderThread, namespace: str, metrics_port: int
) -> None:
    client_id = add_app(api, provider, namespace, right="metrics-secret-gone", given="metrics-secret-gone")
    api.create("emailtokens", namespace, app_token(provider, "gone", client_id))
    wait_for(lambda: ready(api, namespace, "gone"), 30)
    labels = {"namespace": namespace, "name": "gone", "provider": "Microsoft"}
    wait_for(lambda: value(scrape(metrics_port), "emailtoken_token_ready", **labels) == 1.0, 10)
    count = value(scrape(metrics_port), "emailtoken_tokens")
    api.delete("emailtokens", namespace, "gone")

    def gone() -> bool:
        text = scrape_text(metrics_port)
        return f'namespace="{namespace}"' not in text

    wait_for(gone, 10, what="the deleted token's series to disappear")
    assert value(scrape(metrics_port), "emailtoken_tokens") == count - 1


def test_a_standby_replica_passes_its_probes(
    kube: KmockThread, provider: DevProviderThread, workdir: Path, operator: OperatorProcess
) -> None:
    """A second replica waits for the Lease: alive and ready (a rollout may proceed), not the writer."""
    port = free_port()
    standby = OperatorProcess(
        kube.kubeconfig,
        workdir,
        ca_bundle=provider.ca_pem_path,
        extra_args=["--redirect-base-url", REDIRECT_BASE, "--metrics-port", str(port)],
        name="operator-standby",
    ).start()
    try:
        base = f"http://127.0.0.1:{port}"

        def probe(path: str) -> requests.Response | None:
            try:
                return requests.get(base + path, timeout=5)
            except requests.ConnectionError:
                return None

        ready = wait_for(lambda: (r := probe("/readyz")) is not None and r.status_code == 200 and r, 20)
        assert ready.text == "standby\n"
        assert probe("/healthz").status_code == 200
        samples = scrape(port)
        assert value(samples, "emailtoken_leader") == 0.0
        assert value(samples, "emailtoken_tokens") == 0.0  # no engine: it refreshes nothing
        assert "emailtoken operator started" not in standby.log
        assert value(scrape(operator_port(operator)), "emailtoken_leader") == 1.0
    finally:
        standby.stop()


def operator_port(op: OperatorProcess) -> int:
    return int(op.args[op.args.index("--metrics-port") + 1])


def test_no_secret_value_in_the_scrape(api: ApiClient, metrics_port: int) -> None:
    """Runs last: every client secret and every issued access token of this module."""
    secrets = set(CLIENT_SECRETS)
    for ns in NAMESPACES:
        for s in api.list("secrets", ns):
            data = api.secret_data(ns, s["metadata"]["name"]) or {}
            secrets.update(v for k, v in data.items() if k in {"access_token", "xoauth2", "client_secret"})
    assert len(secrets) >= 6
    text = scrape_text(metrics_port)
    leaked = [s[:6] + "…" for s in secrets if s and s in text]
    assert not leaked, f"secret values in /metrics: {leaked}"
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert set(sample.labels) <= {"namespace", "name", "provider", "reason", "operation", "outcome", "le"} | (
                set(sample.labels) if not sample.name.startswith("emailtoken_") else set()
            ), sample

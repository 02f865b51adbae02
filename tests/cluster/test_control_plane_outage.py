"""Issue #16, "a control-plane outage kills the operator": the operator rides out a dead API
server and a dead etcd on a real control plane, and spends no refresh token while it cannot
prove that it still holds the Lease.

The operator runs with the chart's leader-election arguments, a 15 s Lease (renew deadline
10 s, retry every 2 s) and a 5 s provider timeout (the defaults, 30 s and 20 s, would only
stretch every figure). The local provider rotates refresh tokens and
revokes the whole family when a spent one comes back, so a refresh token presented twice
would show up as an ``invalid_grant`` call and a revoked grant.

Every test that takes a part of the shared control plane down restores it in ``finally``
and waits until the API server reads from etcd again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from emailtoken.timefmt import parse_rfc3339
from emailtoken_dev.devprovider import DevProviderThread
from tests.support.cluster import ControlPlane
from tests.support.faultkit import (
    Delegated,
    SecretLedger,
    access_token,
    annotate,
    delegated_token,
    grant_refresh_token,
    is_ready,
    refresh_calls,
    refresh_token_status,
    reuse_errors,
    status,
)
from tests.support.faultsuite import leader_identity, provider_reset
from tests.support.kube import ApiClient, wait_for
from tests.support.operator_process import OperatorProcess
from tests.support.ports import free_port

LEASE = 15.0
RENEW_DEADLINE = LEASE * 2 / 3  # runner: a leader stops acting this long after its last renewal
RETRY = LEASE / 7.5  # runner: how often a paused leader tries to renew
#: Outage of the API server: a lease and 20 s more. Past the renew deadline the leader must have
#: stopped acting, past the lease any observer would call the Lease expired (the old code's leader
#: had exited by then), and the tokens' refreshes (due 24-30 s after they were issued) fall into it,
#: so the test shows they wait for the API instead of being spent blind. 60 s (the issue's figure)
#: proves nothing more and would not fit this file's budget next to the other two outages.
OUTAGE = LEASE + 20
LIFETIME = 60  # access tokens: refreshed about half-way, so a refresh is due during the outage
ETCD_DOWN = 10.0
#: From the API server's restart to fresh tokens: its start-up (~2.5 s), one renewal attempt
#: (RETRY), a paused step's look again (1 s), the provider call and two writes; generous for a
#: loaded 2-CPU machine.
FRESH_BOUND = 15.0
CHART_ARGS = ["--leader-election", "--lease-name", "emailtoken-operator"]
TIMINGS = ["--lease-duration", f"{LEASE:g}", "--provider-timeout", "5"]


@pytest.fixture
def ledger() -> SecretLedger:
    return SecretLedger()


@pytest.fixture(autouse=True)
def _short_tokens(provider: DevProviderThread) -> Iterator[None]:
    yield from provider_reset(provider, LIFETIME)


@pytest.fixture
def restore(cluster: ControlPlane) -> Iterator[ControlPlane]:
    """The shared control plane, brought back up after the test whatever happened (listed last
    by the tests, so it is torn down first: namespace clean-up needs the API)."""
    yield cluster
    if "etcd" not in cluster.procs:
        cluster.start_etcd()
    if "kube-apiserver" not in cluster.procs:
        cluster.start_apiserver()


def start(
    start_operator: Callable[..., OperatorProcess], namespaces: list[str], **kw: Any
) -> tuple[OperatorProcess, int]:
    """An operator with the chart's leader-election args and a metrics/probe port."""
    port = free_port()
    op = start_operator(namespaces, extra_args=[*CHART_ARGS, *TIMINGS, "--metrics-port", str(port)], **kw)
    return op, port


def readyz(port: int) -> tuple[int, str]:
    r = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
    return r.status_code, r.text.strip()


def lease_spec(admin: ApiClient, namespace: str) -> dict[str, Any]:
    return (admin.get("leases", namespace, "emailtoken-operator") or {}).get("spec") or {}


def calls_between(provider: DevProviderThread, t: Delegated, start: float, end: float = float("inf")) -> list[Any]:
    return [c for c in refresh_calls(provider, t.client_id) if start <= c.time <= end]


def assert_no_reuse(admin: ApiClient, provider: DevProviderThread, t: Delegated) -> None:
    """No refresh token came back twice, and the grant Secret holds the one live token."""
    assert reuse_errors(provider, t.client_id) == 0
    assert all(c.status == 200 for c in refresh_calls(provider, t.client_id))
    assert refresh_token_status(provider, grant_refresh_token(admin, t.namespace, t.name) or "") == "active"


def fresh_since(admin: ApiClient, provider: DevProviderThread, t: Delegated, old: str | None) -> bool:
    """The consumer Secret holds a new access token the provider knows as active, and Ready says so."""
    token = access_token(admin, t.namespace, t.name)
    return bool(token and token != old and (provider.token_info(token) or {}).get("active")) and is_ready(
        admin, t.namespace, t.name
    )


def test_the_operator_rides_out_an_api_server_outage_longer_than_its_lease(
    admin: ApiClient,
    provider: DevProviderThread,
    make_namespace: Callable[[str], str],
    start_operator: Callable[..., OperatorProcess],
    ledger: SecretLedger,
    restore: ControlPlane,
) -> None:
    """API server SIGKILLed for OUTAGE s, then restarted on the same port: the leader stays up,
    spends nothing while it cannot renew, renews the same Lease (no transition; its standby
    does not snatch it) and refreshes each token that came due exactly once, within
    FRESH_BOUND of the API server's restart."""
    cluster = restore
    tokens = [
        delegated_token(admin, provider, ledger, namespace=make_namespace("out"), name="box", create=False)
        for _ in range(2)
    ]
    op, port = start(start_operator, [t.namespace for t in tokens])
    # A hot standby (the chart with replicaCount 2): it saw nothing during the outage, so it must
    # not read the Lease left unrenewed since before it as a dead leader's and take it over.
    standby, _ = start(start_operator, [t.namespace for t in tokens], wait=False)
    standby.wait_log("waiting for leadership", timeout=30)
    for t in tokens:
        t.create(admin)
    for t in tokens:
        wait_for(lambda t=t: is_ready(admin, t.namespace, t.name), 30, what=f"{t.namespace} Ready")
    before = {t.namespace: access_token(admin, t.namespace, t.name) for t in tokens}
    lease_ns = tokens[0].namespace
    holder = lease_spec(admin, lease_ns)["holderIdentity"]
    assert holder == leader_identity(op)

    planned = {t.namespace: parse_rfc3339(status(admin, t.namespace, t.name)["nextRefreshTime"]) for t in tokens}
    killed_at = time.time()
    cluster.stop_apiserver()
    try:
        problems = []
        while time.time() - killed_at < OUTAGE:
            assert op.proc is not None and op.proc.poll() is None, f"the operator exited:\n{op.log[-3000:]}"
            problems.append(readyz(port))
            time.sleep(1)
    finally:
        restarted_at = time.time()  # nothing can reach the API server before this
        cluster.start_apiserver()
    ready_at = time.time()

    wait_for(lambda: all(fresh_since(admin, provider, t, before[t.namespace]) for t in tokens), 40, what="fresh")
    fresh_after = time.time() - restarted_at
    print(
        f"\nAPI server down {restarted_at - killed_at:.1f}s; ready {ready_at - restarted_at:.1f}s after its restart; "
        f"tokens fresh {fresh_after:.1f}s after its restart"
    )

    assert op.proc is not None and op.proc.poll() is None
    assert fresh_after <= FRESH_BOUND, f"tokens fresh only {fresh_after:.1f}s after the API server's restart"
    # The probe said what was wrong, and the process stayed ready to resume (nothing to fix by hand).
    assert any(code == 200 and "API server unreachable" in text for code, text in problems), problems
    # Paused, not dead: the same process renewed the same Lease, nobody took it over in between.
    spec = lease_spec(admin, lease_ns)
    assert spec["holderIdentity"] == holder and int(spec.get("leaseTransitions") or 0) == 0
    assert "acting again" in op.log and "exiting" not in op.log
    # Said once for all tokens when acting paused and once when it resumed; no step polled each
    # second meanwhile (it used to log a line per token per second).
    assert op.log.count("leadership not confirmed") == 1, op.log.count("leadership not confirmed")
    assert op.log.count("tokens act again") == 1
    assert "acquired leadership" not in standby.log and standby.proc is not None and standby.proc.poll() is None
    for t in tokens:
        due_at = planned[t.namespace].timestamp()
        assert killed_at + RENEW_DEADLINE + 1 < due_at < restarted_at, "the refresh came due while the API was away"
        blind = calls_between(provider, t, killed_at + RENEW_DEADLINE + 1, restarted_at)
        assert blind == [], f"{t.client_id}: refresh token spent without a fresh lease: {blind}"
        due = calls_between(provider, t, killed_at)
        assert len(due) == 1, f"{t.client_id}: {len(due)} provider calls for one due refresh"
        assert_no_reuse(admin, provider, t)
    ledger.harvest(admin, [t.namespace for t in tokens])
    assert not ledger.leaks(op.log, standby.log, *ledger.api_texts(admin))


def test_an_operator_started_while_the_api_server_is_down_waits_then_works(
    admin: ApiClient,
    provider: DevProviderThread,
    namespace: str,
    start_operator: Callable[..., OperatorProcess],
    ledger: SecretLedger,
    restore: ControlPlane,
) -> None:
    """Issue #16's other crash: acquire() raised at start-up. Now the process waits, says why
    (log and /readyz: not ready yet, issue #18's start check), and becomes the leader and
    refreshes once the API server is back."""
    cluster = restore
    t = delegated_token(admin, provider, ledger, namespace=namespace, name="box")
    cluster.stop_apiserver()
    try:
        op, port = start(start_operator, [namespace], wait=False)
        op.wait_log("cannot reach the Kubernetes API server", timeout=30)
        time.sleep(RETRY * 3)  # several attempts, all refused
        assert op.proc is not None and op.proc.poll() is None, op.log[-3000:]
        code, text = readyz(port)
        assert code == 503 and text.startswith("starting: cannot reach the Kubernetes API server"), text
        assert "connection refused" in text, text
        assert "acquired leadership" not in op.log
    finally:
        restarted_at = time.time()
        cluster.start_apiserver()
    op.wait_log("emailtoken operator started", timeout=30)
    wait_for(lambda: fresh_since(admin, provider, t, None), 30, what="Ready")
    print(f"\nstarted while the API server was down: Ready {time.time() - restarted_at:.1f}s after its restart")
    assert f"the Kubernetes API server at {cluster.url} answers now" in op.log
    assert readyz(port) == (200, "running")
    assert len(refresh_calls(provider, t.client_id)) == 1
    assert_no_reuse(admin, provider, t)


def test_etcd_stopped_in_the_middle_of_a_refresh(
    admin: ApiClient,
    provider: DevProviderThread,
    namespace: str,
    start_operator: Callable[..., OperatorProcess],
    ledger: SecretLedger,
    restore: ControlPlane,
) -> None:
    """etcd SIGKILLed while the provider is answering a refresh (the rotated refresh token is on
    its way and must be written to the grant Secret), restarted ETCD_DOWN s later: the
    process survives, the write lands, and the spent refresh token is never presented again."""
    cluster = restore
    t = delegated_token(admin, provider, ledger, namespace=namespace, name="box")
    op, _ = start(start_operator, [namespace])
    wait_for(lambda: is_ready(admin, namespace, t.name), 30, what="Ready")
    old = access_token(admin, namespace, t.name)
    # The next refresh is answered 3 s late; etcd dies as soon as the provider has the request.
    provider.faults.add("token", delay=3, match_grant_type="refresh_token", match_client_id=t.client_id)
    annotate(admin, namespace, t.name, "emailtoken.io/refresh-now", "1")
    wait_for(lambda: not provider.faults.pending(), 20, what="the refresh reached the provider")
    killed_at = time.time()
    cluster.stop_etcd()
    try:
        time.sleep(ETCD_DOWN)
        assert op.proc is not None and op.proc.poll() is None, op.log[-3000:]
    finally:
        restarted_at = time.time()
        cluster.start_etcd()
    back_at = time.time()
    wait_for(lambda: fresh_since(admin, provider, t, old), 60, what="fresh after etcd returned")
    print(
        f"\netcd down {ETCD_DOWN:.0f}s mid-refresh: token fresh {time.time() - back_at:.1f}s after reads worked again"
    )
    assert op.proc is not None and op.proc.poll() is None
    calls = refresh_calls(provider, t.client_id)
    assert len(calls) == 2, "the initial refresh and the one etcd interrupted"
    # The rotated refresh token reached the operator while etcd was down: its grant write had to wait.
    assert killed_at < calls[-1].time < restarted_at and calls[-1].status == 200
    assert_no_reuse(admin, provider, t)
    assert (status(admin, namespace, t.name).get("handledAnnotations") or {}).get("refreshNow") == "1"
    assert lease_spec(admin, namespace)["holderIdentity"] == leader_identity(op)

"""Issue #14: leader election on a real API server, with the chart's settings and RBAC.

Two replicas run with the chart's arguments (``--leader-election --lease-namespace
<release namespace> --lease-name <name>``) and a 15 s Lease with a 5 s provider
timeout (the defaults, 30 s and 20 s, keep the same proportions and would only slow this) as a
ServiceAccount holding exactly the chart's rules (``emailtoken.rbac``: the namespaced rows
in each watched namespace, the Lease row in the release namespace). The local provider
rotates refresh tokens and revokes the whole family when a spent one comes back, so a
refresh token redeemed twice would show up as an ``invalid_grant`` call and a revoked grant.

A replica that may not touch the Lease, or whose credential is rejected, or whose Lease
namespace does not exist, says exactly that (in the API server's words: verb, resource,
namespace) in its log and on ``/readyz``, instead of "waiting for leadership".
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from emailtoken import rbac
from emailtoken_dev.devprovider import DevProviderThread
from tests.support.cluster import ControlPlane
from tests.support.faultkit import (
    Delegated,
    SecretLedger,
    delegated_token,
    grant_family,
    grant_refresh_token,
    is_ready,
    refresh_calls,
    refresh_token_status,
    reuse_errors,
)
from tests.support.faultsuite import leader_identity, lease_holder, provider_reset
from tests.support.kube import ApiClient, wait_for
from tests.support.operator_process import OperatorProcess
from tests.support.ports import free_port

LEASE, PROVIDER_TIMEOUT = 15.0, 5.0
TIMINGS = ["--lease-duration", f"{LEASE:g}", "--provider-timeout", f"{PROVIDER_TIMEOUT:g}"]
#: The leader writes the Lease this often: twice within the window in which provider calls may
#: start (the lease minus the provider timeout and 3 s to store an answer), see LeaseConfig.
RENEW_EVERY = (LEASE - PROVIDER_TIMEOUT - 3) / 2
RETRY = LEASE / 7.5  # a standby looks this often
#: A standby takes over after a full lease of silence, counted from when it saw the last
#: renewal: at least LEASE - RENEW_EVERY after the kill (that renewal was up to RENEW_EVERY
#: old), at most LEASE + 2 RETRY (it sees a renewal up to RETRY late, and looks every RETRY).
TAKEOVER_MIN, TAKEOVER_MAX = LEASE - RENEW_EVERY, LEASE + 2 * RETRY + 1
#: Access tokens live 45 s and are refreshed about half-way (capped margin, up to 10 % jitter):
#: even a refresh that falls due just as the leader dies is made by the successor before the
#: token expires (22.5 s + TAKEOVER_MAX + start-up < 45 s), so the consumer never holds an
#: expired token.
LIFETIME = 45
LEASE_NAME = "emailtoken-operator"
StartOperator = Callable[..., OperatorProcess]


@pytest.fixture
def ledger() -> SecretLedger:
    return SecretLedger()


@pytest.fixture(autouse=True)
def _short_tokens(provider: DevProviderThread) -> Iterator[None]:
    yield from provider_reset(provider, LIFETIME)


def operator_account(
    cluster: ControlPlane, admin: ApiClient, release: str, watched: list[str], *, lease_rules: bool = True
) -> Path:
    """The chart's ServiceAccount and rules (from emailtoken.rbac); its TokenRequest kubeconfig."""
    account = (release, "emailtoken-operator")
    admin.create(
        "serviceaccounts", release, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account[1]}}
    )
    rules = rbac.rules(rbac.Component.OPERATOR)
    for namespace in watched:
        admin.bind_role(namespace, "emailtoken-operator", rules, account)
    if lease_rules:
        lease = rbac.release_namespace_rules(rbac.Component.OPERATOR, leader_election=True)
        admin.bind_role(release, "emailtoken-operator-leader-election", lease, account)
    return cluster.service_account_kubeconfig(*account)


def replica(
    start_operator: StartOperator, release: str, watched: list[str], name: str, **kw: Any
) -> tuple[OperatorProcess, int]:
    """One replica with the chart's leader-election args (and a metrics/probe port, as the chart has)."""
    port = free_port()
    args = ["--leader-election", "--lease-namespace", release, "--lease-name", LEASE_NAME, *TIMINGS]
    op = start_operator(watched, extra_args=[*args, "--metrics-port", str(port)], name=name, wait=False, **kw)
    return op, port


def readyz(port: int) -> tuple[int, str]:
    r = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
    return r.status_code, r.text.strip()


def leader_gauge(port: int) -> float:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    (line,) = [x for x in text.splitlines() if x.startswith("emailtoken_leader ")]
    return float(line.split()[1])


def refresh_times(provider: DevProviderThread, t: Delegated, since: float = 0.0) -> list[float]:
    return [c.time for c in refresh_calls(provider, t.client_id) if c.time >= since]


def assert_each_refresh_token_redeemed_once(admin: ApiClient, provider: DevProviderThread, t: Delegated) -> None:
    """From the provider's records: every refresh answered 200, no invalid_grant (a reuse), the
    family unrevoked, one successor per redemption, and the grant Secret holds the only live one."""
    calls = refresh_calls(provider, t.client_id)
    assert calls and all(c.status == 200 for c in calls), [(c.status, c.error) for c in calls]
    assert reuse_errors(provider, t.client_id) == 0
    live = grant_refresh_token(admin, t.namespace, t.name) or ""
    assert refresh_token_status(provider, live) == "active"
    family = grant_family(provider, live)
    assert family.revoked is None
    members = [r for r in provider.state._refresh.values() if r.grant_id == family.grant_id]
    assert sorted(r.status for r in members) == ["active"] + ["rotated"] * len(calls)


def test_two_replicas_one_leader_failover_after_sigkill_keeps_rotating_tokens_fresh(
    cluster: ControlPlane,
    admin: ApiClient,
    provider: DevProviderThread,
    make_namespace: Callable[[str], str],
    start_operator: StartOperator,
    ledger: SecretLedger,
) -> None:
    """Exactly one leader by the Lease; the standby runs nothing. SIGKILL the leader: the
    standby takes over within [TAKEOVER_MIN, TAKEOVER_MAX] s and keeps refreshing the rotating
    refresh tokens the dead leader saved; none is redeemed twice and no access token expires."""
    release = make_namespace("rel")
    tokens = [
        delegated_token(admin, provider, ledger, namespace=make_namespace("le"), name="box", create=False)
        for _ in range(2)
    ]
    watched = [t.namespace for t in tokens]
    kubeconfig = operator_account(cluster, admin, release, watched)
    a, a_port = replica(start_operator, release, watched, "replica-a", kubeconfig=kubeconfig)
    a.wait_log("emailtoken operator started", timeout=30)
    b, b_port = replica(start_operator, release, watched, "replica-b", kubeconfig=kubeconfig)
    b.wait_log(f"waiting for leadership (lease {release}/{LEASE_NAME} is held by {leader_identity(a)})", timeout=30)
    for t in tokens:
        t.create(admin)
    for t in tokens:
        wait_for(lambda t=t: is_ready(admin, t.namespace, t.name), 30, what=f"{t.namespace} Ready")

    # Exactly one leader: the Lease names a; b stands by (ready, not leading, never started kopf).
    assert lease_holder(admin, release) == leader_identity(a) != ""
    assert readyz(a_port) == (200, "running") and readyz(b_port) == (200, "standby")
    assert (leader_gauge(a_port), leader_gauge(b_port)) == (1.0, 0.0)
    assert "emailtoken operator started" not in b.log
    # Killed at a quiet moment: every token's rotated refresh token is saved (the next refresh
    # is ~20 s away); a SIGKILL between a provider answer and the grant write is the restart
    # tests' subject, not this one's.
    for t in tokens:
        wait_for(
            lambda t=t: (
                refresh_token_status(provider, grant_refresh_token(admin, t.namespace, t.name) or "") == "active"
            ),
            10,
            what="rotated refresh token saved",
        )
    killed_at = time.monotonic()
    a.kill()
    wait_for(
        lambda: lease_holder(admin, release) not in ("", leader_identity(a)),
        TAKEOVER_MAX + 5,
        interval=0.2,
        what="takeover",
    )
    takeover = time.monotonic() - killed_at
    b.wait_log("emailtoken operator started", timeout=15)
    print(f"\nstandby took the Lease {takeover:.1f}s after the leader's SIGKILL")
    assert TAKEOVER_MIN - 0.5 <= takeover <= TAKEOVER_MAX, f"takeover after {takeover:.1f}s"
    assert lease_holder(admin, release) == leader_identity(b)
    assert readyz(b_port) == (200, "running") and leader_gauge(b_port) == 1.0

    # The new leader keeps the rotating tokens fresh: two refreshes each, the first presenting
    # the refresh token the dead leader saved.
    took_over = provider.state.now()
    wait_for(
        lambda: all(len(refresh_times(provider, t, took_over)) >= 2 for t in tokens),
        2 * LIFETIME,
        what="two refreshes by the new leader",
    )
    for t in tokens:
        wait_for(lambda t=t: is_ready(admin, t.namespace, t.name), 10, what="Ready")
        assert_each_refresh_token_redeemed_once(admin, provider, t)
        times = refresh_times(provider, t)
        gaps = [round(y - x, 1) for x, y in itertools.pairwise(times)]
        assert all(g < LIFETIME for g in gaps), f"an access token expired between refreshes: {gaps}"
        assert all(g > 5 for g in gaps), f"refreshes too close together (two writers?): {gaps}"
    ledger.harvest(admin, watched)
    assert not ledger.leaks(a.log, b.log, *ledger.api_texts(admin))


def test_a_missing_lease_permission_is_named_and_fixing_it_needs_no_restart(
    cluster: ControlPlane,
    admin: ApiClient,
    make_namespace: Callable[[str], str],
    start_operator: StartOperator,
) -> None:
    """Without the chart's Lease Role the replica logs, and /readyz (503) shows, the API
    server's own words: which verb on which resource in which namespace. Granting ``get``
    only moves the complaint to ``create``; the full Role lets the same process lead."""
    release, watched = make_namespace("rel"), make_namespace("le")
    kubeconfig = operator_account(cluster, admin, release, [watched], lease_rules=False)
    op, port = replica(start_operator, release, [watched], "no-lease-rights", kubeconfig=kubeconfig)
    op.wait_log('cannot get resource "leases"', timeout=30)
    line = next(x for x in op.log.splitlines() if 'cannot get resource "leases"' in x)
    assert "ERROR" in line and "HTTP 403 Forbidden" in line
    assert f'leases.coordination.k8s.io "{LEASE_NAME}" is forbidden' in line
    assert "system:serviceaccount:" in line and f'in the namespace "{release}"' in line
    assert "is held" not in op.log and "acquired leadership" not in op.log
    code, text = readyz(port)
    assert (
        code == 503
        and text.startswith(f"standby: lease {release}/{LEASE_NAME}: HTTP 403 Forbidden")
        and ('cannot get resource "leases"' in text)
    ), text

    account = (release, "emailtoken-operator")
    rules = [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get"]}]
    admin.bind_role(release, "lease-get-only", rules, account)
    op.wait_log('cannot create resource "leases"', timeout=30)
    assert 'cannot create resource "leases"' in readyz(port)[1]

    lease = rbac.release_namespace_rules(rbac.Component.OPERATOR, leader_election=True)
    admin.bind_role(release, "emailtoken-operator-leader-election", lease, account)
    op.wait_log("emailtoken operator started", timeout=30)
    assert "the API server answers again (was: Forbidden)" in op.log
    assert lease_holder(admin, release) == leader_identity(op) != ""
    assert readyz(port) == (200, "running")
    assert op.proc is not None and op.proc.poll() is None


def test_a_missing_lease_namespace_is_named(namespace: str, start_operator: StartOperator) -> None:
    """A create answered 404 (no such namespace) is named with what to do, never 'the lease is held'.
    (A rejected credential ends the process at start, and is named on a renewal:
    tests/cluster/test_first_hour_failures.py.)"""
    nowhere, nowhere_port = replica(start_operator, f"{namespace}-gone", [namespace], "no-such-namespace")
    words = f'HTTP 404 NotFound: namespaces "{namespace}-gone" not found; create that namespace, or choose another'
    nowhere.wait_log(words, timeout=30)
    code, text = readyz(nowhere_port)
    assert code == 503 and words in text, text
    assert "is held" not in nowhere.log and nowhere.proc is not None and nowhere.proc.poll() is None

"""Issue #16, "no grant lost": what a leader does with a refresh in flight when it loses the
Lease, and what the callback says when it may not store a grant, on a real API server.

The local provider rotates refresh tokens and revokes the whole family when a spent one comes
back, so a refresh token presented twice shows up as an ``invalid_grant`` call and a revoked
grant. The operators run with the chart's leader-election arguments and a 15 s Lease with a 9 s
provider timeout (the defaults, 30 s and 20 s, would only make the test slower).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes
import pytest

from emailtoken.callback import pkce
from emailtoken.callback.signin import SignInRefused, replace_grant
from emailtoken.callback.state import StateSealer
from emailtoken.kube import KubernetesApi
from emailtoken.model import TokenRef
from emailtoken.secretdata import Grant
from emailtoken_dev.devprovider import DevProviderThread
from tests.support.cluster import ControlPlane
from tests.support.faultkit import (
    SecretLedger,
    annotate,
    delegated_token,
    grant_family,
    grant_refresh_token,
    is_ready,
    refresh_calls,
    refresh_token_status,
    reuse_errors,
    status,
    token_manifest,
)
from tests.support.faultsuite import leader_identity, lease_holder, provider_reset
from tests.support.kube import ApiClient, wait_for
from tests.support.operator_process import OperatorProcess

LEASE, PROVIDER_TIMEOUT = 15, 9
#: The provider answers the refresh this late: longer than the 3 s (lease/5) the runner used to
#: give kopf after losing the Lease, shorter than the provider timeout.
LATE = 7.0
LEASE_NAME = "emailtoken-operator"
REFRESH_NOW = "emailtoken.io/refresh-now"


@pytest.fixture
def ledger() -> SecretLedger:
    return SecretLedger()


@pytest.fixture(autouse=True)
def _no_faults_left(provider: DevProviderThread) -> Iterator[None]:
    yield from provider_reset(provider)


def replica(start_operator: Callable[..., OperatorProcess], release: str, watched: list[str], name: str) -> Any:
    args = ["--leader-election", "--lease-namespace", release, "--lease-name", LEASE_NAME]
    timings = ["--lease-duration", str(LEASE), "--provider-timeout", str(PROVIDER_TIMEOUT)]
    return start_operator(watched, extra_args=[*args, *timings], name=name, wait=False)


def test_a_leader_losing_the_lease_mid_refresh_still_stores_the_rotated_refresh_token(
    admin: ApiClient,
    provider: DevProviderThread,
    make_namespace: Callable[[str], str],
    start_operator: Callable[..., OperatorProcess],
    ledger: SecretLedger,
) -> None:
    """The Lease is taken from the leader while its refresh is at the provider (the test writes
    another holder into it). The leader starts nothing new, but waits for the answer, stores the
    rotated refresh token (compare-and-swap on the grant) and exits 1; the standby takes over
    after a full lease and presents that token, never the spent one. Before, the runner cancelled
    kopf 3 s after the loss: the answer was thrown away and the standby's refresh revoked the grant."""
    release = make_namespace("rel")
    t = delegated_token(admin, provider, ledger, namespace=make_namespace("ho"), name="box", create=False)
    leader = replica(start_operator, release, [t.namespace], "leader")
    leader.wait_log("emailtoken operator started", timeout=30)
    standby = replica(start_operator, release, [t.namespace], "standby")
    standby.wait_log("waiting for leadership", timeout=30)
    t.create(admin)
    wait_for(lambda: is_ready(admin, t.namespace, t.name), 30, what="Ready")
    spent = grant_refresh_token(admin, t.namespace, t.name) or ""
    calls_before = len(refresh_calls(provider, t.client_id))

    provider.faults.add("token", delay=LATE, match_grant_type="refresh_token", match_client_id=t.client_id)
    annotate(admin, t.namespace, t.name, REFRESH_NOW, "1")
    wait_for(lambda: not provider.faults.pending(), 15, interval=0.05, what="the refresh reached the provider")
    taken_at = time.time()
    admin.patch("leases", release, LEASE_NAME, {"spec": {"holderIdentity": "intruder"}})
    leader.wait_log("was taken by intruder; stopping", timeout=5)
    noticed = time.time() - taken_at
    assert leader.proc is not None
    code = leader.proc.wait(LATE + PROVIDER_TIMEOUT + 10)
    exited = time.time() - taken_at
    assert code == 1 and "exiting after losing leadership" in leader.log

    # The answer came after the leader knew it had lost the Lease, and was stored anyway.
    answered = refresh_calls(provider, t.client_id)[calls_before:]
    assert [c.status for c in answered] == [200]
    late_by = answered[0].time - taken_at
    assert late_by > noticed, "the provider answered before the leader noticed the loss: nothing was shown"
    stored = grant_refresh_token(admin, t.namespace, t.name) or ""
    rotated_and_stored = stored != spent  # (compared apart: a failed assert would print both tokens)
    assert rotated_and_stored, "the grant still holds the spent refresh token: the rotated one was lost"
    assert refresh_token_status(provider, stored) == "active"
    assert refresh_token_status(provider, spent) == "rotated"
    print(
        f"\nlease taken; the leader noticed after {noticed:.1f}s, the provider answered after {late_by:.1f}s, "
        f"the leader stored the rotated token and exited after {exited:.1f}s"
    )

    # The standby takes over after a full lease of the intruder's silence and refreshes with the
    # token the old leader stored.
    standby.wait_log("emailtoken operator started", timeout=LEASE + 10)
    assert lease_holder(admin, release) == leader_identity(standby) != ""
    annotate(admin, t.namespace, t.name, REFRESH_NOW, "2")
    wait_for(
        lambda: (
            (status(admin, t.namespace, t.name).get("handledAnnotations") or {}).get("refreshNow") == "2"
            and is_ready(admin, t.namespace, t.name)
        ),
        30,
        what="the new leader's refresh",
    )
    calls = refresh_calls(provider, t.client_id)[calls_before:]
    assert [c.status for c in calls] == [200, 200], [(c.status, c.error) for c in calls]
    assert reuse_errors(provider, t.client_id) == 0
    live = grant_refresh_token(admin, t.namespace, t.name) or ""
    rotated_again = live != stored
    assert rotated_again and refresh_token_status(provider, live) == "active"
    assert grant_family(provider, live).revoked is None
    ledger.harvest(admin, [t.namespace])
    assert not ledger.leaks(leader.log, standby.log, *ledger.api_texts(admin))


async def test_a_callback_that_may_not_write_the_grant_names_the_missing_permission(
    cluster: ControlPlane, admin: ApiClient, namespace: str
) -> None:
    """The API server's own refusal (verb, resource, namespace) reaches the person signing in,
    as PermissionDenied; it used to read 'APIUnavailable ... try again', which no retry fixes."""
    account = "callback-without-patch"
    admin.create(
        "serviceaccounts", namespace, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}}
    )
    admin.bind_role(
        namespace, account, [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}], (namespace, account)
    )
    # A real owner: the grant Secret is owned by its EmailToken, and the garbage collector deletes
    # a Secret whose owner does not exist.
    spec = {
        "provider": "Google",
        "clientId": "app.apps.googleusercontent.com",
        "clientSecretRef": {"name": "app-secret"},
        "emailAddress": "alice@example.com",
        "services": ["Gmail"],
    }
    owner = admin.create("emailtokens", namespace, token_manifest("alice", spec))
    token = TokenRef(namespace, "alice", owner["metadata"]["uid"])
    old = Grant(refresh_token="rt-old", account="alice@example.com", scope="s", obtained_at="t", updated_at="t")
    as_admin = kubernetes.config.new_client_from_config(config_file=str(cluster.admin_kubeconfig))
    await replace_grant(KubernetesApi(as_admin), token, old)
    restricted = kubernetes.config.new_client_from_config(
        config_file=str(cluster.service_account_kubeconfig(namespace, account))
    )
    sign_in = StateSealer(b"k" * 32).seal(token, verifier=pkce.new_verifier())[1]
    started = time.monotonic()
    with pytest.raises(SignInRefused) as refused:
        await replace_grant(KubernetesApi(restricted), token, Grant("rt-new", "alice@example.com"), sign_in=sign_in)
    assert time.monotonic() - started < 5, "a refusal is not retried for the whole patience"
    exc = refused.value
    print("\nMESSAGE", exc.message)
    assert (exc.reason, exc.status) == ("PermissionDenied", 500), exc
    assert f"system:serviceaccount:{namespace}:{account}" in exc.message
    assert 'cannot patch resource "secrets"' in exc.message and f'in the namespace "{namespace}"' in exc.message
    assert grant_refresh_token(admin, namespace, "alice") == "rt-old"

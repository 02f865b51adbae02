"""Grant safety on a real API server: rotated refresh tokens survive contested and refused writes.

* The grant Secret's compare-and-swap against real resourceVersions: a label change is a
  409 like a new sign-in, and only the re-read tells them apart.
* ~50 refreshes while something keeps relabelling and annotating the grant Secrets, with
  a provider that rotates refresh tokens and revokes the whole grant when one is presented
  twice: nothing may be redeemed twice, no grant the provider honours may be lost.
* A conflicting write at each point of a refresh, with the end state checked.
* The API server refusing connections while a new token is published: the documented
  backoff, the same access token, no traceback.
* ``patch`` on Secrets revoked from the operator's ServiceAccount and restored: the
  condition and a Warning Event name the verb and resource, the provider is asked once
  per due token, and the tokens recover within the retry cap once the Role is fixed.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from emailtoken import rbac
from emailtoken.failures import PERMISSION_RETRY_CAP
from emailtoken.kube import Conflict, KubernetesApi
from emailtoken.model import TokenRef
from emailtoken.secretdata import Grant, grant_secret
from emailtoken.store import GrantReplaced, GrantStore
from emailtoken_dev.devprovider import DevProviderThread
from tests.support.cluster import ControlPlane
from tests.support.faultkit import (
    Delegated,
    SecretLedger,
    TcpRelay,
    annotate,
    condition,
    delegated_token,
    explain,
    grant_family,
    grant_refresh_token,
    is_ready,
    microsoft_sign_in,
    refresh_calls,
    refresh_token_status,
    reuse_errors,
    status,
    wait_explained,
    warnings,
)
from tests.support.faultsuite import provider_reset
from tests.support.kube import ApiClient, wait_for
from tests.support.tokens import client_credentials

REFRESH_NOW = "emailtoken.io/refresh-now"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def grant_name(token: str) -> str:
    return f"emailtoken-grant-{token}"


@pytest.fixture
def ledger() -> SecretLedger:
    return SecretLedger()


@pytest.fixture(autouse=True)
def _provider_reset(provider: DevProviderThread) -> Iterator[None]:
    yield from provider_reset(provider)


def operator_api(cluster: ControlPlane) -> KubernetesApi:
    """The operator's own API client (emailtoken.kube), in this process, with admin credentials."""
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(cluster.admin_kubeconfig), client_configuration=configuration)
    return KubernetesApi(kubernetes.client.ApiClient(configuration), threads=2)


def grant_version(admin: ApiClient, ns: str, token: str) -> str:
    return str(admin.get("secrets", ns, grant_name(token))["metadata"]["resourceVersion"])


# --------------------------------------------------------------------------- compare-and-swap


async def test_grant_compare_and_swap_against_real_resource_versions(
    cluster: ControlPlane, admin: ApiClient, namespace: str
) -> None:
    """Each verdict of GrantStore against the API server's own resourceVersions and 409s."""
    api = operator_api(cluster)
    store = GrantStore(api)
    token = TokenRef(namespace, "box", "")  # no owner: the garbage collector would delete an orphan's Secret
    first = await store.save(token, Grant("rt-1", "box@contoso.com"), expected_version=None)
    assert first.resource_version == grant_version(admin, namespace, "box")
    with pytest.raises(Conflict):  # 409 AlreadyExists: a second creator loses
        await store.save(token, Grant("rt-other", "box@contoso.com"), expected_version=None)

    admin.patch("secrets", namespace, grant_name("box"), {"metadata": {"labels": {"team": "mail"}}})
    relabelled = grant_version(admin, namespace, "box")
    assert relabelled != first.resource_version
    with pytest.raises(Conflict):  # the label moved the version: a plain CAS write is refused
        await store.save(token, Grant("rt-2", "box@contoso.com"), expected_version=first.resource_version)

    second = await store.save_successor(token, first, Grant("rt-2", "box@contoso.com"))  # re-read: same grant
    stored = admin.get("secrets", namespace, grant_name("box"))
    assert admin.secret_data(namespace, grant_name("box"))["refresh_token"] == "rt-2"
    assert stored["metadata"]["labels"]["team"] == "mail"
    assert second.resource_version == stored["metadata"]["resourceVersion"] != relabelled

    # Our write landed but we never heard: the retry's 409 is recognised as our own.
    again = await store.save_successor(token, first, Grant("rt-2", "box@contoso.com"))
    assert again.resource_version == second.resource_version

    admin.patch("secrets", namespace, grant_name("box"), {"data": {"refresh_token": b64("rt-new-sign-in")}})
    with pytest.raises(GrantReplaced):  # a new sign-in wins
        await store.save_successor(token, second, Grant("rt-3", "box@contoso.com"))
    assert admin.secret_data(namespace, grant_name("box"))["refresh_token"] == "rt-new-sign-in"

    admin.delete("secrets", namespace, grant_name("box"))
    with pytest.raises(GrantReplaced):  # a reauthorization dropped it: not recreated
        await store.save_successor(token, second, Grant("rt-3", "box@contoso.com"))
    assert admin.get("secrets", namespace, grant_name("box")) is None

    emptied = grant_secret(token, Grant("x", "box@contoso.com"))
    emptied["data"]["refresh_token"] = ""
    admin.create("secrets", namespace, emptied)
    device = await store.save_new(token, Grant("rt-device", "box@contoso.com"))  # fills the empty Secret
    assert admin.secret_data(namespace, grant_name("box"))["refresh_token"] == "rt-device"
    assert device.resource_version == grant_version(admin, namespace, "box")
    with pytest.raises(GrantReplaced):  # but never replaces a grant
        await store.save_new(token, Grant("rt-device-2", "box@contoso.com"))


# --------------------------------------------------------------------------- fifty refreshes under churn


class Churn:
    """Relabels and re-annotates Secrets as fast as the API server takes it (kubectl label, a policy engine)."""

    def __init__(self, admin: ApiClient, targets: list[tuple[str, str]]) -> None:
        self.admin, self.targets = admin, targets
        self.stop = threading.Event()
        self.writes = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set():
            for ns, name in self.targets:
                n += 1
                meta = {"labels": {"churn": str(n)}} if n % 2 else {"annotations": {"policy.example/seen": str(n)}}
                r = self.admin.http.patch(
                    f"{self.admin.url}/api/v1/namespaces/{ns}/secrets/{name}",
                    json={"metadata": meta},
                    headers={"Content-Type": "application/merge-patch+json"},
                    timeout=10,
                )
                if r.status_code == 200:
                    self.writes += 1
            time.sleep(0.005)

    def __enter__(self) -> Churn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def test_grant_edits_during_fifty_refreshes_lose_nothing(
    admin: ApiClient,
    provider: DevProviderThread,
    make_namespace: Callable[[str], str],
    start_operator: Callable[..., Any],
    ledger: SecretLedger,
) -> None:
    """Two rotating grants refreshed every second while their Secrets are relabelled non-stop: no
    refresh token is presented twice (the provider would revoke the grant), the grant Secret always
    ends on the provider's live token, and the relabelling really did collide with refreshes."""
    assert provider.settings.reuse_detection and provider.settings.rotation["microsoft"]
    tokens = [
        delegated_token(admin, provider, ledger, name=f"churn{i}", namespace=make_namespace("churn"), create=False)
        for i in range(2)
    ]
    op = start_operator([t.namespace for t in tokens])
    provider.token_lifetime = 2  # refreshed about every second (half the lifetime, jittered)
    for t in tokens:
        t.create(admin)
    for t in tokens:
        wait_explained(lambda t=t: is_ready(admin, t.namespace, t.name), 30, admin, provider, t, "Ready")
    started = time.monotonic()

    def progress() -> str | None:
        if any(condition(admin, t.namespace, t.name, "Authorized").get("status") == "False" for t in tokens):
            return "a grant died"
        return "done" if sum(len(refresh_calls(provider, t.client_id)) for t in tokens) >= 52 else None

    with Churn(admin, [(t.namespace, grant_name(t.name)) for t in tokens]) as churn:
        outcome = wait_for(progress, 75, what="about fifty refreshes")
    # Quiet down before judging: a refresh may be in flight (the provider has rotated, the grant
    # write is on its way), and the next one is then an hour away.
    provider.token_lifetime = 3600
    assert outcome == "done", "\n".join(explain(admin, provider, t) for t in tokens)
    elapsed = time.monotonic() - started
    collided = op.log.count("still holds the refresh token it spent")
    refreshes = sum(len(refresh_calls(provider, t.client_id)) for t in tokens)
    print(f"\n{refreshes} refreshes in {elapsed:.1f}s, {churn.writes} churn writes, {collided} collisions recovered")

    for t in tokens:
        wait_explained(lambda t=t: is_ready(admin, t.namespace, t.name), 10, admin, provider, t, "still Ready")
        assert reuse_errors(provider, t.client_id) == 0, explain(admin, provider, t)
        assert all(c.status == 200 for c in refresh_calls(provider, t.client_id)), explain(admin, provider, t)
        wait_explained(
            lambda t=t: (
                refresh_token_status(provider, grant_refresh_token(admin, t.namespace, t.name) or "") == "active"
            ),
            10,
            admin,
            provider,
            t,
            "the grant Secret holds the provider's live refresh token",
        )
        rt = grant_refresh_token(admin, t.namespace, t.name)
        assert rt and refresh_token_status(provider, rt) == "active", explain(admin, provider, t)
        assert grant_family(provider, rt).revoked is None
        assert condition(admin, t.namespace, t.name, "Authorized").get("status") == "True"
        assert not warnings(admin, t.namespace, t.name), warnings(admin, t.namespace, t.name)
        consumer = admin.secret_data(t.namespace, t.name) or {}
        assert (provider.token_info(consumer["access_token"]) or {}).get("active")
    assert collided >= 3, f"the churn never met a refresh ({churn.writes} writes): the test proved nothing"
    assert "unexpected" not in op.log


# --------------------------------------------------------------------------- a conflicting write at each point


@dataclass
class Point:
    """Who writes what, and when, during one refresh; and what the end must look like."""

    id: str
    when: str  # "during-call": while the provider holds the refresh; "after-grant": right after our successor lands
    write: Callable[[ApiClient, DevProviderThread, Delegated], Any]
    grant_survives: bool = True
    refreshes: int = 1  # refresh calls the forced refresh may cost


def _label_grant(admin: ApiClient, provider: DevProviderThread, t: Delegated) -> None:
    admin.patch("secrets", t.namespace, grant_name(t.name), {"metadata": {"labels": {"team": "mail"}}})


def _annotate_grant(admin: ApiClient, provider: DevProviderThread, t: Delegated) -> None:
    admin.patch("secrets", t.namespace, grant_name(t.name), {"metadata": {"annotations": {"policy.example/ok": "yes"}}})


def _new_sign_in(admin: ApiClient, provider: DevProviderThread, t: Delegated) -> str:
    fresh = microsoft_sign_in(provider, t.client_id, t.client_secret, t.mailbox)["refresh_token"]
    admin.patch("secrets", t.namespace, grant_name(t.name), {"data": {"refresh_token": b64(fresh)}})
    return fresh


def _delete_grant(admin: ApiClient, provider: DevProviderThread, t: Delegated) -> None:
    admin.delete("secrets", t.namespace, grant_name(t.name))


def _label_consumer(admin: ApiClient, provider: DevProviderThread, t: Delegated) -> None:
    admin.patch("secrets", t.namespace, t.name, {"metadata": {"labels": {"team": "mail"}}})


POINTS = [
    Point("grant-labelled-during-the-call", "during-call", _label_grant),
    Point("grant-annotated-during-the-call", "during-call", _annotate_grant),
    Point("new-sign-in-during-the-call", "during-call", _new_sign_in, refreshes=2),
    Point("grant-deleted-during-the-call", "during-call", _delete_grant, grant_survives=False),
    Point("consumer-labelled-during-the-call", "during-call", _label_consumer),
    Point("grant-labelled-after-our-write", "after-grant", _label_grant),
    Point("consumer-labelled-after-our-grant-write", "after-grant", _label_consumer),
]


def test_a_conflicting_write_at_each_point_of_a_refresh(
    admin: ApiClient,
    provider: DevProviderThread,
    make_namespace: Callable[[str], str],
    start_operator: Callable[..., Any],
    ledger: SecretLedger,
) -> None:
    """Each case forces one refresh of its own token and writes to its Secrets at a chosen moment:
    while the provider holds the refresh (a 5 s delay, seen to start when the fault is taken), or as
    soon as the rotated refresh token is in the grant Secret. Metadata edits never cost the rotated
    token; a new sign-in or a deletion wins; nothing is ever presented twice."""
    cases = [
        (p, delegated_token(admin, provider, ledger, name="box", namespace=make_namespace("point"), create=False))
        for p in POINTS
    ]
    start_operator([t.namespace for _, t in cases])
    for _, t in cases:
        t.create(admin)
    for _, t in cases:
        wait_explained(lambda t=t: is_ready(admin, t.namespace, t.name), 30, admin, provider, t, "Ready")
    before = {p.id: (admin.secret_data(t.namespace, t.name) or {})["access_token"] for p, t in cases}
    spent = {p.id: grant_refresh_token(admin, t.namespace, t.name) for p, t in cases}
    calls_before = {p.id: len(refresh_calls(provider, t.client_id)) for p, t in cases}

    replaced: dict[str, str] = {}
    for p, t in cases:
        if p.when == "during-call":
            provider.faults.add("token", delay=5, match_client_id=t.client_id, match_grant_type="refresh_token")
        annotate(admin, t.namespace, t.name, REFRESH_NOW, p.id)
    for p, t in sorted(cases, key=lambda c: c[0].when != "after-grant"):  # the quick moments first
        if p.when == "during-call":
            wait_for(
                lambda t=t: not any(f["match_client_id"] == t.client_id for f in provider.faults.pending()),
                20,
                what=f"{p.id}: the refresh reached the provider",
            )
        else:
            wait_for(
                lambda p=p, t=t: grant_refresh_token(admin, t.namespace, t.name) != spent[p.id],
                20,
                interval=0.01,
                what=f"{p.id}: the rotated refresh token stored",
            )
        fresh = p.write(admin, provider, t)
        if isinstance(fresh, str):
            replaced[p.id] = fresh

    for p, t in cases:
        ns, name = t.namespace, t.name
        if not p.grant_survives:
            wait_explained(
                lambda ns=ns, name=name: (
                    condition(admin, ns, name, "Authorized").get("reason") == "AwaitingAuthorization"
                ),
                20,
                admin,
                provider,
                t,
                f"{p.id}: AwaitingAuthorization",
            )
            assert admin.get("secrets", ns, grant_name(name)) is None, f"{p.id}: a deleted grant was written again"
            assert (admin.secret_data(ns, name) or {})["access_token"] == before[p.id], p.id
            assert is_ready(admin, ns, name), f"{p.id}: the last good token stays until it expires"
        else:
            wait_explained(
                lambda p=p, ns=ns, name=name: (
                    (admin.secret_data(ns, name) or {}).get("access_token") != before[p.id]
                    and is_ready(admin, ns, name)
                    and status(admin, ns, name).get("handledAnnotations", {}).get("refreshNow") == p.id
                ),
                20,
                admin,
                provider,
                t,
                f"{p.id}: refreshed and Ready",
            )
            rt = grant_refresh_token(admin, ns, name)
            assert rt and refresh_token_status(provider, rt) == "active", f"{p.id}: {explain(admin, provider, t)}"
            assert grant_family(provider, rt).revoked is None, p.id
            if p.id in replaced:  # the new sign-in's grant, refreshed once; ours was dropped
                assert grant_family(provider, rt) is grant_family(provider, replaced[p.id]), p.id
            consumer = admin.secret_data(ns, name) or {}
            assert (provider.token_info(consumer["access_token"]) or {}).get("active"), p.id
        labels = (admin.get("secrets", ns, grant_name(name)) or {}).get("metadata", {}).get("labels", {})
        if p.write is _label_grant:
            assert labels.get("team") == "mail", f"{p.id}: our write dropped someone's label"
        if p.write is _label_consumer:
            assert admin.get("secrets", ns, name)["metadata"]["labels"].get("team") == "mail", p.id
        calls = len(refresh_calls(provider, t.client_id)) - calls_before[p.id]
        assert calls == p.refreshes, f"{p.id}: {calls} refresh calls, expected {p.refreshes}"
        assert reuse_errors(provider, t.client_id) == 0, f"{p.id}: {explain(admin, provider, t)}"


# --------------------------------------------------------------------------- patch on Secrets revoked


def operator_service_account(cluster: ControlPlane, admin: ApiClient, ns: str) -> tuple[dict[str, Any], Any]:
    """A ServiceAccount with exactly the chart's Role for one namespace (rules from emailtoken.rbac)."""
    admin.create("serviceaccounts", ns, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "op"}})
    rules = [p.rule() for p in rbac.permissions(rbac.Component.OPERATOR, leader_election=True)]
    admin.bind_role(ns, "op", rules, (ns, "op"))
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "op"}, "rules": rules}
    return role, cluster.service_account_kubeconfig(ns, "op")


def set_secret_verbs(admin: ApiClient, ns: str, role: dict[str, Any], drop: tuple[str, ...]) -> None:
    rules = [
        {**r, "verbs": [v for v in r["verbs"] if v not in drop]} if r["resources"] == ["secrets"] else r
        for r in role["rules"]
    ]
    admin.patch("roles", ns, "op", {"rules": rules})


def test_patch_on_secrets_revoked_then_restored(
    cluster: ControlPlane,
    admin: ApiClient,
    provider: DevProviderThread,
    namespace: str,
    start_operator: Callable[..., Any],
    ledger: SecretLedger,
) -> None:
    """Two app-only tokens and a rotating delegated one, run by a ServiceAccount whose Role then
    loses `patch` on Secrets. Each due token asks the provider once and keeps the answer; the
    condition and a Warning Event quote the API server (verb and resource); once the Role is
    restored every token publishes that same answer within the retry cap."""
    ns = namespace
    role, kubeconfig = operator_service_account(cluster, admin, ns)
    delegated = delegated_token(admin, provider, ledger, name="box", namespace=ns, create=False)
    app_client = f"app-{ns}"
    provider.add_client(app_client, "app-only-secret-value", mailboxes=["shared@contoso.com"])
    admin.create_secret(ns, "app-only", {"client_secret": "app-only-secret-value"})
    provider.token_lifetime = 16  # first tokens: due after ~10 s, expired after 16 s
    op = start_operator([ns], kubeconfig=kubeconfig)
    delegated.create(admin)
    apps = ["inbox", "outbox"]
    for name in apps:
        admin.create(
            "emailtokens",
            ns,
            client_credentials(provider, name, client_id=app_client, mailbox="shared@contoso.com", secret="app-only"),
        )
    names = [*apps, "box"]
    for name in names:
        wait_for(lambda name=name: is_ready(admin, ns, name), 30, what=f"{name} Ready")
    first = {name: (admin.secret_data(ns, name) or {})["access_token"] for name in names}
    expires = {name: status(admin, ns, name)["expiresAt"] for name in names}

    set_secret_verbs(admin, ns, role, drop=("patch",))
    revoked = provider.state.now()
    provider.token_lifetime = 120  # what the refresh during the outage buys outlives the outage
    for name in names:
        wait_for(
            lambda name=name: condition(admin, ns, name, "Ready").get("reason") == "PermissionDenied",
            30,
            what=f"{name}: Ready=False PermissionDenied once the old token expired ({expires[name]})",
        )
    for name in names:
        ready = condition(admin, ns, name, "Ready")
        assert ready["status"] == "False"
        assert 'cannot patch resource "secrets"' in ready["message"], ready
        assert status(admin, ns, name)["phase"] == "PermissionDenied"
        assert condition(admin, ns, name, "Authorized").get("status") == "True"  # the credentials are fine
        warned = [e for e in warnings(admin, ns, name, "RefreshFailed") if "PermissionDenied" in e["message"]]
        assert warned and 'cannot patch resource "secrets"' in warned[0]["message"], warnings(admin, ns, name)
        assert (admin.secret_data(ns, name) or {})["access_token"] == first[name]
    failures = {name: status(admin, ns, name)["refreshFailures"] for name in names}

    set_secret_verbs(admin, ns, role, drop=())
    restored = time.monotonic()
    recovered: dict[str, float] = {}
    deadline = restored + PERMISSION_RETRY_CAP.total_seconds() + 10
    while len(recovered) < len(names) and time.monotonic() < deadline:
        for name in names:
            if name not in recovered and is_ready(admin, ns, name):
                if (admin.secret_data(ns, name) or {}).get("access_token") != first[name]:
                    recovered[name] = time.monotonic() - restored
        time.sleep(0.1)
    print(f"\nrecovery after the Role was restored: {recovered}; failed attempts during the outage: {failures}")
    assert set(recovered) == set(names), (recovered, {n: status(admin, ns, n) for n in names})
    assert max(recovered.values()) <= PERMISSION_RETRY_CAP.total_seconds() + 3

    app_calls = [c for c in provider.calls if c.client_id == app_client and c.endpoint == "token" and c.time > revoked]
    assert len(app_calls) == len(apps), "one provider call per due app token, kept through the outage"
    box_calls = [c for c in refresh_calls(provider, delegated.client_id) if c.time > revoked]
    assert len(box_calls) == 1, "the rotated refresh token was kept, not redeemed again"
    for name in names:
        token = (admin.secret_data(ns, name) or {})["access_token"]
        assert (provider.token_info(token) or {}).get("active"), name
        assert status(admin, ns, name)["refreshFailures"] == 0
        assert 1 <= failures[name] <= 8, failures
    rt = grant_refresh_token(admin, ns, "box")
    assert rt and refresh_token_status(provider, rt) == "active"
    assert reuse_errors(provider, delegated.client_id) == 0
    assert "unexpected" not in op.log


# --------------------------------------------------------------------------- the API refuses connections


def test_a_refused_connection_during_the_publish_follows_the_backoff(
    cluster: ControlPlane,
    admin: ApiClient,
    provider: DevProviderThread,
    namespace: str,
    start_operator: Callable[..., Any],
    tmp_path: Path,
) -> None:
    """The operator reaches the API server through a relay that goes down just before a refresh is
    due: the provider is asked once, the publish fails with a refused connection, and the retry
    comes on the documented backoff (5 s, jittered) with the same access token, not 30 s later
    after an 'unexpected' traceback."""
    relay = TcpRelay(cluster.port)
    try:
        kubeconfig = tmp_path / "kubeconfig-relay"
        kubeconfig.write_text(
            cluster.admin_kubeconfig.read_text().replace(cluster.url, f"https://127.0.0.1:{relay.port}")
        )
        client_id = f"app-{namespace}"
        provider.add_client(client_id, "relay-secret-value", mailboxes=["shared@contoso.com"])
        admin.create_secret(namespace, "app-secret", {"client_secret": "relay-secret-value"})
        provider.token_lifetime = 9  # due ~6 s after it is obtained
        op = start_operator([namespace], kubeconfig=kubeconfig)
        admin.create(
            "emailtokens",
            namespace,
            client_credentials(provider, "inbox", client_id=client_id, mailbox="shared@contoso.com"),
        )
        wait_for(lambda: is_ready(admin, namespace, "inbox"), 30, what="Ready")
        first = (admin.secret_data(namespace, "inbox") or {})["access_token"]
        provider.token_lifetime = 3600
        due_at = datetime.fromisoformat(status(admin, namespace, "inbox")["nextRefreshTime"].replace("Z", "+00:00"))
        time.sleep(max(0.0, due_at.timestamp() - time.time() - 1.0))
        calls = [c for c in provider.calls if c.client_id == client_id and c.endpoint == "token"]
        relay.down()
        try:
            wait_for(
                lambda: (
                    len([c for c in provider.calls if c.client_id == client_id and c.endpoint == "token"]) > len(calls)
                ),
                15,
                what="the refresh reached the provider while the API server was out of reach",
            )
            time.sleep(1.0)  # the publish has met the refused connection by now
        finally:
            relay.up()
        back = time.monotonic()
        wait_for(
            lambda: (
                is_ready(admin, namespace, "inbox")
                and (admin.secret_data(namespace, "inbox") or {}).get("access_token") != first
            ),
            20,
            what="the kept token published once the API server answers",
        )
        recovered = time.monotonic() - back
        print(f"\npublished {recovered:.1f}s after the API server was reachable again")
        assert recovered <= 6, "the retry did not follow the 5 s backoff"
        new_calls = [c for c in provider.calls if c.client_id == client_id and c.endpoint == "token"]
        assert len(new_calls) == len(calls) + 1, "the access token was kept, not asked for again"
        assert "failed unexpectedly" not in op.log
        # The publish itself met the refused connection, said in the operator's words (a Warning
        # Event, posted once the API server answers again), not in urllib3's retry warnings.
        publish_failed = f"unreachable while writing Secret {namespace}/inbox"
        wait_for(
            lambda: any(publish_failed in (e.get("message") or "") for e in admin.events_for(namespace, "inbox")),
            15,
            what="a Warning Event saying the publish met the unreachable API server",
        )
        assert "Retrying (Retry(" not in op.log, "urllib3's retry warnings stay out of the log"
        assert f"could not write status of {namespace}/inbox: API server unreachable" in op.log
    finally:
        relay.down()

"""Restart loses nothing: the operator killed at every step of a refresh, stopped gracefully in the
middle of one, and restarted with 200 tokens of which 10 are due.

Each step is reached without product hooks: the local provider delays or drops its answer,
and the embedded API stalls a request either before it lands (pre-commit) or after it
landed but before it is answered (kmock's reaction DSL). The refresh-token rotation with
reuse detection at the provider turns every "lost" or "spent twice" refresh token into a
visible failure, so "no reuse" below really means none happened.
"""

from __future__ import annotations

import itertools
import signal
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from emailtoken import conditions
from emailtoken.model import TokenRef, parse_spec
from emailtoken.secretdata import consumer_secret
from emailtoken.timefmt import rfc3339, utcnow
from emailtoken_dev.devprovider import DevProviderThread
from tests.support.faultkit import (
    Delegated,
    FaultyKube,
    Hold,
    SecretLedger,
    access_token,
    annotate,
    condition,
    delegated_token,
    grant_family,
    grant_refresh_token,
    is_ready,
    microsoft_app_spec,
    refresh_calls,
    refresh_token_status,
    reuse_errors,
    status,
    token_manifest,
    wait_explained,
    wait_quiet,
    warnings,
)
from tests.support.faultsuite import faulty_kube, provider_reset
from tests.support.kube import ApiClient, wait_for
from tests.support.operator_process import OperatorProcess

REFRESH_NOW = "emailtoken.io/refresh-now"
#: A short Lease, so a restart after SIGKILL waits little for it; the provider timeout must stay
#: 5 s under it (emailtoken.leader.timing_problem) and above the 3 s late answer below.
LEASE = ["--lease-duration", "10", "--provider-timeout", "5"]

StartOperator = Callable[..., OperatorProcess]


@pytest.fixture(scope="module")
def kube(workdir: Path) -> Iterator[FaultyKube]:
    yield from faulty_kube(workdir)


@pytest.fixture(scope="module")
def ledger() -> SecretLedger:
    return SecretLedger()


@pytest.fixture(scope="module")
def logs() -> list[OperatorProcess]:
    """Every operator process of the module, for the final secret scan."""
    return []


@pytest.fixture
def start_operator(
    kube: FaultyKube, provider: DevProviderThread, workdir: Path, logs: list[OperatorProcess]
) -> Iterator[StartOperator]:
    """Start a fresh operator process (stopped at the end of the test if still running)."""
    mine: list[OperatorProcess] = []

    def start(*extra: str) -> OperatorProcess:
        op = OperatorProcess(
            kube.kubeconfig,
            workdir,
            ca_bundle=provider.ca_pem_path,
            extra_args=[*LEASE, *extra],
            name=f"operator-{len(logs)}",
        ).start()
        mine.append(op)
        logs.append(op)
        op.wait_log("emailtoken operator started", timeout=30)
        return op

    yield start
    for op in mine:
        op.stop()


@pytest.fixture(autouse=True)
def _clean_slate(provider: DevProviderThread, kube: FaultyKube) -> Iterator[None]:
    """Faults, lifetimes and stalled API requests never outlive a test."""
    yield from provider_reset(provider)
    kube.release_all()


def fault_taken(provider: DevProviderThread, client_id: str) -> bool:
    """The provider has started on the request a fault was queued for."""
    return not any(f["match_client_id"] == client_id for f in provider.faults.pending())


def handled(api: ApiClient, t: Delegated) -> str | None:
    return (status(api, t.namespace, t.name).get("handledAnnotations") or {}).get("refreshNow")


def calls_now(provider: DevProviderThread, tokens: dict[str, Delegated]) -> dict[str, int]:
    return {label: len(refresh_calls(provider, t.client_id)) for label, t in tokens.items()}


# --------------------------------------------------------------------------- SIGKILL at each step


def test_sigkill_at_every_step_of_a_refresh_then_restart(
    api: ApiClient, kube: FaultyKube, provider: DevProviderThread, ledger: SecretLedger, start_operator: StartOperator
) -> None:
    """One token per step, all stopped there at once, one SIGKILL, one restart. Where the provider
    still honours the grant the token ends Ready on the saved refresh token with no reuse; where the
    killed process held the only copy of a rotated refresh token, the provider's reuse detection
    revokes the family and the token says ReauthorizationRequired in plain words."""
    # "due" is refreshed by its own schedule (refreshBefore), so it shows what a restart does with a
    # status written before the crash; the others are driven by refresh-now.
    op = start_operator()
    provider.token_lifetime = 14
    due = delegated_token(api, provider, ledger, name="due", refreshBefore="7s")
    wait_for(lambda: is_ready(api, due.namespace, due.name), 30)
    provider.token_lifetime = 3600  # what due's next refresh gets: not due again for long
    due_token = access_token(api, due.namespace, due.name)
    due_hold = kube.hold_after("PATCH", due.namespace, "due")  # its consumer Secret lands, its status never
    labels = [
        "settled",
        "before-call",
        "call-unanswered",
        "answer-unsaved",
        "answer-lost",
        "grant-saved",
        "secret-saved",
    ]
    tokens = {label: delegated_token(api, provider, ledger, name="box", create=False) for label in labels}
    for t in tokens.values():
        t.create(api)
    for label, t in tokens.items():
        wait_for(lambda t=t: is_ready(api, t.namespace, t.name), 30, what=f"{label} Ready")
    tokens["due"] = due

    # A refresh that completed before the crash (status written): the restart must not repeat it.
    settled = tokens["settled"]
    annotate(api, settled.namespace, settled.name, REFRESH_NOW, "1")
    wait_for(lambda: handled(api, settled) == "1", 15)

    before = {
        label: (grant_refresh_token(api, t.namespace, t.name), access_token(api, t.namespace, t.name))
        for label, t in tokens.items()
    }
    grant = "emailtoken-grant-box"
    holds: dict[str, Hold] = {
        # reading the grant is the last thing before the provider call
        "before-call": kube.hold_after("GET", tokens["before-call"].namespace, grant),
        # the provider answered; the grant write is stopped before it lands (and never lands)
        "answer-unsaved": kube.hold_before("PATCH", tokens["answer-unsaved"].namespace, grant, commit=False),
        # the grant write landed; its answer (and so the consumer Secret write) is stalled
        "grant-saved": kube.hold_after("PATCH", tokens["grant-saved"].namespace, grant),
        # the consumer Secret write landed; the status write never happens
        "secret-saved": kube.hold_after("PATCH", tokens["secret-saved"].namespace, "box"),
        "due": due_hold,
    }
    # the provider takes the request and never answers (it spends nothing)
    provider.faults.add("token", delay=20, drop=True, match_client_id=tokens["call-unanswered"].client_id)
    # the provider answers after the process is gone (it spends the refresh token)
    provider.faults.add("token", delay=3, match_client_id=tokens["answer-lost"].client_id)

    at_the_provider = ("call-unanswered", "answer-lost")
    for label, t in tokens.items():
        if label not in ("settled", "due", *at_the_provider):
            annotate(api, t.namespace, t.name, REFRESH_NOW, "1")
    for label, hold in holds.items():
        hold.wait_entered(30)
    for label in at_the_provider:  # last: the provider answers "answer-lost" 3 s after it starts on it
        annotate(api, tokens[label].namespace, tokens[label].name, REFRESH_NOW, "1")
    for label in at_the_provider:
        wait_for(lambda c=tokens[label].client_id: fault_taken(provider, c), 10, what=f"{label} reached the provider")
    op.kill()
    for hold in holds.values():
        hold.released.set()  # pre-commit holds drop their write; post-commit ones answer a dead client
    wait_for(
        lambda: any(
            c.fault is False and c.duration >= 3 for c in refresh_calls(provider, tokens["answer-lost"].client_id)
        ),
        10,
        what="the provider answered the dead process",
    )

    # What the crash left behind.
    assert grant_refresh_token(api, tokens["answer-unsaved"].namespace, "box") == before["answer-unsaved"][0]
    assert grant_refresh_token(api, tokens["grant-saved"].namespace, "box") != before["grant-saved"][0]
    assert access_token(api, tokens["grant-saved"].namespace, "box") == before["grant-saved"][1]
    assert access_token(api, tokens["secret-saved"].namespace, "box") != before["secret-saved"][1]
    assert access_token(api, due.namespace, "due") != due_token
    stale_plan = status(api, due.namespace, "due")["nextRefreshTime"]
    calls = calls_now(provider, tokens)

    start_operator()
    honoured = ["settled", "before-call", "call-unanswered", "grant-saved", "secret-saved", "due"]
    for label in honoured:
        t = tokens[label]
        wait_for(
            lambda t=t: is_ready(api, t.namespace, t.name) and handled(api, t) == ("1" if t.name == "box" else None),
            30,
            what=f"{label} Ready after the restart",
        )
    for label in ("answer-unsaved", "answer-lost"):
        t = tokens[label]
        cond = wait_explained(
            lambda t=t: (c := condition(api, t.namespace, t.name, "Authorized")).get("status") == "False" and c,
            30,
            api,
            provider,
            t,
            f"{label} ReauthorizationRequired",
        )
        assert cond["reason"] == "ReauthorizationRequired"
        assert "used twice" in cond["message"] and "revoked" in cond["message"], cond["message"]
        assert grant_family(provider, grant_refresh_token(api, t.namespace, t.name) or "").revoked == "reused"
        assert [w["reason"] for w in wait_for(lambda t=t: warnings(api, t.namespace, t.name), 10)] == [
            "ReauthorizationRequired"
        ]
        assert is_ready(api, t.namespace, t.name), "the last access token stays published until it expires"
        assert reuse_errors(provider, t.client_id) == 1
    wait_for(lambda: status(api, due.namespace, "due").get("nextRefreshTime") != stale_plan, 10, what="new plan")
    wait_quiet(2)

    after = calls_now(provider, tokens)
    extra = {label: after[label] - calls[label] for label in tokens}
    assert extra == {
        "settled": 0,  # handled before the crash: not repeated
        "before-call": 1,  # the refresh the crash interrupted, once
        "call-unanswered": 1,
        "answer-unsaved": 1,  # the one attempt that met the revoked family
        "answer-lost": 1,
        "grant-saved": 1,  # refresh-now had not been recorded in status: done again, with the saved token
        "secret-saved": 1,
        "due": 0,  # the published token was newer than the plan in status: nothing to do
    }, extra
    for label in honoured:
        t = tokens[label]
        rt = grant_refresh_token(api, t.namespace, t.name) or ""
        assert refresh_token_status(provider, rt) == "active", f"{label}: the grant Secret holds the live token"
        assert grant_family(provider, rt).revoked is None
        assert reuse_errors(provider, t.client_id) == 0, label
        info = provider.token_info(access_token(api, t.namespace, t.name) or "")
        assert info and info["active"], label
    due_status = status(api, due.namespace, "due")
    assert due_status["expiresAt"] == (api.secret_data(due.namespace, "due") or {})["expires_at"]

    # refresh-now after the restart: exactly one more.
    annotate(api, settled.namespace, settled.name, REFRESH_NOW, "2")
    wait_for(lambda: handled(api, settled) == "2", 15)
    wait_quiet(1)
    assert len(refresh_calls(provider, settled.client_id)) == after["settled"] + 1
    ledger.harvest(api, [t.namespace for t in tokens.values()])


# --------------------------------------------------------------------------- SIGTERM mid-refresh


def test_graceful_stop_in_the_middle_of_a_refresh_keeps_the_rotated_token(
    api: ApiClient, provider: DevProviderThread, ledger: SecretLedger, start_operator: StartOperator
) -> None:
    """A rolling update sends SIGTERM while a refresh waits for the provider: the step finishes and
    saves the rotated refresh token before the process exits, so the next one carries on."""
    t = delegated_token(api, provider, ledger, name="box")
    op = start_operator()
    wait_for(lambda: is_ready(api, t.namespace, t.name), 30)
    rt_before = grant_refresh_token(api, t.namespace, t.name)
    provider.faults.add("token", delay=2, match_client_id=t.client_id)
    annotate(api, t.namespace, t.name, REFRESH_NOW, "during-shutdown")
    wait_for(lambda: fault_taken(provider, t.client_id), 10)
    op.stop(signal.SIGTERM, timeout=30)

    rt_after = grant_refresh_token(api, t.namespace, t.name)
    assert rt_after != rt_before, "the rotated refresh token was lost at shutdown"
    assert refresh_token_status(provider, rt_after or "") == "active"
    calls = len(refresh_calls(provider, t.client_id))
    start_operator()
    wait_for(lambda: handled(api, t) == "during-shutdown" and is_ready(api, t.namespace, t.name), 20)
    wait_quiet(1.5)
    assert len(refresh_calls(provider, t.client_id)) == calls
    assert reuse_errors(provider, t.client_id) == 0
    ledger.harvest(api, [t.namespace])


# --------------------------------------------------------------------------- 200 tokens, 10 due


def previous_operator_state(
    api: ApiClient,
    ns: str,
    name: str,
    spec: dict[str, Any],
    *,
    expires_in: timedelta,
    plan_in: timedelta | None,
    ledger: SecretLedger,
) -> None:
    """The EmailToken, its consumer Secret and its status as a previous operator left them."""
    now = utcnow().replace(microsecond=0)
    obtained = now - timedelta(minutes=10)
    expires = now + expires_in
    uid = str(uuid.uuid4())
    parsed = parse_spec(spec, name)
    token = f"previous-operator-token-{uuid.uuid4().hex}"
    ledger.add(token)
    body = consumer_secret(
        TokenRef(ns, name, uid),
        name,
        access_token=token,
        token_type="Bearer",
        expires_at=expires,
        obtained_at=obtained,
        username=spec["emailAddress"],
        scope=parsed.scope_string,
        spec_hash=parsed.fingerprint(),
    )
    api.create("secrets", ns, body)
    ready = conditions.Condition(conditions.READY, True, "TokenValid", f"access token valid until {rfc3339(expires)}")
    authorized = conditions.Condition(
        conditions.AUTHORIZED, True, "Authorized", f"Microsoft issues tokens for {spec['emailAddress']}"
    )
    status_body: dict[str, Any] = {
        "conditions": conditions.merge(None, [ready, authorized], now=obtained, generation=1),
        "phase": "Ready",
        "secretName": name,
        "expiresAt": rfc3339(expires),
        "account": spec["emailAddress"],
        "lastRefreshTime": rfc3339(obtained),
        "refreshFailures": 0,
        "observedGeneration": 1,
    }
    if plan_in is not None:
        status_body["nextRefreshTime"] = rfc3339(now + plan_in)
    manifest = token_manifest(name, spec)
    manifest["metadata"]["uid"] = uid
    manifest["status"] = status_body
    api.create("emailtokens", ns, manifest)


def test_restart_with_200_tokens_refreshes_exactly_the_10_due(
    api: ApiClient, kube: FaultyKube, provider: DevProviderThread, ledger: SecretLedger, start_operator: StartOperator
) -> None:
    """200 tokens as a previous operator left them, 5 past their planned refresh and 5 expired:
    the restart makes exactly 10 provider calls, touches none of the other 190 Secrets and
    writes none of their status."""
    client_id = f"fleet-{uuid.uuid4().hex[:6]}"
    secret = f"cs-{uuid.uuid4().hex}"
    provider.add_client(client_id, secret)
    ledger.add(secret)
    namespaces = [f"fleet-{uuid.uuid4().hex[:6]}" for _ in range(4)]
    for ns in namespaces:
        api.create_secret(ns, "app-secret", {"client_secret": secret})
        ledger.namespaces.add(ns)
    due: set[tuple[str, str]] = set()
    for i in range(200):
        ns, name = namespaces[i % 4], f"tok-{i:03d}"
        spec = microsoft_app_spec(provider, client_id, f"{name}-{ns}@contoso.com")
        if i % 20 == 0:  # 10 of them: 5 past their plan, 5 expired
            past_plan = i % 40 == 0
            previous_operator_state(
                api,
                ns,
                name,
                spec,
                ledger=ledger,
                expires_in=timedelta(minutes=50) if past_plan else timedelta(minutes=-1),
                plan_in=timedelta(minutes=-1) if past_plan else None,
            )
            due.add((ns, name))
        else:
            previous_operator_state(
                api, ns, name, spec, ledger=ledger, expires_in=timedelta(minutes=50), plan_in=timedelta(minutes=30)
            )
    assert len(due) == 10
    secrets_before = {(ns, s["metadata"]["name"]): s.get("data") for ns in namespaces for s in api.list("secrets", ns)}
    mark = len(kube.emulator.seen)

    start_operator()
    wait_for(lambda: provider.count("token", client_id=client_id) >= 10, 60, what="the 10 due tokens refreshed")
    for ns, name in due:
        wait_for(lambda n=ns, m=name: is_ready(api, n, m) and (status(api, n, m).get("refreshFailures") == 0), 20)
    wait_quiet(3)
    assert provider.count("token", client_id=client_id) == 10
    untouched = [
        (ns, s["metadata"]["name"])
        for ns in namespaces
        for s in api.list("secrets", ns)
        if (ns, s["metadata"]["name"]) not in due and s.get("data") == secrets_before.get((ns, s["metadata"]["name"]))
    ]
    assert len(untouched) == 190 + len(namespaces)  # the 190 consumer Secrets and the client secrets
    status_writes = [(ns, name) for m, ns, name, sub in kube.emulator.seen[mark:] if m == "PATCH" and sub == "status"]
    rewritten = {key for key in status_writes if key not in due and key[0] in namespaces}
    assert rewritten == set(), "status of tokens that were not due was rewritten"
    for ns, name in due:
        assert provider.token_info(access_token(api, ns, name) or "")["active"]
    ledger.harvest(api, namespaces)


# --------------------------------------------------------------------------- keep-alive


def test_keepalive_refreshes_idle_grants(
    api: ApiClient, provider: DevProviderThread, ledger: SecretLedger, start_operator: StartOperator
) -> None:
    """With --keepalive 5s an hour-long token's grant is still refreshed every 5 s (rotation included)."""
    t = delegated_token(api, provider, ledger, name="idle")
    start_operator("--keepalive", "5s")
    wait_for(lambda: is_ready(api, t.namespace, t.name), 30)
    first = refresh_calls(provider, t.client_id)[-1].time
    wait_for(lambda: len(refresh_calls(provider, t.client_id)) >= 3, 15, what="two keep-alive refreshes")
    times = [c.time for c in refresh_calls(provider, t.client_id) if c.time >= first]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(4.5 <= g <= 7.5 for g in gaps), gaps  # every 5 s (a busy machine may run a step late)
    assert reuse_errors(provider, t.client_id) == 0
    assert refresh_token_status(provider, grant_refresh_token(api, t.namespace, t.name) or "") == "active"
    ledger.harvest(api, [t.namespace])


# --------------------------------------------------------------------------- secrets


def test_zz_no_secret_material_in_logs_events_or_status(
    api: ApiClient, logs: list[OperatorProcess], ledger: SecretLedger
) -> None:
    """Runs last: no secret value handed out in this module appears in any log, Event or status."""
    ledger.harvest(api, sorted(ledger.namespaces))
    assert logs and len(ledger.values) > 200
    leaked = ledger.leaks(*(op.log for op in logs), *ledger.api_texts(api))
    assert not leaked, f"secret values found in logs/events/status: {leaked}"

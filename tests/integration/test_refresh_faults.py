"""The refresh engine under provider faults, through the real operator process.

The local provider misbehaves on command (5xx, 429, Retry-After, answers slower than
``--provider-timeout``, dropped and refused connections, every invalid_grant flavour,
invalid_client) and each case checks the final state, the conditions and Events, how many
calls reached the provider, and that nothing was lost: the last good access token stays
published until it expires, and a refresh token is never presented twice.
"""

from __future__ import annotations

import base64
import itertools
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from emailtoken_dev.devprovider import DevProviderThread
from tests.support.faultkit import (
    Delegated,
    FaultyKube,
    SecretLedger,
    TcpRelay,
    access_token,
    annotate,
    condition,
    create_grant,
    delegated_token,
    grant_family,
    grant_refresh_token,
    is_ready,
    microsoft_app_spec,
    microsoft_sign_in,
    refresh_calls,
    refresh_token_status,
    reuse_errors,
    status,
    token_manifest,
    wait_quiet,
    warnings,
)
from tests.support.faultsuite import faulty_kube, provider_reset
from tests.support.kube import ApiClient, wait_for
from tests.support.operator_process import OperatorProcess

REFRESH_NOW = "emailtoken.io/refresh-now"
REAUTHORIZE = "emailtoken.io/reauthorize"
PROVIDER_TIMEOUT = 2.0
#: The engine's first backoff is 5 s with jitter down to half: no two attempts come closer.
BACKOFF_FLOOR = 2.5


@pytest.fixture(scope="module")
def kube(workdir: Path) -> Iterator[FaultyKube]:
    yield from faulty_kube(workdir)


@pytest.fixture(scope="module")
def operator(kube: FaultyKube, provider: DevProviderThread, workdir: Path) -> Iterator[OperatorProcess]:
    op = OperatorProcess(
        kube.kubeconfig,
        workdir,
        ca_bundle=provider.ca_pem_path,
        extra_args=["--provider-timeout", str(PROVIDER_TIMEOUT), "--lease-duration", str(PROVIDER_TIMEOUT + 5)],
    ).start()
    op.wait_log("emailtoken operator started")
    yield op
    op.stop()


@pytest.fixture(scope="module")
def ledger() -> SecretLedger:
    return SecretLedger()


@pytest.fixture(autouse=True)
def _clean_provider(provider: DevProviderThread) -> Iterator[None]:
    yield from provider_reset(provider)


pytestmark = pytest.mark.usefixtures("operator")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def ready_reason(api: ApiClient, ns: str, name: str) -> tuple[str, str]:
    cond = condition(api, ns, name, "Ready")
    return cond.get("status", ""), cond.get("reason", "")


def app_token(
    api: ApiClient, provider: DevProviderThread, ledger: SecretLedger, name: str = "app", **spec: Any
) -> Delegated:
    """A ClientCredentials EmailToken in a fresh namespace."""
    ns = f"t-{uuid.uuid4().hex[:8]}"
    client_id = f"app-{ns}"
    secret = f"cs-{uuid.uuid4().hex}"
    mailbox = f"shared-{ns}@contoso.com"
    provider.add_client(client_id, secret, mailboxes=[mailbox])
    ledger.add(secret)
    ledger.namespaces.add(ns)
    api.create_secret(ns, "app-secret", {"client_secret": secret})
    api.create("emailtokens", ns, token_manifest(name, microsoft_app_spec(provider, client_id, mailbox, **spec)))
    return Delegated(ns, name, client_id, secret, mailbox)


def debug(api: ApiClient, provider: DevProviderThread, t: Delegated) -> str:
    """What a failed assertion should show: status and the provider's view of this client."""
    calls = [(round(c.time % 100, 1), c.status, c.error) for c in token_calls(provider, t.client_id)]
    return f"status={status(api, t.namespace, t.name)} calls={calls}"


def token_calls(provider: DevProviderThread, client_id: str, since: float = 0.0) -> list[Any]:
    return [c for c in provider.calls if c.client_id == client_id and c.endpoint == "token" and c.time >= since]


# --------------------------------------------------------------------------- transient


@dataclass
class Case:
    """One transient fault and the token that meets it."""

    label: str
    token: Delegated
    start: Any
    stop: Any


def test_transient_faults_keep_the_token_until_expiry_then_recover(
    api: ApiClient, provider: DevProviderThread, ledger: SecretLedger
) -> None:
    """500, 429, slow answers, dropped and refused connections: the published token stays and Ready
    stays True until it expires, then Ready=False ProviderUnavailable; retries follow the backoff;
    once the provider is back the token recovers on its own."""
    provider.token_lifetime = 7
    relay = TcpRelay(provider.port)
    google_slow = delegated_token(api, provider, ledger, kind="Google", name="gslow")
    google_down = delegated_token(api, provider, ledger, kind="Google", name="g503")
    refused = app_token(api, provider, ledger, tokenUrl=relay.url(provider.microsoft_token_url("contoso")))
    cases = [
        Case("500", app_token(api, provider, ledger), None, None),
        Case("429", app_token(api, provider, ledger), None, None),
        Case("slow", app_token(api, provider, ledger), None, None),
        Case("dropped", app_token(api, provider, ledger), None, None),
        Case("refused", refused, relay.down, relay.up),
        Case("google-slow", google_slow, None, None),
        Case("google-503", google_down, None, None),
    ]
    faults: dict[str, dict[str, Any]] = {
        "500": {"status": 500},
        "429": {"status": 429, "retry_after": 1},
        "slow": {"delay": PROVIDER_TIMEOUT + 2},
        "dropped": {"drop": True},
        "google-slow": {"delay": PROVIDER_TIMEOUT + 2},
        "google-503": {"status": 503},
    }
    for case in cases:
        wait_for(lambda c=case: is_ready(api, c.token.namespace, c.token.name), 30, what=f"{case.label} Ready")
    before = {c.label: api.secret_data(c.token.namespace, c.token.name) for c in cases}
    expiry = {c.label: parse_time(before[c.label]["expires_at"]) for c in cases}

    outage_started = provider.state.now()
    for case in cases:
        if case.label in faults:
            provider.faults.add("token", count=None, match_client_id=case.token.client_id, **faults[case.label])
        elif case.start:
            case.start()
        annotate(api, case.token.namespace, case.token.name, REFRESH_NOW, "outage")

    flipped: dict[str, float] = {}
    deadline = time.monotonic() + 25
    while len(flipped) < len(cases) and time.monotonic() < deadline:
        now = datetime.now(UTC)
        for case in cases:
            ns, name = case.token.namespace, case.token.name
            if case.label in flipped:
                continue
            state, reason = ready_reason(api, ns, name)
            data = api.secret_data(ns, name) or {}
            assert data.get("access_token") == before[case.label]["access_token"], f"{case.label}: token replaced"
            if state == "False":
                assert reason == "ProviderUnavailable", (case.label, reason)
                flipped[case.label] = (now - expiry[case.label]).total_seconds()
            else:
                # expires_at is written to the second, and one poll and one status write may pass;
                # a step that starts a slow attempt at expiry reports when the attempt times out
                late = now - expiry[case.label]
                allowed = 2.5 + (PROVIDER_TIMEOUT if "slow" in case.label else 0)
                assert late < timedelta(seconds=allowed), (
                    f"{case.label}: Ready {late} after expiry: {debug(api, provider, case.token)}"
                )
        time.sleep(0.2)
    assert set(flipped) == {c.label for c in cases}, f"Ready never went False for {[c.label for c in cases]}"
    for label, late in flipped.items():
        assert late > -1.5, f"{label}: Ready went False {-late:.1f}s before the token expired"

    outage_ended = provider.state.now()
    failures: dict[str, int] = {}
    for case in cases:
        ns, name = case.token.namespace, case.token.name
        assert condition(api, ns, name, "Authorized").get("status") == "True", case.label
        assert status(api, ns, name)["phase"] == "ProviderUnavailable"
        warned = wait_for(lambda n=ns, m=name: warnings(api, n, m, "RefreshFailed"), 10, what=f"{case.label} Warning")
        assert "ProviderUnavailable" in warned[0]["message"]
        failures[case.label] = status(api, ns, name)["refreshFailures"]
        assert 1 <= failures[case.label] <= 4, f"{case.label}: {failures[case.label]} attempts in the outage"

    provider.token_lifetime = 3600  # the recovered tokens must still be live when checked below
    provider.faults.clear()
    relay.up()
    for case in cases:
        ns, name = case.token.namespace, case.token.name
        wait_for(lambda n=ns, m=name: is_ready(api, n, m), 40, what=f"{case.label} recovers")
        if case.label != "refused":  # a refused connection never reaches the provider's call log
            # calls are logged when they end: by now the slow ones have; count them by their start
            starts = sorted(
                c.time - c.duration
                for c in token_calls(provider, case.token.client_id, outage_started)
                if c.time - c.duration <= outage_ended
            )
            assert 1 <= len(starts) <= 4, f"{case.label}: {debug(api, provider, case.token)}"
            gaps = [b - a for a, b in itertools.pairwise(starts)]
            assert all(g >= BACKOFF_FLOOR - 0.3 for g in gaps), f"{case.label}: retries closer than the backoff: {gaps}"
        assert condition(api, ns, name, "Authorized").get("status") == "True"
        fresh = api.secret_data(ns, name) or {}
        assert fresh["access_token"] != before[case.label]["access_token"]
        assert provider.token_info(fresh["access_token"])["active"], case.label
        assert status(api, ns, name)["refreshFailures"] == 0
        assert reuse_errors(provider, case.token.client_id) == 0
    relay.down()
    ledger.harvest(api, [c.token.namespace for c in cases])


def test_retry_after_is_honoured(api: ApiClient, provider: DevProviderThread, ledger: SecretLedger) -> None:
    """503 with Retry-After: 4, once: the second attempt comes no sooner, and it succeeds."""
    microsoft = app_token(api, provider, ledger)
    google = delegated_token(api, provider, ledger, kind="Google", name="gmail")
    tokens = [microsoft, google]
    for t in tokens:
        wait_for(lambda t=t: is_ready(api, t.namespace, t.name), 30)
    before = {t.client_id: access_token(api, t.namespace, t.name) for t in tokens}
    since = provider.state.now()
    for t in tokens:
        provider.faults.add("token", 503, retry_after=4, count=1, match_client_id=t.client_id)
        annotate(api, t.namespace, t.name, REFRESH_NOW, "1")
    for t in tokens:
        wait_for(lambda t=t: access_token(api, t.namespace, t.name) != before[t.client_id], 20, what="refreshed")
        calls = token_calls(provider, t.client_id, since)
        assert [c.status for c in calls] == [503, 200], (t.provider, [c.status for c in calls])
        waited = calls[1].time - calls[0].time
        assert 4 - 0.2 <= waited <= 8, f"{t.provider}: retried {waited:.1f}s after a Retry-After of 4s"
        assert is_ready(api, t.namespace, t.name)
    ledger.harvest(api, [t.namespace for t in tokens])


# --------------------------------------------------------------------------- dead grants


MICROSOFT_CAUSES = {
    "AADSTS70008": "expired after a period of inactivity",
    "AADSTS700082": "expired after 90 days of inactivity",
    "AADSTS70043": "Conditional Access sign-in frequency policy",
}


def test_invalid_grant_stops_warns_once_and_keeps_the_last_token(
    api: ApiClient, provider: DevProviderThread, ledger: SecretLedger
) -> None:
    """Each way a grant dies, met at the token's own refresh time: Authorized=False
    ReauthorizationRequired, one Warning naming the cause in plain words, not one more provider
    call (even when watched Secrets change), the last access token published until it expires;
    a new sign-in brings the token back."""
    faulted = {code: delegated_token(api, provider, ledger, name="box", create=False) for code in MICROSOFT_CAUSES}
    password = delegated_token(api, provider, ledger, name="pwd", create=False)
    google = delegated_token(api, provider, ledger, kind="Google", name="gmail", create=False)
    everyone = [*faulted.values(), password, google]
    provider.token_lifetime = 16  # refreshed about 8 s after issue (refreshBefore), expired 8 s later
    for t in everyone:
        t.manifest["spec"]["refreshBefore"] = "8s"
        t.create(api)
    for t in everyone:
        wait_for(lambda t=t: is_ready(api, t.namespace, t.name), 30, what=f"{t.client_id} Ready")
    for code, t in faulted.items():
        provider.faults.add("token", error_code=code, count=None, match_client_id=t.client_id)
    provider.set_password(password.mailbox, "a-new-password")  # Entra: AADSTS50173
    provider.revoke_grant(google.mailbox)  # Google: "Token has been expired or revoked."

    expected = {
        **{t.client_id: (MICROSOFT_CAUSES[code], code) for code, t in faulted.items()},
        password.client_id: ("password changed or sessions revoked", "AADSTS50173"),
        google.client_id: ("expired or revoked", "Google"),
    }
    published: dict[str, dict[str, str] | None] = {}
    calls: dict[str, int] = {}
    for t in everyone:
        ns, name = t.namespace, t.name
        cond = wait_for(
            lambda n=ns, m=name: (c := condition(api, n, m, "Authorized")).get("status") == "False" and c,
            20,
            what=f"{t.client_id} Authorized=False",
        )
        words, code = expected[t.client_id]
        assert cond["reason"] == "ReauthorizationRequired"
        assert words in cond["message"] and code in cond["message"], cond["message"]
        assert status(api, ns, name)["phase"] == "ReauthorizationRequired"
        ready = condition(api, ns, name, "Ready")
        expires = parse_time((api.secret_data(ns, name) or {})["expires_at"])
        if datetime.now(UTC) < expires - timedelta(seconds=1):  # (a slow machine may get here later)
            assert ready["status"] == "True" and ready["reason"] == "TokenValid", ready
        warned = wait_for(lambda n=ns, m=name: warnings(api, n, m), 10)
        assert [w["reason"] for w in warned] == ["ReauthorizationRequired"]
        assert words in warned[0]["message"]
        published[t.client_id] = api.secret_data(ns, name)
        calls[t.client_id] = len(refresh_calls(provider, t.client_id))
        assert refresh_calls(provider, t.client_id)[-1].error == "invalid_grant"
        assert reuse_errors(provider, t.client_id) == 1

    # What a watch re-list or a tool touching Secrets looks like to the operator: events for the
    # Secrets a token reads. A dead grant stays dead: none of this may reach the provider.
    for t in everyone:
        for secret in ("app-secret", t.name, f"emailtoken-grant-{t.name}"):
            api.patch("secrets", t.namespace, secret, {"metadata": {"labels": {"touched": "yes"}}})
    grants = {t.client_id: grant_refresh_token(api, t.namespace, t.name) for t in everyone}

    # The last token stays until it expires; then Ready=False with the same reason.
    for t in everyone:
        cond = wait_for(
            lambda t=t: (c := condition(api, t.namespace, t.name, "Ready")).get("status") == "False" and c, 15
        )
        assert cond["reason"] == "ReauthorizationRequired"
        last = published[t.client_id] or {}
        assert datetime.now(UTC) >= parse_time(last["expires_at"])
        assert api.secret_data(t.namespace, t.name) == last, "the last good token stayed published"
        assert grant_refresh_token(api, t.namespace, t.name) == grants[t.client_id], "the grant was not touched"
    for t in everyone:
        assert len(refresh_calls(provider, t.client_id)) == calls[t.client_id], f"{t.client_id} retried a dead grant"
        assert len(warnings(api, t.namespace, t.name)) == 1, t.client_id

    # A person signs in again (the callback service replaces the grant): the token comes back.
    provider.token_lifetime = 3600
    provider.faults.clear()
    again = faulted["AADSTS70008"]
    result = microsoft_sign_in(provider, again.client_id, again.client_secret, again.mailbox)
    ledger.add(result["refresh_token"])
    api.patch(
        "secrets",
        again.namespace,
        f"emailtoken-grant-{again.name}",
        {"data": {"refresh_token": base64.b64encode(result["refresh_token"].encode()).decode()}},
    )
    wait_for(lambda: is_ready(api, again.namespace, again.name), 20, what="Ready after a new sign-in")
    assert condition(api, again.namespace, again.name, "Authorized")["status"] == "True"
    assert reuse_errors(provider, again.client_id) == 1  # the one scripted AADSTS70008, nothing else
    ledger.harvest(api, [t.namespace for t in everyone])


def test_invalid_client_then_fixed_recovers_without_losing_the_grant(
    api: ApiClient, provider: DevProviderThread, ledger: SecretLedger
) -> None:
    """A wrong client secret is InvalidClient (the refresh token is not spent); fixing the Secret wakes
    the token at once and the same grant carries on."""
    t = delegated_token(api, provider, ledger)
    wait_for(lambda: is_ready(api, t.namespace, t.name), 30)
    rt = grant_refresh_token(api, t.namespace, t.name)
    assert rt is not None
    calls = len(token_calls(provider, t.client_id))
    wrong = f"wrong-{uuid.uuid4().hex}"
    ledger.add(wrong)
    api.patch(
        "secrets", t.namespace, "app-secret", {"data": {"client_secret": base64.b64encode(wrong.encode()).decode()}}
    )
    annotate(api, t.namespace, t.name, REFRESH_NOW, "after-secret-change")
    cond = wait_for(lambda: (c := condition(api, t.namespace, t.name, "Authorized")).get("status") == "False" and c, 20)
    assert cond["reason"] == "InvalidClient" and "AADSTS7000215" in cond["message"]
    assert is_ready(api, t.namespace, t.name), "the published token is still valid"
    assert refresh_token_status(provider, rt) == "active", "a rejected client spends nothing"
    assert len(token_calls(provider, t.client_id)) == calls + 1

    api.patch(
        "secrets",
        t.namespace,
        "app-secret",
        {"data": {"client_secret": base64.b64encode(t.client_secret.encode()).decode()}},
    )
    wait_for(lambda: condition(api, t.namespace, t.name, "Authorized").get("status") == "True", 15, what="recovery")
    assert is_ready(api, t.namespace, t.name)
    assert len(token_calls(provider, t.client_id)) == calls + 2
    new_rt = grant_refresh_token(api, t.namespace, t.name)
    assert new_rt != rt and refresh_token_status(provider, new_rt or "") == "active"
    assert refresh_token_status(provider, rt) == "rotated"
    assert reuse_errors(provider, t.client_id) == 0
    ledger.harvest(api, [t.namespace])


# --------------------------------------------------------------------------- rotation


def test_fifty_rotations_never_reuse_a_refresh_token(
    api: ApiClient, provider: DevProviderThread, ledger: SecretLedger
) -> None:
    """50 refreshes in a row against a provider that rotates the refresh token and revokes the family
    on any reuse: all succeed, none reuses, and the grant Secret always holds the live token.
    Each new refresh-now value costs exactly one refresh; repeating a value costs nothing."""
    t = delegated_token(api, provider, ledger, name="rot")
    wait_for(lambda: is_ready(api, t.namespace, t.name), 30)
    seen = [grant_refresh_token(api, t.namespace, t.name)]
    first_calls = len(refresh_calls(provider, t.client_id))
    assert first_calls == 1  # the first publish after the sign-in
    for i in range(1, 51):
        annotate(api, t.namespace, t.name, REFRESH_NOW, str(i))
        wait_for(
            lambda i=i: (status(api, t.namespace, t.name).get("handledAnnotations") or {}).get("refreshNow") == str(i),
            15,
            interval=0.03,
            what=f"refresh {i}",
        )
        rt = grant_refresh_token(api, t.namespace, t.name)
        assert rt is not None and rt not in seen, f"refresh {i} did not rotate"
        assert refresh_token_status(provider, rt) == "active"
        assert refresh_token_status(provider, seen[-1] or "") == "rotated"
        seen.append(rt)
        ledger.add(rt, access_token(api, t.namespace, t.name))
    assert len(refresh_calls(provider, t.client_id)) == first_calls + 50
    # The same value again (with another annotation changing) is not a new request.
    api.patch("emailtokens", t.namespace, t.name, {"metadata": {"annotations": {REFRESH_NOW: "50", "note": "x"}}})
    wait_quiet(1.5)
    assert len(refresh_calls(provider, t.client_id)) == first_calls + 50
    assert reuse_errors(provider, t.client_id) == 0
    assert grant_family(provider, seen[-1] or "").revoked is None
    statuses = [refresh_token_status(provider, rt or "") for rt in seen]
    assert statuses == ["rotated"] * 50 + ["active"]
    info = provider.token_info(access_token(api, t.namespace, t.name) or "")
    assert info and info["active"] and info["email"] == t.mailbox
    ledger.harvest(api, [t.namespace])


def test_reauthorize_annotation_drops_the_grant(
    api: ApiClient, provider: DevProviderThread, ledger: SecretLedger
) -> None:
    """emailtoken.io/reauthorize: the grant goes, Authorized=False AwaitingAuthorization, no provider
    call; the same value again does nothing; a new grant brings the token back."""
    t = delegated_token(api, provider, ledger, name="reauth")
    wait_for(lambda: is_ready(api, t.namespace, t.name), 30)
    calls = len(refresh_calls(provider, t.client_id))
    annotate(api, t.namespace, t.name, REAUTHORIZE, "2026-11-29")
    wait_for(lambda: api.get("secrets", t.namespace, f"emailtoken-grant-{t.name}") is None, 15, what="grant dropped")
    cond = wait_for(
        lambda: (c := condition(api, t.namespace, t.name, "Authorized")).get("reason") == "AwaitingAuthorization" and c,
        15,
    )
    assert cond["status"] == "False"
    assert wait_for(lambda: [e for e in api.events_for(t.namespace, t.name) if e["reason"] == "GrantDropped"], 10)
    assert is_ready(api, t.namespace, t.name), "the last token stays until it expires"
    annotate(api, t.namespace, t.name, "unrelated", "change")
    wait_quiet(1.5)
    assert api.get("secrets", t.namespace, f"emailtoken-grant-{t.name}") is None
    assert len(refresh_calls(provider, t.client_id)) == calls

    result = microsoft_sign_in(provider, t.client_id, t.client_secret, t.mailbox)
    ledger.add(result["refresh_token"])
    create_grant(api, t.namespace, t.name, result["refresh_token"], t.mailbox)
    wait_for(
        lambda: condition(api, t.namespace, t.name, "Authorized").get("status") == "True", 15, what="new grant used"
    )
    assert len(refresh_calls(provider, t.client_id)) == calls + 1
    ledger.harvest(api, [t.namespace])


# --------------------------------------------------------------------------- the API fails


def test_api_failures_during_a_refresh_lose_nothing(
    api: ApiClient, kube: FaultyKube, provider: DevProviderThread, ledger: SecretLedger
) -> None:
    """The grant write refused more often than the store retries (the rotated refresh token waits
    in memory and is written later, without spending anything again); the consumer Secret write
    answered 500 after it landed (the kept access token is written again, the provider is not asked
    again); a status write answered 500."""
    grant_down = delegated_token(api, provider, ledger, name="g")
    secret_500 = delegated_token(api, provider, ledger, name="s")
    status_500 = delegated_token(api, provider, ledger, name="st")
    tokens = [grant_down, secret_500, status_500]
    for t in tokens:
        wait_for(lambda t=t: is_ready(api, t.namespace, t.name), 30)
    calls = {t.client_id: len(refresh_calls(provider, t.client_id)) for t in tokens}

    refused = kube.fail_before("PATCH", grant_down.namespace, "emailtoken-grant-g", times=6)  # the store tries 5
    kube.fail("PATCH", secret_500.namespace, "s", 500)
    kube.fail("PATCH", status_500.namespace, "st", 500, plural="emailtokens", subresource="status")
    for t in tokens:
        annotate(api, t.namespace, t.name, REFRESH_NOW, "api-trouble")

    cond = wait_for(
        lambda: (
            condition(api, grant_down.namespace, "g", "Ready").get("reason") == "TokenValid"
            and "emailtoken-grant-g (the grant)" in condition(api, grant_down.namespace, "g", "Ready")["message"]
            and condition(api, grant_down.namespace, "g", "Ready")
        ),
        20,
        what="grant write failure reported",
    )
    assert cond["status"] == "True", "the published token is still valid"
    assert condition(api, grant_down.namespace, "g", "Authorized")["status"] == "True"
    wait_for(lambda: all(h.entered.is_set() for h in refused), 20, what="every refused write was attempted")
    for t in tokens:
        wait_for(
            lambda t=t: (
                status(api, t.namespace, t.name).get("refreshFailures") == 0
                and (status(api, t.namespace, t.name).get("handledAnnotations") or {}).get("refreshNow")
                == "api-trouble"
                and is_ready(api, t.namespace, t.name)
            ),
            45,  # backoff after each refused write, and under CI load a Lease that leaves little call window
            what=f"{t.name} recovered",
        )
    extra = {t.name: len(refresh_calls(provider, t.client_id)) - calls[t.client_id] for t in tokens}
    assert extra == {"g": 1, "s": 1, "st": 1}, extra  # what a refresh bought was kept, nothing spent again
    for t in tokens:
        rt = grant_refresh_token(api, t.namespace, t.name) or ""
        assert refresh_token_status(provider, rt) == "active", t.name
        assert reuse_errors(provider, t.client_id) == 0, t.name
        assert provider.token_info(access_token(api, t.namespace, t.name) or "")["active"], t.name
    ledger.harvest(api, [t.namespace for t in tokens])


# --------------------------------------------------------------------------- secrets


def test_zz_no_secret_material_in_logs_events_or_status(
    api: ApiClient, operator: OperatorProcess, ledger: SecretLedger
) -> None:
    """Runs last in this module: every secret value handed out above is absent from what the operator wrote."""
    ledger.harvest(api, sorted(ledger.namespaces))
    assert len(ledger.values) > 100  # client secrets, 50+ refresh tokens, access tokens
    leaked = ledger.leaks(operator.log, *ledger.api_texts(api))
    assert not leaked, f"secret values found in logs/events/status: {leaked}"

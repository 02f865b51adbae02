"""The dev provider's grant store, fault queue and error catalogue, without HTTP."""

from __future__ import annotations

import pytest

from emailtoken_dev.devprovider.errors import error_from_code, microsoft_error, render
from emailtoken_dev.devprovider.faults import FaultQueue
from emailtoken_dev.devprovider.state import GrantError, LoginRequest, Settings, State, pkce_s256


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def state(clock: Clock) -> State:
    s = State(Settings(), clock=clock)
    s.add_client("app", "secret")
    s.add_user("alice@contoso.com")
    return s


def grant_and_token(state: State) -> str:
    grant = state.create_grant("microsoft", "t", "app", "alice@contoso.com", ["scope", "offline_access"])
    return state.issue_refresh_token(grant)


def test_rotation_reuse_detection_revokes_the_family(state: State) -> None:
    first = grant_and_token(state)
    _, second = state.refresh("microsoft", first, "app", reissue=True)
    assert second and second != first
    with pytest.raises(GrantError) as caught:
        state.refresh("microsoft", first, "app", reissue=True)
    assert caught.value.reason == "reused"
    with pytest.raises(GrantError) as caught:
        state.refresh("microsoft", second, "app", reissue=True)
    assert caught.value.reason == "revoked" and caught.value.info["cause"] == "reused"


def test_check_vetoes_before_anything_is_spent(state: State) -> None:
    token = grant_and_token(state)

    def veto(grant: object) -> None:
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        state.refresh("microsoft", token, "app", reissue=True, check=veto)
    state.refresh("microsoft", token, "app", reissue=True)  # still the live token


def test_wrong_client_and_idle_expiry(state: State, clock: Clock) -> None:
    token = grant_and_token(state)
    with pytest.raises(GrantError, match="client_mismatch"):
        state.refresh("microsoft", token, "other", reissue=True)
    clock.now += 91 * 86400
    with pytest.raises(GrantError) as caught:
        state.refresh("microsoft", token, "app", reissue=True)
    assert caught.value.reason == "idle" and caught.value.info["idle"].startswith("91.")


@pytest.mark.parametrize("method", ["S256", "plain"])
def test_pkce_methods(state: State, method: str) -> None:
    verifier = "v" * 50
    challenge = pkce_s256(verifier) if method == "S256" else verifier
    login = LoginRequest(
        provider="microsoft",
        tenant="t",
        client_id="app",
        redirect_uri="http://localhost/cb",
        scopes=["openid"],
        code_challenge=challenge,
        code_challenge_method=method,
    )
    user = state.user("microsoft", "alice@contoso.com")
    assert user is not None
    code = state.issue_code(login, user)
    with pytest.raises(GrantError, match="pkce_mismatch"):
        state.redeem_code("microsoft", code, "app", "http://localhost/cb", "w" * 50)
    assert state.redeem_code("microsoft", code, "app", "http://localhost/cb", verifier).email == "alice@contoso.com"
    with pytest.raises(GrantError, match="redeemed"):
        state.redeem_code("microsoft", code, "app", "http://localhost/cb", verifier)


def test_device_polling_sequence(state: State, clock: Clock) -> None:
    raw, rec = state.start_device("t", "app", ["scope"])
    with pytest.raises(GrantError, match="pending"):
        state.poll_device(raw, "app")
    with pytest.raises(GrantError, match="slow_down"):
        state.poll_device(raw, "app")
    assert rec.interval == 10  # RFC 8628: +5 s
    state.approve_device(rec.user_code.lower(), "ALICE@contoso.com")
    assert state.poll_device(raw, "app").email == "alice@contoso.com"
    with pytest.raises(GrantError, match="redeemed"):
        state.poll_device(raw, "app")


def test_snapshot_round_trip_keeps_grants(state: State, clock: Clock) -> None:
    token = grant_and_token(state)
    raw, _ = state.issue_access_token(kind="user", provider="microsoft", client_id="app", email="a", scopes=["s"])
    restored = State(clock=clock)
    restored.restore(state.snapshot())
    assert token not in str(restored.snapshot())
    restored.refresh("microsoft", token, "app", reissue=True)
    assert restored.token_info(raw)["active"]


def test_loopback_redirects_match_any_port(state: State) -> None:
    client = state.add_client("c", "s", redirect_uris=["http://localhost/cb", "https://app.example.com/cb"])
    assert client.redirect_ok("http://localhost:51234/cb")
    assert client.redirect_ok("https://app.example.com/cb")
    assert not client.redirect_ok("https://app.example.com:444/cb")
    assert not client.redirect_ok("http://localhost:51234/other")


def test_fault_queue_order_matching_and_repeat() -> None:
    q = FaultQueue()
    q.add(endpoint="token", status=503, match_grant_type="refresh_token")
    q.add(endpoint="*", status=500, count=None)
    assert q.take("token", "microsoft", "client_credentials", "app").status == 500
    assert q.take("token", "microsoft", "refresh_token", "app").status == 503
    assert q.take("token", "microsoft", "refresh_token", "app").status == 500
    assert len(q) == 1
    q.clear()
    assert q.take("token", "microsoft", None, None) is None
    with pytest.raises(ValueError):
        q.add(endpoint="token")  # nothing to do


def test_entra_error_rendering() -> None:
    body = render(microsoft_error(70008), now=1_800_000_000, correlation_id="corr", base_url="https://x")
    assert body["error"] == "invalid_grant" and body["error_codes"] == [70008]
    assert body["correlation_id"] == "corr" and body["timestamp"].endswith("Z")
    assert body["error_description"].startswith("AADSTS70008: The provided authorization code or refresh token")
    assert error_from_code("invalid_grant_google", "google").description == "Token has been expired or revoked."
    with pytest.raises(ValueError):
        error_from_code("AADSTS12345678", "microsoft")

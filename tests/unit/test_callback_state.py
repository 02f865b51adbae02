"""The callback's pure security helpers: state signing, PKCE, pending sign-ins, CSRF tokens."""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs, urlsplit

import pytest

from emailtoken.callback import pkce
from emailtoken.callback.csrf import CsrfGuard, same_origin
from emailtoken.callback.pending import AlreadyUsed, PendingStore
from emailtoken.callback.state import (
    ENV_KEY,
    MAX_STATE_LENGTH,
    ExpiredState,
    StateError,
    StateSigner,
    derive_key,
    load_key,
)
from emailtoken.model import TokenRef

KEY = b"k" * 32


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def signed(clock: Clock | None = None, key: bytes = KEY, ttl: float = 600) -> tuple[StateSigner, str]:
    signer = StateSigner(key, ttl=ttl, clock=clock or Clock())
    return signer, signer.sign(namespace="mail", name="inbox", uid="uid-1", nonce="nonce-1")


def _reencode(state: str, **changes: object) -> str:
    version, body, mac = state.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims.update(changes)
    new_body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{version}.{new_body}.{mac}"


# ----------------------------------------------------------------------------- state


def test_state_round_trip_carries_token_identity_and_nonce():
    clock = Clock()
    signer, state = signed(clock)
    claims = signer.verify(state)
    assert (claims.namespace, claims.name, claims.uid, claims.nonce) == ("mail", "inbox", "uid-1", "nonce-1")
    assert claims.expires_at == int(clock.now + 600)
    assert state.startswith("v1.") and state.count(".") == 2
    assert len(state) < 300


def test_state_is_not_secret_but_carries_no_verifier():
    _, state = signed()
    body = state.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    assert set(claims) == {"ns", "n", "u", "x", "e"}


def test_state_expires_after_ttl():
    clock = Clock()
    signer, state = signed(clock, ttl=60)
    clock.now += 59
    signer.verify(state)
    clock.now += 1
    with pytest.raises(ExpiredState) as exc:
        signer.verify(state)
    assert exc.value.reason == "StateExpired"


@pytest.mark.parametrize(
    "change", [{"n": "other"}, {"ns": "other"}, {"u": "uid-2"}, {"x": "nonce-2"}, {"e": 99999999999}]
)
def test_changed_claims_break_the_signature(change: dict[str, object]):
    signer, state = signed()
    with pytest.raises(StateError, match="signature is wrong") as exc:
        signer.verify(_reencode(state, **change))
    assert exc.value.reason == "InvalidState"


def test_state_signed_with_another_key_is_refused():
    _, state = signed(key=b"z" * 32)
    signer, _ = signed()
    with pytest.raises(StateError, match="signature is wrong"):
        signer.verify(state)


@pytest.mark.parametrize(
    "state",
    [
        "",
        "abc",
        "v1.abc",
        "v2.e30.AAAA",
        "v1.e30.!!!",
        "v1.e30." + "A" * 43,
        "x" * (MAX_STATE_LENGTH + 1),
    ],
)
def test_malformed_states_are_refused_without_exceptions_leaking(state: str):
    signer, _ = signed()
    with pytest.raises(StateError):
        signer.verify(state)


def test_signed_but_malformed_claims_are_refused():
    signer = StateSigner(KEY, clock=Clock())
    body = base64.urlsafe_b64encode(b'{"ns":"a"}').rstrip(b"=").decode()
    signed_part = f"v1.{body}"
    mac = base64.urlsafe_b64encode(signer._mac(signed_part)).rstrip(b"=").decode()
    with pytest.raises(StateError, match="malformed"):
        signer.verify(f"{signed_part}.{mac}")


def test_short_keys_are_rejected():
    with pytest.raises(ValueError, match="at least 16 bytes"):
        StateSigner(b"short")


def test_sub_keys_differ_per_purpose():
    assert derive_key(KEY, "state") != derive_key(KEY, "csrf")
    assert len(derive_key(KEY, "state")) == 32


def test_load_key_from_file_env_or_random(tmp_path):
    path = tmp_path / "key"
    path.write_text("  a-shared-key-of-enough-length \n")
    assert load_key(str(path), environ={}) == (b"a-shared-key-of-enough-length", f"file {path}")
    key, source = load_key(None, environ={ENV_KEY: "from-the-environment-123"})
    assert key == b"from-the-environment-123" and source == f"${ENV_KEY}"
    first, source = load_key(None, environ={})
    second, _ = load_key(None, environ={})
    assert source == "random (per process)" and len(first) == 32 and first != second
    path.write_text("tiny")
    with pytest.raises(ValueError, match="shorter than 16 bytes"):
        load_key(str(path), environ={})
    with pytest.raises(OSError):
        load_key(str(tmp_path / "missing"), environ={})


# ------------------------------------------------------------------------------ PKCE


def test_pkce_matches_rfc7636_appendix_b():
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert pkce.challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_new_verifiers_are_valid_long_and_unique():
    verifiers = {pkce.new_verifier() for _ in range(50)}
    assert len(verifiers) == 50
    assert all(pkce.is_valid_verifier(v) and len(v) == 86 for v in verifiers)
    with pytest.raises(ValueError):
        pkce.new_verifier(16)


@pytest.mark.parametrize("verifier", ["short", "a" * 129, "a" * 42 + "!", "a" * 43 + " "])
def test_invalid_verifiers_are_refused(verifier: str):
    assert not pkce.is_valid_verifier(verifier)
    with pytest.raises(ValueError):
        pkce.challenge(verifier)


def test_ensure_pkce_adds_a_missing_challenge():
    challenge = pkce.challenge(pkce.new_verifier())
    url = "https://login.example/t/oauth2/v2.0/authorize?client_id=a&state=s&scope=x+y"
    fixed = pkce.ensure_pkce(url, challenge)
    query = parse_qs(urlsplit(fixed).query)
    assert query["code_challenge"] == [challenge] and query["code_challenge_method"] == ["S256"]
    assert query["client_id"] == ["a"] and query["state"] == ["s"] and query["scope"] == ["x y"]
    assert pkce.ensure_pkce(fixed, challenge) == fixed


def test_ensure_pkce_refuses_another_challenge_or_plain():
    challenge = pkce.challenge(pkce.new_verifier())
    with pytest.raises(ValueError):
        pkce.ensure_pkce(f"https://x/a?code_challenge={'B' * 43}&code_challenge_method=S256", challenge)
    with pytest.raises(ValueError):
        pkce.ensure_pkce(f"https://x/a?code_challenge={challenge}&code_challenge_method=plain", challenge)


# --------------------------------------------------------------------------- pending

TOKEN = TokenRef("mail", "inbox", "uid-1")


def test_pending_sign_in_is_single_use():
    store = PendingStore(ttl=60, clock=Clock())
    entry = store.add(TOKEN, verifier="v" * 43, redirect_uri="https://cb/callback")
    assert len(entry.nonce) >= 32 and "v" * 43 not in repr(entry)
    assert store.take(entry.nonce) == entry
    with pytest.raises(AlreadyUsed):
        store.take(entry.nonce)
    assert store.take("never-issued") is None


def test_pending_sign_ins_expire():
    clock = Clock()
    store = PendingStore(ttl=60, clock=clock)
    entry = store.add(TOKEN, verifier="v" * 43, redirect_uri="r")
    clock.now += 61
    assert store.take(entry.nonce) is None
    assert len(store) == 0


def test_used_nonces_are_forgotten_after_their_expiry():
    clock = Clock()
    store = PendingStore(ttl=60, clock=clock)
    entry = store.add(TOKEN, verifier="v" * 43, redirect_uri="r")
    store.take(entry.nonce)
    clock.now += 61
    assert store.take(entry.nonce) is None  # "not found" rather than "already used": memory stays bounded


def test_pending_store_is_bounded():
    store = PendingStore(ttl=60, max_entries=3, clock=Clock())
    entries = [store.add(TOKEN, verifier="v" * 43, redirect_uri="r") for _ in range(5)]
    assert len(store) == 3
    assert store.take(entries[0].nonce) is None
    assert store.take(entries[-1].nonce) == entries[-1]


# ------------------------------------------------------------------------------ CSRF


def test_csrf_token_is_bound_to_the_cookie_and_key():
    guard = CsrfGuard(KEY)
    cookie = guard.new_cookie()
    token = guard.token_for(cookie)
    assert guard.check(cookie, token)
    assert not guard.check(guard.new_cookie(), token)
    assert not guard.check(cookie, CsrfGuard(b"o" * 32).token_for(cookie))
    assert not guard.check(None, token) and not guard.check(cookie, None) and not guard.check(cookie, "")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, True),
        ({"Origin": "http://localhost:8081"}, True),
        ({"Origin": "http://localhost:8081", "Sec-Fetch-Site": "same-origin"}, True),
        ({"Sec-Fetch-Site": "none"}, True),
        ({"Origin": "https://evil.example"}, False),
        ({"Origin": "null"}, False),
        ({"Origin": "null", "Sec-Fetch-Site": "same-origin"}, True),
        ({"Origin": "https://evil.example", "Sec-Fetch-Site": "same-origin"}, False),
        ({"Origin": "http://localhost:8080"}, False),
        ({"Sec-Fetch-Site": "cross-site"}, False),
        ({"Sec-Fetch-Site": "same-site"}, False),
    ],
)
def test_same_origin(headers: dict[str, str], expected: bool):
    assert same_origin(headers, "http://localhost:8081") is expected

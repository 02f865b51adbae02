"""The callback's security helpers: sealed states, PKCE, single use through the grant write, CSRF."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from emailtoken.callback import pkce
from emailtoken.callback.csrf import CsrfGuard, same_origin
from emailtoken.callback.signin import (
    ANNOTATION_SIGN_INS,
    MAX_RECORDED_SIGN_INS,
    SignInRefused,
    ensure_unused,
    replace_grant,
)
from emailtoken.callback.state import (
    ENV_KEY,
    MAX_STATE_LENGTH,
    ExpiredState,
    SignInState,
    StateError,
    StateSealer,
    derive_key,
    load_key,
)
from emailtoken.kube import KubeError
from emailtoken.model import TokenRef
from emailtoken.secretdata import Grant, read_grant
from emailtoken.store import GrantStore
from tests.support.fakeapi import InMemoryApi

KEY = b"k" * 32
TOKEN = TokenRef("mail", "inbox", "uid-1")
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def sealed(
    clock: Clock | None = None, key: bytes = KEY, ttl: float = 600, token: TokenRef = TOKEN
) -> tuple[StateSealer, str, SignInState]:
    sealer = StateSealer(key, ttl=ttl, clock=clock or Clock())
    state, sign_in = sealer.seal(token, verifier=VERIFIER)
    return sealer, state, sign_in


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw(state: str) -> bytes:
    body = state.split(".", 1)[1]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))


def _seal_claims(claims: Any, key: bytes = KEY) -> str:
    """A state sealed the documented way with arbitrary claims (what only a key holder can make)."""
    iv = os.urandom(12)
    aead = AESGCM(derive_key(key, "state-v2"))
    return "v2." + _b64(iv + aead.encrypt(iv, json.dumps(claims).encode(), b"emailtoken-state/v2"))


# ----------------------------------------------------------------------------- state


def test_state_round_trip_carries_token_identity_sign_in_id_and_verifier():
    clock = Clock()
    sealer, state, issued = sealed(clock)
    opened = sealer.open(state)
    assert opened == issued
    assert opened.token == TOKEN and opened.verifier == VERIFIER
    assert opened.expires_at == int(clock.now + 600) and len(opened.sign_in_id) >= 20
    assert state.startswith("v2.") and state.count(".") == 1
    assert VERIFIER not in repr(opened)


def test_state_hides_the_verifier_and_the_token():
    _, state, _ = sealed()
    raw = _raw(state)
    for visible in (state, raw.decode("latin-1")):
        assert VERIFIER not in visible and "inbox" not in visible and "uid-1" not in visible
    assert pkce.challenge(VERIFIER) not in state


def test_every_state_is_new_even_for_the_same_token():
    sealer, first, one = sealed()
    second, two = sealer.seal(TOKEN, verifier=VERIFIER)
    assert first != second and one.sign_in_id != two.sign_in_id
    assert _raw(first)[:12] != _raw(second)[:12]  # a fresh GCM nonce per state


def test_longest_names_still_fit():
    token = TokenRef("n" * 63, "x" * 253, "0" * 36)
    sealer = StateSealer(KEY, clock=Clock())
    state, _ = sealer.seal(token, verifier=pkce.new_verifier())
    assert len(state) <= MAX_STATE_LENGTH // 2
    assert sealer.open(state).token == token


def test_state_expires_after_ttl():
    clock = Clock()
    sealer, state, _ = sealed(clock, ttl=60)
    clock.now += 59
    sealer.open(state)
    clock.now += 1
    with pytest.raises(ExpiredState) as exc:
        sealer.open(state)
    assert exc.value.reason == "StateExpired"


@pytest.mark.parametrize("position", [0, 5, 11, 12, 40, -17, -1])
def test_any_changed_byte_breaks_the_seal(position: int):
    sealer, state, _ = sealed()
    raw = bytearray(_raw(state))
    raw[position] ^= 0x01
    with pytest.raises(StateError, match="failed authentication") as exc:
        sealer.open("v2." + _b64(bytes(raw)))
    assert exc.value.reason == "InvalidState"


def test_state_sealed_with_another_key_is_refused():
    _, state, _ = sealed(key=b"z" * 32)
    sealer, _, _ = sealed()
    with pytest.raises(StateError, match="failed authentication"):
        sealer.open(state)
    # A key holder's other sub-keys (CSRF) cannot make states either.
    with pytest.raises(StateError, match="failed authentication"):
        sealer.open("v2." + _b64(b"\0" * 12 + AESGCM(derive_key(KEY, "csrf")).encrypt(b"\0" * 12, b"{}", None)))


@pytest.mark.parametrize(
    "state",
    ["", "abc", "v2", "v2.", "v3.AAAA", "v2.!!!", "v2." + "A" * 30, "v1.e30.AAAA", "x" * (MAX_STATE_LENGTH + 1)],
)
def test_malformed_states_are_refused_without_exceptions_leaking(state: str):
    sealer, _, _ = sealed()
    with pytest.raises(StateError):
        sealer.open(state)


def test_states_of_the_previous_format_get_a_clear_message():
    sealer, _, _ = sealed()
    with pytest.raises(StateError, match="before the callback service was upgraded"):
        sealer.open("v1.eyJucyI6Im1haWwifQ.AAAA")


@pytest.mark.parametrize(
    "claims",
    [
        {"ns": "mail"},
        [],
        {"ns": "mail", "n": "inbox", "u": "uid-1", "i": "id", "e": "soon", "v": VERIFIER},
        {"ns": "mail", "n": "inbox", "u": "uid-1", "i": "", "e": 2_000_000, "v": VERIFIER},
        {"ns": "mail", "n": "inbox", "u": "uid-1", "i": "id", "e": 2_000_000, "v": "short"},
    ],
)
def test_sealed_but_malformed_claims_are_refused(claims: Any):
    sealer, _, _ = sealed()
    with pytest.raises(StateError, match="malformed"):
        sealer.open(_seal_claims(claims))


def test_sealing_needs_a_valid_verifier_and_a_long_key():
    with pytest.raises(ValueError, match="verifier"):
        StateSealer(KEY).seal(TOKEN, verifier="too-short")
    with pytest.raises(ValueError, match="at least 16 bytes"):
        StateSealer(b"short")


def test_sub_keys_differ_per_purpose():
    assert derive_key(KEY, "state-v2") != derive_key(KEY, "csrf")
    assert len(derive_key(KEY, "state-v2")) == 32


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


# ------------------------------------------------------------------ single use (grant write)
# InMemoryApi enforces resourceVersion preconditions as a real API server does (kmock does not).


def grant(refresh_token: str = "rt-1") -> Grant:
    return Grant(refresh_token=refresh_token, account="alice@contoso.com", scope="s", obtained_at="t", updated_at="t")


def sign_in_of(sealer: StateSealer | None = None) -> SignInState:
    sealer = sealer or StateSealer(KEY)  # the real clock: records expire against time.time()
    return sealer.seal(TOKEN, verifier=VERIFIER)[1]


def grant_secret_of(api: InMemoryApi) -> dict[str, Any]:
    return api.secrets[(TOKEN.namespace, TOKEN.grant_secret_name)]


def recorded(api: InMemoryApi) -> dict[str, int]:
    return json.loads(grant_secret_of(api)["metadata"]["annotations"][ANNOTATION_SIGN_INS])


async def test_a_sign_in_writes_the_grant_once():
    api = InMemoryApi()
    first = sign_in_of()
    await ensure_unused(api, TOKEN, first)
    await replace_grant(api, TOKEN, grant("rt-1"), sign_in=first)
    assert read_grant(grant_secret_of(api)).refresh_token == "rt-1"
    assert recorded(api) == {first.sign_in_id: first.expires_at}

    for attempt in (ensure_unused(api, TOKEN, first), replace_grant(api, TOKEN, grant("rt-2"), sign_in=first)):
        with pytest.raises(SignInRefused) as exc:
            await attempt
        assert (exc.value.reason, exc.value.status) == ("AlreadyUsed", 400)
    assert read_grant(grant_secret_of(api)).refresh_token == "rt-1"

    second = sign_in_of()  # another sign-in of the same token replaces the grant and is recorded too
    await ensure_unused(api, TOKEN, second)
    await replace_grant(api, TOKEN, grant("rt-3"), sign_in=second)
    assert read_grant(grant_secret_of(api)).refresh_token == "rt-3"
    assert set(recorded(api)) == {first.sign_in_id, second.sign_in_id}


async def test_the_record_survives_the_operators_rotation():
    api = InMemoryApi()
    done = sign_in_of()
    await replace_grant(api, TOKEN, grant("rt-1"), sign_in=done)
    store = GrantStore(api)
    current = await store.load(TOKEN)
    await store.save(TOKEN, grant("rt-rotated"), expected_version=current.resource_version)
    assert read_grant(grant_secret_of(api)).refresh_token == "rt-rotated"
    with pytest.raises(SignInRefused, match="already completed"):
        await ensure_unused(api, TOKEN, done)


class RacingApi(InMemoryApi):
    """Every read yields to the event loop, so two writers read the same version before either writes."""

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        answer = await super().get_secret(namespace, name)
        await asyncio.sleep(0)
        return answer


@pytest.mark.parametrize("existing", [False, True])
async def test_two_replicas_finishing_one_sign_in_at_once_write_once(existing: bool):
    api = RacingApi()
    if existing:
        await replace_grant(api, TOKEN, grant("rt-old"))
    twice = sign_in_of()
    outcomes = await asyncio.gather(
        replace_grant(api, TOKEN, grant("rt-a"), sign_in=twice),
        replace_grant(api, TOKEN, grant("rt-b"), sign_in=twice),
        return_exceptions=True,
    )
    refused = [o for o in outcomes if isinstance(o, SignInRefused)]
    assert outcomes.count(None) == 1 and [r.reason for r in refused] == ["AlreadyUsed"]
    winner = "rt-a" if outcomes[0] is None else "rt-b"
    assert read_grant(grant_secret_of(api)).refresh_token == winner
    assert len([w for w in api.writes if w[2] == TOKEN.grant_secret_name]) == 1 + existing


async def test_expired_records_are_dropped_and_the_record_is_bounded():
    api = InMemoryApi()
    old = StateSealer(KEY, ttl=1).seal(TOKEN, verifier=VERIFIER)[1]
    await replace_grant(api, TOKEN, grant(), sign_in=old)
    assert set(recorded(api)) == {old.sign_in_id}
    await asyncio.sleep(max(0.0, old.expires_at - time.time()) + 0.05)
    new = sign_in_of()
    await replace_grant(api, TOKEN, grant(), sign_in=new)
    assert set(recorded(api)) == {new.sign_in_id}  # the old state is refused as expired now, no need to keep it
    many = [sign_in_of() for _ in range(MAX_RECORDED_SIGN_INS + 5)]
    for one in many:
        await replace_grant(api, TOKEN, grant(), sign_in=one)
    assert len(recorded(api)) == MAX_RECORDED_SIGN_INS
    assert many[-1].sign_in_id in recorded(api)


class LostAnswerApi(InMemoryApi):
    """The first patch lands but its answer is lost (the connection drops after the write)."""

    lost = 0

    async def patch_secret(self, namespace: str, name: str, patch: dict[str, Any], **kw: Any) -> dict[str, Any]:
        written = await super().patch_secret(namespace, name, patch, **kw)
        if not self.lost:
            self.lost += 1
            raise KubeError(503, "the answer was lost")
        return written


async def test_a_write_whose_answer_was_lost_is_not_reported_as_already_used():
    api = LostAnswerApi()
    await replace_grant(api, TOKEN, grant("rt-old"))
    one = sign_in_of()
    await replace_grant(api, TOKEN, grant("rt-new"), sign_in=one)
    assert api.lost == 1 and read_grant(grant_secret_of(api)).refresh_token == "rt-new"
    with pytest.raises(SignInRefused, match="already completed"):
        await replace_grant(api, TOKEN, grant("rt-other"), sign_in=one)


FORBIDDEN_PATCH = (
    f'secrets "{TOKEN.grant_secret_name}" is forbidden: User "system:serviceaccount:ops:emailtoken-callback" '
    f'cannot patch resource "secrets" in API group "" in the namespace "{TOKEN.namespace}"'
)


async def test_transient_api_errors_are_retried_and_a_refusal_is_named():
    """A 500 is retried; a 403 was reported as 'APIUnavailable, try again' (503), which no retry
    fixes. It is PermissionDenied now, in the API server's words (verb, resource, namespace)."""
    api = InMemoryApi()
    api.fail_next = [KubeError(500, "etcd hiccup"), KubeError(503, "etcd hiccup")]
    await replace_grant(api, TOKEN, grant("rt-1"), sign_in=sign_in_of())
    assert read_grant(grant_secret_of(api)).refresh_token == "rt-1"
    writes = len(api.writes)
    api.fail_next = [KubeError(403, FORBIDDEN_PATCH)]
    with pytest.raises(SignInRefused) as exc:
        await replace_grant(api, TOKEN, grant("rt-2"), sign_in=sign_in_of())
    assert (exc.value.reason, exc.value.status) == ("PermissionDenied", 500)
    assert FORBIDDEN_PATCH in exc.value.message and "HTTP 403" in exc.value.message
    assert f"Secret {TOKEN.namespace}/{TOKEN.grant_secret_name}" in exc.value.message
    assert "try again" not in exc.value.message
    assert len(api.writes) == writes, "a refusal is not retried"
    assert read_grant(grant_secret_of(api)).refresh_token == "rt-1"


class RelabellingApi(InMemoryApi):
    """Another writer (a policy engine, a backup tool) touches the grant Secret between each of
    our reads and our write, ``burst`` times (None: for ever)."""

    def __init__(self, burst: int | None) -> None:
        super().__init__()
        self.burst = burst
        self.touched = 0

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        answer = await super().get_secret(namespace, name)
        stored = self.secrets.get((namespace, name))
        if stored is not None and (self.burst is None or self.touched < self.burst):
            self.touched += 1
            stored["metadata"].setdefault("labels", {})["backup.example/seen"] = str(self.touched)
            stored["metadata"]["resourceVersion"] = str(next(self._rv))
        return answer


async def test_a_burst_of_relabelling_does_not_discard_a_sign_in_whose_code_is_spent():
    """Three conflicts in a row used to end the sign-in (GrantWriteConflict) after its code was
    redeemed. The write is bounded by time now: ten conflicts in a row, and it still lands."""
    api = RelabellingApi(burst=0)
    await replace_grant(api, TOKEN, grant("rt-old"))
    api.burst = 10
    one = sign_in_of()
    await replace_grant(api, TOKEN, grant("rt-new"), sign_in=one)
    assert api.touched == 10
    stored = grant_secret_of(api)
    assert read_grant(stored).refresh_token == "rt-new"
    assert stored["metadata"]["labels"]["backup.example/seen"] == "10", "the other writer's label is kept"
    assert one.sign_in_id in recorded(api)


async def test_conflicts_that_never_end_give_up_after_the_patience():
    api = RelabellingApi(burst=0)
    await replace_grant(api, TOKEN, grant("rt-old"))
    api.burst = None
    started = time.monotonic()
    with pytest.raises(SignInRefused) as exc:
        await replace_grant(api, TOKEN, grant("rt-new"), sign_in=sign_in_of(), patience=1.0)
    took = time.monotonic() - started
    assert (exc.value.reason, exc.value.status) == ("GrantWriteConflict", 409)
    assert 0.5 < took < 1.5, took
    assert read_grant(grant_secret_of(api)).refresh_token == "rt-old"


FORBIDDEN_GET = FORBIDDEN_PATCH.replace("cannot patch", "cannot get")


class ForbiddenReads(InMemoryApi):
    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        raise KubeError(403, FORBIDDEN_GET)


async def test_the_other_api_reads_name_a_refusal_too():
    """Reading the grant (single use) and the client secret: a 403 is PermissionDenied as well."""
    with pytest.raises(SignInRefused) as exc:
        await ensure_unused(ForbiddenReads(), TOKEN, sign_in_of())
    assert (exc.value.reason, exc.value.status) == ("PermissionDenied", 500)
    assert FORBIDDEN_GET in exc.value.message


async def test_a_secret_that_is_not_the_grant_is_never_touched():
    api = InMemoryApi()
    await api.create_secret(TOKEN.namespace, {"metadata": {"name": TOKEN.grant_secret_name}, "data": {}})
    for attempt in (ensure_unused(api, TOKEN, sign_in_of()), replace_grant(api, TOKEN, grant(), sign_in=sign_in_of())):
        with pytest.raises(SignInRefused) as exc:
            await attempt
        assert exc.value.reason == "SecretConflict"
    assert api.writes == [("create", "secret", TOKEN.grant_secret_name)]


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

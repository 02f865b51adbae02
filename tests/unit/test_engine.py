"""emailtoken.engine: one step per token, against the in-memory API and a scripted provider.

The provider is a plain class (no mocks) that hands out numbered tokens or raises the
ProviderErrors a test queues; the clock is a fixed value the test advances.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from emailtoken import conditions
from emailtoken.conditions import Condition
from emailtoken.engine import Engine, EngineConfig
from emailtoken.kube import KubeError
from emailtoken.model import EmailTokenSpec, TokenRef, parse_spec
from emailtoken.outcomes import ErrorKind, ProviderError, TokenSet
from emailtoken.providers.base import ClientCredentials
from emailtoken.secretdata import Grant, decode_data
from emailtoken.store import WRITE_RETRIES, GrantStore
from emailtoken.timefmt import parse_rfc3339, rfc3339
from emailtoken.timing import DEFAULT_KEEPALIVE, next_refresh
from tests.support.fakeapi import InMemoryApi

NS, NAME = "mail", "box"
KEY = (NS, NAME)
TOKEN = TokenRef(NS, NAME, "uid-1")
GRANT = "emailtoken-grant-box"
T0 = datetime(2026, 3, 1, 8, 0, 0, tzinfo=UTC)
SEED = 1234
MAILBOX = "box@contoso.example"
CLIENT_SECRET = "client-secret-value-Zq8~abc.def"
INITIAL_RT = "initial-refresh-token-value-0000"
SCOPE = "https://outlook.office365.com/.default"

APP_SPEC: dict[str, Any] = {
    "provider": "Microsoft",
    "flow": "ClientCredentials",
    "tenantId": "contoso",
    "clientId": "app-id",
    "clientSecretRef": {"name": "app-secret"},
    "emailAddress": MAILBOX,
    "services": ["IMAP", "SMTP"],
}
DELEGATED_SPEC: dict[str, Any] = {**APP_SPEC, "flow": "AuthorizationCode"}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class Clock:
    """A fixed clock the test moves by hand."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)

    def set(self, moment: datetime) -> None:
        self.now = moment


Scripted = TokenSet | ProviderError | Callable[[], TokenSet]


class ScriptedProvider:
    """Issues numbered tokens valid for an hour, or the outcomes queued in ``script``."""

    def __init__(self, clock: Clock, *, rotate: bool = True) -> None:
        self.clock = clock
        self.rotate = rotate
        self.script: list[Scripted] = []
        self.app_calls = 0
        self.refreshed_with: list[str] = []
        self.creds: list[ClientCredentials] = []
        self.issued: list[TokenSet] = []

    def for_spec(self, provider: str) -> ScriptedProvider:
        return self

    @property
    def calls(self) -> int:
        return self.app_calls + len(self.refreshed_with)

    def _next(self, account: str | None) -> TokenSet:
        if self.script:
            item = self.script.pop(0)
            if isinstance(item, ProviderError):
                raise item
            result = item() if callable(item) else item
        else:
            n = len(self.issued) + 1
            result = TokenSet(
                access_token=f"access-token-value-{n:04d}-xyz",
                expires_at=self.clock() + timedelta(hours=1),
                scope=SCOPE,
                refresh_token=f"rotated-refresh-token-value-{n:04d}" if self.rotate else None,
                account=account,
            )
        self.issued.append(result)
        return result

    def acquire_app_token(self, spec: EmailTokenSpec, creds: ClientCredentials) -> TokenSet:
        self.app_calls += 1
        self.creds.append(creds)
        return self._next(spec.email_address)

    def refresh(self, spec: EmailTokenSpec, creds: ClientCredentials, refresh_token: str) -> TokenSet:
        self.refreshed_with.append(refresh_token)
        self.creds.append(creds)
        return self._next(None)


class RecordingApi(InMemoryApi):
    """Remembers every status patch, and what the grant held whenever the consumer Secret was written."""

    def __init__(self) -> None:
        super().__init__()
        self.status_patches: list[dict[str, Any]] = []
        self.grant_at_publish: list[str | None] = []

    def _note_publish(self, namespace: str, name: str) -> None:
        if name == NAME:
            grant = self.secrets.get((namespace, GRANT))
            self.grant_at_publish.append(decode_data(grant)["refresh_token"] if grant else None)

    async def create_secret(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        result = await super().create_secret(namespace, body)
        self._note_publish(namespace, body["metadata"]["name"])
        return result

    async def patch_secret(
        self, namespace: str, name: str, patch: dict[str, Any], *, resource_version: str | None = None
    ) -> dict[str, Any]:
        result = await super().patch_secret(namespace, name, patch, resource_version=resource_version)
        self._note_publish(namespace, name)
        return result

    async def patch_token_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        await super().patch_token_status(namespace, name, status)
        self.status_patches.append(copy.deepcopy(status))


class Harness:
    """An engine, its API, provider, clock and event list, plus the token's body as kopf would pass it."""

    def __init__(self, spec: dict[str, Any], *, redirect_base_url: str | None = None, rotate: bool = True) -> None:
        self.api = RecordingApi()
        self.clock = Clock(T0)
        self.provider = ScriptedProvider(self.clock, rotate=rotate)
        self.events: list[tuple[str, str, str]] = []
        self.config = EngineConfig(redirect_base_url=redirect_base_url)
        self.spec = copy.deepcopy(spec)
        self.annotations: dict[str, str] = {}
        self.engine = self.new_engine()

    def new_engine(self, seed: int = SEED) -> Engine:
        return Engine(
            self.api, self.provider, events=self.sink, config=self.config, clock=self.clock, rng=random.Random(seed)
        )

    def sink(self, body: Any, *, type: str, reason: str, message: str) -> None:
        self.events.append((type, reason, message))

    async def add_client_secret(self) -> None:
        await self.api.create_secret(
            NS, {"metadata": {"name": "app-secret", "namespace": NS}, "data": {"client_secret": b64(CLIENT_SECRET)}}
        )

    async def add_grant(self, refresh_token: str = INITIAL_RT) -> Grant:
        grant = Grant(refresh_token, MAILBOX, "scope", rfc3339(T0), rfc3339(T0))
        return await GrantStore(self.api).save(TOKEN, grant, expected_version=None)

    def body(self) -> dict[str, Any]:
        stored = self.api.tokens.get(KEY) or {}
        return {
            "metadata": {
                "namespace": NS,
                "name": NAME,
                "uid": "uid-1",
                "generation": 1,
                "annotations": dict(self.annotations),
            },
            "spec": copy.deepcopy(self.spec),
            "status": copy.deepcopy(stored.get("status") or {}),
        }

    async def step(self, engine: Engine | None = None) -> Any:
        return await (engine or self.engine).step(self.body())

    @property
    def status(self) -> dict[str, Any]:
        return self.api.tokens[KEY]["status"]

    def cond(self, type_: str) -> dict[str, Any]:
        found = conditions.get(self.status["conditions"], type_)
        assert found is not None, f"no {type_} condition"
        return dict(found)

    def due_time(self) -> datetime:
        """Just past nextRefreshTime (status keeps whole seconds, the plan in memory does not)."""
        return parse_rfc3339(self.status["nextRefreshTime"]) + timedelta(seconds=1)

    def consumer(self) -> dict[str, str]:
        return decode_data(self.api.secrets[(NS, NAME)])

    def grant_rt(self) -> str | None:
        grant = self.api.secrets.get((NS, GRANT))
        return decode_data(grant)["refresh_token"] if grant else None

    def secret_values(self) -> list[str]:
        values = [CLIENT_SECRET, INITIAL_RT]
        for issued in self.provider.issued:
            values.append(issued.access_token)
            if issued.refresh_token:
                values.append(issued.refresh_token)
        return values


def expected_first_refresh(seed: int = SEED) -> datetime:
    """What the engine plans after a token obtained at T0 for an hour (same rng seed)."""
    return next_refresh(T0, T0 + timedelta(hours=1), None, keepalive=DEFAULT_KEEPALIVE, rng=random.Random(seed))


async def app_harness(**kwargs: Any) -> Harness:
    h = Harness(APP_SPEC, **kwargs)
    await h.add_client_secret()
    h.api.writes.clear()
    return h


async def delegated_harness(*, grant: bool = True, **kwargs: Any) -> Harness:
    h = Harness(DELEGATED_SPEC, **kwargs)
    await h.add_client_secret()
    if grant:
        await h.add_grant()
    h.api.writes.clear()
    return h


# --------------------------------------------------------------------------- app-only happy path


async def test_app_only_token_is_published_with_every_key_and_status() -> None:
    """The first step acquires a token, publishes the full contract and reports Ready/Authorized."""
    h = await app_harness()
    result = await h.step()

    assert h.provider.app_calls == 1
    assert h.provider.creds[0].client_secret == CLIENT_SECRET
    token = h.provider.issued[0]
    data = h.consumer()
    assert data == {
        "access_token": token.access_token,
        "token_type": "Bearer",
        "expires_at": "2026-03-01T09:00:00Z",
        "username": MAILBOX,
        "xoauth2": b64(f"user={MAILBOX}\x01auth=Bearer {token.access_token}\x01\x01"),
        "scope": SCOPE,
    }
    meta = h.api.secrets[(NS, NAME)]["metadata"]
    assert meta["labels"]["emailtoken.io/token"] == NAME
    assert meta["ownerReferences"][0]["uid"] == "uid-1"

    planned = expected_first_refresh()
    assert result.refreshed is True
    assert result.delay == pytest.approx((planned - T0).total_seconds())
    assert 38 * 60 <= result.delay <= 40 * 60

    status = h.status
    assert status["phase"] == "Ready"
    assert status["secretName"] == NAME
    assert status["account"] == MAILBOX
    assert status["expiresAt"] == "2026-03-01T09:00:00Z"
    assert status["lastRefreshTime"] == "2026-03-01T08:00:00Z"
    assert status["nextRefreshTime"] == rfc3339(planned)
    assert status["refreshFailures"] == 0
    assert status["observedGeneration"] == 1
    assert "redirectUri" not in status
    ready, authorized = h.cond("Ready"), h.cond("Authorized")
    assert (ready["status"], ready["reason"]) == ("True", "TokenValid")
    assert (authorized["status"], authorized["reason"]) == ("True", "Authorized")
    assert ready["observedGeneration"] == 1
    assert [c["type"] for c in status["conditions"]] == ["Ready", "Authorized"]

    assert [(t, r) for t, r, _ in h.events] == [("Normal", "Authorized")]
    assert "access token valid until" in h.events[0][2]
    assert h.api.writes == [("create", "secret", NAME), ("patch", "status", NAME)]


async def test_step_before_due_makes_no_writes_and_no_provider_call() -> None:
    """A token that is not due costs nothing: no API writes, no provider call, no Event."""
    h = await app_harness()
    await h.step()
    writes, events = list(h.api.writes), list(h.events)
    h.clock.advance(minutes=10)
    result = await h.step()
    assert h.provider.app_calls == 1
    assert h.api.writes == writes
    assert h.events == events
    assert result.refreshed is False
    assert result.delay == pytest.approx((expected_first_refresh() - h.clock.now).total_seconds())


async def test_a_step_with_an_equal_spec_reuses_the_parsed_one_and_an_edit_is_parsed() -> None:
    """Every routine refresh brings the same spec: it is parsed once; the wiring asks whether a
    watched spec is the one the last step followed (a status echo is, an edit is not)."""
    h = await app_harness()
    assert not h.engine.stepped_with(KEY, h.body()["spec"]), "no step yet"
    await h.step()
    first = h.engine.states[KEY].parsed
    assert first is not None and h.engine.stepped_with(KEY, h.body()["spec"])
    h.clock.set(h.due_time())
    await h.step()
    assert h.engine.states[KEY].parsed[1] is first[1], "an equal spec is not parsed again"
    h.spec["emailAddress"] = "other@contoso.com"
    assert not h.engine.stepped_with(KEY, h.body()["spec"])
    await h.step()
    assert h.engine.states[KEY].parsed[1].email_address == "other@contoso.com"
    assert h.engine.stepped_with(KEY, h.body()["spec"])
    h.engine.forget(KEY)
    assert not h.engine.stepped_with(KEY, h.body()["spec"])


async def test_refreshes_once_after_next_refresh_time() -> None:
    """Past nextRefreshTime exactly one refresh happens, then the token is quiet again."""
    h = await app_harness()
    await h.step()
    h.clock.set(h.due_time())
    result = await h.step()
    assert result.refreshed is True
    assert h.provider.app_calls == 2
    assert h.consumer()["access_token"] == h.provider.issued[1].access_token
    assert h.status["lastRefreshTime"] == rfc3339(h.clock.now)
    assert parse_rfc3339(h.status["nextRefreshTime"]) > h.clock.now + timedelta(minutes=30)
    await h.step()
    assert h.provider.app_calls == 2
    # Authorized once; the routine refresh shows in status, not as another Event.
    assert [r for _, r, _ in h.events] == ["Authorized"]


async def test_routine_refresh_events_on_request() -> None:
    """``--refresh-events=all`` adds a Refreshed Event for every routine refresh."""
    h = await app_harness()
    h.config.routine_events = True
    h.engine = h.new_engine()
    await h.step()
    h.clock.set(h.due_time())
    await h.step()
    assert [r for _, r, _ in h.events] == ["Authorized", "Refreshed"]


async def test_asked_for_refreshes_get_an_event() -> None:
    """Refresh-now and a spec change are someone's doing: their refresh is reported as an Event."""
    h = await app_harness()
    await h.step()
    h.annotations["emailtoken.io/refresh-now"] = "1"
    h.clock.advance(minutes=1)
    await h.step()
    h.spec["clientId"] = "another-app"
    h.clock.advance(minutes=1)
    await h.step()
    assert h.provider.app_calls == 3
    assert [r for _, r, _ in h.events] == ["Authorized", "Refreshed", "Refreshed"]


async def test_spec_change_refreshes_at_once() -> None:
    """A different client makes the published token stale, even far before its refresh time."""
    h = await app_harness()
    await h.step()
    h.spec["clientId"] = "another-app"
    h.clock.advance(minutes=1)
    await h.step()
    assert h.provider.app_calls == 2
    annotations = h.api.secrets[(NS, NAME)]["metadata"]["annotations"]
    assert annotations["emailtoken.io/spec-hash"] == parse_spec(h.spec, NAME).fingerprint()
    assert annotations["emailtoken.io/spec-hash"] != parse_spec(APP_SPEC, NAME).fingerprint()
    h.clock.advance(minutes=1)
    await h.step()
    assert h.provider.app_calls == 2


async def test_deleted_consumer_secret_is_published_again() -> None:
    """Someone deleting the Secret gets it back at the next step."""
    h = await app_harness()
    await h.step()
    await h.api.delete_secret(NS, NAME)
    h.engine.secret_deleted(KEY, NAME)
    h.clock.advance(minutes=1)
    await h.step()
    assert h.provider.app_calls == 2
    assert h.consumer()["access_token"] == h.provider.issued[1].access_token


async def test_invalid_spec_reports_without_calling_the_provider() -> None:
    """A spec the engine cannot use becomes a condition, not an exception."""
    h = Harness({**APP_SPEC, "tenantId": None})
    result = await h.step()
    assert result.delay is None
    assert h.provider.calls == 0
    ready = h.cond("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert ready["message"].startswith("spec.tenantId: tenantId is required when provider is Microsoft")
    assert h.cond("Authorized")["reason"] == "InvalidSpec"
    assert h.status["phase"] == "InvalidSpec"


async def test_an_invalid_spec_is_remembered_as_invalid_until_it_changes() -> None:
    """The echo of the InvalidSpec status must not wake the token again and again: the wiring
    asks stepped_with, which holds for the same invalid spec; a step with it says the same."""
    h = Harness({**APP_SPEC, "tenantId": None})
    await h.add_client_secret()
    await h.step()
    message = h.cond("Ready")["message"]
    assert h.engine.stepped_with(KEY, h.body()["spec"])
    writes = list(h.api.writes)
    await h.step()
    assert h.cond("Ready")["message"] == message and h.api.writes == writes, "nothing new to write"
    h.spec["tenantId"] = APP_SPEC["tenantId"]
    assert not h.engine.stepped_with(KEY, h.body()["spec"])
    await h.step()
    assert h.cond("Ready")["status"] == "True"


# --------------------------------------------------------------------------- transient failures


async def test_transient_error_keeps_ready_while_token_valid_then_flips_at_expiry() -> None:
    """The last good token stays usable; Ready only goes False when it has expired."""
    h = await app_harness()
    await h.step()
    consumer_before = h.consumer()
    h.clock.set(T0 + timedelta(minutes=59))
    h.provider.script.append(ProviderError(ErrorKind.TRANSIENT, "the token endpoint failed: busy", retry_after=600))
    result = await h.step()
    assert result.refreshed is False
    assert result.delay == pytest.approx(60.0)  # Ready flips at expiry, before the Retry-After
    assert h.consumer() == consumer_before
    ready = h.cond("Ready")
    assert (ready["status"], ready["reason"]) == ("True", "TokenValid")
    assert "stays valid until 2026-03-01T09:00:00Z" in ready["message"]
    assert "busy" in ready["message"]
    assert h.cond("Authorized")["status"] == "True"
    assert h.status["refreshFailures"] == 1
    assert h.status["phase"] == "Ready"
    assert h.events[-1] == ("Warning", "RefreshFailed", "ProviderUnavailable: the token endpoint failed: busy")

    h.clock.set(T0 + timedelta(hours=1))
    result = await h.step()
    assert h.provider.app_calls == 2  # not due yet (Retry-After), only the condition moved
    ready = h.cond("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ProviderUnavailable")
    assert ready["lastTransitionTime"] == "2026-03-01T09:00:00Z"
    assert h.status["phase"] == "ProviderUnavailable"
    assert result.delay == pytest.approx(540.0)


async def test_transient_backoff_grows_and_recovery_resets() -> None:
    """Backoff delays grow with failures; a success clears the failure count."""
    h = await app_harness()
    await h.step()
    h.clock.set(h.due_time())
    delays = []
    for _ in range(4):
        h.provider.script.append(ProviderError(ErrorKind.TRANSIENT, "the token endpoint failed: 503"))
        result = await h.step()
        delays.append(result.delay)
        h.clock.advance(seconds=result.delay)
    assert 2.5 <= delays[0] <= 5
    assert 5 <= delays[1] <= 10
    assert 10 <= delays[2] <= 20
    assert 20 <= delays[3] <= 40
    assert h.status["refreshFailures"] == 4
    # Events at failures 1, 2 and 4 only (no storm on identical repeats).
    assert [r for _, r, _ in h.events].count("RefreshFailed") == 3
    result = await h.step()
    assert result.refreshed is True
    assert h.status["refreshFailures"] == 0
    assert h.cond("Ready")["message"].startswith("access token valid until")


async def test_retry_after_is_honoured() -> None:
    """A provider asking for two minutes gets at least two minutes."""
    h = await app_harness()
    h.provider.script.append(ProviderError(ErrorKind.TRANSIENT, "throttled", retry_after=120))
    result = await h.step()
    assert result.delay == pytest.approx(120.0)
    assert h.cond("Ready")["reason"] == "ProviderUnavailable"  # nothing was ever published
    h.clock.advance(seconds=119)
    await h.step()
    assert h.provider.app_calls == 1


async def test_invalid_client_retries_slowly() -> None:
    """A wrong client secret is retried in minutes, not seconds, and says InvalidClient."""
    h = await app_harness()
    h.provider.script.append(ProviderError(ErrorKind.INVALID_CLIENT, "the client secret is wrong (AADSTS7000215)"))
    result = await h.step()
    assert 30 <= result.delay <= 60
    assert h.cond("Authorized")["reason"] == "InvalidClient"
    assert h.status["phase"] == "InvalidClient"


# --------------------------------------------------------------------------- re-authorization


async def test_reauthorize_error_stops_and_warns_once() -> None:
    """A dead grant is reported once and not retried until a person acts."""
    h = await delegated_harness()
    h.provider.script.append(
        ProviderError(
            ErrorKind.REAUTHORIZE,
            "the refresh token expired after 90 days of inactivity (AADSTS700082)",
            code="AADSTS700082",
        )
    )
    result = await h.step()
    assert result.delay is None
    authorized, ready = h.cond("Authorized"), h.cond("Ready")
    assert (authorized["status"], authorized["reason"]) == ("False", "ReauthorizationRequired")
    assert authorized["message"] == "the refresh token expired after 90 days of inactivity (AADSTS700082)"
    assert (ready["status"], ready["reason"]) == ("False", "ReauthorizationRequired")
    assert h.status["phase"] == "ReauthorizationRequired"
    warnings = [e for e in h.events if e[0] == "Warning"]
    assert warnings == [
        (
            "Warning",
            "ReauthorizationRequired",
            "ReauthorizationRequired: the refresh token expired after 90 days of inactivity (AADSTS700082)",
        )
    ]
    writes = list(h.api.writes)
    for _ in range(5):
        h.clock.advance(hours=6)
        assert (await h.step()).delay is None
    assert len(h.provider.refreshed_with) == 1
    assert len([e for e in h.events if e[0] == "Warning"]) == 1
    assert h.api.writes == writes


async def test_reauthorize_keeps_last_token_until_expiry() -> None:
    """After invalid_grant the published token stays; the next step is at its expiry, for Ready."""
    h = await delegated_harness()
    await h.step()
    h.clock.set(T0 + timedelta(minutes=45))
    h.provider.script.append(ProviderError(ErrorKind.REAUTHORIZE, "the grant was revoked (AADSTS50173)"))
    result = await h.step()
    assert result.delay == pytest.approx(15 * 60)
    assert h.cond("Ready")["status"] == "True"
    assert h.cond("Authorized")["reason"] == "ReauthorizationRequired"
    assert h.status["phase"] == "ReauthorizationRequired"
    h.clock.set(T0 + timedelta(hours=1))
    result = await h.step()
    assert result.delay is None
    assert (h.cond("Ready")["status"], h.cond("Ready")["reason"]) == ("False", "ReauthorizationRequired")
    assert len(h.provider.refreshed_with) == 2


async def test_new_grant_after_reauthorize_recovers() -> None:
    """A new sign-in (grant Secret replaced) and a nudge bring the token back."""
    h = await delegated_harness()
    h.provider.script.append(ProviderError(ErrorKind.REAUTHORIZE, "revoked"))
    await h.step()
    await GrantStore(h.api).drop(TOKEN)
    await h.add_grant("refresh-token-from-new-sign-in")
    h.engine.nudge(KEY)
    await h.step()
    assert h.provider.refreshed_with == [INITIAL_RT, "refresh-token-from-new-sign-in"]
    assert h.cond("Authorized")["status"] == "True"
    assert h.cond("Ready")["status"] == "True"


async def test_account_mismatch_is_reported() -> None:
    """A grant signed in as another mailbox is not used."""
    h = await delegated_harness(grant=False)
    await GrantStore(h.api).save(TOKEN, Grant(INITIAL_RT, "someone@else.example"), expected_version=None)
    await h.step()
    assert h.provider.calls == 0
    assert h.cond("Authorized")["reason"] == "AccountMismatch"
    assert "someone@else.example" in h.cond("Authorized")["message"]


# --------------------------------------------------------------------------- missing Secrets


async def test_missing_client_secret_then_nudge_recovers() -> None:
    """SecretNotFound until the Secret exists; a nudge retries at once instead of in ten minutes."""
    h = Harness(APP_SPEC)
    result = await h.step()
    assert result.delay == pytest.approx(600.0)
    assert h.provider.calls == 0
    ready, authorized = h.cond("Ready"), h.cond("Authorized")
    assert (ready["status"], ready["reason"]) == ("False", "SecretNotFound")
    assert ready["message"] == "Secret mail/app-secret does not exist"
    assert (authorized["status"], authorized["reason"]) == ("False", "SecretNotFound")
    assert ("Warning", "RefreshFailed", "SecretNotFound: Secret mail/app-secret does not exist") in h.events
    assert h.engine.index.referencing(NS, "app-secret") == [KEY]

    await h.add_client_secret()
    h.clock.advance(seconds=5)
    await h.step()
    assert h.provider.calls == 0  # not due without the nudge
    h.engine.nudge(KEY)
    result = await h.step()
    assert result.refreshed is True
    assert h.provider.app_calls == 1
    assert h.cond("Ready")["status"] == "True"
    assert h.cond("Authorized")["status"] == "True"
    assert h.status["refreshFailures"] == 0


async def test_nudge_does_not_disturb_a_healthy_token() -> None:
    """Our own writes to watched Secrets nudge too: a healthy token must not refresh because of them."""
    h = await app_harness()
    await h.step()
    h.engine.nudge(KEY)
    await h.step()
    assert h.provider.app_calls == 1


async def test_foreign_consumer_secret_is_not_overwritten() -> None:
    """A Secret of the same name that we do not manage is a conflict, left untouched."""
    h = await app_harness()
    foreign = {"metadata": {"name": NAME, "namespace": NS, "labels": {"app": "other"}}, "data": {"x": b64("y")}}
    await h.api.create_secret(NS, foreign)
    before = copy.deepcopy(h.api.secrets[(NS, NAME)])
    h.api.writes.clear()
    result = await h.step()
    assert result.delay == pytest.approx(600.0)
    assert h.provider.calls == 0
    assert h.api.secrets[(NS, NAME)] == before
    assert h.api.writes == [("patch", "status", NAME)]
    ready = h.cond("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "SecretConflict")
    assert "is not managed by this EmailToken" in ready["message"]
    assert h.status["phase"] == "SecretConflict"


class ListedSecrets:
    """The Secret watch's word on which Secrets exist (None: not listed yet)."""

    def __init__(self, names: set[str] | None, versions: dict[str, str] | None = None) -> None:
        self.names = names
        self.versions = versions or {}

    def exists(self, namespace: str, name: str) -> bool | None:
        return None if self.names is None else (namespace, name) in {(NS, n) for n in self.names}

    def version(self, namespace: str, name: str) -> str | None:
        return self.versions.get(name) if namespace == NS else None


async def test_a_consumer_secret_the_watch_listed_as_absent_is_created_without_a_read() -> None:
    """A new token costs one write for its consumer Secret and no GET; not listed yet, it reads first."""
    h = await app_harness()
    h.engine.secret_index = ListedSecrets({"app-secret"})
    h.api.reads.clear()
    await h.step()
    assert ("get", "secret", NAME) not in h.api.reads
    assert h.api.writes[:1] == [("create", "secret", NAME)]
    assert h.cond("Ready")["status"] == "True"

    unlisted = await app_harness()
    unlisted.engine.secret_index = ListedSecrets(None)
    unlisted.api.reads.clear()
    await unlisted.step()
    assert ("get", "secret", NAME) in unlisted.api.reads


async def test_a_foreign_secret_the_watch_has_not_seen_yet_is_not_overwritten() -> None:
    """Created since the watch's last word: the create meets it, its owner is checked, nothing is
    overwritten, and the token says SecretConflict (then, listed, it is read before any refresh)."""
    h = await app_harness()
    foreign = {"metadata": {"name": NAME, "namespace": NS, "labels": {"app": "other"}}, "data": {"x": b64("y")}}
    await h.api.create_secret(NS, foreign)
    before = copy.deepcopy(h.api.secrets[(NS, NAME)])
    listed = ListedSecrets({"app-secret"})
    h.engine.secret_index = listed
    result = await h.step()
    assert h.api.secrets[(NS, NAME)] == before
    assert ("patch", "secret", NAME) not in h.api.writes
    ready = h.cond("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "SecretConflict")
    assert "is not managed by this EmailToken" in ready["message"]
    assert result.delay == pytest.approx(600.0)
    assert [e[1] for e in h.events] == ["RefreshFailed"]

    listed.names = {"app-secret", NAME}
    calls = h.provider.calls
    h.clock.advance(minutes=10)
    await h.step()
    assert h.provider.calls == calls, "a known conflict is found before the provider is asked"
    assert h.api.secrets[(NS, NAME)] == before
    assert h.cond("Ready")["reason"] == "SecretConflict"


async def test_secret_owned_by_another_token_is_a_conflict() -> None:
    """The token label must name this token, not just exist."""
    h = await app_harness()
    await h.api.create_secret(
        NS, {"metadata": {"name": NAME, "labels": {"emailtoken.io/token": "other-token"}}, "data": {}}
    )
    await h.step()
    assert h.provider.calls == 0
    assert h.cond("Ready")["reason"] == "SecretConflict"


# --------------------------------------------------------------------------- interactive flows


async def test_interactive_without_grant_awaits_authorization() -> None:
    """No grant yet: say how to sign in, show the redirect URI, tell once, wait for a change."""
    h = await delegated_harness(grant=False, redirect_base_url="https://emailtoken.example.com/")
    result = await h.step()
    assert result.delay is None
    assert h.provider.calls == 0
    assert h.status["redirectUri"] == "https://emailtoken.example.com/callback"
    ready, authorized = h.cond("Ready"), h.cond("Authorized")
    assert (ready["status"], ready["reason"]) == ("False", "AwaitingAuthorization")
    assert (authorized["status"], authorized["reason"]) == ("False", "AwaitingAuthorization")
    assert "emailtoken authorize mail/box" in authorized["message"]
    assert h.status["phase"] == "AwaitingAuthorization"
    assert h.events == [("Normal", "AwaitingAuthorization", authorized["message"])]
    h.engine.nudge(KEY)
    await h.step()
    assert len(h.events) == 1


async def test_no_redirect_uri_without_base_url() -> None:
    """Without a callback service there is no redirect URI to show."""
    h = await delegated_harness(grant=False)
    await h.step()
    assert "redirectUri" not in h.status


async def test_rotated_refresh_token_is_saved_before_the_access_token_is_published() -> None:
    """If the operator dies between the two writes, the grant is never behind the consumer Secret."""
    h = await delegated_harness()
    result = await h.step()
    assert result.refreshed is True
    assert h.provider.refreshed_with == [INITIAL_RT]
    rotated = h.provider.issued[0].refresh_token
    assert h.grant_rt() == rotated
    assert h.api.grant_at_publish == [rotated]
    assert h.api.writes.index(("patch", "secret", GRANT)) < h.api.writes.index(("create", "secret", NAME))
    grant = await GrantStore(h.api).load(TOKEN)
    assert grant is not None
    assert grant.account == MAILBOX
    assert grant.updated_at == rfc3339(T0)
    assert h.consumer()["username"] == MAILBOX
    h.clock.set(h.due_time())
    await h.step()
    assert h.provider.refreshed_with == [INITIAL_RT, rotated]


async def test_no_grant_write_without_rotation() -> None:
    """Google usually keeps the refresh token: then the grant Secret is not rewritten."""
    h = await delegated_harness(rotate=False)
    await h.step()
    assert h.grant_rt() == INITIAL_RT
    assert ("patch", "secret", GRANT) not in h.api.writes


@pytest.mark.looptime
async def test_grant_write_failure_keeps_rotated_token_and_retries_the_write_only() -> None:
    """The provider has already spent the old refresh token: the new one must not be lost or re-spent."""
    h = await delegated_harness()
    h.api.fail_next = [KubeError(500, "etcd timeout") for _ in range(WRITE_RETRIES)]
    result = await h.step()
    rotated = h.provider.issued[0].refresh_token
    assert h.provider.refreshed_with == [INITIAL_RT]
    assert h.grant_rt() == INITIAL_RT  # the write did not land
    assert (NS, NAME) not in h.api.secrets  # nothing published ahead of the grant
    assert h.cond("Ready")["reason"] == "APIUnavailable"
    assert h.status["refreshFailures"] == 1
    assert result.delay is not None and result.delay <= 5

    h.clock.advance(seconds=result.delay)
    result = await h.step()
    assert h.provider.refreshed_with == [INITIAL_RT]  # the write was retried, not the refresh
    assert h.grant_rt() == rotated
    assert h.consumer()["access_token"] == h.provider.issued[0].access_token
    assert h.api.grant_at_publish == [rotated]
    assert h.cond("Ready")["status"] == "True"
    assert h.status["refreshFailures"] == 0

    h.clock.set(h.due_time())
    await h.step()
    assert h.provider.refreshed_with == [INITIAL_RT, rotated]
    assert h.grant_rt() == h.provider.issued[1].refresh_token


@pytest.mark.looptime
async def test_pending_grant_with_expired_access_token_refreshes_with_the_new_token() -> None:
    """If the kept access token expired meanwhile, the retry refreshes with the saved rotated token."""
    h = await delegated_harness()
    h.api.fail_next = [KubeError(500, "etcd timeout") for _ in range(WRITE_RETRIES)]
    await h.step()
    rotated = h.provider.issued[0].refresh_token
    h.clock.advance(hours=2)
    await h.step()
    assert h.provider.refreshed_with == [INITIAL_RT, rotated]
    assert h.grant_rt() == h.provider.issued[1].refresh_token  # the second rotation landed too
    assert h.consumer()["access_token"] == h.provider.issued[1].access_token
    assert h.cond("Ready")["status"] == "True"


async def test_conflict_on_grant_write_does_not_publish() -> None:
    """A new sign-in landing during our refresh wins; our rotated token is discarded, nothing published."""
    h = await delegated_harness()

    def sign_in_meanwhile() -> TokenSet:
        stored = h.api.secrets[(NS, GRANT)]
        stored["data"]["refresh_token"] = b64("refresh-token-from-new-sign-in")
        stored["metadata"]["resourceVersion"] = "999"
        return TokenSet(
            access_token="access-token-value-raced",
            expires_at=h.clock() + timedelta(hours=1),
            refresh_token="rotated-refresh-token-value-raced",
        )

    h.provider.script.append(sign_in_meanwhile)
    result = await h.step()
    assert result.refreshed is False
    assert (NS, NAME) not in h.api.secrets
    assert h.grant_rt() == "refresh-token-from-new-sign-in"
    assert result.delay == 0
    await h.step()
    assert h.provider.refreshed_with == [INITIAL_RT, "refresh-token-from-new-sign-in"]
    assert h.consumer()["access_token"] == h.provider.issued[1].access_token


async def test_grant_deleted_during_refresh_is_not_retried_forever() -> None:
    """A grant deleted meanwhile (re-authorization elsewhere) is gone: wait for a sign-in, no retry loop."""
    h = await delegated_harness()

    def deleted_meanwhile() -> TokenSet:
        del h.api.secrets[(NS, GRANT)]
        return TokenSet(
            access_token="access-token-value-orphan",
            expires_at=h.clock() + timedelta(hours=1),
            refresh_token="rotated-refresh-token-value-orphan",
        )

    h.provider.script.append(deleted_meanwhile)
    await h.step()
    assert (NS, NAME) not in h.api.secrets
    await h.step()
    assert h.cond("Authorized")["reason"] == "AwaitingAuthorization"
    assert len(h.provider.refreshed_with) == 1


# --------------------------------------------------------------------------- annotations


async def test_refresh_now_annotation_refreshes_exactly_once_per_value() -> None:
    """Any new value refreshes once; the handled value is remembered in status (and in memory, for
    bodies that predate our own status write), so a restart does not redo it."""
    h = await app_harness()
    await h.step()
    h.clock.advance(minutes=5)
    h.annotations["emailtoken.io/refresh-now"] = "2026-03-01T08:05"
    result = await h.step()
    assert result.refreshed is True
    assert h.provider.app_calls == 2
    assert h.status["handledAnnotations"] == {"refreshNow": "2026-03-01T08:05"}
    writes = list(h.api.writes)
    h.clock.advance(minutes=1)
    await h.step()
    await h.new_engine(seed=5).step(h.body())  # a restarted operator does not redo it either
    assert h.provider.app_calls == 2
    assert h.api.writes == writes
    h.annotations["emailtoken.io/refresh-now"] = "again"
    await h.step()
    assert h.provider.app_calls == 3
    assert h.status["handledAnnotations"] == {"refreshNow": "again"}


async def test_reauthorize_annotation_drops_the_grant_once() -> None:
    """The grant is deleted, a new sign-in is awaited; the old token stays valid meanwhile."""
    h = await delegated_harness()
    await h.step()
    h.annotations["emailtoken.io/reauthorize"] = "ticket-42"
    h.clock.advance(minutes=1)
    result = await h.step()
    assert result.delay is not None  # Ready flips when the old token expires
    assert (NS, GRANT) not in h.api.secrets
    assert h.status["handledAnnotations"] == {"reauthorize": "ticket-42"}
    assert h.cond("Authorized")["reason"] == "AwaitingAuthorization"
    assert h.cond("Ready")["status"] == "True"
    assert ("Normal", "GrantDropped", "the grant was dropped on request; sign in again") in h.events
    assert len(h.provider.refreshed_with) == 1

    await h.add_grant("refresh-token-from-new-sign-in")
    h.engine.nudge(KEY)
    await h.step()
    assert h.grant_rt() is not None  # not dropped a second time
    assert h.provider.refreshed_with[-1] == "refresh-token-from-new-sign-in"
    assert h.cond("Authorized")["status"] == "True"


async def test_a_failed_grant_drop_is_a_setback_like_any_other() -> None:
    """The API fails while deleting the grant on request: counted, retried with backoff, shown in
    status and warned about like every other API failure (not only counted)."""
    h = await delegated_harness()
    await h.step()
    h.annotations["emailtoken.io/reauthorize"] = "ticket-42"
    h.clock.advance(minutes=1)
    h.api.fail_next = [KubeError(500, "etcd timeout")]
    result = await h.step()
    assert (NS, GRANT) in h.api.secrets
    assert h.status["refreshFailures"] == 1
    assert "API error deleting Secret" in h.cond("Ready")["message"]
    assert result.delay is not None and 0 < result.delay <= 5
    message = f"APIUnavailable: API error deleting Secret {NS}/{GRANT} (the grant) (HTTP 500)"
    assert ("Warning", "RefreshFailed", message) in h.events


async def test_a_conflict_while_reading_the_consumer_secret_counts_like_one_while_writing_it() -> None:
    """One rule for a foreign consumer Secret, met on reading or on publishing: counted, retried every
    ten minutes, warned about once."""
    h = await app_harness()
    await h.api.create_secret(NS, {"metadata": {"name": NAME, "namespace": NS}, "data": {"x": b64("y")}})
    await h.step()
    assert h.status["refreshFailures"] == 1
    assert h.status["nextRefreshTime"] == rfc3339(T0 + timedelta(minutes=10))
    h.clock.advance(minutes=10)
    await h.step()
    assert h.status["refreshFailures"] == 2
    assert len([e for e in h.events if e[0] == "Warning"]) == 1


# --------------------------------------------------------------------------- restart


async def test_restart_does_not_refresh_a_token_that_is_not_due() -> None:
    """A new engine (same API, body with the old status) resumes the plan without writing anything."""
    h = await app_harness()
    await h.step()
    planned = parse_rfc3339(h.status["nextRefreshTime"])
    writes, events = list(h.api.writes), list(h.events)
    h.clock.advance(minutes=10)
    restarted = h.new_engine(seed=999)
    result = await h.step(restarted)
    assert h.provider.app_calls == 1
    assert h.api.writes == writes
    assert h.events == events
    assert result.delay == pytest.approx((planned - h.clock.now).total_seconds())
    h.clock.set(planned)
    result = await h.step(restarted)
    assert result.refreshed is True
    assert h.provider.app_calls == 2


async def test_restart_with_rotated_grant_uses_the_saved_refresh_token() -> None:
    """Nothing is lost across a restart: the next refresh uses the latest rotated token."""
    h = await delegated_harness()
    await h.step()
    rotated = h.provider.issued[0].refresh_token
    restarted = h.new_engine(seed=3)
    h.clock.set(h.due_time())
    await h.step(restarted)
    assert h.provider.refreshed_with == [INITIAL_RT, rotated]


async def test_a_forced_refresh_at_restart_plans_the_next_refresh_from_the_new_token() -> None:
    """refresh-now on a restarted operator: the next refresh is planned once, from the new token
    (before the fix the step after planned it again from a fresh draw)."""
    h = await app_harness()
    await h.step()
    h.clock.advance(minutes=5)
    restarted = h.new_engine(seed=77)
    h.annotations["emailtoken.io/refresh-now"] = "x"
    await h.step(restarted)
    assert h.provider.app_calls == 2
    obtained = h.clock.now
    assert h.status["lastRefreshTime"] == rfc3339(obtained)
    expected = next_refresh(
        obtained, obtained + timedelta(hours=1), None, keepalive=DEFAULT_KEEPALIVE, rng=random.Random(77)
    )
    assert h.status["nextRefreshTime"] == rfc3339(expected)
    h.clock.advance(seconds=1)
    await h.step(restarted)  # the plan stands: the step after does not plan it again
    assert h.status["nextRefreshTime"] == rfc3339(expected)


async def test_a_failed_forced_refresh_at_restart_keeps_its_retry_and_failure_count() -> None:
    """refresh-now on a restarted operator, and the provider says busy for 600 s: the retry waits
    600 s and refreshFailures stays 1 (not the replaced plan and 0), on the next step too."""
    h = await app_harness()
    await h.step()
    h.clock.advance(minutes=5)
    restarted = h.new_engine(seed=77)
    h.annotations["emailtoken.io/refresh-now"] = "x"
    h.provider.script.append(ProviderError(ErrorKind.TRANSIENT, "busy", retry_after=600))
    await h.step(restarted)
    retry = rfc3339(h.clock.now + timedelta(seconds=600))
    assert (h.status["nextRefreshTime"], h.status["refreshFailures"]) == (retry, 1)
    h.clock.advance(seconds=1)
    await h.step(restarted)
    assert h.provider.app_calls == 2
    assert (h.status["nextRefreshTime"], h.status["refreshFailures"]) == (retry, 1)


# --------------------------------------------------------------------------- secrecy


async def test_no_secret_value_in_status_events_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Access tokens, refresh tokens and the client secret appear only in the two Secrets."""
    caplog.set_level(logging.DEBUG)
    h = await delegated_harness(redirect_base_url="https://cb.example")
    await h.step()  # rotation + publish
    h.clock.set(h.due_time())
    h.provider.script.append(ProviderError(ErrorKind.TRANSIENT, "the token endpoint failed: busy"))
    h.api.fail_next = [KubeError(500, "status write failed")]  # the only write of this step: logged
    await h.step()
    assert "could not write status of mail/box: HTTP 500" in caplog.text
    h.clock.advance(minutes=1)
    await h.step()  # recovers: rotation + publish
    assert len(h.provider.issued) == 2
    h.clock.set(h.due_time())
    h.provider.script.append(ProviderError(ErrorKind.REAUTHORIZE, "the grant is no longer valid: invalid_grant"))
    await h.step()
    h.annotations["emailtoken.io/reauthorize"] = "1"
    await h.step()

    app = await app_harness()
    await app.step()
    app.clock.advance(hours=1)
    app.api.fail_next = [KubeError(500, "down")]  # the publish fails after a successful acquire
    await app.step()

    secrets = h.secret_values() + app.secret_values()
    assert len(secrets) > 6
    texts = [
        json.dumps(h.api.status_patches),
        json.dumps(app.api.status_patches),
        json.dumps(h.events),
        json.dumps(app.events),
        caplog.text,
        json.dumps([r.getMessage() for r in caplog.records]),
    ]
    for text in texts:
        for secret in secrets:
            assert secret not in text
    # The Secrets do hold them: the check above is not vacuous.
    assert app.consumer()["access_token"] in secrets


async def test_referencing_and_forget() -> None:
    """Secret events find the tokens that read a Secret; a deleted token is forgotten entirely."""
    h = await delegated_harness()
    await h.step()
    for name in ("app-secret", GRANT, NAME):
        assert h.engine.index.referencing(NS, name) == [KEY]
    assert h.engine.index.referencing("other-ns", "app-secret") == []
    assert h.engine.index.referencing(NS, "unrelated") == []
    h.engine.forget(KEY)
    assert h.engine.index.referencing(NS, "app-secret") == []


# --------------------------------------------------------------------------- found by the fault suite
# tests/integration/test_refresh_faults.py and test_restart_safety.py met each of these through
# the real operator; these pin the engine's side of the fixes.


def dead_grant() -> ProviderError:
    return ProviderError(
        ErrorKind.REAUTHORIZE,
        "the refresh token expired after a period of inactivity (AADSTS70008)",
        code="AADSTS70008",
    )


async def test_a_dead_grant_is_not_presented_again_when_watched_secrets_change() -> None:
    """Secret events (a re-list, a tool touching labels, a client secret edit) nudge the token; with
    the same refresh token the answer would be the same invalid_grant, so nothing is sent. A new
    grant is tried at once, and refresh-now is a person asking to try anyway."""
    h = await delegated_harness()
    h.provider.script.append(dead_grant())
    await h.step()
    assert len(h.provider.refreshed_with) == 1
    events = list(h.events)
    for _ in range(3):
        h.engine.nudge(KEY)
        result = await h.step()
        assert result.delay is None  # nothing was ever published: wait for a person
    assert len(h.provider.refreshed_with) == 1
    assert h.events == events, "no second Warning either"
    assert h.cond("Authorized")["reason"] == "ReauthorizationRequired"

    h.provider.script.append(dead_grant())
    h.annotations["emailtoken.io/refresh-now"] = "try-anyway"
    await h.step()
    assert len(h.provider.refreshed_with) == 2

    grant = await GrantStore(h.api).load(TOKEN)
    assert grant is not None
    await GrantStore(h.api).save(
        TOKEN, Grant("refresh-token-from-new-sign-in", MAILBOX), expected_version=grant.resource_version
    )
    h.engine.nudge(KEY)
    await h.step()
    assert h.provider.refreshed_with[-1] == "refresh-token-from-new-sign-in"
    assert h.cond("Authorized")["status"] == "True"


async def test_retry_after_holds_against_nudges() -> None:
    """A provider's Retry-After is not cut short by an unrelated Secret event."""
    h = await app_harness()
    await h.step()
    h.clock.set(h.due_time())
    h.provider.script.append(ProviderError(ErrorKind.TRANSIENT, "throttled", retry_after=120))
    await h.step()
    h.clock.advance(seconds=30)
    h.engine.nudge(KEY)
    result = await h.step()
    assert h.provider.app_calls == 2
    assert result.delay == pytest.approx(90.0)
    h.clock.advance(seconds=90)
    await h.step()
    assert h.provider.app_calls == 3


async def test_invalid_client_is_retried_at_once_when_the_secret_changes_only() -> None:
    h = await app_harness()
    h.provider.script.append(ProviderError(ErrorKind.INVALID_CLIENT, "the client secret is wrong (AADSTS7000215)"))
    await h.step()
    h.engine.nudge(KEY)
    await h.step()
    assert h.provider.app_calls == 1, "same secret: wait for the slow backoff"
    fixed = await h.api.patch_secret(NS, "app-secret", {"data": {"client_secret": b64("the-fixed-client-secret")}})
    h.engine.credential_secrets.observed(NS, "app-secret", fixed)  # what the Secret handler does first
    h.engine.nudge(KEY)
    result = await h.step()
    assert result.refreshed is True
    assert h.provider.creds[-1].client_secret == "the-fixed-client-secret"


async def test_client_secret_is_read_once_then_kept_until_the_watch_reports_a_change() -> None:
    """One GET for the client secret; later refreshes read nothing; a change the watch reports
    (metadata only) costs one more GET; a deleted Secret is read again and reported missing."""
    h = await app_harness()
    await h.step()
    h.clock.set(h.due_time())
    await h.step()
    assert h.provider.app_calls == 2
    assert h.api.reads.count(("get", "secret", "app-secret")) == 1
    rotated = await h.api.patch_secret(NS, "app-secret", {"data": {"client_secret": b64("rotated")}})
    h.engine.credential_secrets.observed(NS, "app-secret", {"metadata": rotated["metadata"]})
    h.annotations["emailtoken.io/refresh-now"] = "rotate"
    await h.step()
    assert h.provider.creds[-1].client_secret == "rotated"
    assert h.api.reads.count(("get", "secret", "app-secret")) == 2
    h.annotations["emailtoken.io/refresh-now"] = "again"
    await h.step()
    assert h.provider.app_calls == 4 and h.api.reads.count(("get", "secret", "app-secret")) == 2
    await h.api.delete_secret(NS, "app-secret")
    h.engine.credential_secrets.removed(NS, "app-secret")
    h.annotations["emailtoken.io/refresh-now"] = "after-delete"
    await h.step()
    assert h.api.reads.count(("get", "secret", "app-secret")) == 3
    assert h.cond("Authorized")["reason"] == "SecretNotFound"


async def test_credential_cache_forgets_secrets_no_token_reads() -> None:
    """Only Secrets a token names as credentials are kept, and only while it does."""
    h = await app_harness()
    await h.step()
    assert len(h.engine.credential_secrets) == 1
    h.engine.credential_secrets.observed(NS, "someone-elses-secret", {"data": {"k": b64("v")}})
    assert h.engine.credential_secrets.get(NS, "someone-elses-secret") is None
    h.engine.forget(KEY)
    assert len(h.engine.credential_secrets) == 0


async def test_a_body_older_than_our_own_status_write_does_not_repeat_refresh_now() -> None:
    """A step right after a wake-up may get the body from before our status write; the value was
    handled all the same (this made 50 refresh-now values cost 83 refreshes)."""
    h = await app_harness()
    await h.step()
    h.annotations["emailtoken.io/refresh-now"] = "1"
    stale = h.body()  # carries the annotation, but not yet status.handledAnnotations
    assert (await h.engine.step(stale)).refreshed is True
    assert (await h.engine.step(stale)).refreshed is False
    assert h.provider.app_calls == 2


async def test_a_body_older_than_our_own_status_write_gets_what_changed_since_written() -> None:
    """A retry woken by its timer may get the body from before the failure's status write: the
    recovery still writes refreshFailures 0 (diffing against that body, where it was already 0,
    left 1 in status for good — seen under load in test_refresh_faults)."""
    h = await app_harness()
    await h.step()
    h.clock.set(h.due_time())
    stale = h.body()
    stale["metadata"]["resourceVersion"] = "41"
    h.provider.script.append(ProviderError(ErrorKind.TRANSIENT, "the token endpoint failed: 503"))
    result = await h.engine.step(stale)
    assert h.status["refreshFailures"] == 1
    h.clock.advance(seconds=result.delay)
    assert (await h.engine.step(stale)).refreshed is True
    assert h.status["refreshFailures"] == 0
    assert h.cond("Ready")["message"].startswith("access token valid until")


async def test_a_plan_older_than_the_published_token_is_not_followed_after_a_restart() -> None:
    """The previous process died between writing the consumer Secret and writing status: the plan in
    status belongs to the token before; following it would refresh a brand-new token."""
    h = await app_harness()
    await h.step()
    stale_status = copy.deepcopy(h.status)
    h.clock.set(h.due_time())
    await h.step()  # refreshed: new consumer Secret, new status
    h.api.tokens[KEY]["status"] = stale_status  # as if the status write never happened
    restarted = h.new_engine(seed=7)
    result = await h.step(restarted)
    assert result.refreshed is False
    assert h.provider.app_calls == 2
    assert h.status["expiresAt"] == h.consumer()["expires_at"]
    assert parse_rfc3339(h.status["nextRefreshTime"]) > h.clock()


async def test_an_unexpected_library_exception_is_a_transient_failure(caplog: pytest.LogCaptureFixture) -> None:
    """msal raised MsalServiceError on a 5xx; whatever a library raises, the step reports and backs off."""

    class LibraryError(Exception):
        pass

    def boom() -> TokenSet:
        raise LibraryError("HTTP Error: 500 with client_secret=" + CLIENT_SECRET)

    h = await app_harness()
    h.provider.script.append(boom)
    result = await h.step()
    assert 2.5 <= (result.delay or 0) <= 5
    assert h.cond("Ready")["reason"] == "ProviderUnavailable"
    assert "LibraryError" in h.cond("Ready")["message"]
    assert CLIENT_SECRET not in caplog.text + json.dumps(h.status) + str(h.events)


async def test_expiry_and_backoff_count_from_the_end_of_a_slow_provider_call() -> None:
    """A call that hangs until the provider timeout ends after the token expired: Ready says so at
    once, and the backoff starts from the failure, not from before the call."""
    h = await app_harness()
    await h.step()
    h.clock.set(T0 + timedelta(minutes=59, seconds=50))

    def slow_then_timeout() -> TokenSet:
        h.clock.advance(seconds=20)
        raise ProviderError(ErrorKind.TRANSIENT, "the Microsoft token endpoint timed out (ReadTimeout)")

    h.provider.script.append(slow_then_timeout)
    result = await h.step()
    ready = h.cond("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ProviderUnavailable")
    assert 2.5 <= (result.delay or 0) <= 5


async def test_restart_uses_the_watched_consumer_secret_instead_of_a_get() -> None:
    """After a restart the Secret watch delivers the consumer Secret too: its first step reads
    what the published token holds from there (no GET per token) and refreshes nothing."""
    h = await app_harness()
    await h.step()
    engine = h.new_engine(seed=5)
    engine.consumer_observed(NS, "someone-elses", {"metadata": {"labels": {}}})  # not ours: ignored
    engine.consumer_observed(NS, NAME, h.api.secrets[(NS, NAME)])
    h.api.reads.clear()
    h.clock.advance(minutes=1)
    result = await h.step(engine)
    assert ("get", "secret", NAME) not in h.api.reads
    assert result.refreshed is False and h.provider.app_calls == 1
    h.clock.set(h.due_time())
    assert (await h.step(engine)).refreshed is True


async def test_a_consumer_secret_deleted_before_the_first_step_is_read_again() -> None:
    h = await app_harness()
    await h.step()
    engine = h.new_engine(seed=5)
    body = h.api.secrets[(NS, NAME)]
    engine.consumer_observed(NS, NAME, body)
    engine.consumer_observed(NS, NAME, body, deleted=True)
    await h.api.delete_secret(NS, NAME)
    h.api.reads.clear()
    result = await h.step(engine)
    assert ("get", "secret", NAME) in h.api.reads
    assert result.refreshed is True  # published again


async def test_a_listed_consumer_secret_is_used_only_while_the_watch_knows_that_version() -> None:
    """The bodies of the operator's own Secrets are listed once, not watched: the copy stands in for
    a GET only while the Secret watch knows the same version (in whatever order the two arrived)."""
    h = await app_harness()
    await h.step()
    body = h.api.secrets[(NS, NAME)]
    listed = body["metadata"]["resourceVersion"]

    async def first_step_reads(watch_knows: str | None, *, change: dict[str, Any] | None = None) -> bool:
        engine = h.new_engine(seed=5)
        engine.secret_index = ListedSecrets({"app-secret", NAME}, {NAME: watch_knows} if watch_knows else {})
        engine.consumer_observed(NS, NAME, body)
        if change is not None:
            engine.consumer_version(NS, NAME, change, deleted=change.get("deleted", False))
        h.api.reads.clear()
        await h.step(engine)
        return ("get", "secret", NAME) in h.api.reads

    assert not await first_step_reads(listed)
    assert await first_step_reads("999"), "the watch has seen a newer version"
    assert await first_step_reads(None), "the watch has not seen it (deleted, or listed as gone)"
    labels = body["metadata"]["labels"]
    # The watch's events drop the copy early (memory): another version, or a deletion.
    assert await first_step_reads(listed, change={"labels": labels, "resourceVersion": "1000"})
    assert await first_step_reads(listed, change={"labels": labels, "resourceVersion": listed, "deleted": True})
    assert not await first_step_reads(listed, change={"labels": labels, "resourceVersion": listed})
    assert not await first_step_reads(listed, change={"labels": {}, "resourceVersion": "7"})  # not a token's


class RecordingProbes:
    """Stands in for loginprobe.Probes (which connects to mail servers): records who asked."""

    def __init__(self) -> None:
        self.namespaces: list[str] = []

    async def login(self, probe: Any, access_token: str, *args: Any, namespace: str = "") -> Condition:
        self.namespaces.append(namespace)
        return Condition("MailLogin", True, "LoginSucceeded", "ok")


async def test_a_login_probe_is_counted_against_its_own_namespace() -> None:
    """The per-namespace probe limit (loginprobe.Probes) needs the token's namespace: without it one
    tenant's slow mail servers would hold every probe slot of the operator."""
    h = await app_harness()
    h.spec["loginProbe"] = {"protocol": "IMAP", "server": "outlook.office365.com:993"}
    probes = RecordingProbes()
    h.engine._probes = probes  # type: ignore[assignment]
    await h.step()
    assert probes.namespaces == [NS]
    assert h.cond("MailLogin")["reason"] == "LoginSucceeded"


async def test_a_stated_grant_end_survives_a_restart() -> None:
    """The provider stated when the refresh token ends (a Google app in Testing, a Microsoft SPA);
    a restarted operator keeps warning for that date (read back from status) instead of falling
    back to the unused limit months later, which would resolve the alert and post the Event again."""
    h = await delegated_harness()
    end = T0 + timedelta(days=1)
    h.provider.script.append(
        TokenSet(
            access_token="access-token-value-stated",
            expires_at=T0 + timedelta(hours=1),
            scope=SCOPE,
            refresh_token="rotated-refresh-token-value-stated",
            refresh_expires_at=end,
        )
    )
    await h.step()
    assert (h.cond("GrantExpiring")["status"], h.cond("GrantExpiring")["reason"]) == ("True", "StatedLifetime")
    assert h.status["reauthorizationRequiredBy"] == rfc3339(end)
    warned = [e for e in h.events if e[1] == "GrantExpiring"]
    h.clock.advance(seconds=60)
    assert (await h.step(h.new_engine())).refreshed is False
    assert (h.cond("GrantExpiring")["status"], h.cond("GrantExpiring")["reason"]) == ("True", "StatedLifetime")
    assert h.status["reauthorizationRequiredBy"] == rfc3339(end)
    assert [e for e in h.events if e[1] == "GrantExpiring"] == warned, "no second Warning Event after the restart"

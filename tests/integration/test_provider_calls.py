"""Provider calls over HTTPS to a local endpoint that answers like the token endpoint and counts:
one provider attempt per engine attempt (no library retries), the operator's timeout, typed
failures, and how msal applications are kept."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import msal
import pytest
import trustme

from emailtoken.outcomes import ErrorKind, ProviderError
from emailtoken.providers import microsoft
from emailtoken.providers.base import ClientCredentials
from emailtoken.providers.google import GoogleProvider
from emailtoken.providers.http import ProviderSession
from emailtoken.providers.microsoft import MicrosoftProvider
from tests.support.localhttps import JsonHandler, provider_spec, serve_tls

SECRET = "Zq8~client.SECRET-value_9f3b2c"
REFRESH = "0.AXEAe4Hf-refresh-token-value-abcdef"
pytestmark = pytest.mark.usefixtures("no_proxy")


def all_text(exc: ProviderError) -> str:
    """Everything an exception can print: str, repr, args, message, code."""
    return " ".join([str(exc), repr(exc), repr(exc.args), exc.message, str(exc.code), exc.reason])


class Endpoint(ThreadingHTTPServer):
    """Answers every POST with the next scripted (status, body, headers), or with silence for ``("silent", s)``;
    every GET (msal's OpenID discovery) with this endpoint's configuration."""

    daemon_threads = True  # a silent answer's handler must not hold the test's teardown

    def __init__(self, ca: trustme.CA, *answers: Any) -> None:
        self.answers = list(answers)
        self.requests: list[tuple[str, str]] = []
        self.bodies: list[str] = []
        outer = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                outer.requests.append(("GET", self.path))
                root = outer.url + "/contoso"
                self.send_json(
                    200,
                    {
                        "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
                        "token_endpoint": f"{root}/oauth2/v2.0/token",
                        "issuer": f"{root}/v2.0",
                    },
                    {},
                )

            def do_POST(self) -> None:
                outer.bodies.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())
                outer.requests.append(("POST", self.path))
                answer = outer.answers.pop(0) if outer.answers else (200, {}, {})
                if answer[0] == "silent":
                    time.sleep(answer[1])
                    return
                self.send_json(*answer)

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = serve_tls(self, ca)
        self.microsoft_token_url = f"{self.url}/contoso/oauth2/v2.0/token"
        self.google_token_url = f"{self.url}/token"

    @property
    def posts(self) -> int:
        return sum(1 for method, _ in self.requests if method == "POST")


@pytest.fixture
def serve(ca: trustme.CA) -> Iterator[Any]:
    """``serve(*answers)`` starts an :class:`Endpoint`; all are shut down after the test."""
    started: list[Endpoint] = []

    def start(*answers: Any) -> Endpoint:
        endpoint = Endpoint(ca, *answers)
        threading.Thread(target=endpoint.serve_forever, daemon=True).start()
        started.append(endpoint)
        return endpoint

    yield start
    for endpoint in started:
        endpoint.shutdown()
        endpoint.server_close()


def session_for(ca_file: str, timeout: float = 2.0) -> ProviderSession:
    return ProviderSession(ca_bundle=ca_file, timeout=timeout)


@pytest.mark.parametrize("status", [500, 503, 429])
def test_google_5xx_is_one_call_with_retry_after(status: int, serve: Any, ca_file: str) -> None:
    """google-auth retried 5xx/429 itself, three times a second apart, ignoring Retry-After."""
    endpoint = serve((status, {"error": "temporarily_unavailable"}, {"Retry-After": "7"}))
    with pytest.raises(ProviderError) as info:
        GoogleProvider(session_for(ca_file)).refresh(
            provider_spec("Google", endpoint.google_token_url), ClientCredentials(client_secret=SECRET), REFRESH
        )
    assert endpoint.posts == 1
    assert info.value.kind is ErrorKind.TRANSIENT
    assert info.value.retry_after == 7
    assert REFRESH not in all_text(info.value) and SECRET not in all_text(info.value)


def test_google_calls_use_the_operator_timeout(serve: Any, ca_file: str) -> None:
    """google-auth sent every token request with timeout=120, whatever --provider-timeout said."""
    endpoint = serve(("silent", 6.0))
    started = time.monotonic()
    with pytest.raises(ProviderError) as info:
        GoogleProvider(session_for(ca_file, timeout=1.0)).refresh(
            provider_spec("Google", endpoint.google_token_url), ClientCredentials(client_secret=SECRET), REFRESH
        )
    assert time.monotonic() - started < 4.0
    assert endpoint.posts == 1
    assert info.value.kind is ErrorKind.TRANSIENT
    # Whichever ends it first: the socket's read timeout or the request's deadline (both 1 s).
    assert info.value.message in (
        "the Google token endpoint timed out (ReadTimeoutError)",
        "the Google token endpoint's answer was refused: no complete answer within 1 s",
    )


def test_google_dead_grant_is_one_call(serve: Any, ca_file: str) -> None:
    revoked = {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}
    endpoint = serve((400, revoked, {}))
    with pytest.raises(ProviderError) as info:
        GoogleProvider(session_for(ca_file)).refresh(
            provider_spec("Google", endpoint.google_token_url), ClientCredentials(client_secret=SECRET), REFRESH
        )
    assert endpoint.posts == 1
    assert info.value.kind is ErrorKind.REAUTHORIZE


def test_an_endpoint_nobody_listens_on_is_unreachable(ca_file: str) -> None:
    """A refused connection is a transient error naming the failure's type, not its words."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    spec = provider_spec("Google", f"https://127.0.0.1:{port}/token")
    with pytest.raises(ProviderError) as info:
        GoogleProvider(session_for(ca_file)).refresh(spec, ClientCredentials(client_secret=SECRET), REFRESH)
    assert info.value.kind is ErrorKind.TRANSIENT
    assert info.value.message == "the Google token endpoint could not be reached (NewConnectionError)"


@pytest.mark.parametrize("status", [500, 503])
def test_microsoft_5xx_is_transient_not_an_exception(status: int, serve: Any, ca_file: str) -> None:
    """msal raises MsalServiceError("HTTP Error: 5xx") instead of returning an error dict; it escaped
    the provider and failed the whole step (no status, no Event, retried after 30 s)."""
    endpoint = serve((status, {"error": "server_error"}, {"Retry-After": "9"}))
    provider = MicrosoftProvider(session_for(ca_file))
    with pytest.raises(ProviderError) as info:
        provider.refresh(
            provider_spec("Microsoft", endpoint.microsoft_token_url), ClientCredentials(client_secret=SECRET), REFRESH
        )
    assert endpoint.posts == 1
    assert info.value.kind is ErrorKind.TRANSIENT
    assert info.value.message == f"the Microsoft token endpoint failed (HTTP Error: {status})"
    assert info.value.retry_after == 9
    assert REFRESH not in all_text(info.value) and SECRET not in all_text(info.value)


def test_microsoft_discovery_is_read_once_by_concurrent_first_calls(serve: Any, ca_file: str) -> None:
    """A restart with many due tokens used to open with one OpenID discovery GET per thread."""
    from concurrent.futures import ThreadPoolExecutor

    endpoint = serve(*[(200, {"access_token": f"at-{i}", "expires_in": 3600}, {}) for i in range(10)])
    provider = MicrosoftProvider(session_for(ca_file))
    app_spec = provider_spec("Microsoft", endpoint.microsoft_token_url, flow="ClientCredentials")
    creds = ClientCredentials(client_secret=SECRET)
    with ThreadPoolExecutor(10) as pool:
        list(pool.map(lambda _: provider.acquire_app_token(app_spec, creds), range(10)))
    assert sum(1 for method, _ in endpoint.requests if method == "GET") == 1
    assert endpoint.posts == 10


def test_a_kept_microsoft_application_answers_nothing_from_its_cache(serve: Any, ca_file: str) -> None:
    """Tokens of one registration share an msal application; when to call stays the engine's
    decision: msal would otherwise answer a second call from its token cache, with no POST."""
    endpoint = serve(*[(200, {"access_token": f"at-{i}", "expires_in": 3600}, {}) for i in range(3)])
    provider = MicrosoftProvider(session_for(ca_file))
    app_spec = provider_spec("Microsoft", endpoint.microsoft_token_url, flow="ClientCredentials")
    creds = ClientCredentials(client_secret=SECRET)
    tokens = [provider.acquire_app_token(app_spec, creds).access_token for _ in range(3)]
    assert tokens == ["at-0", "at-1", "at-2"]
    assert endpoint.posts == 3
    assert len(provider._apps) == 1


def test_a_rotated_client_secret_gets_an_application_of_its_own(serve: Any, ca_file: str) -> None:
    """The kept application is keyed by the secret's digest: the new secret is the one sent."""
    endpoint = serve(
        (200, {"access_token": "at-old", "expires_in": 3600}, {}),
        (200, {"access_token": "at-new", "expires_in": 3600}, {}),
    )
    provider = MicrosoftProvider(session_for(ca_file))
    app_spec = provider_spec("Microsoft", endpoint.microsoft_token_url, flow="ClientCredentials")
    provider.acquire_app_token(app_spec, ClientCredentials(client_secret=SECRET))
    provider.acquire_app_token(app_spec, ClientCredentials(client_secret=SECRET + "-rotated"))
    sent = [parse_qs(body).get("client_secret") for body in endpoint.bodies]
    assert sent == [[SECRET], [SECRET + "-rotated"]]
    assert len(provider._apps) == 1, "the new secret's application replaced the old one"


def test_a_refresh_token_is_not_kept_in_the_shared_application(serve: Any, ca_file: str) -> None:
    """Nothing a call returned stays in the application other tokens of the registration use."""
    endpoint = serve((200, {"access_token": "at", "refresh_token": "rt-next", "expires_in": 3600}, {}))
    provider = MicrosoftProvider(session_for(ca_file))
    assert provider.refresh(
        provider_spec("Microsoft", endpoint.microsoft_token_url), ClientCredentials(client_secret=SECRET), REFRESH
    ).refresh_token
    ((_, app),) = provider._apps.values()
    assert app.token_cache.find(msal.TokenCache.CredentialType.REFRESH_TOKEN) == []
    assert app.token_cache.find(msal.TokenCache.CredentialType.ACCESS_TOKEN) == []


def test_kept_applications_are_bounded_and_never_evicted(
    serve: Any, ca_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Registrations beyond the room build an application per call, as before: evicting one for
    another would make every application live a little while, which fragmented the heap."""
    monkeypatch.setattr(microsoft, "MAX_APPS", 2)
    endpoint = serve(*[(200, {"access_token": f"at-{i}", "expires_in": 3600}, {}) for i in range(5)])
    provider = MicrosoftProvider(session_for(ca_file))
    creds = ClientCredentials(client_secret=SECRET)
    for client in ("m1", "m2", "m3", "m3", "m1"):
        provider.acquire_app_token(
            provider_spec("Microsoft", endpoint.microsoft_token_url, flow="ClientCredentials", clientId=client), creds
        )
    assert sorted(client for _, client in provider._apps) == ["m1", "m2"]
    assert [parse_qs(body)["client_id"] for body in endpoint.bodies] == [["m1"], ["m2"], ["m3"], ["m3"], ["m1"]]


def test_a_federated_credentials_application_is_not_kept(serve: Any, ca_file: str) -> None:
    """Its assertion is a new callable per step: a kept application would present a stale one."""
    endpoint = serve(*[(200, {"access_token": f"at-{i}", "expires_in": 3600}, {}) for i in range(2)])
    provider = MicrosoftProvider(session_for(ca_file))
    app_spec = provider_spec("Microsoft", endpoint.microsoft_token_url, flow="ClientCredentials")
    for assertion in ("jwt-one", "jwt-two"):
        provider.acquire_app_token(app_spec, ClientCredentials(client_assertion=lambda a=assertion: a))
    assert [parse_qs(body)["client_assertion"] for body in endpoint.bodies] == [["jwt-one"], ["jwt-two"]]
    assert provider._apps == {}

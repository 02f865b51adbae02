"""Provider error dialects (msal dicts, Google error bodies) become typed, safe ProviderErrors."""

from __future__ import annotations

import importlib.util
import json
import socket
import ssl
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import google.auth.exceptions
import msal.application
import pytest
import trustme

from emailtoken.model import parse_spec
from emailtoken.outcomes import REASONS, ErrorKind, ProviderError, TokenSet
from emailtoken.providers import google as google_mod
from emailtoken.providers import microsoft
from emailtoken.providers.base import ClientCredentials
from emailtoken.providers.google import GoogleProvider
from emailtoken.providers.http import ProviderSession
from emailtoken.providers.microsoft import MicrosoftProvider

SECRET = "Zq8~client.SECRET-value_9f3b2c"
REFRESH = "0.AXEAe4Hf-refresh-token-value-abcdef"


def ms_error(code: int, error: str = "invalid_grant", description: str | None = None) -> dict[str, Any]:
    """An msal error dict the way Entra ID answers."""
    return {
        "error": error,
        "error_description": description
        or f"AADSTS{code}: Something went wrong.\r\nTrace ID: 1234\r\nCorrelation ID: 5678",
        "error_codes": [code],
    }


def all_text(exc: ProviderError) -> str:
    """Everything an exception can print: str, repr, args, message, code."""
    return " ".join([str(exc), repr(exc), repr(exc.args), exc.message, str(exc.code), exc.reason])


# --------------------------------------------------------------------------- Microsoft


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (70008, "the refresh token expired after a period of inactivity"),
        (700082, "the refresh token expired after 90 days of inactivity"),
        (50173, "the grant was revoked (password changed or sessions revoked by an administrator)"),
        (70043, "the refresh token expired under a Conditional Access sign-in frequency policy"),
    ],
)
def test_microsoft_dead_grant_codes_need_reauthorization(code: int, words: str) -> None:
    """These codes mean a person must sign in again; the message says why in plain words."""
    exc = microsoft.classify(ms_error(code))
    assert exc.kind is ErrorKind.REAUTHORIZE
    assert exc.reason == "ReauthorizationRequired"
    assert exc.message == f"{words} (AADSTS{code})"
    assert exc.code == f"AADSTS{code}"
    assert "Trace ID" not in exc.message


def test_microsoft_codes_given_as_strings() -> None:
    """Some proxies re-serialise error_codes as strings."""
    result = ms_error(700082)
    result["error_codes"] = ["700082"]
    assert microsoft.classify(result).kind is ErrorKind.REAUTHORIZE


def test_microsoft_wrong_client_secret_is_invalid_client() -> None:
    """AADSTS7000215 is a wrong secret, not a dead grant: retry slowly, wait for the Secret to change."""
    exc = microsoft.classify(ms_error(7000215, error="invalid_client"))
    assert exc.kind is ErrorKind.INVALID_CLIENT
    assert exc.reason == "InvalidClient"
    assert exc.message == "the client secret is wrong (AADSTS7000215)"


def test_microsoft_invalid_client_code_wins_over_invalid_grant_error() -> None:
    """The code table decides before the generic error string."""
    exc = microsoft.classify(ms_error(7000222, error="invalid_grant"))
    assert exc.kind is ErrorKind.INVALID_CLIENT
    assert "expired" in exc.message


def test_microsoft_invalid_scope_is_bad_config() -> None:
    """A scope the tenant does not know is a spec problem: retrying will not help."""
    description = "AADSTS70011: The provided value for scope x is not valid.\r\nTrace ID: 1"
    exc = microsoft.classify(ms_error(70011, error="invalid_scope", description=description))
    assert exc.kind is ErrorKind.BAD_CONFIG
    assert exc.reason == "InvalidConfiguration"
    assert exc.message == "the request was rejected: AADSTS70011: The provided value for scope x is not valid."


@pytest.mark.parametrize("error", ["server_error", "temporarily_unavailable"])
def test_microsoft_server_errors_are_transient_with_retry_after(error: str) -> None:
    """5xx-like answers are retried with backoff, honouring Retry-After."""
    exc = microsoft.classify(
        {"error": error, "error_description": "AADSTS90033: busy\r\nTrace ID: 1", "error_codes": [90033]},
        retry_after=37.0,
    )
    assert exc.kind is ErrorKind.TRANSIENT
    assert exc.reason == "ProviderUnavailable"
    assert exc.retry_after == 37.0
    assert exc.message == "the token endpoint failed: AADSTS90033: busy"


def test_microsoft_generic_errors() -> None:
    """Without a known code the error string decides."""
    assert microsoft.classify({"error": "invalid_grant"}).kind is ErrorKind.REAUTHORIZE
    assert microsoft.classify({"error": "interaction_required"}).kind is ErrorKind.REAUTHORIZE
    assert microsoft.classify({"error": "unauthorized_client"}).kind is ErrorKind.INVALID_CLIENT
    assert microsoft.classify({"error": "unsupported_grant_type"}).kind is ErrorKind.BAD_CONFIG
    unknown = microsoft.classify({})
    assert unknown.kind is ErrorKind.TRANSIENT
    assert unknown.message == "the token endpoint failed: unknown_error"
    assert unknown.retry_after is None


@pytest.mark.parametrize("error", ["invalid_request", "server_error", "invalid_client", "invalid_grant", "weird"])
def test_microsoft_secret_in_description_never_survives(error: str) -> None:
    """Entra sometimes echoes request fields; the message is shown in status and Events."""
    result = {
        "error": error,
        "error_description": f"AADSTS900144: bad request client_secret={SECRET} refresh {REFRESH}",
    }
    exc = microsoft.classify(result, secrets=(SECRET, REFRESH))
    text = all_text(exc)
    assert SECRET not in text
    assert REFRESH not in text
    assert "AADSTS900144" in exc.message


def test_microsoft_call_passes_the_refresh_token_to_redaction() -> None:
    """The provider's own wrapper hands every secret it used to classify."""
    spec = parse_spec(
        {
            "provider": "Microsoft",
            "tenantId": "t",
            "clientId": "c",
            "clientSecretRef": {"name": "s"},
            "services": ["IMAP"],
        },
        "box",
    )
    answer = {"error": "invalid_grant", "error_description": f"refresh token {REFRESH} was issued to {SECRET}"}
    with pytest.raises(ProviderError) as info:
        MicrosoftProvider()._call(spec, lambda: answer, ClientCredentials(client_secret=SECRET), REFRESH)
    assert info.value.kind is ErrorKind.REAUTHORIZE
    assert SECRET not in all_text(info.value)
    assert REFRESH not in all_text(info.value)


# --------------------------------------------------------------------------- Google


def test_google_expired_or_revoked_needs_reauthorization() -> None:
    """Google's one-line answer gets an explanation of the usual causes."""
    exc = google_mod.classify(
        {"error": "invalid_grant", "error_description": "Token has been expired or revoked."},
        status=400,
        retry_after=None,
    )
    assert exc.kind is ErrorKind.REAUTHORIZE
    assert exc.reason == "ReauthorizationRequired"
    assert exc.message == google_mod.REVOKED_TEXT
    assert "Testing" in exc.message
    assert exc.code == "invalid_grant"


def test_google_other_invalid_grant_keeps_description() -> None:
    """Other invalid_grant texts are passed on."""
    exc = google_mod.classify(
        {"error": "invalid_grant", "error_description": "Bad Request"}, status=400, retry_after=None
    )
    assert exc.kind is ErrorKind.REAUTHORIZE
    assert exc.message == "the grant is no longer valid: Bad Request"


@pytest.mark.parametrize("error", ["invalid_client", "unauthorized_client"])
def test_google_client_errors_are_invalid_client(error: str) -> None:
    """A wrong client or missing domain-wide delegation is retried slowly."""
    exc = google_mod.classify({"error": error, "error_description": "Unauthorized"}, status=401, retry_after=None)
    assert exc.kind is ErrorKind.INVALID_CLIENT
    assert exc.reason == "InvalidClient"
    assert exc.message == "Google rejected the client: Unauthorized"


def test_google_bad_request_is_bad_config() -> None:
    """An unknown scope cannot be fixed by retrying."""
    exc = google_mod.classify({"error": "invalid_scope"}, status=400, retry_after=None)
    assert exc.kind is ErrorKind.BAD_CONFIG
    assert exc.message == "Google rejected the request: invalid_scope"


def test_google_server_errors_are_transient() -> None:
    """A bare 503 is retried, honouring Retry-After."""
    exc = google_mod.classify({}, status=503, retry_after=12.0)
    assert exc.kind is ErrorKind.TRANSIENT
    assert exc.message == "the Google token endpoint failed: HTTP 503"
    assert exc.retry_after == 12.0
    assert exc.code is None
    assert google_mod.classify({}, status=None, retry_after=None).message == (
        "the Google token endpoint failed: no usable answer"
    )


@pytest.mark.parametrize("error", ["invalid_grant", "invalid_client", "invalid_request", "internal_failure"])
def test_google_secret_in_description_never_survives(error: str) -> None:
    """Known secrets and token-shaped fields are scrubbed from every kind of message."""
    data = {"error": error, "error_description": f"refresh_token {REFRESH} for client {SECRET} refused"}
    exc = google_mod.classify(data, status=400, retry_after=None, secrets=(SECRET, REFRESH))
    text = all_text(exc)
    assert SECRET not in text
    assert REFRESH not in text


def test_google_refresh_error_is_classified_with_its_body() -> None:
    """google-auth puts the JSON body in RefreshError.args[1]; that is what decides."""

    class Cred:
        def refresh(self, request: object) -> None:
            raise google.auth.exceptions.RefreshError(
                f"invalid_grant: Token has been expired or revoked. {REFRESH}",
                {"error": "invalid_grant", "error_description": "Token has been expired or revoked."},
            )

    with pytest.raises(ProviderError) as info:
        GoogleProvider()._refresh(Cred(), SECRET, REFRESH)
    assert info.value.kind is ErrorKind.REAUTHORIZE
    assert REFRESH not in all_text(info.value)
    assert info.value.__suppress_context__ is True  # the library exception (with the token) is not chained


def test_google_transport_error_is_transient() -> None:
    """Connection failures are retried."""

    class Cred:
        def refresh(self, request: object) -> None:
            raise google.auth.exceptions.TransportError("connection refused")

    with pytest.raises(ProviderError) as info:
        GoogleProvider()._refresh(Cred())
    assert info.value.kind is ErrorKind.TRANSIENT
    assert info.value.message == "the Google token endpoint could not be reached (TransportError)"


# --------------------------------------------------------------------------- outcomes


def test_provider_error_default_reasons() -> None:
    """Each kind maps to the condition reason written to status."""
    assert {kind: ProviderError(kind, "m").reason for kind in ErrorKind} == REASONS
    assert REASONS[ErrorKind.REAUTHORIZE] == "ReauthorizationRequired"
    assert ProviderError(ErrorKind.BAD_CONFIG, "m", reason="SecretNotFound").reason == "SecretNotFound"


def test_token_set_repr_hides_tokens() -> None:
    """A logged TokenSet shows no token values."""
    tokens = TokenSet(access_token="AT-abcdef", expires_at=datetime(2026, 1, 1, tzinfo=UTC), refresh_token="RT-xyz")
    assert "AT-abcdef" not in repr(tokens)
    assert "RT-xyz" not in repr(tokens)


# --------------------------------------------------------------------------- one attempt per engine attempt
# Both libraries are driven over HTTPS to a local endpoint that answers like the token endpoint and counts.


class Endpoint(ThreadingHTTPServer):
    """Answers every POST with the next scripted (status, body, headers), or with silence for ``("silent", s)``;
    every GET (msal's OpenID discovery) with this endpoint's configuration."""

    daemon_threads = True  # a silent answer's handler must not hold the test's teardown

    def __init__(self, ca: trustme.CA, *answers: Any) -> None:
        self.answers = list(answers)
        self.requests: list[tuple[str, str]] = []
        self.bodies: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: Any, headers: dict[str, str]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                outer.requests.append(("GET", self.path))
                root = outer.url + "/contoso"
                self._answer(
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
                self._answer(*answer)

        super().__init__(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(context)
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server_address[1]}"

    @property
    def posts(self) -> int:
        return sum(1 for method, _ in self.requests if method == "POST")


@pytest.fixture(autouse=True)
def no_proxy_from_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The local endpoint is called directly whatever proxy the machine running the tests names."""
    for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


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


def google_spec(endpoint: Endpoint) -> Any:
    return parse_spec(
        {
            "provider": "Google",
            "clientId": "g",
            "clientSecretRef": {"name": "s"},
            "emailAddress": "a@example.com",
            "services": ["Gmail"],
            "tokenUrl": f"{endpoint.url}/token",
        },
        "box",
    )


def microsoft_spec(endpoint: Endpoint, **extra: Any) -> Any:
    return parse_spec(
        {
            "provider": "Microsoft",
            "tenantId": "contoso",
            "clientId": "m",
            "clientSecretRef": {"name": "s"},
            "emailAddress": "a@contoso.com",
            "services": ["IMAP"],
            "tokenUrl": f"{endpoint.url}/contoso/oauth2/v2.0/token",
            **extra,
        },
        "box",
    )


@pytest.mark.parametrize("status", [500, 503, 429])
def test_google_5xx_is_one_call_with_retry_after(status: int, serve: Any, ca_file: str) -> None:
    """google-auth retried 5xx/429 itself, three times a second apart, ignoring Retry-After."""
    endpoint = serve((status, {"error": "temporarily_unavailable"}, {"Retry-After": "7"}))
    with pytest.raises(ProviderError) as info:
        GoogleProvider(session_for(ca_file)).refresh(
            google_spec(endpoint), ClientCredentials(client_secret=SECRET), REFRESH
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
            google_spec(endpoint), ClientCredentials(client_secret=SECRET), REFRESH
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
            google_spec(endpoint), ClientCredentials(client_secret=SECRET), REFRESH
        )
    assert endpoint.posts == 1
    assert info.value.kind is ErrorKind.REAUTHORIZE


def test_an_endpoint_nobody_listens_on_is_unreachable(ca_file: str) -> None:
    """A refused connection is a transient error naming the failure's type, not its words."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    spec = parse_spec(
        {
            "provider": "Google",
            "clientId": "g",
            "clientSecretRef": {"name": "s"},
            "emailAddress": "a@example.com",
            "services": ["Gmail"],
            "tokenUrl": f"https://127.0.0.1:{port}/token",
        },
        "box",
    )
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
        provider.refresh(microsoft_spec(endpoint), ClientCredentials(client_secret=SECRET), REFRESH)
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
    app_spec = microsoft_spec(endpoint, flow="ClientCredentials")
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
    app_spec = microsoft_spec(endpoint, flow="ClientCredentials")
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
    app_spec = microsoft_spec(endpoint, flow="ClientCredentials")
    provider.acquire_app_token(app_spec, ClientCredentials(client_secret=SECRET))
    provider.acquire_app_token(app_spec, ClientCredentials(client_secret=SECRET + "-rotated"))
    sent = [parse_qs(body).get("client_secret") for body in endpoint.bodies]
    assert sent == [[SECRET], [SECRET + "-rotated"]]
    assert len(provider._apps) == 1, "the new secret's application replaced the old one"


def test_a_refresh_token_is_not_kept_in_the_shared_application(serve: Any, ca_file: str) -> None:
    """Nothing a call returned stays in the application other tokens of the registration use."""
    endpoint = serve((200, {"access_token": "at", "refresh_token": "rt-next", "expires_in": 3600}, {}))
    provider = MicrosoftProvider(session_for(ca_file))
    assert provider.refresh(microsoft_spec(endpoint), ClientCredentials(client_secret=SECRET), REFRESH).refresh_token
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
        provider.acquire_app_token(microsoft_spec(endpoint, flow="ClientCredentials", clientId=client), creds)
    assert sorted(client for _, client in provider._apps) == ["m1", "m2"]
    assert [parse_qs(body)["client_id"] for body in endpoint.bodies] == [["m1"], ["m2"], ["m3"], ["m3"], ["m1"]]


def test_a_federated_credentials_application_is_not_kept(serve: Any, ca_file: str) -> None:
    """Its assertion is a new callable per step: a kept application would present a stale one."""
    endpoint = serve(*[(200, {"access_token": f"at-{i}", "expires_in": 3600}, {}) for i in range(2)])
    provider = MicrosoftProvider(session_for(ca_file))
    app_spec = microsoft_spec(endpoint, flow="ClientCredentials")
    for assertion in ("jwt-one", "jwt-two"):
        provider.acquire_app_token(app_spec, ClientCredentials(client_assertion=lambda a=assertion: a))
    assert [parse_qs(body)["client_assertion"] for body in endpoint.bodies] == [["jwt-one"], ["jwt-two"]]
    assert provider._apps == {}


class _Lookups:
    """A meta-path finder that only records which modules Python searched for."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        self.names.append(name)


def test_msal_looks_for_its_absent_extension_package_once_not_per_application() -> None:
    """msal imports the optional msal-extensions each time an application is built; once the
    provider module is loaded, an absent package is known absent without a search."""
    if importlib.util.find_spec("msal_extensions") is not None:
        pytest.skip("msal-extensions is installed here: msal's check finds it")
    lookups = _Lookups()
    sys.meta_path.insert(0, lookups)
    try:
        for _ in range(3):
            msal.application._msal_extension_check()  # what every ClientApplication() runs
    finally:
        sys.meta_path.remove(lookups)
    assert "msal_extensions" not in lookups.names

"""Provider answers are hostile input: msal and google-auth, unpatched, against an HTTPS endpoint that misbehaves.

The endpoint is what a tenant could name in ``spec.tokenUrl``: it redirects to an internal
plain-HTTP address, drips its answer a byte at a time, sends a huge body, answers with an
HTML page echoing the request, or asks for a Retry-After of 10^12 seconds. Each case must end
in a ProviderError within the deadline, with no secret in the error, the logs, or at the
internal address.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import trustme

from emailtoken.endpoints import DEFAULT_ALLOWED_HOSTS
from emailtoken.model import parse_spec
from emailtoken.outcomes import ErrorKind, ProviderError
from emailtoken.providers.base import ClientCredentials
from emailtoken.providers.google import GoogleProvider
from emailtoken.providers.http import MAX_RETRY_AFTER, ProviderSession
from emailtoken.providers.microsoft import MicrosoftProvider
from tests.support.localhttps import JsonHandler, provider_spec, serve_tls

SECRET = "client-secret-value-7f3a9c"
REFRESH = "refresh-token-value-0b1d2e"

pytestmark = pytest.mark.usefixtures("no_proxy")


class Internal(ThreadingHTTPServer):
    """A plain-HTTP 'internal service' that records every request it receives."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                outer.seen.append(self.rfile.read(length))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"access_token": "stolen", "expires_in": 3600}')

            do_GET = do_POST

        super().__init__(("127.0.0.1", 0), Handler)


class Hostile(ThreadingHTTPServer):
    """An OAuth-looking HTTPS endpoint; the first path segment picks the misbehaviour of its token POST."""

    def __init__(self, ca: trustme.CA, internal_url: str) -> None:
        self.bodies: list[bytes] = []
        outer = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                mode = self.path.split("/")[1]
                root = f"https://127.0.0.1:{outer.server_address[1]}/{mode}"
                self.send_json(
                    200,
                    {
                        "token_endpoint": f"{root}/oauth2/v2.0/token",
                        "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
                        "device_authorization_endpoint": f"{root}/oauth2/v2.0/devicecode",
                        "issuer": f"{root}/v2.0",
                    },
                )

            def drip(self, byte: bytes) -> None:
                """One byte every 0.25 s for 15 s, until the client hangs up."""
                for _ in range(60):
                    try:
                        self.wfile.write(byte)
                        self.wfile.flush()
                    except OSError:
                        return
                    time.sleep(0.25)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                outer.bodies.append(body)
                mode = self.path.split("/")[1]
                if mode == "redirect":
                    self.send_response(307)
                    self.send_header("Location", internal_url + "/steal")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif mode == "drip":
                    self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                    self.drip(b"X")
                elif mode == "closedrip":
                    # Complete headers, then a body of no stated length a byte at a time: http.client
                    # lets go of the connection at once, the answer keeps its socket.
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.drip(b" ")
                    self.close_connection = True
                elif mode == "huge":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()  # no Content-Length: the client cannot refuse by header
                    chunk = b" " * 65536
                    try:
                        for _ in range(600 * 16):  # up to 600 MiB
                            self.wfile.write(chunk)
                    except OSError:
                        return
                elif mode == "echo":
                    page = b"<html><body>Bad request: " + body + b"</body></html>"
                    self.send_response(400)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(page)))
                    self.end_headers()
                    self.wfile.write(page)
                elif mode in ("bom", "utf16"):
                    # JSON that Python reads from bytes but not as the UTF-8 text msal parses and logs.
                    echo = json.dumps({"echo": body.decode()})
                    page = b"\xef\xbb\xbf" + echo.encode() if mode == "bom" else echo.encode("utf-16")
                    self.send_response(400)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(page)))
                    self.end_headers()
                    self.wfile.write(page)
                elif mode == "forever":
                    self.send_json(200, {"access_token": "at", "token_type": "Bearer", "expires_in": 10**12})
                elif mode == "instant":
                    self.send_json(200, {"access_token": "at", "token_type": "Bearer", "expires_in": -5})
                elif mode == "novel":
                    self.send_json(400, {"error": "invalid_grant", "error_description": "x" * 100_000})
                elif mode in ("unverified", "verified"):
                    claims = {"email": "boss@example.com", "email_verified": mode == "verified"}
                    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
                    self.send_json(
                        200,
                        {
                            "access_token": "at",
                            "expires_in": 3600,
                            "refresh_token": "rt",
                            "id_token": f"e30.{payload}.sig",
                        },
                    )
                elif mode == "retryafter":
                    self.send_json(429, {"error": "temporarily_unavailable"}, {"Retry-After": "1000000000000"})
                else:
                    self.send_json(500, {"error": "unknown mode"})

        super().__init__(("127.0.0.1", 0), Handler)
        serve_tls(self, ca)

    def token_url(self, mode: str) -> str:
        return f"https://127.0.0.1:{self.server_address[1]}/{mode}/oauth2/v2.0/token"


def _serve(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def internal() -> Iterator[Internal]:
    server = Internal()
    _serve(server)
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def hostile(ca: trustme.CA, internal: Internal, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    server = Hostile(ca, f"http://127.0.0.1:{internal.server_address[1]}")
    server.daemon_threads = True
    _serve(server)
    yield server
    server.shutdown()


def refresh(provider: str, hostile: Hostile, mode: str, session: ProviderSession) -> ProviderError:
    creds = ClientCredentials(client_secret=SECRET)
    with pytest.raises(ProviderError) as info:
        if provider == "Microsoft":
            MicrosoftProvider(session).refresh(provider_spec(provider, hostile.token_url(mode)), creds, REFRESH)
        else:
            GoogleProvider(session).refresh(provider_spec(provider, hostile.token_url(mode)), creds, REFRESH)
    return info.value


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text and REFRESH not in text, text[:300]


def error_text(exc: ProviderError) -> str:
    return " ".join([str(exc), repr(exc), exc.message, str(exc.code), exc.reason, repr(exc.__cause__)])


PROVIDERS = ["Microsoft", "Google"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_redirect_is_not_followed(provider: str, hostile: Hostile, internal: Internal, ca_file: str) -> None:
    before = len(internal.seen)
    exc = refresh(provider, hostile, "redirect", ProviderSession(ca_bundle=ca_file, timeout=5))
    assert internal.seen[before:] == [], "the grant reached the internal address"
    assert exc.kind is ErrorKind.TRANSIENT
    assert "redirect (HTTP 307)" in exc.message
    assert_no_secret(error_text(exc))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_dripping_answer_ends_at_the_deadline(provider: str, hostile: Hostile, ca_file: str) -> None:
    started = time.monotonic()
    exc = refresh(provider, hostile, "drip", ProviderSession(ca_bundle=ca_file, timeout=1.5))
    took = time.monotonic() - started
    assert took < 4, f"the step took {took:.1f} s against a 1.5 s deadline"
    assert "within 1.5 s" in exc.message
    assert exc.kind is ErrorKind.TRANSIENT


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_body_dripped_after_connection_close_ends_at_the_deadline(
    provider: str, hostile: Hostile, ca_file: str
) -> None:
    started = time.monotonic()
    exc = refresh(provider, hostile, "closedrip", ProviderSession(ca_bundle=ca_file, timeout=1.5))
    took = time.monotonic() - started
    assert took < 4, f"the step took {took:.1f} s against a 1.5 s deadline"
    assert "within 1.5 s" in exc.message


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_huge_answer_is_cut_off(provider: str, hostile: Hostile, ca_file: str) -> None:
    started = time.monotonic()
    exc = refresh(provider, hostile, "huge", ProviderSession(ca_bundle=ca_file, timeout=10))
    assert "larger than 1048576 bytes" in exc.message
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_html_echo_of_the_request_reaches_no_log(
    provider: str, hostile: Hostile, ca_file: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    exc = refresh(provider, hostile, "echo", ProviderSession(ca_bundle=ca_file, timeout=5))
    assert any(REFRESH.encode() in body for body in hostile.bodies), "the endpoint did see the request"
    assert_no_secret(caplog.text, error_text(exc))
    assert "HTTP 400 with text/html, not JSON" in exc.message


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("mode", ["bom", "utf16"])
def test_a_json_echo_msal_cannot_read_reaches_no_log(
    provider: str, mode: str, hostile: Hostile, ca_file: str, caplog: pytest.LogCaptureFixture
) -> None:
    """msal logs an answer it cannot parse as it is (at ERROR); a byte-order mark or UTF-16 passed a
    check that parsed bytes, not the text msal parses."""
    caplog.set_level(logging.DEBUG)
    exc = refresh(provider, hostile, mode, ProviderSession(ca_bundle=ca_file, timeout=5))
    assert_no_secret(caplog.text, error_text(exc))
    assert "HTTP 400 with application/json, not JSON" in exc.message


@pytest.mark.parametrize("provider", PROVIDERS)
def test_retry_after_is_bounded(provider: str, hostile: Hostile, ca_file: str) -> None:
    exc = refresh(provider, hostile, "retryafter", ProviderSession(ca_bundle=ca_file, timeout=5))
    assert exc.kind is ErrorKind.TRANSIENT
    assert exc.retry_after == MAX_RETRY_AFTER


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_host_the_installer_did_not_allow_gets_nothing(provider: str, hostile: Hostile, ca_file: str) -> None:
    """Only the host is compared: 127.0.0.1 is allowed, `localhost` (the same server) is not."""
    before = len(hostile.bodies)
    session = ProviderSession(ca_bundle=ca_file, timeout=5, allowed_hosts=("127.0.0.1", *DEFAULT_ALLOWED_HOSTS))
    spec = provider_spec(provider, hostile.token_url("echo"))
    other = parse_spec(
        {
            **spec.raw,
            "tokenUrl": spec.token_url.replace("127.0.0.1", "localhost"),
            "authorizationUrl": f"https://localhost:{hostile.server_address[1]}/authorize",
        },
        "box",
    )
    impl = MicrosoftProvider(session) if provider == "Microsoft" else GoogleProvider(session)
    with pytest.raises(ProviderError) as info:
        impl.refresh(other, ClientCredentials(client_secret=SECRET), REFRESH)
    assert hostile.bodies[before:] == [], "a request left for a host that is not allowed"
    assert (info.value.kind, info.value.reason) == (ErrorKind.BAD_CONFIG, "EndpointNotAllowed")
    assert "'localhost' is not allowed" in info.value.message
    with pytest.raises(ProviderError) as info:
        impl.authorization_url(
            other, redirect_uri="https://cb/callback", state="s", code_challenge="c", login_hint=None
        )
    assert info.value.reason == "EndpointNotAllowed"
    assert impl.authorization_url(
        spec, redirect_uri="https://cb/callback", state="s", code_challenge="c", login_hint=None
    ).startswith(spec.authorization_url + "?")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_lifetimes_are_bounded(provider: str, hostile: Hostile, ca_file: str) -> None:
    """expires_in 10**12 (an overflow) or negative: a bounded lifetime, never an exception out of the step."""
    session = ProviderSession(ca_bundle=ca_file, timeout=5)
    creds = ClientCredentials(client_secret=SECRET)
    for mode, low, high in (("forever", 0, 86400), ("instant", -1, 1)):
        spec = provider_spec(provider, hostile.token_url(mode))
        impl = MicrosoftProvider(session) if provider == "Microsoft" else GoogleProvider(session)
        started = datetime.now(UTC)
        try:
            tokens = impl.refresh(spec, creds, REFRESH)
        except ProviderError as exc:  # google-auth computes the expiry itself: a clear, retryable refusal
            assert provider == "Google" and mode == "forever", exc
            assert exc.kind is ErrorKind.TRANSIENT and "unusable expires_in" in exc.message
            continue
        lifetime = (tokens.expires_at - started).total_seconds()
        assert low <= lifetime <= high + 5, (mode, lifetime)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_provider_text_is_cut_to_fit_status(provider: str, hostile: Hostile, ca_file: str) -> None:
    exc = refresh(provider, hostile, "novel", ProviderSession(ca_bundle=ca_file, timeout=5))
    assert exc.kind is ErrorKind.REAUTHORIZE
    assert len(exc.message) < 700 and exc.message.endswith("…")


@pytest.mark.parametrize(("mode", "account"), [("unverified", None), ("verified", "boss@example.com")])
def test_google_pins_only_a_verified_email(hostile: Hostile, ca_file: str, mode: str, account: str | None) -> None:
    """An id_token's email without email_verified proves nothing about who signed in."""
    tokens = GoogleProvider(ProviderSession(ca_bundle=ca_file, timeout=5)).exchange_code(
        provider_spec("Google", hostile.token_url(mode)),
        ClientCredentials(client_secret=SECRET),
        code="c",
        redirect_uri="https://cb",
        code_verifier="v",
    )
    assert tokens.account == account

"""emailtoken.providers.http over real sockets: proxies and CA bundles come from where an installer
puts them (``HTTPS_PROXY``/``NO_PROXY``, ``--ca-bundle``, else ``REQUESTS_CA_BUNDLE``), as they did
when requests carried the calls."""

from __future__ import annotations

import json
import select
import socket
import socketserver
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trustme

from emailtoken.providers.http import ProviderSession, Unreachable

PROXY_VARIABLES = ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY", "all_proxy")


class TokenEndpoint(ThreadingHTTPServer):
    """An HTTPS endpoint that answers every POST with a token and records the form it got."""

    daemon_threads = True

    def __init__(self, ca: trustme.CA) -> None:
        self.forms: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                outer.forms.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())
                body = json.dumps({"access_token": "at", "path": self.path}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        super().__init__(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(context)
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server_address[1]}/token"


class ConnectProxy(socketserver.ThreadingTCPServer):
    """A forward proxy that tunnels CONNECT requests and records their targets."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        self.targets: list[str] = []
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = self.request.recv(4096)
                    if not chunk:
                        return
                    head += chunk
                method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
                outer.targets.append(f"{method} {target}")
                host, port = target.rsplit(":", 1)
                with socket.create_connection((host, int(port))) as upstream:
                    self.request.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    pump(self.request, upstream)

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


def pump(a: socket.socket, b: socket.socket) -> None:
    while True:
        ready, _, _ = select.select([a, b], [], [], 5)
        if not ready:
            return
        for sock in ready:
            data = sock.recv(65536)
            if not data:
                return
            (b if sock is a else a).sendall(data)


def _serve(server: socketserver.BaseServer) -> None:
    threading.Thread(target=server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(scope="module")
def endpoint(ca: trustme.CA) -> Iterator[TokenEndpoint]:
    server = TokenEndpoint(ca)
    _serve(server)
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[ConnectProxy]:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    server = ConnectProxy()
    _serve(server)
    yield server
    server.shutdown()
    server.server_close()


def test_https_calls_go_through_the_environments_proxy(
    endpoint: TokenEndpoint, proxy: ConnectProxy, ca_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    answer = ProviderSession(ca_bundle=ca_file, timeout=5).post(endpoint.url, data={"grant_type": "x"})
    assert answer.status_code == 200 and answer.json()["access_token"] == "at"
    assert proxy.targets == [f"CONNECT 127.0.0.1:{endpoint.server_address[1]}"]


def test_no_proxy_hosts_are_called_directly(
    endpoint: TokenEndpoint, proxy: ConnectProxy, ca_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    answer = ProviderSession(ca_bundle=ca_file, timeout=5).post(endpoint.url, data={"grant_type": "x"})
    assert answer.status_code == 200
    assert proxy.targets == []


def test_forms_params_and_string_bodies_are_sent_as_msal_expects(endpoint: TokenEndpoint, ca_file: str) -> None:
    """msal's http_client contract: a dict ``data`` is form-encoded, a string sent as it is, ``params`` in the URL."""
    session = ProviderSession(ca_bundle=ca_file, timeout=5)
    first = session.post(endpoint.url, params={"api-version": "2.0"}, data={"scope": "a b", "x": "1&2"})
    session.post(endpoint.url, data="grant_type=refresh_token&refresh_token=rt")
    assert first.json()["path"] == "/token?api-version=2.0"
    assert endpoint.forms[-2:] == ["scope=a+b&x=1%262", "grant_type=refresh_token&refresh_token=rt"]


def test_the_environments_ca_bundle_is_trusted_when_none_is_pinned(
    endpoint: TokenEndpoint, ca_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with pytest.raises(Unreachable, match="SSLError"):
        ProviderSession(timeout=5).post(endpoint.url, data={})  # the public CAs do not know it
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca_file)
    assert ProviderSession(timeout=5).post(endpoint.url, data={}).status_code == 200


def test_a_pinned_ca_bundle_wins_over_the_environments(
    endpoint: TokenEndpoint, ca_file: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why --ca-bundle exists: ``REQUESTS_CA_BUNDLE`` used to override a session's pinned CA."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    other = tmp_path / "other.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(other))
    assert ProviderSession(ca_bundle=ca_file, timeout=5).post(endpoint.url, data={}).status_code == 200
    with pytest.raises(Unreachable, match="SSLError"):
        ProviderSession(timeout=5).post(endpoint.url, data={})

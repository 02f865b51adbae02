"""emailtoken.providers.http over real sockets: proxies and CA bundles come from where an installer
puts them (``HTTPS_PROXY``/``NO_PROXY``, ``--ca-bundle``, else ``REQUESTS_CA_BUNDLE``), as they did
when requests carried the calls."""

from __future__ import annotations

import base64
import select
import socket
import socketserver
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme

from emailtoken.providers.http import ProviderHTTPError, ProviderSession, Unreachable
from tests.support.localhttps import JsonHandler, serve_tls
from tests.support.system import need_binary

pytestmark = pytest.mark.usefixtures("no_proxy")


class TokenEndpoint(ThreadingHTTPServer):
    """An HTTPS endpoint that answers every POST with a token and records the form it got."""

    daemon_threads = True

    def __init__(self, ca: trustme.CA) -> None:
        self.forms: list[str] = []
        outer = self

        class Handler(JsonHandler):
            def do_POST(self) -> None:
                outer.forms.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())
                self.send_json(200, {"access_token": "at", "path": self.path})

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = serve_tls(self, ca) + "/token"


class ConnectProxy(socketserver.ThreadingTCPServer):
    """A forward proxy that tunnels CONNECT requests and records their targets; with ``credentials``
    it answers 407 to a request without them; ``stall`` accepts the tunnel and then sends nothing."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, credentials: str | None = None, stall: bool = False) -> None:
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
                if credentials is not None:
                    expected = "Basic " + base64.b64encode(credentials.encode()).decode()
                    if f"proxy-authorization: {expected}".lower().encode() not in head.lower():
                        self.request.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
                        return
                if stall:
                    self.request.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    self.request.recv(65536)  # the client's TLS hello, never answered
                    time.sleep(10)
                    return
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
def endpoint(ca: trustme.CA) -> Iterator[TokenEndpoint]:
    server = TokenEndpoint(ca)
    _serve(server)
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy() -> Iterator[ConnectProxy]:
    server = ConnectProxy()
    _serve(server)
    yield server
    server.shutdown()
    server.server_close()


def test_a_scheme_less_proxy_with_credentials_is_used_with_them(
    endpoint: TokenEndpoint, ca_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``HTTPS_PROXY=user:pass@host:port``: requests added http:// and sent the credentials; urllib3 does neither."""
    guarded = ConnectProxy(credentials="svc@corp:s3cret")
    _serve(guarded)
    try:
        port = guarded.server_address[1]
        monkeypatch.setenv("HTTPS_PROXY", f"wrong:creds@127.0.0.1:{port}")
        with pytest.raises(Unreachable, match="ProxyError"):
            ProviderSession(ca_bundle=ca_file, timeout=5).post(endpoint.url, data={})
        monkeypatch.setenv("HTTPS_PROXY", f"svc%40corp:s3cret@127.0.0.1:{port}")
        assert ProviderSession(ca_bundle=ca_file, timeout=5).post(endpoint.url, data={}).status_code == 200
        assert len(guarded.targets) == 2
    finally:
        guarded.shutdown()
        guarded.server_close()


def test_a_proxy_that_stalls_the_tunnel_ends_at_the_deadline(
    endpoint: TokenEndpoint, ca_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    stalling = ConnectProxy(stall=True)
    _serve(stalling)
    try:
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{stalling.server_address[1]}")
        started = time.monotonic()
        with pytest.raises(ProviderHTTPError):
            ProviderSession(ca_bundle=ca_file, timeout=1.0).post(endpoint.url, data={})
        assert time.monotonic() - started < 3.0
    finally:
        stalling.shutdown()
        stalling.server_close()


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


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"])
def test_the_environments_ca_bundle_is_trusted_when_none_is_pinned(
    variable: str, endpoint: TokenEndpoint, ca_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(Unreachable, match="SSLError"):
        ProviderSession(timeout=5).post(endpoint.url, data={})  # certifi's public CAs do not know it
    monkeypatch.setenv(variable, ca_file)
    assert ProviderSession(timeout=5).post(endpoint.url, data={}).status_code == 200


def test_a_ca_directory_is_trusted(endpoint: TokenEndpoint, ca: trustme.CA, tmp_path: Path) -> None:
    """A hashed certificate directory (like /etc/ssl/certs), as requests took it."""
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    openssl = need_binary("openssl")
    subject_hash = subprocess.run(
        [openssl, "x509", "-hash", "-noout", "-in", str(tmp_path / "ca.pem")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (tmp_path / f"{subject_hash}.0").symlink_to(tmp_path / "ca.pem")
    assert ProviderSession(ca_bundle=str(tmp_path), timeout=5).post(endpoint.url, data={}).status_code == 200


def test_a_pinned_ca_bundle_wins_over_the_environments(
    endpoint: TokenEndpoint, ca_file: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why --ca-bundle exists: ``REQUESTS_CA_BUNDLE`` used to override a session's pinned CA."""
    other = tmp_path / "other.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(other))
    assert ProviderSession(ca_bundle=ca_file, timeout=5).post(endpoint.url, data={}).status_code == 200
    with pytest.raises(Unreachable, match="SSLError"):
        ProviderSession(timeout=5).post(endpoint.url, data={})


def test_a_ca_bundle_that_cannot_be_loaded_stops_the_start(tmp_path: Path) -> None:
    """A typo would otherwise show only as every provider call failing its TLS handshake."""
    with pytest.raises(ValueError, match=r"missing\.pem cannot be loaded"):
        ProviderSession(ca_bundle=str(tmp_path / "missing.pem"))
    (tmp_path / "empty.pem").write_text("not a certificate")
    with pytest.raises(ValueError, match=r"empty\.pem cannot be loaded"):
        ProviderSession(ca_bundle=str(tmp_path / "empty.pem"))

"""emailtoken.kube's own requests (Secrets, status, Events) when the API server does not answer as one.

The answers of a real API server are in tests/cluster/test_kube_api.py; here the real client
meets no server, a silent one, one that does not speak TLS, and a proxy's HTML error page:
each is a :class:`KubeError` (Unreachable without an HTTP answer), never a urllib3
exception, and nothing of an error page's body reaches the message.
"""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from emailtoken.kube import KubeError, KubernetesApi, Unreachable
from tests.support.kube import client_config
from tests.support.ports import free_port

pytestmark = pytest.mark.looptime(False)


def _serve_once(listener: socket.socket, answer: bytes, heard: list[bytes] | None = None) -> threading.Thread:
    """Answer the first request on ``listener`` with ``answer`` (raw bytes), then close; the
    request's first bytes go to ``heard``."""

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            request = conn.recv(65536)
            if heard is not None:
                heard.append(request)
            conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


async def test_a_refused_connection_is_unreachable() -> None:
    api = KubernetesApi(threads=1, request_timeout=2, configuration=client_config(free_port()))
    for call in (api.get_secret("ns", "s"), api.patch_token_status("ns", "t", {"phase": "x"})):
        with pytest.raises(Unreachable) as caught:
            await call
        assert caught.value.status == 0 and "refused" in str(caught.value).lower()


async def test_a_server_that_never_answers_costs_one_timeout() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        api = KubernetesApi(threads=1, request_timeout=0.5, configuration=client_config(listener.getsockname()[1]))
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(Unreachable):
            await api.patch_secret("ns", "s", {"data": {}})
        assert loop.time() - started < 1.5


async def test_a_tls_failure_is_unreachable() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.settimeout(10)
        server = _serve_once(listener, b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        api = KubernetesApi(
            threads=1, request_timeout=2, configuration=client_config(listener.getsockname()[1], "https")
        )
        with pytest.raises(Unreachable) as caught:
            await api.write_secret_and_status("ns", "s", {"data": {}}, "t", {"phase": "x"}, create=False)
        assert "ssl" in str(caught.value).lower()
        server.join(5)


async def test_a_proxys_html_error_page_is_a_kube_error_without_its_body() -> None:
    page = b"<html><body>upstream failed; request was PATCH with token s3cr3t-value</body></html>"
    answer = (
        b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\nContent-Length: "
        + str(len(page)).encode()
        + b"\r\nConnection: close\r\n\r\n"
        + page
    )
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.settimeout(10)
        server = _serve_once(listener, answer)
        api = KubernetesApi(threads=1, request_timeout=2, configuration=client_config(listener.getsockname()[1]))
        with pytest.raises(KubeError) as caught:
            await api.patch_token_status("ns", "t", {"phase": "x"})
        server.join(5)
    assert (caught.value.status, caught.value.message) == (502, "Bad Gateway")
    assert "s3cr3t" not in f"{caught.value} {caught.value!r} {caught.value.args}"


@pytest.mark.parametrize(
    ("server", "prefix"),
    [("http://127.0.0.1:{port}/k8s/clusters/c-1/", "/k8s/clusters/c-1"), ("127.0.0.1:{port}", "")],
    ids=["under-a-path", "without-a-scheme"],
)
async def test_a_server_behind_a_path_gets_every_request_under_it(server: str, prefix: str) -> None:
    """A kubeconfig server such as ``https://rancher.example/k8s/clusters/c-1``: the requests
    that skip the generated client keep its path (and a bare ``host:port`` is no path), and an
    answer nobody reads asks for metadata."""
    heard: list[bytes] = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.settimeout(10)
        answer = _serve_once(listener, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", heard)
        config = client_config(listener.getsockname()[1])
        config.host = server.format(port=listener.getsockname()[1])
        api = KubernetesApi(threads=1, request_timeout=2, configuration=config)
        await api.patch_token_status("mail", "box", {"phase": "x"})
        answer.join(5)
    head = heard[0].split(b"\r\n\r\n")[0].decode()
    assert head.splitlines()[0] == (
        f"PATCH {prefix}/apis/emailtoken.io/v1alpha1/namespaces/mail/emailtokens/box/status HTTP/1.1"
    )
    assert "Accept: application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json" in head


async def test_a_401_with_credentials_unchanged_is_not_sent_again() -> None:
    """A refused request goes out once more only when the client has new credentials: with the
    same ones (a revoked token, an authentication outage) the 401 is the answer, at once."""
    refused = b'{"kind":"Status","code":401,"message":"Unauthorized"}'
    head = b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: "
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.settimeout(10)
        server = _serve_once(listener, head + str(len(refused)).encode() + b"\r\n\r\n" + refused)
        config = client_config(listener.getsockname()[1])
        config.api_key = {"BearerToken": "revoked"}
        config.api_key_prefix = {"BearerToken": "Bearer"}
        api = KubernetesApi(threads=1, request_timeout=2, configuration=config)
        with pytest.raises(KubeError) as caught:  # a second request would find no one answering: Unreachable
            await api.patch_token_status("mail", "box", {"phase": "x"})
        server.join(5)
    assert (caught.value.status, caught.value.message) == (401, "Unauthorized")

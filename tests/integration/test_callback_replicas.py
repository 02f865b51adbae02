"""Two callback replicas behind one address: any replica finishes any sign-in, a restart loses none,
and every refusal still holds on every replica.

Real parts: two `emailtoken callback` processes sharing one state key file (as the chart mounts
`callback.stateKeySecret`), a round-robin HTTP proxy in front of their public ports (the Service),
the local provider over HTTPS, the real operator against the local Kubernetes API.
"""

from __future__ import annotations

import http.client
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from emailtoken.callback.state import StateSealer
from emailtoken_dev.devprovider import DevProviderThread, redirect_params, sign_in
from tests.support.callback_process import AdminSession, CallbackProcess, browser_get
from tests.support.kube import ApiClient, KmockThread, wait_for
from tests.support.signin import assert_refused, grant_of, state_key_file, web_client, web_token, with_params

pytestmark = pytest.mark.usefixtures("operator")
ALICE = "alice.rep@contoso.com"
BOB = "bob.rep@contoso.com"
MALLORY = "mallory.rep@contoso.com"
CLIENT_SECRET = "replicas-client-secret-value"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


class RoundRobinProxy:
    """The Service in front of the replicas: each request goes to the next backend in turn."""

    def __init__(self, backends: list[int]) -> None:
        self.backends = backends
        self.served: list[int] = []  # backend index per request, in order
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with proxy._lock:
                    index = len(proxy.served) % len(proxy.backends)
                    proxy.served.append(index)
                conn = http.client.HTTPConnection("127.0.0.1", proxy.backends[index], timeout=60)
                try:
                    conn.request("GET", self.path, headers={"Host": self.headers.get("Host", "")})
                    answer = conn.getresponse()
                    body = answer.read()
                finally:
                    conn.close()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:  # the query carries codes and states
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> RoundRobinProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def state_key(workdir: Path) -> Path:
    return state_key_file(workdir / "replicas-state-key")


@pytest.fixture(scope="module")
def proxy_and_replicas(
    kube: KmockThread, provider: DevProviderThread, workdir: Path, state_key: Path
) -> Iterator[tuple[RoundRobinProxy, list[CallbackProcess]]]:
    # The proxy's port must be known before the replicas start (their --redirect-base-url).
    proxy = RoundRobinProxy([0, 0])
    replicas = [
        CallbackProcess(
            kube.kubeconfig,
            workdir,
            ca_bundle=provider.ca_pem_path,
            state_key_file=state_key,
            name=f"callback-replica-{i}",
            redirect_base_url=proxy.url,
        )
        for i in range(2)
    ]
    proxy.backends = [r.public_port for r in replicas]
    proxy.start()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda r: r.start(), replicas))
    yield proxy, replicas
    for replica in replicas:
        replica.stop()
    proxy.stop()


@pytest.fixture
def proxy(proxy_and_replicas: tuple[RoundRobinProxy, list[CallbackProcess]]) -> RoundRobinProxy:
    return proxy_and_replicas[0]


@pytest.fixture
def replicas(proxy_and_replicas: tuple[RoundRobinProxy, list[CallbackProcess]]) -> list[CallbackProcess]:
    return proxy_and_replicas[1]


@pytest.fixture
def client_id(provider: DevProviderThread, api: ApiClient, namespace: str, proxy: RoundRobinProxy) -> str:
    return web_client(
        provider,
        api,
        namespace,
        f"replicas-{namespace}",
        client_secret=CLIENT_SECRET,
        redirect_uris=[f"{proxy.url}/callback"],
        users=(ALICE, BOB, MALLORY),
    )


def create_token(api: ApiClient, provider: DevProviderThread, ns: str, name: str, client_id: str, mailbox: str) -> str:
    """Create a delegated Microsoft EmailToken; its uid."""
    api.create("emailtokens", ns, web_token(provider, name, client_id, mailbox))
    return api.get("emailtokens", ns, name)["metadata"]["uid"]


def start_sign_in(provider: DevProviderThread, replica: CallbackProcess, ns: str, name: str, email: str) -> str:
    """ "Get Email Token" on one replica's admin page, then the provider: the URL the browser returns to."""
    url = AdminSession(replica.admin_url).start_url(ns, name)
    location = sign_in(url, email, verify=provider.ca_pem_path)
    assert location.startswith(replica.redirect_uri + "?"), location
    return location


def code_redemptions(provider: DevProviderThread, client_id: str) -> int:
    return provider.count("token", grant_type="authorization_code", client_id=client_id)


def test_a_sign_in_started_on_one_replica_finishes_on_the_other(
    api: ApiClient,
    provider: DevProviderThread,
    proxy: RoundRobinProxy,
    replicas: list[CallbackProcess],
    namespace: str,
    client_id: str,
):
    create_token(api, provider, namespace, "alice", client_id, ALICE)
    create_token(api, provider, namespace, "bob", client_id, BOB)
    # Both started on replica 0; round robin sends one of the two callbacks to replica 1.
    to_alice = start_sign_in(provider, replicas[0], namespace, "alice", ALICE)
    to_bob = start_sign_in(provider, replicas[0], namespace, "bob", BOB)
    done = [browser_get(to_alice), browser_get(to_bob)]
    assert [a.status_code for a in done] == [200, 200], [a.text[-1500:] for a in done]
    assert sorted(proxy.served[-2:]) == [0, 1]
    finished = re.findall(rf"sign-in for {namespace}/(\w+) completed: grant stored", replicas[1].log)
    assert len(finished) == 1, "replica 1 should have finished one of the sign-ins replica 0 started"
    for name, email in (("alice", ALICE), ("bob", BOB)):
        assert grant_of(api, namespace, name) is not None
        wait_for(lambda n=name: (c := api.condition(namespace, n, "Ready")) and c["status"] == "True", 30)
        assert provider.token_info(api.secret_data(namespace, name)["access_token"])["email"] == email


def test_a_sign_in_survives_a_restart_of_every_replica_between_its_legs(
    api: ApiClient,
    provider: DevProviderThread,
    replicas: list[CallbackProcess],
    namespace: str,
    client_id: str,
):
    create_token(api, provider, namespace, "alice", client_id, ALICE)
    location = start_sign_in(provider, replicas[1], namespace, "alice", ALICE)
    # A rolling update: every process that could have remembered anything is replaced.
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda r: r.restart(), replicas))
    answer = browser_get(location)
    assert answer.status_code == 200, answer.text[-1500:]
    assert grant_of(api, namespace, "alice") is not None


def test_replay_forgery_expiry_and_wrong_account_are_refused_by_every_replica(
    api: ApiClient,
    provider: DevProviderThread,
    proxy: RoundRobinProxy,
    replicas: list[CallbackProcess],
    state_key: Path,
    namespace: str,
    client_id: str,
):
    def twice(url: str, status: int, reason: str) -> None:
        """Through the proxy twice: once to each replica."""
        before = len(proxy.served)
        for _ in range(2):
            assert_refused(browser_get(url), status, reason)
        assert sorted(proxy.served[before:]) == [0, 1]

    create_token(api, provider, namespace, "alice", client_id, ALICE)
    create_token(api, provider, namespace, "bob", client_id, BOB)

    # Forgery: an altered state, and a state sealed with another key, for a real code.
    to_bob = start_sign_in(provider, replicas[0], namespace, "bob", BOB)
    state = redirect_params(to_bob)["state"]
    redemptions = code_redemptions(provider, client_id)
    twice(with_params(to_bob, state=state[:40] + ("A" if state[40] != "A" else "B") + state[41:]), 400, "InvalidState")
    bob = StateSealer(state_key.read_text().strip().encode()).open(state)
    foreign, _ = StateSealer(b"another-key-entirely-000").seal(bob.token, verifier=bob.verifier)
    twice(with_params(to_bob, state=foreign), 400, "InvalidState")

    # Expiry: the same sign-in (same token, same verifier, real code), sealed by the shared key
    # 11 minutes ago: only its age is wrong.
    old = StateSealer(state_key.read_text().strip().encode(), clock=lambda: bob.expires_at - 600 - 660)
    expired, _ = old.seal(bob.token, verifier=bob.verifier)
    twice(with_params(to_bob, state=expired), 400, "StateExpired")
    assert code_redemptions(provider, client_id) == redemptions, "a refused state reached the code exchange"
    assert grant_of(api, namespace, "bob") is None

    # Wrong account: signed in at the provider as someone else.
    url = AdminSession(replicas[1].admin_url).start_url(namespace, "alice")
    as_mallory = sign_in(url, MALLORY, verify=provider.ca_pem_path)
    assert_refused(browser_get(as_mallory), 403, "AccountMismatch")
    assert grant_of(api, namespace, "alice") is None

    # Replay: the sign-in completes once; both replicas refuse it again without spending the code.
    to_alice = start_sign_in(provider, replicas[1], namespace, "alice", ALICE)
    assert browser_get(to_alice).status_code == 200
    wait_for(lambda: (c := api.condition(namespace, "alice", "Ready")) and c["status"] == "True", 30, what="Ready")
    grant = grant_of(api, namespace, "alice")
    redemptions = code_redemptions(provider, client_id)
    twice(to_alice, 400, "AlreadyUsed")
    assert code_redemptions(provider, client_id) == redemptions
    assert grant_of(api, namespace, "alice")["data"] == grant["data"]

    # The refusals above consumed nothing: bob's genuine sign-in still completes, exactly once,
    # even when the browser's request reaches both replicas at the same moment.
    with ThreadPoolExecutor(2) as pool:
        both = list(pool.map(browser_get, [f"{r.public_url}/callback?{urlsplit(to_bob).query}" for r in replicas]))
    statuses = sorted(a.status_code for a in both)
    assert statuses[0] == 200 and statuses[1] in (400, 502), [(a.status_code, a.text[-600:]) for a in both]
    assert grant_of(api, namespace, "bob") is not None

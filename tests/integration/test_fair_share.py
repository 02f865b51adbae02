"""Issue #15: one tenant's hanging token endpoint must not stall refreshes in other namespaces.

The real operator (``--concurrency 4 --provider-timeout 5``) serves two namespaces on kmock.
In "slow", 24 app-only tokens name a ``tokenUrl`` whose HTTPS endpoint drips its answer a
byte at a time, so every refresh there holds a step slot until the 5 s deadline: 24 of them
are 30 s of work for four slots, and their retries come back within seconds. In "healthy",
tokens from the local provider live 20 s and are refreshed 10 s before expiry. Handed out
by due time alone, the healthy refreshes queued behind the whole slow backlog and their
Secrets expired; with a fair share per namespace each waits at most for one slot to free.
"""

from __future__ import annotations

import select
import ssl
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trustme

from emailtoken.timefmt import parse_rfc3339
from emailtoken_dev.devprovider import DevProviderThread
from tests.support.kube import ApiClient, KmockThread, wait_for
from tests.support.operator_process import OperatorProcess
from tests.support.tokens import client_credentials

CONCURRENCY = 4
DEADLINE = 5.0  # --provider-timeout
SLOW_TOKENS = 24  # six times the slots
LIFETIME = 20  # healthy access tokens; refreshed 10 s before expiry
OBSERVE = 30.0


class Dripping(ThreadingHTTPServer):
    """An OpenID-looking HTTPS endpoint whose token POST answers one byte every 0.2 s, forever.

    It counts the token requests it holds open (a request ends when the client hangs up), so
    the test can see how many step slots the slow namespace holds.
    """

    daemon_threads = True

    def __init__(self, ca: trustme.CA) -> None:
        self.clients: list[str] = []
        self.open = 0
        self.most_open = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # msal's discovery: answered at once
                root = f"https://127.0.0.1:{outer.server_address[1]}/{self.path.split('/')[1]}"
                body = (
                    f'{{"token_endpoint": "{root}/oauth2/v2.0/token",'
                    f' "authorization_endpoint": "{root}/oauth2/v2.0/authorize", "issuer": "{root}/v2.0"}}'
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _huge(self) -> None:
                """A 600 MiB JSON-looking answer without Content-Length (the client cannot refuse it by header)."""
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                chunk = b" " * 65536
                for _ in range(600 * 16):
                    self.wfile.write(chunk)

            def do_POST(self) -> None:
                form = urllib.parse.parse_qs(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())
                with outer._lock:
                    outer.clients.append(form.get("client_id", ["?"])[0])
                    outer.open += 1
                    outer.most_open = max(outer.most_open, outer.open)
                try:
                    if self.path.startswith("/huge/"):
                        outer.huge += 1
                        self._huge()
                        return
                    self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                    for _ in range(600):  # two minutes at most
                        self.wfile.write(b"X")
                        self.wfile.flush()
                        readable, _, _ = select.select([self.connection], [], [], 0.2)
                        if readable and not self.connection.recv(1):
                            return  # the client hung up
                except OSError:
                    return
                finally:
                    with outer._lock:
                        outer.open -= 1
                    self.close_connection = True

        super().__init__(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert("127.0.0.1").configure_cert(context)
        self.socket = context.wrap_socket(self.socket, server_side=True)

    huge = 0

    def token_url(self, tenant: str) -> str:
        return f"https://127.0.0.1:{self.server_address[1]}/{tenant}/oauth2/v2.0/token"


@pytest.fixture(scope="module")
def dripping(ca: trustme.CA) -> Iterator[Dripping]:
    server = Dripping(ca)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def ca_bundle(provider: DevProviderThread, ca: trustme.CA, workdir: Path) -> str:
    """The operator trusts one bundle: the local provider's CA and the dripping endpoint's."""
    assert provider.ca_pem_path
    path = workdir / "providers-ca.pem"
    path.write_bytes(Path(provider.ca_pem_path).read_bytes() + ca.cert_pem.bytes())
    return str(path)


@pytest.fixture(scope="module")
def small_operator(kube: KmockThread, ca_bundle: str, workdir: Path) -> Iterator[OperatorProcess]:
    """Four slots and a 5 s provider deadline, so a few hanging tokens fill every slot."""
    op = OperatorProcess(
        kube.kubeconfig,
        workdir,
        ca_bundle=ca_bundle,
        extra_args=["--concurrency", str(CONCURRENCY), "--provider-timeout", str(DEADLINE)],
        name="fair-share-operator",
    ).start()
    op.wait_log("emailtoken operator started")
    yield op
    op.stop()


@dataclass
class Watch:
    """What the test saw of one healthy token while the slow namespace was stuck."""

    last: str | None = None
    planned: datetime | None = None
    lateness: list[float] = field(default_factory=list)
    #: how long past its promised time a refresh was still awaited when the watch ended
    overdue: float = 0.0
    expired_for: float = 0.0


def observe(api: ApiClient, namespace: str, names: list[str], seconds: float) -> dict[str, Watch]:
    """Poll the healthy tokens: each refresh's start against the nextRefreshTime status promised,
    and any moment a consumer Secret held an expired access token."""
    watches = {name: Watch() for name in names}
    deadline = time.monotonic() + seconds
    previous = time.monotonic()
    while time.monotonic() < deadline:
        tokens = {t["metadata"]["name"]: t.get("status") or {} for t in api.list("emailtokens", namespace)}
        secrets = {name: api.secret_data(namespace, name) or {} for name in names}
        now, tick = datetime.now(UTC), time.monotonic()
        for name, watch in watches.items():
            status = tokens.get(name, {})
            last, planned = status.get("lastRefreshTime"), status.get("nextRefreshTime")
            if watch.last is not None and last != watch.last and watch.planned is not None:
                watch.lateness.append((parse_rfc3339(last) - watch.planned).total_seconds())
            watch.last = last
            watch.planned = parse_rfc3339(planned) if planned else None
            expires = secrets[name].get("expires_at")
            if expires and parse_rfc3339(expires) <= now:
                watch.expired_for += tick - previous
        previous = tick
        time.sleep(0.25)
    for watch in watches.values():
        if watch.planned is not None:
            watch.overdue = max(0.0, (datetime.now(UTC) - watch.planned).total_seconds())
    return watches


def test_a_hanging_namespace_does_not_stall_the_others(
    small_operator: OperatorProcess, api: ApiClient, provider: DevProviderThread, dripping: Dripping
) -> None:
    suffix = uuid.uuid4().hex[:6]
    healthy, slow = f"healthy-{suffix}", f"slow-{suffix}"
    client_id = f"app-{suffix}"
    provider.add_client(client_id, "healthy-secret")
    provider.token_lifetime = LIFETIME
    api.create_secret(healthy, "app-secret", {"client_secret": "healthy-secret"})
    names = [f"box-{i}" for i in range(3)]
    for name in names:
        api.create(
            "emailtokens",
            healthy,
            client_credentials(provider, name, client_id=client_id, mailbox=f"{name}@contoso.com", refreshBefore="10s"),
        )
    for name in names:
        wait_for(lambda name=name: (api.condition(healthy, name, "Ready") or {}).get("status") == "True", 30)

    api.create_secret(slow, "app-secret", {"client_secret": "whatever"})
    for i in range(SLOW_TOKENS):
        token = client_credentials(provider, f"stuck-{i:02d}", client_id=f"stuck-{i:02d}", mailbox=f"s{i}@contoso.com")
        token["spec"]["tokenUrl"] = dripping.token_url("contoso")
        api.create("emailtokens", slow, token)
    wait_for(lambda: dripping.open >= CONCURRENCY, 15, what="the slow namespace holding every slot")

    watches = observe(api, healthy, names, OBSERVE)

    lateness = [x for w in watches.values() for x in w.lateness]
    overdue = max(w.overdue for w in watches.values())
    expired = {name: round(w.expired_for, 1) for name, w in watches.items() if w.expired_for}
    print(
        f"\nhealthy refreshes: {len(lateness)}, lateness max {max(lateness, default=0):.0f} s,"
        f" mean {sum(lateness) / max(len(lateness), 1):.1f} s (1 s resolution), still awaited at the end:"
        f" {overdue:.0f} s overdue; expired Secrets (s): {expired or 'none'};"
        f" slow token requests: {len(dripping.clients)} from {len(set(dripping.clients))} tokens,"
        f" at most {dripping.most_open} open at once"
    )
    # The slow namespace really was stuck, and alone it may use every slot.
    assert dripping.most_open == CONCURRENCY
    assert all(
        (api.condition(slow, f"stuck-{i:02d}", "Ready") or {}).get("status") != "True" for i in range(SLOW_TOKENS)
    )
    # It kept the slots the healthy namespace did not need (4 slots for 30 s are 24 attempts).
    assert len(dripping.clients) >= 16
    # Meanwhile every healthy token was refreshed on time, again and again.
    assert all(len(w.lateness) >= 2 for w in watches.values()), {n: w.lateness for n, w in watches.items()}
    assert max([*lateness, overdue]) <= DEADLINE + 2, lateness  # a slot frees within a deadline; 1 s resolution
    assert not expired


def rss_mib(op: OperatorProcess) -> tuple[float, float]:
    """(VmRSS, VmHWM) of the operator process in MiB, from /proc."""
    assert op.proc is not None
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{op.proc.pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def test_huge_answers_do_not_grow_the_operator(
    small_operator: OperatorProcess, api: ApiClient, provider: DevProviderThread, dripping: Dripping
) -> None:
    """600 MiB answers (a 3.2 GiB operator once) are cut at 1 MiB: peak memory moves by a few MiB."""
    namespace = f"huge-{uuid.uuid4().hex[:6]}"
    _, peak_before = rss_mib(small_operator)
    api.create_secret(namespace, "app-secret", {"client_secret": "whatever"})
    for i in range(4):
        token = client_credentials(provider, f"huge-{i}", client_id=f"huge-{i}", mailbox=f"h{i}@contoso.com")
        token["spec"]["tokenUrl"] = dripping.token_url("huge")
        api.create("emailtokens", namespace, token)
    wait_for(lambda: dripping.huge >= 8, 60, what="eight huge answers sent")
    wait_for(
        lambda: "larger than 1048576 bytes" in (api.condition(namespace, "huge-0", "Ready") or {}).get("message", ""),
        30,
    )
    rss, peak = rss_mib(small_operator)
    print(f"\noperator peak RSS {peak_before:.0f} -> {peak:.0f} MiB (now {rss:.0f} MiB), {dripping.huge} huge answers")
    assert peak - peak_before < 40, (peak_before, peak)

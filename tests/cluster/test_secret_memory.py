"""Issues #15 and #20: Secrets the operator does not need cost it no memory.

150 unrelated Secrets of ~800 KiB (Helm release records are that size) took the operator from
69 to 325 MiB: it listed and watched every Secret of its namespaces with full bodies, and glibc
keeps the heap that parsed pages of them once took. Here, on a real API server, such Secrets
appear next to a few Ready tokens while the operator runs, and again across a restart (the
initial list, where a page held them all): the operator's resident and peak memory stay within
10 MiB of what it had before they existed (issue #20's target, also for 2,000 Secrets of 20 KiB),
the tokens keep refreshing, and a fixed client secret still wakes a failing token at once.

Measured on a 2-core machine (VmRSS/VmHWM, MiB): the code that followed full bodies went from
107.5/107.5 to 170.7/341.2 after a restart next to 150 x 800 KiB, and from 107.4/107.4 to
171.1/302.2 next to 200 x 500 KiB (while it ran, each watch event was parsed on its own: +5 MiB
at most); following metadata, all four stay under 1 MiB above the baseline.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from emailtoken.timefmt import parse_rfc3339
from emailtoken_dev.devprovider import DevProviderThread
from tests.support.cluster import ControlPlane
from tests.support.faultkit import annotate, condition, is_ready, status
from tests.support.kube import ApiClient, wait_for
from tests.support.operator_process import OperatorProcess
from tests.support.tokens import client_credentials

TOKENS = 4
#: (how many, raw bytes each): base64 makes them ~800 KiB (issue #15), ~500 KiB and ~20 KiB
#: (issue #20) in every list page and watch event
CASES = [(150, 600 * 1024), (200, 375 * 1024), (2000, 15 * 1024)]
#: access tokens refreshed about every 6 s, so each token refreshes during the test
LIFETIME = 12
#: What the operator may grow by (resident and peak; issue #20's target); parsing the unrelated
#: Secrets' bodies cost it 63 MiB resident and 195-234 MiB peak (see above).
BOUND_MIB = 10
#: invalid_client retries after 1 minute unless the Secret's change wakes the token
WAKE_BOUND = 5.0


@pytest.fixture(autouse=True)
def _short_tokens(provider: DevProviderThread) -> Iterator[None]:
    provider.token_lifetime = LIFETIME
    yield
    provider.token_lifetime = 3600


def memory(op: OperatorProcess) -> dict[str, float]:
    """The operator process's resident (VmRSS) and peak resident (VmHWM) memory, in MiB."""
    assert op.proc is not None
    fields: dict[str, float] = {}
    with open(f"/proc/{op.proc.pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
    return fields


def refreshed_since(admin: ApiClient, namespace: str, names: list[str], since: float) -> bool:
    """Every token was refreshed after ``since`` (epoch seconds) and is Ready."""
    for name in names:
        last = status(admin, namespace, name).get("lastRefreshTime")
        if not last or parse_rfc3339(last).timestamp() < since or not is_ready(admin, namespace, name):
            return False
    return True


def create_unrelated(cluster: ControlPlane, namespace: str, count: int, size: int) -> None:
    """Helm-release-like Secrets, created 8 at a time."""
    payload = base64.b64encode(os.urandom(size)).decode()

    def create(i: int) -> None:
        session = cluster.session()
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "helm.sh/release.v1",
            "metadata": {"name": f"sh.helm.release.v1.app-{i}.v1", "labels": {"owner": "helm", "name": f"app-{i}"}},
            "data": {"release": payload},
        }
        session.post(f"{cluster.url}/api/v1/namespaces/{namespace}/secrets", json=body, timeout=30).raise_for_status()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(count)))


@pytest.mark.parametrize(("count", "size"), CASES, ids=["150x800KiB", "200x500KiB", "2000x20KiB"])
def test_unrelated_large_secrets_cost_the_operator_no_memory(
    count: int,
    size: int,
    cluster: ControlPlane,
    admin: ApiClient,
    provider: DevProviderThread,
    namespace: str,
    start_operator: Callable[..., OperatorProcess],
) -> None:
    client_id = f"app-{namespace}"
    provider.add_client(client_id, "s3cret-1", mailboxes=["shared@contoso.com"])
    admin.create_secret(namespace, "app-secret", {"client_secret": "s3cret-1"})
    op = start_operator([namespace])
    names = [f"box-{i}" for i in range(TOKENS)]
    for name in names:
        admin.create(
            "emailtokens",
            namespace,
            client_credentials(provider, name, client_id=client_id, mailbox="shared@contoso.com"),
        )
    wait_for(lambda: all(is_ready(admin, namespace, n) for n in names), 30, what="tokens Ready")
    # A refresh after Ready: the baseline includes a token's whole cycle.
    ready = time.time()
    wait_for(lambda: refreshed_since(admin, namespace, names, ready), 20, what="a first refresh")
    base = memory(op)

    create_unrelated(cluster, namespace, count, size)
    created = time.time()
    # The running operator's watch has carried them; every token refreshed since.
    wait_for(lambda: refreshed_since(admin, namespace, names, created), 20, what="refreshes after the Secrets")
    running = memory(op)

    # A restart lists every Secret of the namespace.
    op.stop()
    restarted = start_operator([namespace], name="restarted")
    back = time.time()
    wait_for(lambda: refreshed_since(admin, namespace, names, back), 20, what="refreshes by the restarted operator")
    after_restart = memory(restarted)

    print(
        f"\nMiB (VmRSS/VmHWM): baseline {base['VmRSS']:.1f}/{base['VmHWM']:.1f}; "
        f"with {count} Secrets of {size * 4 // 3 // 1024} KiB, running "
        f"{running['VmRSS']:.1f}/{running['VmHWM']:.1f}; restarted {after_restart['VmRSS']:.1f}/"
        f"{after_restart['VmHWM']:.1f}"
    )
    for label, now in (("while running", running), ("after a restart", after_restart)):
        for field in ("VmRSS", "VmHWM"):
            assert now[field] - base[field] <= BOUND_MIB, (
                f"{field} {label}: {now[field]:.1f} MiB, baseline {base[field]:.1f}"
            )

    # A wrong client secret fails the next refresh; fixing the Secret wakes the token at once.
    wrong = base64.b64encode(b"wrong-secret").decode()
    admin.patch("secrets", namespace, "app-secret", {"data": {"client_secret": wrong}})
    annotate(admin, namespace, names[0], "emailtoken.io/refresh-now", "wrong")
    wait_for(
        lambda: condition(admin, namespace, names[0], "Authorized").get("reason") == "InvalidClient",
        15,
        what="InvalidClient",
    )
    fixed = time.monotonic()
    admin.patch("secrets", namespace, "app-secret", {"data": {"client_secret": base64.b64encode(b"s3cret-1").decode()}})
    wait_for(
        lambda: condition(admin, namespace, names[0], "Authorized").get("status") == "True",
        WAKE_BOUND + 5,
        interval=0.05,
        what="Authorized again",
    )
    woke = time.monotonic() - fixed
    print(f"fixed client secret: Authorized again after {woke:.2f} s")
    assert woke <= WAKE_BOUND
    # The API server answered every metadata-only and label-selected list and watch as asked.
    for process in (op, restarted):
        assert "Secret watch (" not in process.log, process.log[-3000:]

"""A restarted operator reads what each consumer Secret holds from one list, not a GET per token.

The bodies of the operator's own Secrets are listed once at start (not watched, issue #20);
a listed copy stands in for a GET only while the metadata watch knows the same
resourceVersion. Counted here by the real API server's own metrics
(``apiserver_request_total``, single-object GETs of Secrets): the restarted process makes one
GET (the shared client Secret, which it reads once and keeps) for six tokens, and none
refreshes before it is due.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import requests

from emailtoken_dev.devprovider import DevProviderThread
from tests.support.cluster import ControlPlane
from tests.support.kube import ApiClient, wait_for
from tests.support.ports import free_port
from tests.support.tokens import client_credentials

TOKENS = 6
_GET_SECRET = re.compile(r"^apiserver_request_total\{([^}]*)\} (\S+)$", re.M)


def secret_gets(cluster: ControlPlane) -> float:
    """Single-object GETs of Secrets the API server has answered since it started (any client)."""
    text = cluster.session().get(cluster.url + "/metrics", timeout=10).text
    total = 0.0
    for labels, value in _GET_SECRET.findall(text):
        if 'resource="secrets"' in labels and 'verb="GET"' in labels and 'scope="resource"' in labels:
            total += float(value)
    return total


def tracked(port: int, namespace: str) -> int:
    """Tokens of ``namespace`` the operator process has stepped (its per-token Ready gauge exists)."""
    try:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except requests.RequestException:
        return 0
    return len(re.findall(rf'^emailtoken_token_ready\{{[^}}]*namespace="{namespace}"', text, re.M))


def test_a_restart_reads_consumer_secrets_from_the_list(
    cluster: ControlPlane, admin: ApiClient, provider: DevProviderThread, namespace: str, start_operator: Callable
) -> None:
    client_id = f"app-{namespace}"
    provider.add_client(client_id, "s3cret-1", mailboxes=["shared@contoso.com"])
    admin.create_secret(namespace, "app-secret", {"client_secret": "s3cret-1"})
    port = free_port()
    first = start_operator([namespace], extra_args=["--metrics-port", str(port)])
    for i in range(TOKENS):
        body = client_credentials(provider, f"box-{i}", client_id=client_id, mailbox="shared@contoso.com")
        admin.create("emailtokens", namespace, body)
    for i in range(TOKENS):
        wait_for(lambda i=i: (admin.condition(namespace, f"box-{i}", "Ready") or {}).get("status") == "True", 30)
    first.stop()
    held = {i: admin.secret_data(namespace, f"box-{i}") for i in range(TOKENS)}

    before = secret_gets(cluster)
    start_operator([namespace], extra_args=["--metrics-port", str(port)], name="restarted")
    wait_for(lambda: tracked(port, namespace) == TOKENS, 30, what="every token stepped after the restart")
    time.sleep(1)
    gets = secret_gets(cluster) - before
    assert gets <= 1, f"{gets:g} GETs of Secrets for {TOKENS} tokens: consumer Secrets were read one by one"
    assert {i: admin.secret_data(namespace, f"box-{i}") for i in range(TOKENS)} == held, "nothing refreshed early"

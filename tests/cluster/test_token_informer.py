"""emailtoken.informer's EmailToken stream on a real API server (issue #20: EmailTokens left kopf).

The operator follows EmailTokens with the same list-and-watch as Secrets: here the real API
server answers its paged list of the custom resource, namespaced and cluster-wide, and its
watch delivers a creation, a spec edit, a status write (the operator's own echo) and a
deletion, each once, with the body the server holds; tokens are listed only after Secrets.
Resuming after a dropped watch and relisting after 410 Gone are the stream logic shared with
Secrets (tests/integration/test_informer.py); the API server restart is in
test_control_plane_outage.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import kubernetes

from emailtoken.informer import Event, Informer
from emailtoken_dev.devprovider import DevProviderThread
from tests.support.cluster import ControlPlane
from tests.support.kube import ApiClient
from tests.support.tokens import client_credentials


class Tokens:
    """The informer's EmailToken callback: (type, namespace, name, resourceVersion, body) per event."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, str, dict[str, Any]]] = []
        self.threads: set[int] = set()
        self.informer: Informer | None = None
        #: per batch: had the Secret streams been listed when it came?
        self.after_secrets: list[bool] = []

    def __call__(self, batch: list[Event]) -> None:
        self.threads.add(threading.get_ident())
        assert self.informer is not None
        self.after_secrets.append(self.informer._secrets_listed.is_set())
        for kind, body in batch:
            meta = body["metadata"]
            self.events.append((kind, meta["namespace"], meta["name"], meta.get("resourceVersion", ""), body))

    def of(self, namespace: str, name: str) -> list[tuple[str, dict[str, Any]]]:
        return [(e[0], e[4]) for e in self.events if e[1:3] == (namespace, name)]


def configuration(cluster: ControlPlane) -> kubernetes.client.Configuration:
    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(cluster.admin_kubeconfig), client_configuration=config)
    return config


async def until(predicate: Callable[[], Any], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def test_tokens_are_listed_and_followed_on_a_real_api_server(
    cluster: ControlPlane, admin: ApiClient, provider: DevProviderThread, make_namespace: Callable[[str], str]
) -> None:
    served, other = make_namespace("inf"), make_namespace("inf-other")

    def token(name: str) -> dict[str, Any]:
        return client_credentials(provider, name, client_id=f"app-{name}", mailbox=f"{name}@contoso.com")

    for i in range(7):  # more than a page of 3: the list is paged
        admin.create("emailtokens", served, token(f"before-{i}"))
    admin.create("emailtokens", other, token("elsewhere"))

    async def main() -> tuple[Tokens, Tokens]:
        namespaced, everywhere = Tokens(), Tokens()
        secrets: list[Event] = []
        one = Informer(
            secrets.extend, tokens=namespaced, namespaces=[served], configuration=configuration(cluster), page=3
        )
        every = Informer(secrets.extend, tokens=everywhere, configuration=configuration(cluster), page=3)
        namespaced.informer, everywhere.informer = one, every
        loop = asyncio.get_running_loop()
        one.start(loop)
        every.start(loop)
        try:
            await asyncio.wait_for(asyncio.gather(one.synced.wait(), every.synced.wait()), 15)
            await until(lambda: len(namespaced.events) == 7, "the listed tokens")
            assert {e[0] for e in namespaced.events} == {"ADDED"}
            await asyncio.to_thread(admin.create, "emailtokens", served, token("after"))
            await until(lambda: namespaced.of(served, "after"), "the created token")
            await asyncio.to_thread(
                admin.patch, "emailtokens", served, "after", {"spec": {"emailAddress": "new@contoso.com"}}
            )
            await until(lambda: len(namespaced.of(served, "after")) == 2, "the spec edit")
            status = {"status": {"phase": "Ready", "secretName": "after"}}
            await asyncio.to_thread(admin.patch, "emailtokens", served, "after/status", status)
            await until(lambda: len(namespaced.of(served, "after")) == 3, "the status write")
            await asyncio.to_thread(admin.delete, "emailtokens", served, "after")
            await until(lambda: len(namespaced.of(served, "after")) == 4, "the deletion")
            await until(lambda: len(everywhere.of(served, "after")) == 4, "the cluster-wide watch")
        finally:
            await asyncio.gather(asyncio.to_thread(one.stop), asyncio.to_thread(every.stop))
        return namespaced, everywhere

    namespaced, everywhere = asyncio.run(main())
    after = namespaced.of(served, "after")
    assert [kind for kind, _ in after] == ["ADDED", "MODIFIED", "MODIFIED", "DELETED"]
    assert after[1][1]["spec"]["emailAddress"] == "new@contoso.com", "the watch carries the whole object"
    assert after[2][1]["status"]["phase"] == "Ready"
    assert all(body["kind"] == "EmailToken" for _, body in after)
    assert {e[1] for e in namespaced.events} == {served}, "a namespaced informer sees only its namespace"
    assert everywhere.of(other, "elsewhere") and len(everywhere.of(served, "before-6")) == 1
    assert namespaced.threads == everywhere.threads == {threading.main_thread().ident}, "callbacks run on the loop"
    # Tokens are listed once the Secret streams have been: a restart's first steps find their
    # consumer Secrets in the watch instead of a GET each.
    assert all(namespaced.after_secrets) and all(everywhere.after_secrets)

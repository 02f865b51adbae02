"""emailtoken.informer over HTTP: against kmock, and against a scripted API server for the
cases kmock cannot produce (pages, bookmarks, a dropped watch, 410 Gone, a failing watch,
what each request asks for). That a real API server answers the metadata-only requests and
the label selector as asked is proven in tests/cluster/test_secret_memory.py.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp.web
import kubernetes
import pytest

from emailtoken.informer import Event, Informer
from tests.support.kube import ApiClient, KmockThread

OURS = {"app.kubernetes.io/managed-by": "emailtoken-operator"}


class Collector:
    """The informer's callback: every event as (type, namespace, name, data)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, dict[str, Any]]] = []
        self.batches = 0
        self.thread_ids: set[int] = set()

    def __call__(self, batch: list[Event]) -> None:
        self.batches += 1
        self.thread_ids.add(threading.get_ident())
        for kind, secret in batch:
            meta = secret["metadata"]
            self.events.append((kind, meta["namespace"], meta["name"], secret.get("data") or {}))

    def seen(self, kind: str, namespace: str, name: str) -> bool:
        return any(e[:3] == (kind, namespace, name) for e in self.events)


def config_for(url: str) -> kubernetes.client.Configuration:
    return kubernetes.client.Configuration(host=url)


async def until(predicate: Callable[[], Any], timeout: float = 10, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture(scope="module")
def api(kube: KmockThread) -> ApiClient:
    return ApiClient(kube.url)


def test_lists_then_follows_adds_changes_and_deletes(kube: KmockThread, api: ApiClient, namespace: str) -> None:
    api.create_secret(namespace, "before", {"k": "1"})
    api.create_secret(namespace, "other", {"k": "1"})

    own = Collector()

    async def main() -> Collector:
        seen = Collector()
        informer = Informer(seen, own=own, configuration=config_for(kube.url), timeout=30)
        assert informer.exists(namespace, "before") is None, "not listed yet: no answer"
        informer.start(asyncio.get_running_loop())
        try:
            await asyncio.wait_for(informer.synced.wait(), 10)
            await until(lambda: seen.seen("ADDED", namespace, "before"), what="the listed Secret")
            assert informer.exists(namespace, "before") is True
            assert informer.exists(namespace, "after") is False
            assert informer.version(namespace, "after") is None
            created = await asyncio.to_thread(api.create_secret, namespace, "after", {"k": "2"}, labels=OURS)
            await until(lambda: seen.seen("ADDED", namespace, "after"), what="the created Secret")
            assert informer.exists(namespace, "after") is True
            assert informer.version(namespace, "after") == created["metadata"]["resourceVersion"]
            patched = await asyncio.to_thread(api.patch, "secrets", namespace, "after", {"data": {"k": "Mw=="}})
            await until(lambda: seen.seen("MODIFIED", namespace, "after"), what="the change")
            assert informer.version(namespace, "after") == patched["metadata"]["resourceVersion"]
            await asyncio.to_thread(api.delete, "secrets", namespace, "before")
            await until(lambda: seen.seen("DELETED", namespace, "before"), what="the deletion")
            assert informer.exists(namespace, "before") is False
            assert informer.version(namespace, "before") is None
            assert informer.version(namespace, "other") == "", "a version is kept only for the operator's own"
        finally:
            started = time.monotonic()
            await asyncio.to_thread(informer.stop)
            assert time.monotonic() - started < 3, "stop() must not wait for the watch to time out"
        return seen

    seen = asyncio.run(main())
    assert seen.seen("MODIFIED", namespace, "after")
    assert all(e[3] == {} for e in seen.events), "the metadata stream passes no data on, though kmock sent it"
    # kmock ignores the label selector, so the bodies list has them all (the handler filters by label);
    # the bodies are listed once, not watched.
    listed = [e for e in own.events if e[1] == namespace]
    assert [e[:3] for e in listed] == [("ADDED", namespace, "before"), ("ADDED", namespace, "other")]
    assert listed[0][3] == {"k": "MQ=="}, "the bodies stream gets the Secret as the server sent it"
    assert seen.thread_ids | own.thread_ids == {threading.main_thread().ident}, "callbacks run on the loop's thread"


def test_namespaced_informer_sees_only_its_namespaces(kube: KmockThread, api: ApiClient, namespace: str) -> None:
    other = namespace + "-other"

    async def main() -> Collector:
        seen = Collector()
        informer = Informer(seen, namespaces=[namespace], configuration=config_for(kube.url), timeout=30)
        informer.start(asyncio.get_running_loop())
        try:
            await asyncio.wait_for(informer.synced.wait(), 10)
            await asyncio.to_thread(api.create_secret, other, "elsewhere", {"k": "1"})
            await asyncio.to_thread(api.create_secret, namespace, "here", {"k": "1"})
            await until(lambda: seen.seen("ADDED", namespace, "here"), what="the Secret in the served namespace")
            assert informer.exists(namespace, "here") is True
            assert informer.exists(other, "elsewhere") is None, "a namespace it does not watch: no answer"
        finally:
            await asyncio.to_thread(informer.stop)
        return seen

    seen = asyncio.run(main())
    assert {e[1] for e in seen.events} == {namespace}


def test_many_namespaces_share_no_connection_pool_slot(
    kube: KmockThread, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Two watches per namespace, more than the client's default pool (5 per core): every watch
    keeps its connection, and urllib3 does not warn that it discards some."""
    count = kubernetes.client.Configuration().connection_pool_maxsize // 2 + 2
    caplog.set_level(logging.WARNING)

    async def main() -> None:
        namespaces = [f"{namespace}-{i}" for i in range(count)]
        informer = Informer(
            Collector(), own=Collector(), namespaces=namespaces, configuration=config_for(kube.url), timeout=1
        )
        informer.start(asyncio.get_running_loop())
        try:
            await asyncio.wait_for(informer.synced.wait(), 10)
            await asyncio.sleep(3)  # a few watch cycles: each connection goes back to the pool
        finally:
            await asyncio.to_thread(informer.stop)

    asyncio.run(main())
    assert not [r.getMessage() for r in caplog.records if r.name.startswith("urllib3")]


# --------------------------------------------------------------------------- scripted API server


def secret(name: str, version: str, value: str = "djE=") -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": name, "resourceVersion": version}, "data": {"k": value}}


Script = list[Callable[[aiohttp.web.Request], Any]]


class ScriptedApi:
    """Answers list and watch requests for /api/v1/secrets from a script, recording each request.

    Requests with a label selector (the informer's stream of its own Secrets) are answered from
    ``own`` and recorded in ``own_requests``; the others from ``script``.
    """

    def __init__(self, script: Script, own: Script | None = None) -> None:
        self.script = script
        self.own = own or []
        self.requests: list[dict[str, str]] = []
        self.accept: list[str] = []
        self.own_requests: list[dict[str, str]] = []
        self.own_accept: list[str] = []
        self.times: list[float] = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.release = asyncio.Event()
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.url = ""

    def __enter__(self) -> ScriptedApi:
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.release.set)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = aiohttp.web.Application()
        app.router.add_get("/api/v1/secrets", self._handle)
        runner = aiohttp.web.AppRunner(app)
        self.loop.run_until_complete(runner.setup())
        site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(runner.cleanup())
        self.loop.close()

    async def _handle(self, request: aiohttp.web.Request) -> Any:
        script = self.script
        if "labelSelector" in request.query:
            script = self.own
            self.own_requests.append(dict(request.query))
            self.own_accept.append(request.headers.get("Accept", ""))
        else:
            self.requests.append(dict(request.query))
            self.accept.append(request.headers.get("Accept", ""))
            self.times.append(time.monotonic())
        if not script:
            # An idle watch, open until the test ends: headers first, as an API server sends them.
            response = aiohttp.web.StreamResponse()
            await response.prepare(request)
            await self.release.wait()
            return response
        return await script.pop(0)(request)


def secret_event(name: str, version: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    obj = secret(name, version)
    obj["metadata"]["labels"] = labels or {}
    return {"type": "MODIFIED", "object": obj}


def listing(items: list[dict[str, Any]], version: str, more: str = "") -> Callable[..., Any]:
    async def answer(request: aiohttp.web.Request) -> Any:
        assert request.query.get("watch") in (None, "false")
        return aiohttp.web.json_response({"items": items, "metadata": {"resourceVersion": version, "continue": more}})

    return answer


def watching(*events: dict[str, Any]) -> Callable[..., Any]:
    async def answer(request: aiohttp.web.Request) -> Any:
        assert request.query.get("watch") == "true"
        response = aiohttp.web.StreamResponse()
        await response.prepare(request)
        for event in events:
            await response.write(json.dumps(event).encode() + b"\n")
        await response.write_eof()
        return response

    return answer


def failing(status: int, body: str) -> Callable[..., Any]:
    async def answer(request: aiohttp.web.Request) -> Any:
        return aiohttp.web.Response(status=status, text=body)

    return answer


def dropping() -> Callable[..., Any]:
    """The connection closed with no answer at all (a dying API server or proxy)."""

    async def answer(request: aiohttp.web.Request) -> Any:
        assert request.transport is not None
        request.transport.close()
        return aiohttp.web.Response(status=500)

    return answer


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedApi]]:
    servers: list[ScriptedApi] = []

    def make(script: Script, own: Script | None = None) -> ScriptedApi:
        server = ScriptedApi(script, own).__enter__()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.__exit__()


def test_pages_bookmarks_resume_gone_and_failures(
    scripted: Callable[..., ScriptedApi], caplog: pytest.LogCaptureFixture
) -> None:
    server = scripted(
        [
            listing([secret("a", "5")], "10", more="page-2"),
            listing([secret("b", "6")], "10"),
            watching(
                {"type": "MODIFIED", "object": secret("a", "11", "djI=")},
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}},
            ),
            failing(500, '{"message": "internal error quoting s3cr3t-body"}'),
            watching({"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}}),
            listing([secret("a", "11", "djI=")], "20"),
        ]
    )
    caplog.set_level(logging.WARNING, logger="emailtoken")

    async def main() -> Collector:
        seen = Collector()
        informer = Informer(seen, configuration=config_for(server.url), page=1, timeout=30)
        informer.start(asyncio.get_running_loop())
        try:
            await until(lambda: seen.seen("DELETED", "ns", "b"), timeout=15, what="b reported gone after 410")
            await until(lambda: len(server.requests) >= 7, what="the watch after the relist")
            assert (informer.exists("ns", "a"), informer.exists("ns", "b")) == (True, False)
        finally:
            await asyncio.to_thread(informer.stop)
        return seen

    seen = asyncio.run(main())
    assert [e[:3] for e in seen.events] == [
        ("ADDED", "ns", "a"),
        ("ADDED", "ns", "b"),
        ("MODIFIED", "ns", "a"),
        ("ADDED", "ns", "a"),  # the relist
        ("DELETED", "ns", "b"),  # gone while the watch was expired
    ]
    requests = server.requests
    assert requests[0]["limit"] == "1" and "continue" not in requests[0]
    assert requests[1]["continue"] == "page-2"
    assert requests[2]["watch"] == "true" and requests[2]["resourceVersion"] == "10"
    assert requests[2]["allowWatchBookmarks"] == "true"
    assert requests[3]["resourceVersion"] == "12", "a watch that ended resumes from the bookmark"
    assert requests[4]["resourceVersion"] == "12", "a failed watch is retried from the same version"
    assert "watch" not in requests[5], "410 Gone: list again"
    assert requests[6]["resourceVersion"] == "20"
    assert "HTTP 500" in caplog.text
    assert "s3cr3t" not in caplog.text, "an error body never reaches the log"
    # Metadata only, of every Secret: lists and watches ask for PartialObjectMetadata, nothing is filtered.
    assert all(e[3] == {} for e in seen.events), "no data passed on, though the server sent it"
    lists = [a for r, a in zip(requests, server.accept, strict=False) if r.get("watch") != "true"]
    watches = [a for r, a in zip(requests, server.accept, strict=False) if r.get("watch") == "true"]
    assert lists and all(
        a.startswith("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1") for a in lists
    )
    assert watches and all(
        a.startswith("application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1") for a in watches
    )
    assert not any("labelSelector" in r for r in requests) and not server.own_requests


def test_a_server_that_ends_every_watch_at_once_is_not_hammered(
    scripted: Callable[..., ScriptedApi],
) -> None:
    """An empty watch that ends at once (a proxy cutting streams) waits a second before the next."""
    server = scripted([listing([secret("a", "5")], "10"), watching(), watching(), watching()])

    async def main() -> None:
        informer = Informer(Collector(), configuration=config_for(server.url), timeout=30)
        informer.start(asyncio.get_running_loop())
        try:
            await until(lambda: len(server.requests) >= 5, timeout=15, what="the fourth watch")
        finally:
            await asyncio.to_thread(informer.stop)

    asyncio.run(main())
    watches = server.times[1:5]
    gaps = [later - earlier for earlier, later in itertools.pairwise(watches)]
    assert all(gap >= 0.9 for gap in gaps), gaps
    assert all(r["resourceVersion"] == "10" for r in server.requests[1:5])


def test_own_secrets_come_with_their_bodies_and_only_they(scripted: Callable[..., ScriptedApi]) -> None:
    """The second stream asks for the operator's Secrets by label, as plain JSON, delivers them whole,
    and is listed once: never watched (its changes reach the metadata stream like any other)."""
    ours = secret("box", "5", "b3Vycw==")
    ours["metadata"]["labels"] = {"app.kubernetes.io/managed-by": "emailtoken-operator"}
    server = scripted(
        [listing([secret("box", "5"), secret("helm-release", "6")], "10"), watching(secret_event("box", "11", OURS))],
        own=[listing([ours], "10"), watching({"type": "MODIFIED", "object": {**ours, "data": {"k": "bmV3"}}})],
    )

    async def main() -> tuple[Collector, Collector]:
        seen, own = Collector(), Collector()
        informer = Informer(seen, own=own, configuration=config_for(server.url), timeout=30)
        informer.start(asyncio.get_running_loop())
        try:
            await asyncio.wait_for(informer.synced.wait(), 10)
            await until(lambda: seen.seen("MODIFIED", "ns", "box"), what="the change to our Secret")
            assert informer.exists("ns", "helm-release") is True, "existence comes from the metadata of all"
            assert informer.version("ns", "box") == "11"
            await asyncio.sleep(0.5)  # time for a watch of the bodies, if one were started
        finally:
            await asyncio.to_thread(informer.stop)
        return seen, own

    seen, own = asyncio.run(main())
    assert [e[:3] for e in seen.events] == [
        ("ADDED", "ns", "box"),
        ("ADDED", "ns", "helm-release"),
        ("MODIFIED", "ns", "box"),
    ]
    assert [(e[0], e[3]) for e in own.events] == [("ADDED", {"k": "b3Vycw=="})]
    assert {r["labelSelector"] for r in server.own_requests} == {"app.kubernetes.io/managed-by=emailtoken-operator"}
    assert [r.get("watch") for r in server.own_requests] == [None], "listed once, never watched"
    assert not any("PartialObjectMetadata" in a for a in server.own_accept)


def test_a_failing_api_server_is_retried_within_5_s_without_urllib3_retries(
    scripted: Callable[..., ScriptedApi], caplog: pytest.LogCaptureFixture
) -> None:
    """After an outage the watch is back within 5 s (it used to wait up to 30 s), and each attempt is
    one request: urllib3 neither retries on its own nor logs its own warnings."""
    server = scripted([dropping(), dropping(), dropping(), dropping(), listing([secret("a", "5")], "10")])
    caplog.set_level(logging.WARNING)

    async def main() -> None:
        informer = Informer(Collector(), configuration=config_for(server.url), timeout=30)
        informer.start(asyncio.get_running_loop())
        try:
            await asyncio.wait_for(informer.synced.wait(), 20)
            await until(lambda: len(server.requests) >= 6, what="the watch after the list")
        finally:
            await asyncio.to_thread(informer.stop)

    asyncio.run(main())
    gaps = [later - earlier for earlier, later in itertools.pairwise(server.times[:5])]
    assert len(gaps) == 4 and all(gap >= 0.9 for gap in gaps), gaps  # one request per attempt
    assert max(gaps) <= 5.5, gaps  # 1, 2, 5, 5 s: the fourth failure no longer waits 10 s
    assert caplog.text.count("Secret watch (all namespaces, metadata) failed") == 4
    assert not [r for r in caplog.records if r.name.startswith("urllib3")], "urllib3 logged its own retries"

"""The benchmark's Kubernetes API: kmock in its own process, counting and recording at the server.

``python -m bench.kubeserver [--port P]`` prints one JSON line (``{"url": ..., "pid": ...}``)
when it accepts connections and serves until SIGTERM. Extra routes, never counted:

* ``GET /_bench/stats``: request counters ``{"subject": {"get secrets": 12, ...}, "harness": {...}}``
* ``GET /_bench/log?since=I``: the subject's requests from index I on, as
  ``[time, verb, resource, namespace, name]`` rows (verb: list/watch/get/create/patch/delete).
* ``GET /_bench/tracks``: what was written, as the server stored it: for every consumer
  Secret each new ``expires_at`` (``[time, namespace, name, expires_at]``), for every
  EmailToken each new (nextRefreshTime, Ready) (``[time, namespace, name, next, ready]``);
  times are epoch seconds, the write's arrival at the server.
* ``GET /_bench/summary?since=T``: tokens seen, how many are Ready and when the last became
  Ready, the earliest nextRefreshTime, Secrets holding a token and how many were written at
  or after T.

Requests whose User-Agent starts with :data:`HARNESS_AGENT` are the benchmark's own
(creating tokens, sampling as a consumer); everything else is the subject under test (the
operator or the baseline), since only one of them runs at a time. Recording here instead
of watching from the harness keeps the harness from doubling the server's watch traffic.

Scale fixes to the emulator, none of which changes what a client sees:

* objects are found through a dict index instead of a scan over every stored object;
* each object keeps its latest version only, not its full history;
* served requests leave kmock's request history (kmock matches every new request
  against the whole history, so after 10,000 requests a GET took ~0.5 s);
* get/list/create/patch/delete are answered directly instead of through kmock's
  reaction DSL, and errors carry no server-side traceback (formatting one per 404
  cost more than the request).

A real API server does none of this work per request; without these fixes the
emulator, not the subject, would be what the benchmark measures at N = 5,000.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import itertools
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aiohttp.web
import kmock
from kmock._internal import aiobus, enums

from emailtoken_dev.localapi import _Emulator, register_resources

HARNESS_AGENT = "emailtoken-bench"
READ_VERBS = frozenset({"list", "watch", "get"})
WRITE_VERBS = frozenset({"create", "patch", "update", "delete"})
_VERBS = {
    enums.action.LIST: "list",
    enums.action.WATCH: "watch",
    enums.action.FETCH: "get",
    enums.action.CREATE: "create",
    enums.action.UPDATE: "patch",
    enums.action.DELETE: "delete",
}
_FAST = frozenset(
    {enums.action.LIST, enums.action.FETCH, enums.action.CREATE, enums.action.UPDATE, enums.action.DELETE}
)


#: Watch events kept for resuming watches (a real API server keeps a few minutes of them).
WATCH_HISTORY = 20_000
#: A real API server sends a BOOKMARK at least this often; kopf re-watches after 70 s of silence.
BOOKMARK_INTERVAL = 30.0
_SEQUENCE = itertools.count(1)
_LATEST = [0]


class _RecordingBus(aiobus.Bus):  # type: ignore[misc]
    """kmock's event bus, numbering every event with a global resourceVersion and keeping the last ones."""

    async def put(self, *items: Any) -> None:
        record = self.__dict__.setdefault("record", collections.deque(maxlen=WATCH_HISTORY))
        for item in items:
            seq = next(_SEQUENCE)
            _LATEST[0] = seq
            obj = item.get("object") if isinstance(item, dict) else None
            if isinstance(obj, dict):
                # The event's metadata is the stored version's own dict: the object carries it too.
                obj.setdefault("metadata", {})["resourceVersion"] = str(seq)
            record.append((seq, item))
        await super().put(*items)


def _seq(item: Any) -> int:
    try:
        return int(item["object"]["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return 0


async def _with_bookmarks(source: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """Pass a watch stream through, adding a BOOKMARK whenever it has been quiet for a while."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    done = object()

    async def pump() -> None:
        try:
            async for item in source:
                await queue.put(item)
        finally:
            await queue.put(done)

    task = asyncio.create_task(pump())
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), BOOKMARK_INTERVAL)
            except TimeoutError:
                item = {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": str(_LATEST[0])}}}
            if item is done:
                return
            yield item
    finally:
        task.cancel()


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class _FastDispatch(kmock.KubernetesScaffold):  # type: ignore[misc]
    """Sits between kmock's emulator (state changes) and its reaction DSL (responses)."""

    async def _handle(self, request: Any) -> aiohttp.web.StreamResponse:
        if request.resource is not None and request.resource.plural and request.action in _FAST:
            emulator: Any = self
            serve = {
                enums.action.LIST: emulator._serve_list,
                enums.action.FETCH: emulator._serve_fetch,
                enums.action.CREATE: emulator._serve_create,
                enums.action.UPDATE: emulator._serve_update,
                enums.action.DELETE: emulator._serve_delete,
            }[request.action]
            return aiohttp.web.json_response(await serve(request))
        return await super()._handle(request)


class CountingEmulator(_Emulator, _FastDispatch):  # type: ignore[misc]
    """kmock's emulator with request accounting, write tracking and the scale fixes."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._buses = collections.defaultdict(_RecordingBus)
        self.counters: dict[str, Counter[str]] = {"subject": Counter(), "harness": Counter()}
        self.log: list[tuple[float, str, str, str | None, str | None]] = []
        self.by_resource: dict[Any, dict[str | None, dict[str, Any]]] = {}
        self.secret_tracks: list[tuple[float, str, str, float]] = []
        self.token_tracks: list[tuple[float, str, str, float | None, bool]] = []
        self.secret_state: dict[tuple[str, str], tuple[float, float, float]] = {}  # first, last write, expiry
        self.token_state: dict[tuple[str, str], tuple[float | None, bool, float | None]] = {}  # plan, ready, since
        debug = os.environ.get("BENCH_KUBE_BODIES")  # a file for the bodies of the subject's writes (debugging)
        self.bodies = open(debug, "a") if debug else None

    # -- accounting ---------------------------------------------------------------------

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if raw_request.path.startswith("/_bench/"):
            return self._bench_route(raw_request)
        return await super().__call__(raw_request)

    def _bench_route(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        path, query = raw_request.path, raw_request.query
        if path == "/_bench/stats":
            return aiohttp.web.json_response({k: dict(v) for k, v in self.counters.items()})
        if path == "/_bench/log":
            return aiohttp.web.json_response(self.log[int(query.get("since", "0")) :])
        if path == "/_bench/tracks":
            return aiohttp.web.json_response({"secrets": self.secret_tracks, "tokens": self.token_tracks})
        if path == "/_bench/summary":
            return aiohttp.web.json_response(self._summary(float(query.get("since", "0"))))
        return aiohttp.web.json_response({"error": "unknown"}, status=404)

    def _summary(self, since: float) -> dict[str, Any]:
        ready = [s for _, r, s in self.token_state.values() if r]
        plans = [p for p, _, _ in self.token_state.values() if p is not None]
        fresh = [last for _, last, _ in self.secret_state.values() if last >= since]
        return {
            "tokens": len(self.token_state),
            "ready": len(ready),
            "last_ready": max((s for s in ready if s is not None), default=None),
            "min_plan": min(plans, default=None),
            "secrets": len(self.secret_state),
            "last_first_write": max((first for first, _, _ in self.secret_state.values()), default=None),
            "min_expiry": min((e for _, _, e in self.secret_state.values()), default=None),
            "written_since": len(fresh),
            "last_written_since": max(fresh, default=None),
        }

    def _account(self, request: Any) -> None:
        verb = _VERBS.get(request.action, str(request.method.value).lower())
        resource = (request.resource.plural if request.resource is not None else None) or "discovery"
        if request.subresource:
            resource = f"{resource}/{request.subresource}"
        agent = request.headers.get("User-Agent", "")
        who = "harness" if agent.startswith(HARNESS_AGENT) else "subject"
        self.counters[who][f"{verb} {resource}"] += 1
        if who == "subject":
            name = request.name
            if name is None and isinstance(request.data, dict):
                name = (request.data.get("metadata") or {}).get("name")
                if request.resource is not None and request.resource.plural == "events":
                    name = (request.data.get("involvedObject") or {}).get("name")
            self.log.append((time.time(), verb, resource, request.namespace, name))
            if self.bodies is not None and verb in WRITE_VERBS:
                self.bodies.write(json.dumps([time.time(), verb, resource, request.namespace, name, request.data]))
                self.bodies.write("\n")

    async def _handle(self, request: Any) -> aiohttp.web.StreamResponse:
        self._account(request)
        try:
            return await super()._handle(request)
        finally:
            self._index(request)
            self._forget(request)

    def _forget(self, request: Any) -> None:
        """Drop a served request from kmock's request history (only requests in flight stay)."""
        for index in range(len(self._requests) - 1, -1, -1):
            if self._requests[index] is request:
                del self._requests[index]
                return

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        if isinstance(exc, kmock.KubernetesError):
            return aiohttp.web.json_response(
                {
                    "apiVersion": "v1",
                    "kind": "Status",
                    "metadata": {},
                    "code": exc.status,
                    "status": "Failure",
                    "reason": exc.reason or type(exc).__name__,
                    "message": exc.message or repr(exc),
                },
                status=exc.status,
            )
        return await super()._render_error(exc)

    # -- the index and the tracks -------------------------------------------------------------

    def _key(self, request: Any) -> tuple[Any, str | None, str | None]:
        namespace, name = request.namespace, request.name
        if request.action == enums.action.CREATE and isinstance(request.data, dict):
            meta = request.data.get("metadata") or {}
            namespace = namespace or meta.get("namespace")
            name = name or meta.get("name")
        return request.resource, namespace, name

    def _index(self, request: Any) -> None:
        if not (request.resource and request.resource.plural) or request.action not in (
            enums.action.CREATE,
            enums.action.UPDATE,
        ):
            return
        resource, namespace, name = key = self._key(request)
        obj = self._objects._objects.get(key)
        if obj is None or name is None:
            return
        self.by_resource.setdefault(resource, {}).setdefault(namespace, {})[name] = obj
        history = obj.history
        if len(history) > 2:
            del history[:-2]
        if not obj.deleted:
            self._track(resource.plural, namespace or "", name, obj.raw)

    def _track(self, plural: str, namespace: str, name: str, raw: dict[str, Any]) -> None:
        now = time.time()
        key = (namespace, name)
        if plural == "secrets":
            encoded = (raw.get("data") or {}).get("expires_at")
            if not encoded:
                return
            expires = _epoch(base64.b64decode(encoded).decode())
            first, _, previous = self.secret_state.get(key, (now, 0.0, None))
            if previous != expires:
                self.secret_tracks.append((now, namespace, name, expires))
                self.secret_state[key] = (first, now, expires)
        elif plural == "emailtokens":
            status = raw.get("status") or {}
            ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
            text = status.get("nextRefreshTime")
            plan = _epoch(text) if text else None
            old_plan, old_ready, since = self.token_state.get(key, (None, False, None))
            if ready and not old_ready:
                since = since or now
            if (plan, ready) != (old_plan, old_ready):
                self.token_tracks.append((now, namespace, name, plan, ready))
                self.token_state[key] = (plan, ready, since)

    def _lookup(self, request: Any) -> Any:
        obj = self._objects._objects.get(self._key(request))
        if obj is None:
            raise kmock.KubernetesObjectNotFoundError()
        return obj

    async def _serve_fetch(self, request: Any) -> Any:
        obj = self._lookup(request)
        if obj.deleted:
            raise kmock.KubernetesObjectNotFoundError()
        return obj.raw

    async def _serve_create(self, request: Any) -> Any:
        return self._lookup(request).raw

    async def _serve_update(self, request: Any) -> Any:
        return self._lookup(request).last.raw

    async def _serve_delete(self, request: Any) -> Any:
        return self._lookup(request).last.raw

    async def _serve_watch(self, request: Any) -> AsyncIterator[Any]:
        """kmock's watch, plus what a real API server does: resume after a resourceVersion, bookmarks.

        kmock answers every watch with all objects as ADDED: each re-watch (kopf re-watches
        after 70 s without an event) would make the operator process every object again.
        """
        since = str(request.params.get("resourceVersion") or "")
        record = self._buses[request.resource].__dict__.get("record") or ()
        oldest = record[0][0] if record else _LATEST[0] + 1
        source = (
            self._resume(request, int(since))
            if since.isdigit() and int(since) >= oldest - 1
            else super()._serve_watch(request)
        )
        async for item in _with_bookmarks(source):
            yield item

    async def _resume(self, request: Any, since: int) -> AsyncIterator[Any]:
        yield b""
        bus = self._buses[request.resource]
        marker = await bus.mark()
        try:
            last = since
            for seq, item in list(bus.__dict__.get("record") or ()):
                if seq > last and self._matches(request, item):
                    last = seq
                    yield item
            async for item in bus.stream(since=marker):
                if _seq(item) > last and self._matches(request, item):
                    yield item
        finally:
            await bus.unmark(marker)

    @staticmethod
    def _matches(request: Any, item: Any) -> bool:
        meta = (item.get("object") or {}).get("metadata") or {}
        return (request.namespace is None or meta.get("namespace") == request.namespace) and (
            request.name is None or meta.get("name") == request.name
        )

    async def _serve_list(self, request: Any) -> Any:
        by_namespace = self.by_resource.get(request.resource)
        if by_namespace is None:
            if request.resource not in self._get_resources():
                raise kmock.KubernetesResourceNotFoundError()
            by_namespace = {}
        if request.namespace is None:
            objects = [obj for names in list(by_namespace.values()) for obj in list(names.values())]
        else:
            objects = list(by_namespace.get(request.namespace, {}).values())
        objects = [obj for obj in objects if not obj.deleted]
        # Pagination (limit/continue) as the API server does it; kmock itself ignores both.
        start = int(request.params.get("continue") or 0)
        limit = int(request.params.get("limit") or 0) or len(objects)
        page = objects[start : start + limit]
        more = start + limit < len(objects)
        meta = {"resourceVersion": str(_LATEST[0]), "continue": str(start + limit) if more else ""}
        return {"metadata": meta, "items": [obj.raw for obj in page]}


async def serve(host: str, port: int) -> None:
    """Serve until SIGTERM/SIGINT; announce the URL on stdout."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with CountingEmulator() as emulator, kmock.Server(emulator, host=host, port=port or None) as server:
        register_resources(emulator)
        sys.stdout.write(json.dumps({"url": str(server.url).rstrip("/"), "pid": os.getpid()}) + "\n")
        sys.stdout.flush()
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    """Entry point."""
    p = argparse.ArgumentParser(prog="python -m bench.kubeserver", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args(argv)
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()

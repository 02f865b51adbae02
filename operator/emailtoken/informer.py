"""Follow the Secrets of the served namespaces with one paged list and one watch, outside kopf.

Why not ``@kopf.on.event("", "v1", "secrets")``: kopf gives every object it sees a worker
task, a queue and a Body, and runs its handler machinery per event. The Secret watch carries
as many objects as the token watch (each token has its consumer Secret): a third of the
events kopf processed were Secrets of which the operator needs a few fields (see
bench/README.md, "Profiles"). This informer parses each
event once, in its own thread, and hands batches of raw dicts to a callback on the event
loop. It does what client-go's reflector does: list in pages, watch from the list's
resourceVersion with bookmarks, resume after a dropped watch, list again on 410 Gone and
report the Secrets that disappeared meanwhile as deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("emailtoken")

#: ("ADDED" | "MODIFIED" | "DELETED", the Secret as the API server sent it)
Event = tuple[str, dict[str, Any]]
Deliver = Callable[[list[Event]], None]

_BACKOFF = (1, 2, 5, 10, 30)


class _Gone(Exception):
    """The resourceVersion (or continue token) is too old: list again."""


class SecretInformer:
    """List and watch Secrets in threads; deliver batches of events on the event loop.

    ``namespaces`` empty means all namespaces (one cluster-wide watch); otherwise one watch
    per namespace, as the operator's RBAC may be namespaced.
    """

    def __init__(
        self,
        deliver: Deliver,
        *,
        namespaces: Sequence[str] = (),
        api_client: kubernetes.client.ApiClient | None = None,
        page: int = 500,
        timeout: int = 300,
    ) -> None:
        # A client of its own: a watch holds its connection for minutes, which would take one
        # out of the pool the engine's calls are sized to.
        client = api_client or kubernetes.client.ApiClient(kubernetes.client.Configuration.get_default_copy())
        self._core = kubernetes.client.CoreV1Api(client)
        self._deliver = deliver
        self._namespaces: tuple[str | None, ...] = tuple(namespaces) or (None,)
        self._page = page
        self._timeout = timeout
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._open: set[Any] = set()
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._synced: set[str | None] = set()
        #: (namespace, name) of every Secret per scope, as of the last list and watch event
        self._known: dict[str | None, set[tuple[str, str]]] = {scope: set() for scope in self._namespaces}
        #: set (on the loop) once every namespace has been listed once
        self.synced = asyncio.Event()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start one thread per watched scope; events are delivered on ``loop``."""
        self._loop = loop
        for namespace in self._namespaces:
            thread = threading.Thread(
                target=self._run, args=(namespace,), name=f"emailtoken-secrets-{namespace or 'all'}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def stop(self, timeout: float = 5) -> None:
        """Stop the threads: close the open watches so that blocked reads return now."""
        self._stopping.set()
        with self._lock:
            responses = list(self._open)
        for response in responses:
            with contextlib.suppress(Exception):  # already closed: nothing to unblock
                response.shutdown()
        for thread in self._threads:
            thread.join(timeout)

    def exists(self, namespace: str, name: str) -> bool | None:
        """Whether the Secret exists as far as the watch has said; None before its scope's first list.

        Called on the event loop: a scope counts as listed once that list's events were
        delivered there. The answer may lag the API server by the watch's latency.
        """
        scope = None if self._namespaces == (None,) else namespace
        if scope not in self._synced:
            return None
        return (namespace, name) in self._known[scope]

    def _run(self, namespace: str | None) -> None:
        version: str | None = None
        failures = 0
        while not self._stopping.is_set():
            try:
                if version is None:
                    version = self._list(namespace)
                    self._post(self._listed, namespace)
                started = time.monotonic()
                version, lines = self._watch(namespace, version, self._known[namespace])
                failures = 0
                if not lines and time.monotonic() - started < 1:
                    # A watch that ended at once with nothing in it (a proxy cutting streams, say)
                    # must not turn into a request loop.
                    self._stopping.wait(1)
            except _Gone:
                version = None
            except Exception as exc:  # any failure: back off, then watch again
                if self._stopping.is_set():
                    return
                delay = _BACKOFF[min(failures, len(_BACKOFF) - 1)]
                failures += 1
                scope = namespace or "all namespaces"
                log.warning("Secret watch (%s) failed: %s; retrying in %d s", scope, _describe(exc), delay)
                self._stopping.wait(delay)

    def _listed(self, namespace: str | None) -> None:
        self._synced.add(namespace)
        if len(self._synced) == len(self._namespaces):
            self.synced.set()

    def _call(self, namespace: str | None, **kwargs: Any) -> Any:
        kwargs["_preload_content"] = False
        try:
            if namespace is None:
                return self._core.list_secret_for_all_namespaces(**kwargs)
            return self._core.list_namespaced_secret(namespace, **kwargs)
        except ApiException as exc:
            if exc.status == 410:
                raise _Gone from None
            raise

    def _list(self, namespace: str | None) -> str:
        """List every Secret in pages; deliver each page; report the ones gone since the last list."""
        listed: set[tuple[str, str]] = set()
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": self._page, "_request_timeout": 60}
            if token:
                kwargs["_continue"] = token
            body = json.loads(self._call(namespace, **kwargs).data)
            events: list[Event] = []
            for item in body.get("items") or ():
                metadata = item.setdefault("metadata", {})
                if namespace is not None:
                    metadata.setdefault("namespace", namespace)
                listed.add((metadata.get("namespace") or "", metadata.get("name") or ""))
                events.append(("ADDED", item))
            self._post(self._deliver, events)
            meta = body.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                break
        gone = [
            ("DELETED", {"metadata": {"namespace": ns, "name": name}})
            for ns, name in sorted(self._known[namespace] - listed)
        ]
        if gone:
            self._post(self._deliver, gone)
        self._known[namespace] = listed
        return str(meta.get("resourceVersion") or "")

    def _watch(self, namespace: str | None, version: str, known: set[tuple[str, str]]) -> tuple[str, int]:
        """Follow changes from ``version`` until the server ends the watch.

        Returns the last version seen and how many lines (events and bookmarks) arrived.
        """
        response = self._call(
            namespace,
            watch=True,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=self._timeout,
            _request_timeout=(30, self._timeout + 30),
        )
        with self._lock:
            self._open.add(response)
        count = 0
        try:
            for lines in _batches(response):
                if self._stopping.is_set():
                    break
                count += len(lines)
                events: list[Event] = []
                for line in lines:
                    event = json.loads(line)
                    kind = event.get("type")
                    obj = event.get("object") or {}
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            raise _Gone
                        raise RuntimeError(f"watch error {obj.get('code')}: {obj.get('reason')}")
                    metadata = obj.get("metadata") or {}
                    version = str(metadata.get("resourceVersion") or version)
                    if kind == "BOOKMARK":
                        continue
                    key = (metadata.get("namespace") or namespace or "", metadata.get("name") or "")
                    if kind == "DELETED":
                        known.discard(key)
                    else:
                        known.add(key)
                    events.append((kind, obj))
                if events:
                    self._post(self._deliver, events)
        finally:
            with self._lock:
                self._open.discard(response)
            response.release_conn()
        return version, count

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        if self._loop is None or self._stopping.is_set():
            return
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: the operator is gone without stopping us
            self._stopping.set()


def _batches(response: Any) -> Iterator[list[bytes]]:
    """The watch stream as lists of complete lines, one list per chunk that arrived."""
    pending = b""
    for chunk in response.stream(None, decode_content=False):
        pending += chunk
        if b"\n" not in pending:
            continue
        *lines, pending = pending.split(b"\n")
        complete = [line for line in lines if line.strip()]
        if complete:
            yield complete
    if pending.strip():
        yield [pending]


def _describe(exc: Exception) -> str:
    """Status and reason only: an API error body could quote the request."""
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    return type(exc).__name__

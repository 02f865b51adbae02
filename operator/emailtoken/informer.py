"""Follow the served namespaces' Secrets and EmailTokens with paged lists and watches, outside kopf.

Why not ``@kopf.on.event``: kopf gives every object it sees a worker task, a queue and a
Body, and runs its handler machinery per event. For Secrets that was a third of the events
kopf processed, of which the operator needs a few fields; for EmailTokens it was a quarter of
the operator's CPU per refresh, the echo of its own status write included (issue #20, see
bench/README.md). This informer parses each event once, in its own thread, and hands batches
of raw dicts to a callback on the event loop. It does what client-go's reflector does: list
in pages, watch from the list's resourceVersion with bookmarks, resume after a dropped watch,
list again on 410 Gone and report the objects that disappeared meanwhile as deleted.

Three streams per scope:

- the metadata of every Secret (the API server's ``PartialObjectMetadata``): which Secrets
  exist, and a change to one a token reads (its resourceVersion moves), never their data, so
  that Secrets the operator does not need cost it no memory (issues #15 and #20: parsed pages
  of 800 KiB Helm release records took it from 69 to 325 MiB, and glibc keeps the freed heap);
- the full bodies of the operator's own Secrets only (a label selector), listed once at start
  and not watched: consumer Secrets are read from that list after a restart instead of a GET
  each; afterwards the metadata stream says which exist and whether one changed (a copy of
  another resourceVersion is dropped, see :meth:`Informer.version`), and watching the bodies
  too cost a second event, parsed whole, for every Secret the operator writes (issue #20);
- the EmailTokens, whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from emailtoken.api import GROUP, PLURAL, VERSION
from emailtoken.secretdata import LABEL_MANAGED_BY, MANAGED_BY

log = logging.getLogger("emailtoken")

#: ("ADDED" | "MODIFIED" | "DELETED", the object as the API server sent it)
Event = tuple[str, dict[str, Any]]
Deliver = Callable[[list[Event]], None]

#: The operator's own Secrets (consumer and grant), the ones whose bodies it follows.
OWN_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
#: Metadata only, as client-go's metadata informers ask (plain JSON from a server that cannot).
_METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
_METADATA_WATCH = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"
#: How long the EmailToken stream waits for the Secret streams' first lists before it lists
#: tokens anyway: a token stepped before then reads its consumer Secret with a GET instead of
#: from the watch (a restart's first steps), which is correct but costs a request each.
SECRETS_FIRST = 10.0
#: Retry delays after a failed list or watch. Capped at 5 s: the watches are how a fixed Secret
#: or an edited token wakes its step, so after an API outage they must be back within seconds.
_BACKOFF = (1, 2, 5)


class _Gone(Exception):
    """The resourceVersion (or continue token) is too old: list again."""


@dataclass(eq=False)
class _Stream:
    """One list-and-watch (or list) in one scope: all Secrets' metadata, the selected ones' bodies, or EmailTokens."""

    namespace: str | None
    deliver: Deliver
    metadata_only: bool
    selector: str | None = None
    #: "secrets" or "emailtokens"
    resource: str = "secrets"
    #: False: list once, then stop (the bodies of the operator's own Secrets)
    watch: bool = True
    #: (namespace, name) of every object it follows, as of the last list and watch event -> for the
    #: operator's own Secrets their resourceVersion, else "" (a version per Helm record would cost memory)
    known: dict[tuple[str, str], str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """How the logs name it: ``Secret watch (all namespaces, metadata)``, ``EmailToken watch (mail)``."""
        scope = self.namespace or "all namespaces"
        if self.resource == "emailtokens":
            return f"EmailToken watch ({scope})"
        what = "metadata" if self.metadata_only else f"bodies of {self.selector}"
        return f"Secret watch ({scope}, {what})"

    def version_of(self, metadata: dict[str, Any]) -> str:
        """What :attr:`known` keeps of an object: the resourceVersion of the operator's own Secrets."""
        own = self.metadata_only and (metadata.get("labels") or {}).get(LABEL_MANAGED_BY) == MANAGED_BY
        return str(metadata.get("resourceVersion") or "") if own else ""

    def item(self, obj: dict[str, Any]) -> dict[str, Any]:
        """What is delivered: a metadata stream never passes data on, even from a server that sent it."""
        metadata = obj.get("metadata") or {}
        if self.namespace is not None:
            metadata.setdefault("namespace", self.namespace)
        if self.metadata_only:
            return {"metadata": {k: v for k, v in metadata.items() if k != "managedFields"}}
        obj["metadata"] = metadata
        return obj


class Informer:
    """List and watch Secrets (and EmailTokens) in threads; deliver batches of events on the event loop.

    ``deliver`` gets the metadata of every Secret (no ``data``); ``own``, if given, the full
    bodies of the Secrets matching ``own_selector`` as listed at start (not watched); ``tokens``,
    if given, every EmailToken.
    ``namespaces`` empty means all namespaces (cluster-wide watches); otherwise each namespace
    is watched on its own, as the operator's RBAC may be namespaced.
    """

    def __init__(
        self,
        deliver: Deliver,
        *,
        own: Deliver | None = None,
        tokens: Deliver | None = None,
        own_selector: str = OWN_SELECTOR,
        namespaces: Sequence[str] = (),
        configuration: kubernetes.client.Configuration | None = None,
        page: int = 500,
        timeout: int = 300,
    ) -> None:
        # A client of its own: a watch holds its connection for minutes, which would take one
        # out of the pool the engine's calls are sized to. No urllib3 retries: a failed call
        # is retried here on a short backoff, and urllib3's would only add its own warnings.
        self._namespaces: tuple[str | None, ...] = tuple(namespaces) or (None,)
        config = configuration or kubernetes.client.Configuration.get_default_copy()
        config.retries = False
        # A connection per open watch (up to three per scope): a smaller pool would drop and reopen them.
        config.connection_pool_maxsize = max(config.connection_pool_maxsize or 0, 3 * len(self._namespaces))
        client = kubernetes.client.ApiClient(config)
        self._core = kubernetes.client.CoreV1Api(client)
        self._custom = kubernetes.client.CustomObjectsApi(client)
        self._page = page
        self._timeout = timeout
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._open: set[Any] = set()
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        #: the metadata stream of each scope: which Secrets exist
        self._index = {scope: _Stream(scope, deliver, metadata_only=True) for scope in self._namespaces}
        self._streams = list(self._index.values())
        if own is not None:
            self._streams += [_Stream(scope, own, False, own_selector, watch=False) for scope in self._namespaces]
        if tokens is not None:
            self._streams += [_Stream(scope, tokens, False, resource="emailtokens") for scope in self._namespaces]
        self._listed: set[_Stream] = set()
        #: set (on the loop) once every stream has been listed once
        self.synced = asyncio.Event()
        #: set once every Secret stream has been listed once (see SECRETS_FIRST)
        self._secrets_listed = threading.Event()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start one thread per stream; events are delivered on ``loop``."""
        self._loop = loop
        for stream in self._streams:
            kind = "secrets" if stream.metadata_only else "own-secrets" if stream.resource == "secrets" else "tokens"
            thread = threading.Thread(
                target=self._run, args=(stream,), name=f"emailtoken-{kind}-{stream.namespace or 'all'}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def stop(self, timeout: float = 5) -> None:
        """Stop the threads: close the open watches so that blocked reads return now; wait for
        them ``timeout`` seconds in all (a thread in a list call ends with that call)."""
        self._stopping.set()
        with self._lock:
            responses = list(self._open)
        for response in responses:
            with contextlib.suppress(Exception):  # already closed: nothing to unblock
                response.shutdown()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def exists(self, namespace: str, name: str) -> bool | None:
        """Whether the Secret exists as far as the watch has said; None before its scope's first list.

        Called on the event loop: a scope counts as listed once that list's events were
        delivered there. The answer may lag the API server by the watch's latency.
        """
        stream = self._index.get(None if self._namespaces == (None,) else namespace)
        if stream is None or stream not in self._listed:
            return None
        return (namespace, name) in stream.known

    def version(self, namespace: str, name: str) -> str | None:
        """The resourceVersion of one of the operator's own Secrets as the metadata watch last saw it
        ("" for others); None when it has not seen it (or not listed that scope yet). Read on the
        event loop while the watch's thread moves it on: the answer may be newer than the events
        delivered so far, never older."""
        stream = self._index.get(None if self._namespaces == (None,) else namespace)
        return None if stream is None else stream.known.get((namespace, name))

    def _run(self, stream: _Stream) -> None:
        if stream.resource == "emailtokens":
            waited = time.monotonic() + SECRETS_FIRST
            while not self._secrets_listed.wait(0.1) and time.monotonic() < waited:
                if self._stopping.is_set():
                    return
        version: str | None = None
        failures = 0
        while not self._stopping.is_set():
            try:
                if version is None:
                    version = self._list(stream)
                    self._post(self._mark_listed, stream)
                    if not stream.watch:
                        stream.known = {}
                        return
                started = time.monotonic()
                version, lines = self._watch(stream, version)
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
                log.warning("%s failed: %s; retrying in %d s", stream.name, _describe(exc), delay)
                self._stopping.wait(delay)

    def _mark_listed(self, stream: _Stream) -> None:
        self._listed.add(stream)
        if all(s in self._listed for s in self._streams if s.resource == "secrets"):
            self._secrets_listed.set()
        if len(self._listed) == len(self._streams):
            self.synced.set()

    def _call(self, stream: _Stream, accept: str, **kwargs: Any) -> Any:
        kwargs["_preload_content"] = False
        if stream.selector:
            kwargs["label_selector"] = stream.selector
        if stream.metadata_only:
            kwargs["_headers"] = {"Accept": accept}
        try:
            if stream.resource == "emailtokens":
                if stream.namespace is None:
                    return self._custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, **kwargs)
                return self._custom.list_namespaced_custom_object(GROUP, VERSION, stream.namespace, PLURAL, **kwargs)
            if stream.namespace is None:
                return self._core.list_secret_for_all_namespaces(**kwargs)
            return self._core.list_namespaced_secret(stream.namespace, **kwargs)
        except ApiException as exc:
            if exc.status == 410:
                raise _Gone from None
            raise

    def _list(self, stream: _Stream) -> str:
        """List in pages; deliver each page; report the objects gone since the last list."""
        listed: dict[tuple[str, str], str] = {}
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": self._page, "_request_timeout": 60}
            if token:
                kwargs["_continue"] = token
            body = json.loads(self._call(stream, _METADATA_LIST, **kwargs).data)
            events: list[Event] = []
            for obj in body.get("items") or ():
                item = stream.item(obj)
                metadata = item["metadata"]
                listed[(metadata.get("namespace") or "", metadata.get("name") or "")] = stream.version_of(metadata)
                events.append(("ADDED", item))
            self._post(stream.deliver, events)
            meta = body.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                break
        gone = [
            ("DELETED", {"metadata": {"namespace": ns, "name": name}})
            for ns, name in sorted(stream.known.keys() - listed.keys())
        ]
        if gone:
            self._post(stream.deliver, gone)
        stream.known = listed
        return str(meta.get("resourceVersion") or "")

    def _watch(self, stream: _Stream, version: str) -> tuple[str, int]:
        """Follow changes from ``version`` until the server ends the watch.

        Returns the last version seen and how many lines (events and bookmarks) arrived.
        """
        response = self._call(
            stream,
            _METADATA_WATCH,
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
                    item = stream.item(obj)
                    key = (item["metadata"].get("namespace") or "", item["metadata"].get("name") or "")
                    if kind == "DELETED":
                        stream.known.pop(key, None)
                    else:
                        stream.known[key] = stream.version_of(item["metadata"])
                    events.append((kind, item))
                if events:
                    self._post(stream.deliver, events)
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

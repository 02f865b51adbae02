"""Kubernetes Events about EmailTokens: one body for the operator and the callback, and a poster.

The operator posts its Events itself since it follows EmailTokens outside kopf (see
:mod:`emailtoken.informer`): kopf's poster is only reachable from inside kopf's per-object
handlers. Like kopf's, the poster never makes a step wait: Events are queued and posted in the
background, a failed post is retried briefly and then logged, never raised.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from emailtoken.api import API_VERSION, KIND
from emailtoken.timefmt import rfc3339, utcnow

log = logging.getLogger("emailtoken")

#: The API server refuses longer messages; kopf cuts them in the middle like this.
MAX_MESSAGE = 1024
_INSTANCE = socket.gethostname()[:128]


def event_body(
    obj: Mapping[str, Any], *, type: str, reason: str, message: str, component: str, reporter: str
) -> dict[str, Any]:
    """A core v1 Event on the EmailToken ``obj``: ``component`` is the "From" of ``kubectl describe``."""
    meta = obj.get("metadata") or {}
    if len(message) > MAX_MESSAGE:
        half = (MAX_MESSAGE - 3) // 2
        message = f"{message[:half]}...{message[-half:]}"
    now = rfc3339(utcnow())
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta.get('name')}.", "namespace": meta.get("namespace")},
        "involvedObject": {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
        },
        "reason": reason,
        "message": message,
        "type": type,
        "source": {"component": component},
        "reportingComponent": reporter,
        "reportingInstance": _INSTANCE,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


class EventApi(Protocol):
    async def create_event(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]: ...


class EventPoster:
    """Queue Events and post them with a few workers (``post`` is the engine's ``EventSink``)."""

    def __init__(
        self,
        api: EventApi,
        *,
        workers: int = 4,
        backoffs: Sequence[float] = (1, 2, 5),
        capacity: int = 10_000,
    ) -> None:
        self._api = api
        self._workers = workers
        self._backoffs = tuple(backoffs)
        #: bounded: an API server that refuses every Event must not grow the operator's memory
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(capacity)
        self._tasks: list[asyncio.Task[None]] = []
        self.dropped = 0

    def post(self, body: Mapping[str, Any], *, type: str, reason: str, message: str) -> None:
        """Queue an Event on the EmailToken ``body`` (called on the event loop; never waits)."""
        event = event_body(
            body,
            type=type,
            reason=reason,
            message=message,
            component="emailtoken-operator",
            reporter="emailtoken.io/operator",
        )
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning(
                "Event %s on %s/%s not posted: %d Events wait already",
                reason,
                event["metadata"]["namespace"],
                event["involvedObject"]["name"],
                self._queue.qsize(),
            )

    def start(self) -> None:
        """Start the workers on the running loop."""
        self._tasks = [asyncio.create_task(self._work(), name=f"emailtoken-events-{i}") for i in range(self._workers)]

    async def stop(self, timeout: float = 5) -> None:
        """Post what is queued (for up to ``timeout`` seconds), then stop the workers."""
        if not self._tasks:
            return
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except TimeoutError:
            log.warning("%d Events not posted at shutdown", self._queue.qsize())
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _work(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self._post(event)
            finally:
                self._queue.task_done()

    async def _post(self, event: dict[str, Any]) -> None:
        namespace = event["metadata"]["namespace"]
        for delay in (*self._backoffs, None):
            try:
                await self._api.create_event(namespace, event)
                return
            except Exception as exc:  # any failure: an Event is never worth a step's failure
                if delay is None or not _transient(exc):
                    # Status and reason only: the API server's answer may quote the request.
                    log.warning(
                        "could not post Event %s on %s/%s: %s",
                        event["reason"],
                        namespace,
                        event["involvedObject"]["name"],
                        _describe(exc),
                    )
                    return
                await asyncio.sleep(delay)


def _transient(exc: Exception) -> bool:
    """Worth another try: unreachable (status 0), throttled, or the server's trouble; a 403 or 422
    will not change (a namespace being deleted refuses Events)."""
    status = getattr(exc, "status", None)
    return not isinstance(status, int) or status in (0, 429) or status >= 500


def _describe(exc: Exception) -> str:
    status = getattr(exc, "status", None)
    return f"HTTP {status}" if status else type(exc).__name__

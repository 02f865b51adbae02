"""kopf handlers: translate watch events into calls on the operator's :class:`~emailtoken.wiring.Wiring`.

Importing this module registers the handlers in kopf's default registry. The startup handler
tunes kopf and builds the wiring from the :class:`~emailtoken.wiring.Launch` the runner put in
kopf's memo (``launch``); every other handler reads only ``memo["wiring"]``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from emailtoken.api import GROUP, PLURAL, VERSION
from emailtoken.wiring import PAGE, Launch, Wiring, build

log = logging.getLogger("emailtoken")


def post_event(body: Mapping[str, Any], *, type: str, reason: str, message: str) -> None:
    """Events through kopf's poster (batched, retried, attached to the object)."""
    kopf.event(dict(body), type=type, reason=reason, message=message)


class NoDiffBase(kopf.DiffBaseStorage):
    """No diff base: kopf builds one (a deep copy of the object) for every event, but only
    change handlers (on.create/on.update) read it, and this operator has event handlers only.
    Building it was a third of kopf's cost per event (see bench/README.md).
    """

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        return None

    def fetch(self, *, body: kopf.Body) -> Any:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        return None


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Tune kopf, build the operator's parts and start following Secrets."""
    launch: Launch = memo.get("launch") or Launch()
    config = launch.config
    # Only explicit kopf.event() calls become Events; log lines stay logs.
    settings.posting.level = logging.CRITICAL + 1
    # No cluster-wide CRD/namespace scanning: RBAC does not grant it (see rbac.py).
    settings.scanning.disabled = True
    settings.watching.chunk_size = PAGE
    # kopf keeps each object's worker (and the last event it handled) for idle_timeout after
    # the event. The default 5 s keeps every token's worker alive through a restart's initial
    # list; the short-lived objects of 5,000 workers, interleaved with the long-lived state,
    # left Python's memory arenas fragmented (see bench/README.md).
    settings.queueing.idle_timeout = 0.5
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.watching.server_timeout = config.watch_timeout
    settings.watching.client_timeout = config.watch_timeout + 30
    settings.networking.request_timeout = 60
    settings.batching.error_delays = [1, 2, 5, 10, 30]
    # kopf hands each object's handlers a shallow copy of this memo: the wiring is one object
    # they all share.
    wiring = build(launch, events=post_event)
    wiring.start(asyncio.get_running_loop())
    memo["wiring"] = wiring
    log.info("emailtoken operator started (concurrency %d)", config.concurrency)


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    """Stop the scheduler; steps in flight get its drain period to finish (see Scheduler.run)."""
    wiring: Wiring | None = memo.get("wiring")
    if wiring is not None:
        await wiring.stop()
    else:
        launch: Launch | None = memo.get("launch")
        if launch is not None and launch.stop_flag is not None:
            launch.stop_flag.set()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def token_event(event: Mapping[str, Any], body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Keep the scheduler's copy of every EmailToken current."""
    wiring: Wiring | None = memo.get("wiring")
    if wiring is None:
        return
    wiring.ensure_running()
    key = (body.metadata.namespace or "", body.metadata.name or "")
    gone = event.get("type") == "DELETED" or bool(body.metadata.get("deletionTimestamp"))
    wiring.token_event(key, dict(body), gone=gone)


@kopf.on.probe(id="tokens")
async def probe_tokens(memo: kopf.Memo, **_: Any) -> int:
    """Liveness detail: how many tokens are scheduled."""
    wiring: Wiring | None = memo.get("wiring")
    return len(wiring.scheduler) if wiring is not None else 0

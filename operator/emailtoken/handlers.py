"""kopf handlers: the process lifecycle (start, stop, liveness) around the :class:`~emailtoken.wiring.Wiring`.

kopf watches no resource here: EmailTokens and Secrets are followed by
:mod:`emailtoken.informer`, whose one parse per event costs a fraction of kopf's per-object
machinery (issue #20, bench/README.md). kopf keeps what it is good at: the startup and
cleanup sequence, signal handling, the liveness endpoint and its log format.
The startup handler builds the wiring from the :class:`~emailtoken.wiring.Launch` the runner
put in kopf's memo (``launch``); the others read only ``memo["wiring"]``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from emailtoken.wiring import Launch, Wiring, build

log = logging.getLogger("emailtoken")


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Tune kopf, build the operator's parts and start following EmailTokens and Secrets."""
    launch: Launch = memo.get("launch") or Launch()
    config = launch.config
    # The operator posts its own Events (emailtoken.events); log lines stay logs.
    settings.posting.enabled = False
    # No cluster-wide CRD/namespace scanning: RBAC does not grant it (see rbac.py).
    settings.scanning.disabled = True
    settings.networking.request_timeout = 60
    wiring = build(launch)
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


@kopf.on.probe(id="tokens")
async def probe_tokens(memo: kopf.Memo, **_: Any) -> int:
    """Liveness detail: how many tokens are scheduled."""
    wiring: Wiring | None = memo.get("wiring")
    return len(wiring.scheduler) if wiring is not None else 0

"""A refresh that presented a refresh token runs to its end: the successor must be stored.

The token is spent the moment the provider sees it, so a step cancelled meanwhile (shutdown,
lost leadership) still waits up to ``grace`` seconds for the unit to store what came back; a
stale writer is kept out by the compare-and-swap on the grant Secret, not by cutting the write
short. :meth:`Spending.drain` waits for units whose step is gone (a process about to exit).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class Spending:
    """The refresh units in flight, each shielded from its step's cancellation."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self._units: set[asyncio.Task[Any]] = set()

    async def run(self, label: object, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` as one unit; a cancelled caller still waits up to ``grace`` seconds for it."""
        unit = asyncio.ensure_future(work)
        self._units.add(unit)
        unit.add_done_callback(self._settle)
        try:
            await asyncio.shield(unit)
        except asyncio.CancelledError:
            if not unit.done():
                log.warning("%s: cancelled during a refresh; storing the rotated refresh token first", label)
                await asyncio.wait({unit}, timeout=self.grace)
            raise

    async def drain(self, timeout: float) -> None:
        """Wait (up to ``timeout`` seconds) for every unit in flight."""
        if self._units:
            await asyncio.wait(set(self._units), timeout=timeout)

    def _settle(self, unit: asyncio.Task[Any]) -> None:
        """Forget a finished unit, and collect its outcome when no step awaits it any more."""
        self._units.discard(unit)
        if not unit.cancelled():
            unit.exception()  # retrieved: its step reports it, or it was cancelled and nobody will

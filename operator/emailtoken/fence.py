"""May this replica act right now, and may a provider call start: the fence every step passes.

Leader election (:class:`Leadership`, :class:`emailtoken.leader.LeaderElector` in production)
or a plain predicate; with neither, the replica always acts. A step refused here does nothing
at all: no provider call, no write.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from emailtoken.tokenstate import StepResult

log = logging.getLogger(__name__)

#: A step that may not act waits this long for a renewal before it looks again. It holds its
#: scheduler slot meanwhile, so a pause costs a few idle steps, not one per token per second.
LEADERSHIP_WAIT = 5.0


@runtime_checkable
class Leadership(Protocol):
    """Leader election as the engine needs it (:class:`emailtoken.leader.LeaderElector`)."""

    def fresh(self) -> bool:
        """May this replica act (write) right now?"""
        ...

    def call_window(self) -> float:
        """Seconds from now in which a provider call may start and still end before the Lease could pass on."""
        ...

    async def next_renewal(self, timeout: float) -> bool:
        """Return at the next renewal or after ``timeout``; False once leadership is lost for good."""
        ...


class NotLeader(Exception):
    """This replica's leadership is not confirmed any more: it must neither call providers nor write.

    ``paused``: leadership itself is unconfirmed (not just too little of the Lease left for a
    provider call to end in time).
    """

    def __init__(self, *, paused: bool = True) -> None:
        super().__init__("leadership not confirmed" if paused else "too little of the Lease left for a provider call")
        self.paused = paused


class Fence:
    """Checks leadership before a step and before each provider call; waits for it when refused."""

    def __init__(self, may_act: Leadership | Callable[[], bool] | None) -> None:
        self._leader: Leadership | None = may_act if isinstance(may_act, Leadership) else None
        self._may_act: Callable[[], bool] | None = None if isinstance(may_act, Leadership) else may_act
        #: steps found leadership unconfirmed (logged once when that starts and once when it ends)
        self._paused = False

    def check(self) -> None:
        """NotLeader unless this replica's leadership is confirmed."""
        if self._leader is not None:
            if not self._leader.fresh():
                raise NotLeader()
        elif self._may_act is not None and not self._may_act():
            raise NotLeader()

    def enter(self) -> None:
        """A step starts: NotLeader unless it may act; say once when acting resumes after a pause."""
        self.check()
        if self._paused:
            self._paused = False
            log.info("leadership confirmed again: tokens act again")

    async def refused(self, exc: NotLeader) -> StepResult:
        """A step refused for want of leadership: say so once for all tokens, then wait for a renewal.

        Logging per token and stepping every token again each second made an outage cost a line
        and a no-op step per token per second (5,000 of each at 5,000 tokens).
        """
        if exc.paused and not self._paused:
            self._paused = True
            log.warning("leadership not confirmed (the Lease is not renewed): no token acts until it is")
        if self._leader is None:
            return StepResult(delay=1.0)  # a plain predicate announces nothing: look again in a second
        if not await self._leader.next_renewal(LEADERSHIP_WAIT):
            return StepResult(delay=None)  # lost for good: the process is stopping
        return StepResult(delay=0.0)

    async def call_window(self) -> float:
        """Seconds in which the provider call about to be made may still start; NotLeader when none.

        A call may start only if it can end, and its answer be stored, before another replica
        could take the Lease: else the next leader presents the refresh token it spends. A healthy
        leader renews well within the window; when it is closed, wait for one renewal.
        """
        leader = self._leader
        if leader is None:
            self.check()
            return math.inf
        for waited in (False, True):
            if not leader.fresh():
                raise NotLeader()
            window = leader.call_window()
            if window > 0:
                return window
            if waited or not await leader.next_renewal(LEADERSHIP_WAIT):
                break
        raise NotLeader(paused=not leader.fresh())

"""Run each EmailToken's step at its own time, thousands at once, on one event loop.

Why not a kopf daemon per token: daemons need a finalizer on every object (a stuck
deletion whenever the operator is uninstalled first) and a task each; one heap of due
times with bounded concurrency costs a few hundred bytes per token and lets a restart
resume without a refresh storm. kopf still does the watching (see handlers).

Why a fair share per namespace: tenants are untrusted, and a token endpoint that drips its
answer holds a step slot for up to the provider timeout. Handed out by due time alone, the
slots would all go to one namespace's hanging tokens and stop refreshes everywhere. So a free
slot goes to the namespace holding the fewest slots among those with due steps (within a
namespace, earliest due first). One namespace alone still gets every slot; once another has
due steps, the slots that come free go to it until their holdings are even, so a hanging
namespace delays the others by about one provider timeout at most, not by its whole backlog.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from emailtoken.api import Key

log = logging.getLogger(__name__)

#: The body is whatever ``upsert`` was given (the handlers keep it as compact JSON bytes).
StepFn = Callable[[Any], Awaitable[float | None]]


@dataclass
class _Entry:
    body: Any
    running: bool = False
    again: bool = False
    due: float | None = None


class Scheduler:
    """A due-time heap of tokens; ``step`` returns the seconds until the token's next step."""

    def __init__(self, step: StepFn, *, concurrency: int = 16, error_retry: float = 30.0, drain: float = 25.0) -> None:
        self._step = step
        self._drain = drain
        self._entries: dict[Key, _Entry] = {}
        #: (due, seq, key) of every scheduled step; stale items are skipped when popped
        self._heap: list[tuple[float, int, Key]] = []
        self._seq = itertools.count()
        self._changed = asyncio.Event()
        self._concurrency = max(1, concurrency)
        self._free = self._concurrency
        #: steps that are due and wait for a slot: per namespace, (due, seq, name) earliest first
        self._waiting: dict[str, list[tuple[float, int, str]]] = {}
        #: slots held by each namespace's running steps
        self._held: dict[str, int] = {}
        #: namespaces with waiting steps, by the slots they hold; within one count, longest waiting first
        self._turns: list[dict[str, None]] = [{} for _ in range(self._concurrency + 1)]
        self._tasks: set[asyncio.Task[None]] = set()
        self._running: set[Key] = set()
        self._error_retry = error_retry
        self.steps = 0

    def __len__(self) -> int:
        return len(self._entries)

    def upsert(self, key: Key, body: Any, *, wake: bool = False) -> None:
        """Remember the latest body; a new key (or ``wake``) is stepped at once."""
        entry = self._entries.get(key)
        if entry is None:
            self._entries[key] = _Entry(body=body)
            self._schedule(key, 0.0)
            return
        entry.body = body
        if wake:
            self.wake(key)

    def wake(self, key: Key) -> None:
        """Step this token now (or right after its running step)."""
        entry = self._entries.get(key)
        if entry is None:
            return
        if entry.running:
            entry.again = True
        else:
            self._schedule(key, 0.0)

    def remove(self, key: Key) -> None:
        """Forget the token; a running step finishes but is not rescheduled."""
        self._entries.pop(key, None)

    def due_in(self, key: Key) -> float | None:
        """Seconds until the token's next step (negative while it waits for a slot), for metrics and tests."""
        entry = self._entries.get(key)
        if entry is None or entry.due is None:
            return None
        return entry.due - asyncio.get_running_loop().time()

    def _holding(self, namespace: str) -> int:
        return self._held.get(namespace, 0)

    def _schedule(self, key: Key, delay: float) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + max(delay, 0.0)
        entry = self._entries[key]
        entry.due = due
        heapq.heappush(self._heap, (due, next(self._seq), key))
        self._changed.set()

    def _seat(self, namespace: str, was: int | None) -> None:
        """Move the namespace to the end of its turn list after its slot count changed (or it got work)."""
        if was is not None:
            self._turns[was].pop(namespace, None)
        if self._waiting.get(namespace):
            self._turns[self._held.get(namespace, 0)][namespace] = None

    def _next_namespace(self) -> str | None:
        """The namespace holding the fewest slots among those with waiting steps."""
        for namespaces in self._turns:
            if namespaces:
                return next(iter(namespaces))
        return None

    def _dispatch(self) -> None:
        """Start waiting steps while slots are free, each slot to the namespace with the fewest."""
        while self._free > 0:
            namespace = self._next_namespace()
            if namespace is None:
                return
            queue = self._waiting[namespace]
            due, _, name = heapq.heappop(queue)
            if not queue:
                del self._waiting[namespace]
                self._turns[self._holding(namespace)].pop(namespace, None)
            key = (namespace, name)
            entry = self._entries.get(key)
            if entry is None or entry.due != due or entry.running:
                continue  # stale: removed, rescheduled or running
            if key in self._running:
                entry.again = True  # a removed-and-recreated token's old step is still running
                entry.due = None
                continue
            self._running.add(key)
            entry.running = True
            entry.due = None
            self._free -= 1
            was = self._holding(namespace)
            self._held[namespace] = was + 1
            self._seat(namespace, was)
            task = asyncio.create_task(self._run_one(key, entry))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def run(self) -> None:
        """Dispatch due steps until cancelled; then let steps in flight finish (up to ``drain`` seconds).

        A step stopped in the middle of a refresh may already have spent a rotating refresh
        token at the provider; cancelled there, it would drop the successor instead of saving
        it, and the next process would present a dead token. Every rolling update stops the
        operator, so in-flight steps get a grace period (bounded by the provider timeout in
        practice) before they are cancelled.
        """
        loop = asyncio.get_running_loop()
        try:
            while True:
                self._changed.clear()
                now = loop.time()
                while self._heap and self._heap[0][0] <= now:
                    due, seq, key = heapq.heappop(self._heap)
                    entry = self._entries.get(key)
                    if entry is None or entry.due != due or entry.running:
                        continue  # stale heap item: removed, rescheduled or running
                    namespace, name = key
                    queue = self._waiting.setdefault(namespace, [])
                    heapq.heappush(queue, (due, seq, name))
                    if len(queue) == 1:
                        self._seat(namespace, None)
                self._dispatch()
                # Not asyncio.wait_for: on Python 3.11 it swallows a cancel that arrives just as the
                # event is set (a step ending at shutdown), and the dispatcher would never stop.
                alarm = loop.call_at(self._heap[0][0], self._changed.set) if self._heap else None
                try:
                    await self._changed.wait()
                finally:
                    if alarm is not None:
                        alarm.cancel()
        finally:
            if self._tasks and self._drain > 0:
                log.info("waiting up to %.0fs for %d step(s) in flight", self._drain, len(self._tasks))
                await asyncio.wait(set(self._tasks), timeout=self._drain)  # a second cancel cuts this short
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    def _release(self, namespace: str) -> None:
        """Give the slot back and let the dispatcher hand it out."""
        self._free += 1
        was = self._holding(namespace)
        if was > 1:
            self._held[namespace] = was - 1
        else:
            self._held.pop(namespace, None)
        self._seat(namespace, was)
        self._changed.set()

    async def _run_one(self, key: Key, entry: _Entry) -> None:
        delay: float | None
        try:
            delay = await self._step(entry.body)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("step of %s/%s failed unexpectedly; retrying in %.0fs", *key, self._error_retry)
            delay = self._error_retry
        finally:
            self._release(key[0])
            entry.running = False
            self._running.discard(key)
            self.steps += 1
        current = self._entries.get(key)
        if current is not entry:
            if current is not None and current.again and not current.running:
                current.again = False
                self._schedule(key, 0.0)  # the replacement waited for this step to finish
            return  # removed (or replaced) while running
        if entry.again:
            entry.again = False
            delay = 0.0
        if delay is not None:
            self._schedule(key, delay)

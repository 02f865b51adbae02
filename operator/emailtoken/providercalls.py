"""Running a blocking provider call: its own thread pool, the leadership window, latency and outcome.

Provider calls block for up to the provider timeout. In asyncio's default pool (cpu + 4
threads, 6 on a 2-core node) a few hung calls would starve every other token's calls and the
Kubernetes client, so they get threads of their own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from emailtoken.fence import Fence, NotLeader
from emailtoken.model import EmailTokenSpec
from emailtoken.observe import Observer
from emailtoken.outcomes import ErrorKind, ProviderError

log = logging.getLogger(__name__)


class ProviderCalls:
    """Runs provider calls in a pool of ``threads``, each only while the fence's window is open."""

    def __init__(self, fence: Fence, observer: Observer, threads: int) -> None:
        self._fence = fence
        self._observer = observer
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="emailtoken-provider")

    async def run(self, spec: EmailTokenSpec, operation: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` in the pool and report its latency and outcome.

        Whatever a library raises that its provider module did not expect is still the
        provider's trouble: a transient :class:`ProviderError`, shown by type only (a library's
        message may quote the request).
        """
        window = await self._fence.call_window()  # the point of no return: a refresh token presented is spent
        opened = time.monotonic()
        started: list[float] = []

        def call() -> Any:
            # Queued for a thread past the window (every thread busy): it may not end in time any more.
            if time.monotonic() - opened >= window:
                raise NotLeader(paused=False)
            started.append(time.perf_counter())
            return fn(*args)

        outcome = "ok"
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, call)
        except NotLeader:
            raise
        except ProviderError as exc:
            outcome = exc.reason
            raise
        except Exception as exc:
            outcome = "ProviderUnavailable"
            log.warning(
                "%s %s call raised %s; treating it as a transient failure", spec.provider, operation, type(exc).__name__
            )
            raise ProviderError(
                ErrorKind.TRANSIENT, f"the {spec.provider} client library failed unexpectedly ({type(exc).__name__})"
            ) from None
        finally:
            if started:
                self._observer.provider_call(spec.provider, operation, time.perf_counter() - started[0], outcome)

"""Prometheus metrics and health endpoints of the operator process.

:class:`MetricsObserver` implements :class:`emailtoken.observe.Observer` with
prometheus-client on its own :class:`~prometheus_client.CollectorRegistry` (not the
global default, so tests and embedders can run several without name clashes).
:func:`serve` starts one HTTP server thread on ``0.0.0.0:PORT``:

``/metrics``  the registry in the Prometheus text format
``/healthz``  liveness: 200 while the asyncio loop keeps beating (see :class:`Health`)
``/readyz``   readiness: 200 once the process is a standby candidate or the running
              leader, 503 while starting or stopping, or while a problem that waiting
              will not fix (a missing Lease permission) blocks it; the body names the
              phase and any problem (e.g. which verb on which resource was forbidden)

The server starts before leader election, so a hot-standby replica (which never starts
kopf, and therefore has no kopf ``/healthz`` on ``--health-port``) still passes its
probes and can become Ready during a rolling update.

Families (labels never carry secret material: only namespace, name, provider, operation
and bounded reason words; anything else is replaced by ``unknown``/``Other``):

- ``emailtoken_token_expiry_timestamp_seconds{namespace,name,provider}``: expiry of the
  published access token (whole seconds, equal to ``status.expiresAt``); absent while
  none was published
- ``emailtoken_token_next_refresh_timestamp_seconds{namespace,name,provider}``: next
  planned attempt; absent while the token waits for a person (sign-in, fixed spec)
- ``emailtoken_token_reauthorization_required_timestamp_seconds{namespace,name,provider}``:
  when a person must sign in again at the latest (``status.reauthorizationRequiredBy``: a
  refresh token's stated end, such as a Google app in Testing, or its unused limit); absent for
  app-only flows and tokens without a grant. Alert on ``... - time() < 3 * 86400``
- ``emailtoken_token_ready`` / ``emailtoken_token_authorized``: the conditions as 0/1
- ``emailtoken_tokens``: EmailTokens the operator currently tracks
- ``emailtoken_refresh_attempts_total{provider,outcome}``: outcome ``ok`` or ``error``
- ``emailtoken_refresh_failures_total{provider,reason}``: reason = the condition reason
- ``emailtoken_provider_request_duration_seconds{provider,operation,outcome}``: each
  request to an identity provider; outcome ``ok`` or ``error``
- ``emailtoken_leader``: 1 while this process is the writer (leader), else 0
- the standard ``process_*``, ``python_gc_*`` and ``python_info`` families
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    make_wsgi_app,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from emailtoken.observe import Key

PROVIDERS = frozenset({"Microsoft", "Google"})
#: Condition reasons are CamelCase words; anything else could be free text and is not a label.
_REASON = re.compile(r"^[A-Z][A-Za-z0-9]{0,63}$")
_OPERATION = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
#: Provider calls take from milliseconds to the 20 s request timeout.
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)

STARTING, STANDBY, RUNNING, STOPPING = "starting", "standby", "running", "stopping"
#: The loop beats every HEARTBEAT seconds; a beat older than STALE_AFTER means it is stuck.
HEARTBEAT = 5.0
STALE_AFTER = 30.0


def provider_label(value: str) -> str:
    """The provider as a label: one of the known names, never user text."""
    return value if value in PROVIDERS else "unknown"


def reason_label(value: str) -> str:
    """A failure reason as a label: a CamelCase word, else ``Other``."""
    return value if _REASON.match(value or "") else "Other"


def operation_label(value: str) -> str:
    """A provider operation as a label (``token``, ``device_poll``, ...)."""
    return value if _OPERATION.match(value or "") else "other"


def outcome_label(value: str) -> str:
    """``ok`` or ``error``: the reason is in the failures counter, not in every series."""
    return "ok" if value == "ok" else "error"


@dataclass(frozen=True)
class _TokenSample:
    provider: str
    ready: bool
    authorized: bool
    expires_at: float | None
    next_refresh: float | None
    reauthorize_by: float | None = None


def _seconds(moment: datetime | None) -> float | None:
    """Whole seconds, as status and the consumer Secret show them (RFC 3339 without fraction)."""
    return float(math.floor(moment.timestamp())) if moment is not None else None


class Health:
    """What the process is doing, for the probes: phase plus an event-loop heartbeat."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.phase = STARTING
        self.last_beat: float | None = None
        #: What keeps the process from its job right now, in the API server's words (set by the
        #: runner from the leader elector); ``blocked`` when waiting will not fix it.
        self.problem = ""
        self.blocked = False
        self._clock = clock

    def beat(self) -> None:
        """The loop is alive now."""
        self.last_beat = self._clock()

    async def heartbeat(self, interval: float = HEARTBEAT) -> None:
        """Beat forever from the operator's event loop (cancel to stop)."""
        while True:
            self.beat()
            await asyncio.sleep(interval)

    def alive(self) -> bool:
        """Liveness: no beat yet (still starting) or a recent one."""
        return self.last_beat is None or self._clock() - self.last_beat < STALE_AFTER

    def ready(self) -> bool:
        """Readiness: standing by or running, with a live loop."""
        return self.phase in (STANDBY, RUNNING) and not self.blocked and self.last_beat is not None and self.alive()

    def describe(self) -> str:
        """The phase, and the problem if there is one (the /readyz body)."""
        return f"{self.phase}: {self.problem}" if self.problem else self.phase


class MetricsObserver:
    """The engine's :class:`~emailtoken.observe.Observer`, exported to Prometheus."""

    def __init__(self, registry: CollectorRegistry | None = None, health: Health | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.health = health or Health()
        self._lock = threading.Lock()
        self._tokens: dict[Key, _TokenSample] = {}
        self.attempts = Counter(
            "emailtoken_refresh_attempts",
            "Refresh attempts (a request for a new access token) by outcome.",
            ["provider", "outcome"],
            registry=self.registry,
        )
        self.failures = Counter(
            "emailtoken_refresh_failures",
            "Failed refresh attempts by reason (the Ready/Authorized condition reason).",
            ["provider", "reason"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "emailtoken_provider_request_duration_seconds",
            "Duration of requests to the identity provider.",
            ["provider", "operation", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_TokenCollector(self))

    # -- Observer ---------------------------------------------------------------------------

    def provider_call(self, provider: str, operation: str, seconds: float, outcome: str) -> None:
        """One provider request finished."""
        self.latency.labels(provider_label(provider), operation_label(operation), outcome_label(outcome)).observe(
            max(0.0, seconds)
        )

    def refresh_attempt(self, key: Key, provider: str, outcome: str) -> None:
        """A refresh was attempted; failures are also counted by reason."""
        label = provider_label(provider)
        self.attempts.labels(label, outcome_label(outcome)).inc()
        if outcome != "ok":
            self.failures.labels(label, reason_label(outcome)).inc()

    def token_state(
        self,
        key: Key,
        *,
        provider: str,
        ready: bool,
        authorized: bool,
        expires_at: datetime | None,
        next_refresh: datetime | None,
        reauthorize_by: datetime | None = None,
    ) -> None:
        """Remember the token's latest state; exported at scrape time."""
        sample = _TokenSample(
            provider_label(provider),
            ready,
            authorized,
            _seconds(expires_at),
            _seconds(next_refresh),
            _seconds(reauthorize_by),
        )
        with self._lock:
            self._tokens[key] = sample

    def forget(self, key: Key) -> None:
        """The token is gone: its series disappear from the next scrape."""
        with self._lock:
            self._tokens.pop(key, None)

    # -- export -----------------------------------------------------------------------------

    def snapshot(self) -> dict[Key, _TokenSample]:
        """A consistent copy for one scrape."""
        with self._lock:
            return dict(self._tokens)


class _TokenCollector(Collector):
    """Per-token gauges built from the observer's state at scrape time.

    Why a collector instead of labelled Gauges: a forgotten token (or one whose provider
    changed) must not leave stale series behind, and this needs no removal bookkeeping.
    """

    LABELS = ("namespace", "name", "provider")

    def __init__(self, observer: MetricsObserver) -> None:
        self.observer = observer

    def collect(self) -> Iterable[Metric]:
        tokens = self.observer.snapshot()
        expiry = GaugeMetricFamily(
            "emailtoken_token_expiry_timestamp_seconds",
            "Expiry of the access token in the consumer Secret (Unix time).",
            labels=self.LABELS,
        )
        next_refresh = GaugeMetricFamily(
            "emailtoken_token_next_refresh_timestamp_seconds",
            "When the operator next tries to refresh the token (Unix time).",
            labels=self.LABELS,
        )
        reauthorize = GaugeMetricFamily(
            "emailtoken_token_reauthorization_required_timestamp_seconds",
            "When a person must sign in again at the latest: the grant's known end (Unix time).",
            labels=self.LABELS,
        )
        ready = GaugeMetricFamily(
            "emailtoken_token_ready", "1 when the consumer Secret holds an unexpired token.", labels=self.LABELS
        )
        authorized = GaugeMetricFamily(
            "emailtoken_token_authorized", "1 when a usable grant exists.", labels=self.LABELS
        )
        for (namespace, name), sample in sorted(tokens.items()):
            labels = [namespace, name, sample.provider]
            if sample.expires_at is not None:
                expiry.add_metric(labels, sample.expires_at)
            if sample.next_refresh is not None:
                next_refresh.add_metric(labels, sample.next_refresh)
            if sample.reauthorize_by is not None:
                reauthorize.add_metric(labels, sample.reauthorize_by)
            ready.add_metric(labels, 1.0 if sample.ready else 0.0)
            authorized.add_metric(labels, 1.0 if sample.authorized else 0.0)
        count = GaugeMetricFamily("emailtoken_tokens", "EmailTokens the operator tracks.", value=len(tokens))
        leader = GaugeMetricFamily(
            "emailtoken_leader",
            "1 while this process is the single writer (holds the Lease), else 0.",
            value=1.0 if self.observer.health.phase == RUNNING else 0.0,
        )
        yield from (expiry, next_refresh, reauthorize, ready, authorized, count, leader)

    def describe(self) -> Iterable[Metric]:
        return []  # dynamic families: no duplicate-name check needed at registration


# -- the process-wide instance and its HTTP server ----------------------------------------------

_observer: MetricsObserver | None = None
_observer_lock = threading.Lock()


def observer() -> MetricsObserver:
    """The process-wide observer (created on first use, with process/GC/platform collectors)."""
    global _observer
    with _observer_lock:
        if _observer is None:
            registry = CollectorRegistry()
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            if GC_COLLECTOR is not None:
                GCCollector(registry=registry)
            _observer = MetricsObserver(registry)
        return _observer


def health() -> Health:
    """The process-wide health state (the runner sets the phase and runs the heartbeat)."""
    return observer().health


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr: scrapes and probes every few seconds would drown the log."""

    def log_message(self, format: str, *args: Any) -> None:
        return None


def wsgi_app(obs: MetricsObserver) -> Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]:
    """``/metrics``, ``/healthz`` and ``/readyz`` as one WSGI application."""
    metrics_app = make_wsgi_app(obs.registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path in ("/healthz", "/livez"):
            ok = obs.health.alive()
            return _plain(start_response, ok, "ok" if ok else "event loop stalled")
        if path == "/readyz":
            ok = obs.health.ready()
            return _plain(start_response, ok, obs.health.describe())
        if path == "/metrics":
            result: Iterable[bytes] = metrics_app(environ, start_response)
            return result
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: try /metrics, /healthz or /readyz\n"]

    return app


def _plain(start_response: Callable[..., Any], ok: bool, text: str) -> Iterator[bytes]:
    start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain; charset=utf-8")])
    yield (text + "\n").encode()


def serve(port: int, addr: str = "0.0.0.0") -> ThreadingWSGIServer:  # noqa: S104 (probes and scrapes come from outside)
    """Serve metrics and probes from a daemon thread; returns the server (``shutdown()`` stops it)."""
    server = make_server(addr, port, wsgi_app(observer()), ThreadingWSGIServer, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="emailtoken-metrics", daemon=True)
    thread.start()
    return server

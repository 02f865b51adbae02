"""The one HTTP session shape the OAuth libraries share, and the limits every provider answer meets.

Why a custom session: ``REQUESTS_CA_BUNDLE`` in the environment silently overrides a
session's ``verify``, so a private CA (tests, air-gapped proxies) needs ``trust_env``
off; the last ``Retry-After`` is remembered so the engine can honour it even though
msal returns plain dicts; and the connection pool is as large as the number of threads
that call at once (requests' default of 10 discarded a connection, a TLS handshake, per
extra caller).

Why the limits: the endpoint is named by a tenant's spec, so its answers are hostile
input. A request never follows a redirect (a grant is only presented to the endpoint it
was issued for, and a 307 would resend it, secrets included, anywhere); it has one
deadline for the whole exchange (a per-read timeout lets an endpoint that drips a byte a
second hold a worker forever), enforced by closing the socket; an answer is at most
``MAX_ANSWER_BYTES``; and a non-JSON answer is refused here, before msal would log its
body (which may echo the request: refresh token and client secret).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import math
import socket
import threading
import time
import urllib.request
from collections.abc import Iterable
from typing import Any

import requests
import requests.adapters
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from emailtoken import endpoints

DEFAULT_TIMEOUT = 20.0
MAX_ANSWER_BYTES = 1 << 20  # OAuth answers are a few KiB; discovery documents under 10 KiB
MAX_RETRY_AFTER = 3600.0  # a provider may ask for a pause, not for a day


class UnsafeAnswer(requests.RequestException):
    """The endpoint answered as no OAuth endpoint does; the message is ours and carries no body."""


class EndpointNotAllowed(UnsafeAnswer):
    """The URL's host is not on the installer's list: nothing was sent."""


class _Watch:
    """One request's deadline and the connections it took from the pool."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.connections: list[Any] = []
        self.fired = False
        self.done = False


class _Watchdog:
    """One thread that shuts the sockets of requests past their deadline (a blocked read then returns)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Watch]] = []
        self._cond = threading.Condition()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, deadline: float) -> _Watch:
        watch = _Watch(deadline)
        with self._cond:
            heapq.heappush(self._heap, (deadline, next(self._ids), watch))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="provider-deadlines", daemon=True)
                self._thread.start()
            if self._heap[0][2] is watch:
                # Only a new earliest deadline needs the thread now: otherwise it already waits
                # until an earlier one, and waking it for every request cost two context switches
                # per provider call (bench/README.md). Finished watches are dropped when it wakes.
                self._cond.notify()
        return watch

    def finish(self, watch: _Watch) -> None:
        with self._cond:
            watch.done = True
            watch.connections.clear()  # it stays in the heap until the thread next wakes

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, _, watch = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                watch.fired = True
                connections = list(watch.connections)
            for conn in connections:
                sock = getattr(conn, "sock", None)
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)


_WATCHDOG = _Watchdog()
_current = threading.local()


def _remember(conn: Any) -> Any:
    watch: _Watch | None = getattr(_current, "watch", None)
    if watch is not None:
        watch.connections.append(conn)
    return conn


class _HTTPPool(HTTPConnectionPool):
    def _get_conn(self, timeout: float | None = None) -> Any:
        return _remember(super()._get_conn(timeout))


class _HTTPSPool(HTTPSConnectionPool):
    def _get_conn(self, timeout: float | None = None) -> Any:
        return _remember(super()._get_conn(timeout))


class _WatchedAdapter(requests.adapters.HTTPAdapter):
    """An adapter whose pools tell the watchdog which connection a request uses."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header, bounded to [0, MAX_RETRY_AFTER]; None if absent or not a number."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


class ProviderSession(requests.Session):
    """A requests session with one deadline per request, bounded answers and Retry-After bookkeeping."""

    def __init__(
        self,
        *,
        ca_bundle: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        pool: int = 10,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        allowed_hosts: Iterable[str] | None = None,
    ) -> None:
        """``allowed_hosts`` None means any host (library use); the product always passes its list."""
        super().__init__()
        self.allowed_hosts = tuple(allowed_hosts) if allowed_hosts is not None else None
        adapter = _WatchedAdapter(pool_connections=4, pool_maxsize=max(pool, 10))
        self.mount("https://", adapter)
        self.mount("http://", adapter)
        self.timeout = timeout
        self.max_answer_bytes = max_answer_bytes
        self._local = threading.local()
        if ca_bundle:
            # Proxies still come from the environment; only the CA bundle is pinned.
            self.trust_env = False
            self.verify = ca_bundle
            self.proxies.update(urllib.request.getproxies())
        self.headers["User-Agent"] = "emailtoken-operator"

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        """Send once, within ``timeout`` seconds in all, and return a complete, bounded JSON answer."""
        self._local.retry_after = None
        self.check_allowed(url.decode() if isinstance(url, bytes) else url)
        deadline = time.monotonic() + self.timeout
        timeout = kwargs.pop("timeout", None)
        kwargs["timeout"] = min(float(timeout), self.timeout) if isinstance(timeout, int | float) else self.timeout
        kwargs["allow_redirects"] = False
        kwargs["stream"] = True
        watch = _WATCHDOG.watch(deadline)
        _current.watch = watch
        try:
            try:
                response = super().request(method, url, *args, **kwargs)
            finally:
                _current.watch = None
            try:
                self._read_bounded(response, deadline)
            finally:
                response.close()
        except requests.RequestException:
            if watch.fired:
                raise UnsafeAnswer(f"no complete answer within {self.timeout:g} s") from None
            raise
        finally:
            _WATCHDOG.finish(watch)
        if watch.fired:
            raise UnsafeAnswer(f"no complete answer within {self.timeout:g} s")
        self._check(response)
        if response.status_code >= 400:
            self._local.retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return response

    def _read_bounded(self, response: requests.Response, deadline: float) -> None:
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_answer_bytes:
            raise UnsafeAnswer(f"the answer is larger than {self.max_answer_bytes} bytes")
        if response._content is not False or response.raw is None:  # an adapter that answers in memory
            if len(response.content or b"") > self.max_answer_bytes:
                raise UnsafeAnswer(f"the answer is larger than {self.max_answer_bytes} bytes")
            return
        body = bytearray()
        for chunk in response.iter_content(chunk_size=16384):
            body += chunk
            if len(body) > self.max_answer_bytes:
                raise UnsafeAnswer(f"the answer is larger than {self.max_answer_bytes} bytes")
            if time.monotonic() > deadline:
                raise UnsafeAnswer(f"no complete answer within {self.timeout:g} s")
        response._content = bytes(body)
        response._content_consumed = True

    @staticmethod
    def _check(response: requests.Response) -> None:
        """Refuse what no OAuth endpoint answers; 5xx stay the libraries' to report (without the body)."""
        status = response.status_code
        if 300 <= status < 400:
            raise UnsafeAnswer(f"the endpoint answered with a redirect (HTTP {status}), which is never followed")
        if status >= 500:
            return
        try:
            json.loads(response.content or b"null")
        except ValueError:
            kind = (response.headers.get("Content-Type") or "no content type").split(";")[0][:64]
            raise UnsafeAnswer(f"the endpoint answered HTTP {status} with {kind}, not JSON") from None

    def check_allowed(self, url: str) -> None:
        """Raise :class:`EndpointNotAllowed` for a URL the installer did not allow."""
        if self.allowed_hosts is not None and not endpoints.allowed(url, self.allowed_hosts):
            raise EndpointNotAllowed(endpoints.refusal(url))

    @property
    def last_retry_after(self) -> float | None:
        """Retry-After (seconds, bounded) of this thread's last failed response, if any."""
        return getattr(self._local, "retry_after", None)

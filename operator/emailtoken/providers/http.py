"""The one HTTP client the OAuth libraries share, and the limits every provider answer meets.

Why our own client: msal takes any object with ``get``/``post`` that answers with
``status_code``, ``text`` and ``headers`` (its documented ``http_client``), and google-auth
any ``google.auth.transport.Request``; both are served here straight from urllib3's
connection pools. ``requests`` in between cost about a third of a provider call's CPU
(bench/README.md) and brought environment rules of its own (``REQUESTS_CA_BUNDLE`` silently
overriding a pinned CA). The connection pool is as large as the number of threads that call
at once, so no extra caller pays a TLS handshake.

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
import http.client
import itertools
import json
import math
import os
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

import urllib3
import urllib3.connection
import urllib3.exceptions
import urllib3.util.ssl_
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from emailtoken import endpoints
from emailtoken.providers.proxies import Proxies

DEFAULT_TIMEOUT = 20.0
MAX_ANSWER_BYTES = 1 << 20  # OAuth answers are a few KiB; discovery documents under 10 KiB
MAX_RETRY_AFTER = 3600.0  # a provider may ask for a pause, not for a day
RECHECK = 0.1  # seconds between looks at a request past its deadline (a socket made since is shut)


class ProviderHTTPError(Exception):
    """A provider request that got no usable answer; the message is ours and carries no body."""


class Unreachable(ProviderHTTPError):
    """No answer: the connection, its TLS handshake or its proxy failed. The message is the cause's type."""


class TimedOut(Unreachable):
    """The connection or an answer's next bytes did not come within the timeout."""


class UnsafeAnswer(ProviderHTTPError):
    """The endpoint answered as no OAuth endpoint does."""


class EndpointNotAllowed(UnsafeAnswer):
    """The URL's host is not on the installer's list: nothing was sent."""


class _Watch:
    """One request's deadline and the sockets its connections use."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.sockets: list[Any] = []
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
            watch.sockets.clear()  # it stays in the heap until the thread next wakes

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
                # Shut under the lock: a finished request's connection may already serve another.
                for sock in watch.sockets:
                    _shut(sock)
                # And look again until the request ends: a socket may be made after the deadline
                # (DNS, one address after another) and must not then serve a slow answer.
                heapq.heappush(self._heap, (time.monotonic() + RECHECK, next(self._ids), watch))


def _shut(sock: Any) -> None:
    """Shut a socket (a blocked read then returns); behind an https proxy it is urllib3's
    SSLTransport over the real one."""
    sock = getattr(sock, "socket", sock)
    with contextlib.suppress(Exception):  # the watchdog thread must outlive any one socket
        sock.shutdown(socket.SHUT_RDWR)


_WATCHDOG = _Watchdog()
_current = threading.local()


def _remember(sock: Any) -> None:
    """Record a socket with the calling thread's request: the object itself, since a response read
    to its end by ``Connection: close`` keeps the socket after the connection forgets it."""
    watch: _Watch | None = getattr(_current, "watch", None)
    if watch is not None and sock is not None:
        watch.sockets.append(sock)


class _HTTPConnection(urllib3.connection.HTTPConnection):
    def connect(self) -> None:
        super().connect()
        _remember(self.sock)


class _HTTPSConnection(urllib3.connection.HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        _remember(self.sock)


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection

    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = super()._get_conn(timeout)
        _remember(conn.sock)  # a kept-alive connection's socket; a new one's is recorded at connect
        return conn


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection

    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = super()._get_conn(timeout)
        _remember(conn.sock)
        return conn


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


class Answer:
    """A complete, bounded answer: what msal reads (``status_code``, ``text``, ``headers``) and ``json()``."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: Mapping[str, str], content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content

    @property
    def text(self) -> str:
        """The body as msal parses it; :meth:`ProviderSession._check` parsed exactly this string."""
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.text)

    def raise_for_status(self) -> None:
        """Part of msal's response shape; msal's own wrapper answers it, with the status only."""
        if self.status_code >= 400:
            raise ProviderHTTPError(f"HTTP {self.status_code}")


def _tls_context(ca_bundle: str | None) -> ssl.SSLContext:
    """One verifying TLS context for every connection (urllib3 would build and load one per connection).

    Trusted: the pinned bundle; else ``REQUESTS_CA_BUNDLE`` or ``CURL_CA_BUNDLE``, as requests
    read them, or ``SSL_CERT_FILE``; else certifi's bundle, as requests used; a directory of
    hashed certificates (like /etc/ssl/certs) works as a bundle."""
    context = urllib3.util.ssl_.create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
    path = ca_bundle
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        path = path or os.environ.get(name) or None
    if path is None:
        try:
            import certifi
        except ImportError:  # the system's store then
            context.load_default_certs()
            return context
        path = str(certifi.where())
    try:
        if os.path.isdir(path):
            context.load_verify_locations(capath=path)
        else:
            context.load_verify_locations(cafile=path)
    except (OSError, ssl.SSLError) as exc:  # at start, not as every call failing its TLS handshake
        raise ValueError(f"the CA bundle {path} cannot be loaded ({type(exc).__name__}: {exc})") from None
    return context


def ca_bundle_problem(ca_bundle: str | None) -> str | None:
    """Why the CA bundle (``--ca-bundle``, else the environment's) cannot be used, in one line, or
    None: checked at start, so that it is said once rather than as every call's failed handshake."""
    try:
        _tls_context(ca_bundle)
    except ValueError as exc:
        return str(exc)
    return None


def _form(values: Mapping[str, Any]) -> str:
    """Form-encoded as requests did: None values left out, a list as repeated keys."""
    return urllib.parse.urlencode({k: v for k, v in values.items() if v is not None}, doseq=True)


class ProviderSession:
    """One deadline per request, bounded JSON answers and Retry-After bookkeeping, over urllib3's pools.

    Proxies come from the environment (:mod:`emailtoken.providers.proxies`), read once; the CA
    bundle is ``ca_bundle`` when given (:func:`_tls_context`).
    """

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
        self.allowed_hosts = tuple(allowed_hosts) if allowed_hosts is not None else None
        self.timeout = timeout
        self.max_answer_bytes = max_answer_bytes
        self._local = threading.local()
        self._options: dict[str, Any] = {
            "num_pools": 10,
            "maxsize": max(pool, 10),
            "cert_reqs": "CERT_REQUIRED",
            "ssl_context": _tls_context(ca_bundle),
            "retries": False,
        }
        self._direct = self._watched(urllib3.PoolManager(**self._options))
        self._proxies = Proxies.from_environment(os.environ)
        self._via: dict[str, urllib3.PoolManager] = {}
        self._via_lock = threading.Lock()
        self.headers = {
            "User-Agent": "emailtoken-operator",
            "Accept": "application/json",
            "Accept-Encoding": "identity",
        }

    @staticmethod
    def _watched(manager: urllib3.PoolManager) -> urllib3.PoolManager:
        manager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
        return manager

    def _manager(self, url: str) -> urllib3.PoolManager:
        proxy = self._proxies.for_url(url)
        if proxy is None:
            return self._direct
        with self._via_lock:
            if proxy.url not in self._via:
                self._via[proxy.url] = self._watched(
                    urllib3.ProxyManager(
                        proxy.url,
                        proxy_headers=dict(proxy.headers),
                        proxy_ssl_context=self._options["ssl_context"],  # an https proxy: the same trust
                        **self._options,
                    )
                )
            return self._via[proxy.url]

    def get(
        self, url: str, params: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None, **kwargs: Any
    ) -> Answer:
        """msal's ``http_client.get``."""
        return self.request("GET", url, params=params, headers=headers, **kwargs)

    def post(
        self,
        url: str,
        params: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> Answer:
        """msal's ``http_client.post``: a dict ``data`` is sent form-encoded, a string as it is."""
        return self.request("POST", url, params=params, data=data, headers=headers, **kwargs)

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **_: Any,
    ) -> Answer:
        """Send once, within ``timeout`` seconds in all, and return a complete, bounded JSON answer."""
        self._local.retry_after = None
        self.check_allowed(url)
        if params:
            url += ("&" if urllib.parse.urlsplit(url).query else "?") + _form(params)
        sent = dict(self.headers)
        if headers:
            sent.update(headers)
        body: str | bytes | None = None
        if data is not None:
            body = _form(data) if isinstance(data, Mapping) else data
            if not any(k.lower() == "content-type" for k in sent):
                sent["Content-Type"] = "application/x-www-form-urlencoded"
        limit = min(float(timeout), self.timeout) if isinstance(timeout, int | float) else self.timeout
        deadline = time.monotonic() + self.timeout
        watch = _WATCHDOG.watch(deadline)
        _current.watch = watch
        try:
            try:
                response = self._manager(url).urlopen(
                    method,
                    url,
                    body=body,
                    headers=sent,
                    redirect=False,
                    retries=False,
                    timeout=urllib3.Timeout(connect=limit, read=limit),
                    preload_content=False,
                )
            finally:
                _current.watch = None
            try:
                content = self._read_bounded(response, deadline)
            finally:
                _WATCHDOG.finish(watch)  # first: once back in the pool, the connection is another request's
                response.release_conn()
        except urllib3.exceptions.HTTPError as exc:
            if watch.fired:
                raise UnsafeAnswer(f"no complete answer within {self.timeout:g} s") from None
            raise _failure(exc) from None
        except (OSError, http.client.HTTPException) as exc:
            if watch.fired:
                raise UnsafeAnswer(f"no complete answer within {self.timeout:g} s") from None
            raise Unreachable(type(exc).__name__) from None
        finally:
            _WATCHDOG.finish(watch)
        if watch.fired:
            raise UnsafeAnswer(f"no complete answer within {self.timeout:g} s")
        # Repeated header lines joined with commas, as msal's response shape asks.
        answer = Answer(response.status, urllib3.HTTPHeaderDict(dict(response.headers.itermerged())), content)
        self._check(answer)
        if answer.status_code >= 400:
            self._local.retry_after = parse_retry_after(answer.headers.get("Retry-After"))
        return answer

    def _read_bounded(self, response: urllib3.BaseHTTPResponse, deadline: float) -> bytes:
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_answer_bytes:
            response.close()
            raise UnsafeAnswer(f"the answer is larger than {self.max_answer_bytes} bytes")
        body = bytearray()
        for chunk in response.stream(16384):
            body += chunk
            if len(body) > self.max_answer_bytes:
                response.close()
                raise UnsafeAnswer(f"the answer is larger than {self.max_answer_bytes} bytes")
            if time.monotonic() > deadline:
                response.close()
                raise UnsafeAnswer(f"no complete answer within {self.timeout:g} s")
        return bytes(body)

    @staticmethod
    def _check(answer: Answer) -> None:
        """Refuse what no OAuth endpoint answers; 5xx stay the libraries' to report (without the body)."""
        status = answer.status_code
        if 300 <= status < 400:
            raise UnsafeAnswer(f"the endpoint answered with a redirect (HTTP {status}), which is never followed")
        if status >= 500:
            return
        try:
            json.loads(answer.text or "null")  # the string msal parses: a byte-order mark or UTF-16 is refused
        except ValueError:
            kind = (answer.headers.get("Content-Type") or "no content type").split(";")[0][:64]
            raise UnsafeAnswer(f"the endpoint answered HTTP {status} with {kind}, not JSON") from None

    def check_allowed(self, url: str) -> None:
        """Raise :class:`EndpointNotAllowed` for a URL the installer did not allow."""
        if self.allowed_hosts is not None and not endpoints.allowed(url, self.allowed_hosts):
            raise EndpointNotAllowed(endpoints.refusal(url))

    @property
    def last_retry_after(self) -> float | None:
        """Retry-After (seconds, bounded) of this thread's last failed response, if any."""
        return getattr(self._local, "retry_after", None)

    def close(self) -> None:
        """Close every pooled connection (msal's ``http_client.close``)."""
        self._direct.clear()
        with self._via_lock:
            for manager in self._via.values():
                manager.clear()


def _failure(exc: urllib3.exceptions.HTTPError) -> ProviderHTTPError:
    """urllib3's error as ours, named by type only: its message may quote a proxy's or server's words."""
    # NewConnectionError is a ConnectTimeoutError in urllib3 2, though nothing timed out: refused, no route.
    if isinstance(exc, urllib3.exceptions.TimeoutError) and not isinstance(exc, urllib3.exceptions.NewConnectionError):
        return TimedOut(type(exc).__name__)
    return Unreachable(type(exc).__name__)

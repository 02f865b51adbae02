"""Wiring: the two aiohttp applications, their middleware, and the process that serves both.

Middleware gives every answer (pages, redirects, 404s, errors) the same security
headers, turns unknown routes and methods into a plain 404 page without echoing the
path, and on the admin listener refuses Host names other than loopback (DNS rebinding).
The access log writes method, path and status only: ``/callback``'s query carries the
authorization code and state, which must never reach a log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from emailtoken.callback import admin, manage, pages, public
from emailtoken.callback.context import Services
from emailtoken.callback.responses import SERVICES, html, log

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SECURITY_HEADERS = {
    "Content-Security-Policy": pages.CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}


class SafeAccessLogger(AbstractAccessLogger):
    """Access log without query strings (they carry codes and states)."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s %.1fms", request.method, request.path, response.status, time * 1000)


def _not_found(status: int = 404) -> web.Response:
    return html(pages.not_found(), status)


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Same headers on every answer; unknown routes become a 404 page (405 too on the public side)."""
    try:
        response = await handler(request)
    except web.HTTPNotFound:
        response = _not_found()
    except web.HTTPMethodNotAllowed:
        response = _not_found(404 if request.app.get(PUBLIC) else 405)
    except web.HTTPException as exc:
        response = html(pages.refused(exc.reason or "Error", exc.text or exc.reason or "", admin_url=None), exc.status)
    except Exception as exc:
        # Type only: a library's message or traceback could quote a request parameter.
        log.error("internal error on %s %s: %s", request.method, request.path, type(exc).__name__)
        response = html(
            pages.refused("InternalError", "the service failed unexpectedly; see its log", admin_url=None), 500
        )
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    return response


def hostname(host_header: str) -> str:
    """The lower-case host name of a Host header, without the port (``[::1]`` keeps its brackets)."""
    if host_header.startswith("["):
        return host_header.split("]", 1)[0].lower() + "]"
    return host_header.rsplit(":", 1)[0].lower()


@web.middleware
async def admin_host_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer only to the host names an operator reaches the admin page by (port-forward: localhost)."""
    if request.path != "/healthz":
        host = hostname(request.host or "")
        if host not in request.app[SERVICES].config.admin_hosts():
            log.warning("admin request for host %r refused", host[:100])
            return html(
                pages.refused(
                    "Forbidden",
                    "this admin page answers only to localhost (kubectl port-forward); "
                    "add --allowed-host to serve another name",
                    admin_url=None,
                ),
                421,
            )
    return await handler(request)


PUBLIC = web.AppKey("public", bool)


def build_admin_app(svc: Services) -> web.Application:
    """The admin application (list, confirm, start a sign-in; the new-token form)."""
    app = web.Application(middlewares=[security_headers, admin_host_guard], client_max_size=64 * 1024)
    app[SERVICES] = svc
    app[PUBLIC] = False
    app.add_routes(admin.routes)
    app.add_routes(manage.routes)
    return app


def build_public_app(svc: Services) -> web.Application:
    """The public application (``GET /callback``, ``/healthz``)."""
    app = web.Application(middlewares=[security_headers], client_max_size=16 * 1024)
    app[SERVICES] = svc
    app[PUBLIC] = True
    app.add_routes(public.routes)
    return app


class CallbackService:
    """Both listeners of one process; ``async with CallbackService(svc) as s`` serves until exit."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self._runners: list[web.AppRunner] = []
        self.public_port = 0
        self.admin_port = 0

    async def _serve(self, app: web.Application, host: str, port: int) -> int:
        runner = web.AppRunner(app, access_log_class=SafeAccessLogger, handle_signals=False)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, host, port)
        await site.start()
        return int(runner.addresses[0][1])

    async def start(self) -> CallbackService:
        """Listen on both ports (0 picks a free one; see ``public_port``/``admin_port``)."""
        cfg = self.svc.config
        self.public_port = await self._serve(build_public_app(self.svc), cfg.public_host, cfg.public_port)
        self.admin_port = await self._serve(build_admin_app(self.svc), cfg.admin_host, cfg.admin_port)
        return self

    async def stop(self) -> None:
        """Stop listening."""
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()

    async def __aenter__(self) -> CallbackService:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def admin_url(self) -> str:
        """Where a person on this machine opens the admin page."""
        host = self.svc.config.admin_host
        host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host  # noqa: S104 - comparing
        return f"http://{host}:{self.admin_port}/"


async def serve_forever(svc: Services) -> None:
    """Serve until SIGINT/SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with CallbackService(svc) as service:
        cfg = svc.config
        log.info(
            "callback service ready: public http://%s:%d (redirect URI %s), admin %s",
            cfg.public_host,
            service.public_port,
            cfg.redirect_uri,
            service.admin_url,
        )
        await stop.wait()
        log.info("callback service stopping")


def quiet_libraries() -> None:
    """Libraries that would log URLs with query strings (codes, states) stay at WARNING."""
    for noisy in ("urllib3", "msal", "google", "kubernetes", "aiohttp.server"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

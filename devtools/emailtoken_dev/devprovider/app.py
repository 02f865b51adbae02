"""Routes, plus the middleware that applies scripted faults and records every call.

Route names are ``<provider>.<endpoint>``; the middleware reads them to know what a
request is without inspecting anything secret. Error rendering for uncaught
:class:`OAuthError` also lives here so handlers can simply raise.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from . import control, google, introspection, microsoft
from .calls import Call
from .common import CONTEXT, Context, basic_auth, ctx, error_response, facts, form, json_response, note
from .errors import OAuthError, error_from_code, status_error
from .faults import Fault

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logging.getLogger("emailtoken_dev.devprovider")


class SafeAccessLogger(AbstractAccessLogger):
    """Access log without query strings: /revoke and /tokeninfo may carry a token there."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s %.1fms", request.method, request.path, response.status, time * 1000)


def _facts(request: web.Request, data: dict[str, str]) -> tuple[str, str, str | None, str | None]:
    """(provider, endpoint, grant_type, client_id) of a request, from its route and form."""
    name = request.match_info.route.name or "shared.unknown"
    provider, _, endpoint = name.partition(".")
    client_id = data.get("client_id") or request.query.get("client_id")
    if not client_id and endpoint == "token":
        basic = basic_auth(request)
        client_id = basic[0] if basic else None
    return provider, endpoint, data.get("grant_type"), client_id


async def _apply_fault(request: web.Request, fault: Fault, provider: str) -> web.StreamResponse | None:
    """Play a fault: wait, drop, or answer with an error. None means "now answer normally"."""
    if fault.delay:
        await asyncio.sleep(fault.delay)
    if fault.drop:
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError
    if fault.status is None and fault.error_code is None:
        return None
    dialect = "google" if provider == "google" else "microsoft"
    err = error_from_code(fault.error_code, dialect) if fault.error_code else status_error(fault.status or 500, dialect)
    if fault.status is not None:
        err.status = fault.status
    if fault.body is None:
        response = error_response(request, err)
    elif isinstance(fault.body, str):
        note(request, error=err.error)
        response = web.Response(text=fault.body, status=err.status, content_type="text/html")
    else:
        note(request, error=err.error)
        response = json_response(fault.body, err.status)
    if fault.retry_after is not None:
        response.headers["Retry-After"] = str(int(fault.retry_after))
    return response


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Record the call and apply the first matching fault; control and health routes are exempt."""
    name = request.match_info.route.name or ""
    if not name or name.startswith("control.") or name == "healthz":
        return await handler(request)
    started = time.monotonic()
    data = await form(request) if request.content_type == "application/x-www-form-urlencoded" else {}
    provider, endpoint, grant_type, client_id = _facts(request, data)
    c = ctx(request)
    fault = c.faults.take(endpoint, provider, grant_type, client_id)
    response: web.StreamResponse | None = None
    status = 500
    try:
        if fault is not None:
            response = await _apply_fault(request, fault, provider)
        if response is None:
            try:
                response = await handler(request)
            except OAuthError as err:
                response = error_response(request, err)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        noted = facts(request)
        c.calls.record(
            Call(
                endpoint=endpoint,
                method=request.method,
                provider=provider,
                tenant=request.match_info.get("tenant"),
                grant_type=grant_type,
                client_id=noted.get("client_id", client_id),
                time=c.state.now(),
                status=status if not (fault and fault.drop) else 0,
                error=noted.get("error"),
                error_code=noted.get("error_code"),
                account=noted.get("account"),
                fault=fault is not None and (fault.status is not None or fault.error_code is not None or fault.drop),
                duration=time.monotonic() - started,
                client_auth=noted.get("client_auth"),
            )
        )


async def healthz(request: web.Request) -> web.StreamResponse:
    """Liveness for the demo's probes."""
    return web.Response(text="ok")


def _resource(app: web.Application, path: str, name: str, **methods: Handler) -> None:
    resource = app.router.add_resource(path, name=name)
    for method, handler in methods.items():
        resource.add_route(method.upper(), handler)


def build_app(context: Context) -> web.Application:
    """The full provider: Microsoft, Google, introspection and the control API."""
    app = web.Application(middlewares=[control.require_token, observe])
    app[CONTEXT] = context
    ms = "/{tenant}"
    _resource(app, f"{ms}/v2.0/.well-known/openid-configuration", "microsoft.discovery", get=microsoft.discovery)
    _resource(app, f"{ms}/discovery/v2.0/keys", "microsoft.jwks", get=microsoft.jwks)
    _resource(
        app,
        f"{ms}/oauth2/v2.0/authorize",
        "microsoft.authorize",
        get=microsoft.authorize_get,
        post=microsoft.authorize_post,
    )
    _resource(app, f"{ms}/oauth2/v2.0/token", "microsoft.token", post=microsoft.token)
    _resource(app, f"{ms}/oauth2/v2.0/devicecode", "microsoft.devicecode", post=microsoft.devicecode)
    _resource(
        app, "/devicelogin", "microsoft.devicelogin", get=microsoft.devicelogin_get, post=microsoft.devicelogin_post
    )
    _resource(app, "/google/.well-known/openid-configuration", "google.discovery", get=google.discovery)
    _resource(app, "/google/oauth2/v3/certs", "google.jwks", get=google.jwks)
    _resource(app, "/google/o/oauth2/v2/auth", "google.authorize", get=google.authorize_get, post=google.authorize_post)
    _resource(app, "/google/token", "google.token", post=google.token)
    _resource(app, "/google/oauth2/v3/userinfo", "google.userinfo", get=google.userinfo)
    _resource(app, "/google/oauth2/v3/tokeninfo", "google.tokeninfo", get=google.tokeninfo, post=google.tokeninfo)
    _resource(app, "/google/revoke", "google.revoke", post=google.revoke)
    _add_shared(app)
    control.add_routes(app)
    return app


def build_introspection_app(context: Context) -> web.Application:
    """Plain-HTTP side door with only introspection and userinfo, for Dovecot (no CA to configure)."""
    app = web.Application(middlewares=[observe])
    app[CONTEXT] = context
    _add_shared(app)
    return app


def _add_shared(app: web.Application) -> None:
    _resource(app, "/introspect", "shared.introspect", get=introspection.introspect, post=introspection.introspect)
    _resource(app, "/userinfo", "shared.userinfo", get=introspection.userinfo)
    _resource(app, "/healthz", "healthz", get=healthz)

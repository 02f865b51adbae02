"""HTTP control API under ``/_control/`` for a provider running in another process.

The operator under test and the benchmark run the provider as a subprocess, so faults,
call counts and revocations must be reachable over HTTP. Every route needs
``Authorization: Bearer <control_token>`` (printed in the ready line); nothing here is
recorded in the call log.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .common import bearer, ctx, json_response
from .config import apply_config, apply_settings

if TYPE_CHECKING:
    from .server import ProviderControls

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _registry(request: web.Request) -> ProviderControls:
    registry: ProviderControls = ctx(request).extra["registry"]
    return registry


async def _json(request: web.Request) -> Any:
    if not request.can_read_body:
        return {}
    try:
        return await request.json()
    except json.JSONDecodeError as exc:
        raise web.HTTPBadRequest(text=f"invalid JSON: {exc}") from exc


@web.middleware
async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Reject control calls without the bearer secret (constant-time comparison)."""
    name = request.match_info.route.name or ""
    if name.startswith("control."):
        given = bearer(request) or ""
        if not hmac.compare_digest(given.encode(), ctx(request).control_token.encode()):
            return json_response({"error": "unauthorized"}, 401, {"WWW-Authenticate": "Bearer"})
        try:
            return await handler(request)
        except (ValueError, KeyError, TypeError) as exc:
            return json_response({"error": "bad_request", "detail": str(exc)}, 400)
    return await handler(request)


async def get_calls(request: web.Request) -> web.StreamResponse:
    """All recorded calls and counters."""
    c = ctx(request)
    return json_response({"calls": [call.to_dict() for call in c.calls.calls], "counters": c.calls.counters})


async def reset_calls(request: web.Request) -> web.StreamResponse:
    """Forget calls and counters."""
    ctx(request).calls.reset()
    return json_response({"ok": True})


async def get_faults(request: web.Request) -> web.StreamResponse:
    """Faults still queued."""
    return json_response({"faults": ctx(request).faults.pending()})


async def add_faults(request: web.Request) -> web.StreamResponse:
    """Queue one fault (object) or several (list); fields as ``FaultQueue.add``."""
    data = await _json(request)
    items = data if isinstance(data, list) else [data]
    for item in items:
        ctx(request).faults.add(**item)
    return json_response({"queued": len(items), "pending": len(ctx(request).faults)})


async def clear_faults(request: web.Request) -> web.StreamResponse:
    """Drop all queued faults."""
    ctx(request).faults.clear()
    return json_response({"ok": True})


async def post_config(request: web.Request) -> web.StreamResponse:
    """Add clients, users and service accounts; returns generated service-account keys."""
    keys = apply_config(_registry(request), await _json(request))
    return json_response({"service_account_keys": keys})


async def get_settings(request: web.Request) -> web.StreamResponse:
    """Current settings."""
    return json_response(dataclasses.asdict(ctx(request).state.settings))


async def patch_settings(request: web.Request) -> web.StreamResponse:
    """Change settings, e.g. ``{"token_lifetime": 5}``."""
    state = ctx(request).state
    with state.lock:
        apply_settings(state.settings, await _json(request))
    return json_response(dataclasses.asdict(state.settings))


async def revoke(request: web.Request) -> web.StreamResponse:
    """``{"target": email-or-refresh-token, "revoke_access_tokens": false}``."""
    data = await _json(request)
    count = ctx(request).state.revoke_grant(
        data["target"], revoke_access_tokens=bool(data.get("revoke_access_tokens", False))
    )
    return json_response({"revoked": count})


async def expire_refresh_tokens(request: web.Request) -> web.StreamResponse:
    """Expire every live refresh token."""
    return json_response({"expired": ctx(request).state.expire_all_refresh_tokens()})


async def device(request: web.Request) -> web.StreamResponse:
    """``{"user_code": ..., "email": ..., "approve": true}`` approves; ``approve: false`` denies."""
    data = await _json(request)
    state = ctx(request).state
    if data.get("approve", True):
        state.approve_device(data["user_code"], data["email"])
    else:
        state.deny_device(data["user_code"])
    return json_response({"ok": True})


async def token_info(request: web.Request) -> web.StreamResponse:
    """``{"access_token": ...}`` -> ``{"info": {...} | null}``."""
    data = await _json(request)
    return json_response({"info": ctx(request).state.token_info(data["access_token"])})


async def clock(request: web.Request) -> web.StreamResponse:
    """``{"advance": seconds}`` moves the provider's clock forward."""
    data = await _json(request)
    state = ctx(request).state
    state.advance_clock(float(data.get("advance", 0)))
    return json_response({"now": state.now()})


async def tenants(request: web.Request) -> web.StreamResponse:
    """Tenant path segments seen so far."""
    return json_response({"tenants": ctx(request).state.tenants})


def add_routes(app: web.Application) -> None:
    """Mount the control API."""
    r = app.router
    routes: list[tuple[str, str, Handler, str]] = [
        ("GET", "/_control/calls", get_calls, "control.calls"),
        ("DELETE", "/_control/calls", reset_calls, "control.calls_reset"),
        ("POST", "/_control/reset", reset_calls, "control.reset"),
        ("GET", "/_control/faults", get_faults, "control.faults"),
        ("POST", "/_control/faults", add_faults, "control.faults_add"),
        ("DELETE", "/_control/faults", clear_faults, "control.faults_clear"),
        ("POST", "/_control/config", post_config, "control.config"),
        ("GET", "/_control/settings", get_settings, "control.settings"),
        ("PATCH", "/_control/settings", patch_settings, "control.settings_patch"),
        ("POST", "/_control/revoke", revoke, "control.revoke"),
        ("POST", "/_control/expire-refresh-tokens", expire_refresh_tokens, "control.expire"),
        ("POST", "/_control/device", device, "control.device"),
        ("POST", "/_control/token-info", token_info, "control.token_info"),
        ("POST", "/_control/clock", clock, "control.clock"),
        ("GET", "/_control/tenants", tenants, "control.tenants"),
    ]
    for method, path, handler, name in routes:
        r.add_route(method, path, handler, name=name)

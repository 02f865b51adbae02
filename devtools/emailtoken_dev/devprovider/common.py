"""What every handler shares: the provider context and small HTTP helpers.

Handlers annotate the request (client id, account, OAuth error) through :func:`note` so the
call log in ``app`` can record facts without ever looking at bodies.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus, urlencode, urlsplit, urlunsplit

from aiohttp import web

from . import pages
from .calls import CallLog
from .errors import OAuthError, render
from .faults import FaultQueue
from .jws import SigningKey
from .state import State


@dataclass
class Context:
    """Everything a handler may touch, shared by the HTTP app and the Python controls."""

    state: State
    faults: FaultQueue
    calls: CallLog
    signing_key: SigningKey
    control_token: str
    introspection_user: str
    introspection_password: str
    tls: bool = True
    public_url: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def base_url(self, request: web.Request) -> str:
        """The URL clients reach us by: the configured public URL, else the request's own host."""
        if self.public_url:
            return self.public_url.rstrip("/")
        return f"{'https' if self.tls else 'http'}://{request.host}"


CONTEXT: web.AppKey[Context] = web.AppKey("devprovider.context", Context)
#: Facts handlers learn about a request (client id, account, OAuth error) for the call log.
FACTS: web.RequestKey[dict[str, Any]] = web.RequestKey("devprovider.facts", dict)


def ctx(request: web.Request) -> Context:
    """The provider context of the app serving this request."""
    return request.app[CONTEXT]


def note(request: web.Request, **facts: Any) -> None:
    """Attach non-secret facts (client_id, account, error, error_code, grant_type) to the call record."""
    request.setdefault(FACTS, {}).update(facts)


def facts(request: web.Request) -> dict[str, Any]:
    """What handlers noted about this request so far."""
    noted: dict[str, Any] = request.get(FACTS, {})
    return noted


async def form(request: web.Request) -> dict[str, str]:
    """The urlencoded body as a plain dict (aiohttp caches it, so reading twice is free)."""
    if request.method != "POST":
        return {}
    data = await request.post()
    return {k: v for k, v in data.items() if isinstance(v, str)}


def basic_auth(request: web.Request) -> tuple[str, str] | None:
    """Decode ``Authorization: Basic``; per RFC 6749 2.3.1 both halves are form-urlencoded."""
    header = request.headers.get("Authorization", "")
    if not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep:
        return None
    return unquote_plus(user), unquote_plus(password)


def bearer(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header."""
    header = request.headers.get("Authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else None


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """JSON the way token endpoints send it: never cached."""
    merged = {"Cache-Control": "no-store", "Pragma": "no-cache", **(headers or {})}
    return web.Response(
        text=json.dumps(body, separators=(",", ":")),
        status=status,
        content_type="application/json",
        charset="utf-8",
        headers=merged,
    )


def error_response(request: web.Request, err: OAuthError) -> web.Response:
    """Render an OAuthError in its provider's dialect and note it for the call log."""
    note(request, error=err.error, error_code=err.code)
    body = render(
        err,
        now=ctx(request).state.now(),
        correlation_id=request.headers.get("client-request-id"),
        base_url=ctx(request).base_url(request),
    )
    return json_response(body, err.status, err.headers)


def html_response(text: str, status: int = 200) -> web.Response:
    """An HTML page that must not be cached or framed."""
    return web.Response(
        text=text,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"},
    )


def with_query(uri: str, params: dict[str, str]) -> str:
    """Append parameters to a redirect URI that may already carry a query."""
    parts = urlsplit(uri)
    query = f"{parts.query}&{urlencode(params)}" if parts.query else urlencode(params)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def scopes_of(value: str | None) -> list[str]:
    """Split a space-separated scope parameter, keeping order and dropping duplicates."""
    return list(dict.fromkeys((value or "").split()))


def redirect_to_client(redirect_uri: str, params: dict[str, str], response_mode: str = "query") -> web.Response:
    """Send an authorization response back to the client the way it asked (query, fragment, form_post)."""
    if response_mode == "form_post":
        return html_response(pages.form_post(redirect_uri, params))
    if response_mode == "fragment":
        location = f"{redirect_uri.split('#', 1)[0]}#{urlencode(params)}"
    else:
        location = with_query(redirect_uri, params)
    return web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store"})

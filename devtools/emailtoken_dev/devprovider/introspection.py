"""Token introspection (RFC 7662) for Dovecot's ``passdb oauth2``, and a generic userinfo.

Dovecot cannot validate opaque Microsoft or Google tokens itself, so it asks us. All three
Dovecot ``introspection_mode`` values work: ``post`` (form field ``token`` with HTTP
Basic credentials), ``get`` (``?token=``, Basic credentials in the URL) and ``auth``
(the token itself as ``Authorization: Bearer``).
"""

from __future__ import annotations

import hmac

from aiohttp import web

from .common import basic_auth, bearer, ctx, form, json_response, note


def _credentials_ok(request: web.Request) -> bool:
    c = ctx(request)
    creds = basic_auth(request)
    if creds is None:
        return False
    user, password = creds
    return hmac.compare_digest(user.encode(), c.introspection_user.encode()) and hmac.compare_digest(
        password.encode(), c.introspection_password.encode()
    )


async def introspect(request: web.Request) -> web.Response:
    """``{"active": true, "email": ...}`` for a live token, ``{"active": false}`` otherwise."""
    token = bearer(request)
    if token is None:
        if not _credentials_ok(request):
            note(request, error="invalid_client")
            return json_response({"error": "invalid_client"}, 401, {"WWW-Authenticate": 'Basic realm="introspection"'})
        data = await form(request)
        token = data.get("token") or request.query.get("token", "")
    answer = ctx(request).state.introspect(token)
    note(request, account=answer.get("email"), client_id=answer.get("client_id"))
    if not answer["active"]:
        note(request, error="inactive")
    return json_response(answer)


async def userinfo(request: web.Request) -> web.Response:
    """OpenID userinfo for any live user token (Microsoft serves it from Graph; this is a stand-in)."""
    info = ctx(request).state.token_info(bearer(request) or "")
    if not info or not info["active"]:
        note(request, error="invalid_token")
        return json_response({"error": "invalid_token"}, 401, {"WWW-Authenticate": 'Bearer error="invalid_token"'})
    state = ctx(request).state
    user = state.user(info["provider"], info["email"]) if info["email"] else None
    body: dict[str, object] = {"sub": user.oid if user else info["client_id"]}
    if user:
        body.update({"email": user.email, "name": user.name, "preferred_username": user.email})
    return json_response(body)

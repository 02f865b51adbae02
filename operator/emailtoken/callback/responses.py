"""Small aiohttp helpers both listeners use: the shared services key, HTML answers, and the
admin page's CSRF token in pages and check of posted forms (one implementation for every form)."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from emailtoken.callback import pages
from emailtoken.callback.context import Services
from emailtoken.callback.csrf import COOKIE, FIELD, same_origin
from emailtoken.callback.signin import SignInRefused

SERVICES = web.AppKey("services", Services)
log = logging.getLogger("emailtoken.callback")
_CSRF = "emailtoken.csrf"  # request key: one form token (and new cookie) per request


def services(request: web.Request) -> Services:
    """The process-wide services of the app serving this request."""
    return request.app[SERVICES]


def served(request: web.Request, namespace: str) -> None:
    """Refuse (NotServed, 404) a namespace this service was not set up for."""
    if not services(request).config.serves(namespace):
        raise SignInRefused("NotServed", f"this service does not serve namespace {namespace}", status=404)


def html(text: str, status: int = 200) -> web.Response:
    """An HTML answer (the security headers are added by middleware)."""
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def refusal(
    request: web.Request, exc: SignInRefused, *, what: str, admin_link: bool = True, title: str | None = None
) -> web.Response:
    """Log the outcome (reason only, never a parameter value) and show the refusal page."""
    log.warning("%s refused: %s (HTTP %d)", what, exc.reason, exc.status)
    link = services(request).admin_link if admin_link else "/"
    return html(pages.refused(exc.reason, exc.message, admin_url=link, title=title), exc.status)


def csrf_token(request: web.Request) -> tuple[str, str | None]:
    """(form token, new cookie value or None when the browser's cookie is reused), once per request."""
    if _CSRF not in request:
        guard = services(request).csrf
        cookie = request.cookies.get(COOKIE)
        new = None
        if not cookie or len(cookie) > 64:
            cookie = new = guard.new_cookie()
        request[_CSRF] = (guard.token_for(cookie), new)
    return request[_CSRF]


def html_page(request: web.Request, text: str, status: int = 200) -> web.Response:
    """An HTML page holding this request's form token, setting the cookie it was made for if new."""
    response = html(text, status)
    _, cookie = csrf_token(request)
    if cookie:
        response.set_cookie(COOKIE, cookie, httponly=True, samesite="Strict", path="/")
    return response


async def posted_form(request: web.Request) -> MultiDictProxy[Any]:
    """The posted form, once the request proved it comes from this page (CSRF) -- else a refusal."""
    form = await request.post()
    field = form.get(FIELD)
    own_origin = f"{request.scheme}://{request.host}"
    if not same_origin(request.headers, own_origin) or not services(request).csrf.check(
        request.cookies.get(COOKIE), field if isinstance(field, str) else None
    ):
        raise SignInRefused(
            "CsrfFailed", "the request did not come from this admin page (missing or stale form token)", status=403
        )
    return form

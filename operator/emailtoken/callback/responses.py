"""Small aiohttp helpers both listeners use: the shared services key and HTML answers."""

from __future__ import annotations

import logging

from aiohttp import web

from emailtoken.callback import pages
from emailtoken.callback.context import Services
from emailtoken.callback.signin import SignInRefused

SERVICES = web.AppKey("services", Services)
log = logging.getLogger("emailtoken.callback")


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

"""The admin listener: list tokens, confirm, and start a sign-in ("Get Email Token").

Reached with ``kubectl port-forward`` (RBAC on pods/portforward is the access control),
so it answers only to loopback host names unless told otherwise (DNS rebinding), and
its state-changing actions (here the sign-in; the form's in :mod:`.manage`) are POSTs
guarded by a CSRF token.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from emailtoken.callback import pages, pkce
from emailtoken.callback.responses import csrf_token, html_page, log, posted_form, refusal, served, services
from emailtoken.callback.signin import SignInRefused, api_refused, authorization_url, existing_token, load_token
from emailtoken.callback.tokens import CALLBACK_FLOWS, TokenRow, row_of, rows_of
from emailtoken.callback.tokenwrite import editable
from emailtoken.kube import KubeError
from emailtoken.outcomes import ProviderError

routes = web.RouteTableDef()
#: What the confirm page says after the form wrote the token (a fixed text per query key, nothing echoed).
NOTICES = {
    "created": "The EmailToken and its credential Secret were created. Next: Get Email Token.",
    "updated": "The EmailToken was saved.",
}


@routes.get("/")
async def index(request: web.Request) -> web.Response:
    """Every EmailToken this service can see, with its state and a sign-in button."""
    svc = services(request)
    token, _ = csrf_token(request)
    error = None
    objects: list[dict[str, object]] = []
    try:
        objects = await svc.api.list_tokens(svc.config.namespaces)
    except KubeError as exc:
        error = f"The EmailTokens could not be listed: {api_refused(exc, 'listing EmailTokens').message}"
    rows = rows_of(objects)
    # Edit and Delete only for tokens this page created, and only when it may write (--manage-tokens).
    mine = frozenset(
        (str(o["metadata"].get("namespace")), str(o["metadata"].get("name")))  # type: ignore[union-attr]
        for o in objects
        if svc.config.manage_tokens and editable(o)
    )
    page = pages.admin_index(
        rows,
        redirect_uri=svc.config.redirect_uri,
        csrf_token=token,
        namespaces=svc.config.namespaces,
        now=svc.now(),
        error=error,
        editable=mine,
    )
    return html_page(request, page, 503 if error else 200)


async def _row(request: web.Request, namespace: str, name: str) -> TokenRow:
    served(request, namespace)
    return row_of(await existing_token(services(request).api, namespace, name))


@routes.get("/authorize/{namespace}/{name}")
async def confirm(request: web.Request) -> web.Response:
    """The page ``status.authorizeUrl`` points to: what will happen, and the button."""
    svc = services(request)
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    try:
        row = await _row(request, namespace, name)
    except SignInRefused as exc:
        return refusal(request, exc, what=f"confirm page for {namespace}/{name}", admin_link=False)
    token, _ = csrf_token(request)
    notice = NOTICES.get(next(iter(request.query), ""), "")
    page = pages.confirm(row, redirect_uri=svc.config.redirect_uri, csrf_token=token, now=svc.now(), notice=notice)
    return html_page(request, page)


@routes.post("/tokens/{namespace}/{name}/authorize")
async def start(request: web.Request) -> web.Response:
    """Start a sign-in: seal the PKCE verifier into the state, 303 to the provider (nothing is kept here)."""
    svc = services(request)
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    what = f"sign-in for {namespace}/{name}"
    try:
        await posted_form(request)
    except SignInRefused as exc:
        return refusal(request, exc, what=what, admin_link=False)
    try:
        served(request, namespace)
        token, spec = await load_token(svc.api, namespace, name, flows=CALLBACK_FLOWS)
        provider = svc.providers.for_spec(spec.provider)
        verifier = pkce.new_verifier()
        state, _ = svc.sealer.seal(token, verifier=verifier)
        try:
            url = await asyncio.to_thread(
                authorization_url, provider, spec, redirect_uri=svc.config.redirect_uri, state=state, verifier=verifier
            )
        except ProviderError as perr:
            raise SignInRefused(
                "ProviderUnavailable", f"the sign-in address could not be built: {perr.message}", status=502
            ) from None
    except SignInRefused as exc:
        return refusal(request, exc, what=what, admin_link=False)
    log.info("%s started (%s)", what, spec.provider)
    # The target comes from the EmailToken's spec (cluster configuration), never from the request.
    return web.Response(status=303, headers={"Location": url})


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.Response(text="ok\n")

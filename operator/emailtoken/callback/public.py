"""The public listener: ``GET /callback`` (the provider's redirect) and ``/healthz``, nothing else.

Stateless between the two legs: the sealed state carries the sign-in (see :mod:`.state`),
so any replica holding the key finishes it, and a restart loses nothing. Order of checks,
each refusing with a page and storing nothing: the state's seal and age, the provider's
own error, then the live token (same uid), whether the grant Secret records this sign-in
as completed, the code exchange with the sealed PKCE verifier, and the account pinned to
emailAddress. Only then is the grant written, recording the sign-in in the same
compare-and-swap write (single use). A refusal consumes nothing: a stranger's
``?error=`` or bad code cannot cancel someone's sign-in. No parameter value is ever
logged or echoed into a redirect; the success page links to the configured admin URL only.
"""

from __future__ import annotations

from aiohttp import web

from emailtoken.callback import pages
from emailtoken.callback.responses import html, log, refusal, services
from emailtoken.callback.signin import SignInRefused, complete, load_token
from emailtoken.callback.state import StateError
from emailtoken.callback.tokens import CALLBACK_FLOWS

routes = web.RouteTableDef()
MAX_DESCRIPTION = 400
_WHAT = "emailtoken.what"  # request key: which token a refusal is about, for the log


def _provider_error(error: str, description: str) -> SignInRefused:
    text = f"the provider reported an error: {error[:100]}"
    if description:
        cut = description[:MAX_DESCRIPTION] + ("…" if len(description) > MAX_DESCRIPTION else "")
        text += f" ({cut})"
    if error == "access_denied":
        text = "the sign-in was cancelled or consent was refused at the provider: " + text
    return SignInRefused("ProviderError", text, status=400)


async def _finish(request: web.Request) -> web.Response:
    svc = services(request)
    query = request.query
    state = query.get("state", "")
    if not state:
        raise SignInRefused("MissingState", "the request has no state parameter", status=400)
    try:
        sign_in = svc.sealer.open(state)
    except StateError as exc:
        raise SignInRefused(exc.reason, str(exc), status=400) from None
    what = f"sign-in for {sign_in.namespace}/{sign_in.name}"
    request[_WHAT] = what
    if not svc.config.serves(sign_in.namespace):
        raise SignInRefused("NotServed", f"this service does not serve namespace {sign_in.namespace}", status=404)
    if query.get("error"):
        raise _provider_error(query["error"], query.get("error_description", ""))
    code = query.get("code", "")
    if not code:
        raise SignInRefused("MissingCode", "the provider sent no authorization code", status=400)
    token, spec = await load_token(svc.api, sign_in.namespace, sign_in.name, flows=CALLBACK_FLOWS)
    if token != sign_in.token:
        raise SignInRefused("TokenReplaced", f"EmailToken {token} was replaced since the sign-in started", status=409)
    provider = svc.providers.for_spec(spec.provider)
    result = await complete(
        svc.api,
        provider,
        token,
        spec,
        code=code,
        redirect_uri=svc.config.redirect_uri,
        verifier=sign_in.verifier,
        sign_in=sign_in,
        federation=svc.config.federation,
        sa_tokens=svc.sa_tokens,
    )
    log.info("%s completed: grant stored for account %s", what, result.account or "(unnamed)")
    page = pages.success(
        token=str(result.token),
        account=result.account,
        provider=result.provider,
        expires_at=result.expires_at,
        secret_name=result.secret_name,
        admin_url=svc.admin_link,
        now=svc.now(),
    )
    return html(page)


@routes.get("/callback", allow_head=False)  # a HEAD (link scanners) must not spend the sign-in
async def callback(request: web.Request) -> web.Response:
    """Complete a sign-in started on the admin page."""
    try:
        return await _finish(request)
    except SignInRefused as exc:
        return refusal(request, exc, what=request.get(_WHAT, "sign-in callback"))


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """Liveness and readiness: the process answers."""
    return web.Response(text="ok\n")

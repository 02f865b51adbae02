"""Google OAuth 2.0 endpoints: auth, token (code, refresh, JWT bearer), userinfo, tokeninfo, revoke.

Google's rules that bite in production are reproduced: a refresh token only with
``access_type=offline`` and (first consent or ``prompt=consent``); refresh tokens are not
rotated by default; ``email``/``profile`` come back as their long userinfo scope names;
service-account assertions carry ``aud=https://oauth2.googleapis.com/token`` whatever
``token_uri`` the key file names; errors are terse (``Token has been expired or revoked.``).
"""

from __future__ import annotations

import hashlib

from aiohttp import web

from . import pages
from .common import (
    basic_auth,
    bearer,
    ctx,
    error_response,
    form,
    html_response,
    json_response,
    note,
    redirect_to_client,
    scopes_of,
)
from .errors import OAuthError, google_error
from .jws import AssertionRejected, b64url, unverified, verify_rs256
from .state import Client, Grant, GrantError, LoginRequest, User

ISSUER = "https://accounts.google.com"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SCOPE_ALIASES = {
    "email": "https://www.googleapis.com/auth/userinfo.email",
    "profile": "https://www.googleapis.com/auth/userinfo.profile",
}
#: Audiences Google accepts in a service-account assertion (google-auth always sends the first).
ASSERTION_AUDIENCES = (
    "https://oauth2.googleapis.com/token",
    "https://www.googleapis.com/oauth2/v4/token",
    "https://accounts.google.com/o/oauth2/token",
)
#: Clock skew Google tolerates on iat/exp.
SKEW = 300
MAX_ASSERTION_LIFETIME = 3600


def normalize(scopes: list[str]) -> list[str]:
    """Google's spelling of granted scopes (``email`` -> ``.../auth/userinfo.email``)."""
    return list(dict.fromkeys(SCOPE_ALIASES.get(s, s) for s in scopes))


# ------------------------------------------------------------------- discovery
async def discovery(request: web.Request) -> web.Response:
    """OpenID configuration with this server's endpoints and Google's issuer."""
    base = f"{ctx(request).base_url(request)}/google"
    return json_response(
        {
            "issuer": ISSUER,
            "authorization_endpoint": f"{base}/o/oauth2/v2/auth",
            "token_endpoint": f"{base}/token",
            "userinfo_endpoint": f"{base}/oauth2/v3/userinfo",
            "revocation_endpoint": f"{base}/revoke",
            "jwks_uri": f"{base}/oauth2/v3/certs",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "email", "profile"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "code_challenge_methods_supported": ["plain", "S256"],
            "grant_types_supported": ["authorization_code", "refresh_token", JWT_BEARER],
        },
        headers={"Cache-Control": "public, max-age=3600"},
    )


async def jwks(request: web.Request) -> web.Response:
    """The id_token signing key."""
    return json_response({"keys": [ctx(request).signing_key.jwk()]}, headers={"Cache-Control": "max-age=3600"})


# ------------------------------------------------------------------------ auth
def _page(title: str, message: str, status: int = 400) -> web.Response:
    return html_response(pages.error(title=title, message=message), status)


async def authorize_get(request: web.Request) -> web.Response:
    """Validate the request like accounts.google.com and show the sign-in form."""
    c = ctx(request)
    q = request.query
    client_id = q.get("client_id", "")
    note(request, client_id=client_id or None)
    if not client_id:
        return _page("Error 400: invalid_request", "Missing required parameter: client_id")
    client = c.state.client(client_id, "google")
    if client is None:
        return _page("Error 401: invalid_client", "The OAuth client was not found.", 401)
    redirect_uri = q.get("redirect_uri", "")
    if not redirect_uri:
        return _page("Error 400: invalid_request", "Missing required parameter: redirect_uri")
    if not client.redirect_ok(redirect_uri):
        return _page(
            "Error 400: redirect_uri_mismatch",
            "You can't sign in to this app because it doesn't comply with Google's OAuth 2.0 policy. "
            f"Request details: redirect_uri={redirect_uri}",
        )
    scopes = scopes_of(q.get("scope"))
    if not scopes:
        return _page("Error 400: invalid_request", "Missing required parameter: scope")
    access_type = q.get("access_type", "online")
    if access_type not in ("online", "offline"):
        return _page("Error 400: invalid_request", f"Invalid access_type: {access_type}")
    challenge = q.get("code_challenge")
    method = q.get("code_challenge_method") or ("plain" if challenge else None)
    if challenge and method not in ("S256", "plain"):
        return _page("Error 400: invalid_request", f"Invalid code_challenge_method: {method}")
    state = q.get("state")
    if q.get("response_type") != "code":
        params = {"error": "unsupported_response_type", **({"state": state} if state else {})}
        note(request, error="unsupported_response_type")
        return redirect_to_client(redirect_uri, params)
    prompts = set(q.get("prompt", "").split())
    if "none" in prompts:
        note(request, error="interaction_required")
        return redirect_to_client(
            redirect_uri, {"error": "interaction_required", **({"state": state} if state else {})}
        )
    login = LoginRequest(
        provider="google",
        tenant="google",
        client_id=client_id,
        redirect_uri=redirect_uri,
        scopes=scopes,
        state=state,
        nonce=q.get("nonce"),
        code_challenge=challenge,
        code_challenge_method=method,
        login_hint=q.get("login_hint"),
        offline=access_type == "offline",
        consent="consent" in prompts,
    )
    txn = c.state.begin_login(login)
    return html_response(
        pages.sign_in(
            provider="google",
            app_name=client.name,
            action=request.path,
            txn=txn,
            email=login.login_hint or "",
            scopes=scopes,
        )
    )


async def authorize_post(request: web.Request) -> web.Response:
    """Check the credentials and redirect back with ``code``, ``scope`` and ``state``."""
    c = ctx(request)
    data = await form(request)
    txn = data.get("txn", "")
    login = c.state.login(txn)
    if login is None:
        return _page("Error 400: invalid_request", "This sign-in request has expired. Start again.")
    note(request, client_id=login.client_id)
    if data.get("action") == "cancel":
        c.state.end_login(txn)
        note(request, error="access_denied")
        return redirect_to_client(
            login.redirect_uri, {"error": "access_denied", **({"state": login.state} if login.state else {})}
        )
    client = c.state.client(login.client_id, "google")
    try:
        user = c.state.authenticate("google", data.get("email", ""), data.get("password", ""))
    except GrantError as err:
        message = {
            "no_user": "Couldn't find your Google Account.",
            "bad_password": "Wrong password. Try again or click Forgot password to reset it.",
            "user_disabled": "Your account has been disabled.",
        }.get(err.reason, "Sign-in failed.")
        note(request, error="invalid_credentials")
        return html_response(
            pages.sign_in(
                provider="google",
                app_name=client.name if client else login.client_id,
                action=request.path,
                txn=txn,
                email=data.get("email", ""),
                scopes=login.scopes,
                error=message,
            )
        )
    # A refresh token comes only with offline access, and only on first consent unless the
    # app insists with prompt=consent: the classic "why is refresh_token missing" trap.
    login.offline = login.offline and (login.consent or not c.state.has_consented(login.client_id, user.email))
    code = c.state.issue_code(login, user)
    c.state.end_login(txn)
    note(request, account=user.email)
    params = {}
    if login.state:
        params["state"] = login.state
    params.update({"iss": ISSUER, "code": code, "scope": " ".join(normalize(login.scopes)), "authuser": "0"})
    if login.consent:
        params["prompt"] = "consent"
    return redirect_to_client(login.redirect_uri, params)


# ----------------------------------------------------------------------- token
def _grant_error(err: GrantError, *, kind: str) -> OAuthError:
    """Google's wording for a neutral grant failure."""
    r = err.reason
    if r == "client_mismatch":
        return google_error("unauthorized_client")
    if r == "redirect_mismatch":
        return google_error("redirect_uri_mismatch")
    if r == "pkce_missing":
        return google_error("invalid_grant_missing_verifier")
    if r == "pkce_mismatch":
        return google_error("invalid_grant_bad_verifier")
    if kind == "code" or r == "unknown":
        return google_error("invalid_grant_bad_request")
    return google_error("invalid_grant_google")


def _authenticate_client(request: web.Request, data: dict[str, str]) -> Client:
    c = ctx(request)
    basic = basic_auth(request)
    client_id, secret = basic if basic else (data.get("client_id", ""), data.get("client_secret", ""))
    note(request, client_id=client_id or None)
    if not client_id:
        raise google_error("invalid_request_client_id")
    client = c.state.client(client_id, "google")
    if client is None:
        raise google_error("invalid_client_not_found")
    if secret:
        if client.secrets and not client.secret_ok(secret):
            raise google_error("invalid_client_google")
    elif not client.public:
        raise google_error("invalid_request_client_secret")
    return client


async def token(request: web.Request) -> web.Response:
    """oauth2.googleapis.com/token."""
    data = await form(request)
    grant_type = data.get("grant_type", "")
    try:
        if grant_type == JWT_BEARER:
            return _jwt_bearer(request, data)
        if grant_type not in ("authorization_code", "refresh_token"):
            raise google_error("unsupported_grant_type_google", grant_type=grant_type)
        client = _authenticate_client(request, data)
        if grant_type == "authorization_code":
            return _authorization_code(request, client, data)
        return _refresh_token(request, client, data)
    except OAuthError as err:
        return error_response(request, err)


def _authorization_code(request: web.Request, client: Client, data: dict[str, str]) -> web.Response:
    c = ctx(request)
    code = data.get("code", "")
    if not code:
        raise google_error("invalid_request_google", param="code")
    try:
        rec = c.state.redeem_code("google", code, client.client_id, data.get("redirect_uri"), data.get("code_verifier"))
    except GrantError as err:
        raise _grant_error(err, kind="code") from None
    user = c.state.user("google", rec.email)
    if user is None or user.disabled:
        raise google_error("invalid_grant_bad_request")
    scopes = normalize(rec.scopes)
    grant = c.state.create_grant("google", "google", client.client_id, user.email, scopes) if rec.offline else None
    refresh = c.state.issue_refresh_token(grant) if grant else None
    return _user_tokens(request, client, user, scopes, grant, refresh, nonce=rec.nonce)


def _refresh_token(request: web.Request, client: Client, data: dict[str, str]) -> web.Response:
    c = ctx(request)
    presented = data.get("refresh_token", "")
    if not presented:
        raise google_error("invalid_request_google", param="refresh_token")
    requested = normalize(scopes_of(data.get("scope")))

    def consented(grant: Grant) -> None:
        if not set(requested) <= set(grant.scopes):
            raise google_error("invalid_scope_google")

    try:
        grant, new_refresh = c.state.refresh(
            "google",
            presented,
            client.client_id,
            reissue=c.state.settings.rotation.get("google", False),
            check=consented,
        )
    except GrantError as err:
        raise _grant_error(err, kind="refresh") from None
    user = c.state.user("google", grant.email)
    assert user is not None  # state.refresh checked it
    return _user_tokens(request, client, user, requested or grant.scopes, grant, new_refresh, nonce=None)


def _user_tokens(
    request: web.Request,
    client: Client,
    user: User,
    scopes: list[str],
    grant: Grant | None,
    refresh: str | None,
    *,
    nonce: str | None,
) -> web.Response:
    c = ctx(request)
    note(request, account=user.email)
    raw, rec = c.state.issue_access_token(
        kind="user",
        provider="google",
        client_id=client.client_id,
        email=user.email,
        scopes=scopes,
        tenant="google",
        grant_id=grant.grant_id if grant else None,
    )
    body: dict[str, object] = {
        "access_token": raw,
        "expires_in": int(rec.expires_at - rec.issued_at),
    }
    if refresh:
        body["refresh_token"] = refresh
    ends = c.state.refresh_deadline(grant) if grant else None
    if ends is not None:  # Google states a time-limited grant's end (an app in Testing: 7 days)
        body["refresh_token_expires_in"] = max(0, int(ends - c.state.now()))
    body.update({"scope": " ".join(scopes), "token_type": "Bearer"})
    if "openid" in scopes:
        body["id_token"] = _id_token(request, client, user, scopes, raw, nonce)
    return json_response(body)


def _id_token(
    request: web.Request, client: Client, user: User, scopes: list[str], access_token: str, nonce: str | None
) -> str:
    c = ctx(request)
    now = int(c.state.now())
    claims: dict[str, object] = {
        "iss": ISSUER,
        "azp": client.client_id,
        "aud": client.client_id,
        "sub": user.google_id,
        "at_hash": b64url(hashlib.sha256(access_token.encode()).digest()[:16]),
        "iat": now,
        "exp": now + 3600,
    }
    if SCOPE_ALIASES["email"] in scopes:
        claims.update({"email": user.email, "email_verified": True})
    if SCOPE_ALIASES["profile"] in scopes:
        claims["name"] = user.name
    if nonce:
        claims["nonce"] = nonce
    return c.signing_key.sign(claims)


def _jwt_bearer(request: web.Request, data: dict[str, str]) -> web.Response:
    """Service-account token (RFC 7523), with domain-wide delegation when ``sub`` names a user."""
    c = ctx(request)
    assertion = data.get("assertion", "")
    if not assertion:
        raise google_error("invalid_request_google", param="assertion")
    try:
        header, claims = unverified(assertion)
    except AssertionRejected:
        raise google_error("invalid_grant_jwt_signature") from None
    sa = c.state.service_account(str(claims.get("iss", "")))
    if sa is None:
        raise google_error("invalid_grant_account_not_found")
    note(request, client_id=sa.client_id)
    kid = header.get("kid")
    keys = [sa.keys[kid]] if kid in sa.keys else ([] if kid else list(sa.keys.values()))
    try:
        claims = verify_rs256(assertion, keys)
    except AssertionRejected:
        raise google_error("invalid_grant_jwt_signature") from None
    allowed_aud = (*ASSERTION_AUDIENCES, f"{c.base_url(request)}/google/token")
    if claims.get("aud") not in allowed_aud:
        raise google_error("invalid_grant_jwt_audience")
    now = c.state.now()
    iat, exp = claims.get("iat"), claims.get("exp")
    if (
        not isinstance(iat, int | float)
        or not isinstance(exp, int | float)
        or iat > now + SKEW
        or exp < now - SKEW
        or exp - iat > MAX_ASSERTION_LIFETIME
    ):
        raise google_error("invalid_grant_jwt_time")
    scopes = scopes_of(str(claims.get("scope", "")))
    if not scopes:
        raise google_error("invalid_scope_google")
    subject = claims.get("sub")
    email = sa.email
    if subject and subject != sa.email:
        user = c.state.user("google", str(subject))
        if user is None or user.disabled:
            raise google_error("invalid_grant_subject")
        if sa.subjects is not None and user.email.lower() not in sa.subjects:
            raise google_error("unauthorized_client_dwd")
        if sa.scopes is not None and not set(scopes) <= set(sa.scopes):
            raise google_error("unauthorized_client_dwd")
        email = user.email
    note(request, account=email)
    raw, rec = c.state.issue_access_token(
        kind="service_account", provider="google", client_id=sa.client_id, email=email, scopes=scopes, tenant="google"
    )
    return json_response(
        {"access_token": raw, "expires_in": int(rec.expires_at - rec.issued_at), "token_type": "Bearer"}
    )


# --------------------------------------------------------- userinfo and friends
async def userinfo(request: web.Request) -> web.Response:
    """openidconnect.googleapis.com/v1/userinfo for a Bearer access token."""
    info = ctx(request).state.token_info(bearer(request) or "")
    if not info or not info["active"] or not info["email"]:
        note(request, error="invalid_token")
        return json_response(
            {"error": "invalid_request", "error_description": "Invalid Credentials"},
            401,
            {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", error="invalid_token"'},
        )
    user = ctx(request).state.user("google", info["email"])
    body: dict[str, object] = {
        "sub": user.google_id if user else info["client_id"],
        "email": info["email"],
        "email_verified": True,
    }
    if user:
        body["name"] = user.name
    return json_response(body)


async def tokeninfo(request: web.Request) -> web.Response:
    """www.googleapis.com/oauth2/v3/tokeninfo: what Google says about an access token."""
    data = await form(request)
    token_value = data.get("access_token") or request.query.get("access_token", "")
    info = ctx(request).state.token_info(token_value)
    if not info or not info["active"]:
        note(request, error="invalid_token")
        return json_response({"error": "invalid_token", "error_description": "Invalid Value"}, 400)
    now = ctx(request).state.now()
    return json_response(
        {
            "azp": info["client_id"],
            "aud": info["client_id"],
            "scope": info["scope"],
            "exp": str(int(info["expires_at"])),
            "expires_in": str(max(0, int(info["expires_at"] - now))),
            "email": info["email"] or "",
            "email_verified": "true",
            "access_type": "offline" if info["grant_id"] else "online",
        }
    )


async def revoke(request: web.Request) -> web.Response:
    """oauth2.googleapis.com/revoke: ends the grant behind a refresh or access token."""
    data = await form(request)
    token_value = data.get("token") or request.query.get("token", "")
    if not ctx(request).state.revoke_token(token_value):
        note(request, error="invalid_token")
        return json_response({"error": "invalid_token", "error_description": "Token expired or revoked"}, 400)
    return json_response({})

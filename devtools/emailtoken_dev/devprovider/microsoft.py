"""Microsoft Entra ID v2.0 endpoints: discovery, authorize, token, device code, device login.

Shaped after what msal 1.39 reads: discovery fields, ``client_info`` (``uid``/``utid``),
id_token claims with the request's nonce, and AADSTS error bodies. Scope rules follow
Entra: one resource per token, ``openid profile email offline_access`` are OpenID scopes,
a bare scope means Microsoft Graph, client credentials need ``<resource>/.default``.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from urllib.parse import urlsplit

from aiohttp import web

from . import federation, pages
from .common import (
    basic_auth,
    ctx,
    error_response,
    form,
    html_response,
    json_response,
    note,
    redirect_to_client,
    scopes_of,
)
from .errors import MICROSOFT, MICROSOFT_SLOW_DOWN, OAuthError, microsoft_error
from .jws import b64url
from .state import Client, Grant, GrantError, LoginRequest, User

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
OIDC_SCOPES = frozenset({"openid", "profile", "email", "offline_access"})
MULTI_TENANT = frozenset({"common", "organizations", "consumers"})
#: Exchange Online answers to both identifier URIs; they are one resource.
_OUTLOOK_HOSTS = frozenset({"outlook.office.com", "outlook.office365.com"})
DEFAULT_TENANT_ID = str(uuid.uuid5(uuid.NAMESPACE_DNS, "devprovider.emailtoken.io"))
ID_TOKEN_LIFETIME = 3600


# ------------------------------------------------------------------ scope rules
def resource_of(scope: str) -> str:
    """The resource a scope belongs to (bare scopes are Microsoft Graph, as at Entra)."""
    if "://" not in scope:
        return "https://graph.microsoft.com"
    parts = urlsplit(scope)
    host = parts.netloc.lower()
    return "outlook" if host in _OUTLOOK_HOSTS else f"{parts.scheme}://{host}"


def split_scopes(scopes: list[str]) -> tuple[list[str], list[str]]:
    """(resource scopes, OpenID scopes); more than one resource is Entra's AADSTS28000."""
    resource = [s for s in scopes if s not in OIDC_SCOPES]
    oidc = [s for s in scopes if s in OIDC_SCOPES]
    if len({resource_of(s) for s in resource}) > 1:
        raise microsoft_error(28000, scope=" ".join(scopes))
    return resource, oidc


def granted_scope_string(scopes: list[str]) -> str:
    """What ``scope`` says in a token response: the resource's scopes, else the OpenID ones."""
    resource, oidc = split_scopes(scopes)
    return " ".join(resource or [s for s in oidc if s != "offline_access"])


def tenant_id(tenant: str, user: User | None = None) -> str:
    """The GUID behind a tenant segment (GUIDs as given, names hashed, common -> user's home)."""
    try:
        return str(uuid.UUID(tenant))
    except ValueError:
        pass
    if tenant.lower() in MULTI_TENANT:
        if user is not None and user.tenant and user.tenant.lower() not in MULTI_TENANT:
            return tenant_id(user.tenant)
        return DEFAULT_TENANT_ID
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, tenant.lower()))


def client_info(user: User, tenant: str) -> str:
    """msal's account key: base64url JSON of the object id and home tenant id."""
    data = {"uid": user.oid, "utid": tenant_id(tenant, user)}
    return b64url(json.dumps(data, separators=(",", ":")).encode())


# ------------------------------------------------------------------- discovery
async def discovery(request: web.Request) -> web.Response:
    """OpenID configuration; msal reads authorization, token and device endpoints from it."""
    tenant = request.match_info["tenant"]
    c = ctx(request)
    c.state.note_tenant(tenant)
    base = c.base_url(request)
    root = f"{base}/{tenant}"
    tid = "{tenantid}" if tenant.lower() in MULTI_TENANT else tenant_id(tenant)
    return json_response(
        {
            "token_endpoint": f"{root}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": f"{root}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{base}/{tid}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{base}/userinfo",
            "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{root}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{root}/oauth2/v2.0/logout",
            "claims_supported": [
                "sub",
                "iss",
                "aud",
                "exp",
                "iat",
                "auth_time",
                "acr",
                "nonce",
                "preferred_username",
                "name",
                "tid",
                "ver",
                "at_hash",
                "c_hash",
                "email",
            ],
            "code_challenge_methods_supported": ["plain", "S256"],
            "introspection_endpoint": f"{base}/introspect",
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
            "rbac_url": "https://pas.windows.net",
        },
        headers={"Cache-Control": "max-age=86400, private"},
    )


async def jwks(request: web.Request) -> web.Response:
    """The id_token signing key."""
    return json_response({"keys": [ctx(request).signing_key.jwk()]}, headers={"Cache-Control": "max-age=86400"})


# ------------------------------------------------------------------- authorize
def _page_error(code: int, status: int = 400, **params: str) -> web.Response:
    err = microsoft_error(code, **params)
    return html_response(
        pages.error(title="Sorry, but we're having trouble signing you in.", message=err.description), status
    )


def _redirect_error(req_uri: str, mode: str, state: str | None, err: OAuthError) -> web.Response:
    params = {"error": err.error, "error_description": err.description}
    if state:
        params["state"] = state
    return redirect_to_client(req_uri, params, mode)


async def authorize_get(request: web.Request) -> web.Response:
    """Validate an authorization request and show the sign-in form."""
    c = ctx(request)
    q = request.query
    tenant = request.match_info["tenant"]
    c.state.note_tenant(tenant)
    client_id = q.get("client_id", "")
    note(request, client_id=client_id or None)
    if not client_id:
        return _page_error(900144, param="client_id")
    client = c.state.client(client_id, "microsoft")
    if client is None:
        return _page_error(700016, client_id=client_id, tenant=tenant)
    redirect_uri = q.get("redirect_uri") or (client.redirect_uris[0] if client.redirect_uris else "")
    if not redirect_uri:
        return _page_error(900144, param="redirect_uri")
    if not client.redirect_ok(redirect_uri):
        return _page_error(50011, redirect_uri=redirect_uri, client_id=client_id)
    mode = q.get("response_mode", "query")
    if mode not in ("query", "fragment", "form_post"):
        mode = "query"
    state = q.get("state")

    def fail(err: OAuthError) -> web.Response:
        note(request, error=err.error, error_code=err.code)
        return _redirect_error(redirect_uri, mode, state, err)

    if q.get("response_type") != "code":
        return fail(microsoft_error(700054, response_type=q.get("response_type", "")))
    scopes = scopes_of(q.get("scope"))
    if not scopes:
        return fail(microsoft_error(900144, param="scope"))
    try:
        split_scopes(scopes)
    except OAuthError as err:
        return fail(err)
    challenge = q.get("code_challenge")
    method = q.get("code_challenge_method") or ("plain" if challenge else None)
    if challenge and method not in ("S256", "plain"):
        return fail(OAuthError("microsoft", 400, "invalid_request", f"Unsupported code_challenge_method '{method}'."))
    if client.require_pkce and not challenge:
        return fail(microsoft_error(9002325))
    if q.get("prompt") == "none":
        return fail(microsoft_error(50058))
    login = LoginRequest(
        provider="microsoft",
        tenant=tenant,
        client_id=client_id,
        redirect_uri=redirect_uri,
        scopes=scopes,
        state=state,
        nonce=q.get("nonce"),
        code_challenge=challenge,
        code_challenge_method=method,
        response_mode=mode,
        login_hint=q.get("login_hint"),
        client_info=q.get("client_info") == "1",
        offline="offline_access" in scopes,
    )
    txn = c.state.begin_login(login)
    return html_response(
        pages.sign_in(
            provider="microsoft",
            app_name=client.name,
            action=request.path,
            txn=txn,
            email=login.login_hint or "",
            scopes=scopes,
        )
    )


def sign_in_message(err: GrantError, client_id: str = "") -> str:
    """What the sign-in page says for a failed attempt (the AADSTS text a person would see)."""
    code = {"no_user": 50034, "bad_password": 50126, "user_disabled": 50057, "wrong_tenant": 50020}[err.reason]
    return microsoft_error(code, client_id=client_id, **err.info).description


async def authorize_post(request: web.Request) -> web.Response:
    """Check the credentials typed into the form and redirect back with a code."""
    c = ctx(request)
    data = await form(request)
    login = c.state.login(data.get("txn", ""))
    if login is None:
        return html_response(
            pages.error(title="Sign-in expired", message="This sign-in request has expired. Start again."), 400
        )
    note(request, client_id=login.client_id)
    if data.get("action") == "cancel":
        c.state.end_login(data.get("txn", ""))
        err = microsoft_error(65004)
        note(request, error=err.error, error_code=err.code)
        return _redirect_error(login.redirect_uri, login.response_mode, login.state, err)
    client = c.state.client(login.client_id, "microsoft")
    try:
        user = c.state.authenticate("microsoft", data.get("email", ""), data.get("password", ""), login.tenant)
    except GrantError as err:
        note(request, error="invalid_credentials")
        return html_response(
            pages.sign_in(
                provider="microsoft",
                app_name=client.name if client else login.client_id,
                action=request.path,
                txn=data.get("txn", ""),
                email=data.get("email", ""),
                scopes=login.scopes,
                error=sign_in_message(err, login.client_id),
            )
        )
    code = c.state.issue_code(login, user)
    c.state.end_login(data.get("txn", ""))
    note(request, account=user.email)
    params = {"code": code}
    if login.client_info:
        params["client_info"] = client_info(user, login.tenant)
    if login.state:
        params["state"] = login.state
    params["session_state"] = str(uuid.uuid4())
    return redirect_to_client(login.redirect_uri, params, login.response_mode)


# ----------------------------------------------------------------------- token
def _grant_error(err: GrantError, *, kind: str) -> OAuthError:
    """Translate a neutral grant failure into the AADSTS error Entra sends for it."""
    r, info = err.reason, err.info
    if r == "unknown":
        return microsoft_error(70018) if kind == "device" else microsoft_error(9002313)
    if r == "redeemed":
        if kind == "device":
            return microsoft_error(70000, detail="The device code was already redeemed.")
        return microsoft_error(54005)
    if r == "expired":
        return microsoft_error(70008)
    if r == "idle":
        return microsoft_error(700082, **info)
    if r == "revoked":
        if info.get("cause") == "reused":
            return microsoft_error(70000, detail="The refresh token was used twice; the grant has been revoked.")
        return microsoft_error(50173, **info)
    if r == "reused":
        return microsoft_error(70000, detail="The refresh token was used twice; the grant has been revoked.")
    if r == "rotated":
        return microsoft_error(70000, detail="The refresh token has been replaced by a newer one.")
    if r == "client_mismatch":
        return microsoft_error(70000, detail="The grant was issued to a different client.")
    if r == "redirect_mismatch":
        return microsoft_error(500112, **info)
    if r == "pkce_missing":
        return microsoft_error(50148)
    if r == "pkce_mismatch":
        return microsoft_error(501481)
    if r == "user_disabled":
        return microsoft_error(50057)
    if r == "pending":
        return microsoft_error(70016)
    if r == "slow_down":
        return OAuthError(
            "microsoft", MICROSOFT_SLOW_DOWN.status, MICROSOFT_SLOW_DOWN.error, MICROSOFT_SLOW_DOWN.description
        )
    if r == "declined":
        declined = microsoft_error(65004)
        declined.error = "authorization_declined"
        return declined
    if r == "device_expired":
        return microsoft_error(70020)
    return microsoft_error(70000, detail=r)


async def _authenticate_client(request: web.Request, data: dict[str, str], tenant: str) -> Client:
    """Client authentication: secret in the body (msal's way) or HTTP Basic, or a client assertion
    checked against the app's federated credentials; public clients present none."""
    c = ctx(request)
    basic = basic_auth(request)
    client_id, secret = basic if basic else (data.get("client_id", ""), data.get("client_secret", ""))
    note(request, client_id=client_id or None)
    if not client_id:
        raise microsoft_error(900144, param="client_id")
    client = c.state.client(client_id, "microsoft")
    if client is None:
        raise microsoft_error(700016, client_id=client_id, tenant=tenant)
    if client.public:
        if secret or data.get("client_assertion"):
            raise microsoft_error(700025)
    elif not secret and (data.get("client_assertion") or data.get("client_assertion_type")):
        federation.reject_unusable(data)
        note(request, client_auth="client_assertion")
        await federation.federation_of(c.extra).verify(client_id, data["client_assertion"], c.state.now())
    elif not secret:
        raise microsoft_error(7000218)
    elif not client.secret_ok(secret):
        raise microsoft_error(7000215, client_id=client_id)
    else:
        note(request, client_auth="client_secret")
    return client


async def token(request: web.Request) -> web.Response:
    """The token endpoint: client credentials, authorization code, refresh token, device code."""
    c = ctx(request)
    tenant = request.match_info["tenant"]
    c.state.note_tenant(tenant)
    data = await form(request)
    grant_type = data.get("grant_type", "")
    try:
        client = await _authenticate_client(request, data, tenant)
        if not grant_type:
            raise microsoft_error(900144, param="grant_type")
        if grant_type == "client_credentials":
            return _client_credentials(request, client, data, tenant)
        if grant_type == "authorization_code":
            return _authorization_code(request, client, data)
        if grant_type == "refresh_token":
            return _refresh_token(request, client, data)
        if grant_type == DEVICE_GRANT:
            return _device_code(request, client, data)
        raise microsoft_error(70003, grant_type=grant_type)
    except OAuthError as err:
        return error_response(request, err)


def _client_credentials(request: web.Request, client: Client, data: dict[str, str], tenant: str) -> web.Response:
    if client.public:
        raise microsoft_error(7000218)
    scope = data.get("scope", "")
    if not scope:
        raise microsoft_error(900144, param="scope")
    scopes = scopes_of(scope)
    if len(scopes) != 1 or not scopes[0].endswith("/.default"):
        raise microsoft_error(1002012, scope=scope)
    c = ctx(request)
    raw, rec = c.state.issue_access_token(
        kind="app", provider="microsoft", client_id=client.client_id, email=None, scopes=scopes, tenant=tenant
    )
    lifetime = int(rec.expires_at - rec.issued_at)
    return json_response(
        {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": raw}
    )


def _authorization_code(request: web.Request, client: Client, data: dict[str, str]) -> web.Response:
    c = ctx(request)
    code = data.get("code", "")
    if not code:
        raise microsoft_error(900144, param="code")
    try:
        rec = c.state.redeem_code(
            "microsoft", code, client.client_id, data.get("redirect_uri"), data.get("code_verifier")
        )
    except GrantError as err:
        raise _grant_error(err, kind="code") from None
    user = c.state.user("microsoft", rec.email)
    if user is None or user.disabled:
        raise microsoft_error(50057)
    grant = (
        c.state.create_grant("microsoft", rec.tenant, client.client_id, user.email, rec.scopes) if rec.offline else None
    )
    refresh = c.state.issue_refresh_token(grant) if grant else None
    return _user_tokens(
        request,
        client,
        user,
        rec.tenant,
        rec.scopes,
        grant,
        refresh,
        nonce=rec.nonce,
        want_client_info=data.get("client_info") == "1",
    )


def _refresh_token(request: web.Request, client: Client, data: dict[str, str]) -> web.Response:
    c = ctx(request)
    presented = data.get("refresh_token", "")
    if not presented:
        raise microsoft_error(900144, param="refresh_token")
    requested, _ = split_scopes(scopes_of(data.get("scope")))

    def consented(grant: Grant) -> None:
        """Entra refuses a resource the person never consented to, before spending anything."""
        granted, _ = split_scopes(grant.scopes)
        granted_resources = {resource_of(s) for s in granted}
        for scope in requested:
            if scope.endswith("/.default"):
                ok = resource_of(scope) in granted_resources
            else:
                ok = scope in granted
            if not ok:
                raise microsoft_error(65001, client_id=client.client_id)

    try:
        grant, new_refresh = c.state.refresh("microsoft", presented, client.client_id, reissue=True, check=consented)
    except GrantError as err:
        raise _grant_error(err, kind="refresh") from None
    user = c.state.user("microsoft", grant.email)
    assert user is not None  # state.refresh checked it
    return _user_tokens(
        request,
        client,
        user,
        grant.tenant,
        grant.scopes,
        grant,
        new_refresh,
        nonce=None,
        want_client_info=data.get("client_info") == "1",
    )


def _device_code(request: web.Request, client: Client, data: dict[str, str]) -> web.Response:
    c = ctx(request)
    device_code = data.get("device_code", "")
    if not device_code:
        raise microsoft_error(900144, param="device_code")
    try:
        rec = c.state.poll_device(device_code, client.client_id)
    except GrantError as err:
        raise _grant_error(err, kind="device") from None
    user = c.state.user("microsoft", rec.email or "")
    if user is None or user.disabled:
        raise microsoft_error(50057)
    offline = "offline_access" in rec.scopes
    grant = c.state.create_grant("microsoft", rec.tenant, client.client_id, user.email, rec.scopes) if offline else None
    refresh = c.state.issue_refresh_token(grant) if grant else None
    return _user_tokens(
        request,
        client,
        user,
        rec.tenant,
        rec.scopes,
        grant,
        refresh,
        nonce=None,
        want_client_info=data.get("client_info") == "1",
    )


def _user_tokens(
    request: web.Request,
    client: Client,
    user: User,
    tenant: str,
    scopes: list[str],
    grant: Grant | None,
    refresh: str | None,
    *,
    nonce: str | None,
    want_client_info: bool,
) -> web.Response:
    """A delegated token response: access token, optional refresh token, id_token, client_info."""
    c = ctx(request)
    note(request, account=user.email)
    scope_string = granted_scope_string(scopes)
    raw, rec = c.state.issue_access_token(
        kind="user",
        provider="microsoft",
        client_id=client.client_id,
        email=user.email,
        scopes=scope_string.split(),
        tenant=tenant,
        grant_id=grant.grant_id if grant else None,
    )
    lifetime = int(rec.expires_at - rec.issued_at)
    body: dict[str, object] = {
        "token_type": "Bearer",
        "scope": scope_string,
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": raw,
    }
    if refresh:
        body["refresh_token"] = refresh
    if "openid" in scopes:
        body["id_token"] = _id_token(request, client, user, tenant, scopes, nonce)
    if want_client_info:
        body["client_info"] = client_info(user, tenant)
    return json_response(body)


def _id_token(
    request: web.Request, client: Client, user: User, tenant: str, scopes: list[str], nonce: str | None
) -> str:
    c = ctx(request)
    now = int(c.state.now())
    tid = tenant_id(tenant, user)
    claims: dict[str, object] = {
        "aud": client.client_id,
        "iss": f"{c.base_url(request)}/{tid}/v2.0",
        "iat": now,
        "nbf": now,
        "exp": now + ID_TOKEN_LIFETIME,
        "name": user.name,
        "oid": user.oid,
        "preferred_username": user.email,
        "rh": "0.devprovider",
        # pairwise subject: stable per (user, app) like Entra's
        "sub": b64url(hashlib.sha256(f"{user.oid}:{client.client_id}".encode()).digest()),
        "tid": tid,
        "uti": secrets.token_urlsafe(16),
        "ver": "2.0",
    }
    if "email" in scopes:
        claims["email"] = user.email
    if nonce:
        claims["nonce"] = nonce
    return c.signing_key.sign(claims)


# ------------------------------------------------------------------ device code
async def devicecode(request: web.Request) -> web.Response:
    """Start a device authorization (RFC 8628) and say where the person should go."""
    c = ctx(request)
    tenant = request.match_info["tenant"]
    c.state.note_tenant(tenant)
    data = await form(request)
    client_id = data.get("client_id", "")
    note(request, client_id=client_id or None)
    try:
        if not client_id:
            raise microsoft_error(900144, param="client_id")
        if c.state.client(client_id, "microsoft") is None:
            raise microsoft_error(700016, client_id=client_id, tenant=tenant)
        scopes = scopes_of(data.get("scope"))
        if not scopes:
            raise microsoft_error(900144, param="scope")
        split_scopes(scopes)
    except OAuthError as err:
        return error_response(request, err)
    raw, rec = c.state.start_device(tenant, client_id, scopes)
    uri = f"{c.base_url(request)}/devicelogin"
    return json_response(
        {
            "user_code": rec.user_code,
            "device_code": raw,
            "verification_uri": uri,
            "expires_in": int(rec.expires_at - rec.created),
            "interval": rec.interval,
            "message": f"To sign in, use a web browser to open the page {uri} and enter the code "
            f"{rec.user_code} to authenticate.",
        }
    )


async def devicelogin_get(request: web.Request) -> web.Response:
    """The page behind ``verification_uri`` (``?otc=CODE`` pre-fills the code)."""
    code = request.query.get("otc") or request.query.get("user_code") or ""
    return html_response(pages.device_login(action=request.path, user_code=code))


async def devicelogin_post(request: web.Request) -> web.Response:
    """A person typed a code and credentials, and pressed Approve or Deny."""
    c = ctx(request)
    data = await form(request)
    user_code, email = data.get("user_code", ""), data.get("email", "")

    def again(message: str) -> web.Response:
        note(request, error="invalid_request")
        return html_response(pages.device_login(action=request.path, user_code=user_code, email=email, error=message))

    try:
        rec = c.state.device_pending(user_code)
    except KeyError:
        return again(f"AADSTS70018: {MICROSOFT[70018].description} Check the code and try again.")
    note(request, client_id=rec.client_id)
    client = c.state.client(rec.client_id, "microsoft")
    app_name = client.name if client else rec.client_id
    try:
        user = c.state.authenticate("microsoft", email, data.get("password", ""), rec.tenant)
    except GrantError as err:
        return again(sign_in_message(err, rec.client_id))
    note(request, account=user.email)
    try:
        if data.get("action") == "deny":
            c.state.deny_device(user_code)
            return html_response(pages.device_done(approved=False, app_name=app_name))
        c.state.approve_device(user_code, user.email)
    except KeyError:
        return again("AADSTS70019: Verification code expired.")
    return html_response(pages.device_done(approved=True, app_name=app_name))

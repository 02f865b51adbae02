"""The local OAuth provider against the real client libraries (msal, google-auth), over HTTPS.

No monkeypatching: every test talks HTTP to a running provider with its own CA. msal caches
identical HTTP 400 answers for 60 s per application object, so error cases build a fresh
application (and usually send distinct data anyway).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import secrets
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import google.auth.transport.requests
import google.oauth2.credentials
import google.oauth2.service_account
import jwt
import msal
import pytest
import requests
from google.auth import exceptions as google_exceptions

from emailtoken_dev.devprovider import (
    DevProvider,
    DevProviderThread,
    RemoteProvider,
    SignInError,
    device_sign_in,
    redirect_params,
    session,
    sign_in,
)

TENANT = "contoso.onmicrosoft.com"
IMAP = "https://outlook.office.com/IMAP.AccessAsUser.All"
SMTP = "https://outlook.office.com/SMTP.Send"
APP_ONLY = "https://outlook.office365.com/.default"
GMAIL = "https://mail.google.com/"
REDIRECT = "http://localhost:8400/callback"
ALICE = "alice@contoso.com"
BOB = "bob@example.com"
SA_EMAIL = "mailer@project.iam.gserviceaccount.com"
REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------- fixtures
@pytest.fixture
def provider() -> Iterator[DevProviderThread]:
    p = DevProviderThread(device_interval=1).start()
    p.add_client("app", "s3cret", redirect_uris=[REDIRECT, "http://localhost/"])
    p.add_client("cli", public=True)
    p.add_client("gapp.apps.googleusercontent.com", "gsecret", provider="google")
    p.add_user(ALICE)
    p.add_user("carol@contoso.com", "pw-carol")
    p.add_user(BOB, provider="google")
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
def http(provider: DevProviderThread) -> requests.Session:
    return session(provider.ca_pem_path)


def ms_app(p: DevProviderThread, client_id: str = "app", secret: str = "s3cret", tenant: str = TENANT):
    return msal.ConfidentialClientApplication(
        client_id,
        client_credential=secret,
        authority=p.microsoft_authority(tenant),
        instance_discovery=False,
        http_client=session(p.ca_pem_path),
    )


def public_app(p: DevProviderThread, client_id: str = "cli"):
    return msal.PublicClientApplication(
        client_id,
        authority=p.microsoft_authority(TENANT),
        instance_discovery=False,
        http_client=session(p.ca_pem_path),
    )


def auth_code_tokens(p: DevProviderThread, scopes=(IMAP,), email: str = ALICE, app=None) -> dict:
    app = app or ms_app(p)
    flow = app.initiate_auth_code_flow(list(scopes), redirect_uri=REDIRECT, login_hint=email)
    location = sign_in(flow["auth_uri"], email, verify=p.ca_pem_path)
    result = app.acquire_token_by_auth_code_flow(flow, redirect_params(location))
    assert "access_token" in result, result
    return result


def google_request(p: DevProviderThread) -> google.auth.transport.requests.Request:
    return google.auth.transport.requests.Request(session=session(p.ca_pem_path))


def google_auth_url(
    p: DevProviderThread, *, state: str, verifier: str, prompt: str | None = "consent", access_type: str = "offline"
) -> str:
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    params = {
        "client_id": "gapp.apps.googleusercontent.com",
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": f"{GMAIL} openid email",
        "access_type": access_type,
        "state": state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    if prompt:
        params["prompt"] = prompt
    return f"{p.google_auth_url}?{urlencode(params)}"


def google_sign_in(p: DevProviderThread, http: requests.Session, **kwargs) -> dict:
    verifier = secrets.token_urlsafe(48)
    state = secrets.token_urlsafe(8)
    location = sign_in(google_auth_url(p, state=state, verifier=verifier, **kwargs), BOB, verify=p.ca_pem_path)
    params = redirect_params(location)
    assert params["state"] == state
    answer = http.post(
        p.google_token_url,
        data={
            "grant_type": "authorization_code",
            "code": params["code"],
            "redirect_uri": REDIRECT,
            "client_id": "gapp.apps.googleusercontent.com",
            "client_secret": "gsecret",
            "code_verifier": verifier,
        },
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def google_creds(p: DevProviderThread, refresh_token: str) -> google.oauth2.credentials.Credentials:
    return google.oauth2.credentials.Credentials(
        None,
        refresh_token=refresh_token,
        client_id="gapp.apps.googleusercontent.com",
        client_secret="gsecret",
        token_uri=p.google_token_url,
    )


def assert_entra_error(result: dict, error: str, code: int) -> None:
    assert result.get("error") == error, result
    assert result["error_codes"] == [code]
    assert result["error_description"].startswith(f"AADSTS{code}: ")
    for key in ("timestamp", "trace_id", "correlation_id"):
        assert result[key]


# -------------------------------------------------------------------- Microsoft
def test_discovery_has_what_msal_needs(provider, http):
    doc = http.get(f"{provider.url}/{TENANT}/v2.0/.well-known/openid-configuration").json()
    base = f"{provider.url}/{TENANT}/oauth2/v2.0"
    assert doc["authorization_endpoint"] == f"{base}/authorize"
    assert doc["token_endpoint"] == f"{base}/token"
    assert doc["device_authorization_endpoint"] == f"{base}/devicecode"
    assert doc["issuer"].endswith("/v2.0")
    keys = http.get(doc["jwks_uri"]).json()["keys"]
    assert keys[0]["kty"] == "RSA" and keys[0]["kid"]
    assert TENANT in provider.tenants


def test_client_credentials_with_msal(provider):
    result = ms_app(provider).acquire_token_for_client([APP_ONLY])
    assert result["token_type"] == "Bearer"
    assert result["expires_in"] == 3600 and result["ext_expires_in"] == 3600
    assert "refresh_token" not in result
    info = provider.token_info(result["access_token"])
    assert info["active"] and info["kind"] == "app" and info["client_id"] == "app" and info["email"] is None
    assert info["tenant"] == TENANT
    assert provider.count("token", grant_type="client_credentials", status=200) == 1


def test_client_credentials_with_http_basic(provider, http):
    answer = http.post(
        provider.microsoft_token_url(TENANT),
        data={"grant_type": "client_credentials", "scope": APP_ONLY},
        auth=("app", "s3cret"),
    )
    assert answer.status_code == 200, answer.text
    assert provider.token_info(answer.json()["access_token"])["active"]


def test_client_credentials_needs_dot_default_scope(provider):
    result = ms_app(provider).acquire_token_for_client([IMAP])
    assert_entra_error(result, "invalid_scope", 1002012)


def test_wrong_client_secret_is_401_invalid_client(provider, http):
    result = ms_app(provider, secret="wrong").acquire_token_for_client([APP_ONLY])
    assert_entra_error(result, "invalid_client", 7000215)
    answer = http.post(
        provider.microsoft_token_url(TENANT),
        data={"grant_type": "client_credentials", "scope": APP_ONLY, "client_id": "app", "client_secret": "nope"},
    )
    assert answer.status_code == 401


def test_missing_client_secret(provider, http):
    answer = http.post(
        provider.microsoft_token_url(TENANT),
        data={"grant_type": "client_credentials", "scope": APP_ONLY, "client_id": "app"},
    )
    assert answer.status_code == 401
    assert_entra_error(answer.json(), "invalid_client", 7000218)


def test_unknown_client_is_unauthorized_client(provider, http):
    result = ms_app(provider, client_id="ghost").acquire_token_for_client([APP_ONLY])
    assert_entra_error(result, "unauthorized_client", 700016)
    assert "ghost" in result["error_description"] and TENANT in result["error_description"]
    answer = http.post(
        provider.microsoft_token_url(TENANT),
        data={"grant_type": "client_credentials", "scope": APP_ONLY, "client_id": "ghost", "client_secret": "x"},
    )
    assert answer.status_code == 400


def test_secret_rotation(provider):
    provider.set_client_secret("app", "new-secret")
    assert_entra_error(ms_app(provider).acquire_token_for_client([APP_ONLY]), "invalid_client", 7000215)
    assert "access_token" in ms_app(provider, secret="new-secret").acquire_token_for_client([APP_ONLY])
    provider.set_client_secret("app", "newer", keep_old=True)
    assert "access_token" in ms_app(provider, secret="new-secret").acquire_token_for_client([APP_ONLY])
    assert "access_token" in ms_app(provider, secret="newer").acquire_token_for_client([APP_ONLY])


def test_auth_code_flow_with_pkce(provider, http):
    app = ms_app(provider)
    flow = app.initiate_auth_code_flow([IMAP, SMTP, "email"], redirect_uri=REDIRECT, login_hint=ALICE)
    assert "code_challenge" in flow["auth_uri"]
    page = http.get(flow["auth_uri"])
    assert 'value="alice@contoso.com"' in page.text  # login_hint pre-fills the form
    location = sign_in(flow["auth_uri"], ALICE, verify=provider.ca_pem_path)
    params = redirect_params(location)
    assert location.startswith(REDIRECT) and params["state"] == flow["state"] and params["client_info"]
    result = app.acquire_token_by_auth_code_flow(flow, params)  # msal checks state and nonce
    assert result["scope"].split() == [IMAP, SMTP]
    assert result["refresh_token"] and result["expires_in"] == 3600
    claims = result["id_token_claims"]
    assert claims["preferred_username"] == ALICE and claims["email"] == ALICE
    assert claims["aud"] == "app" and claims["oid"] and claims["tid"]
    client_info = json.loads(base64.urlsafe_b64decode(result["client_info"] + "=="))
    assert client_info == {"uid": claims["oid"], "utid": claims["tid"]}
    # the id_token is really RS256-signed by the published key
    doc = http.get(f"{provider.url}/{TENANT}/v2.0/.well-known/openid-configuration").json()
    jwk = http.get(doc["jwks_uri"]).json()["keys"][0]
    verified = jwt.decode(
        result["id_token"], jwt.PyJWK(jwk).key, algorithms=["RS256"], audience="app", issuer=claims["iss"]
    )
    assert verified["nonce"] == claims["nonce"]
    info = provider.token_info(result["access_token"])
    assert info["email"] == ALICE and info["kind"] == "user" and info["active"]
    assert app.get_accounts()[0]["username"] == ALICE


def test_authorization_code_is_single_use(provider, http):
    app = ms_app(provider)
    flow = app.initiate_auth_code_flow([IMAP], redirect_uri=REDIRECT)
    params = redirect_params(sign_in(flow["auth_uri"], ALICE, verify=provider.ca_pem_path))
    body = {
        "grant_type": "authorization_code",
        "client_id": "app",
        "client_secret": "s3cret",
        "code": params["code"],
        "redirect_uri": REDIRECT,
        "code_verifier": flow["code_verifier"],
        "scope": IMAP,
    }
    url = provider.microsoft_token_url(TENANT)
    assert http.post(url, data=body).status_code == 200
    replay = http.post(url, data=body)
    assert replay.status_code == 400
    assert_entra_error(replay.json(), "invalid_grant", 54005)


@pytest.mark.parametrize(
    ("verifier", "code"), [(None, 50148), ("not-the-verifier-at-all-but-long-enough-0123456789", 501481)]
)
def test_pkce_verifier_is_checked(provider, http, verifier, code):
    flow = ms_app(provider).initiate_auth_code_flow([IMAP], redirect_uri=REDIRECT)
    params = redirect_params(sign_in(flow["auth_uri"], ALICE, verify=provider.ca_pem_path))
    body = {
        "grant_type": "authorization_code",
        "client_id": "app",
        "client_secret": "s3cret",
        "code": params["code"],
        "redirect_uri": REDIRECT,
    }
    if verifier:
        body["code_verifier"] = verifier
    answer = http.post(provider.microsoft_token_url(TENANT), data=body)
    assert_entra_error(answer.json(), "invalid_grant", code)
    body["code_verifier"] = flow["code_verifier"]  # a failed attempt does not burn the code
    assert http.post(provider.microsoft_token_url(TENANT), data=body).status_code == 200


def test_redirect_uri_must_match(provider, http):
    app = ms_app(provider)
    flow = app.initiate_auth_code_flow([IMAP], redirect_uri="http://localhost:9999/")  # loopback: any port
    params = redirect_params(sign_in(flow["auth_uri"], ALICE, verify=provider.ca_pem_path))
    answer = http.post(
        provider.microsoft_token_url(TENANT),
        data={
            "grant_type": "authorization_code",
            "client_id": "app",
            "client_secret": "s3cret",
            "code": params["code"],
            "redirect_uri": REDIRECT,
            "code_verifier": flow["code_verifier"],
        },
    )
    assert_entra_error(answer.json(), "invalid_grant", 500112)
    bad = app.initiate_auth_code_flow([IMAP], redirect_uri="https://evil.example.com/cb")
    with pytest.raises(SignInError, match="AADSTS50011"):
        sign_in(bad["auth_uri"], ALICE, verify=provider.ca_pem_path)


def test_sign_in_page_rejects_wrong_password(provider, http):
    flow = ms_app(provider).initiate_auth_code_flow([IMAP], redirect_uri=REDIRECT)
    with pytest.raises(SignInError, match="AADSTS50126"):
        sign_in(flow["auth_uri"], "carol@contoso.com", "wrong", verify=provider.ca_pem_path)
    with pytest.raises(SignInError, match="AADSTS50034"):
        sign_in(flow["auth_uri"], "nobody@contoso.com", verify=provider.ca_pem_path)
    location = sign_in(flow["auth_uri"], "carol@contoso.com", "pw-carol", verify=provider.ca_pem_path)
    assert "code" in redirect_params(location)


def test_cancel_on_sign_in_page(provider):
    app = ms_app(provider)
    flow = app.initiate_auth_code_flow([IMAP], redirect_uri=REDIRECT)
    location = sign_in(flow["auth_uri"], ALICE, verify=provider.ca_pem_path, accept=False)
    result = app.acquire_token_by_auth_code_flow(flow, redirect_params(location))
    assert result["error"] == "access_denied" and "AADSTS65004" in result["error_description"]


def test_form_post_response_mode(provider):
    app = ms_app(provider)
    flow = app.initiate_auth_code_flow([IMAP], redirect_uri=REDIRECT, response_mode="form_post")
    location = sign_in(flow["auth_uri"], ALICE, verify=provider.ca_pem_path)  # parses the auto-post form
    result = app.acquire_token_by_auth_code_flow(flow, redirect_params(location))
    assert "access_token" in result


def test_unknown_client_at_authorize_shows_error_page(provider):
    query = urlencode({"client_id": "ghost", "response_type": "code", "redirect_uri": REDIRECT, "scope": "openid"})
    url = f"{provider.microsoft_authorize_url(TENANT)}?{query}"
    with pytest.raises(SignInError, match="AADSTS700016"):
        sign_in(url, ALICE, verify=provider.ca_pem_path)


def test_more_than_one_resource_is_rejected(provider):
    app = ms_app(provider)
    flow = app.initiate_auth_code_flow([IMAP, "https://graph.microsoft.com/Mail.Read"], redirect_uri=REDIRECT)
    params = redirect_params(sign_in(flow["auth_uri"], ALICE, verify=provider.ca_pem_path))
    assert params["error"] == "invalid_scope" and "AADSTS28000" in params["error_description"]


def test_refresh_token_rotation_and_reuse_detection(provider):
    first = auth_code_tokens(provider)
    second = ms_app(provider).acquire_token_by_refresh_token(first["refresh_token"], [IMAP])
    assert second["access_token"] != first["access_token"]
    assert second["refresh_token"] != first["refresh_token"]
    assert second["id_token_claims"]["preferred_username"] == ALICE
    assert provider.token_info(second["access_token"])["active"]
    # the rotated-away token comes back: the whole family is revoked
    reused = ms_app(provider).acquire_token_by_refresh_token(first["refresh_token"], [IMAP])
    assert_entra_error(reused, "invalid_grant", 70000)
    latest = ms_app(provider).acquire_token_by_refresh_token(second["refresh_token"], [IMAP])
    assert latest["error"] == "invalid_grant"
    # access tokens live on until they expire, as with the real service
    assert provider.token_info(second["access_token"])["active"]


def test_reuse_without_detection_only_fails_the_old_token():
    with DevProviderThread(reuse_detection=False) as p:
        p.add_client("app", "s3cret")
        p.add_user(ALICE)
        first = auth_code_tokens(p)
        second = ms_app(p).acquire_token_by_refresh_token(first["refresh_token"], [IMAP])
        assert ms_app(p).acquire_token_by_refresh_token(first["refresh_token"], [IMAP])["error"] == "invalid_grant"
        assert "access_token" in ms_app(p).acquire_token_by_refresh_token(second["refresh_token"], [IMAP])


def test_without_rotation_old_refresh_tokens_stay_valid():
    with DevProviderThread(refresh_token_rotation=False) as p:
        p.add_client("app", "s3cret")
        p.add_user(ALICE)
        first = auth_code_tokens(p)
        second = ms_app(p).acquire_token_by_refresh_token(first["refresh_token"], [IMAP])
        assert second["refresh_token"] != first["refresh_token"]  # Entra still hands out a new one
        again = ms_app(p).acquire_token_by_refresh_token(first["refresh_token"], [IMAP])
        assert "access_token" in again


def test_refresh_for_unconsented_resource_is_65001_and_spends_nothing(provider):
    first = auth_code_tokens(provider)
    result = ms_app(provider).acquire_token_by_refresh_token(
        first["refresh_token"], ["https://graph.microsoft.com/Mail.Read"]
    )
    assert_entra_error(result, "invalid_grant", 65001)
    assert "access_token" in ms_app(provider).acquire_token_by_refresh_token(first["refresh_token"], [IMAP])


def test_revoke_grant_by_email_is_50173(provider):
    tokens = auth_code_tokens(provider)
    assert provider.revoke_grant(ALICE) == 1
    result = ms_app(provider).acquire_token_by_refresh_token(tokens["refresh_token"], [IMAP])
    assert_entra_error(result, "invalid_grant", 50173)
    assert provider.token_info(tokens["access_token"])["active"]
    other = auth_code_tokens(provider)  # signing in again works
    provider.revoke_grant(other["refresh_token"], revoke_access_tokens=True)
    assert not provider.token_info(other["access_token"])["active"]


def test_password_change_and_disabled_account(provider):
    app = ms_app(provider)
    flow = app.initiate_auth_code_flow([IMAP], redirect_uri=REDIRECT)
    loc = sign_in(flow["auth_uri"], "carol@contoso.com", "pw-carol", verify=provider.ca_pem_path)
    carol = app.acquire_token_by_auth_code_flow(flow, redirect_params(loc))
    provider.set_password("carol@contoso.com", "new-pw")
    assert_entra_error(
        ms_app(provider).acquire_token_by_refresh_token(carol["refresh_token"], [IMAP]), "invalid_grant", 50173
    )
    alice = auth_code_tokens(provider)
    provider.disable_user(ALICE)
    assert_entra_error(
        ms_app(provider).acquire_token_by_refresh_token(alice["refresh_token"], [IMAP]), "invalid_grant", 50057
    )


def test_expire_all_refresh_tokens_is_70008(provider):
    tokens = auth_code_tokens(provider)
    assert provider.expire_all_refresh_tokens() == 1
    result = ms_app(provider).acquire_token_by_refresh_token(tokens["refresh_token"], [IMAP])
    assert_entra_error(result, "invalid_grant", 70008)
    assert "expired due to inactivity" in result["error_description"]


def test_idle_refresh_token_is_700082(provider):
    tokens = auth_code_tokens(provider)
    provider.advance_clock(91 * 86400)
    result = ms_app(provider).acquire_token_by_refresh_token(tokens["refresh_token"], [IMAP])
    assert_entra_error(result, "invalid_grant", 700082)
    assert not provider.token_info(tokens["access_token"])["active"]  # long expired by now


def test_token_lifetime_is_mutable(provider):
    provider.token_lifetime = 2
    result = ms_app(provider).acquire_token_for_client([APP_ONLY])
    assert result["expires_in"] == 2
    provider.advance_clock(3)
    info = provider.token_info(result["access_token"])
    assert info["expired"] and not info["active"]


# ------------------------------------------------------------------ device code
def test_device_flow_approved_in_the_browser_page(provider):
    app = public_app(provider)
    flow = app.initiate_device_flow([IMAP])
    assert flow["verification_uri"] == provider.device_login_url
    assert flow["user_code"] in flow["message"] and flow["interval"] == 1 and flow["expires_in"] == 900
    approve = threading.Timer(
        1.5, device_sign_in, (flow["verification_uri"], flow["user_code"], ALICE), {"verify": provider.ca_pem_path}
    )
    approve.start()
    result = app.acquire_token_by_device_flow(flow)
    approve.join()
    assert result["refresh_token"] and result["id_token_claims"]["preferred_username"] == ALICE
    assert provider.count("token", grant_type="urn:ietf:params:oauth:grant-type:device_code") >= 2
    assert any(c.error == "authorization_pending" for c in provider.calls)
    # the refresh token works like any other
    refreshed = public_app(provider).acquire_token_by_refresh_token(result["refresh_token"], [IMAP])
    assert "access_token" in refreshed


def test_device_flow_programmatic_approval(provider):
    app = public_app(provider)
    flow = app.initiate_device_flow([IMAP])
    provider.approve_device(flow["user_code"], ALICE)
    result = app.acquire_token_by_device_flow(flow)
    assert provider.token_info(result["access_token"])["email"] == ALICE


def test_device_flow_denied(provider):
    app = public_app(provider)
    flow = app.initiate_device_flow([IMAP])
    device_sign_in(flow["verification_uri"], flow["user_code"], ALICE, approve=False, verify=provider.ca_pem_path)
    result = app.acquire_token_by_device_flow(flow)
    assert result["error"] == "authorization_declined" and result["error_codes"] == [65004]


def test_device_flow_expires(provider):
    app = public_app(provider)
    flow = app.initiate_device_flow([IMAP])
    provider.advance_clock(901)
    result = app.acquire_token_by_device_flow(flow)
    assert_entra_error(result, "expired_token", 70020)
    with pytest.raises(KeyError):
        provider.approve_device(flow["user_code"], ALICE)


def test_device_flow_wrong_code_on_page(provider):
    public_app(provider).initiate_device_flow([IMAP])
    with pytest.raises(SignInError, match="AADSTS70018"):
        device_sign_in(provider.device_login_url, "WRONGCODE", ALICE, verify=provider.ca_pem_path)


def test_device_polling_too_fast_gets_slow_down(provider, http):
    start = http.post(
        f"{provider.url}/{TENANT}/oauth2/v2.0/devicecode", data={"client_id": "cli", "scope": f"{IMAP} offline_access"}
    ).json()
    body = {
        "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
        "client_id": "cli",
        "device_code": start["device_code"],
    }
    url = provider.microsoft_token_url(TENANT)
    assert http.post(url, data=body).json()["error"] == "authorization_pending"
    assert http.post(url, data=body).json()["error"] == "slow_down"


def test_confidential_client_device_flow_needs_secret(provider):
    app = msal.PublicClientApplication(
        "app",
        authority=provider.microsoft_authority(TENANT),
        instance_discovery=False,
        http_client=session(provider.ca_pem_path),
    )
    flow = app.initiate_device_flow([IMAP])
    provider.approve_device(flow["user_code"], ALICE)
    assert_entra_error(app.acquire_token_by_device_flow(flow), "invalid_client", 7000218)


# ---------------------------------------------------------------------- Google
def test_google_auth_code_then_google_auth_refresh(provider, http):
    tokens = google_sign_in(provider, http)
    assert tokens["refresh_token"] and tokens["token_type"] == "Bearer"
    assert tokens["scope"].split() == [GMAIL, "openid", "https://www.googleapis.com/auth/userinfo.email"]
    claims = jwt.decode(tokens["id_token"], options={"verify_signature": False})
    assert claims["email"] == BOB and claims["aud"] == "gapp.apps.googleusercontent.com"
    creds = google.oauth2.credentials.Credentials(
        token=None,
        refresh_token=tokens["refresh_token"],
        client_id="gapp.apps.googleusercontent.com",
        client_secret="gsecret",
        token_uri=provider.google_token_url,
    )
    creds.refresh(google_request(provider))
    assert creds.valid and creds.token != tokens["access_token"]
    assert creds.refresh_token == tokens["refresh_token"]  # Google does not rotate by default
    assert provider.token_info(creds.token)["email"] == BOB
    creds.refresh(google_request(provider))  # and the same refresh token keeps working
    assert creds.valid


def test_google_refresh_token_only_with_offline_and_consent(provider, http):
    assert "refresh_token" in google_sign_in(provider, http)
    assert "refresh_token" not in google_sign_in(provider, http, prompt=None)  # already consented
    assert "refresh_token" in google_sign_in(provider, http, prompt="consent")
    assert "refresh_token" not in google_sign_in(provider, http, access_type="online")


def test_google_pkce_and_code_reuse(provider, http):
    verifier = secrets.token_urlsafe(48)
    location = sign_in(google_auth_url(provider, state="s", verifier=verifier), BOB, verify=provider.ca_pem_path)
    code = redirect_params(location)["code"]
    body = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": "gapp.apps.googleusercontent.com",
        "client_secret": "gsecret",
    }
    missing = http.post(provider.google_token_url, data=body)
    assert missing.status_code == 400
    assert missing.json() == {"error": "invalid_grant", "error_description": "Missing code verifier."}
    body["code_verifier"] = verifier
    assert http.post(provider.google_token_url, data=body).status_code == 200
    assert http.post(provider.google_token_url, data=body).json() == {
        "error": "invalid_grant",
        "error_description": "Bad Request",
    }


def test_google_revoked_grant_raises_refresh_error(provider, http):
    tokens = google_sign_in(provider, http)
    provider.revoke_grant(BOB)
    creds = google_creds(provider, tokens["refresh_token"])
    with pytest.raises(google_exceptions.RefreshError) as caught:
        creds.refresh(google_request(provider))
    assert caught.value.retryable is False
    assert caught.value.args[1] == {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}


def test_google_discovery_tokeninfo_and_revoke(provider, http):
    doc = http.get(f"{provider.url}/google/.well-known/openid-configuration").json()
    assert doc["token_endpoint"] == provider.google_token_url
    assert doc["authorization_endpoint"] == provider.google_auth_url
    tokens = google_sign_in(provider, http)
    info = http.get(
        doc["token_endpoint"].replace("/token", "/oauth2/v3/tokeninfo"), params={"access_token": tokens["access_token"]}
    ).json()
    assert info["email"] == BOB and info["access_type"] == "offline"
    assert (
        http.get(doc["userinfo_endpoint"], headers={"Authorization": f"Bearer {tokens['access_token']}"}).json()[
            "email"
        ]
        == BOB
    )
    assert http.post(doc["revocation_endpoint"], data={"token": tokens["refresh_token"]}).status_code == 200
    with pytest.raises(google_exceptions.RefreshError, match="invalid_grant"):
        google_creds(provider, tokens["refresh_token"]).refresh(google_request(provider))
    assert "refresh_token" in google_sign_in(provider, http, prompt=None)  # revoking forgets the consent


def test_google_wrong_secret_is_401(provider, http):
    tokens = google_sign_in(provider, http)
    answer = http.post(
        provider.google_token_url,
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": "gapp.apps.googleusercontent.com",
            "client_secret": "wrong",
        },
    )
    assert answer.status_code == 401
    assert answer.json() == {"error": "invalid_client", "error_description": "Unauthorized"}


def test_google_rotation_can_be_enabled():
    with DevProviderThread(google_refresh_token_rotation=True) as p:
        p.add_client("gapp.apps.googleusercontent.com", "gsecret", provider="google")
        p.add_user(BOB, provider="google")
        tokens = google_sign_in(p, session(p.ca_pem_path))
        creds = google_creds(p, tokens["refresh_token"])
        creds.refresh(google_request(p))
        assert creds.refresh_token != tokens["refresh_token"]


def test_google_service_account_domain_wide_delegation(provider):
    key = provider.add_service_account(SA_EMAIL, "1234567890", subjects=[BOB])
    assert key["token_uri"] == provider.google_token_url and "PRIVATE KEY" in key["private_key"]
    creds = google.oauth2.service_account.Credentials.from_service_account_info(key, scopes=[GMAIL], subject=BOB)
    creds.refresh(google_request(provider))
    info = provider.token_info(creds.token)
    assert info["email"] == BOB and info["kind"] == "service_account" and info["scope"] == GMAIL
    assert provider.calls[-1].client_id == "1234567890"


def test_google_service_account_refusals(provider):
    provider.add_user("eve@example.com", provider="google")
    key = provider.add_service_account(SA_EMAIL, "1234567890", subjects=[BOB])
    not_delegated = google.oauth2.service_account.Credentials.from_service_account_info(
        key, scopes=[GMAIL], subject="eve@example.com"
    )
    with pytest.raises(google_exceptions.RefreshError, match="unauthorized_client"):
        not_delegated.refresh(google_request(provider))
    unknown = google.oauth2.service_account.Credentials.from_service_account_info(
        key, scopes=[GMAIL], subject="nobody@example.com"
    )
    with pytest.raises(google_exceptions.RefreshError, match="Invalid email or User ID"):
        unknown.refresh(google_request(provider))
    provider.delete_service_account_key(SA_EMAIL, key["private_key_id"])
    deleted = google.oauth2.service_account.Credentials.from_service_account_info(key, scopes=[GMAIL], subject=BOB)
    with pytest.raises(google_exceptions.RefreshError, match="Invalid JWT Signature"):
        deleted.refresh(google_request(provider))
    stranger = dict(key, client_email="stranger@project.iam.gserviceaccount.com")
    with pytest.raises(google_exceptions.RefreshError, match="account not found"):
        google.oauth2.service_account.Credentials.from_service_account_info(stranger, scopes=[GMAIL]).refresh(
            google_request(provider)
        )


# --------------------------------------------------------------- introspection
def test_introspection_for_dovecot(provider):
    tokens = auth_code_tokens(provider)
    plain = requests.Session()
    plain.trust_env = False
    url = provider.introspection_url
    assert url.startswith("http://dovecot:")
    live = plain.post(url, data={"token": tokens["access_token"]}).json()
    assert live["active"] is True and live["email"] == ALICE and live["client_id"] == "app"
    assert live["scope"] == IMAP and live["exp"] > time.time()
    assert plain.post(url, data={"token": "made-up"}).json() == {"active": False}
    no_auth = url.replace(url.split("//")[1].split("@")[0] + "@", "")
    assert plain.post(no_auth, data={"token": tokens["access_token"]}).status_code == 401
    provider.advance_clock(3601)
    assert plain.post(url, data={"token": tokens["access_token"]}).json() == {"active": False}


def test_introspection_on_the_https_port_and_userinfo(provider, http):
    tokens = auth_code_tokens(provider)
    user, password = provider.introspection_url.split("//")[1].split("@")[0].split(":")
    answer = http.post(f"{provider.url}/introspect", data={"token": tokens["access_token"]}, auth=(user, password))
    assert answer.json()["email"] == ALICE
    me = http.get(f"{provider.url}/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.json()["email"] == ALICE
    assert http.get(f"{provider.url}/userinfo", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_app_only_token_introspects_as_its_single_mailbox(provider):
    provider.add_client("daemon", "d-secret", mailboxes=["shared@contoso.com"])
    token = ms_app(provider, "daemon", "d-secret").acquire_token_for_client([APP_ONLY])["access_token"]
    plain = requests.Session()
    plain.trust_env = False
    assert plain.post(provider.introspection_url, data={"token": token}).json()["email"] == "shared@contoso.com"


# ----------------------------------------------------------------------- faults
def test_fault_500_then_recovery_with_msal(provider):
    provider.faults.add(endpoint="token", status=500)
    with pytest.raises(Exception, match="500"):
        ms_app(provider).acquire_token_for_client([APP_ONLY])
    assert "access_token" in ms_app(provider).acquire_token_for_client([APP_ONLY])
    statuses = [(c.status, c.fault) for c in provider.calls if c.endpoint == "token"]
    assert statuses == [(500, True), (200, False)]


def test_fault_503_with_retry_after(provider, http):
    provider.faults.add(endpoint="token", status=503, retry_after=7, count=2)
    body = {"grant_type": "client_credentials", "scope": APP_ONLY, "client_id": "app", "client_secret": "s3cret"}
    for _ in range(2):
        answer = http.post(provider.microsoft_token_url(TENANT), data=body)
        assert answer.status_code == 503 and answer.headers["Retry-After"] == "7"
        assert answer.json()["error"] == "temporarily_unavailable"
    assert http.post(provider.microsoft_token_url(TENANT), data=body).status_code == 200
    assert len(provider.faults) == 0


def test_fault_429_is_retried_by_google_auth(provider, http):
    tokens = google_sign_in(provider, http)
    provider.faults.add(endpoint="token", status=429, match_provider="google")
    creds = google_creds(provider, tokens["refresh_token"])
    creds.refresh(google_request(provider))
    assert creds.valid
    refreshes = [c.status for c in provider.calls if c.grant_type == "refresh_token"]
    assert refreshes == [429, 200]


def test_fault_delay_and_drop(provider, http):
    provider.faults.add(endpoint="token", delay=0.6)
    started = time.monotonic()
    assert "access_token" in ms_app(provider).acquire_token_for_client([APP_ONLY])
    assert time.monotonic() - started >= 0.6
    provider.faults.add(endpoint="token", drop=True)
    with pytest.raises(requests.ConnectionError):
        http.post(provider.microsoft_token_url(TENANT), data={"grant_type": "client_credentials"})
    assert provider.calls[-1].status == 0


def test_fault_error_codes_in_each_dialect(provider, http):
    tokens = auth_code_tokens(provider)
    provider.faults.add(endpoint="token", error_code="AADSTS70008", match_grant_type="refresh_token")
    assert "access_token" in ms_app(provider).acquire_token_for_client([APP_ONLY])  # not matched
    result = ms_app(provider).acquire_token_by_refresh_token(tokens["refresh_token"], [IMAP])
    assert_entra_error(result, "invalid_grant", 70008)
    google_tokens = google_sign_in(provider, http)
    provider.faults.add(endpoint="token", error_code="invalid_grant_google")
    creds = google_creds(provider, google_tokens["refresh_token"])
    with pytest.raises(google_exceptions.RefreshError, match="expired or revoked"):
        creds.refresh(google_request(provider))
    with pytest.raises(ValueError):
        provider.faults.add(endpoint="token", error_code="AADSTS1")


def test_fault_with_custom_body(provider, http):
    provider.faults.add(endpoint="discovery", status=502, body="<html>Bad gateway</html>")
    answer = http.get(f"{provider.url}/{TENANT}/v2.0/.well-known/openid-configuration")
    assert answer.status_code == 502 and "Bad gateway" in answer.text


# ------------------------------------------------------- calls, secrets, threads
def test_calls_never_hold_secrets(provider, caplog):
    caplog.set_level(logging.DEBUG)
    tokens = auth_code_tokens(provider)
    ms_app(provider).acquire_token_by_refresh_token(tokens["refresh_token"], [IMAP])
    provider.add_client("g2", "gsecret2", provider="google")
    session(provider.ca_pem_path).post(f"{provider.url}/google/revoke?token={tokens['access_token']}")
    # the provider's own logs only: urllib3 on the client side logs the query it sends
    server_logs = [r.getMessage() for r in caplog.records if r.name.startswith(("aiohttp", "emailtoken"))]
    assert any("/google/revoke" in line for line in server_logs)
    recorded = repr(provider.calls) + repr(provider.issued_tokens) + repr(server_logs)
    for secret in ("s3cret", tokens["access_token"], tokens["refresh_token"], tokens["id_token"]):
        assert secret not in recorded
    assert provider.counters["token"] == 2
    provider.reset_counters()
    assert provider.calls == [] and provider.counters == {}


def test_concurrent_requests_from_many_threads(provider):
    results: list[dict] = []

    def work() -> None:
        results.append(ms_app(provider).acquire_token_for_client([APP_ONLY]))

    threads = [threading.Thread(target=work) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r["access_token"] for r in results}) == 20
    assert provider.count("token", status=200) == 20


# ------------------------------------------------------- async, control, process
async def test_async_provider_and_control_api():
    async with DevProvider() as p:
        p.add_client("app", "s3cret")
        ssl_ctx = ssl.create_default_context(cafile=p.ca_pem_path)
        async with aiohttp.ClientSession() as client:
            async with client.get(f"{p.url}/common/v2.0/.well-known/openid-configuration", ssl=ssl_ctx) as r:
                doc = await r.json()
                assert doc["issuer"].endswith("/{tenantid}/v2.0")
            async with client.post(f"{p.url}/_control/faults", json={"status": 503}, ssl=ssl_ctx) as r:
                assert r.status == 401
            headers = {"Authorization": f"Bearer {p.control_token}"}
            async with client.post(
                f"{p.url}/_control/faults", json={"endpoint": "token", "status": 503}, headers=headers, ssl=ssl_ctx
            ) as r:
                assert (await r.json())["pending"] == 1
            data = {
                "grant_type": "client_credentials",
                "scope": APP_ONLY,
                "client_id": "app",
                "client_secret": "s3cret",
            }
            async with client.post(p.microsoft_token_url("common"), data=data, ssl=ssl_ctx) as r:
                assert r.status == 503
            async with client.get(f"{p.url}/_control/calls", headers=headers, ssl=ssl_ctx) as r:
                calls = (await r.json())["calls"]
            assert [c["status"] for c in calls] == [200, 503]


def test_remote_control_client(provider):
    remote = RemoteProvider(provider.url, provider.control_token, provider.ca_pem_path)
    remote.configure(
        {"clients": [{"client_id": "remote", "client_secret": "r"}], "users": [{"email": "dan@contoso.com"}]}
    )
    assert remote.settings(token_lifetime=30)["token_lifetime"] == 30
    remote.add_fault(endpoint="token", status=503, retry_after=3)
    assert remote.calls() == []
    with pytest.raises(Exception, match="503"):
        ms_app(provider, "remote", "r").acquire_token_for_client([APP_ONLY])
    result = ms_app(provider, "remote", "r").acquire_token_for_client([APP_ONLY])
    assert result["expires_in"] == 30
    assert [c["status"] for c in remote.calls() if c["endpoint"] == "token"] == [503, 200]
    assert remote.token_info(result["access_token"])["client_id"] == "remote"
    flow = public_app(provider).initiate_device_flow([IMAP])
    remote.approve_device(flow["user_code"], "dan@contoso.com")
    tokens = public_app(provider).acquire_token_by_device_flow(flow)
    assert remote.revoke_grant("dan@contoso.com") == 1
    assert remote.expire_all_refresh_tokens() == 0
    remote.advance_clock(31)
    assert not remote.token_info(tokens["access_token"])["active"]
    remote.reset_counters()
    assert remote.counters() == {}
    denied = requests.Session()
    denied.trust_env = False
    assert denied.get(f"{provider.url}/_control/calls", verify=provider.ca_pem_path).status_code == 401


def _start_process(args: list[str]) -> tuple[subprocess.Popen, dict]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "operator"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "emailtoken_dev.devprovider", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    line = proc.stdout.readline()
    assert line, "provider exited before it was ready"
    return proc, json.loads(line)


def _stop_process(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


def test_command_line_provider_keeps_state_across_restarts(tmp_path):
    config = {
        "clients": [{"client_id": "app", "client_secret": "s3cret"}],
        "users": [{"email": ALICE}],
        "service_accounts": [{"email": SA_EMAIL, "client_id": "42", "key_file": str(tmp_path / "sa.json")}],
        "settings": {"token_lifetime": 120},
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    state = tmp_path / "state.json"
    proc, ready = _start_process(["--config", str(tmp_path / "config.json"), "--state-file", str(state)])
    try:
        remote = RemoteProvider.from_ready(ready)
        app = msal.ConfidentialClientApplication(
            "app",
            client_credential="s3cret",
            authority=f"{ready['url']}/{TENANT}",
            instance_discovery=False,
            http_client=session(ready["ca"]),
        )
        flow = app.initiate_auth_code_flow([IMAP], redirect_uri=REDIRECT)
        result = app.acquire_token_by_auth_code_flow(
            flow, redirect_params(sign_in(flow["auth_uri"], ALICE, verify=ready["ca"]))
        )
        assert result["expires_in"] == 120
        assert remote.token_info(result["access_token"])["email"] == ALICE
        assert remote.counters()["token"] == 1
        key = json.loads((tmp_path / "sa.json").read_text())
        assert key["client_email"] == SA_EMAIL
        ca_before = Path(ready["ca"]).read_text()
    finally:
        _stop_process(proc)
    assert "s3cret" in state.read_text()  # clients persist, but tokens only as digests:
    assert result["refresh_token"] not in state.read_text()
    proc, ready2 = _start_process(["--state-file", str(state), "--port", "0"])
    try:
        assert Path(ready2["ca"]).read_text() == ca_before  # same CA: clients keep trusting it
        assert ready2["control_token"] == ready["control_token"]
        app2 = msal.ConfidentialClientApplication(
            "app",
            client_credential="s3cret",
            authority=f"{ready2['url']}/{TENANT}",
            instance_discovery=False,
            http_client=session(ready2["ca"]),
        )
        again = app2.acquire_token_by_refresh_token(result["refresh_token"], [IMAP])
        assert "access_token" in again, again
        creds = google.oauth2.service_account.Credentials.from_service_account_info(
            dict(key, token_uri=f"{ready2['url']}/google/token"), scopes=[GMAIL]
        )
        creds.refresh(google.auth.transport.requests.Request(session=session(ready2["ca"])))
        assert RemoteProvider.from_ready(ready2).token_info(creds.token)["email"] == SA_EMAIL
    finally:
        _stop_process(proc)

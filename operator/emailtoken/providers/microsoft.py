"""Microsoft Entra ID (v2.0 endpoints) through msal.

msal owns the protocol; this module picks the application type, keeps msal's
discovery cache but none of its POST throttling (the engine owns retry policy), and
turns msal's error dicts into :class:`ProviderError` with plain-words messages.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import threading
import urllib.parse
from datetime import timedelta
from typing import Any

import msal
import msal.exceptions

from emailtoken import scopes as scopes_mod
from emailtoken.advisories import stated_expiry
from emailtoken.model import EmailTokenSpec
from emailtoken.outcomes import ErrorKind, ProviderError, TokenSet
from emailtoken.providers.base import (
    MAX_DEVICE_CODE_LIFETIME,
    MAX_POLL_INTERVAL,
    ClientCredentials,
    DeviceFlow,
    lifetime,
    seconds,
    text,
)
from emailtoken.providers.http import EndpointNotAllowed, ProviderHTTPError, ProviderSession, TimedOut, UnsafeAnswer
from emailtoken.redact import redact
from emailtoken.timefmt import utcnow

#: AADSTS codes that mean "the grant is gone: a person must sign in again".
REAUTH_CODES: dict[int, str] = {
    70008: "the refresh token expired after a period of inactivity",
    700082: "the refresh token expired after 90 days of inactivity",
    50173: "the grant was revoked (password changed or sessions revoked by an administrator)",
    70043: "the refresh token expired under a Conditional Access sign-in frequency policy",
    54005: "the authorization code was already redeemed",
    65001: "the user or an administrator has not consented to the application",
    50076: "multi-factor authentication is required",
    50078: "multi-factor authentication has expired",
    50126: "the user name or password is invalid",
    9002313: "the request was malformed or invalid",
}
INVALID_CLIENT_CODES: dict[int, str] = {
    7000215: "the client secret is wrong",
    7000222: "the client secret has expired",
    700016: "the application (client id) was not found in the tenant",
    7000218: "a client secret is required for this application",
    # Workload identity federation (spec.federatedCredential): the projected ServiceAccount token was refused.
    700211: "no federated credential of the app registration trusts the ServiceAccount token's issuer",
    700212: "no federated credential of the app registration has the ServiceAccount token's audience",
    700213: "no federated credential of the app registration has the ServiceAccount token's subject",
    70021: "no federated credential of the app registration matches the ServiceAccount token "
    "(issuer, subject system:serviceaccount:<namespace>:<name>, audience)",
    700024: "the ServiceAccount token sent as client assertion is expired or not yet valid",
    50013: "the ServiceAccount token's signature did not verify with the issuer's published keys",
    90061: "Entra could not read the cluster issuer's OpenID configuration or keys (they must be public)",
    50027: "the client assertion is not a valid JWT",
}


_MAX_DETAIL = 512  # provider text quoted in a message (status and Events have limits)


def _settle_optional_extension() -> None:
    """msal looks for its optional msal-extensions package each time an application is built (once
    per registration, and per call for a federated credential): a failed import searches every
    ``sys.path`` entry, 8 % of a call's CPU when every call built one (bench/README.md). When it is
    not installed, record that once in ``sys.modules``, where Python's import then fails at once
    (``None`` means "not importable")."""
    if "msal_extensions" not in sys.modules and importlib.util.find_spec("msal_extensions") is None:
        sys.modules["msal_extensions"] = None  # type: ignore[assignment]


_settle_optional_extension()


class _DiscoveryOnlyCache(dict[str, Any]):
    """msal http_cache that keeps discovery GETs but drops throttled POST answers.

    msal otherwise replays a 400 for 60 s and a 5xx until Retry-After, which would
    hide a fixed client secret and make call counting meaningless.
    """

    def __setitem__(self, key: str, value: Any) -> None:
        if isinstance(key, str) and key.startswith("POST "):
            return
        super().__setitem__(key, value)


def _digest(secret: str | None) -> str:
    return hashlib.sha256((secret or "").encode()).hexdigest()


class _NoTokenCache(msal.TokenCache):
    """msal's token cache, keeping nothing: when to call is the engine's decision, and no token
    or refresh token outlives its call in an application that other tokens share."""

    def add(self, event: dict[str, Any], now: Any = None) -> None:
        return None


#: msal applications kept (one per registration, with its current secret; about 8 KiB each, 8 MiB at
#: most); the registrations beyond build an app per call, as before
MAX_APPS = 1024


class MicrosoftProvider:
    """Entra ID token calls for one operator process."""

    def __init__(self, session: ProviderSession | None = None) -> None:
        self.session = session or ProviderSession()
        self._discovery: dict[str, _DiscoveryOnlyCache] = {}
        self._discovering: dict[str, threading.Lock] = {}
        self._apps: dict[tuple[str, str], tuple[str, msal.ClientApplication]] = {}
        self._lock = threading.Lock()

    def _app(self, spec: EmailTokenSpec, creds: ClientCredentials) -> msal.ClientApplication:
        """The msal app of this registration, built once per client secret (its token cache keeps nothing).

        Tokens of one app registration share it, as msal intends for a long-running process;
        building one per call cost about a fifth of a call's CPU (bench/README.md). A new secret
        replaces its registration's app. A federated credential's assertion is a new callable
        per step, so its app is built for the call, as before.

        Until an authority's OpenID configuration is cached, one thread reads it and the others
        wait for that answer (up to the provider timeout) instead of each sending the same GET:
        a restart with many due tokens otherwise opens with a herd of discovery requests.
        """
        key = (spec.authority, spec.client_id or "")
        digest = _digest(creds.client_secret) if creds.client_secret else ""
        keep = creds.client_assertion is None  # an assertion is a fresh callable per step: nothing to share
        with self._lock:
            kept = self._apps.get(key) if keep else None
            if kept is not None and kept[0] == digest:
                return kept[1]
            cache = self._discovery.setdefault(spec.authority, _DiscoveryOnlyCache())
            discovering = self._discovering.setdefault(spec.authority, threading.Lock())
        if cache:
            app = self._build(spec, creds, cache)
        else:
            waited = discovering.acquire(timeout=self.session.timeout)
            try:
                app = self._build(spec, creds, cache)
            finally:
                if waited:
                    discovering.release()
        with self._lock:
            # A new secret replaces its registration's app; a new registration is kept while there
            # is room. Never an eviction: with more registrations than room, each would make one
            # app live a little while, which fragmented the heap (bench/README.md: 215 MiB at 5,000).
            if keep and (key in self._apps or len(self._apps) < MAX_APPS):
                self._apps[key] = (digest, app)
        return app

    def _build(
        self, spec: EmailTokenSpec, creds: ClientCredentials, cache: _DiscoveryOnlyCache
    ) -> msal.ClientApplication:
        common: dict[str, Any] = {
            "authority": spec.authority,
            "instance_discovery": False,
            "http_client": self.session,
            "http_cache": cache,
            "token_cache": _NoTokenCache(),
        }
        try:
            if creds.client_assertion is not None:
                return msal.ConfidentialClientApplication(
                    spec.client_id, client_credential={"client_assertion": creds.client_assertion}, **common
                )
            if creds.client_secret:
                return msal.ConfidentialClientApplication(
                    spec.client_id, client_credential=creds.client_secret, **common
                )
            return msal.PublicClientApplication(spec.client_id, **common)
        except ValueError as exc:
            # msal raises ValueError when discovery fails (bad tenant, unreachable authority).
            raise ProviderError(
                ErrorKind.TRANSIENT,
                f"could not read the OpenID configuration of {spec.authority}: "
                + redact(str(exc)[:_MAX_DETAIL], creds.client_secret),
            ) from None
        except ProviderHTTPError as exc:
            raise _network_error(exc, spec) from None
        except msal.exceptions.MsalServiceError as exc:
            raise _server_error(exc, self.session.last_retry_after) from None

    def acquire_app_token(self, spec: EmailTokenSpec, creds: ClientCredentials) -> TokenSet:
        """Client-credentials token for IMAP.AccessAsApp / POP.AccessAsApp / SMTP.SendAsApp."""
        app = self._app(spec, creds)
        if not isinstance(app, msal.ConfidentialClientApplication):
            raise ProviderError(
                ErrorKind.BAD_CONFIG, "flow ClientCredentials needs a client secret or a federated credential"
            )
        result = self._call(spec, lambda: app.acquire_token_for_client(scopes=list(spec.scopes)), creds)
        return self._token_set(result, account=spec.email_address or "")

    def refresh(self, spec: EmailTokenSpec, creds: ClientCredentials, refresh_token: str) -> TokenSet:
        """Redeem a refresh token; Entra rotates it, so the new one is in the result."""
        app = self._app(spec, creds)
        scopes = scopes_mod.for_request("Microsoft", spec.scopes)
        result = self._call(
            spec, lambda: app.acquire_token_by_refresh_token(refresh_token, scopes=scopes), creds, refresh_token
        )
        return self._token_set(result, account=None)

    def authorization_url(
        self, spec: EmailTokenSpec, *, redirect_uri: str, state: str, code_challenge: str, login_hint: str | None
    ) -> str:
        """Sign-in URL with PKCE (S256), built here because msal drops ``code_challenge``.

        msal's ``get_authorization_request_url`` silently ignores PKCE parameters, and a code
        issued without a challenge could be redeemed by whoever intercepts it.
        """
        scopes = [*scopes_mod.for_request("Microsoft", spec.scopes), "openid", "profile", "offline_access"]
        params = {
            "client_id": spec.client_id or "",
            "response_type": "code",
            "redirect_uri": redirect_uri,
            "response_mode": "query",
            "scope": " ".join(scopes),
            "state": state,
            "code_challenge": code_challenge,
            "code_challenge_method": "S256",
            "prompt": "select_account",
        }
        if login_hint:
            params["login_hint"] = login_hint
        try:
            self.session.check_allowed(spec.authorization_url)
        except EndpointNotAllowed as exc:
            raise _network_error(exc, spec) from None
        return f"{spec.authorization_url}?{urllib.parse.urlencode(params)}"

    def exchange_code(
        self, spec: EmailTokenSpec, creds: ClientCredentials, *, code: str, redirect_uri: str, code_verifier: str
    ) -> TokenSet:
        """Redeem an authorization code (PKCE verifier included)."""
        app = self._app(spec, creds)
        scopes = scopes_mod.for_request("Microsoft", spec.scopes)
        result = self._call(
            spec,
            lambda: app.acquire_token_by_authorization_code(
                code, scopes=scopes, redirect_uri=redirect_uri, data={"code_verifier": code_verifier}
            ),
            creds,
            code,
            code_verifier,
        )
        return self._token_set(result, account=None)

    def start_device_flow(self, spec: EmailTokenSpec, creds: ClientCredentials) -> DeviceFlow:
        """Ask Entra for a user code (RFC 8628); the person enters it at ``verification_uri``."""
        app = self._app(spec, creds)
        scopes = [*scopes_mod.for_request("Microsoft", spec.scopes), *sorted(scopes_mod.MICROSOFT_RESERVED)]
        try:
            flow = app.client.initiate_device_flow(scope=scopes)
        except ProviderHTTPError as exc:
            raise _network_error(exc, spec) from None
        except msal.exceptions.MsalServiceError as exc:
            raise _server_error(exc, self.session.last_retry_after) from None
        except ValueError as exc:
            raise ProviderError(ErrorKind.BAD_CONFIG, f"device code flow unavailable: {exc}") from None
        if "user_code" not in flow:
            raise classify(flow, retry_after=self.session.last_retry_after, secrets=(creds.client_secret,))
        expires_in = seconds(flow.get("expires_in"), 900, high=MAX_DEVICE_CODE_LIFETIME.total_seconds())
        return DeviceFlow(
            user_code=text(flow["user_code"])[:64],
            verification_uri=text(flow.get("verification_uri") or flow.get("verification_url", "")),
            expires_at=utcnow() + timedelta(seconds=expires_in),
            interval=seconds(flow.get("interval"), 5, low=1, high=MAX_POLL_INTERVAL),
            message=text(flow.get("message", "")),
            state=flow,
        )

    def poll_device_flow(self, spec: EmailTokenSpec, creds: ClientCredentials, flow: DeviceFlow) -> TokenSet | None:
        """One poll: a TokenSet once approved, None while pending; ProviderError when declined/expired."""
        app = self._app(spec, creds)
        state = dict(flow.state)
        try:
            result = app.client.obtain_token_by_device_flow(
                state, exit_condition=lambda _flow: True, data={"code": state.get("device_code", "")}
            )
        except ProviderHTTPError as exc:
            raise _network_error(exc, spec) from None
        except msal.exceptions.MsalServiceError as exc:
            raise _server_error(exc, self.session.last_retry_after) from None
        error = result.get("error")
        if error in ("authorization_pending", "slow_down"):
            return None
        if error == "authorization_declined":
            raise ProviderError(
                ErrorKind.REAUTHORIZE,
                "the sign-in was declined at the device login page",
                reason="AuthorizationDeclined",
                code=error,
            )
        if error in ("expired_token", "bad_verification_code", "code_expired"):
            raise ProviderError(
                ErrorKind.REAUTHORIZE,
                "the device code expired before anyone signed in",
                reason="DeviceCodeExpired",
                code=error,
            )
        if "access_token" not in result:
            raise classify(result, retry_after=self.session.last_retry_after, secrets=(creds.client_secret,))
        if "id_token_claims" not in result and result.get("id_token"):
            result["id_token_claims"] = _claims(result["id_token"])
        return self._token_set(result, account=None)

    def _call(self, spec: EmailTokenSpec, fn: Any, creds: ClientCredentials, *secrets: str) -> dict[str, Any]:
        try:
            result = fn()
        except ProviderHTTPError as exc:
            raise _network_error(exc, spec) from None
        except msal.exceptions.MsalServiceError as exc:
            # msal raises (instead of returning a dict) when the token endpoint answers 5xx.
            raise _server_error(exc, self.session.last_retry_after) from None
        except ValueError as exc:
            raise ProviderError(
                ErrorKind.TRANSIENT,
                "unexpected answer from the token endpoint: " + redact(str(exc), creds.client_secret, *secrets),
            ) from None
        if not isinstance(result, dict) or "access_token" not in result:
            raise classify(
                result or {}, retry_after=self.session.last_retry_after, secrets=(creds.client_secret, *secrets)
            )
        return result

    @staticmethod
    def _token_set(result: dict[str, Any], account: str | None) -> TokenSet:
        claims = result.get("id_token_claims") or {}
        who = account or claims.get("preferred_username") or claims.get("email") or claims.get("upn") or ""
        return TokenSet(
            access_token=result["access_token"],
            token_type=result.get("token_type", "Bearer"),
            expires_at=utcnow() + lifetime(result.get("expires_in")),
            scope=result.get("scope", "")
            if isinstance(result.get("scope"), str)
            else " ".join(result.get("scope", [])),
            refresh_token=result.get("refresh_token"),
            account=who,
            refresh_expires_at=stated_expiry(result.get("refresh_token_expires_in"), utcnow()),
        )


def _network_error(exc: ProviderHTTPError, spec: EmailTokenSpec) -> ProviderError:
    if isinstance(exc, EndpointNotAllowed):
        return ProviderError(ErrorKind.BAD_CONFIG, str(exc), reason="EndpointNotAllowed")
    if isinstance(exc, UnsafeAnswer):
        return ProviderError(ErrorKind.TRANSIENT, f"the Microsoft endpoint's answer was refused: {exc}")
    what = "timed out" if isinstance(exc, TimedOut) else "could not be reached"
    return ProviderError(ErrorKind.TRANSIENT, f"the Microsoft token endpoint {what} ({exc})")


def _server_error(exc: msal.exceptions.MsalServiceError, retry_after: float | None) -> ProviderError:
    """A 5xx answer, which msal reports by raising ``MsalServiceError("HTTP Error: 503")``."""
    detail = str(exc.args[0]) if exc.args and str(exc.args[0]).startswith("HTTP Error") else type(exc).__name__
    return ProviderError(
        ErrorKind.TRANSIENT, f"the Microsoft token endpoint failed ({detail})", retry_after=retry_after
    )


def classify(
    result: dict[str, Any], *, retry_after: float | None = None, secrets: tuple[str | None, ...] = ()
) -> ProviderError:
    """Turn an msal error dict into a typed, safe ProviderError."""
    error = text(result.get("error") or "unknown_error")[:64]
    codes = [int(c) for c in result.get("error_codes") or [] if str(c).isdigit()]
    description = text(redact(str(result.get("error_description") or ""), *secrets).split("\r\n")[0])
    code_text = f"AADSTS{codes[0]}" if codes else error
    for code in codes:
        if code in INVALID_CLIENT_CODES:
            return ProviderError(
                ErrorKind.INVALID_CLIENT, f"{INVALID_CLIENT_CODES[code]} ({code_text})", code=code_text
            )
        if code in REAUTH_CODES:
            return ProviderError(ErrorKind.REAUTHORIZE, f"{REAUTH_CODES[code]} ({code_text})", code=code_text)
    if error in ("invalid_client", "unauthorized_client"):
        return ProviderError(
            ErrorKind.INVALID_CLIENT, f"the client was rejected: {description or error}", code=code_text
        )
    if error in ("invalid_grant", "interaction_required", "consent_required", "login_required"):
        return ProviderError(
            ErrorKind.REAUTHORIZE, f"the grant is no longer valid: {description or error}", code=code_text
        )
    if error in ("invalid_scope", "invalid_request", "unsupported_grant_type", "invalid_resource"):
        return ProviderError(ErrorKind.BAD_CONFIG, f"the request was rejected: {description or error}", code=code_text)
    return ProviderError(
        ErrorKind.TRANSIENT,
        f"the token endpoint failed: {description or error}",
        code=code_text,
        retry_after=retry_after,
    )


def _claims(id_token: str) -> dict[str, Any]:
    """Claims of an id_token received directly from the token endpoint over TLS (OIDC Core 3.1.3.7)."""
    import base64
    import json

    try:
        payload = id_token.split(".")[1]
        return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))
    except (IndexError, ValueError):
        return {}

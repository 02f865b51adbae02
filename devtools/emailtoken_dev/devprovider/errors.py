"""OAuth error bodies in the two dialects the operator must understand.

Entra ID and Google word the same failure differently (AADSTS codes with trace ids versus
terse strings), and the operator's error classification is tested against these exact
shapes, so each catalogue entry mirrors what the real service sends.
"""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ErrorSpec:
    """One catalogue entry: HTTP status, OAuth ``error`` and a description template."""

    status: int
    error: str
    description: str


#: Entra ID errors by AADSTS number. Descriptions are the service's wording.
MICROSOFT: dict[int, ErrorSpec] = {
    50000: ErrorSpec(
        500,
        "server_error",
        "There was an error issuing a token or an issue with our sign-in service.",
    ),
    50011: ErrorSpec(
        400,
        "invalid_request",
        "The redirect URI '{redirect_uri}' specified in the request does not match the redirect URIs "
        "configured for the application '{client_id}'. Make sure the redirect URI sent in the request "
        "matches one added to your application in the Azure portal.",
    ),
    50020: ErrorSpec(
        400,
        "invalid_grant",
        "User account '{email}' from identity provider does not exist in tenant '{tenant}' and cannot "
        "access the application '{client_id}' in that tenant.",
    ),
    50034: ErrorSpec(400, "invalid_grant", "The user account {email} does not exist in the directory."),
    50057: ErrorSpec(400, "invalid_grant", "The user account is disabled."),
    50058: ErrorSpec(400, "login_required", "A silent sign-in request was sent but no user is signed in."),
    50126: ErrorSpec(400, "invalid_grant", "Error validating credentials due to invalid username or password."),
    50148: ErrorSpec(
        400,
        "invalid_grant",
        "The code_verifier does not match the code_challenge supplied in the authorization request for PKCE.",
    ),
    501481: ErrorSpec(
        400,
        "invalid_grant",
        "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
    ),
    50173: ErrorSpec(
        400,
        "invalid_grant",
        "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user "
        "might have changed or reset their password. The grant was issued on '{issued}' and the "
        "TokensValidFrom date (before which tokens are not valid) for this user is '{valid_from}'.",
    ),
    50196: ErrorSpec(
        429,
        "temporarily_unavailable",
        "The server terminated an operation because it encountered a client request loop. "
        "Please contact your app vendor.",
    ),
    54005: ErrorSpec(
        400,
        "invalid_grant",
        "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an "
        "existing refresh token.",
    ),
    65001: ErrorSpec(
        400,
        "invalid_grant",
        "The user or administrator has not consented to use the application with ID '{client_id}'. "
        "Send an interactive authorization request for this user and resource.",
    ),
    65004: ErrorSpec(400, "access_denied", "User declined to consent to access the app."),
    70000: ErrorSpec(400, "invalid_grant", "The provided grant is invalid or malformed. {detail}"),
    70003: ErrorSpec(400, "unsupported_grant_type", "The app requested an unsupported grant type '{grant_type}'."),
    70008: ErrorSpec(
        400,
        "invalid_grant",
        "The provided authorization code or refresh token has expired due to inactivity. Send a new "
        "interactive authorization request for this user and resource.",
    ),
    70043: ErrorSpec(
        400,
        "invalid_grant",
        "The refresh token has expired or is invalid due to sign-in frequency checks by conditional access. "
        "The token was issued on {issued} and the maximum allowed lifetime for this request is {lifetime}.",
    ),
    70011: ErrorSpec(
        400,
        "invalid_scope",
        "The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid.",
    ),
    70016: ErrorSpec(
        400,
        "authorization_pending",
        "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
    ),
    70018: ErrorSpec(
        400,
        "bad_verification_code",
        "Invalid verification code due to User typing in wrong user code for device code flow.",
    ),
    70020: ErrorSpec(
        400,
        "expired_token",
        "The provided value for the input parameter 'device_code' is not valid. This device code has expired.",
    ),
    90033: ErrorSpec(503, "temporarily_unavailable", "A transient error has occurred. Please try again."),
    700054: ErrorSpec(
        400, "unsupported_response_type", "response_type '{response_type}' is not enabled for the application."
    ),
    9002313: ErrorSpec(400, "invalid_grant", "Invalid request. Request is malformed or invalid."),
    9002325: ErrorSpec(
        400,
        "invalid_request",
        "Proof Key for Code Exchange is required for cross-origin authorization code redemption.",
    ),
    700016: ErrorSpec(
        400,
        "unauthorized_client",
        "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can "
        "happen if the application has not been installed by the administrator of the tenant or "
        "consented to by any user in the tenant. You may have sent your authentication request to the "
        "wrong tenant.",
    ),
    700025: ErrorSpec(
        401,
        "invalid_client",
        "Client is public so neither 'client_assertion' nor 'client_secret' should be presented.",
    ),
    700082: ErrorSpec(
        400,
        "invalid_grant",
        "The refresh token has expired due to inactivity. The token was issued on {issued} and was "
        "inactive for {idle}.",
    ),
    500112: ErrorSpec(
        400,
        "invalid_grant",
        "The reply address '{redirect_uri}' does not match the reply address '{expected}' provided when "
        "requesting Authorization code.",
    ),
    900144: ErrorSpec(400, "invalid_request", "The request body must contain the following parameter: '{param}'."),
    1002012: ErrorSpec(
        400,
        "invalid_scope",
        "The provided value for scope {scope} is not valid. Client credential flows must have a scope "
        "value with /.default suffixed to the resource identifier (application ID URI).",
    ),
    28000: ErrorSpec(
        400,
        "invalid_scope",
        "Provided value for the input parameter scope is not valid because it contains more than one "
        "resource. Scope {scope} is not valid.",
    ),
    7000215: ErrorSpec(
        401,
        "invalid_client",
        "Invalid client secret provided. Ensure the secret being sent in the request is the client "
        "secret value, not the client secret ID, for a secret added to app '{client_id}'.",
    ),
    7000218: ErrorSpec(
        401,
        "invalid_client",
        "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
    ),
    # Workload identity federation (federation.py): a client assertion from a trusted OIDC issuer.
    50013: ErrorSpec(401, "invalid_client", "Assertion failed signature validation. [Reason - {reason}]"),
    50027: ErrorSpec(400, "invalid_request", "JWT token is invalid or malformed."),
    70021: ErrorSpec(
        400,
        "invalid_request",
        "No matching federated identity record found for presented assertion. Assertion Issuer: '{issuer}'. "
        "Assertion Subject: '{subject}'. Assertion Audience: '{audience}'. "
        "https://docs.microsoft.com/en-us/azure/active-directory/develop/workload-identity-federation",
    ),
    90061: ErrorSpec(400, "invalid_request", "Request to External OIDC endpoint failed. {detail}"),
    700024: ErrorSpec(
        401,
        "invalid_client",
        "Client assertion is not within its valid time range. Current time: {now}, assertion valid from {nbf}, "
        "expiry time of assertion {exp}. Review the documentation at "
        "https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
    ),
    700211: ErrorSpec(
        401,
        "invalid_client",
        "No matching federated identity record found for presented assertion issuer '{issuer}'. Please check "
        "your federated identity credential Subject, Audience and Issuer against the presented assertion. "
        "https://learn.microsoft.com/entra/workload-id/workload-identity-federation",
    ),
    700212: ErrorSpec(
        401,
        "invalid_client",
        "No matching federated identity record found for presented assertion audience '{audience}'. Please "
        "check your federated identity credential Subject, Audience and Issuer against the presented "
        "assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation",
    ),
    700213: ErrorSpec(
        401,
        "invalid_client",
        "No matching federated identity record found for presented assertion subject '{subject}'. Check your "
        "federated identity credential Subject, Audience and Issuer against the presented assertion. "
        "https://learn.microsoft.com/entra/workload-id/workload-identity-federation",
    ),
}

#: Device-flow "slow down" has no AADSTS number of its own.
MICROSOFT_SLOW_DOWN = ErrorSpec(400, "slow_down", "OAuth 2.0 device flow error. Polling too frequently.")

#: Google errors by a short name (the name is what fault injection accepts).
GOOGLE: dict[str, ErrorSpec] = {
    "invalid_grant_google": ErrorSpec(400, "invalid_grant", "Token has been expired or revoked."),
    "invalid_grant_bad_request": ErrorSpec(400, "invalid_grant", "Bad Request"),
    "invalid_grant_missing_verifier": ErrorSpec(400, "invalid_grant", "Missing code verifier."),
    "invalid_grant_bad_verifier": ErrorSpec(400, "invalid_grant", "Invalid code verifier."),
    "invalid_grant_jwt_signature": ErrorSpec(400, "invalid_grant", "Invalid JWT Signature."),
    "invalid_grant_jwt_audience": ErrorSpec(400, "invalid_grant", "Invalid JWT: Failed audience check."),
    "invalid_grant_jwt_time": ErrorSpec(
        400,
        "invalid_grant",
        "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. "
        "Check your iat and exp values in the JWT claim.",
    ),
    "invalid_grant_account_not_found": ErrorSpec(400, "invalid_grant", "Invalid grant: account not found"),
    "invalid_grant_subject": ErrorSpec(400, "invalid_grant", "Invalid email or User ID"),
    "invalid_client_google": ErrorSpec(401, "invalid_client", "Unauthorized"),
    "invalid_client_not_found": ErrorSpec(401, "invalid_client", "The OAuth client was not found."),
    "unauthorized_client": ErrorSpec(401, "unauthorized_client", "Unauthorized"),
    "unauthorized_client_dwd": ErrorSpec(
        401,
        "unauthorized_client",
        "Client is unauthorized to retrieve access tokens using this method, or client not authorized "
        "for any of the scopes requested.",
    ),
    "redirect_uri_mismatch": ErrorSpec(400, "redirect_uri_mismatch", "Bad Request"),
    "invalid_scope_google": ErrorSpec(400, "invalid_scope", "Invalid OAuth scope or ID token audience provided."),
    "invalid_request_google": ErrorSpec(400, "invalid_request", "Missing required parameter: {param}"),
    "invalid_request_client_id": ErrorSpec(400, "invalid_request", "Could not determine client ID from request."),
    "invalid_request_client_secret": ErrorSpec(400, "invalid_request", "client_secret is missing."),
    "unsupported_grant_type_google": ErrorSpec(400, "unsupported_grant_type", "Invalid grant_type: {grant_type}"),
    "internal_failure": ErrorSpec(500, "internal_failure", "Backend Error"),
    "temporarily_unavailable_google": ErrorSpec(
        503, "temporarily_unavailable", "The service is currently unavailable."
    ),
    "rate_limit_exceeded": ErrorSpec(429, "rate_limit_exceeded", "Rate Limit Exceeded"),
}


@dataclass
class OAuthError(Exception):
    """A failure to answer in a provider's dialect; raised by handlers, rendered by the app."""

    provider: str
    status: int
    error: str
    description: str
    code: int | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.error}: {self.description}"


def microsoft_error(code: int, **params: Any) -> OAuthError:
    """Build an Entra error from its AADSTS number; missing template fields render empty."""
    spec = MICROSOFT[code]
    description = spec.description.format_map(_Blank(params)).strip()
    return OAuthError("microsoft", spec.status, spec.error, f"AADSTS{code}: {description}", code)


def google_error(name: str, **params: Any) -> OAuthError:
    """Build a Google error from its catalogue name."""
    spec = GOOGLE[name]
    return OAuthError("google", spec.status, spec.error, spec.description.format_map(_Blank(params)))


def error_from_code(code: str, provider: str) -> OAuthError:
    """Resolve a fault's ``error_code`` ('AADSTS70008', 'invalid_grant_google', ...) to an error."""
    if code.upper().startswith("AADSTS") and code[6:].isdigit() and int(code[6:]) in MICROSOFT:
        return microsoft_error(int(code[6:]))
    if code in GOOGLE:
        return google_error(code)
    raise ValueError(
        f"unknown error code {code!r}: use one of "
        f"{', '.join(f'AADSTS{n}' for n in sorted(MICROSOFT))} or {', '.join(sorted(GOOGLE))}"
    )


def status_error(status: int, provider: str) -> OAuthError:
    """The body a provider sends with a bare 5xx/429, so clients parse what they would in production."""
    if provider == "google":
        name = {500: "internal_failure", 503: "temporarily_unavailable_google", 429: "rate_limit_exceeded"}
        spec = GOOGLE[name.get(status, "internal_failure")]
        return OAuthError("google", status, spec.error, spec.description)
    code = {429: 50196, 503: 90033}.get(status, 50000)
    err = microsoft_error(code)
    err.status = status
    return err


def entra_timestamp(now: float) -> str:
    """Entra's timestamp format, e.g. ``2026-11-28 12:34:56Z``."""
    return datetime.datetime.fromtimestamp(now, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def render(err: OAuthError, *, now: float, correlation_id: str | None, base_url: str) -> dict[str, Any]:
    """The JSON body for an error, with Entra's trace metadata when it is a Microsoft error."""
    if err.provider != "microsoft":
        return {"error": err.error, "error_description": err.description}
    trace_id = str(uuid.uuid4())
    correlation_id = correlation_id or str(uuid.uuid4())
    stamp = entra_timestamp(now)
    body: dict[str, Any] = {
        "error": err.error,
        "error_description": (
            f"{err.description} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {stamp}"
        ),
        "error_codes": [err.code] if err.code is not None else [],
        "timestamp": stamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
    }
    if err.code is not None:
        body["error_uri"] = f"{base_url}/error?code={err.code}"
    return body


class _Blank(dict[str, Any]):
    """format_map helper: unknown placeholders become empty instead of raising."""

    def __missing__(self, key: str) -> str:
        return ""

"""Google (Gmail) through google-auth.

User grants refresh with ``google.oauth2.credentials.Credentials``; domain-wide
delegation uses ``service_account.Credentials`` with the mailbox as subject. The
authorization-code exchange is a plain token-endpoint POST (google-auth has no
helper for it outside google-auth-oauthlib).
"""

from __future__ import annotations

import json
import urllib.parse
from datetime import UTC, datetime, timedelta
from typing import Any

import google.auth.exceptions
import google.auth.transport
from google.oauth2 import credentials as user_credentials
from google.oauth2 import service_account

from emailtoken.advisories import stated_expiry
from emailtoken.model import EmailTokenSpec
from emailtoken.outcomes import ErrorKind, ProviderError, TokenSet
from emailtoken.providers.base import MAX_LIFETIME, ClientCredentials, lifetime, text
from emailtoken.providers.http import (
    Answer,
    EndpointNotAllowed,
    ProviderHTTPError,
    ProviderSession,
    TimedOut,
    UnsafeAnswer,
)
from emailtoken.redact import redact
from emailtoken.timefmt import utcnow

REVOKED_TEXT = (
    "Google says the token has been expired or revoked (the user removed access, changed the password, "
    "or the app is in Testing and its refresh tokens last 7 days)"
)


#: Answers google-auth would retry on its own (its list, plus the error codes it also retries).
_RETRYABLE_STATUS = frozenset(google.auth.transport.DEFAULT_RETRYABLE_STATUS_CODES)
_RETRYABLE_ERRORS = frozenset({"internal_failure", "server_error", "temporarily_unavailable"})


class _RetryableAnswer(google.auth.exceptions.TransportError):
    """A 5xx/429-like answer, raised so google-auth does not retry it: the engine owns backoff."""

    def __init__(self, status: int, data: dict[str, Any]) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.data = data


class _GoogleAnswer(google.auth.transport.Response):
    """An :class:`~emailtoken.providers.http.Answer` in google-auth's response shape."""

    def __init__(self, answer: Answer) -> None:
        self._answer = answer

    @property
    def status(self) -> int:
        return self._answer.status_code

    @property
    def headers(self) -> Any:
        return self._answer.headers

    @property
    def data(self) -> bytes:
        return self._answer.content


class _OneShotRequest(google.auth.transport.Request):
    """google-auth's transport over the operator's session: one attempt per call, the operator's timeout.

    Left alone, google-auth sends every token request with ``timeout=120`` (ignoring
    ``--provider-timeout``) and retries 5xx/429 answers up to three times about a second
    apart, ignoring Retry-After: one engine attempt became three provider calls.
    """

    def __init__(self, session: ProviderSession) -> None:
        self._session = session
        #: ``refresh_token_expires_in`` of the last successful answer (google-auth drops it)
        self.refresh_token_expires_in: Any = None

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: Any = None,
        headers: Any = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        try:
            answer = self._session.request(method, url, data=body, headers=headers, timeout=timeout)
        except ProviderHTTPError as exc:
            raise google.auth.exceptions.TransportError(type(exc).__name__) from exc
        data: dict[str, Any] = {}
        try:
            parsed = json.loads(answer.content)
            data = parsed if isinstance(parsed, dict) else {}
        except ValueError:
            data = {}
        if answer.status_code == 200:
            self.refresh_token_expires_in = data.get("refresh_token_expires_in")
        if answer.status_code in _RETRYABLE_STATUS or (
            answer.status_code != 200
            and (str(data.get("error")) in _RETRYABLE_ERRORS or str(data.get("error_description")) in _RETRYABLE_ERRORS)
        ):
            raise _RetryableAnswer(answer.status_code, data)
        return _GoogleAnswer(answer)


class GoogleProvider:
    """Google token calls for one operator process."""

    def __init__(self, session: ProviderSession | None = None) -> None:
        self.session = session or ProviderSession()

    def acquire_app_token(self, spec: EmailTokenSpec, creds: ClientCredentials) -> TokenSet:
        """Domain-wide delegation: the service account acts as ``emailAddress``."""
        info = dict(creds.service_account_info or {})
        if not info.get("private_key") or not info.get("client_email"):
            raise ProviderError(
                ErrorKind.BAD_CONFIG,
                "the service account key must be a Google JSON key with private_key and client_email",
            )
        info["token_uri"] = spec.token_url
        try:
            sa = service_account.Credentials.from_service_account_info(
                info, scopes=list(spec.scopes), subject=spec.email_address
            )
        except (ValueError, KeyError) as exc:
            raise ProviderError(
                ErrorKind.BAD_CONFIG, f"the service account key is unusable ({type(exc).__name__})"
            ) from None
        self._refresh(sa, info.get("private_key"))
        return TokenSet(
            access_token=sa.token,
            expires_at=_aware(sa.expiry),
            scope=" ".join(spec.scopes),
            account=spec.email_address,
        )

    def refresh(self, spec: EmailTokenSpec, creds: ClientCredentials, refresh_token: str) -> TokenSet:
        """Redeem a user refresh token (Google usually does not rotate it)."""
        cred = user_credentials.Credentials(
            token=None,
            refresh_token=refresh_token,
            client_id=spec.client_id,
            client_secret=creds.client_secret,
            token_uri=spec.token_url,
        )
        request = self._refresh(cred, creds.client_secret, refresh_token)
        return TokenSet(
            access_token=cred.token,
            expires_at=_aware(cred.expiry),
            scope=" ".join(cred.granted_scopes or spec.scopes)
            if hasattr(cred, "granted_scopes")
            else spec.scope_string,
            refresh_token=cred.refresh_token,
            account=None,
            refresh_expires_at=stated_expiry(request.refresh_token_expires_in, utcnow()),
        )

    def authorization_url(
        self, spec: EmailTokenSpec, *, redirect_uri: str, state: str, code_challenge: str, login_hint: str | None
    ) -> str:
        """Consent URL that yields a refresh token (offline access, forced consent)."""
        params = {
            "client_id": spec.client_id,
            "redirect_uri": redirect_uri,
            "response_type": "code",
            "scope": spec.scope_string,
            "access_type": "offline",
            "prompt": "consent",
            "include_granted_scopes": "true",
            "state": state,
            "code_challenge": code_challenge,
            "code_challenge_method": "S256",
        }
        if login_hint:
            params["login_hint"] = login_hint
        try:
            self.session.check_allowed(spec.authorization_url)
        except EndpointNotAllowed as exc:
            raise _network_error(exc) from None
        return f"{spec.authorization_url}?{urllib.parse.urlencode(params)}"

    def exchange_code(
        self, spec: EmailTokenSpec, creds: ClientCredentials, *, code: str, redirect_uri: str, code_verifier: str
    ) -> TokenSet:
        """Redeem an authorization code at Google's token endpoint."""
        secrets = (creds.client_secret, code, code_verifier)
        try:
            response = self.session.post(
                spec.token_url,
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": redirect_uri,
                    "client_id": spec.client_id,
                    "client_secret": creds.client_secret or "",
                    "code_verifier": code_verifier,
                },
            )
        except ProviderHTTPError as exc:
            raise _network_error(exc) from None
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200 or "access_token" not in body:
            raise classify(
                body, status=response.status_code, retry_after=self.session.last_retry_after, secrets=secrets
            )
        account = _id_token_email(body.get("id_token"))
        return TokenSet(
            access_token=body["access_token"],
            token_type=body.get("token_type", "Bearer"),
            expires_at=utcnow() + lifetime(body.get("expires_in")),
            scope=body.get("scope", spec.scope_string),
            refresh_token=body.get("refresh_token"),
            account=account,
            refresh_expires_at=stated_expiry(body.get("refresh_token_expires_in"), utcnow()),
        )

    def _refresh(self, cred: Any, *secrets: str | None) -> _OneShotRequest:
        request = _OneShotRequest(self.session)
        try:
            cred.refresh(request)
        except _RetryableAnswer as exc:
            raise classify(
                exc.data, status=exc.status, retry_after=self.session.last_retry_after, secrets=secrets
            ) from None
        except google.auth.exceptions.RefreshError as exc:
            data = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], dict) else {}
            raise classify(
                data,
                status=None,
                retry_after=self.session.last_retry_after,
                secrets=secrets,
                retryable=getattr(exc, "retryable", False),
            ) from None
        except google.auth.exceptions.TransportError as exc:
            raise _network_error(exc.__cause__ or exc) from None
        except (OverflowError, ValueError, TypeError):
            # google-auth turns expires_in into a datetime itself; 10**12 seconds overflows it.
            raise ProviderError(
                ErrorKind.TRANSIENT, "the Google token endpoint answered with an unusable expires_in"
            ) from None
        return request


def _network_error(exc: BaseException) -> ProviderError:
    if isinstance(exc, EndpointNotAllowed):
        return ProviderError(ErrorKind.BAD_CONFIG, str(exc), reason="EndpointNotAllowed")
    if isinstance(exc, UnsafeAnswer):
        return ProviderError(ErrorKind.TRANSIENT, f"the Google token endpoint's answer was refused: {exc}")
    what = "timed out" if isinstance(exc, TimedOut) else "could not be reached"
    detail = str(exc) if isinstance(exc, ProviderHTTPError) else type(exc).__name__
    return ProviderError(ErrorKind.TRANSIENT, f"the Google token endpoint {what} ({detail})")


def _aware(expiry: datetime | None) -> datetime:
    """google-auth reports naive UTC expiry times; bounded like every provider number (0 to a day from now)."""
    if expiry is None:
        return utcnow() + timedelta(hours=1)
    aware = expiry if expiry.tzinfo else expiry.replace(tzinfo=UTC)
    now = utcnow()
    return min(max(aware, now), now + MAX_LIFETIME)


def _id_token_email(id_token: str | None) -> str | None:
    """The email claim of an id_token we just received over TLS from the token endpoint.

    The token comes straight from the provider in the code exchange, so reading its
    claims without verifying the signature is what OpenID Connect Core 3.1.3.7 allows.
    """
    if not id_token:
        return None
    import base64
    import json

    try:
        payload = id_token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return None
    # Google's id_token may carry an address the account has not proven it owns: pin only a verified one.
    email = claims.get("email")
    verified = claims.get("email_verified")
    if not email or verified not in (True, "true"):
        return None
    return str(email)


def classify(
    data: dict[str, Any],
    *,
    status: int | None,
    retry_after: float | None,
    secrets: tuple[str | None, ...] = (),
    retryable: bool = False,
) -> ProviderError:
    """Turn a Google error body into a typed, safe ProviderError."""
    error = text(data.get("error") or "")[:64]
    description = text(redact(str(data.get("error_description") or ""), *secrets))
    if error == "invalid_grant":
        message = (
            REVOKED_TEXT
            if "expired or revoked" in description
            else f"the grant is no longer valid: {description or error}"
        )
        return ProviderError(ErrorKind.REAUTHORIZE, message, code=error)
    if error in ("invalid_client", "unauthorized_client"):
        return ProviderError(
            ErrorKind.INVALID_CLIENT, f"Google rejected the client: {description or error}", code=error
        )
    if error in ("invalid_scope", "invalid_request", "unsupported_grant_type", "access_denied"):
        return ProviderError(ErrorKind.BAD_CONFIG, f"Google rejected the request: {description or error}", code=error)
    detail = description or error or (f"HTTP {status}" if status else "no usable answer")
    return ProviderError(
        ErrorKind.TRANSIENT, f"the Google token endpoint failed: {detail}", code=error or None, retry_after=retry_after
    )

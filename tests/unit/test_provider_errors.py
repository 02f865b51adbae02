"""Provider error dialects (msal dicts, Google error bodies) become typed, safe ProviderErrors."""

from __future__ import annotations

import importlib.util
import sys
from datetime import UTC, datetime
from typing import Any

import google.auth.exceptions
import msal.application
import pytest

from emailtoken.model import parse_spec
from emailtoken.outcomes import REASONS, ErrorKind, ProviderError, TokenSet
from emailtoken.providers import google as google_mod
from emailtoken.providers import microsoft
from emailtoken.providers.base import ClientCredentials
from emailtoken.providers.google import GoogleProvider
from emailtoken.providers.microsoft import MicrosoftProvider

SECRET = "Zq8~client.SECRET-value_9f3b2c"
REFRESH = "0.AXEAe4Hf-refresh-token-value-abcdef"


def ms_error(code: int, error: str = "invalid_grant", description: str | None = None) -> dict[str, Any]:
    """An msal error dict the way Entra ID answers."""
    return {
        "error": error,
        "error_description": description
        or f"AADSTS{code}: Something went wrong.\r\nTrace ID: 1234\r\nCorrelation ID: 5678",
        "error_codes": [code],
    }


def all_text(exc: ProviderError) -> str:
    """Everything an exception can print: str, repr, args, message, code."""
    return " ".join([str(exc), repr(exc), repr(exc.args), exc.message, str(exc.code), exc.reason])


# --------------------------------------------------------------------------- Microsoft


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (70008, "the refresh token expired after a period of inactivity"),
        (700082, "the refresh token expired after 90 days of inactivity"),
        (50173, "the grant was revoked (password changed or sessions revoked by an administrator)"),
        (70043, "the refresh token expired under a Conditional Access sign-in frequency policy"),
    ],
)
def test_microsoft_dead_grant_codes_need_reauthorization(code: int, words: str) -> None:
    """These codes mean a person must sign in again; the message says why in plain words."""
    exc = microsoft.classify(ms_error(code))
    assert exc.kind is ErrorKind.REAUTHORIZE
    assert exc.reason == "ReauthorizationRequired"
    assert exc.message == f"{words} (AADSTS{code})"
    assert exc.code == f"AADSTS{code}"
    assert "Trace ID" not in exc.message


def test_microsoft_codes_given_as_strings() -> None:
    """Some proxies re-serialise error_codes as strings."""
    result = ms_error(700082)
    result["error_codes"] = ["700082"]
    assert microsoft.classify(result).kind is ErrorKind.REAUTHORIZE


def test_microsoft_wrong_client_secret_is_invalid_client() -> None:
    """AADSTS7000215 is a wrong secret, not a dead grant: retry slowly, wait for the Secret to change."""
    exc = microsoft.classify(ms_error(7000215, error="invalid_client"))
    assert exc.kind is ErrorKind.INVALID_CLIENT
    assert exc.reason == "InvalidClient"
    assert exc.message == "the client secret is wrong (AADSTS7000215)"


def test_microsoft_invalid_client_code_wins_over_invalid_grant_error() -> None:
    """The code table decides before the generic error string."""
    exc = microsoft.classify(ms_error(7000222, error="invalid_grant"))
    assert exc.kind is ErrorKind.INVALID_CLIENT
    assert "expired" in exc.message


def test_microsoft_invalid_scope_is_bad_config() -> None:
    """A scope the tenant does not know is a spec problem: retrying will not help."""
    description = "AADSTS70011: The provided value for scope x is not valid.\r\nTrace ID: 1"
    exc = microsoft.classify(ms_error(70011, error="invalid_scope", description=description))
    assert exc.kind is ErrorKind.BAD_CONFIG
    assert exc.reason == "InvalidConfiguration"
    assert exc.message == "the request was rejected: AADSTS70011: The provided value for scope x is not valid."


@pytest.mark.parametrize("error", ["server_error", "temporarily_unavailable"])
def test_microsoft_server_errors_are_transient_with_retry_after(error: str) -> None:
    """5xx-like answers are retried with backoff, honouring Retry-After."""
    exc = microsoft.classify(
        {"error": error, "error_description": "AADSTS90033: busy\r\nTrace ID: 1", "error_codes": [90033]},
        retry_after=37.0,
    )
    assert exc.kind is ErrorKind.TRANSIENT
    assert exc.reason == "ProviderUnavailable"
    assert exc.retry_after == 37.0
    assert exc.message == "the token endpoint failed: AADSTS90033: busy"


def test_microsoft_generic_errors() -> None:
    """Without a known code the error string decides."""
    assert microsoft.classify({"error": "invalid_grant"}).kind is ErrorKind.REAUTHORIZE
    assert microsoft.classify({"error": "interaction_required"}).kind is ErrorKind.REAUTHORIZE
    assert microsoft.classify({"error": "unauthorized_client"}).kind is ErrorKind.INVALID_CLIENT
    assert microsoft.classify({"error": "unsupported_grant_type"}).kind is ErrorKind.BAD_CONFIG
    unknown = microsoft.classify({})
    assert unknown.kind is ErrorKind.TRANSIENT
    assert unknown.message == "the token endpoint failed: unknown_error"
    assert unknown.retry_after is None


@pytest.mark.parametrize("error", ["invalid_request", "server_error", "invalid_client", "invalid_grant", "weird"])
def test_microsoft_secret_in_description_never_survives(error: str) -> None:
    """Entra sometimes echoes request fields; the message is shown in status and Events."""
    result = {
        "error": error,
        "error_description": f"AADSTS900144: bad request client_secret={SECRET} refresh {REFRESH}",
    }
    exc = microsoft.classify(result, secrets=(SECRET, REFRESH))
    text = all_text(exc)
    assert SECRET not in text
    assert REFRESH not in text
    assert "AADSTS900144" in exc.message


def test_microsoft_call_passes_the_refresh_token_to_redaction() -> None:
    """The provider's own wrapper hands every secret it used to classify."""
    spec = parse_spec(
        {
            "provider": "Microsoft",
            "tenantId": "t",
            "clientId": "c",
            "clientSecretRef": {"name": "s"},
            "services": ["IMAP"],
        },
        "box",
    )
    answer = {"error": "invalid_grant", "error_description": f"refresh token {REFRESH} was issued to {SECRET}"}
    with pytest.raises(ProviderError) as info:
        MicrosoftProvider()._call(spec, lambda: answer, ClientCredentials(client_secret=SECRET), REFRESH)
    assert info.value.kind is ErrorKind.REAUTHORIZE
    assert SECRET not in all_text(info.value)
    assert REFRESH not in all_text(info.value)


# --------------------------------------------------------------------------- Google


def test_google_expired_or_revoked_needs_reauthorization() -> None:
    """Google's one-line answer gets an explanation of the usual causes."""
    exc = google_mod.classify(
        {"error": "invalid_grant", "error_description": "Token has been expired or revoked."},
        status=400,
        retry_after=None,
    )
    assert exc.kind is ErrorKind.REAUTHORIZE
    assert exc.reason == "ReauthorizationRequired"
    assert exc.message == google_mod.REVOKED_TEXT
    assert "Testing" in exc.message
    assert exc.code == "invalid_grant"


def test_google_other_invalid_grant_keeps_description() -> None:
    """Other invalid_grant texts are passed on."""
    exc = google_mod.classify(
        {"error": "invalid_grant", "error_description": "Bad Request"}, status=400, retry_after=None
    )
    assert exc.kind is ErrorKind.REAUTHORIZE
    assert exc.message == "the grant is no longer valid: Bad Request"


@pytest.mark.parametrize("error", ["invalid_client", "unauthorized_client"])
def test_google_client_errors_are_invalid_client(error: str) -> None:
    """A wrong client or missing domain-wide delegation is retried slowly."""
    exc = google_mod.classify({"error": error, "error_description": "Unauthorized"}, status=401, retry_after=None)
    assert exc.kind is ErrorKind.INVALID_CLIENT
    assert exc.reason == "InvalidClient"
    assert exc.message == "Google rejected the client: Unauthorized"


def test_google_bad_request_is_bad_config() -> None:
    """An unknown scope cannot be fixed by retrying."""
    exc = google_mod.classify({"error": "invalid_scope"}, status=400, retry_after=None)
    assert exc.kind is ErrorKind.BAD_CONFIG
    assert exc.message == "Google rejected the request: invalid_scope"


def test_google_server_errors_are_transient() -> None:
    """A bare 503 is retried, honouring Retry-After."""
    exc = google_mod.classify({}, status=503, retry_after=12.0)
    assert exc.kind is ErrorKind.TRANSIENT
    assert exc.message == "the Google token endpoint failed: HTTP 503"
    assert exc.retry_after == 12.0
    assert exc.code is None
    assert google_mod.classify({}, status=None, retry_after=None).message == (
        "the Google token endpoint failed: no usable answer"
    )


@pytest.mark.parametrize("error", ["invalid_grant", "invalid_client", "invalid_request", "internal_failure"])
def test_google_secret_in_description_never_survives(error: str) -> None:
    """Known secrets and token-shaped fields are scrubbed from every kind of message."""
    data = {"error": error, "error_description": f"refresh_token {REFRESH} for client {SECRET} refused"}
    exc = google_mod.classify(data, status=400, retry_after=None, secrets=(SECRET, REFRESH))
    text = all_text(exc)
    assert SECRET not in text
    assert REFRESH not in text


def test_google_refresh_error_is_classified_with_its_body() -> None:
    """google-auth puts the JSON body in RefreshError.args[1]; that is what decides."""

    class Cred:
        def refresh(self, request: object) -> None:
            raise google.auth.exceptions.RefreshError(
                f"invalid_grant: Token has been expired or revoked. {REFRESH}",
                {"error": "invalid_grant", "error_description": "Token has been expired or revoked."},
            )

    with pytest.raises(ProviderError) as info:
        GoogleProvider()._refresh(Cred(), SECRET, REFRESH)
    assert info.value.kind is ErrorKind.REAUTHORIZE
    assert REFRESH not in all_text(info.value)
    assert info.value.__suppress_context__ is True  # the library exception (with the token) is not chained


def test_google_transport_error_is_transient() -> None:
    """Connection failures are retried."""

    class Cred:
        def refresh(self, request: object) -> None:
            raise google.auth.exceptions.TransportError("connection refused")

    with pytest.raises(ProviderError) as info:
        GoogleProvider()._refresh(Cred())
    assert info.value.kind is ErrorKind.TRANSIENT
    assert info.value.message == "the Google token endpoint could not be reached (TransportError)"


# --------------------------------------------------------------------------- outcomes


def test_provider_error_default_reasons() -> None:
    """Each kind maps to the condition reason written to status."""
    assert {kind: ProviderError(kind, "m").reason for kind in ErrorKind} == REASONS
    assert REASONS[ErrorKind.REAUTHORIZE] == "ReauthorizationRequired"
    assert ProviderError(ErrorKind.BAD_CONFIG, "m", reason="SecretNotFound").reason == "SecretNotFound"


def test_token_set_repr_hides_tokens() -> None:
    """A logged TokenSet shows no token values."""
    tokens = TokenSet(access_token="AT-abcdef", expires_at=datetime(2026, 1, 1, tzinfo=UTC), refresh_token="RT-xyz")
    assert "AT-abcdef" not in repr(tokens)
    assert "RT-xyz" not in repr(tokens)


class _Lookups:
    """A meta-path finder that only records which modules Python searched for."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        self.names.append(name)


def test_msal_looks_for_its_absent_extension_package_once_not_per_application() -> None:
    """msal imports the optional msal-extensions each time an application is built; once the
    provider module is loaded, an absent package is known absent without a search."""
    if importlib.util.find_spec("msal_extensions") is not None:
        pytest.skip("msal-extensions is installed here: msal's check finds it")
    lookups = _Lookups()
    sys.meta_path.insert(0, lookups)
    try:
        for _ in range(3):
            msal.application._msal_extension_check()  # what every ClientApplication() runs
    finally:
        sys.meta_path.remove(lookups)
    assert "msal_extensions" not in lookups.names

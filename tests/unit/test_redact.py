"""emailtoken.redact: secret values never reach logs, status or Events."""

from __future__ import annotations

import pytest

from emailtoken.redact import MASK, redact


def test_known_secrets_are_masked_everywhere() -> None:
    """Every occurrence of a known value goes, whatever surrounds it."""
    text = "client s3cr3t-value rejected; retry with s3cr3t-value?"
    assert redact(text, "s3cr3t-value") == f"client {MASK} rejected; retry with {MASK}?"


def test_several_secrets_and_none() -> None:
    """Missing secrets (None, empty) are skipped, the rest masked."""
    assert redact("a=alpha1 b=beta22", None, "", "alpha1", "beta22") == f"a={MASK} b={MASK}"


def test_very_short_secrets_are_not_masked() -> None:
    """Masking 'a' would shred the message; such values are not real secrets anyway."""
    assert redact("a cat", "a") == "a cat"
    assert redact("abc abcd", "abcd") == f"abc {MASK}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.x.y", f"Authorization: Bearer {MASK}"),
        ("bearer abcdefghijklmnop", f"bearer {MASK}"),
        ("refresh_token=0.AAAAbbbbCCCCdddd&x=1", f"refresh_token={MASK}&x=1"),
        ('{"access_token": "ya29.a0AfH6SMBxxxxxxxx"}', f'{{"access_token": "{MASK}"}}'),
        ("client_secret: Abc~def_ghi.jkl", f"client_secret: {MASK}"),
        ("code=M.R3_BAY.abcdef123456", f"code={MASK}"),
        ("ACCESS_TOKEN=abcdefghijklmnop", f"ACCESS_TOKEN={MASK}"),
    ],
)
def test_token_shaped_fields_are_masked_without_knowing_the_value(text: str, expected: str) -> None:
    """Library messages echoing a request body must not leak what we were not told about."""
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "AADSTS70008: The refresh token has expired due to inactivity.",
        "error_code=invalid_grant_abcdefghijk",  # no word boundary before 'code'
        "bearer short",  # too short to be a token
        "Token has been expired or revoked.",
    ],
)
def test_plain_messages_are_left_alone(text: str) -> None:
    """Redaction must not destroy the words that explain the failure."""
    assert redact(text) == text


@pytest.mark.parametrize("field", ["client_assertion", "code_verifier", "device_code"])
def test_federation_and_pkce_fields_are_masked(field: str) -> None:
    """A client assertion (a ServiceAccount token) reaches msal as a callable, never in a secrets
    list; the field pattern is its only guard in library error text."""
    assert redact(f"{field}=eyJhbGciOiJSUzI1NiJ9.payload.sig&x=1") == f"{field}={MASK}&x=1"

"""emailtoken.tokenindex: which consumer Secrets the watch delivered are kept for a token's first step."""

from __future__ import annotations

from datetime import UTC, datetime

from emailtoken.model import parse_spec
from emailtoken.secretdata import PublishedToken
from emailtoken.tokenindex import keeps_watched_copy, secrets_read, watched_copy

HOLDS = PublishedToken(datetime(2026, 12, 1, 13, tzinfo=UTC), None, "ann@example.com", "IMAP", "h")


def test_a_watched_consumer_secret_is_kept_only_until_its_token_reads_it_or_it_is_deleted() -> None:
    assert keeps_watched_copy(deleted=False, loaded=False)
    assert not keeps_watched_copy(deleted=True, loaded=False)
    assert not keeps_watched_copy(deleted=False, loaded=True)  # the token keeps its own copy now


def test_the_watched_copy_counts_only_for_the_secret_the_spec_names_and_only_with_data() -> None:
    assert watched_copy(("inbox", HOLDS, "7"), "inbox") is HOLDS
    assert watched_copy(("old-name", HOLDS, "7"), "inbox") is None  # secretName changed since: look it up
    assert watched_copy(("inbox", None, "7"), "inbox") is None  # not a token's data: look it up
    assert watched_copy(None, "inbox") is None


def test_a_token_reads_its_credentials_grant_and_consumer_secret() -> None:
    spec = parse_spec(
        {
            "provider": "Microsoft",
            "tenantId": "t",
            "clientId": "c",
            "clientSecretRef": {"name": "app-secret"},
            "services": ["IMAP"],
            "secretName": "mail-token",
        },
        "inbox",
    )
    read, credentials = secrets_read(spec, "emailtoken-grant-inbox")
    assert read == {"app-secret", "emailtoken-grant-inbox", "mail-token"}
    assert credentials == {"app-secret"}

"""emailtoken.grants: one account rule, one endpoint rule, one way to build a grant, for every flow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from emailtoken.grants import (
    account_problem,
    endpoint_problem,
    from_sign_in,
    is_grant_of,
    published_account,
    same_account,
    successor,
)
from emailtoken.model import TokenRef, parse_spec
from emailtoken.outcomes import TokenSet
from emailtoken.secretdata import Grant, grant_secret

NOW = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
URL = "https://login.microsoftonline.com/contoso/oauth2/v2.0/token"


def spec(email: str | None = "Box@Contoso.com", **extra: str):
    raw = {
        "provider": "Microsoft",
        "tenantId": "contoso",
        "clientId": "app",
        "clientSecretRef": {"name": "s"},
        "services": ["IMAP"],
        **extra,
    }
    if email:
        raw["emailAddress"] = email
    return parse_spec(raw, "box")


def answer(refresh: str | None = "rt-2", account: str | None = "box@contoso.com") -> TokenSet:
    return TokenSet("at", NOW + timedelta(hours=1), "scope-b", refresh_token=refresh, account=account)


@pytest.mark.parametrize(
    ("expected", "account", "same"),
    [
        ("box@contoso.com", "BOX@Contoso.COM", True),
        ("straße@example.de", "STRASSE@example.de", True),  # casefold, not lower()
        ("box@contoso.com", "box@contoso.com.evil", False),
        ("box@contoso.com", "", False),
        ("box@contoso.com", None, False),
        ("", "", False),
        (None, "box@contoso.com", False),
    ],
)
def test_same_account(expected: str | None, account: str | None, same: bool) -> None:
    assert same_account(expected, account) is same


def test_account_problem_refuses_unnamed_and_other_accounts() -> None:
    assert account_problem(spec(), "box@CONTOSO.com") is None
    assert "did not say which account" in (account_problem(spec(), "") or "")
    assert "did not say which account" in (account_problem(spec(email=None), None) or ""), "pinned or not"
    assert account_problem(spec(email=None), "anyone@contoso.com") is None
    assert "signed in as eve@contoso.com" in (account_problem(spec(), "eve@contoso.com") or "")


def test_a_grant_remembers_its_endpoint_and_keeps_it_through_rotation() -> None:
    s = spec()
    grant = from_sign_in(s, answer(refresh="rt-1"), "box@contoso.com", NOW)
    assert (grant.token_url, grant.refresh_token, grant.obtained_at) == (URL, "rt-1", "2026-12-05T09:00:00Z")
    nxt = successor(grant, s, answer(refresh="rt-2"), NOW + timedelta(hours=1))
    assert nxt is not None and (nxt.token_url, nxt.refresh_token, nxt.obtained_at) == (URL, "rt-2", grant.obtained_at)
    assert successor(grant, s, answer(refresh="rt-1"), NOW) is None, "not rotated"
    assert successor(grant, s, answer(refresh=None), NOW) is None


def test_endpoint_problem() -> None:
    grant = Grant("rt", "box@contoso.com", token_url=URL)
    assert endpoint_problem(grant, spec()) is None
    moved = spec(tokenUrl="https://login.evil.example/contoso/oauth2/v2.0/token")
    text = endpoint_problem(grant, moved) or ""
    assert "issued by login.microsoftonline.com" in text and "login.evil.example" in text
    legacy = Grant("rt", "box@contoso.com")  # stored before endpoints were recorded: bound at the next rotation
    assert endpoint_problem(legacy, moved) is None
    bound = successor(legacy, spec(), answer(), NOW)
    assert bound is not None and bound.token_url == URL


def test_is_grant_of_needs_type_and_label() -> None:
    ours = grant_secret(TokenRef("mail", "box", "uid"), Grant("rt", "box@contoso.com"))
    assert is_grant_of(ours, "box")
    assert not is_grant_of(ours, "other")
    assert not is_grant_of({**ours, "type": "Opaque"}, "box")
    unlabelled = {**ours, "metadata": {**ours["metadata"], "labels": {}}}
    assert not is_grant_of(unlabelled, "box")


def test_the_published_account_is_the_pinned_mailbox_else_the_signed_in_one_else_the_answers() -> None:
    """One rule for every flow (app-only, a refresh, a device-code sign-in): the consumer Secret's username."""
    signed_in = Grant("rt", "Signed.In@contoso.com")
    assert published_account(spec(), signed_in, answer(account="other@contoso.com")) == "Box@Contoso.com"
    assert published_account(spec(None), signed_in, answer(account="other@contoso.com")) == "Signed.In@contoso.com"
    assert published_account(spec(None), Grant("rt", ""), answer(account="other@contoso.com")) == "other@contoso.com"
    assert published_account(spec(None), None, answer(account="app@contoso.com")) == "app@contoso.com"
    assert published_account(spec(None), None, answer(account=None)) == ""

"""What the admin page offers per token, the account pin, and the HTML's safety properties."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any

import pytest

from emailtoken.callback import pages
from emailtoken.callback.app import hostname
from emailtoken.callback.context import CallbackConfig
from emailtoken.callback.signin import SignInRefused, check_sign_in
from emailtoken.callback.tokens import Action, Tone, relative, row_of, rows_of
from emailtoken.grants import same_account
from emailtoken.model import parse_spec
from emailtoken.outcomes import TokenSet

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def token(name: str = "inbox", flow: str = "AuthorizationCode", status: dict[str, Any] | None = None, **spec: Any):
    base = {
        "provider": "Microsoft",
        "flow": flow,
        "tenantId": "contoso",
        "clientId": "app",
        "clientSecretRef": {"name": "s"},
        "emailAddress": "alice@contoso.com",
        "services": ["IMAP"],
    }
    if flow == "DeviceCode":
        base.pop("clientSecretRef")
    base.update(spec)
    return {"metadata": {"name": name, "namespace": "mail", "uid": "u1"}, "spec": base, "status": status or {}}


def cond(type_: str, status: str, reason: str, message: str = "") -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


def test_awaiting_token_offers_get_email_token():
    row = row_of(
        token(
            status={
                "phase": "AwaitingAuthorization",
                "conditions": [cond("Authorized", "False", "AwaitingAuthorization", "no grant yet")],
            }
        )
    )
    assert row.action is Action.SIGN_IN and row.can_sign_in
    assert row.tone is Tone.WAIT and row.message == "no grant yet"
    assert row.key == "mail/inbox"


def test_dead_grant_offers_reauthorize():
    for reason in ("ReauthorizationRequired", "AccountMismatch", "EndpointChanged"):
        status = {"phase": reason, "conditions": [cond("Ready", "False", reason), cond("Authorized", "False", reason)]}
        row = row_of(token(status=status))
        assert row.action is Action.REAUTHORIZE and row.action.value == "Re-authorize"
        assert row.tone is Tone.BAD


def test_a_token_failing_for_a_reason_a_sign_in_does_not_fix_offers_get_email_token():
    """A client Secret not there yet (the admin page's "Create now" writes it just after the token,
    and the operator may look in between) or a wrong client secret: re-authorizing fixes nothing."""
    for reason in ("SecretNotFound", "InvalidClient", "SecretConflict"):
        status = {"phase": reason, "conditions": [cond("Ready", "False", reason), cond("Authorized", "False", reason)]}
        row = row_of(token(status=status))
        assert row.action is Action.SIGN_IN and row.action.value == "Get Email Token", reason


def test_ready_token_shows_expiry_and_last_update():
    status = {
        "phase": "Ready",
        "expiresAt": "2026-11-29T13:00:00Z",
        "lastRefreshTime": "2026-11-29T12:00:00Z",
        "account": "alice@contoso.com",
        "conditions": [cond("Ready", "True", "TokenValid", "valid"), cond("Authorized", "True", "Authorized")],
    }
    row = row_of(token(status=status))
    assert row.action is Action.SIGN_IN and row.tone is Tone.OK
    assert row.expires_at == datetime(2026, 11, 29, 13, tzinfo=UTC)
    assert row.last_refresh == NOW and row.account == "alice@contoso.com"


def test_app_only_device_and_invalid_tokens_get_no_button():
    assert row_of(token(flow="ClientCredentials")).action is Action.APP_ONLY
    assert Action.APP_ONLY.value == "app-only, nothing to sign in"
    device = row_of(
        token(flow="DeviceCode", status={"deviceCode": {"userCode": "ABCD", "verificationUri": "https://x"}})
    )
    assert device.action is Action.DEVICE_CODE and device.device_code == {
        "userCode": "ABCD",
        "verificationUri": "https://x",
    }
    html = pages.admin_index([device], redirect_uri="https://cb/callback", csrf_token="t", namespaces=(), now=NOW)
    assert '<a href="https://x" rel="noreferrer noopener">https://x</a>' in html and "<code>ABCD</code>" in html
    sneaky = row_of(
        token(flow="DeviceCode", status={"deviceCode": {"userCode": "A", "verificationUri": "javascript:x"}})
    )
    html = pages.admin_index([sneaky], redirect_uri="https://cb/callback", csrf_token="t", namespaces=(), now=NOW)
    assert 'href="javascript' not in html
    broken = row_of(token(provider="Yahoo"))
    assert broken.action is Action.FIX_SPEC and not broken.can_sign_in
    assert broken.phase == "InvalidSpec" and "provider must be one of" in broken.message


def test_rows_are_sorted():
    rows = rows_of([token("b"), token("a"), {**token("c"), "metadata": {"name": "c", "namespace": "a-ns"}}])
    assert [r.key for r in rows] == ["a-ns/c", "mail/a", "mail/b"]


def test_relative_times():
    assert relative(NOW + timedelta(minutes=59), NOW) == "in 59m"
    assert relative(NOW - timedelta(seconds=90), NOW) == "1m ago"
    assert relative(NOW + timedelta(minutes=90), NOW) == "in 1h30m"
    assert relative(NOW + timedelta(seconds=45), NOW) == "in 45s"
    assert relative(NOW - timedelta(days=1, hours=2, minutes=3), NOW) == "1d2h ago"
    assert relative(NOW, NOW) == "now"


def signed(account: str | None, refresh_token: str | None = "rt") -> TokenSet:
    """A provider's answer to a sign-in (tokens are placeholders: nothing is sent)."""
    return TokenSet("at", NOW, refresh_token=refresh_token, account=account)


def test_account_is_pinned_case_insensitively():
    spec = parse_spec(token()["spec"], "inbox")
    assert check_sign_in(spec, signed("Alice@Contoso.com")) == "Alice@Contoso.com"
    with pytest.raises(SignInRefused) as exc:
        check_sign_in(spec, signed("bob@contoso.com"))
    assert exc.value.reason == "AccountMismatch" and exc.value.status == 403
    assert "nothing was stored" in exc.value.message
    with pytest.raises(SignInRefused, match="did not say which account"):
        check_sign_in(spec, signed(None))
    unpinned = parse_spec({**token()["spec"], "emailAddress": None}, "inbox")
    assert check_sign_in(unpinned, signed("anyone@contoso.com")) == "anyone@contoso.com"


def test_an_answer_without_a_refresh_token_is_not_stored():
    """The rule the operator's device flow applies too (emailtoken.signinrule)."""
    spec = parse_spec(token()["spec"], "inbox")
    with pytest.raises(SignInRefused) as exc:
        check_sign_in(spec, signed("alice@contoso.com", refresh_token=None))
    assert (exc.value.reason, exc.value.status) == ("NoRefreshToken", 502)
    assert (
        exc.value.message
        == f"{spec.provider} issued no refresh token (offline access was not granted); nothing was stored"
    )


@pytest.mark.parametrize("pinned", [True, False])
@pytest.mark.parametrize("account", [None, "", "   "])
def test_an_unnamed_account_is_refused_pinned_or_not(pinned: bool, account: str | None):
    spec = parse_spec({**token()["spec"], **({} if pinned else {"emailAddress": None})}, "inbox")
    with pytest.raises(SignInRefused, match="did not say which account signed in") as exc:
        check_sign_in(spec, signed(account))
    assert (exc.value.reason, exc.value.status) == ("AccountMismatch", 403)


def test_one_account_rule_casefold_never_empty():
    assert same_account("alice@contoso.com", "ALICE@Contoso.COM")
    assert same_account("strasse@example.de", "STRASSE@example.de")
    assert same_account("straße@example.de", "STRASSE@example.de")  # casefold, not lower()
    assert not same_account("alice@contoso.com", "alice@contoso.com.evil")
    assert not same_account("alice@contoso.com", "")
    assert not same_account("alice@contoso.com", None)
    assert not same_account("", "")


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def test_csp_allows_exactly_the_inline_style_and_script():
    assert pages.CSP.startswith("default-src 'none';")
    assert f"style-src {_hash(pages.STYLE)};" in pages.CSP
    assert f"script-src {_hash(pages.SCRIPT)};" in pages.CSP
    html = pages.admin_index([], redirect_uri="https://cb/callback", csrf_token="t", namespaces=(), now=NOW)
    styles = re.findall(r"<style>(.*?)</style>", html, re.S)
    scripts = re.findall(r"<script>(.*?)</script>", html, re.S)
    assert styles == [pages.STYLE] and scripts == [pages.SCRIPT]
    assert "http://" not in html.replace("https://cb/callback", "") and "src=" not in html  # no external assets


def test_admin_page_is_accessible_and_escapes_everything():
    evil = token(
        name="x",
        status={"phase": "<b>", "conditions": [cond("Ready", "False", "R", "<script>alert(1)</script>")]},
        secretName="x",
    )
    evil["metadata"]["name"] = 'x"><script>'
    html = pages.admin_index(
        rows_of([evil, token()]), redirect_uri='https://cb/callback?"<', csrf_token="tok", namespaces=(), now=NOW
    )
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)" in html
    assert 'x"><script>' not in html
    assert '<html lang="en">' in html and "<h1>" in html and "<caption>" in html
    assert html.count('<th scope="col">') == 9 and html.count('<th scope="row">') == 2
    assert '<label class="visually-hidden" for="redirect-uri">' in html
    assert 'aria-label="Get Email Token for mail/inbox"' in html
    assert 'name="csrf" value="tok"' in html
    assert 'data-copy="redirect-uri" hidden' in html  # the copy button appears only with JavaScript


def test_refusal_page_shows_reason_hint_and_escaped_message():
    html = pages.refused("AccountMismatch", "signed in as <bob>", admin_url="http://localhost:8081/")
    assert "signed in as &lt;bob&gt;" in html and "Reason: <code>AccountMismatch</code>" in html
    assert escape(pages.HINTS["AccountMismatch"]) in html
    assert 'href="http://localhost:8081/"' in html


def test_hostname_and_admin_hosts():
    assert hostname("localhost:8081") == "localhost"
    assert hostname("[::1]:8081") == "[::1]"
    assert hostname("Example.COM") == "example.com"
    config = CallbackConfig(redirect_base_url="https://cb", admin_host="0.0.0.0", allowed_hosts=("admin.internal",))
    assert {"localhost", "127.0.0.1", "[::1]", "admin.internal"} <= config.admin_hosts()
    assert "0.0.0.0" not in config.admin_hosts()
    assert config.redirect_uri == "https://cb/callback"
    assert CallbackConfig(redirect_base_url="https://cb", namespaces=("a",)).serves("a")
    assert not CallbackConfig(redirect_base_url="https://cb", namespaces=("a",)).serves("b")


def test_the_confirmation_page_names_the_real_sign_in_host():
    """A tenant chooses spec.authorizationUrl: the administrator must see where the button sends them."""
    row = row_of(token(authorizationUrl="https://login.evil.example/contoso/oauth2/v2.0/authorize"))
    assert row.sign_in_host == "login.evil.example"
    html = pages.confirm(row, redirect_uri="https://cb.example/callback", csrf_token="t", now=NOW)
    assert "You will be sent to Microsoft at <strong><code>login.evil.example</code></strong>" in html
    default = pages.confirm(row_of(token()), redirect_uri="https://cb.example/callback", csrf_token="t", now=NOW)
    assert "<code>login.microsoftonline.com</code>" in default

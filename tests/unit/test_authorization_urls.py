"""Sign-in URLs: PKCE S256, offline access and the mailbox hint reach the provider."""

from __future__ import annotations

import urllib.parse

from emailtoken.model import parse_spec
from emailtoken.providers import GoogleProvider, MicrosoftProvider


def query(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


def test_microsoft_url_carries_pkce_and_offline_access():
    spec = parse_spec(
        {
            "provider": "Microsoft",
            "tenantId": "contoso",
            "clientId": "app",
            "clientSecretRef": {"name": "s"},
            "services": ["IMAP", "SMTP"],
        },
        "t",
    )
    url = MicrosoftProvider().authorization_url(
        spec, redirect_uri="https://x.example/callback", state="st", code_challenge="abc123", login_hint="a@contoso.com"
    )
    assert url.startswith("https://login.microsoftonline.com/contoso/oauth2/v2.0/authorize?")
    q = query(url)
    assert q["code_challenge"] == "abc123" and q["code_challenge_method"] == "S256"
    assert q["state"] == "st" and q["redirect_uri"] == "https://x.example/callback"
    assert q["response_type"] == "code" and q["login_hint"] == "a@contoso.com"
    assert set(q["scope"].split()) == {
        "https://outlook.office.com/IMAP.AccessAsUser.All",
        "https://outlook.office.com/SMTP.Send",
        "openid",
        "profile",
        "offline_access",
    }


def test_google_url_asks_for_a_refresh_token_with_pkce():
    spec = parse_spec(
        {"provider": "Google", "clientId": "g", "clientSecretRef": {"name": "s"}, "services": ["Gmail"]}, "t"
    )
    q = query(
        GoogleProvider().authorization_url(
            spec, redirect_uri="http://127.0.0.1:5/", state="s", code_challenge="c", login_hint=None
        )
    )
    assert q["access_type"] == "offline" and q["prompt"] == "consent"
    assert q["code_challenge_method"] == "S256" and q["code_challenge"] == "c"
    assert "https://mail.google.com/" in q["scope"].split()
    assert "login_hint" not in q

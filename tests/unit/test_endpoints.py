"""emailtoken.endpoints: which provider hosts a token may name."""

from __future__ import annotations

import pytest

from emailtoken.endpoints import DEFAULT_ALLOWED_HOSTS, allowed, from_args, refusal


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://login.microsoftonline.com/contoso/oauth2/v2.0/token", True),
        ("https://LOGIN.microsoftonline.us/t/oauth2/v2.0/token", True),
        ("https://oauth2.googleapis.com/token", True),
        ("https://accounts.google.com/o/oauth2/v2/auth", True),
        ("http://login.microsoftonline.com/t/oauth2/v2.0/token", False),  # never plain HTTP
        ("https://login.microsoftonline.com.evil.example/t/oauth2/v2.0/token", False),
        ("https://evil.example/login.microsoftonline.com/oauth2/v2.0/token", False),
        ("https://login.microsoftonline.com@evil.example/t/oauth2/v2.0/token", False),  # userinfo trick
        ("https://10.0.0.1/token", False),
        ("not a url", False),
    ],
)
def test_default_hosts(url: str, ok: bool) -> None:
    assert allowed(url, DEFAULT_ALLOWED_HOSTS) is ok


def test_installer_additions_and_wildcards() -> None:
    hosts = from_args(["idp.example.com", "*.corp.example", " "])
    assert hosts[: len(DEFAULT_ALLOWED_HOSTS)] == DEFAULT_ALLOWED_HOSTS
    assert allowed("https://idp.example.com:8443/token", hosts)
    assert allowed("https://a.b.corp.example/token", hosts)
    assert not allowed("https://corp.example/token", hosts)
    assert not allowed("https://evilcorp.example/token", hosts)


def test_refusal_names_the_host_and_the_fix() -> None:
    text = refusal("https://evil.example/t/oauth2/v2.0/token")
    assert "'evil.example' is not allowed" in text and "--allow-provider-host" in text

"""emailtoken.providers.proxies: the environment's proxy settings, read as HTTP clients read them."""

from __future__ import annotations

import base64

import pytest

from emailtoken.providers.proxies import Proxies


def test_no_proxy_in_the_environment_means_direct_calls() -> None:
    assert Proxies.from_environment({}).for_url("https://login.microsoftonline.com/t") is None


def test_lower_case_wins_and_all_proxy_is_the_fallback() -> None:
    proxies = Proxies.from_environment(
        {"https_proxy": "http://lower:3128", "HTTPS_PROXY": "http://upper:3128", "ALL_PROXY": "http://all:3128"}
    )
    assert proxies.for_url("https://a.example/t").url == "http://lower:3128"
    assert proxies.for_url("http://a.example/t").url == "http://all:3128"


def test_a_proxy_without_a_scheme_is_http() -> None:
    """requests read ``HTTPS_PROXY=proxy.corp:3128`` as http://; urllib3 refuses it."""
    assert Proxies.from_environment({"HTTPS_PROXY": "proxy.corp:3128"}).for_url("https://a/t").url == (
        "http://proxy.corp:3128"
    )


def test_credentials_in_the_proxy_url_become_a_header_and_are_never_shown() -> None:
    proxy = Proxies.from_environment({"HTTPS_PROXY": "http://svc%40corp:p%3Ass@proxy.corp:3128"}).for_url("https://a/t")
    assert proxy is not None
    assert proxy.url == "http://proxy.corp:3128"
    assert proxy.headers == {"Proxy-Authorization": "Basic " + base64.b64encode(b"svc@corp:p:ss").decode()}
    assert "p:ss" not in repr(proxy) and "cDpzcw" not in repr(proxy) and "Basic" not in repr(proxy)


@pytest.mark.parametrize(
    ("url", "direct"),
    [
        ("https://login.microsoftonline.com/t", False),
        ("https://a.internal/t", True),  # a subdomain of .internal
        ("https://internal/t", True),  # the domain itself
        ("https://evilinternal/t", False),  # not a suffix match on the name
        ("https://10.1.2.3/t", True),  # in 10.0.0.0/8
        ("https://11.1.2.3/t", False),
        ("https://host.x:8443/t", True),  # host:port entry
        ("https://host.x/t", False),  # the same host on another port
        ("https://[::1]/t", True),
    ],
)
def test_no_proxy_entries(url: str, direct: bool) -> None:
    proxies = Proxies.from_environment(
        {"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": ".internal, 10.0.0.0/8, host.x:8443, [::1]"}
    )
    assert (proxies.for_url(url) is None) is direct


def test_a_star_bypasses_every_host() -> None:
    proxies = Proxies.from_environment({"HTTPS_PROXY": "http://proxy:3128", "no_proxy": "*"})
    assert proxies.for_url("https://login.microsoftonline.com/t") is None


def test_a_url_with_a_port_out_of_range_is_left_to_the_http_client() -> None:
    proxies = Proxies.from_environment({"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "host.x:8443"})
    assert proxies.for_url("https://host.x:99999/t") is not None

"""Which provider hosts a token may name: the installer decides, not the token's author.

``spec.authorizationUrl`` and ``spec.tokenUrl`` are written by whoever may edit an
EmailToken; the token endpoint receives the refresh token and the client secret, and the
authorization URL is where an administrator's browser is sent to sign in. So a URL is used
only when its host is on the operator's list: the well-known Microsoft clouds and Google
by default, more only when the installer adds them (``--allow-provider-host``, Helm value
``providers.allowedHosts``).
"""

from __future__ import annotations

import argparse
import urllib.parse
from collections.abc import Iterable

#: Entra ID (global, US Government, China operated by 21Vianet) and Google.
DEFAULT_ALLOWED_HOSTS: tuple[str, ...] = (
    "login.microsoftonline.com",
    "login.microsoftonline.us",
    "login.partner.microsoftonline.cn",
    "login.chinacloudapi.cn",
    "accounts.google.com",
    "oauth2.googleapis.com",
)


def host_of(url: str) -> str:
    """The lower-case host name of a URL ('' when it has none)."""
    return (urllib.parse.urlsplit(url).hostname or "").lower()


def allowed(url: str, hosts: Iterable[str]) -> bool:
    """True for an https URL whose host is listed exactly, or matches a ``*.domain`` entry."""
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme != "https" or not host:
        return False
    for entry in hosts:
        entry = entry.lower()
        if host == entry or (entry.startswith("*.") and host.endswith(entry[1:])):
            return True
    return False


def refusal(url: str) -> str:
    """The message a token gets for a URL whose host is not allowed (no request was sent)."""
    return (
        f"the provider host {host_of(url) or url[:64]!r} is not allowed by this operator's installation; "
        "an administrator can add it with --allow-provider-host (Helm: providers.allowedHosts)"
    )


def add_argument(parser: argparse.ArgumentParser) -> None:
    """The flag every process that talks to providers takes (operator, callback, authorize)."""
    parser.add_argument(
        "--allow-provider-host",
        metavar="HOST",
        action="append",
        default=[],
        dest="allow_provider_hosts",
        help="also allow this identity-provider host in authorizationUrl/tokenUrl (repeatable; '*.domain' "
        f"for subdomains); always allowed: {', '.join(DEFAULT_ALLOWED_HOSTS)}",
    )


def from_args(extra: Iterable[str]) -> tuple[str, ...]:
    """The defaults plus the installer's additions."""
    return (*DEFAULT_ALLOWED_HOSTS, *(h.strip().lower() for h in extra if h.strip()))

"""Which proxy a provider call goes through: the environment's, read once, as HTTP clients read it.

``HTTPS_PROXY``/``HTTP_PROXY`` (either case), else ``ALL_PROXY``; a proxy without a scheme is
``http://``; credentials in its URL become a ``Proxy-Authorization`` header (urllib3 does not
read them from the URL). ``NO_PROXY`` lists hosts called directly: ``*``, a domain (its
subdomains too, with or without a leading dot), ``host:port``, an IP address or a CIDR range.
Pure: no I/O; the environment is passed in.
"""

from __future__ import annotations

import base64
import ipaddress
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Proxy:
    """A proxy's URL without credentials and the headers that carry them."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # the credentials: never shown


@dataclass(frozen=True)
class Proxies:
    """The proxy per URL scheme and the hosts that bypass it."""

    by_scheme: Mapping[str, Proxy]
    bypass: tuple[str, ...] = ()

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Proxies:
        """The proxies an environment names (lower case wins, as curl and requests read it)."""

        def read(name: str) -> str:
            return (environ.get(name.lower()) or environ.get(name.upper()) or "").strip()

        fallback = read("all_proxy")
        by_scheme = {}
        for scheme in ("https", "http"):
            value = read(f"{scheme}_proxy") or fallback
            if value:
                by_scheme[scheme] = _proxy(value)
        bypass = tuple(entry.strip().lower() for entry in read("no_proxy").split(",") if entry.strip())
        return cls(by_scheme, bypass)

    def for_url(self, url: str) -> Proxy | None:
        """The proxy ``url`` goes through, or None to call it directly."""
        parts = urllib.parse.urlsplit(url)
        proxy = self.by_scheme.get(parts.scheme)
        if proxy is None or self._bypassed(parts):
            return None
        return proxy

    def _bypassed(self, parts: urllib.parse.SplitResult) -> bool:
        host = (parts.hostname or "").lower()
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:  # not a port: urllib3 refuses the URL itself, with its own error
            return False
        try:
            address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
        except ValueError:
            address = None
        for entry in self.bypass:
            if entry == "*":
                return True
            name, _, entry_port = entry.rpartition(":") if _has_port(entry) else (entry, "", "")
            if entry_port and entry_port != str(port):
                continue
            if address is not None and "/" in name:
                try:
                    if address in ipaddress.ip_network(name, strict=False):
                        return True
                except ValueError:
                    pass
                continue
            domain = name.lstrip("*").lstrip(".").strip("[]")
            if domain and (host == domain or host.endswith("." + domain)):
                return True
        return False


def _has_port(entry: str) -> bool:
    """``host:port`` or ``[v6]:port``, not a bare IPv6 address."""
    if entry.startswith("["):
        return "]:" in entry
    return entry.count(":") == 1


def _proxy(value: str) -> Proxy:
    if "://" not in value:
        value = "http://" + value
    parts = urllib.parse.urlsplit(value)
    if parts.username is None:
        return Proxy(value)
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if parts.port:
        netloc += f":{parts.port}"
    credentials = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
    headers = {"Proxy-Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}
    return Proxy(urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", "")), headers)

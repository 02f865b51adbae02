"""The rule for ``--redirect-base-url`` (``emailtoken run`` and ``emailtoken callback``).

The provider sends the browser back to ``URL/callback``. Entra ID and Google accept plain
http only for loopback addresses, so anything else must be https: a typo or an http URL
is refused when the process starts, not when the first person tries to sign in. Query and
fragment would not survive the redirect; ``/callback`` is appended, so it must not be
there already. A path is allowed (an Ingress may serve the callback under a prefix).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def is_loopback(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 or ::1 (the only hosts the providers accept over plain http)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def problem(url: str) -> str | None:
    """Why ``url`` cannot be the callback's public base URL, or None."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number)
    except ValueError as exc:
        return f"{url!r} is not a URL ({exc})"
    if parts.scheme not in ("http", "https") or not host:
        return f"{url!r} is not an absolute http(s) URL (like https://mail-auth.example.com)"
    if parts.query or parts.fragment or "#" in url:
        return f"{url!r} has a query or fragment; the provider's redirect would drop it"
    if parts.path.rstrip("/").endswith("/callback"):
        return f"{url!r} ends in /callback; give the base URL, /callback is appended"
    if parts.scheme == "http" and not is_loopback(host):
        return f"{url!r} is plain http on a host that is not loopback; Entra ID and Google require https there"
    return None

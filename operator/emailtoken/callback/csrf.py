"""CSRF protection of the admin page's state-changing POSTs ("Get Email Token", the new-token form).

Signed double submit: a random value in an HttpOnly ``SameSite=Strict`` cookie, and in
the form the HMAC of that value under the service key. Another site can neither read
the form token nor compute it for a cookie it planted (cookies are shared between ports
of one host, so another local service could plant one). Requests whose ``Origin`` or
``Sec-Fetch-Site`` says "another site" are refused too.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping

from emailtoken.callback.state import derive_key

COOKIE = "emailtoken_csrf"
FIELD = "csrf"


class CsrfGuard:
    """Issues and checks CSRF tokens."""

    def __init__(self, master_key: bytes) -> None:
        self._key = derive_key(master_key, "csrf")

    @staticmethod
    def new_cookie() -> str:
        """A fresh random cookie value."""
        return secrets.token_urlsafe(24)

    def token_for(self, cookie: str) -> str:
        """The form token that goes with a cookie value."""
        return hmac.new(self._key, cookie.encode(), hashlib.sha256).hexdigest()

    def check(self, cookie: str | None, token: str | None) -> bool:
        """True when the form token matches the cookie (constant-time)."""
        if not cookie or not token:
            return False
        return hmac.compare_digest(self.token_for(cookie), token)


def same_origin(headers: Mapping[str, str], own_origin: str) -> bool:
    """False when the browser says the request comes from another origin or site."""
    site = headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = headers.get("Origin")
    if origin is None or origin == own_origin:
        return True  # no Origin: old browsers and non-browser clients; the form token still guards
    # Chromium sends "Origin: null" for a same-origin form POST from a page with
    # Referrer-Policy: no-referrer; accept it only when the browser vouches for same-origin.
    return origin == "null" and site == "same-origin"

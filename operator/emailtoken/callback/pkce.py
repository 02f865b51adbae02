"""PKCE (RFC 7636) with the S256 method only: ``plain`` protects nothing once the URL leaks."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

#: RFC 7636 section 4.1: 43 to 128 characters of ``[A-Za-z0-9-._~]``.
_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
METHOD = "S256"


def new_verifier(nbytes: int = 64) -> str:
    """A fresh high-entropy code verifier (64 random bytes give 86 characters)."""
    verifier = secrets.token_urlsafe(nbytes)
    if not is_valid_verifier(verifier):  # token_urlsafe's alphabet is a subset; length is the only risk
        raise ValueError("nbytes must give a verifier of 43 to 128 characters")
    return verifier


def is_valid_verifier(verifier: str) -> bool:
    """True when the verifier has the length and alphabet RFC 7636 demands."""
    return bool(_VERIFIER.match(verifier))


def challenge(verifier: str) -> str:
    """The S256 code challenge: BASE64URL(SHA256(ASCII(verifier))) without padding."""
    if not is_valid_verifier(verifier):
        raise ValueError("not a valid PKCE code verifier")
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def ensure_pkce(url: str, code_challenge: str) -> str:
    """The authorization URL with our S256 challenge in it, whatever the provider code did.

    Why: msal's ``get_authorization_request_url`` silently drops ``code_challenge`` and
    ``code_challenge_method``; without them the provider issues a code that any holder can
    redeem. A URL that carries a *different* challenge is a bug, and refused.
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    present = dict(query)
    if "code_challenge" in present:
        if present["code_challenge"] != code_challenge or present.get("code_challenge_method") != METHOD:
            raise ValueError("the authorization URL carries another PKCE challenge or method")
        return url
    query = [(k, v) for k, v in query if k != "code_challenge_method"]
    query += [("code_challenge", code_challenge), ("code_challenge_method", METHOD)]
    return urlunsplit(parts._replace(query=urlencode(query)))

"""Scrub secret values out of text before it reaches logs, status or Events."""

from __future__ import annotations

import re

_BEARERISH = re.compile(
    r"(?i)\b(bearer|refresh_token|access_token|client_secret|client_assertion|code_verifier|device_code|code)([\s=:\"']+)([A-Za-z0-9._~+/\-]{12,})"
)
MASK = "[redacted]"


def redact(text: str, *secrets: str | None) -> str:
    """Replace each known secret (and anything that looks like a token field) with a mask."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, MASK)
    return _BEARERISH.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)

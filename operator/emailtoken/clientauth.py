"""Client authentication without a secret: the pod's projected ServiceAccount token as a client assertion.

With workload identity federation the app registration trusts the cluster's
ServiceAccount issuer, and the operator (or the callback) authenticates the OAuth client
with its own pod's projected token, sent as ``client_assertion`` of type
``urn:ietf:params:oauth:client-assertion-type:jwt-bearer`` (RFC 7523). The kubelet
rotates the file, so it is read again for every request and never cached. The token
is only decoded here, never verified: it is the pod's own, and the provider checks it.
Nothing here logs or returns the token in a message.
"""

from __future__ import annotations

import argparse
import base64
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from emailtoken.outcomes import ErrorKind, ProviderError

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
REASON = "FederatedTokenUnavailable"
#: A token this close to its expiry is treated as expired (the request takes time, clocks drift).
EXPIRY_MARGIN = 10.0
_HINT = (
    "give it --federated-token-file PATH pointing at a projected ServiceAccount token "
    "(chart: federatedToken.enabled=true, one audience per file)"
)


def claims(token: str) -> dict[str, Any] | None:
    """The payload of a compact JWT without verifying it; None when it is not one."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def audiences(payload: dict[str, Any]) -> list[str]:
    """The ``aud`` claim as a list (a JWT may carry one string or several)."""
    aud = payload.get("aud")
    if isinstance(aud, str):
        return [aud]
    return [str(a) for a in aud] if isinstance(aud, list) else []


def _problem(path: str, audience: str, now: float) -> tuple[str | None, str]:
    """(the token, "") when the file holds a usable token for ``audience``, else (None, why not)."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        return None, f"{path} cannot be read ({exc.strerror or type(exc).__name__})"
    payload = claims(token)
    if payload is None:
        return None, f"{path} does not hold a JWT"
    if audience not in audiences(payload):
        return None, f"{path} is for audience {', '.join(audiences(payload)) or '(none)'}"
    exp = payload.get("exp")
    if isinstance(exp, int | float) and exp <= now + EXPIRY_MARGIN:
        return None, f"{path} expired (the kubelet rotates it; is the volume still projected?)"
    return token, ""


def read_assertion(files: Sequence[str], audience: str, *, now: float | None = None) -> str:
    """The current projected token for ``audience``, read fresh from the first file that holds one.

    Raises :class:`ProviderError` (``FederatedTokenUnavailable``, bad configuration) saying
    which files were looked at and why none fits.
    """
    if not files:
        raise ProviderError(
            ErrorKind.BAD_CONFIG, f"this process has no projected ServiceAccount token: {_HINT}", reason=REASON
        )
    when = time.time() if now is None else now
    problems = []
    for path in files:
        token, problem = _problem(path, audience, when)
        if token is not None:
            return token
        problems.append(problem)
    raise ProviderError(
        ErrorKind.BAD_CONFIG,
        f"no projected ServiceAccount token for audience {audience}: {'; '.join(problems)}",
        reason=REASON,
    )


def add_argument(parser: argparse.ArgumentParser) -> None:
    """``--federated-token-file`` (``run`` and ``callback``): where the assertions come from."""
    parser.add_argument(
        "--federated-token-file",
        dest="federated_token_files",
        action="append",
        default=[],
        metavar="PATH",
        help="a projected ServiceAccount token of this pod, read afresh for every request and sent as the "
        "client assertion of tokens with spec.federatedCredential (the file whose aud claim holds the "
        "spec's audience); repeat for several audiences",
    )


def assertion_source(files: Sequence[str], audience: str) -> Callable[[], str]:
    """What msal calls for each request (``client_credential={"client_assertion": ...}``).

    The files are checked once now, so that a missing or mismatched token becomes a clear
    condition before any request is made; every call reads the file again.
    """
    read_assertion(files, audience)
    paths = tuple(files)
    return lambda: read_assertion(paths, audience)

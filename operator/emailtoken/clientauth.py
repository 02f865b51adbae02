"""Client authentication without a secret: a ServiceAccount token as the client assertion.

With workload identity federation the app registration trusts the cluster's
ServiceAccount issuer, and the client authenticates with a ServiceAccount token sent as
``client_assertion`` of type ``urn:ietf:params:oauth:client-assertion-type:jwt-bearer``
(RFC 7523). Whose token is the security boundary: tenants are untrusted, and a client ID
is no secret, so the subject must be the token's own namespace. Hence two modes
(:func:`check`), decided before anything is sent:

- ``federatedCredential.serviceAccountName``: a ServiceAccount of the EmailToken's own
  namespace, whose short-lived token the process requests (:mod:`emailtoken.satokens`);
  the subject is ``system:serviceaccount:<that namespace>:<name>``, so an app registration
  that trusts team A's subject refuses team B. This is External Secrets' ``serviceAccountRef``.
- no name ("ambient"): the process's own projected token (``--federated-token-file``),
  whose subject is the operator's, shared by every token that uses it. Only for the
  namespaces the installer lists (``--ambient-federation-namespace``), as cert-manager
  allows ambient credentials only for cluster-level issuers.

Either way the audience must be one the installer allows (``--federation-audience``): a
tenant must not pick what a token of the cluster is sent for. The projected file is read
again for every request (the kubelet rotates it). Tokens are only decoded here, never
verified (the provider checks them), and never logged or quoted in a message.

The one client credential a Secret holds that is more than a string, a Google service account
key, is read here too (:func:`service_account_key`).
"""

from __future__ import annotations

import argparse
import base64
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emailtoken.model import MICROSOFT_FEDERATED_AUDIENCE
from emailtoken.outcomes import ErrorKind, ProviderError

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
REASON = "FederatedTokenUnavailable"
REASON_AMBIENT = "AmbientCredentialsNotAllowed"
REASON_AUDIENCE = "AudienceNotAllowed"
#: Entra's recommended audience for federated identity credentials (the only one allowed by default).
DEFAULT_AUDIENCE = MICROSOFT_FEDERATED_AUDIENCE
#: A token this close to its expiry is treated as expired (the request takes time, clocks drift).
EXPIRY_MARGIN = 10.0
_HINT = (
    "give it --federated-token-file PATH pointing at a projected ServiceAccount token "
    "(chart: providers.federatedToken.enabled=true, one audience per file)"
)


def service_account_key(raw: str, where: str) -> dict[str, Any]:
    """A Google service account key as a Secret holds it (a JSON object); ValueError naming
    ``where`` (never quoting the value, a private key) when it is not one."""
    try:
        info = json.loads(raw)
    except ValueError:
        info = None
    if not isinstance(info, dict):
        raise ValueError(f"{where} is not a JSON service account key")
    return info


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


@dataclass(frozen=True)
class Federation:
    """What the installer allows for ``spec.federatedCredential`` (the same for ``run`` and ``callback``)."""

    #: this pod's projected ServiceAccount tokens (ambient mode only)
    token_files: tuple[str, ...] = ()
    #: audiences a token may be requested or presented for
    audiences: tuple[str, ...] = (DEFAULT_AUDIENCE,)
    #: namespaces whose EmailTokens may use this pod's own token (ambient mode); none by default
    ambient_namespaces: tuple[str, ...] = ()


#: No flags given: the default audience only, no ambient namespace, no token file.
DEFAULTS = Federation()


def check(federation: Federation, namespace: str, audience: str, service_account: str | None) -> None:
    """Refuse (a bad-configuration :class:`ProviderError`) what the installer did not allow, before
    any token is requested, read or sent: an audience off the list, or ambient mode outside the
    listed namespaces (where every tenant would share the operator's subject)."""
    if audience not in federation.audiences:
        raise ProviderError(
            ErrorKind.BAD_CONFIG,
            f"federatedCredential.audience {audience} is not allowed by this installation (allowed: "
            f"{', '.join(federation.audiences) or 'none'}; the installer adds audiences with "
            "--federation-audience, chart value providers.federatedCredential.allowedAudiences)",
            reason=REASON_AUDIENCE,
        )
    if service_account is None and namespace not in federation.ambient_namespaces:
        raise ProviderError(
            ErrorKind.BAD_CONFIG,
            f"federatedCredential without serviceAccountName would authenticate with the operator's own "
            f"ServiceAccount, which namespace {namespace} may not use; set federatedCredential."
            "serviceAccountName to a ServiceAccount of this namespace and make it the federated "
            "credential's subject (docs/federated-credentials.md)",
            reason=REASON_AMBIENT,
        )


def add_argument(parser: argparse.ArgumentParser) -> None:
    """The federation flags of ``run`` and ``callback``: token files, allowed audiences, ambient namespaces."""
    parser.add_argument(
        "--federated-token-file",
        dest="federated_token_files",
        action="append",
        default=[],
        metavar="PATH",
        help="a projected ServiceAccount token of this pod, read afresh for every request and sent as the "
        "client assertion of tokens with spec.federatedCredential and no serviceAccountName, in the "
        "namespaces of --ambient-federation-namespace only (the file whose aud claim holds the spec's "
        "audience); repeat for several audiences",
    )
    parser.add_argument(
        "--federation-audience",
        dest="federation_audiences",
        action="append",
        default=[],
        metavar="AUDIENCE",
        help=f"an audience spec.federatedCredential.audience may name; repeat for several (default: "
        f"{DEFAULT_AUDIENCE} only)",
    )
    parser.add_argument(
        "--ambient-federation-namespace",
        dest="ambient_federation_namespaces",
        action="append",
        default=[],
        metavar="NAMESPACE",
        help="a namespace whose EmailTokens may authenticate with this pod's own ServiceAccount token "
        "(federatedCredential without serviceAccountName); repeat for several (default: none)",
    )


def from_args(args: argparse.Namespace) -> Federation:
    """The :class:`Federation` the flags of :func:`add_argument` describe."""
    return Federation(
        token_files=tuple(args.federated_token_files),
        audiences=tuple(args.federation_audiences) or (DEFAULT_AUDIENCE,),
        ambient_namespaces=tuple(args.ambient_federation_namespaces),
    )


def assertion_source(files: Sequence[str], audience: str) -> Callable[[], str]:
    """What msal calls for each request (``client_credential={"client_assertion": ...}``).

    The files are checked once now, so that a missing or mismatched token becomes a clear
    condition before any request is made; every call reads the file again.
    """
    read_assertion(files, audience)
    paths = tuple(files)
    return lambda: read_assertion(paths, audience)

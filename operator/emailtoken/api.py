"""The operator's Kubernetes contract in names: the resource, annotations, labels, Secret names.

Everything that reads or writes an EmailToken or one of its Secrets (the engine, the
callback, ``kubectl emailtoken``, the CLIs) takes these names from here. This module
imports nothing: the kubectl plugin and the callback stay free of the engine and its OAuth
libraries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The resource.
GROUP = "emailtoken.io"
VERSION = "v1alpha1"
PLURAL = "emailtokens"
KIND = "EmailToken"
API_VERSION = f"{GROUP}/{VERSION}"

#: One EmailToken (or one Secret) as (namespace, name).
Key = tuple[str, str]

# Annotations an admin sets on an EmailToken (any new value acts once).
ANNOTATION_REFRESH_NOW = f"{GROUP}/refresh-now"
ANNOTATION_REAUTHORIZE = f"{GROUP}/reauthorize"

# Annotations the operator writes on its Secrets.
#: On the consumer Secret: a digest of the spec that produced the token.
ANNOTATION_SPEC_HASH = f"{GROUP}/spec-hash"
#: On the consumer Secret: when the published access token was obtained (RFC 3339 UTC).
ANNOTATION_OBTAINED_AT = f"{GROUP}/obtained-at"
#: On the grant Secret, written by the callback only: its single-use record of sign-ins.
ANNOTATION_SIGN_INS = f"{GROUP}/completed-sign-ins"

# Labels.
MANAGED_BY = "emailtoken-operator"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
#: On the consumer Secret: the EmailToken's name.
LABEL_TOKEN = f"{GROUP}/token"
#: On the grant Secret: the EmailToken's name.
LABEL_GRANT_FOR = f"{GROUP}/grant-for"

# The grant Secret (operator-only, never mounted).
GRANT_TYPE = f"{GROUP}/grant"
GRANT_SECRET_PREFIX = "emailtoken-grant-"  # never a consumer Secret's name (a CRD rule)


def grant_secret_name(token_name: str) -> str:
    """The name of the grant Secret of the EmailToken ``token_name``."""
    return f"{GRANT_SECRET_PREFIX}{token_name}"


def consumer_secret_name(token_name: str, spec: Mapping[str, Any]) -> str:
    """The consumer Secret's name as the spec asks for it: ``spec.secretName``, default the token's name.

    Not validated (see :func:`emailtoken.model.parse_spec`).
    """
    return str(spec.get("secretName") or token_name)

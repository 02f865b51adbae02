"""The EmailToken spec as a typed value, with defaults and readable validation.

The CRD's schema and CEL rules reject most bad input at apply time; this module
re-checks so that objects created before a rule existed (or on API servers without
CEL) still get a clear condition instead of an exception.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from emailtoken import scopes as scopes_mod
from emailtoken import specrules
from emailtoken.api import GRANT_SECRET_PREFIX, consumer_secret_name, grant_secret_name
from emailtoken.timefmt import parse_duration

PROVIDERS = ("Microsoft", "Google")
FLOWS = ("AuthorizationCode", "DeviceCode", "ClientCredentials", "ServiceAccount")
INTERACTIVE_FLOWS = ("AuthorizationCode", "DeviceCode")
MICROSOFT_AUTHORITY = "https://login.microsoftonline.com/{tenant}"
MICROSOFT_TOKEN_SUFFIX = "/oauth2/v2.0/token"
GOOGLE_AUTHORIZATION_URL = "https://accounts.google.com/o/oauth2/v2/auth"
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
DEFAULT_CLIENT_SECRET_KEY = "client_secret"
DEFAULT_SA_KEY = "key.json"
#: Entra's recommended audience for federated identity credentials (emailtoken.clientauth uses it too).
MICROSOFT_FEDERATED_AUDIENCE = "api://AzureADTokenExchange"
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class SpecError(ValueError):
    """The spec cannot be used as written; the message says what to change.

    A spec that breaks the CRD's rules names each (``spec.<field>: <the CRD's message>``,
    joined by ``; ``), as ``kubectl apply`` would have; ``problems`` holds them one by one.
    """

    def __init__(self, *problems: str) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class SecretKeyRef:
    """A key of a Secret in the token's namespace."""

    name: str
    key: str


@dataclass(frozen=True)
class FederatedCredential:
    """The client authenticates with a ServiceAccount token for ``audience``: one of the token's own
    namespace (``service_account_name``), or, where the installer allows it, the pod's own."""

    audience: str
    service_account_name: str | None = None


@dataclass(frozen=True)
class LoginProbe:
    """``spec.loginProbe``: where the operator tries each new token, as a mail task would."""

    protocol: str  # imap | pop3 | smtp (checkmail's names)
    server: str  # HOST[:PORT]
    security: str  # ssl | starttls | plain


@dataclass(frozen=True)
class TokenRef:
    """Identity of one EmailToken object."""

    namespace: str
    name: str
    uid: str = ""

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def grant_secret_name(self) -> str:
        """Name of the operator-only Secret holding the refresh token."""
        return grant_secret_name(self.name)


@dataclass(frozen=True)
class EmailTokenSpec:
    """A validated spec with every default applied."""

    provider: str
    flow: str
    email_address: str | None
    tenant_id: str | None
    client_id: str | None
    client_secret_ref: SecretKeyRef | None
    service_account_key_ref: SecretKeyRef | None
    scopes: tuple[str, ...]
    authorization_url: str
    token_url: str
    secret_name: str
    refresh_before: timedelta | None
    federated_credential: FederatedCredential | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    login_probe: LoginProbe | None = None

    @property
    def interactive(self) -> bool:
        """True when a person must sign in once (a grant is needed)."""
        return self.flow in INTERACTIVE_FLOWS

    @property
    def authority(self) -> str:
        """msal authority derived from the token URL (Microsoft only)."""
        return self.token_url[: -len(MICROSOFT_TOKEN_SUFFIX)]

    @property
    def scope_string(self) -> str:
        """Scopes as a space-separated string, as OAuth writes them."""
        return " ".join(self.scopes)

    def fingerprint(self) -> str:
        """Hash of what shapes the token: a change means the current token is stale."""
        return self._fingerprint

    @functools.cached_property
    def _fingerprint(self) -> str:
        """Computed once per parsed spec: a refresh asks for it five times (see bench/README.md)."""
        material = json.dumps(
            [
                self.provider,
                self.flow,
                self.email_address,
                self.tenant_id,
                self.client_id,
                list(self.scopes),
                self.token_url,
            ],
            sort_keys=True,
        )
        return hashlib.sha256(material.encode()).hexdigest()[:16]


def _ref(value: Any, what: str, default_key: str) -> SecretKeyRef | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not value.get("name"):
        raise SpecError(f"{what}.name is required")
    return SecretKeyRef(name=str(value["name"]), key=str(value.get("key") or default_key))


def _federated(value: Any) -> FederatedCredential | None:
    """``spec.federatedCredential`` with its default audience (``{}`` means all defaults)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise SpecError("federatedCredential must be an object, such as {serviceAccountName: mail-client}")
    name = value.get("serviceAccountName")
    if name is not None and not (isinstance(name, str) and len(name) <= 253 and _DNS1123.match(name)):
        raise SpecError("federatedCredential.serviceAccountName must be the name of a ServiceAccount")
    audience = str(value.get("audience") or MICROSOFT_FEDERATED_AUDIENCE)
    return FederatedCredential(audience=audience, service_account_name=name)


def _login_probe(value: Any) -> LoginProbe | None:
    """``spec.loginProbe`` (the CRD checks the shape; a bad one is an InvalidSpec here)."""
    if value is None:
        return None
    fields: Mapping[str, Any] = value if isinstance(value, Mapping) else {}
    protocol, tls = str(fields.get("protocol", "")), str(fields.get("tls") or "SSL")
    if protocol not in ("IMAP", "POP3", "SMTP") or not fields.get("server"):
        raise SpecError("loginProbe needs protocol (IMAP, POP3 or SMTP) and server (HOST[:PORT])")
    if tls not in ("SSL", "STARTTLS", "None"):
        raise SpecError("loginProbe.tls must be SSL, STARTTLS or None")
    security = {"SSL": "ssl", "STARTTLS": "starttls", "None": "plain"}[tls]
    return LoginProbe(protocol.lower(), str(value["server"]), security)


def _https(url: str, what: str) -> str:
    if not url.startswith("https://"):
        raise SpecError(f"{what} must be an https:// URL")
    return url


def _scopes(provider: str, flow: str, spec: Mapping[str, Any]) -> list[str]:
    """``services`` expanded to scopes, plus ``scopes``: at least one mail scope."""
    try:
        expanded = scopes_mod.expand(provider, flow, spec.get("services") or (), spec.get("scopes") or ())
    except ValueError as exc:
        raise SpecError(str(exc)) from None
    if not [s for s in expanded if s not in scopes_mod.MICROSOFT_RESERVED | set(scopes_mod.GOOGLE_IDENTITY_SCOPES)]:
        raise SpecError("set services (e.g. IMAP, SMTP or Gmail) or scopes: no mail scope is requested")
    return list(expanded)


def _endpoints(provider: str, tenant_id: str | None, spec: Mapping[str, Any]) -> tuple[str, str]:
    """``(authorizationUrl, tokenUrl)``: the spec's (https only) or the provider's defaults."""
    if provider == "Microsoft":
        authority = MICROSOFT_AUTHORITY.format(tenant=tenant_id)
        token_url = _https(spec.get("tokenUrl") or authority + MICROSOFT_TOKEN_SUFFIX, "tokenUrl")
        default_auth = token_url[: -len("/token")] + "/authorize"
        return _https(spec.get("authorizationUrl") or default_auth, "authorizationUrl"), token_url
    token_url = _https(spec.get("tokenUrl") or GOOGLE_TOKEN_URL, "tokenUrl")
    return _https(spec.get("authorizationUrl") or GOOGLE_AUTHORIZATION_URL, "authorizationUrl"), token_url


def _secret_name(name: str, spec: Mapping[str, Any]) -> str:
    """The consumer Secret's name (``secretName``, default the token's name), never a grant Secret's."""
    secret_name = consumer_secret_name(name, spec)
    if not _DNS1123.match(secret_name) or len(secret_name) > 253:
        raise SpecError("secretName must be a DNS-1123 subdomain (lower case letters, digits, '-' and '.')")
    if secret_name.startswith(GRANT_SECRET_PREFIX):
        # The CRD refuses such a spec.secretName; a token *named* like a grant gets here through the default.
        raise SpecError(
            f"the consumer Secret cannot be named {secret_name}: names starting with {GRANT_SECRET_PREFIX} "
            "are reserved for grant Secrets; set spec.secretName"
        )
    return secret_name


def _refresh_before(spec: Mapping[str, Any]) -> timedelta | None:
    if not spec.get("refreshBefore"):
        return None
    try:
        return parse_duration(str(spec["refreshBefore"]))
    except ValueError as exc:
        raise SpecError(f"refreshBefore: {exc}") from None


def parse_spec(spec: Mapping[str, Any], name: str) -> EmailTokenSpec:
    """Turn a raw spec into an :class:`EmailTokenSpec` or raise :class:`SpecError`."""
    provider = spec.get("provider")
    if provider not in PROVIDERS:
        raise SpecError(f"provider must be one of {', '.join(PROVIDERS)}")
    flow = spec.get("flow") or "AuthorizationCode"
    if flow not in FLOWS:
        raise SpecError(f"flow must be one of {', '.join(FLOWS)}")
    broken = specrules.violations(spec)
    if broken:
        raise SpecError(*(f"spec.{rule.field}: {rule.message}" for rule in broken))
    tenant_id = spec.get("tenantId")
    client_id = spec.get("clientId")
    client_secret_ref = _ref(spec.get("clientSecretRef"), "clientSecretRef", DEFAULT_CLIENT_SECRET_KEY)
    sa_ref = _ref(spec.get("serviceAccountKeyRef"), "serviceAccountKeyRef", DEFAULT_SA_KEY)
    email = spec.get("emailAddress") or None
    expanded = _scopes(provider, flow, spec)
    authorization_url, token_url = _endpoints(provider, tenant_id, spec)
    secret_name = _secret_name(name, spec)
    refresh_before = _refresh_before(spec)
    return EmailTokenSpec(
        provider=provider,
        flow=flow,
        email_address=email,
        tenant_id=tenant_id,
        client_id=client_id,
        client_secret_ref=client_secret_ref,
        service_account_key_ref=sa_ref,
        scopes=tuple(expanded),
        authorization_url=authorization_url,
        token_url=token_url,
        secret_name=secret_name,
        refresh_before=refresh_before,
        federated_credential=_federated(spec.get("federatedCredential")),
        raw=dict(spec),
        login_probe=_login_probe(spec.get("loginProbe")),
    )

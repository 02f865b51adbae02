"""emailtoken.model: defaults per provider and one readable SpecError per bad combination."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from emailtoken.model import SecretKeyRef, SpecError, TokenRef, parse_spec

TENANT = "11111111-2222-3333-4444-555555555555"


def ms(**overrides: Any) -> dict[str, Any]:
    """A valid Microsoft AuthorizationCode spec, overridable per test."""
    spec: dict[str, Any] = {
        "provider": "Microsoft",
        "tenantId": TENANT,
        "clientId": "app-id",
        "clientSecretRef": {"name": "app-secret"},
        "emailAddress": "box@contoso.example",
        "services": ["IMAP", "SMTP"],
    }
    spec.update(overrides)
    return {k: v for k, v in spec.items() if v is not None}


def google(**overrides: Any) -> dict[str, Any]:
    """A valid Google AuthorizationCode spec, overridable per test."""
    spec: dict[str, Any] = {
        "provider": "Google",
        "clientId": "client.apps.googleusercontent.com",
        "clientSecretRef": {"name": "google-client"},
        "emailAddress": "box@gmail.example",
        "services": ["Gmail"],
    }
    spec.update(overrides)
    return {k: v for k, v in spec.items() if v is not None}


# --------------------------------------------------------------------------- defaults


def test_microsoft_defaults_derive_urls_and_authority_from_tenant() -> None:
    """Without overrides the public Entra endpoints of the tenant are used."""
    spec = parse_spec(ms(), "mailbox")
    base = f"https://login.microsoftonline.com/{TENANT}"
    assert spec.provider == "Microsoft"
    assert spec.flow == "AuthorizationCode"
    assert spec.interactive is True
    assert spec.token_url == f"{base}/oauth2/v2.0/token"
    assert spec.authorization_url == f"{base}/oauth2/v2.0/authorize"
    assert spec.authority == base
    assert spec.secret_name == "mailbox"
    assert spec.refresh_before is None
    assert spec.client_secret_ref == SecretKeyRef("app-secret", "client_secret")
    assert spec.service_account_key_ref is None


def test_microsoft_token_url_override_sets_authority_and_default_authorize_url() -> None:
    """Tests point msal at a local provider through tokenUrl: the authority must follow it."""
    spec = parse_spec(ms(tokenUrl="https://127.0.0.1:8443/tenant-x/oauth2/v2.0/token"), "t")
    assert spec.authority == "https://127.0.0.1:8443/tenant-x"
    assert spec.authorization_url == "https://127.0.0.1:8443/tenant-x/oauth2/v2.0/authorize"


def test_microsoft_authorization_url_override_is_kept() -> None:
    """An explicit authorizationUrl wins over the derived one."""
    spec = parse_spec(ms(authorizationUrl="https://login.example/authz"), "t")
    assert spec.authorization_url == "https://login.example/authz"
    assert spec.token_url.startswith("https://login.microsoftonline.com/")


def test_google_defaults() -> None:
    """Google has fixed public endpoints; the identity scopes come with the code flow."""
    spec = parse_spec(google(), "gmail-box")
    assert spec.token_url == "https://oauth2.googleapis.com/token"
    assert spec.authorization_url == "https://accounts.google.com/o/oauth2/v2/auth"
    assert spec.scopes == ("https://mail.google.com/", "openid", "email")
    assert spec.secret_name == "gmail-box"
    assert spec.tenant_id is None


def test_google_overrides_are_kept() -> None:
    """Overrides point the Google flows at a local provider."""
    spec = parse_spec(
        google(tokenUrl="https://127.0.0.1:9443/token", authorizationUrl="https://127.0.0.1:9443/auth"), "t"
    )
    assert spec.token_url == "https://127.0.0.1:9443/token"
    assert spec.authorization_url == "https://127.0.0.1:9443/auth"


def test_secret_name_and_refresh_before_and_key_defaults() -> None:
    """secretName and refreshBefore are honoured; a ref without key gets the conventional key."""
    spec = parse_spec(ms(secretName="imap-token", refreshBefore="10m", clientSecretRef={"name": "s", "key": "k"}), "t")
    assert spec.secret_name == "imap-token"
    assert spec.refresh_before == timedelta(minutes=10)
    assert spec.client_secret_ref == SecretKeyRef("s", "k")


def test_google_service_account_defaults_key_json() -> None:
    """Domain-wide delegation needs no clientId; the key file name defaults to key.json."""
    spec = parse_spec(
        {
            "provider": "Google",
            "flow": "ServiceAccount",
            "serviceAccountKeyRef": {"name": "sa"},
            "emailAddress": "box@corp.example",
            "services": ["Gmail"],
        },
        "t",
    )
    assert spec.service_account_key_ref == SecretKeyRef("sa", "key.json")
    assert spec.client_id is None
    assert spec.interactive is False
    assert spec.scopes == ("https://mail.google.com/",)


def test_microsoft_device_code_needs_no_client_secret() -> None:
    """Device code is a public-client flow."""
    spec = parse_spec(ms(flow="DeviceCode", clientSecretRef=None), "t")
    assert spec.client_secret_ref is None
    assert spec.interactive is True
    assert spec.scopes[-1] == "offline_access"


def test_client_credentials_uses_default_scope() -> None:
    """App-only tokens carry the resource's .default scope and no offline_access."""
    spec = parse_spec(ms(flow="ClientCredentials"), "t")
    assert spec.scopes == ("https://outlook.office365.com/.default",)
    assert spec.interactive is False
    assert spec.scope_string == "https://outlook.office365.com/.default"


def test_token_ref_names() -> None:
    """The grant Secret name is derived from the token name."""
    ref = TokenRef("ns", "box", "uid")
    assert str(ref) == "ns/box"
    assert ref.grant_secret_name == "emailtoken-grant-box"


# --------------------------------------------------------------------------- errors

# Cross-field rules answer with the CRD's own messages (emailtoken.specrules; the whole
# table is in tests/unit/test_specrules.py); the rest are parse_spec's own checks.
TENANT_REQUIRED = (
    "spec.tenantId: tenantId is required when provider is Microsoft (the directory ID or a verified domain)"
)
SECRET_REQUIRED = (
    "spec.clientSecretRef: clientSecretRef or federatedCredential is required for flows AuthorizationCode and "
    "ClientCredentials"
)
FLOW_SA_GOOGLE_ONLY = (
    "spec.flow: flow ServiceAccount is only available with provider Google (for Microsoft app-only access use "
    "ClientCredentials)"
)
EMAIL_REQUIRED = (
    "spec.emailAddress: emailAddress is required for flows ClientCredentials and ServiceAccount (the mailbox to "
    "open; for ServiceAccount the user to impersonate)"
)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"provider": "Yahoo"}, "provider must be one of Microsoft, Google"),
        ({}, "provider must be one of Microsoft, Google"),
        (
            ms(flow="Password"),
            "flow must be one of AuthorizationCode, DeviceCode, ClientCredentials, ServiceAccount",
        ),
        (
            google(flow="DeviceCode"),
            "spec.flow: flows DeviceCode and ClientCredentials are only available with provider Microsoft",
        ),
        (
            google(flow="ClientCredentials"),
            "spec.flow: flows DeviceCode and ClientCredentials are only available with provider Microsoft",
        ),
        (ms(flow="ServiceAccount", clientSecretRef=None, serviceAccountKeyRef={"name": "sa"}), FLOW_SA_GOOGLE_ONLY),
        (ms(tenantId=None), TENANT_REQUIRED),
        (ms(tenantId=""), TENANT_REQUIRED),
        (ms(clientId=None), "spec.clientId: clientId is required unless flow is ServiceAccount"),
        (google(clientId=None), "spec.clientId: clientId is required unless flow is ServiceAccount"),
        (ms(clientSecretRef={"key": "k"}), "clientSecretRef.name is required"),
        (ms(clientSecretRef="app-secret"), "clientSecretRef.name is required"),
        (ms(clientSecretRef=None), SECRET_REQUIRED),
        (google(clientSecretRef=None), SECRET_REQUIRED),
        (ms(flow="ClientCredentials", clientSecretRef=None), SECRET_REQUIRED),
        (
            ms(flow="ClientCredentials", emailAddress=None),
            EMAIL_REQUIRED,
        ),
        (
            google(flow="ServiceAccount", clientSecretRef=None, clientId=None),
            "spec.serviceAccountKeyRef: serviceAccountKeyRef is required when flow is ServiceAccount",
        ),
        (
            google(flow="ServiceAccount", emailAddress=None, clientSecretRef=None, serviceAccountKeyRef={"name": "sa"}),
            EMAIL_REQUIRED,
        ),
        (
            google(flow="ServiceAccount", clientSecretRef=None, serviceAccountKeyRef={"key": "x"}),
            "serviceAccountKeyRef.name is required",
        ),
        (
            ms(services=["Gmail"]),
            "spec.services: services for provider Microsoft are IMAP, POP, SMTP, EWS, GraphMailRead, "
            "GraphMailReadWrite and GraphMailSend",
        ),
        (google(services=["IMAP"]), "spec.services: the only service for provider Google is Gmail"),
        (ms(services=[]), "spec.services: set at least one of services or scopes"),
        (
            ms(services=None, scopes=["openid", "offline_access"]),
            "set services (e.g. IMAP, SMTP or Gmail) or scopes: no mail scope is requested",
        ),
        (
            google(services=None, scopes=["email"]),
            "set services (e.g. IMAP, SMTP or Gmail) or scopes: no mail scope is requested",
        ),
        (ms(tokenUrl="http://127.0.0.1/t/oauth2/v2.0/token"), "tokenUrl must be an https:// URL"),
        (
            ms(tokenUrl="https://login.example/t/oauth2/token"),
            "spec.tokenUrl: for provider Microsoft, tokenUrl must end in /oauth2/v2.0/token "
            "(the authority is the part before it)",
        ),
        (ms(authorizationUrl="http://login.example/authorize"), "authorizationUrl must be an https:// URL"),
        (google(tokenUrl="http://oauth2.example/token"), "tokenUrl must be an https:// URL"),
        (google(authorizationUrl="ftp://x/auth"), "authorizationUrl must be an https:// URL"),
        (
            ms(secretName="Bad_Name"),
            "secretName must be a DNS-1123 subdomain (lower case letters, digits, '-' and '.')",
        ),
        (
            ms(secretName="a" * 254),
            "secretName must be a DNS-1123 subdomain (lower case letters, digits, '-' and '.')",
        ),
        (
            ms(refreshBefore="soon"),
            "refreshBefore: 'soon' is not a duration; use forms like 90s, 10m, 1h30m or 2d",
        ),
    ],
)
def test_spec_errors(spec: dict[str, Any], message: str) -> None:
    """Each unusable spec names the field to change, in words an administrator can act on."""
    with pytest.raises(SpecError) as info:
        parse_spec(spec, "t")
    assert str(info.value) == message


def test_invalid_default_secret_name_is_reported() -> None:
    """metadata.name is normally DNS-1123 already; a bad one still gets a SpecError, not a crash."""
    with pytest.raises(SpecError, match="secretName must be a DNS-1123"):
        parse_spec(ms(), "UPPER")


def test_spec_error_is_a_value_error() -> None:
    """Callers that only know ValueError still catch it."""
    assert issubclass(SpecError, ValueError)


# --------------------------------------------------------------------------- fingerprint


def test_fingerprint_is_stable_for_equal_specs() -> None:
    """The same spec always hashes the same (it is stored in an annotation across restarts)."""
    assert parse_spec(ms(), "t").fingerprint() == parse_spec(ms(), "other-name").fingerprint()
    assert len(parse_spec(ms(), "t").fingerprint()) == 16


@pytest.mark.parametrize(
    "change",
    [
        {"services": ["IMAP"]},
        {"scopes": ["https://outlook.office.com/Mail.Read"]},
        {"clientId": "another-app"},
        {"tenantId": "another-tenant"},
        {"emailAddress": "other@contoso.example"},
        {"flow": "DeviceCode"},
        {"tokenUrl": "https://127.0.0.1:8443/t/oauth2/v2.0/token"},
    ],
)
def test_fingerprint_changes_with_what_shapes_the_token(change: dict[str, Any]) -> None:
    """A change in scopes, client or account makes the published token stale."""
    assert parse_spec(ms(**change), "t").fingerprint() != parse_spec(ms(), "t").fingerprint()


@pytest.mark.parametrize(
    "change",
    [
        {"secretName": "renamed"},
        {"refreshBefore": "15m"},
        {"clientSecretRef": {"name": "rotated-secret"}},
        {"authorizationUrl": "https://login.example/authorize"},
    ],
)
def test_fingerprint_ignores_what_does_not_shape_the_token(change: dict[str, Any]) -> None:
    """Renaming the Secret or retuning the margin must not force a refresh."""
    assert parse_spec(ms(**change), "t").fingerprint() == parse_spec(ms(), "t").fingerprint()


def test_a_token_named_like_a_grant_needs_its_own_secret_name() -> None:
    """The default secretName is the token's name; a grant's name is never a consumer Secret."""
    with pytest.raises(SpecError, match="reserved for grant Secrets"):
        parse_spec(ms(), "emailtoken-grant-other")
    assert parse_spec(ms(secretName="other-token"), "emailtoken-grant-other").secret_name == "other-token"

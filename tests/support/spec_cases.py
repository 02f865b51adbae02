"""One table of EmailToken specs, each valid or breaking named CRD rules, for every judge.

The offline CEL evaluation (tests/unit/test_crd.py), ``parse_spec`` (tests/unit/test_model.py)
and the real API server (tests/cluster/test_crd_server.py) all read this table, so the CRD's
rules and the Python core cannot drift apart unseen.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

Json = dict[str, Any]

MESSAGES = {
    "provider-immutable": "provider is immutable; create a new EmailToken",
    "tenant-required": "tenantId is required when provider is Microsoft (the directory ID or a verified domain)",
    "tenant-microsoft-only": "tenantId is only used with provider Microsoft",
    "microsoft-only-flows": "flows DeviceCode and ClientCredentials are only available with provider Microsoft",
    "google-only-flow": (
        "flow ServiceAccount is only available with provider Google (for Microsoft app-only access use "
        "ClientCredentials)"
    ),
    "client-id-required": "clientId is required unless flow is ServiceAccount",
    "client-secret-required": (
        "clientSecretRef or federatedCredential is required for flows AuthorizationCode and ClientCredentials"
    ),
    "one-client-authentication": (
        "set clientSecretRef or federatedCredential, not both (the client authenticates one way)"
    ),
    "federated-microsoft-only": (
        "federatedCredential is only available with provider Microsoft (for Google's keyless domain-wide "
        "delegation see docs/federated-credentials.md)"
    ),
    "client-secret-not-for-sa": (
        "clientSecretRef is not used with flow ServiceAccount; the service account key authenticates"
    ),
    "sa-key-required": "serviceAccountKeyRef is required when flow is ServiceAccount",
    "sa-key-only-sa": "serviceAccountKeyRef is only used with flow ServiceAccount",
    "email-required": (
        "emailAddress is required for flows ClientCredentials and ServiceAccount (the mailbox to open; "
        "for ServiceAccount the user to impersonate)"
    ),
    "services-or-scopes": "set at least one of services or scopes",
    "microsoft-services": (
        "services for provider Microsoft are IMAP, POP, SMTP, EWS, GraphMailRead, GraphMailReadWrite and GraphMailSend"
    ),
    "graph-or-exchange": (
        "Graph services and IMAP, POP, SMTP or EWS need access tokens for different resources "
        "(graph.microsoft.com, outlook.office.com); use one EmailToken for each"
    ),
    "scopes-graph-or-exchange": (
        "Graph (https://graph.microsoft.com/) and Exchange Online (https://outlook.office.com/, "
        "https://outlook.office365.com/) scopes and services need access tokens for different resources; "
        "use one EmailToken for each"
    ),
    "google-services": "the only service for provider Google is Gmail",
    "client-credentials-default-scopes": (
        "with flow ClientCredentials every scope must be a /.default scope, such as "
        "https://outlook.office365.com/.default"
    ),
    "client-credentials-tenant": (
        "flow ClientCredentials needs a specific tenant (directory ID or domain), not common, "
        "organizations or consumers"
    ),
    "reserved-secret-name": (
        "secretName must not start with emailtoken-grant- (reserved for the operator's grant Secrets)"
    ),
    "login-probe-plain": (
        "loginProbe.tls None (an unencrypted login) is only allowed for a server on 127.0.0.1, ::1 or localhost"
    ),
    "microsoft-token-url": (
        "for provider Microsoft, tokenUrl must end in /oauth2/v2.0/token (the authority is the part before it)"
    ),
}

TENANT = "00000000-0000-0000-0000-000000000000"
MS_AUTH_CODE: Json = {
    "provider": "Microsoft",
    "flow": "AuthorizationCode",
    "emailAddress": "support@contoso.com",
    "tenantId": TENANT,
    "clientId": "11111111-1111-1111-1111-111111111111",
    "clientSecretRef": {"name": "ms-client"},
    "services": ["IMAP", "SMTP"],
}
MS_DEVICE_CODE: Json = {
    "provider": "Microsoft",
    "flow": "DeviceCode",
    "tenantId": "contoso.onmicrosoft.com",
    "clientId": "22222222-2222-2222-2222-222222222222",
    "services": ["POP"],
}
MS_CLIENT_CREDENTIALS: Json = {
    "provider": "Microsoft",
    "flow": "ClientCredentials",
    "emailAddress": "reports@contoso.com",
    "tenantId": TENANT,
    "clientId": "33333333-3333-3333-3333-333333333333",
    "clientSecretRef": {"name": "ms-client", "key": "secret"},
    "services": ["IMAP", "SMTP"],
}
GOOGLE_AUTH_CODE: Json = {
    "provider": "Google",
    "clientId": "1234-abc.apps.googleusercontent.com",
    "clientSecretRef": {"name": "google-client"},
    "services": ["Gmail"],
}
GOOGLE_SERVICE_ACCOUNT: Json = {
    "provider": "Google",
    "flow": "ServiceAccount",
    "emailAddress": "relay@example.com",
    "serviceAccountKeyRef": {"name": "google-sa"},
    "services": ["Gmail"],
}


def change(base: Json, drop: tuple[str, ...] = (), **fields: Any) -> Json:
    """A copy of a spec with fields removed and/or set."""
    spec = {k: copy.deepcopy(v) for k, v in base.items() if k not in drop}
    spec.update(fields)
    return spec


@dataclass(frozen=True)
class Case:
    """A spec (an update from `old` when given) and the rule keys expected to reject it."""

    id: str
    spec: Json
    fails: tuple[str, ...] = ()
    old: Json | None = None


CASES = [
    # Valid specs, one per provider and flow, and the optional fields.
    Case("microsoft-authorization-code", MS_AUTH_CODE),
    Case("microsoft-flow-defaulted", change(MS_AUTH_CODE, drop=("flow",))),
    Case("microsoft-common-tenant-delegated", change(MS_AUTH_CODE, tenantId="common")),
    Case("microsoft-all-services", change(MS_AUTH_CODE, services=["IMAP", "POP", "SMTP", "EWS"])),
    Case(
        "microsoft-graph-services",
        change(MS_AUTH_CODE, services=["GraphMailRead", "GraphMailReadWrite", "GraphMailSend"]),
    ),
    Case("microsoft-graph-app-only", change(MS_CLIENT_CREDENTIALS, services=["GraphMailSend"])),
    Case("login-probe", change(MS_AUTH_CODE, loginProbe={"protocol": "SMTP", "server": "smtp.office365.com:587"})),
    Case(
        "login-probe-plain-loopback",
        change(MS_AUTH_CODE, loginProbe={"protocol": "IMAP", "server": "127.0.0.1:1143", "tls": "None"}),
    ),
    Case(
        "graph-service-with-graph-scope",
        change(MS_AUTH_CODE, services=["GraphMailRead"], scopes=["https://graph.microsoft.com/User.Read"]),
    ),
    Case(
        "microsoft-scopes-only",
        change(MS_AUTH_CODE, drop=("services",), scopes=["https://outlook.office.com/IMAP.AccessAsUser.All"]),
    ),
    Case(
        "microsoft-token-url-override",
        change(MS_AUTH_CODE, tokenUrl="https://127.0.0.1:8443/tenant/oauth2/v2.0/token"),
    ),
    Case("microsoft-device-code-public", MS_DEVICE_CODE),
    Case("microsoft-device-code-confidential", change(MS_DEVICE_CODE, clientSecretRef={"name": "ms-client"})),
    Case("microsoft-client-credentials", MS_CLIENT_CREDENTIALS),
    # Workload identity federation: the pod's projected ServiceAccount token instead of a client secret.
    Case(
        "microsoft-client-credentials-federated",
        change(MS_CLIENT_CREDENTIALS, drop=("clientSecretRef",), federatedCredential={}),
    ),
    Case(  # a ServiceAccount of the token's own namespace: its subject, not the operator's
        "microsoft-client-credentials-federated-service-account",
        change(
            MS_CLIENT_CREDENTIALS,
            drop=("clientSecretRef",),
            federatedCredential={"serviceAccountName": "mail-client", "audience": "api://AzureADTokenExchange"},
        ),
    ),
    Case(
        "microsoft-authorization-code-federated-audience",
        change(MS_AUTH_CODE, drop=("clientSecretRef",), federatedCredential={"audience": "api://contoso-mail"}),
    ),
    Case("microsoft-device-code-federated", change(MS_DEVICE_CODE, federatedCredential={})),
    Case(
        "federated-and-client-secret",
        change(MS_CLIENT_CREDENTIALS, federatedCredential={}),
        ("one-client-authentication",),
    ),
    Case(
        "google-authorization-code-federated",
        change(GOOGLE_AUTH_CODE, drop=("clientSecretRef",), federatedCredential={}),
        ("federated-microsoft-only",),
    ),
    Case(
        "google-service-account-federated",
        change(GOOGLE_SERVICE_ACCOUNT, federatedCredential={"audience": "//iam.googleapis.com/projects/1/x"}),
        ("federated-microsoft-only",),
    ),
    Case(
        "microsoft-client-credentials-default-scope",
        change(MS_CLIENT_CREDENTIALS, drop=("services",), scopes=["https://outlook.office365.com/.default"]),
    ),
    Case("google-authorization-code", GOOGLE_AUTH_CODE),
    Case("google-any-token-url", change(GOOGLE_AUTH_CODE, tokenUrl="https://127.0.0.1:8443/token")),
    Case("google-service-account", GOOGLE_SERVICE_ACCOUNT),
    Case("update-keeps-provider", change(MS_AUTH_CODE, services=["POP"]), old=MS_AUTH_CODE),
    # Invalid specs: exactly the listed rules reject them.
    Case("update-changes-provider", GOOGLE_AUTH_CODE, ("provider-immutable",), old=MS_AUTH_CODE),
    Case("microsoft-without-tenant", change(MS_AUTH_CODE, drop=("tenantId",)), ("tenant-required",)),
    Case("google-with-tenant", change(GOOGLE_AUTH_CODE, tenantId=TENANT), ("tenant-microsoft-only",)),
    Case("google-device-code", change(GOOGLE_AUTH_CODE, flow="DeviceCode"), ("microsoft-only-flows",)),
    Case(
        "google-client-credentials",
        change(GOOGLE_AUTH_CODE, flow="ClientCredentials", emailAddress="a@example.com"),
        ("microsoft-only-flows",),
    ),
    Case(
        "microsoft-service-account",
        change(MS_AUTH_CODE, drop=("clientSecretRef",), flow="ServiceAccount", serviceAccountKeyRef={"name": "k"}),
        ("google-only-flow",),
    ),
    Case("microsoft-without-client-id", change(MS_AUTH_CODE, drop=("clientId",)), ("client-id-required",)),
    Case(
        "authorization-code-without-client-secret",
        change(MS_AUTH_CODE, drop=("clientSecretRef",)),
        ("client-secret-required",),
    ),
    Case(
        "flow-defaulted-without-client-secret",
        change(GOOGLE_AUTH_CODE, drop=("clientSecretRef",)),
        ("client-secret-required",),
    ),
    Case(
        "client-credentials-without-client-secret",
        change(MS_CLIENT_CREDENTIALS, drop=("clientSecretRef",)),
        ("client-secret-required",),
    ),
    Case(
        "service-account-with-client-secret",
        change(GOOGLE_SERVICE_ACCOUNT, clientSecretRef={"name": "google-client"}),
        ("client-secret-not-for-sa",),
    ),
    Case(
        "service-account-without-key",
        change(GOOGLE_SERVICE_ACCOUNT, drop=("serviceAccountKeyRef",)),
        ("sa-key-required",),
    ),
    Case(
        "authorization-code-with-service-account-key",
        change(GOOGLE_AUTH_CODE, serviceAccountKeyRef={"name": "google-sa"}),
        ("sa-key-only-sa",),
    ),
    Case(
        "service-account-without-email",
        change(GOOGLE_SERVICE_ACCOUNT, drop=("emailAddress",)),
        ("email-required",),
    ),
    Case(
        "client-credentials-without-email",
        change(MS_CLIENT_CREDENTIALS, drop=("emailAddress",)),
        ("email-required",),
    ),
    Case("neither-services-nor-scopes", change(MS_AUTH_CODE, drop=("services",)), ("services-or-scopes",)),
    Case("microsoft-with-gmail", change(MS_AUTH_CODE, services=["IMAP", "Gmail"]), ("microsoft-services",)),
    Case("graph-with-imap", change(MS_AUTH_CODE, services=["GraphMailSend", "IMAP"]), ("graph-or-exchange",)),
    Case(
        "graph-service-with-exchange-scope",
        change(MS_AUTH_CODE, services=["GraphMailRead"], scopes=["https://outlook.office.com/IMAP.AccessAsUser.All"]),
        ("scopes-graph-or-exchange",),
    ),
    Case(
        "exchange-service-with-graph-scope",
        change(MS_AUTH_CODE, services=["IMAP"], scopes=["https://Graph.Microsoft.com/Mail.Read"]),
        ("scopes-graph-or-exchange",),
    ),
    Case(
        "graph-and-exchange-scopes",
        change(
            MS_CLIENT_CREDENTIALS,
            drop=("services",),
            scopes=["https://graph.microsoft.com/.default", "https://outlook.office365.com/.default"],
        ),
        ("scopes-graph-or-exchange",),
    ),
    Case(
        "graph-services-and-scopes",
        change(MS_AUTH_CODE, services=["GraphMailSend", "IMAP"], scopes=["https://graph.microsoft.com/User.Read"]),
        ("graph-or-exchange", "scopes-graph-or-exchange"),
    ),
    Case(
        "login-probe-plain-remote",
        change(MS_AUTH_CODE, loginProbe={"protocol": "IMAP", "server": "imap.example.com", "tls": "None"}),
        ("login-probe-plain",),
    ),
    Case("google-with-graph", change(GOOGLE_AUTH_CODE, services=["GraphMailRead"]), ("google-services",)),
    Case("google-with-imap", change(GOOGLE_AUTH_CODE, services=["Gmail", "IMAP"]), ("google-services",)),
    Case(
        "client-credentials-delegated-scope",
        change(MS_CLIENT_CREDENTIALS, scopes=["https://outlook.office.com/IMAP.AccessAsUser.All"]),
        ("client-credentials-default-scopes",),
    ),
    Case(
        "client-credentials-common-tenant",
        change(MS_CLIENT_CREDENTIALS, tenantId="organizations"),
        ("client-credentials-tenant",),
    ),
    Case(
        "microsoft-token-url-not-v2",
        change(MS_AUTH_CODE, tokenUrl="https://login.example.com/tenant/oauth2/token"),
        ("microsoft-token-url",),
    ),
    Case(
        "secret-name-squats-a-grant",
        change(MS_AUTH_CODE, secretName="emailtoken-grant-other"),
        ("reserved-secret-name",),
    ),
    Case("secret-name-merely-similar", change(MS_AUTH_CODE, secretName="my-emailtoken-grant-x")),
    Case(
        "several-at-once",
        {"provider": "Google", "flow": "DeviceCode", "tenantId": TENANT},
        ("tenant-microsoft-only", "microsoft-only-flows", "client-id-required", "services-or-scopes"),
    ),
]

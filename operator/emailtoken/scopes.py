"""Expand ``services`` shorthands into the exact OAuth scope strings providers expect."""

from __future__ import annotations

from collections.abc import Iterable

#: Exchange Online's own protocols: tokens for the resource https://outlook.office.com.
MICROSOFT_SERVICES: dict[str, str] = {
    "IMAP": "https://outlook.office.com/IMAP.AccessAsUser.All",
    "POP": "https://outlook.office.com/POP.AccessAsUser.All",
    "SMTP": "https://outlook.office.com/SMTP.Send",
    "EWS": "https://outlook.office.com/EWS.AccessAsUser.All",
}
#: Microsoft Graph mail, Microsoft's successor to EWS: tokens for https://graph.microsoft.com.
#: Named after the Graph permission each one asks for (least privilege: pick the smallest).
GRAPH_SERVICES: dict[str, str] = {
    "GraphMailRead": "https://graph.microsoft.com/Mail.Read",
    "GraphMailReadWrite": "https://graph.microsoft.com/Mail.ReadWrite",
    "GraphMailSend": "https://graph.microsoft.com/Mail.Send",
}
#: App-only (client credentials) tokens always use the resource's .default scope;
#: the app roles IMAP.AccessAsApp, POP.AccessAsApp, SMTP.SendAsApp come from the admin consent.
MICROSOFT_APP_ONLY_SCOPE = "https://outlook.office365.com/.default"
#: App-only Graph: the application permissions Mail.Read, Mail.ReadWrite, Mail.Send come from the
#: admin consent (and RBAC for Applications in Exchange Online scopes them to mailboxes).
GRAPH_APP_ONLY_SCOPE = "https://graph.microsoft.com/.default"
GOOGLE_SERVICES: dict[str, str] = {"Gmail": "https://mail.google.com/"}
#: Scopes msal adds itself and refuses to be given explicitly.
MICROSOFT_RESERVED = frozenset({"openid", "profile", "offline_access"})
GOOGLE_IDENTITY_SCOPES = ("openid", "email")
#: Exchange Web Services is switched off in Exchange Online (message center MC1227454).
EWS_RETIREMENT_STARTS = "2026-10-01"
EWS_RETIREMENT_ENDS = "2027-04-01"


def services_for(provider: str) -> dict[str, str]:
    """The shorthand table of one provider."""
    return {**MICROSOFT_SERVICES, **GRAPH_SERVICES} if provider == "Microsoft" else GOOGLE_SERVICES


def _app_only_scope(service: str) -> str:
    return GRAPH_APP_ONLY_SCOPE if service in GRAPH_SERVICES else MICROSOFT_APP_ONLY_SCOPE


def expand(provider: str, flow: str, services: Iterable[str], scopes: Iterable[str]) -> list[str]:
    """Return the scopes to request, in a stable order, offline access included.

    Raises ValueError for a service that the provider does not offer.
    """
    table = services_for(provider)
    result: list[str] = []

    def add(scope: str) -> None:
        if scope and scope not in result:
            result.append(scope)

    for service in services:
        if service not in table:
            raise ValueError(f"service {service!r} is not available for {provider}; choose from {', '.join(table)}")
        if provider == "Microsoft" and flow == "ClientCredentials":
            add(_app_only_scope(service))
        else:
            add(table[service])
    for scope in scopes:
        add(scope.strip())
    if provider == "Microsoft" and flow in ("AuthorizationCode", "DeviceCode"):
        add("offline_access")
    if provider == "Google" and flow == "AuthorizationCode":
        for scope in GOOGLE_IDENTITY_SCOPES:
            add(scope)
    return result


def uses_ews(scopes: Iterable[str], services: Iterable[str] = ()) -> bool:
    """Does a token with these services or (expanded) scopes serve Exchange Web Services?

    App-only tokens carry only ``.default``, so the services say it there.
    """
    return "EWS" in services or any(scope.rsplit("/", 1)[-1].startswith("EWS.") for scope in scopes)


def for_request(provider: str, scopes: Iterable[str]) -> list[str]:
    """Drop the scopes that a library adds on its own (msal rejects them when passed)."""
    if provider == "Microsoft":
        return [s for s in scopes if s not in MICROSOFT_RESERVED]
    return list(scopes)

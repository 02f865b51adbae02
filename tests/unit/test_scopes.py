"""emailtoken.scopes: shorthands become the exact scope strings the providers expect."""

from __future__ import annotations

import pytest

from emailtoken.scopes import expand, for_request, services_for, uses_ews

IMAP = "https://outlook.office.com/IMAP.AccessAsUser.All"
POP = "https://outlook.office.com/POP.AccessAsUser.All"
SMTP = "https://outlook.office.com/SMTP.Send"
EWS = "https://outlook.office.com/EWS.AccessAsUser.All"
DEFAULT = "https://outlook.office365.com/.default"
GMAIL = "https://mail.google.com/"
GRAPH_READ = "https://graph.microsoft.com/Mail.Read"
GRAPH_READ_WRITE = "https://graph.microsoft.com/Mail.ReadWrite"
GRAPH_SEND = "https://graph.microsoft.com/Mail.Send"
GRAPH_DEFAULT = "https://graph.microsoft.com/.default"


@pytest.mark.parametrize(
    ("service", "scope"),
    [("IMAP", IMAP), ("POP", POP), ("SMTP", SMTP), ("EWS", EWS)],
)
def test_each_microsoft_service_expands_to_its_exact_scope(service: str, scope: str) -> None:
    """A typo in these strings means AADSTS65001 at sign-in; pin them exactly."""
    assert expand("Microsoft", "AuthorizationCode", [service], []) == [scope, "offline_access"]


def test_gmail_service_for_authorization_code_adds_identity_scopes() -> None:
    """openid/email let the code exchange tell which account signed in."""
    assert expand("Google", "AuthorizationCode", ["Gmail"], []) == [GMAIL, "openid", "email"]


def test_gmail_service_account_has_no_identity_scopes() -> None:
    """Domain-wide delegation knows its subject; identity scopes would need extra consent."""
    assert expand("Google", "ServiceAccount", ["Gmail"], []) == [GMAIL]


@pytest.mark.parametrize("services", [["IMAP"], ["IMAP", "POP", "SMTP"], ["EWS", "SMTP"]])
def test_client_credentials_is_one_default_scope(services: list[str]) -> None:
    """App-only tokens always ask for .default once, whatever the services, and never offline_access."""
    assert expand("Microsoft", "ClientCredentials", services, []) == [DEFAULT]


@pytest.mark.parametrize("flow", ["AuthorizationCode", "DeviceCode"])
def test_delegated_microsoft_flows_add_offline_access_last(flow: str) -> None:
    """Without offline_access Entra returns no refresh token."""
    assert expand("Microsoft", flow, ["IMAP", "SMTP"], []) == [IMAP, SMTP, "offline_access"]


def test_order_follows_services_then_scopes() -> None:
    """A stable order keeps the spec fingerprint stable."""
    result = expand("Microsoft", "AuthorizationCode", ["SMTP", "IMAP"], ["https://x/Mail.Read"])
    assert result == [SMTP, IMAP, "https://x/Mail.Read", "offline_access"]


def test_duplicates_are_removed_and_whitespace_trimmed() -> None:
    """Listing a service and its scope (or offline_access) twice asks for it once."""
    result = expand(
        "Microsoft",
        "AuthorizationCode",
        ["IMAP", "IMAP"],
        [f"  {IMAP} ", "offline_access", "", "  "],
    )
    assert result == [IMAP, "offline_access"]


def test_google_identity_scopes_deduplicated() -> None:
    """email given explicitly is not repeated at the end."""
    assert expand("Google", "AuthorizationCode", ["Gmail"], ["email"]) == [GMAIL, "email", "openid"]


def test_scopes_alone_are_enough() -> None:
    """Full scope strings work without services."""
    assert expand("Google", "AuthorizationCode", [], [GMAIL]) == [GMAIL, "openid", "email"]


@pytest.mark.parametrize(
    ("provider", "service", "choices"),
    [("Microsoft", "Gmail", "IMAP, POP, SMTP, EWS"), ("Google", "SMTP", "Gmail"), ("Microsoft", "imap", "IMAP")],
)
def test_unknown_service_is_an_error_naming_the_choices(provider: str, service: str, choices: str) -> None:
    """The message lists what the provider offers."""
    with pytest.raises(ValueError, match="is not available for") as info:
        expand(provider, "AuthorizationCode", [service], [])
    assert f"service {service!r} is not available for {provider}" in str(info.value)
    assert choices in str(info.value)


def test_services_for_tables() -> None:
    """Each provider has its own shorthand table."""
    assert set(services_for("Microsoft")) == {
        "IMAP",
        "POP",
        "SMTP",
        "EWS",
        "GraphMailRead",
        "GraphMailReadWrite",
        "GraphMailSend",
    }
    assert set(services_for("Google")) == {"Gmail"}


def test_for_request_drops_msal_reserved_scopes_for_microsoft() -> None:
    """msal raises when given openid/profile/offline_access explicitly."""
    scopes = [IMAP, "openid", "profile", "offline_access", SMTP]
    assert for_request("Microsoft", scopes) == [IMAP, SMTP]


def test_for_request_keeps_google_scopes() -> None:
    """google-auth needs openid/email passed as they are."""
    scopes = [GMAIL, "openid", "email"]
    assert for_request("Google", scopes) == scopes
    assert for_request("Google", iter(scopes)) == scopes


@pytest.mark.parametrize(
    ("service", "scope"),
    [("GraphMailRead", GRAPH_READ), ("GraphMailReadWrite", GRAPH_READ_WRITE), ("GraphMailSend", GRAPH_SEND)],
)
@pytest.mark.parametrize("flow", ["AuthorizationCode", "DeviceCode"])
def test_each_graph_service_expands_to_its_delegated_permission(flow: str, service: str, scope: str) -> None:
    """Delegated Graph mail: the Graph permission the service is named after, and offline_access."""
    assert expand("Microsoft", flow, [service], []) == [scope, "offline_access"]


def test_graph_services_together_keep_their_order() -> None:
    """A reader that also sends asks for both permissions, once each."""
    result = expand("Microsoft", "AuthorizationCode", ["GraphMailSend", "GraphMailRead", "GraphMailSend"], [])
    assert result == [GRAPH_SEND, GRAPH_READ, "offline_access"]


@pytest.mark.parametrize("services", [["GraphMailRead"], ["GraphMailReadWrite", "GraphMailSend"]])
def test_graph_app_only_is_the_graph_default_scope(services: list[str]) -> None:
    """App-only Graph asks for graph.microsoft.com/.default (never Exchange's, never offline_access)."""
    assert expand("Microsoft", "ClientCredentials", services, []) == [GRAPH_DEFAULT]


@pytest.mark.parametrize(
    ("scopes", "ews"),
    [
        ([EWS, "offline_access"], True),
        (["https://outlook.office365.com/EWS.AccessAsApp"], True),
        ([IMAP, SMTP, "offline_access"], False),
        ([GRAPH_READ, "offline_access"], False),
        ([DEFAULT], False),
    ],
)
def test_uses_ews_recognises_ews_scopes(scopes: list[str], ews: bool) -> None:
    """EWS retirement warnings go to tokens whose scopes serve EWS, and only to them."""
    assert uses_ews(scopes) is ews


def test_uses_ews_sees_the_service_behind_an_app_only_default_scope() -> None:
    """ClientCredentials with services [EWS] requests only .default: the service tells."""
    assert uses_ews([DEFAULT], ["EWS", "SMTP"])
    assert not uses_ews([DEFAULT], ["IMAP", "SMTP"])

"""emailtoken.mailanswers: each canned server answer maps to its likely cause and the command that fixes it."""

from __future__ import annotations

from typing import Any

import pytest

from emailtoken.checkmail import LoginOutcome, render
from emailtoken.mailanswers import Context, app_only, diagnose

BOX = "sales@contoso.com"
QBOX = f"'{BOX}'"  # the mailbox as a PowerShell single-quoted literal
APP = Context("imap", BOX, app_only=True)
USER = Context("imap", BOX, app_only=False)

# The servers' own words (Exchange Online, Gmail, Dovecot), as mail tasks log them.
SMTP_AUTH_DISABLED = (
    "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox. "
    "Visit https://aka.ms/smtp_auth_disabled for more information. [AM0PR01CA0123.eurprd01.prod.exchangelabs.com]"
)
BASIC_AUTH = (
    "550 5.7.30 Basic authentication is not supported for Client Submission. [MW4PR03CA0123.namprd03.prod.outlook.com]"
)
GOOGLE_APP_PASSWORD = (
    "534-5.7.9 Application-specific password required. For more information, go to\n"
    "534 5.7.9  https://support.google.com/mail/?p=InvalidSecondFactor"
)
GOOGLE_WEB_LOGIN = "534-5.7.14 <https://accounts.google.com/signin/continue?...> Please log in via your web browser"
SP_FIX = "New-ServicePrincipal -AppId <application (client) ID> -ObjectId <object ID of the Enterprise Application"
PERMISSION_FIX = f"Add-MailboxPermission -Identity {QBOX} -User <object ID of the Enterprise Application"


@pytest.mark.parametrize(
    ("reply", "challenge", "ctx", "cause", "fix"),
    [
        (SMTP_AUTH_DISABLED, "", Context("smtp", BOX), "SmtpAuthDisabled", f"Set-CASMailbox -Identity {QBOX} -Smtp"),
        ("535 5.7.139 Authentication unsuccessful, SMTP AUTH disabled", "", Context("smtp"), "SmtpAuthDisabled",
         "Set-CASMailbox -Identity <mailbox> -SmtpClientAuthenticationDisabled $false"),
        (BASIC_AUTH, "", Context("smtp", BOX), "BasicAuthRefused", "MAIL_AUTH_TYPE = OAUTH2"),
        ("AUTHENTICATE failed.", "", APP, "ServicePrincipalNotRegistered", SP_FIX),
        ("AUTHENTICATE failed.", "", APP, "ServicePrincipalNotRegistered", PERMISSION_FIX),
        ("AUTHENTICATE failed.", "", Context("imap", BOX), "ServicePrincipalNotRegistered", SP_FIX),
        ("AUTHENTICATE failed.", "", USER, "TokenRejected", f"Set-CASMailbox -Identity {QBOX} -ImapEnabled $true"),
        ("535 5.7.3 Authentication unsuccessful [SN4PR0501CA0054.namprd05.prod.outlook.com]", "",
         Context("smtp", BOX, app_only=True), "ServicePrincipalNotRegistered", SP_FIX),
        ("-ERR Authentication failure: unknown user name or bad password.", "", Context("pop3", BOX, False),
         "TokenRejected", f"Set-CASMailbox -Identity {QBOX} -PopEnabled $true"),
        ("User is authenticated but not connected.", "", APP, "MailboxNotConnected", PERMISSION_FIX),
        ("-ERR User is authenticated but not connected.", "", Context("pop3", BOX), "MailboxNotConnected",
         f"Set-CASMailbox -Identity {QBOX} -PopEnabled $true"),
        (GOOGLE_APP_PASSWORD, "", Context("smtp"), "GooglePasswordRefused", "MAIL_AUTH_TYPE = OAUTH2"),
        (GOOGLE_WEB_LOGIN, "", Context("smtp", BOX), "GoogleWebLoginRequired", "https://accounts.google.com"),
        ("[ALERT] Invalid credentials (Failure)", "", USER, "InvalidCredentials", "kubectl emailtoken status"),
        ("535-5.7.8 Username and Password not accepted. BadCredentials", "", Context("smtp"), "InvalidCredentials",
         "kubectl emailtoken status"),
        ("[ALERT] IMAP access is disabled for your domain.", "", USER, "ProtocolDisabled", "allow IMAP"),
        ("NO token expired", "", USER, "TokenExpired", "kubectl emailtoken status"),
        ("535 5.7.3 Authentication unsuccessful", "", Context("smtp", BOX, app_only=False), "TokenRejected",
         f"Set-CASMailbox -Identity {QBOX} -SmtpClientAuthenticationDisabled $false"),
        ("[UNAVAILABLE] Temporary authentication failure.", "", USER, "ServerUnavailable", None),
        ("AUTHENTICATE failed", {"status": "401"}, USER, "TokenRejected", "-ImapEnabled"),
        ("[AUTHENTICATIONFAILED] Authentication failed.", {"status": "403", "scope": "x"}, USER,
         "InsufficientScope", None),
        ("NO something new", "", USER, "LoginRefused", None),
    ],
)  # fmt: skip
def test_each_answer_maps_to_its_cause_and_fix(
    reply: str, challenge: dict[str, Any] | str, ctx: Context, cause: str, fix: str | None
) -> None:
    diagnosis = diagnose(reply, challenge, ctx)
    assert diagnosis.cause == cause
    if fix is None:
        assert diagnosis.fixes == ()
    else:
        assert any(fix in line for line in diagnosis.fixes), diagnosis.fixes


def test_the_service_principal_advice_names_the_enterprise_application_not_the_app_registration() -> None:
    """The usual app-only mistake: New-ServicePrincipal with the App registration's object ID."""
    diagnosis = diagnose("AUTHENTICATE failed.", "", APP)
    assert "App registration's object ID instead of the Enterprise Application's" in diagnosis.meaning
    assert any(line.startswith("Get-ServicePrincipal") for line in diagnosis.fixes)


@pytest.mark.parametrize(("scope", "expected"), [("https://outlook.office365.com/.default", True),
                                                 ("https://outlook.office.com/IMAP.AccessAsUser.All offline_access",
                                                  False), ("", None)])  # fmt: skip
def test_app_only_is_read_from_the_token_scope(scope: str, expected: bool | None) -> None:
    assert app_only(scope) is expected


def test_render_prints_the_cause_and_each_fix() -> None:
    diagnosis = diagnose(SMTP_AUTH_DISABLED, "", Context("smtp", BOX))
    outcome = LoginOutcome(ok=False, server_reply=SMTP_AUTH_DISABLED, details=[diagnosis.meaning],
                           cause=diagnosis.cause, fixes=list(diagnosis.fixes))  # fmt: skip
    text = render(outcome, "SMTP XOAUTH2 login as x", "token 't' expires at ...").splitlines()
    assert text[0] == "FAILED: SMTP XOAUTH2 login as x was refused."
    assert "  likely cause: SmtpAuthDisabled" in text
    assert f"  fix: Set-CASMailbox -Identity {QBOX} -SmtpClientAuthenticationDisabled $false" in text


HOSTILE = [
    "a$(Get-Mailbox|Remove-Mailbox)@x.com",
    "a`;Remove-Mailbox@x.com",
    "a;Remove-Mailbox -Identity x@x.com",
    "a\u2019;Remove-Mailbox;\u2018@x.com",  # PowerShell treats curly quotes as quotes too
    "a@x.com\nRemove-Mailbox",
    "a@(Remove-Mailbox).com",
]


@pytest.mark.parametrize("mailbox", HOSTILE)
@pytest.mark.parametrize(
    ("reply", "ctx_args"),
    [(SMTP_AUTH_DISABLED, ("smtp",)), ("AUTHENTICATE failed.", ("imap",)), ("AUTHENTICATE failed.", ("pop3",)),
     ("User is authenticated but not connected.", ("imap",)), (GOOGLE_WEB_LOGIN, ("smtp",))],
)  # fmt: skip
def test_a_tenant_chosen_mailbox_never_reaches_the_pasteable_commands(
    mailbox: str, reply: str, ctx_args: tuple[str]
) -> None:
    """Tenants choose the user name (spec.emailAddress); an admin pastes these lines into Exchange PowerShell."""
    for app in (True, False):
        diagnosis = diagnose(reply, "", Context(*ctx_args, mailbox, app_only=app))
        for text in (diagnosis.meaning, *diagnosis.fixes):
            assert "Remove-Mailbox" not in text, text
        assert any("<mailbox>" in line for line in (diagnosis.meaning, *diagnosis.fixes)), diagnosis


def test_an_apostrophe_in_the_address_is_doubled_inside_the_quotes() -> None:
    diagnosis = diagnose(SMTP_AUTH_DISABLED, "", Context("smtp", "o'brien@contoso.com"))
    assert (
        diagnosis.fixes[0] == "Set-CASMailbox -Identity 'o''brien@contoso.com' -SmtpClientAuthenticationDisabled $false"
    )

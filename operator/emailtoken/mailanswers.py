"""What a mail server's refusal most likely means, and the command that fixes it.

Pure (no network): ``emailtoken check-mail`` feeds it the server's reply and the decoded SASL
error challenge. The texts are the ones Exchange Online, Gmail and Dovecot really send; app-only
Exchange setups fail in three well-known places (the service principal registered with the App
Registration's object ID instead of the Enterprise Application's, no ``Add-MailboxPermission``,
SMTP AUTH off per mailbox), so the fixes name those commands with the mailbox filled in.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_LABEL = {"imap": "IMAP", "pop3": "POP3", "smtp": "SMTP"}
PROPERTIES_FIX = (
    "let the mail task log in with the token: MAIL_AUTH_TYPE = OAUTH2 and MAIL_TOKEN_NAME = <token name> "
    "(reader: MAILBOX_AUTH_TYPE = OAUTH2, MAILBOX_EMAIL_TOKEN_NAME = <token name>)"
)
#: A plain mail address: nothing PowerShell expands ($, `, (), ;, quotes other than the ASCII apostrophe).
_ADDRESS = re.compile(r"[A-Za-z0-9._%+'-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){1,8}", re.ASCII)
SP_OBJECT_ID = (
    "<object ID of the Enterprise Application (Entra ID > Enterprise applications), not of the App registration>"
)


@dataclass(frozen=True)
class Context:
    """What is known about the login: protocol, mailbox, and whether the token is app-only (None: unknown)."""

    protocol: str = "imap"
    mailbox: str = ""
    app_only: bool | None = None

    @property
    def label(self) -> str:
        return _LABEL.get(self.protocol, self.protocol.upper())

    @property
    def box(self) -> str:
        """The mailbox for prose, or ``<mailbox>`` unless it is a plain address (tenants choose it)."""
        return self.mailbox if _ADDRESS.fullmatch(self.mailbox) else "<mailbox>"

    @property
    def ps_box(self) -> str:
        """The mailbox as a single-quoted PowerShell literal an admin can paste, or ``<mailbox>``."""
        box = self.box
        return "'" + box.replace("'", "''") + "'" if box != "<mailbox>" else box


@dataclass(frozen=True)
class Diagnosis:
    """The likely cause (a CamelCase word), what it means, and the commands that fix it."""

    cause: str
    meaning: str
    fixes: tuple[str, ...] = ()


def _smtp_auth_disabled(ctx: Context) -> Diagnosis:
    return Diagnosis(
        "SmtpAuthDisabled",
        "SMTP AUTH is disabled for this tenant or mailbox (Exchange Online turns it off by default): the "
        "token is not the problem",
        (
            f"Set-CASMailbox -Identity {ctx.ps_box} -SmtpClientAuthenticationDisabled $false",
            "or for the whole tenant: Set-TransportConfig -SmtpClientAuthenticationDisabled $false",
        ),
    )


def _basic_auth(ctx: Context) -> Diagnosis:
    return Diagnosis(
        "BasicAuthRefused",
        f"the server got a password (Basic authentication) login over {ctx.label}, which Exchange Online no "
        "longer accepts: only OAuth (XOAUTH2) logins work",
        (PROPERTIES_FIX,),
    )


def _google_password(ctx: Context) -> Diagnosis:
    return Diagnosis(
        "GooglePasswordRefused",
        "Google refused a password login (an account with 2-Step Verification needs an app password, and "
        "Workspace may forbid those): log in with the OAuth token instead",
        (PROPERTIES_FIX,),
    )


def _google_web_login(ctx: Context) -> Diagnosis:
    return Diagnosis(
        "GoogleWebLoginRequired",
        "Google wants this account to sign in through a web browser first (a security challenge)",
        (
            f"sign in once as {ctx.box} at https://accounts.google.com, then sign the token in again "
            "(kubectl annotate emailtoken <token> emailtoken.io/reauthorize=$(date +%s) --overwrite)",
        ),
    )


def _enable(ctx: Context) -> str:
    """The Set-CASMailbox line that turns the login's protocol on for the mailbox."""
    switch = {"pop3": "-PopEnabled $true", "smtp": "-SmtpClientAuthenticationDisabled $false"}
    return f"Set-CASMailbox -Identity {ctx.ps_box} {switch.get(ctx.protocol, '-ImapEnabled $true')}"


def _not_connected(ctx: Context) -> Diagnosis:
    return Diagnosis(
        "MailboxNotConnected",
        "the token was accepted but the mailbox cannot be opened: the app lacks mailbox permission "
        "(Add-MailboxPermission for its service principal) or "
        f"{ctx.label} is disabled for the mailbox (Set-CASMailbox {ctx.ps_box} -ImapEnabled $true / -PopEnabled "
        "$true); an app-only service principal registered with the wrong object ID ends here too",
        (
            f"Add-MailboxPermission -Identity {ctx.ps_box} -User {SP_OBJECT_ID} -AccessRights FullAccess",
            _enable(ctx),
        ),
    )


def _security_defaults(ctx: Context) -> Diagnosis:
    return Diagnosis(
        "SecurityDefaults",
        "the account is blocked by the tenant's security defaults policy (an Entra ID administrator must allow it)",
    )


def _temporary(ctx: Context) -> Diagnosis:
    return Diagnosis(
        "ServerUnavailable",
        "the server could not check the token right now (a temporary failure on its side, such as its identity "
        "provider being unreachable): try again later; if it persists, the server's OAuth configuration is broken",
    )


def _expired(ctx: Context) -> Diagnosis:
    return Diagnosis(
        "TokenExpired",
        "the access token has expired: the operator has not refreshed it in time (kubectl describe emailtoken "
        "<name>), or the clocks disagree",
        ("kubectl emailtoken status <token>",),
    )


def _google_disabled(ctx: Context) -> Diagnosis:
    return Diagnosis(
        "ProtocolDisabled",
        f"{ctx.label} access is disabled for this Google account or Workspace domain (Gmail settings or the "
        "Admin console)",
        (f"Admin console > Apps > Google Workspace > Gmail > End user access: allow {ctx.label}",),
    )


_MICROSOFT_REJECTED = (
    "Microsoft rejected the token: check that it was issued for Exchange Online with the {proto} scope "
    "(https://outlook.office.com/IMAP.AccessAsUser.All, POP.AccessAsUser.All or SMTP.Send; app-only: "
    "IMAP.AccessAsApp, POP.AccessAsApp, SMTP.SendAsApp), that the user name is the mailbox the token is "
    "for, and for app-only tokens that the service principal is registered in Exchange (New-ServicePrincipal) "
    "and has mailbox permission"
)


def _microsoft_rejected(ctx: Context) -> Diagnosis:
    meaning = _MICROSOFT_REJECTED.replace("{proto}", ctx.label)
    if ctx.app_only is False:
        return Diagnosis(
            "TokenRejected",
            meaning,
            (
                "kubectl get secret <token> -o jsonpath='{.data.scope}' | base64 -d   # the scopes the token has",
                _enable(ctx),
            ),
        )
    return Diagnosis(
        "ServicePrincipalNotRegistered",
        meaning + ". Most often with app-only tokens: Exchange knows the service principal under the App "
        "registration's object ID instead of the Enterprise Application's, or not at all",
        (
            "Get-ServicePrincipal | Format-Table AppId,ObjectId   # a wrong ObjectId: Remove-ServicePrincipal it",
            f"New-ServicePrincipal -AppId <application (client) ID> -ObjectId {SP_OBJECT_ID}",
            f"Add-MailboxPermission -Identity {ctx.ps_box} -User {SP_OBJECT_ID} -AccessRights FullAccess",
        ),
    )


def _google_rejected(ctx: Context) -> Diagnosis:
    return Diagnosis(
        "InvalidCredentials",
        "the server rejected the token or the user name: the token is invalid, expired or revoked, or it was "
        "issued for another account or without the https://mail.google.com/ scope",
        ("kubectl emailtoken status <token>   # Ready, and the account it was signed in as",),
    )


#: Known server texts (Microsoft, Google, Dovecot), most specific first.
KNOWN: tuple[tuple[re.Pattern[str], Callable[[Context], Diagnosis]], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), diagnose)
    for pattern, diagnose in (
        (r"SmtpClientAuthentication is disabled|5\.7\.139|smtp_auth_disabled", _smtp_auth_disabled),
        (r"5\.7\.30\b|Basic authentication is not supported", _basic_auth),
        (r"5\.7\.9\b|Application-specific password required", _google_password),
        (r"5\.7\.14\b|log in via your web browser|WebLoginRequired", _google_web_login),
        (r"User is authenticated but not connected", _not_connected),
        (r"security defaults", _security_defaults),
        (r"\[UNAVAILABLE\]|Temporary authentication failure|^4\d\d\b|^-ERR \[SYS/TEMP\]", _temporary),
        (r"\bexpired\b", _expired),
        (r"IMAP access is disabled|POP access is disabled|access is disabled for your domain", _google_disabled),
        (
            r"AUTHENTICATE failed|5\.7\.3 Authentication unsuccessful|unknown user name or bad password",
            _microsoft_rejected,
        ),
        (r"Invalid credentials|Username and Password not accepted|5\.7\.8 .*BadCredentials", _google_rejected),
    )
)
_STATUS_MEANINGS = {
    "400": (
        "BadRequest",
        "the server could not use the login request: a malformed SASL string or an unusable user name",
    ),
    "401": (
        "InvalidCredentials",
        "the server rejected the access token: it is invalid, expired or revoked, or it was issued for another user",
    ),
    "403": ("InsufficientScope", "the access token lacks the scope this service requires"),
}


def diagnose(reply: str, challenge: dict[str, Any] | str, ctx: Context) -> Diagnosis:
    """The likely cause of a refused login, from the reply text first, then the SASL error challenge."""
    texts = [reply, challenge] if isinstance(challenge, str) and challenge else [reply]
    for pattern, known in KNOWN:
        if any(pattern.search(text) for text in texts):
            return known(ctx)
    if isinstance(challenge, dict):
        cause, meaning = _STATUS_MEANINGS.get(str(challenge.get("status", "")), ("", ""))
        if cause:
            scope = challenge.get("scope")
            return Diagnosis(cause, meaning + (f" (the server asks for scope {str(scope)[:200]!r})" if scope else ""))
    return Diagnosis(
        "LoginRefused",
        "the server refused the login: the token may be invalid, expired or revoked, lack the scope for "
        f"{ctx.label}, or belong to another user",
    )


def app_only(scope: str) -> bool | None:
    """Is a token with this ``scope`` key app-only (only ``/.default`` scopes)? None when the key is empty."""
    scopes = scope.split()
    return all(s.endswith("/.default") for s in scopes) if scopes else None

"""check-mail through the real SMTP login path: Exchange Online's refusals become a cause and a fix.

aiosmtpd checks tokens against the local provider's introspection endpoint like the other
mail-login tests; ``refusing_with`` makes it answer AUTH with Exchange Online's exact texts.
The token is app-only (its ``scope`` is ``.default``), as for a ClientCredentials EmailToken.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from emailtoken import checkmail
from tests.support.mail_fixtures import *  # noqa: F403  (the fixtures, until conftest imports them)
from tests.support.mail_fixtures import DevProviderAuthority
from tests.support.mailservers import SmtpXoauth2Server
from tests.support.secretvolume import SecretVolume, consumer_files

MAILBOX = "shared@example.test"
APP_ONLY = "https://outlook.office365.com/.default"


@pytest.mark.parametrize(
    ("reply", "cause", "fix"),
    [
        (
            "535 5.7.3 Authentication unsuccessful [SN4PR0501CA0054.namprd05.prod.outlook.com]",
            "ServicePrincipalNotRegistered",
            "fix: New-ServicePrincipal -AppId <application (client) ID> -ObjectId <object ID of the Enterprise "
            "Application",
        ),
        (
            "550 5.7.30 Basic authentication is not supported for Client Submission.",
            "BasicAuthRefused",
            "fix: let the mail task log in with the token: MAIL_AUTH_TYPE = OAUTH2",
        ),
        (
            "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox.",
            "SmtpAuthDisabled",
            f"fix: Set-CASMailbox -Identity '{MAILBOX}' -SmtpClientAuthenticationDisabled $false",
        ),
    ],
)
def test_exchange_refusals_name_the_cause_and_the_command(
    smtp_xoauth2_server: SmtpXoauth2Server,
    mail_token_authority: DevProviderAuthority,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    reply: str,
    cause: str,
    fix: str,
) -> None:
    token = mail_token_authority.issue(MAILBOX)
    files = consumer_files(
        access_token=token, username=MAILBOX, expires_at=datetime.now(UTC) + timedelta(hours=1), scope=APP_ONLY
    )
    SecretVolume(tmp_path / "shared").update(files)
    server = smtp_xoauth2_server
    argv = ["--token", "shared", "--mount-root", str(tmp_path), "--smtp", f"{server.host}:{server.port}"]
    with server.refusing_with(reply):
        code = checkmail.main(argv)
    output = capsys.readouterr().out
    assert code == 1, output
    assert f"server said: {reply}" in output
    assert f"likely cause: {cause}" in output
    assert fix in output
    assert token not in output

"""emailtoken.loginprobe: a probe's outcome becomes the MailLogin condition, its cause and fix; one Event per change."""

from __future__ import annotations

from typing import Any

import pytest

from emailtoken.checkmail import LoginOutcome
from emailtoken.conditions import Condition
from emailtoken.loginprobe import MAIL_LOGIN, advise, condition_of
from emailtoken.model import LoginProbe, SpecError, parse_spec

WHAT = "SMTP XOAUTH2 login as box@contoso.com to smtp.office365.com:587 (starttls)"
BASE = {
    "provider": "Microsoft",
    "tenantId": "t",
    "clientId": "c",
    "clientSecretRef": {"name": "s"},
    "services": ["SMTP"],
}


def shown(cond: Condition) -> dict[str, Any]:
    return {"conditions": [{"type": cond.type, "status": cond.status_text, "reason": cond.reason}]}


def test_a_refusal_names_the_cause_as_reason_and_the_fix_in_the_message() -> None:
    outcome = LoginOutcome(
        ok=False,
        server_reply="535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox.",
        details=["SMTP AUTH is disabled for this tenant or mailbox"],
        cause="SmtpAuthDisabled",
        fixes=["Set-CASMailbox -Identity box@contoso.com -SmtpClientAuthenticationDisabled $false"],
    )
    cond = condition_of(outcome, WHAT)
    assert (cond.type, cond.status, cond.reason) == (MAIL_LOGIN, False, "SmtpAuthDisabled")
    assert cond.message.startswith(f"{WHAT} failed at login; server said: 535 5.7.139")
    assert "fix: Set-CASMailbox -Identity box@contoso.com -SmtpClientAuthenticationDisabled $false" in cond.message


@pytest.mark.parametrize(
    ("stage", "reason"),
    [("connect", "MailServerUnreachable"), ("tls", "TLSFailed"), ("capability", "OAuthNotOffered"),
     ("login", "LoginRefused")],
)  # fmt: skip
def test_failures_before_a_diagnosis_are_named_by_stage(stage: str, reason: str) -> None:
    cond = condition_of(LoginOutcome(ok=False, stage=stage, server_reply="x"), WHAT)
    assert (cond.status, cond.reason) == (False, reason)


def test_success() -> None:
    cond = condition_of(LoginOutcome(ok=True, info="the server accepts mail submission for this login"), WHAT)
    assert (cond.status, cond.reason) == (True, "LoginSucceeded") and WHAT in cond.message


def test_events_only_on_change() -> None:
    failed = Condition(MAIL_LOGIN, False, "SmtpAuthDisabled", "m")
    ok = Condition(MAIL_LOGIN, True, "LoginSucceeded", "fine")
    assert advise(True, failed, {}) == ([failed], [("Warning", "MailLoginFailed", "SmtpAuthDisabled: m")])
    assert advise(True, failed, shown(failed)) == ([failed], [])
    assert advise(True, ok, shown(failed)) == ([ok], [("Normal", "MailLoginSucceeded", "fine")])
    assert advise(True, ok, {}) == ([ok], []), "the first success is no news"
    other = Condition(MAIL_LOGIN, False, "MailboxNotConnected", "n")
    assert advise(True, other, shown(failed))[1] == [("Warning", "MailLoginFailed", "MailboxNotConnected: n")]
    assert advise(True, None, shown(failed)) == ([], []), "no probe since a restart: status keeps its own"


def test_removing_the_probe_makes_the_condition_unknown_once() -> None:
    failed = Condition(MAIL_LOGIN, False, "SmtpAuthDisabled", "m")
    (cond,), events = advise(False, failed, shown(failed))
    assert (cond.status, cond.reason, events) == (None, "NoProbe", [])
    assert advise(False, None, shown(cond)) == ([], [])
    assert advise(False, None, {}) == ([], [])


def test_parse_spec_reads_the_probe_with_its_defaults() -> None:
    spec = parse_spec(
        {**BASE, "loginProbe": {"protocol": "SMTP", "server": "smtp.office365.com:587", "tls": "STARTTLS"}}, "t"
    )
    assert spec.login_probe == LoginProbe("smtp", "smtp.office365.com:587", "starttls")
    assert parse_spec({**BASE, "loginProbe": {"protocol": "IMAP", "server": "h"}}, "t").login_probe == LoginProbe(
        "imap", "h", "ssl"
    )
    assert parse_spec(BASE, "t").login_probe is None
    with pytest.raises(SpecError, match="loginProbe needs protocol"):
        parse_spec({**BASE, "loginProbe": {"protocol": "EWS", "server": "h"}}, "t")
    with pytest.raises(SpecError, match=r"loginProbe\.tls None"):
        parse_spec({**BASE, "loginProbe": {"protocol": "IMAP", "server": "imap.example.com", "tls": "None"}}, "t")

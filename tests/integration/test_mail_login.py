"""Tokens log in to real mail servers over XOAUTH2, and check-mail says so in plain words.

Tokens come from the local provider ``emailtoken_dev.devprovider`` (Microsoft client-credentials
flow over HTTPS). Dovecot (IMAP, POP3, submission) checks each one with ``passdb oauth2``
against the provider's introspection endpoint; aiosmtpd checks it against the same endpoint. Valid tokens log
in; wrong, expired and other-user tokens are refused. Every refused login connects from
its own loopback address because Dovecot slows an IP down after each failure.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from emailtoken import checkmail
from emailtoken.consumer import MountedToken
from tests.support.mail_fixtures import *  # noqa: F403  (the fixtures, until conftest imports them)
from tests.support.mail_fixtures import DevProviderAuthority
from tests.support.mailservers import Dovecot, SmtpSink, SmtpXoauth2Server, imap_login, smtp_login
from tests.support.secretvolume import SecretVolume, consumer_files

ALICE = "alice@example.test"
BOB = "bob@example.test"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def authority(mail_token_authority: DevProviderAuthority) -> DevProviderAuthority:
    return mail_token_authority


def mount(root: Path, name: str, token: str, user: str, expires_in: timedelta = timedelta(hours=1)) -> SecretVolume:
    volume = SecretVolume(root / name)
    volume.update(
        consumer_files(access_token=token, username=user, expires_at=datetime.now(UTC) + expires_in, scope="mail")
    )
    return volume


# --- the servers accept good tokens and refuse bad ones ----------------------------------------

PROTOCOLS = ["imap", "pop3", "submission"]


def login(dovecot: Dovecot, protocol: str, user: str, token: str, **kwargs: object):
    return getattr(dovecot, f"{protocol}_login")(user, token, **kwargs)


@pytest.mark.dovecot
@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_valid_token_logs_in(dovecot: Dovecot, authority: DevProviderAuthority, protocol: str, mechanism: str) -> None:
    token = authority.issue(ALICE)
    result = login(dovecot, protocol, ALICE, token, mechanism=mechanism)
    assert result.ok, result.reply
    assert token not in dovecot.log_text()


@pytest.mark.dovecot
@pytest.mark.parametrize("case", ["wrong", "expired", "other-user", "revoked"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bad_token_is_refused(dovecot: Dovecot, authority: DevProviderAuthority, protocol: str, case: str) -> None:
    if case == "wrong":
        token = "at-" + secrets.token_urlsafe(32)
    elif case == "expired":
        token = authority.issue_expired(ALICE)
    elif case == "other-user":
        token = authority.issue(BOB)  # valid, but for Bob's mailbox
    else:
        token = authority.issue(ALICE)
        authority.revoke(token)
    result = login(dovecot, protocol, ALICE, token, source_address=dovecot.source_address())
    assert not result.ok
    assert json.loads(result.challenge)["status"] == "401"
    assert "Authentication failed" in result.reply


@pytest.mark.dovecot
def test_submission_relays_mail_after_xoauth2(
    dovecot: Dovecot, authority: DevProviderAuthority, smtp_sink: SmtpSink
) -> None:
    before = len(smtp_sink.messages)
    result = dovecot.submission_login(ALICE, authority.issue(ALICE), send_to=ALICE)
    assert result.ok, result.reply
    deadline = time.monotonic() + 5
    while len(smtp_sink.messages) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert smtp_sink.messages[-1].rcpt_tos == [ALICE]
    assert b"sent with an XOAUTH2 login" in smtp_sink.messages[-1].data


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_aiosmtpd_accepts_valid_token(
    smtp_xoauth2_server: SmtpXoauth2Server, authority: DevProviderAuthority, mechanism: str
) -> None:
    from tests.support.mailservers import oauthbearer, xoauth2

    server = smtp_xoauth2_server
    token = authority.issue(ALICE)
    response = xoauth2(ALICE, token) if mechanism == "XOAUTH2" else oauthbearer(ALICE, token, server.host, server.port)
    result = smtp_login(server.host, server.port, response, mechanism=mechanism, send_to=ALICE)
    assert result.ok, result.reply
    assert server.messages[-1].login == ALICE


@pytest.mark.parametrize("case", ["wrong", "expired", "other-user"])
def test_aiosmtpd_refuses_bad_token(
    smtp_xoauth2_server: SmtpXoauth2Server, authority: DevProviderAuthority, case: str
) -> None:
    from tests.support.mailservers import xoauth2

    token = {
        "wrong": "at-" + secrets.token_urlsafe(32),
        "expired": authority.issue_expired(ALICE),
        "other-user": authority.issue(BOB),
    }[case]
    server = smtp_xoauth2_server
    result = smtp_login(server.host, server.port, xoauth2(ALICE, token))
    assert not result.ok
    assert result.reply.startswith("535")
    assert json.loads(result.challenge)["status"] == "401"


# --- the consumer helper, as a mail task uses it -------------------------------------------------


@pytest.mark.dovecot
def test_mail_task_reads_the_refreshed_token_without_restart(
    dovecot: Dovecot, authority: DevProviderAuthority, tmp_path: Path
) -> None:
    first = authority.issue(ALICE)
    volume = mount(tmp_path, "alice-mailbox", first, ALICE)
    token = MountedToken("alice-mailbox", tmp_path)  # created once, like a long-running task

    def task_connects() -> bool:
        return imap_login(dovecot.host, dovecot.imap_port, token.xoauth2()).ok

    assert task_connects()
    # The operator refreshes: a new token in the Secret, the kubelet swaps the files, and the
    # old token stops working at the server.
    second = authority.issue(ALICE)
    volume.update(
        consumer_files(access_token=second, username=ALICE, expires_at=datetime.now(UTC) + timedelta(hours=1))
    )
    authority.revoke(first)
    assert token.access_token() == second
    assert task_connects()


# --- check-mail ---------------------------------------------------------------------------------


def run_check(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = checkmail.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def endpoint(dovecot: Dovecot, protocol: str) -> list[str]:
    port = {"imap": dovecot.imap_port, "pop3": dovecot.pop3_port, "smtp": dovecot.submission_port}[protocol]
    return [f"--{protocol}", f"{dovecot.host}:{port}"]


@pytest.mark.dovecot
@pytest.mark.parametrize("protocol", ["imap", "pop3", "smtp"])
def test_check_mail_reports_success(
    dovecot: Dovecot, authority: DevProviderAuthority, tmp_path: Path, capsys: pytest.CaptureFixture[str], protocol: str
) -> None:
    token = authority.issue(ALICE)
    mount(tmp_path, "alice-mailbox", token, ALICE)
    code, output = run_check(
        capsys, "--token", "alice-mailbox", "--mount-root", str(tmp_path), *endpoint(dovecot, protocol)
    )
    assert code == 0, output
    assert output.startswith("OK: ")
    assert f"login as {ALICE}" in output
    assert "succeeded" in output
    assert token not in output


@pytest.mark.dovecot
def test_check_mail_oauthbearer(
    dovecot: Dovecot, authority: DevProviderAuthority, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mount(tmp_path, "alice-mailbox", authority.issue(ALICE), ALICE)
    argv = ["--token", "alice-mailbox", "--mount-root", str(tmp_path), "--sasl", "oauthbearer"]
    code, output = run_check(capsys, *argv, *endpoint(dovecot, "imap"))
    assert code == 0, output


@pytest.mark.dovecot
@pytest.mark.parametrize("case", ["wrong", "other-user", "revoked"])
@pytest.mark.parametrize("protocol", ["imap", "pop3", "smtp"])
def test_check_mail_reports_refusal_in_plain_words(
    dovecot: Dovecot,
    authority: DevProviderAuthority,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    protocol: str,
    case: str,
) -> None:
    if case == "wrong":
        token = "at-" + secrets.token_urlsafe(32)
    elif case == "other-user":
        token = authority.issue(BOB)
    else:
        token = authority.issue(ALICE)
        authority.revoke(token)
    mount(tmp_path, "alice-mailbox", token, ALICE)
    code, output = run_check(
        capsys,
        "--token",
        "alice-mailbox",
        "--mount-root",
        str(tmp_path),
        "--source-address",
        dovecot.source_address(),
        *endpoint(dovecot, protocol),
    )
    assert code == 1, output
    assert output.startswith("FAILED: ")
    assert "was refused" in output
    assert "server said: " in output and "Authentication failed" in output
    assert "error details: status 401, schemes bearer, scope mail" in output
    assert "what it means: the server rejected the access token" in output
    assert token not in output
    assert base64.b64encode(f"user={ALICE}\x01auth=Bearer {token}\x01\x01".encode()).decode() not in output


@pytest.mark.dovecot
def test_check_mail_refuses_expired_token_before_connecting(
    dovecot: Dovecot, authority: DevProviderAuthority, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = authority.issue_expired(ALICE)
    mount(tmp_path, "alice-mailbox", token, ALICE, expires_in=timedelta(minutes=-1))
    requests_before = authority.introspections()
    code, output = run_check(
        capsys, "--token", "alice-mailbox", "--mount-root", str(tmp_path), *endpoint(dovecot, "imap")
    )
    assert code == 1, output
    assert "expired" in output
    assert "kubectl describe emailtoken alice-mailbox" in output
    assert token not in output
    assert authority.introspections() == requests_before  # no login was attempted


@pytest.mark.dovecot
def test_check_mail_from_properties_file(
    dovecot: Dovecot, authority: DevProviderAuthority, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mount(tmp_path, "alice-reader", authority.issue(ALICE), ALICE)
    mount(tmp_path, "alice-sender", authority.issue(ALICE), ALICE)
    props = tmp_path / "task.properties"
    props.write_text(
        "# legacy task\n"
        "MAILBOX_AUTH_TYPE = oauth2\n"
        "MAILBOX_EMAIL_TOKEN_NAME = alice-reader\n"
        "MAIL_AUTH_TYPE = OAUTH2\n"
        "MAIL_TOKEN_NAME = alice-sender\n"
    )
    root = ["--mount-root", str(tmp_path), "--properties", str(props)]
    code, output = run_check(capsys, *root, *endpoint(dovecot, "imap"))
    assert code == 0, output
    assert "'alice-reader'" in output and "MAILBOX_EMAIL_TOKEN_NAME" in output
    code, output = run_check(capsys, *root, *endpoint(dovecot, "smtp"))  # role defaults to sender for SMTP
    assert code == 0, output
    assert "'alice-sender'" in output
    code, output = run_check(capsys, *root, "--role", "sender", *endpoint(dovecot, "pop3"))
    assert code == 0, output
    assert "'alice-sender'" in output


def test_check_mail_explains_microsoft_smtp_auth_disabled(
    smtp_xoauth2_server: SmtpXoauth2Server,
    authority: DevProviderAuthority,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = smtp_xoauth2_server
    token = authority.issue(ALICE)
    mount(tmp_path, "alice-mailbox", token, ALICE)
    argv = ["--token", "alice-mailbox", "--mount-root", str(tmp_path), "--smtp", f"{server.host}:{server.port}"]
    code, output = run_check(capsys, *argv)
    assert code == 0, output
    reply = (
        "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. "
        "Visit https://aka.ms/smtp_auth_disabled for more information."
    )
    with server.refusing_with(reply):
        code, output = run_check(capsys, *argv)
    assert code == 1, output
    assert "what it means: SMTP AUTH is disabled for this tenant or mailbox" in output
    assert token not in output


def test_check_mail_aiosmtpd_refusal_decodes_google_style_challenge(
    smtp_xoauth2_server: SmtpXoauth2Server,
    authority: DevProviderAuthority,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = smtp_xoauth2_server
    token = authority.issue(BOB)
    mount(tmp_path, "alice-mailbox", token, ALICE)
    argv = ["--token", "alice-mailbox", "--mount-root", str(tmp_path), "--smtp", f"{server.host}:{server.port}"]
    code, output = run_check(capsys, *argv)
    assert code == 1, output
    assert "server said: 535 5.7.8 Username and Password not accepted" in output
    assert "error details: status 401, schemes Bearer, scope https://mail.google.com/" in output
    assert "what it means: the server rejected the token or the user name" in output
    assert token not in output


def _subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "operator"), str(REPO), env.get("PYTHONPATH", "")])
    return env


@pytest.mark.dovecot
def test_check_mail_as_a_process_like_a_job(dovecot: Dovecot, authority: DevProviderAuthority, tmp_path: Path) -> None:
    """The exit code is what a Job or init container sees; the token never reaches the log."""
    good = authority.issue(ALICE)
    mount(tmp_path, "good", good, ALICE)
    bad = "at-" + secrets.token_urlsafe(32)
    mount(tmp_path, "bad", bad, ALICE)
    base = [sys.executable, "-m", "emailtoken.checkmail", "--imap", f"{dovecot.host}:{dovecot.imap_port}"]
    env = {**_subprocess_env(), "EMAILTOKEN_MOUNT_ROOT": str(tmp_path)}
    ok = subprocess.run([*base, "--token", "good"], capture_output=True, text=True, env=env, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    refused = subprocess.run(
        [*base, "--token", "bad", "--source-address", dovecot.source_address()],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "FAILED" in refused.stdout
    for output in (ok.stdout + ok.stderr, refused.stdout + refused.stderr):
        assert good not in output and bad not in output
    # the task's environment variables name the token when no flag does
    by_env = subprocess.run(
        base,
        capture_output=True,
        text=True,
        env={**env, "MAILBOX_AUTH_TYPE": "OAUTH2", "MAILBOX_EMAIL_TOKEN_NAME": "good"},
        timeout=60,
    )
    assert by_env.returncode == 0, by_env.stdout + by_env.stderr
    unconfigured = subprocess.run(base, capture_output=True, text=True, env=env, timeout=60)
    assert unconfigured.returncode == 2
    assert "password" in unconfigured.stderr


@pytest.mark.dovecot
def test_dovecot_factory_serves_another_provider(dovecot_factory, tmp_path: Path) -> None:
    """What an operator-driven test does: its own provider, its own Dovecot, a projected Secret."""
    from emailtoken_dev.devprovider import DevProviderThread

    with DevProviderThread() as provider:
        server = dovecot_factory(provider.introspection_url)
        token = DevProviderAuthority(provider).issue(BOB)
        volume = SecretVolume(tmp_path / "bob-mailbox")
        expires = datetime.now(UTC) + timedelta(hours=1)
        volume.update(consumer_files(access_token=token, username=BOB, expires_at=expires))
        mounted = MountedToken("bob-mailbox", tmp_path)
        assert imap_login(server.host, server.imap_port, mounted.xoauth2()).ok
        server.stop()

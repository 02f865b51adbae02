"""check-mail's parsing and plain-words explanations (the real logins are in tests/integration)."""

from __future__ import annotations

import argparse
import base64
import json
import socket
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from emailtoken import checkmail
from emailtoken.checkmail import Endpoint, decode_challenge, explain, parse_endpoint
from emailtoken.consumer import AccessToken
from tests.support.ports import free_port
from tests.support.secretvolume import SecretVolume, consumer_files

TOKEN = "ya29.a0-secret-token-value-that-must-never-be-printed"


@pytest.mark.parametrize(
    ("text", "protocol", "security", "expected"),
    [
        ("imap.example.com", "imap", "ssl", ("imap.example.com", 993)),
        ("imap.example.com", "imap", "plain", ("imap.example.com", 143)),
        ("imap.example.com:1143", "imap", "starttls", ("imap.example.com", 1143)),
        ("outlook.office365.com", "pop3", "ssl", ("outlook.office365.com", 995)),
        ("smtp.office365.com", "smtp", "starttls", ("smtp.office365.com", 587)),
        ("smtp.gmail.com", "smtp", "ssl", ("smtp.gmail.com", 465)),
        ("[::1]:2525", "smtp", "plain", ("::1", 2525)),
        ("[::1]", "smtp", "plain", ("::1", 25)),
    ],
)
def test_parse_endpoint(text: str, protocol: str, security: str, expected: tuple[str, int]) -> None:
    endpoint = parse_endpoint(text, protocol, security)
    assert (endpoint.host, endpoint.port) == expected


@pytest.mark.parametrize("bad", ["", "host:", "host:0", "host:70000", "a:b:c", "[::1"])
def test_parse_endpoint_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_endpoint(bad, "imap")


def test_endpoint_str_brackets_ipv6() -> None:
    assert str(Endpoint("imap", "::1", 143)) == "[::1]:143"
    assert str(Endpoint("imap", "h", 143)) == "h:143"


def test_decode_challenge() -> None:
    body = {"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"}
    assert decode_challenge(base64.b64encode(json.dumps(body).encode())) == body
    assert decode_challenge(b"") == ""
    assert decode_challenge(base64.b64encode(b"plain words")) == "plain words"
    assert decode_challenge("not base64 !!") == "not base64 !!"


MICROSOFT_SMTP_DISABLED = (
    "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. "
    "Visit https://aka.ms/smtp_auth_disabled for more information. [DB8PR04CA0123.eurprd04.prod.outlook.com]"
)


@pytest.mark.parametrize(
    ("protocol", "reply", "challenge", "expected"),
    [
        ("smtp", MICROSOFT_SMTP_DISABLED, "", "SMTP AUTH is disabled for this tenant or mailbox"),
        ("smtp", "535 5.7.139 Authentication unsuccessful, SMTP AUTH disabled", "", "SMTP AUTH is disabled"),
        (
            "imap",
            "User is authenticated but not connected.",
            "",
            "the app lacks mailbox permission (Add-MailboxPermission for its service principal) or IMAP is disabled",
        ),
        ("pop3", "-ERR User is authenticated but not connected.", "", "or POP3 is disabled"),
        ("imap", "AUTHENTICATE failed.", "", "Microsoft rejected the token"),
        ("smtp", "535 5.7.3 Authentication unsuccessful [SN4PR0501CA0054.namprd05.prod.outlook.com]", "", "SMTP.Send"),
        ("pop3", "-ERR Authentication failure: unknown user name or bad password.", "", "POP.AccessAsApp"),
        ("imap", "[AUTHENTICATIONFAILED] Invalid credentials (Failure)", "", "another account"),
        ("smtp", "535-5.7.8 Username and Password not accepted. BadCredentials", "", "another account"),
        ("imap", "[ALERT] IMAP access is disabled for your domain.", "", "IMAP access is disabled"),
        ("imap", "NO token expired", "", "has expired"),
        ("imap", "[AUTHENTICATIONFAILED] Authentication failed.", {"status": "401", "scope": "mail"}, "scope 'mail'"),
        ("imap", "[AUTHENTICATIONFAILED] Authentication failed.", {"status": "403"}, "lacks the scope"),
        ("imap", "[AUTHENTICATIONFAILED] Authentication failed.", {"status": "400"}, "malformed SASL"),
        ("imap", "NO something else", "", "the server refused the login"),
        ("imap", "[UNAVAILABLE] Temporary authentication failure. [vm:2026-11-29]", "", "try again later"),
        ("smtp", "454 4.7.0 Temporary authentication failure", "", "try again later"),
        ("smtp", "535 5.7.8 Authentication failed", "SmtpClientAuthentication is disabled", "SMTP AUTH is disabled"),
    ],
)
def test_explain_in_plain_words(protocol: str, reply: str, challenge: dict | str, expected: str) -> None:
    assert expected in explain(protocol, reply, challenge)


def test_user_not_connected_wording_matches_brief() -> None:
    meaning = explain("imap", "BAD User is authenticated but not connected.")
    assert "the app lacks mailbox permission" in meaning
    assert "Add-MailboxPermission" in meaning
    assert "IMAP is disabled" in meaning


def mounted(tmp_path: Path, name: str = "t", expires_in: timedelta = timedelta(hours=1)) -> Path:
    SecretVolume(tmp_path / name).update(
        consumer_files(access_token=TOKEN, username="u@example.com", expires_at=datetime.now(UTC) + expires_in)
    )
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = checkmail.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run(capsys, "--token", "t")[0] == 2  # no server
    assert run(capsys, "--token", "t", "--imap", "h", "--pop3", "h")[0] == 2
    assert run(capsys, "--token", "t", "--properties", "p", "--imap", "h")[0] == 2
    assert run(capsys, "--token", "t", "--imap", "h", "--ssl", "--starttls")[0] == 2
    code, _, err = run(capsys, "--token", "t", "--imap", "h:99999", "--mount-root", str(mounted(tmp_path)))
    assert code == 2 and "out of range" in err
    code, _, err = run(capsys, "--token", "t", "--imap", "h", "--timeout", "0", "--mount-root", str(tmp_path))
    assert code == 2 and "--timeout" in err
    assert run(capsys, "--help")[0] == 0


def test_config_errors_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("MAILBOX_AUTH_TYPE", "MAILBOX_EMAIL_TOKEN_NAME", "MAIL_AUTH_TYPE", "MAIL_TOKEN_NAME"):
        monkeypatch.delenv(key, raising=False)
    props = tmp_path / "task.properties"
    props.write_text("MAILBOX_AUTH_TYPE = KERBEROS\n")
    code, _, err = run(capsys, "--properties", str(props), "--imap", "127.0.0.1:1")
    assert code == 2 and "PASSWORD | OAUTH2" in err
    props.write_text("MAILBOX_AUTH_TYPE = OAUTH2\n")
    code, _, err = run(capsys, "--properties", str(props), "--imap", "127.0.0.1:1")
    assert code == 2 and "MAILBOX_EMAIL_TOKEN_NAME is not set" in err
    props.write_text("# MAIL_AUTH_TYPE = OAUTH2\n")
    code, _, err = run(capsys, "--properties", str(props), "--smtp", "127.0.0.1:1")
    assert code == 2 and "logs in with a password" in err and "MAIL_AUTH_TYPE" in err
    code, _, err = run(capsys, "--token", "missing", "--mount-root", str(tmp_path), "--imap", "127.0.0.1:1")
    assert code == 2 and "not found" in err
    code, _, err = run(capsys, "--token", "../etc", "--mount-root", str(tmp_path), "--imap", "127.0.0.1:1")
    assert code == 2 and "not a token name" in err
    code, _, err = run(
        capsys, "--token", "t", "--mount-root", str(mounted(tmp_path)), "--imap", "h", "--ca-file", "/nope"
    )
    assert code == 2 and "--ca-file" in err


def test_expired_token_exits_1_without_connecting(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    root = mounted(tmp_path, expires_in=timedelta(minutes=-2))
    code, out, err = run(capsys, "--token", "t", "--mount-root", str(root), "--imap", "127.0.0.1:1")
    assert code == 1
    assert out.startswith("FAILED: ") and "expired" in out
    assert TOKEN not in out + err


def test_connection_refused_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    root = mounted(tmp_path)
    port = free_port()
    for proto in ("--imap", "--pop3", "--smtp"):
        code, out, err = run(capsys, "--token", "t", "--mount-root", str(root), proto, f"127.0.0.1:{port}")
        assert code == 1
        assert "could not connect" in out and "connection refused" in out
        assert TOKEN not in out + err


def test_plain_to_remote_host_warns(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    root = mounted(tmp_path)
    # 192.0.2.0/24 is TEST-NET-1: nothing answers; a short timeout keeps the test fast
    code, out, err = run(
        capsys, "--token", "t", "--mount-root", str(root), "--imap", "192.0.2.1:143", "--timeout", "0.2"
    )
    assert code == 1
    assert "unencrypted" in err
    assert TOKEN not in out + err


def test_register_wires_a_subcommand() -> None:
    parser = argparse.ArgumentParser(prog="emailtoken")
    sub = parser.add_subparsers(dest="command", required=True)
    checkmail.register(sub)
    args = parser.parse_args(["check-mail", "--token", "t", "--smtp", "smtp.office365.com:587", "--starttls"])
    assert args.func is checkmail.run
    assert (args.token, args.smtp, args.starttls, args.ssl, args.sasl, args.timeout) == (
        "t",
        "smtp.office365.com:587",
        True,
        False,
        "xoauth2",
        30.0,
    )


def _hostile_pop3(reply: bytes) -> tuple[int, threading.Thread]:
    """A loopback POP3 server that refuses every XOAUTH2 login with ``reply``."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn, listener, conn.makefile("rb") as lines:
            conn.sendall(b"+OK ready\r\n")
            for line in lines:
                if line.startswith(b"CAPA"):
                    conn.sendall(b"+OK\r\nSASL XOAUTH2\r\n.\r\n")
                elif line.startswith(b"AUTH"):
                    conn.sendall(b"+ \r\n")
                elif line.startswith(b"QUIT"):
                    conn.sendall(b"+OK\r\n")
                    return
                else:
                    conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


def test_a_servers_reply_reaches_status_without_control_characters_and_capped() -> None:
    """The reply lands in the token's status and Events: a server must not smuggle terminal escapes into them."""
    evil = b"-ERR \x1b]0;pwned\x07\x1b[2J\x9b31m Authentication failed " + b"A" * 2000 + b"\r\n"
    port, thread = _hostile_pop3(evil)
    token = AccessToken("t", "tok", "box@contoso.com", datetime.now(UTC) + timedelta(hours=1))
    outcome = checkmail.check_login(Endpoint("pop3", "127.0.0.1", port, "plain"), token, timeout=5)
    thread.join(5)
    assert not outcome.ok
    assert outcome.server_reply.startswith("-ERR ")
    assert "Authentication failed" in outcome.server_reply
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in outcome.server_reply + outcome.challenge)
    assert len(outcome.server_reply) <= checkmail.SERVER_TEXT_LIMIT


def test_a_refusal_s_diagnosis_never_quotes_the_token() -> None:
    """The diagnosis quotes the challenge's scope; a server echoing the token there must not put it
    into the outcome (MailLogin status and Events via the login probe)."""
    token = "ya29.SECRET-ACCESS-TOKEN-VALUE"
    challenge = base64.b64encode(json.dumps({"status": "403", "scope": token}).encode())
    refused = checkmail._Refused("login", "NO AUTHENTICATE failed", challenge)
    outcome = checkmail._refused(refused, checkmail.mailanswers.Context("imap", "box@contoso.com"), (token,))
    text = " ".join([outcome.server_reply, outcome.challenge, *outcome.details, *outcome.fixes])
    assert "scope" in text and token not in text

"""emailtoken.loginprobe: a probe's outcome becomes the MailLogin condition, its cause and fix; one Event per change."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from emailtoken.checkmail import LoginOutcome
from emailtoken.conditions import Condition
from emailtoken.loginprobe import MAIL_LOGIN, Probes, advise, condition_of, describe, target
from emailtoken.mailhosts import from_args, parse_entry
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


# -- who may be reached, and for how long (emailtoken.mailhosts, Probes) --------------------------

EXPIRES = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A loopback port that completes TCP handshakes (the kernel's backlog) and never says a word."""
    with socket.create_server(("127.0.0.1", 0), backlog=8) as sock:
        sock.setblocking(False)
        yield sock


def _connections(sock: socket.socket) -> int:
    count = 0
    with contextlib.suppress(BlockingIOError):
        while True:
            sock.accept()[0].close()
            count += 1
    return count


@pytest.mark.parametrize("server", ["169.254.169.254:80", "kubernetes.default.svc:443", "127.0.0.1:8080", "[::1]"])
def test_target_refuses_hosts_the_installer_did_not_allow(server: str) -> None:
    cond = target(LoginProbe("imap", server, "ssl"), from_args(()))
    assert isinstance(cond, Condition)
    assert (cond.status, cond.reason) == (False, "MailHostNotAllowed")
    assert "--allow-mail-host" in cond.message and "mail.allowedHosts" in cond.message


async def test_a_refused_host_gets_no_connection(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    probe = LoginProbe("smtp", f"127.0.0.1:{port}", "plain")
    cond = await Probes(from_args(())).login(probe, "tok", "box@contoso.com", "", EXPIRES)
    assert (cond.status, cond.reason) == (False, "MailHostNotAllowed")
    assert f"127.0.0.1:{port}" in cond.message
    assert _connections(listener) == 0


async def test_a_silent_server_holds_a_step_for_the_deadline_only_and_a_few_probes_at_most(
    listener: socket.socket,
) -> None:
    port = listener.getsockname()[1]
    probes = Probes([parse_entry(f"127.0.0.1:{port}")], limit=1, deadline=0.3)
    probe = LoginProbe("smtp", f"127.0.0.1:{port}", "plain")
    started = time.monotonic()
    first = asyncio.create_task(probes.login(probe, "tok", "box@contoso.com", "", EXPIRES, namespace="a"))
    await asyncio.wait_for(_until(lambda: probes.running == 1), 5)
    busy = await probes.login(probe, "tok", "box@contoso.com", "", EXPIRES, namespace="b")
    assert (busy.status, busy.reason) == (None, "ProbeBusy")
    assert advise(True, busy, {})[1] == [("Warning", "MailLoginNotTried", f"ProbeBusy: {busy.message}")]
    cond = await first
    assert (cond.status, cond.reason) == (False, "MailServerTimeout") and "0.3s" in cond.message
    assert time.monotonic() - started < 3
    assert _connections(listener) == 1, "the second probe was not started"
    # The waiter cut the connection: the thread ends now, not after its 10 s read timeout.
    await asyncio.wait_for(_until(lambda: probes.running == 0), 2)


@pytest.fixture
def dripping() -> Iterator[tuple[int, list[str]]]:
    """A loopback SMTP server that never finishes its greeting: one byte every 50 ms, each read
    well inside the probe's per-read timeout. Yields its port and what became of the connection."""
    fate: list[str] = []
    stop = threading.Event()
    with socket.create_server(("127.0.0.1", 0)) as server:

        def drip() -> None:
            conn, _ = server.accept()
            with conn:
                conn.sendall(b"220-")
                while not stop.wait(0.05):
                    try:
                        conn.sendall(b"x")
                    except OSError:
                        fate.append("cut")
                        return

        thread = threading.Thread(target=drip, daemon=True)
        thread.start()
        yield server.getsockname()[1], fate
        stop.set()
        thread.join(5)


async def test_a_server_dripping_bytes_loses_its_thread_at_the_deadline(dripping: tuple[int, list[str]]) -> None:
    port, fate = dripping
    probes = Probes([parse_entry(f"127.0.0.1:{port}")], deadline=0.3)
    probe = LoginProbe("smtp", f"127.0.0.1:{port}", "plain")
    cond = await probes.login(probe, "tok", "box@contoso.com", "", EXPIRES, namespace="a")
    assert (cond.status, cond.reason) == (False, "MailServerTimeout")
    await asyncio.wait_for(_until(lambda: probes.running == 0), 2)
    await asyncio.wait_for(_until(lambda: fate == ["cut"]), 2)


async def test_one_namespace_cannot_take_every_probe_slot(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    probes = Probes([parse_entry(f"127.0.0.1:{port}")], limit=4, per_namespace=1, deadline=0.5)
    probe = LoginProbe("smtp", f"127.0.0.1:{port}", "plain")
    login = functools.partial(probes.login, probe, "tok", "box@contoso.com", "", EXPIRES)
    first = asyncio.create_task(login(namespace="tenant-a"))
    await asyncio.wait_for(_until(lambda: probes.running == 1), 5)
    again = await login(namespace="tenant-a")
    assert (again.status, again.reason) == (None, "ProbeBusy") and "in this namespace" in again.message
    other = asyncio.create_task(login(namespace="tenant-b"))
    await asyncio.wait_for(_until(lambda: probes.running == 2), 5)
    assert [(c.reason) for c in await asyncio.gather(first, other)] == ["MailServerTimeout"] * 2
    assert _connections(listener) == 2, "tenant-b's probe ran while tenant-a's was in flight"
    await asyncio.wait_for(_until(lambda: probes.running == 0), 2)
    assert not probes.running_in


async def _until(check: Callable[[], bool]) -> None:
    while not check():
        await asyncio.sleep(0.02)


def test_the_user_name_reaches_the_condition_without_control_characters() -> None:
    """spec.emailAddress is the tenant's text (its CRD pattern only excludes whitespace and @)."""
    probe = LoginProbe("smtp", "smtp.office365.com:587", "starttls")
    endpoint = target(probe, from_args(()))
    assert not isinstance(endpoint, Condition)
    assert "\x1b" not in describe(probe, endpoint, "a\x1b]0;x\x07@contoso.com")

"""emailtoken.mailhosts: spec.loginProbe reaches only the installer's mail hosts (mail ports unless a port is named)."""

from __future__ import annotations

import pytest

from emailtoken.cli import build_parser, config_from_args
from emailtoken.mailhosts import DEFAULT_ALLOWED_HOSTS, MailHost, allowed, from_args, parse_entry, refusal

DEFAULTS = from_args(())


@pytest.mark.parametrize("host", DEFAULT_ALLOWED_HOSTS)
@pytest.mark.parametrize("port", [25, 110, 143, 465, 587, 993, 995])
def test_microsoft_365_and_gmail_mail_hosts_are_allowed_on_mail_ports(host: str, port: int) -> None:
    assert allowed(host, port, DEFAULTS)
    assert allowed(host.upper(), port, DEFAULTS), "host names compare case-insensitively"


@pytest.mark.parametrize(
    ("host", "port"),
    [
        ("169.254.169.254", 80),  # cloud metadata
        ("169.254.169.254", 993),
        ("127.0.0.1", 8080),  # the operator pod's own health and metrics ports
        ("127.0.0.1", 25),
        ("localhost", 587),
        ("::1", 993),
        ("kubernetes.default.svc", 443),
        ("10.0.0.1", 993),
        ("outlook.office365.com", 22),  # an allowed host, but not a mail port
        ("outlook.office365.com", 443),
        ("evil.outlook.office365.com", 993),  # a plain entry is no wildcard
        ("outlook.office365.com.evil.example", 993),
        ("outlook.office365.com.", 993),  # written another way: refused, not resolved
        ("", 993),
    ],
)
def test_everything_else_is_refused_by_default(host: str, port: int) -> None:
    assert not allowed(host, port, DEFAULTS)


def test_an_installer_entry_with_a_port_allows_exactly_that_port() -> None:
    hosts = from_args([parse_entry("127.0.0.1:2525")])
    assert allowed("127.0.0.1", 2525, hosts)
    assert not allowed("127.0.0.1", 2526, hosts) and not allowed("127.0.0.1", 25, hosts)
    assert not allowed("127.0.0.2", 2525, hosts) and not allowed("localhost", 2525, hosts)


def test_wildcards_cover_subdomains_only_and_ipv6_compares_canonically() -> None:
    hosts = [parse_entry("*.Mail.Example.com"), parse_entry("[::1]:1143"), parse_entry("dovecot.mail.svc")]
    assert allowed("imap.mail.example.com", 993, hosts)
    assert not allowed("mail.example.com", 993, hosts) and not allowed("xmail.example.com", 993, hosts)
    assert allowed("0:0:0:0:0:0:0:1", 1143, hosts) and not allowed("::1", 993, hosts)
    assert allowed("dovecot.mail.svc", 143, hosts) and not allowed("dovecot.mail.svc", 6379, hosts)
    assert parse_entry("[::1]:1143") == MailHost("::1", 1143)


@pytest.mark.parametrize("text", ["", "host:0", "host:70000", "host:port", "a b", "http://x", "[not-v6]:25", "*.*.x"])
def test_bad_entries_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_entry(text)


def test_the_refusal_names_the_host_the_flag_and_the_chart_value() -> None:
    assert refusal("169.254.169.254", 80) == (
        "the mail server 169.254.169.254:80 is not allowed by this operator's installation, so no connection "
        "was made; an administrator can allow it with --allow-mail-host 169.254.169.254:80 (Helm: mail.allowedHosts)"
    )
    assert "--allow-mail-host [::1] (Helm" in refusal("::1", 993)


def test_run_takes_the_flag_and_rejects_a_bad_entry(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["run", "--allow-mail-host", "127.0.0.1:2525", "--allow-mail-host", "imap.x.org"])
    hosts = config_from_args(args).allowed_mail_hosts
    assert hosts[-2:] == (MailHost("127.0.0.1", 2525), MailHost("imap.x.org"))
    assert hosts[: len(DEFAULT_ALLOWED_HOSTS)] == DEFAULTS
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--allow-mail-host", "host:port"])
    assert "--allow-mail-host" in capsys.readouterr().err

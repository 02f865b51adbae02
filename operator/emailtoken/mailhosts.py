"""Which mail servers ``spec.loginProbe`` may reach: the installer decides, not the token's author.

Whoever may write an EmailToken chooses ``spec.loginProbe.server``, and the operator would
connect there from its own network position, hand over a live access token and copy the
server's reply into status. Unchecked, that is a port scanner into the cluster (services, the
cloud metadata address, the operator pod's own loopback ports) and a way to send a token
anywhere. So a probe connects only to a host on the operator's list, before anything is
resolved or connected: Microsoft 365's and Gmail's IMAP, POP and SMTP hosts by default, more
only when the installer adds them (``--allow-mail-host``, Helm value ``mail.allowedHosts``).

An entry ``HOST`` (or ``*.domain``) allows the standard mail ports only (25, 110, 143, 465,
587, 993, 995); ``HOST:PORT`` (``[v6]:PORT``) allows exactly that port. Hosts are compared as
written (lower case; IP addresses in canonical form): nothing is resolved, so a name that is
not listed is refused even when it points at a listed address.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

#: Microsoft 365 (worldwide) and Gmail; other clouds' mail hosts are the installer's to add.
DEFAULT_ALLOWED_HOSTS: tuple[str, ...] = (
    "outlook.office365.com",
    "smtp.office365.com",
    "imap.gmail.com",
    "pop.gmail.com",
    "smtp.gmail.com",
)
#: SMTP (25, 587, 465), POP3 (110, 995) and IMAP (143, 993), plain/STARTTLS and implicit TLS.
MAIL_PORTS: frozenset[int] = frozenset({25, 110, 143, 465, 587, 993, 995})
FLAG = "--allow-mail-host"
HELM_VALUE = "mail.allowedHosts"
_ENTRY = re.compile(r"\[([^\]]+)\](?::(\d+))?|(\*\.)?([A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?)(?::(\d+))?")


@dataclass(frozen=True)
class MailHost:
    """One allowed entry: a host (or ``*.domain`` suffix) and its port (None: the mail ports)."""

    host: str
    port: int | None = None
    subdomains: bool = False

    def admits(self, host: str, port: int) -> bool:
        """True when ``host:port`` is covered by this entry."""
        if (port not in MAIL_PORTS) if self.port is None else port != self.port:
            return False
        if self.subdomains:
            return host.endswith("." + self.host)
        return host == self.host


def canonical(host: str) -> str:
    """A host as entries are compared: lower case, an IP address in its canonical form."""
    host = host.strip().lower()
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def parse_entry(text: str) -> MailHost:
    """``HOST``, ``HOST:PORT``, ``*.domain[:PORT]``, ``[v6]`` or ``[v6]:PORT``; ValueError otherwise."""
    match = _ENTRY.fullmatch(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not HOST, HOST:PORT, *.DOMAIN or [IPv6]:PORT")
    v6, wildcard, name = match.group(1), match.group(3), match.group(4)
    port_text = match.group(2) or match.group(6)
    port = int(port_text) if port_text else None
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"{text!r}: port {port} is out of range")
    if v6 is not None:
        try:
            ipaddress.IPv6Address(v6)
        except ValueError:
            raise ValueError(f"{text!r}: {v6!r} is not an IPv6 address") from None
    return MailHost(canonical(v6 or name), port, subdomains=bool(wildcard))


def allowed(host: str, port: int, entries: Iterable[MailHost]) -> bool:
    """True when an entry covers ``host:port`` (pure: nothing is resolved)."""
    host = canonical(host)
    return bool(host) and any(entry.admits(host, port) for entry in entries)


def refusal(host: str, port: int) -> str:
    """The message a token gets for a probe server that is not allowed (nothing was connected)."""
    shown = f"[{host}]" if ":" in host else host
    return (
        f"the mail server {shown}:{port} is not allowed by this operator's installation, so no connection "
        f"was made; an administrator can allow it with {FLAG} {shown}"
        f"{'' if port in MAIL_PORTS else f':{port}'} (Helm: {HELM_VALUE})"
    )


def _entry_arg(text: str) -> MailHost:
    try:
        return parse_entry(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_argument(parser: argparse.ArgumentParser) -> None:
    """``emailtoken run``'s flag (the check-mail CLI, run by a person, connects anywhere)."""
    parser.add_argument(
        FLAG,
        metavar="HOST[:PORT]",
        action="append",
        type=_entry_arg,
        default=[],
        dest="allow_mail_hosts",
        help="also let spec.loginProbe connect to this mail host (repeatable; '*.domain' for subdomains; "
        "without :PORT the standard mail ports 25, 110, 143, 465, 587, 993, 995); always allowed: "
        f"{', '.join(DEFAULT_ALLOWED_HOSTS)}",
    )


def from_args(extra: Iterable[MailHost]) -> tuple[MailHost, ...]:
    """The defaults plus the installer's additions."""
    return (*(MailHost(h) for h in DEFAULT_ALLOWED_HOSTS), *extra)

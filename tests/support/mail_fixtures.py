"""Pytest fixtures around :mod:`tests.support.mailservers` (real Dovecot and aiosmtpd).

Use them from a conftest::

    from tests.support.mail_fixtures import *  # noqa: F403

The servers check tokens against ``mail_token_authority``: anything with
``introspection_url`` (``http(s)://user:pass@host:port/path``, RFC 7662, answering
``{"active": true, "email": ...}``) and ``ca_file`` (PEM trusted for an https URL, or
None). The default is a :class:`DevProviderAuthority` over a fresh
``emailtoken_dev.devprovider.DevProviderThread``. To share a session-scoped provider with the
operator, override it::

    @pytest.fixture(scope="session")
    def mail_token_authority(devprovider):   # your DevProviderThread fixture
        return DevProviderAuthority(devprovider)

For a module-scoped provider, start a Dovecot of that scope instead:
``dovecot_factory(provider.introspection_url)``. Note that
``DevProviderAuthority.issue_expired`` moves the provider's clock 61 s forward.

Fixtures (session scope unless noted):

* ``mail_token_authority``: :class:`DevProviderAuthority` (``issue(email)``,
  ``issue_expired(email)``, ``revoke(token)``, ``introspections()``).
* ``dovecot_binary``: path of ``dovecot``; skips on a laptop without it, fails when CI=true.
* ``smtp_sink``: :class:`SmtpSink` catching what Dovecot submission relays.
* ``dovecot``: a started :class:`Dovecot` (IMAP, POP3, submission on loopback ports).
  Use ``dovecot.source_address()`` for every login that is expected to fail.
* ``dovecot_factory``: ``dovecot_factory(introspection_url, ca_file=None)`` starts another
  Dovecot (stopped at session end), for token sources of narrower scope.
* ``smtp_xoauth2_server``: a started :class:`SmtpXoauth2Server` checking tokens against
  the same introspection endpoint.
* ``mail_source_address`` (function): a fresh loopback source address for a failing login.

A test using ``dovecot`` that fails gets Dovecot's log lines written during the test
in its "Captured stdout teardown" section.
"""

from __future__ import annotations

import hashlib
import json
import ssl
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

import pytest

from tests.support.mailservers import (
    Dovecot,
    SmtpSink,
    SmtpXoauth2Server,
    SourceAddresses,
    introspection_validator,
)
from tests.support.system import need_binary

__all__ = [
    "DevProviderAuthority",
    "TokenAuthority",
    "_dovecot_log_on_failure",
    "dovecot",
    "dovecot_binary",
    "dovecot_factory",
    "mail_source_address",
    "mail_token_authority",
    "smtp_sink",
    "smtp_xoauth2_server",
]


@runtime_checkable
class TokenAuthority(Protocol):
    """What the mail servers need to know about whoever issues the tokens."""

    introspection_url: str
    ca_file: str | None


class DevProviderAuthority:
    """Real access tokens from ``emailtoken_dev.devprovider`` for any mailbox, checked by its introspection.

    Tokens come from the Microsoft client-credentials flow over HTTPS (an app registered per
    mailbox with ``mailboxes=[email]``), so introspection reports that mailbox as ``email``,
    which is what Dovecot compares with the SASL user. Introspection is served on the
    provider's plain-HTTP side port, so Dovecot needs no CA.
    """

    SCOPE = "https://outlook.office365.com/.default"

    def __init__(self, provider: Any, tenant: str = "mailtests") -> None:
        self.provider = provider
        self.tenant = tenant
        self.introspection_url: str = provider.introspection_url
        self.ca_file: str | None = None if self.introspection_url.startswith("http:") else provider.ca_pem_path
        self._tls = ssl.create_default_context(cafile=provider.ca_pem_path) if provider.ca_pem_path else None
        self._clients: set[str] = set()

    def issue(self, email: str) -> str:
        """A fresh access token for ``email`` (normal lifetime)."""
        client_id = "mailbox-" + hashlib.sha256(email.lower().encode()).hexdigest()[:16]
        secret = "secret-" + client_id
        if client_id not in self._clients:
            self.provider.add_client(client_id, secret, mailboxes=[email])
            self._clients.add(client_id)
        body = urllib.parse.urlencode(
            {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret, "scope": self.SCOPE}
        ).encode()
        request = urllib.request.Request(self.provider.microsoft_token_url(self.tenant), data=body, method="POST")
        with urllib.request.urlopen(request, timeout=10, context=self._tls) as answer:
            return str(json.load(answer)["access_token"])

    def issue_expired(self, email: str) -> str:
        """A token for ``email`` that has already expired at the provider.

        Issued with a 60 s lifetime, then the provider's clock moves 61 s on; tokens issued
        earlier with the default hour stay valid.
        """
        lifetime = self.provider.token_lifetime
        self.provider.token_lifetime = 60
        try:
            token = self.issue(email)
        finally:
            self.provider.token_lifetime = lifetime
        self.provider.advance_clock(61)
        return token

    def revoke(self, token: str) -> None:
        """Revoke one access token (what a refresh that invalidates the old token looks like)."""
        self.provider.state.revoke_token(token)

    def introspections(self) -> int:
        """How many introspection requests the provider has answered so far."""
        return int(self.provider.count("introspect"))


@pytest.fixture(scope="session")
def mail_token_authority() -> Iterator[DevProviderAuthority]:
    """Tokens from a local devprovider (override to share the operator's provider)."""
    from emailtoken_dev.devprovider import DevProviderThread

    with DevProviderThread() as provider:
        yield DevProviderAuthority(provider)


@pytest.fixture(scope="session")
def dovecot_binary() -> str:
    """The dovecot program (skip without it on a laptop; fail under CI)."""
    return need_binary("dovecot", "/usr/sbin/dovecot")


@pytest.fixture(scope="session")
def smtp_sink() -> Iterator[SmtpSink]:
    """Where Dovecot's submission service relays accepted mail."""
    with SmtpSink() as sink:
        yield sink


@pytest.fixture(scope="session")
def dovecot(dovecot_binary: str, mail_token_authority: Any, smtp_sink: SmtpSink) -> Iterator[Dovecot]:
    """A real Dovecot whose passdb oauth2 asks the authority's introspection endpoint."""
    server = Dovecot(
        mail_token_authority.introspection_url,
        ca_file=getattr(mail_token_authority, "ca_file", None),
        relay_port=smtp_sink.port,
        binary=dovecot_binary,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def dovecot_factory(dovecot_binary: str, smtp_sink: SmtpSink) -> Iterator[Callable[..., Dovecot]]:
    """Start extra Dovecots for other token sources: ``dovecot_factory(introspection_url, ca_file=None)``.

    For fixtures of a narrower scope (e.g. a module-scoped devprovider shared with the
    operator); every instance is stopped at the end of the session (or earlier with ``stop()``).
    """
    started: list[Dovecot] = []

    def start(introspection_url: str, ca_file: str | None = None) -> Dovecot:
        server = Dovecot(introspection_url, ca_file=ca_file, relay_port=smtp_sink.port, binary=dovecot_binary)
        started.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="session")
def smtp_xoauth2_server(mail_token_authority: Any) -> Iterator[SmtpXoauth2Server]:
    """An aiosmtpd server accepting XOAUTH2/OAUTHBEARER tokens the authority calls active."""
    validator = introspection_validator(
        mail_token_authority.introspection_url, ca_file=getattr(mail_token_authority, "ca_file", None)
    )
    with SmtpXoauth2Server(validator) as server:
        yield server


_SOURCES = SourceAddresses(start=2000)  # apart from the range Dovecot.source_address() uses


@pytest.fixture
def mail_source_address(request: pytest.FixtureRequest) -> str:
    """A loopback source address no other login used (Dovecot penalises IPs after failures)."""
    if "dovecot" in request.fixturenames:
        return request.getfixturevalue("dovecot").source_address()
    return _SOURCES.next()


@pytest.fixture(autouse=True)
def _dovecot_log_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print Dovecot's log of this test in teardown; pytest shows it only when the test fails."""
    if "dovecot" not in request.fixturenames:
        yield
        return
    server: Dovecot = request.getfixturevalue("dovecot")
    server.mark_log()
    yield
    text = server.log_since_mark()
    if text:
        print(f"--- dovecot log ({server.log_path}) ---\n{text}")

"""Real mail servers for tests: Dovecot (IMAP, POP3, submission) and an aiosmtpd XOAUTH2 server.

Both check bearer tokens the way production servers do: Dovecot through its ``passdb
oauth2`` driver calling an RFC 7662 introspection endpoint, the aiosmtpd server through
a validator callable (usually the same introspection endpoint). Nothing here depends on
pytest; ``tests/support/mail_fixtures.py`` wraps these classes as fixtures.

Dovecot facts this harness encodes (2.3, Debian):

* Run in the foreground as root with ``default_internal_user = dovecot``,
  ``default_login_user = dovenull`` and mail processes as ``nobody``: those users must
  read the config and the mail directory, so the work directory is a private
  ``mkdtemp`` under /tmp made world-traversable (pytest's ``tmp_path`` is 0700, and unix
  socket paths under ``base_dir`` must stay short). As a non-root user everything runs
  as that user, without chroot.
* ``auth_debug`` logs the token (``passdb out: OK ... token=...``); it stays off unless
  ``debug=True``. ``auth_verbose`` does not log tokens.
* Each failed login from an IP makes the next auth from that IP wait longer (2, 4, 8,
  15 s; ``login_trusted_networks`` does not help). Connect negative cases from distinct
  ``127.0.0.N`` addresses: :meth:`Dovecot.source_address` hands them out.
* Submission relays through ``submission_relay_host``; an :class:`SmtpSink` catches the mail.
* No auth cache is configured, so every login asks the introspection endpoint again.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import grp
import imaplib
import itertools
import json
import logging
import os
import poplib
import pwd
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from tests.support.ports import free_port


class _DropLoginDataWarning(logging.Filter):
    """aiosmtpd itself sets its deprecated Session.login_data on every successful AUTH."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Session.login_data is deprecated" not in record.getMessage()


logging.getLogger("mail.log").addFilter(_DropLoginDataWarning())

#: Validates a bearer token: returns the mailbox it is for, or None when it is not valid.
TokenValidator = Callable[[str], "str | None"]


class MailServerError(RuntimeError):
    """A test mail server could not start or misbehaved; the message carries its log."""


def port_open(host: str, port: int) -> bool:
    """True when a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class SourceAddresses:
    """Hands out distinct loopback source addresses (127.0.0.2 ... 127.0.255.254).

    Dovecot penalises an IP after failed logins; a fresh address per negative case keeps
    the tests fast and independent of their order.
    """

    def __init__(self, start: int = 2) -> None:
        self._counter = itertools.count(start)
        self._lock = threading.Lock()

    def next(self) -> str:
        """The next unused loopback address."""
        with self._lock:
            n = next(self._counter)
        high, low = divmod(n, 254)
        if high > 255:
            raise MailServerError("ran out of loopback source addresses")
        return f"127.0.{high}.{low + 1}"


# --- login helpers (independent of emailtoken.checkmail, so tests can cross-check it) ---------


def xoauth2(user: str, token: str) -> str:
    """SASL XOAUTH2 client response."""
    return f"user={user}\x01auth=Bearer {token}\x01\x01"


def oauthbearer(user: str, token: str, host: str, port: int) -> str:
    """RFC 7628 OAUTHBEARER client response."""
    return f"n,a={user},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01"


@dataclass
class LoginResult:
    """Outcome of a test login: whether it worked and what the server said (no token)."""

    ok: bool
    reply: str = ""
    challenge: str = ""  # decoded SASL error challenge, if any

    def __bool__(self) -> bool:
        return self.ok


def _source(source_address: str | None) -> tuple[str, int] | None:
    return (source_address, 0) if source_address else None


class _SourceIMAP(imaplib.IMAP4):
    def __init__(self, host: str, port: int, timeout: float, source_address: str | None) -> None:
        self._source_address = source_address
        super().__init__(host, port, timeout)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout, source_address=_source(self._source_address))


class _SourcePOP3(poplib.POP3):
    def __init__(self, host: str, port: int, timeout: float, source_address: str | None) -> None:
        self._source_address = source_address
        super().__init__(host, port, timeout)

    def _create_socket(self, timeout: float) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout, source_address=_source(self._source_address))


def _decode(data: bytes) -> str:
    try:
        return base64.b64decode(data, validate=True).decode("utf-8", "replace")
    except ValueError:
        return data.decode("utf-8", "replace")


def imap_login(
    host: str,
    port: int,
    response: str,
    *,
    mechanism: str = "XOAUTH2",
    source_address: str | None = None,
    timeout: float = 30,
    select: bool = True,
) -> LoginResult:
    """AUTHENTICATE over plain IMAP with a prepared SASL response; optionally SELECT INBOX."""
    conn = _SourceIMAP(host, port, timeout, source_address)
    challenges: list[bytes] = []

    def answer(data: bytes) -> bytes:
        if challenges or data:
            challenges.append(data)
            return b""
        challenges.append(b"")
        return response.encode()

    try:
        try:
            typ, data = conn.authenticate(mechanism, answer)
        except imaplib.IMAP4.error as error:
            challenge = next((c.decode("utf-8", "replace") for c in challenges if c), "")
            return LoginResult(False, str(error), challenge)
        reply = " ".join(d.decode() if isinstance(d, bytes) else str(d) for d in data)
        if select:
            typ, data = conn.select("INBOX")
            if typ != "OK":
                return LoginResult(False, f"SELECT: {data!r}")
        return LoginResult(True, reply)
    finally:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            conn.logout()


def pop3_login(
    host: str,
    port: int,
    response: str,
    *,
    mechanism: str = "XOAUTH2",
    source_address: str | None = None,
    timeout: float = 30,
) -> LoginResult:
    """``AUTH <mech> <initial response>`` over plain POP3, then STAT."""
    conn = _SourcePOP3(host, port, timeout, source_address)
    challenge = ""
    try:
        try:
            reply = conn._shortcmd(f"AUTH {mechanism} {base64.b64encode(response.encode()).decode()}")
            if not reply.startswith(b"+OK"):
                challenge = _decode(reply[1:].strip())
                conn._shortcmd("")
                return LoginResult(False, reply.decode(), challenge)
            conn.stat()
            return LoginResult(True, reply.decode())
        except poplib.error_proto as error:
            text = error.args[0].decode() if error.args and isinstance(error.args[0], bytes) else str(error)
            return LoginResult(False, text, challenge)
    finally:
        with contextlib.suppress(OSError, poplib.error_proto):
            conn.quit()


def smtp_login(
    host: str,
    port: int,
    response: str,
    *,
    mechanism: str = "XOAUTH2",
    source_address: str | None = None,
    timeout: float = 30,
    send_to: str | None = None,
) -> LoginResult:
    """EHLO + AUTH (initial response) over plain SMTP; optionally send a small message."""
    conn = smtplib.SMTP(host, port, local_hostname="localhost", timeout=timeout, source_address=_source(source_address))
    challenges: list[bytes] = []

    def answer(challenge: bytes | None = None) -> str:
        if challenge is None:
            return response
        challenges.append(challenge)
        return ""

    try:
        conn.ehlo()
        try:
            code, text = conn.auth(mechanism, answer, initial_response_ok=True)
        except smtplib.SMTPAuthenticationError as error:
            challenge = next((c.decode("utf-8", "replace") for c in challenges if c), "")
            return LoginResult(False, f"{error.smtp_code} {error.smtp_error.decode()}", challenge)
        if send_to:
            message = EmailMessage()
            message["From"] = send_to
            message["To"] = send_to
            message["Subject"] = "emailtoken test"
            message.set_content("sent with an XOAUTH2 login\n")
            conn.send_message(message)
        return LoginResult(True, f"{code} {text.decode()}")
    finally:
        with contextlib.suppress(OSError, smtplib.SMTPException):
            conn.quit()


# --- introspection client ------------------------------------------------------------------


def introspection_validator(url: str, *, ca_file: str | None = None, timeout: float = 10) -> TokenValidator:
    """A validator that asks an RFC 7662 endpoint (``http(s)://user:pass@host:port/path``).

    Returns the ``email`` of an active token, else None, like Dovecot's oauth2 passdb
    configured by :class:`Dovecot`.
    """
    parts = urllib.parse.urlsplit(url)
    clean = urllib.parse.urlunsplit(
        (parts.scheme, f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname or "", parts.path, "", "")
    )
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
    if parts.username:
        basic = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(basic.encode()).decode()
    context = None
    if parts.scheme == "https":
        import ssl

        context = ssl.create_default_context(cafile=ca_file)

    def validate(token: str) -> str | None:
        body = urllib.parse.urlencode({"token": token}).encode()
        request = urllib.request.Request(clean, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=timeout, context=context) as answer:
            data = json.loads(answer.read() or b"{}")
        if data.get("active") is True and data.get("email"):
            return str(data["email"])
        return None

    return validate


# --- SMTP servers (aiosmtpd) -----------------------------------------------------------------


@dataclass
class ReceivedMessage:
    """A message a test server accepted."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    login: str | None = None


class _SinkHandler:
    def __init__(self, messages: list[ReceivedMessage]) -> None:
        self.messages = messages

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        login = session.auth_data if isinstance(session.auth_data, str) else None
        self.messages.append(
            ReceivedMessage(
                mail_from=str(envelope.mail_from),
                rcpt_tos=list(envelope.rcpt_tos),
                data=bytes(envelope.original_content or envelope.content or b""),
                login=login,
            )
        )
        return "250 2.0.0 OK: queued"


class SmtpSink:
    """A plain SMTP server that accepts every message (Dovecot submission relays into it)."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.messages: list[ReceivedMessage] = []
        self._controller = Controller(_SinkHandler(self.messages), hostname=host, port=self.port)

    def start(self) -> SmtpSink:
        """Start listening (in a thread)."""
        self._controller.start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        self._controller.stop()

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Xoauth2Handler(_SinkHandler):
    def __init__(self, owner: SmtpXoauth2Server) -> None:
        super().__init__(owner.messages)
        self.owner = owner

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._bearer(server, args, "XOAUTH2")

    async def auth_OAUTHBEARER(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._bearer(server, args, "OAUTHBEARER")

    async def _bearer(self, server: SMTP, args: list[str], mechanism: str) -> AuthResult:
        if len(args) > 1:
            try:
                blob = base64.b64decode(args[1], validate=True)
            except ValueError:
                await server.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        else:
            answer = await server.challenge_auth(b"", encode_to_b64=False)
            if not isinstance(answer, bytes):
                return AuthResult(success=False, handled=True)
            blob = answer
        user, token = _parse_bearer(blob.decode("utf-8", "replace"), mechanism)
        owner = self.owner
        if owner.forced_reply:
            return AuthResult(success=False, handled=False, message=owner.forced_reply)
        email = None
        if user and token:
            loop = asyncio.get_running_loop()
            try:
                email = await loop.run_in_executor(None, owner.validator, token)
            except Exception:  # the validator's endpoint failed: refuse like a server would (4xx)
                await server.push("454 4.7.0 Temporary authentication failure")
                return AuthResult(success=False, handled=True)
        if email and user and email.lower() == user.lower():
            owner.logins.append(user)
            return AuthResult(success=True, auth_data=user)
        # Google's behaviour: an error challenge, the client's empty answer, then 535.
        error = {"status": "401", "schemes": "Bearer", "scope": owner.scope}
        await server.challenge_auth(json.dumps(error, separators=(",", ":")).encode(), encode_to_b64=True)
        owner.refusals += 1
        return AuthResult(success=False, handled=False, message=owner.failure_reply)


def _parse_bearer(text: str, mechanism: str) -> tuple[str | None, str | None]:
    user = token = None
    fields = text.split("\x01")
    if mechanism == "OAUTHBEARER" and fields:
        gs2 = fields[0].split(",")
        for item in gs2:
            if item.startswith("a="):
                user = item[2:].replace("=2C", ",").replace("=3D", "=")
        fields = fields[1:]
    for item in fields:
        if item.startswith("user="):
            user = item[5:]
        elif item.lower().startswith("auth=bearer "):
            token = item[12:]
    return user, token


class SmtpXoauth2Server:
    """aiosmtpd server offering only XOAUTH2 and OAUTHBEARER, over plain TCP (tests only).

    ``validator(token)`` returns the mailbox a token belongs to (or None); the login works
    when that equals the SASL user. Set :attr:`forced_reply` to make every AUTH fail with
    a given reply (e.g. Microsoft's ``535 5.7.139 ... SmtpClientAuthentication is
    disabled for the Tenant``) to test how clients explain it.
    """

    def __init__(
        self,
        validator: TokenValidator,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        scope: str = "https://mail.google.com/",
        failure_reply: str = "535 5.7.8 Username and Password not accepted",
    ) -> None:
        self.validator = validator
        self.host = host
        self.port = port or free_port(host)
        self.scope = scope
        self.failure_reply = failure_reply
        self.forced_reply: str | None = None
        self.messages: list[ReceivedMessage] = []
        self.logins: list[str] = []
        self.refusals = 0
        self._controller = Controller(
            _Xoauth2Handler(self),
            hostname=host,
            port=self.port,
            auth_require_tls=False,
            auth_exclude_mechanism=["PLAIN", "LOGIN"],
        )

    def start(self) -> SmtpXoauth2Server:
        """Start listening (in a thread)."""
        self._controller.start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        self._controller.stop()

    @contextlib.contextmanager
    def refusing_with(self, reply: str) -> Any:
        """Within the block, every AUTH gets ``reply`` (e.g. a Microsoft error)."""
        self.forced_reply = reply
        try:
            yield self
        finally:
            self.forced_reply = None

    def __enter__(self) -> SmtpXoauth2Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- Dovecot -----------------------------------------------------------------------------------


@dataclass
class _Identity:
    internal_user: str
    login_user: str
    mail_uid: int
    mail_gid: int
    chroot: bool
    internal_group: str | None = None  # non-root: the unix sockets' group must be our own


def _identity() -> _Identity:
    if os.geteuid() == 0:

        def existing(name: str, fallback: str) -> str:
            try:
                pwd.getpwnam(name)
                return name
            except KeyError:
                return fallback

        nobody = pwd.getpwnam("nobody")
        return _Identity(
            internal_user=existing("dovecot", "nobody"),
            login_user=existing("dovenull", "nobody"),
            mail_uid=nobody.pw_uid,
            mail_gid=nobody.pw_gid,
            chroot=True,
        )
    me = pwd.getpwuid(os.geteuid()).pw_name
    group = grp.getgrgid(os.getegid()).gr_name
    return _Identity(me, me, os.geteuid(), os.getegid(), chroot=False, internal_group=group)


@dataclass
class DovecotPorts:
    """Loopback ports of one Dovecot instance."""

    imap: int = field(default_factory=free_port)
    pop3: int = field(default_factory=free_port)
    submission: int = field(default_factory=free_port)


class Dovecot:
    """A real Dovecot on loopback: IMAP, POP3 and submission with ``passdb oauth2``.

    ``introspection_url`` is ``http(s)://user:pass@host:port/path`` of an RFC 7662 endpoint
    that answers ``{"active": true, "email": ...}``; ``ca_file`` trusts its HTTPS
    certificate. Submission relays to ``relay_port`` (an :class:`SmtpSink`).
    """

    def __init__(
        self,
        introspection_url: str,
        *,
        relay_port: int,
        binary: str = "dovecot",
        ca_file: str | None = None,
        host: str = "127.0.0.1",
        debug: bool = False,
        keep_workdir: bool = False,
    ) -> None:
        self.introspection_url = introspection_url
        self.relay_port = relay_port
        self.binary = binary
        self.ca_file = ca_file
        self._ca_in_workdir: str | None = None
        self.host = host
        self.debug = debug
        self.keep_workdir = keep_workdir
        self.ports = DovecotPorts()
        self.workdir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._sources = SourceAddresses()
        self._log_offset = 0

    # Convenience -----------------------------------------------------------------------------
    @property
    def imap_port(self) -> int:
        return self.ports.imap

    @property
    def pop3_port(self) -> int:
        return self.ports.pop3

    @property
    def submission_port(self) -> int:
        return self.ports.submission

    def source_address(self) -> str:
        """A loopback address no earlier login used: connect negative cases from it."""
        return self._sources.next()

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None, "Dovecot was not started"
        return self.workdir / "dovecot.log"

    def log_text(self) -> str:
        """Dovecot's log plus its stderr (never holds tokens unless ``debug=True``)."""
        if self.workdir is None:
            return ""
        parts = []
        for name in ("dovecot.log", "stderr.log"):
            path = self.workdir / name
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "".join(parts)

    def log_since_mark(self) -> str:
        """Log lines written since the last :meth:`mark_log` (for a failing test's report)."""
        try:
            return self.log_path.read_text(errors="replace")[self._log_offset :]
        except (OSError, AssertionError):
            return ""

    def mark_log(self) -> None:
        """Remember the log's current end."""
        try:
            self._log_offset = len(self.log_path.read_text(errors="replace"))
        except (OSError, AssertionError):
            self._log_offset = 0

    # Configuration ---------------------------------------------------------------------------
    def config(self) -> str:
        """The dovecot.conf text for this instance."""
        assert self.workdir is not None
        ident = _identity()
        work = self.workdir
        chroot = "" if ident.chroot else "  chroot =\n"
        return f"""\
# generated by tests/support/mailservers.py
protocols = imap pop3 submission
listen = {self.host}
base_dir = {work}/run
state_dir = {work}/state
instance_name = emailtoken-test-{work.name}
log_path = {work}/dovecot.log
info_log_path = {work}/dovecot.log
debug_log_path = {work}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = xoauth2 oauthbearer
auth_verbose = yes
auth_debug = {"yes" if self.debug else "no"}
auth_failure_delay = 0
default_internal_user = {ident.internal_user}
default_login_user = {ident.login_user}
{f"default_internal_group = {ident.internal_group}" if ident.internal_group else ""}
first_valid_uid = {min(ident.mail_uid, 500)}
mail_location = maildir:{work}/mail/%u
hostname = localhost
postmaster_address = postmaster@localhost
submission_relay_host = 127.0.0.1
submission_relay_port = {self.relay_port}
service imap-login {{
  inet_listener imap {{
    port = {self.ports.imap}
  }}
  inet_listener imaps {{
    port = 0
  }}
{chroot}}}
service pop3-login {{
  inet_listener pop3 {{
    port = {self.ports.pop3}
  }}
  inet_listener pop3s {{
    port = 0
  }}
{chroot}}}
service submission-login {{
  inet_listener submission {{
    port = {self.ports.submission}
  }}
{chroot}}}
service anvil {{
{chroot}}}
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {work}/oauth2.conf.ext
}}
userdb {{
  driver = static
  args = uid={ident.mail_uid} gid={ident.mail_gid} home={work}/mail/%u
}}
"""

    def oauth2_config(self) -> str:
        """The passdb oauth2 settings (dovecot-oauth2.conf.ext)."""
        lines = [
            "introspection_mode = post",
            f"introspection_url = {self.introspection_url}",
            "force_introspection = yes",
            "username_attribute = email",
            "active_attribute = active",
            "active_value = true",
            "timeout_msecs = 10000",
        ]
        if self._ca_in_workdir:
            lines.append(f"tls_ca_cert_file = {self._ca_in_workdir}")
        return "\n".join(lines) + "\n"

    # Lifecycle ---------------------------------------------------------------------------------
    def start(self, timeout: float = 20) -> Dovecot:
        """Write the config, start ``dovecot -F`` and wait for all three ports."""
        for attempt in range(3):
            try:
                self._start_once(timeout)
                return self
            except MailServerError as error:
                in_use = "Address already in use" in str(error)
                self.stop()
                if not in_use or attempt == 2:
                    raise
                self.ports = DovecotPorts()  # another process took a port: pick new ones
        return self

    def _start_once(self, timeout: float) -> None:
        ident = _identity()
        self.workdir = Path(tempfile.mkdtemp(prefix="edc-", dir="/tmp"))
        self.workdir.chmod(0o755)  # dovecot, dovenull and nobody must traverse it
        mail = self.workdir / "mail"
        mail.mkdir()
        if os.geteuid() == 0:
            os.chown(mail, ident.mail_uid, ident.mail_gid)
        self._ca_in_workdir = None
        if self.ca_file:
            # The auth process runs as the internal user and may not read a 0700 pytest tmp dir.
            copied = self.workdir / "introspection-ca.pem"
            shutil.copyfile(self.ca_file, copied)
            copied.chmod(0o644)
            self._ca_in_workdir = str(copied)
        (self.workdir / "oauth2.conf.ext").write_text(self.oauth2_config())
        conf = self.workdir / "dovecot.conf"
        conf.write_text(self.config())
        for path in (conf, self.workdir / "oauth2.conf.ext"):
            path.chmod(0o644)
        stderr = open(self.workdir / "stderr.log", "wb")
        try:
            self.process = subprocess.Popen(
                [self.binary, "-F", "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )
        finally:
            stderr.close()
        deadline = time.monotonic() + timeout
        pending = {self.ports.imap, self.ports.pop3, self.ports.submission}
        while pending:
            if self.process.poll() is not None:
                raise MailServerError(f"dovecot exited with {self.process.returncode}:\n{self.log_text()}")
            pending = {port for port in pending if not port_open(self.host, port)}
            if pending and time.monotonic() > deadline:
                raise MailServerError(f"dovecot did not open ports {sorted(pending)}:\n{self.log_text()}")
            if pending:
                time.sleep(0.05)
        self.mark_log()

    def stop(self, timeout: float = 10) -> None:
        """Stop Dovecot (SIGTERM to the master, which ends its children) and remove the work dir."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout)
        if self.workdir is not None and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> Dovecot:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # Logins --------------------------------------------------------------------------------------
    def imap_login(self, user: str, token: str, **kwargs: Any) -> LoginResult:
        """XOAUTH2 over IMAP (``mechanism="OAUTHBEARER"`` builds that string instead)."""
        return imap_login(self.host, self.imap_port, self._response(user, token, self.imap_port, kwargs), **kwargs)

    def pop3_login(self, user: str, token: str, **kwargs: Any) -> LoginResult:
        """XOAUTH2 over POP3."""
        return pop3_login(self.host, self.pop3_port, self._response(user, token, self.pop3_port, kwargs), **kwargs)

    def submission_login(self, user: str, token: str, **kwargs: Any) -> LoginResult:
        """XOAUTH2 over SMTP submission (``send_to=`` also relays a message to the sink)."""
        port = self.submission_port
        return smtp_login(self.host, port, self._response(user, token, port, kwargs), **kwargs)

    def _response(self, user: str, token: str, port: int, kwargs: dict[str, Any]) -> str:
        if kwargs.get("mechanism", "XOAUTH2").upper() == "OAUTHBEARER":
            return oauthbearer(user, token, self.host, port)
        return xoauth2(user, token)

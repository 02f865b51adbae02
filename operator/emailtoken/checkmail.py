"""``emailtoken check-mail``: prove that a mounted email token really logs in to a mail server.

A token can be fresh and still useless: SMTP AUTH disabled for the tenant, the app
missing mailbox permission, the wrong scope. This command performs a real SASL XOAUTH2
(or OAUTHBEARER) login with the stdlib clients, the way a mail task would, and reports
the outcome in plain words, decoding the server's error challenge. It reads the token
exactly like a mail task does (``emailtoken.consumer``), so it fits as a Kubernetes Job
or an init container in the mail task's pod. It never prints the token.

Exit codes: 0 login works, 1 login or connection failed (or the token is expired),
2 usage or configuration error (bad arguments, properties, token not mounted).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import imaplib
import json
import os
import poplib
import re
import smtplib
import socket
import ssl
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from emailtoken import mailanswers
from emailtoken.consumer import (
    AccessToken,
    MountedToken,
    TokenError,
    TokenNotFoundError,
    resolve_mount_root,
)
from emailtoken.properties import KEYS, AuthConfigError, resolve_mail_auth
from emailtoken.redact import redact
from emailtoken.redirecturl import is_loopback

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

PROTOCOLS = ("imap", "pop3", "smtp")
_LABEL = {"imap": "IMAP", "pop3": "POP3", "smtp": "SMTP"}
#: (plain, starttls, ssl) default ports per protocol.
_DEFAULT_PORTS = {"imap": (143, 143, 993), "pop3": (110, 110, 995), "smtp": (25, 587, 465)}
_SECURITY_INDEX = {"plain": 0, "starttls": 1, "ssl": 2}


@dataclass(frozen=True)
class Endpoint:
    """Where to log in and how the connection is protected."""

    protocol: str  # imap | pop3 | smtp
    host: str
    port: int
    security: str = "plain"  # plain | starttls | ssl

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass
class LoginOutcome:
    """What happened at the server, with secret-free texts."""

    ok: bool
    stage: str = "login"  # connect | tls | capability | login | mailbox
    server_reply: str = ""
    challenge: str = ""
    info: str = ""
    details: list[str] = field(default_factory=list)
    #: the likely cause (emailtoken.mailanswers) and the commands that fix it
    cause: str = ""
    fixes: list[str] = field(default_factory=list)


class _Refused(Exception):
    """A server said no; carries the reply and any SASL error challenge."""

    def __init__(self, stage: str, reply: str, challenge: bytes = b"") -> None:
        super().__init__(reply)
        self.stage = stage
        self.reply = reply
        self.challenge = challenge


def parse_endpoint(text: str, protocol: str, security: str = "plain") -> Endpoint:
    """Parse ``host``, ``host:port``, ``[v6]`` or ``[v6]:port``; the port defaults per protocol and TLS mode."""
    default_port = _DEFAULT_PORTS[protocol][_SECURITY_INDEX[security]]
    text = text.strip()
    match = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?|([^:\[\]]+)(?::(\d+))?", text)
    if not match or not text:
        raise ValueError(f"{text!r} is not HOST[:PORT]")
    host = match.group(1) or match.group(3)
    port_text = match.group(2) or match.group(4)
    port = int(port_text) if port_text else default_port
    if not 0 < port < 65536:
        raise ValueError(f"{text!r}: port {port} is out of range")
    return Endpoint(protocol=protocol, host=host, port=port, security=security)


def decode_challenge(data: bytes | str) -> dict[str, Any] | str:
    """Decode a SASL error challenge: base64 JSON (RFC 7628 / XOAUTH2) to a dict, else text."""
    raw = data.encode() if isinstance(data, str) else data
    raw = raw.strip()
    if not raw:
        return ""
    try:
        decoded = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        decoded = raw
    text = decoded.decode("utf-8", "replace")
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, dict) else text


def explain(protocol: str, reply: str, challenge: dict[str, Any] | str = "", mailbox: str = "") -> str:
    """Turn a server reply and decoded challenge into what it means (:mod:`emailtoken.mailanswers`)."""
    return mailanswers.diagnose(reply, challenge, mailanswers.Context(protocol, mailbox)).meaning


def _describe_challenge(challenge: dict[str, Any] | str) -> str:
    if isinstance(challenge, dict):
        return ", ".join(f"{key} {value}" for key, value in challenge.items())
    return challenge


class Dialer:
    """Opens a login's connections and can cut them from another thread.

    A socket timeout bounds each read, not the login: a server answering a byte at a time keeps a
    login going. :meth:`cut` (the operator's probe waiter calls it at its deadline) shuts every
    connection down, which wakes a blocked read at once; a connection opened afterwards is refused.
    """

    def __init__(self, source_address: str | None = None) -> None:
        self.source = (source_address, 0) if source_address else None
        self._lock = threading.Lock()
        self._handles: list[socket.socket] = []  # duplicates: TLS wrapping detaches the original
        self._cut = False

    def connect(self, host: str, port: int, timeout: float) -> socket.socket:
        """A TCP connection the dialer can cut."""
        sock = socket.create_connection((host, port), timeout, source_address=self.source)
        with self._lock:
            if self._cut:
                sock.close()
                raise TimeoutError("the login's deadline has passed")
            self._handles.append(sock.dup())
        return sock

    def cut(self) -> None:
        """End the login: shut every connection down (a blocked read returns) and refuse new ones."""
        with self._lock:
            self._cut = True
            handles, self._handles = self._handles, []
        for handle in handles:
            with contextlib.suppress(OSError):
                handle.shutdown(socket.SHUT_RDWR)
            handle.close()

    def release(self) -> None:
        """Forget the connections of a finished login (their own objects close them)."""
        with self._lock:
            handles, self._handles = self._handles, []
        for handle in handles:
            handle.close()


class _IMAP(imaplib.IMAP4):
    def __init__(self, host: str, port: int, timeout: float, dialer: Dialer) -> None:
        self._dialer = dialer
        super().__init__(host, port, timeout)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return self._dialer.connect(self.host, self.port, timeout or 30)


class _IMAPS(imaplib.IMAP4_SSL):
    def __init__(self, host: str, port: int, timeout: float, dialer: Dialer, context: ssl.SSLContext) -> None:
        self._dialer = dialer
        super().__init__(host, port, ssl_context=context, timeout=timeout)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        sock = self._dialer.connect(self.host, self.port, timeout or 30)
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)


class _POP3(poplib.POP3):
    def __init__(self, host: str, port: int, timeout: float, dialer: Dialer) -> None:
        self._dialer = dialer
        super().__init__(host, port, timeout)

    def _create_socket(self, timeout: float) -> socket.socket:
        return self._dialer.connect(self.host, self.port, timeout)


class _POP3S(poplib.POP3_SSL):
    def __init__(self, host: str, port: int, timeout: float, dialer: Dialer, context: ssl.SSLContext) -> None:
        self._dialer = dialer
        super().__init__(host, port, timeout=timeout, context=context)

    def _create_socket(self, timeout: float) -> socket.socket:
        sock = self._dialer.connect(self.host, self.port, timeout)
        return self.context.wrap_socket(sock, server_hostname=self.host)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list | tuple):
        return " ".join(_text(v) for v in value)
    return str(value)


def _check_advertised(offered: list[str], mechanism: str, endpoint: Endpoint) -> None:
    if offered and mechanism.upper() not in {m.upper() for m in offered}:
        hint = (
            "" if endpoint.security != "plain" else " (many servers offer OAuth only over TLS: try --starttls or --ssl)"
        )
        raise _Refused(
            "capability",
            f"the server does not offer SASL {mechanism.upper()}; it offers: {' '.join(offered)}{hint}",
        )


def _login_imap(
    endpoint: Endpoint, response: str, mechanism: str, timeout: float, context: ssl.SSLContext, dialer: Dialer
) -> LoginOutcome:
    conn: imaplib.IMAP4
    conn = (
        _IMAPS(endpoint.host, endpoint.port, timeout, dialer, context)
        if endpoint.security == "ssl"
        else _IMAP(endpoint.host, endpoint.port, timeout, dialer)
    )
    try:
        if endpoint.security == "starttls":
            try:
                conn.starttls(ssl_context=context)
            except imaplib.IMAP4.error as error:
                raise _Refused("tls", str(error)) from None
        offered = [cap[5:] for cap in conn.capabilities if cap.upper().startswith("AUTH=")]
        _check_advertised(offered, mechanism, endpoint)
        challenges: list[bytes] = []

        def answer(data: bytes) -> bytes:
            # First continuation: send the client response. Any later one is the error challenge.
            if challenges or data:
                challenges.append(data)
                return b""
            challenges.append(b"")
            return response.encode()

        try:
            conn.authenticate(mechanism.upper(), answer)
        except imaplib.IMAP4.error as error:
            challenge = next((c for c in challenges if c), b"")
            raise _Refused("login", str(error), base64.b64encode(challenge)) from None
        try:
            status, data = conn.select("INBOX", readonly=True)
        except imaplib.IMAP4.error as error:
            raise _Refused("mailbox", str(error)) from None
        if status != "OK":
            raise _Refused("mailbox", _text(data))
        info = f"INBOX holds {_text(data[0]) if data and data[0] is not None else '?'} messages"
        return LoginOutcome(ok=True, info=info)
    finally:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            conn.logout()


def _login_pop3(
    endpoint: Endpoint, response: str, mechanism: str, timeout: float, context: ssl.SSLContext, dialer: Dialer
) -> LoginOutcome:
    conn: poplib.POP3
    conn = (
        _POP3S(endpoint.host, endpoint.port, timeout, dialer, context)
        if endpoint.security == "ssl"
        else _POP3(endpoint.host, endpoint.port, timeout, dialer)
    )
    try:
        if endpoint.security == "starttls":
            try:
                conn.stls(context=context)
            except poplib.error_proto as error:
                raise _Refused("tls", _text(error.args[0] if error.args else error)) from None
        try:
            capa = conn.capa()
        except poplib.error_proto:
            capa = {}
        _check_advertised(list(capa.get("SASL", [])), mechanism, endpoint)
        # Two steps (no initial response): the form Microsoft documents and every server accepts.
        challenge = b""
        try:
            conn._shortcmd(f"AUTH {mechanism.upper()}")
            reply = conn._shortcmd(base64.b64encode(response.encode()).decode())
            if reply.startswith(b"+") and not reply.startswith(b"+OK"):
                challenge = reply[1:].strip()
                conn._shortcmd("")  # acknowledge the error challenge (RFC 7628); the -ERR follows
                raise _Refused("login", "the server sent an error challenge", challenge)
        except poplib.error_proto as error:
            raise _Refused("login", _text(error.args[0] if error.args else error), challenge) from None
        try:
            count, size = conn.stat()
        except poplib.error_proto as error:
            raise _Refused("mailbox", _text(error.args[0] if error.args else error)) from None
        return LoginOutcome(ok=True, info=f"the mailbox holds {count} messages ({size} bytes)")
    finally:
        with contextlib.suppress(OSError, poplib.error_proto):
            conn.quit()


class _SMTP(smtplib.SMTP):
    def __init__(self, endpoint: Endpoint, timeout: float, dialer: Dialer) -> None:
        self._dialer = dialer
        local_name = socket.gethostname() or "localhost"  # getfqdn() can hang on DNS in a pod
        super().__init__(endpoint.host, endpoint.port, local_hostname=local_name, timeout=timeout)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return self._dialer.connect(host, port, timeout)


class _SMTPS(smtplib.SMTP_SSL):
    def __init__(self, endpoint: Endpoint, timeout: float, dialer: Dialer, context: ssl.SSLContext) -> None:
        self._dialer = dialer
        local_name = socket.gethostname() or "localhost"
        super().__init__(endpoint.host, endpoint.port, local_hostname=local_name, timeout=timeout, context=context)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = self._dialer.connect(host, port, timeout)
        return self.context.wrap_socket(sock, server_hostname=self._host)


def _smtp_connect(endpoint: Endpoint, timeout: float, context: ssl.SSLContext, dialer: Dialer) -> smtplib.SMTP:
    if endpoint.security == "ssl":
        return _SMTPS(endpoint, timeout, dialer, context)
    return _SMTP(endpoint, timeout, dialer)


def _login_smtp(
    endpoint: Endpoint, response: str, mechanism: str, timeout: float, context: ssl.SSLContext, dialer: Dialer
) -> LoginOutcome:
    conn = _smtp_connect(endpoint, timeout, context, dialer)
    try:
        conn.ehlo()
        if endpoint.security == "starttls":
            try:
                conn.starttls(context=context)
            except smtplib.SMTPNotSupportedError:
                raise _Refused("tls", "the server does not offer STARTTLS") from None
            except smtplib.SMTPResponseException as error:
                raise _Refused("tls", f"{error.smtp_code} {_text(error.smtp_error)}") from None
            conn.ehlo()
        offered = (conn.esmtp_features.get("auth") or "").split()
        if not conn.has_extn("auth"):
            hint = (
                " (many servers offer AUTH only after STARTTLS: try --starttls)" if endpoint.security == "plain" else ""
            )
            raise _Refused("capability", f"the server does not offer SMTP AUTH{hint}")
        _check_advertised(offered, mechanism, endpoint)
        challenges: list[bytes] = []

        def answer(challenge: bytes | None = None) -> str:
            if challenge is None:
                return response
            challenges.append(challenge)
            return ""

        try:
            conn.auth(mechanism.upper(), answer, initial_response_ok=True)
        except smtplib.SMTPAuthenticationError as error:
            challenge = next((c for c in challenges if c), b"")
            reply = f"{error.smtp_code} {_text(error.smtp_error)}"
            raise _Refused("login", reply, base64.b64encode(challenge)) from None
        except smtplib.SMTPException as error:
            raise _Refused("login", str(error)) from None
        return LoginOutcome(ok=True, info="the server accepts mail submission for this login")
    finally:
        with contextlib.suppress(OSError, smtplib.SMTPException):
            conn.quit()


_LOGINS: dict[str, Callable[..., LoginOutcome]] = {"imap": _login_imap, "pop3": _login_pop3, "smtp": _login_smtp}


def check_login(
    endpoint: Endpoint,
    token: AccessToken,
    *,
    user: str | None = None,
    mechanism: str = "xoauth2",
    timeout: float = 30.0,
    ssl_context: ssl.SSLContext | None = None,
    source_address: str | None = None,
    dialer: Dialer | None = None,
) -> LoginOutcome:
    """Log in for real and return the outcome; texts are scrubbed of the token.

    ``dialer``: to cut the login from another thread (it then ends with a connection error)."""
    sasl_user = user or token.username
    if mechanism.lower() == "oauthbearer":
        response = token.oauthbearer(endpoint.host, endpoint.port, sasl_user)
    else:
        response = token.xoauth2(sasl_user)
    secrets = (token.access_token, response, base64.b64encode(response.encode()).decode())
    context = ssl_context or ssl.create_default_context()
    known = mailanswers.Context(endpoint.protocol, sasl_user, mailanswers.app_only(token.scope))
    dialer = dialer or Dialer(source_address)
    try:
        return _LOGINS[endpoint.protocol](endpoint, response, mechanism, timeout, context, dialer)
    except _Refused as refused:
        return _refused(refused, known, secrets)
    except (OSError, EOFError, imaplib.IMAP4.abort, poplib.error_proto, smtplib.SMTPException) as error:
        return _broken(error, endpoint, timeout, secrets)
    finally:
        dialer.release()


#: C0 and C1 control characters (ESC starts terminal escape sequences), DEL included
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
SERVER_TEXT_LIMIT = 300


def server_text(text: str, *secrets: str) -> str:
    """A mail server's words made fit for status, Events and terminals: no token, no control
    characters (a hostile server could send terminal escapes), at most SERVER_TEXT_LIMIT characters."""
    clean = _CONTROL.sub(" ", redact(text, *secrets)).strip()
    return clean if len(clean) <= SERVER_TEXT_LIMIT else clean[: SERVER_TEXT_LIMIT - 1] + "…"


def _refused(refused: _Refused, known: mailanswers.Context, secrets: tuple[str, ...]) -> LoginOutcome:
    """A server's no, with the likely cause and the fix for a refused login."""
    decoded = decode_challenge(refused.challenge)
    outcome = LoginOutcome(
        ok=False,
        stage=refused.stage,
        server_reply=server_text(refused.reply, *secrets),
        challenge=server_text(_describe_challenge(decoded), *secrets),
    )
    if refused.stage in {"login", "mailbox"}:
        diagnosis = mailanswers.diagnose(refused.reply, decoded, known)
        outcome.details.append(redact(diagnosis.meaning, *secrets))  # it may quote the server's challenge
        outcome.cause, outcome.fixes = diagnosis.cause, list(diagnosis.fixes)
    elif refused.stage == "tls":
        outcome.details.append("STARTTLS did not work here: implicit-TLS ports (993/995/465) take --ssl instead")
    return outcome


def _broken(error: BaseException, endpoint: Endpoint, timeout: float, secrets: tuple[str, ...]) -> LoginOutcome:
    """A connection that never got as far as a login answer: which layer failed, in plain words."""
    if isinstance(error, ssl.SSLCertVerificationError):
        reply = str(error.verify_message or error)
        why = "the server's TLS certificate is not trusted or does not match the host name (use --ca-file)"
        return LoginOutcome(ok=False, stage="tls", server_reply=reply, details=[why])
    if isinstance(error, ssl.SSLError):
        why = (
            "the TLS handshake failed: is this port plain, STARTTLS or implicit TLS? "
            "(993/995/465 take --ssl; 143/110/587 take --starttls)"
        )
        return LoginOutcome(ok=False, stage="tls", server_reply=str(error.reason or error), details=[why])
    if isinstance(error, socket.gaierror):
        why = f"cannot resolve the host name {endpoint.host!r}"
        return LoginOutcome(ok=False, stage="connect", server_reply=str(error.strerror or error), details=[why])
    if isinstance(error, TimeoutError):
        why = "a firewall or NetworkPolicy may block egress to this port, or the server is down"
        return LoginOutcome(ok=False, stage="connect", server_reply=f"no answer within {timeout:g}s", details=[why])
    if isinstance(error, ConnectionRefusedError):
        why = "nothing listens on this host and port: check the port and the protocol"
        return LoginOutcome(ok=False, stage="connect", server_reply="connection refused", details=[why])
    reply = server_text(str(error) or type(error).__name__, *secrets)
    why = "the connection broke off: check the port, the protocol and the TLS mode"
    return LoginOutcome(ok=False, stage="connect", server_reply=reply, details=[why])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the check-mail options on ``parser``."""
    source = parser.add_argument_group("which token (default: the task's environment variables)")
    which = source.add_mutually_exclusive_group()
    which.add_argument("--properties", metavar="FILE", help="the mail task's properties file")
    which.add_argument("--token", metavar="NAME", help="the EmailToken (and Secret) name")
    source.add_argument(
        "--role",
        choices=("reader", "sender"),
        help="which properties to use: reader (MAILBOX_*) or sender (MAIL_*); default: reader for "
        "IMAP/POP3, sender for SMTP",
    )
    source.add_argument(
        "--mount-root",
        metavar="DIR",
        help="directory holding one folder per mounted token (default: $EMAILTOKEN_MOUNT_ROOT or /var/run/emailtokens)",
    )
    server = parser.add_argument_group("mail server")
    where = server.add_mutually_exclusive_group(required=True)
    where.add_argument("--imap", metavar="HOST[:PORT]", help="log in over IMAP")
    where.add_argument("--pop3", metavar="HOST[:PORT]", help="log in over POP3")
    where.add_argument("--smtp", metavar="HOST[:PORT]", help="log in over SMTP submission")
    tls = server.add_mutually_exclusive_group()
    tls.add_argument("--starttls", action="store_true", help="upgrade with STARTTLS (ports 143/110/587)")
    tls.add_argument("--ssl", action="store_true", help="implicit TLS (ports 993/995/465)")
    server.add_argument("--ca-file", metavar="PEM", help="CA bundle to trust instead of the system's")
    server.add_argument(
        "--sasl",
        choices=("xoauth2", "oauthbearer"),
        default="xoauth2",
        help="SASL mechanism (default xoauth2; Microsoft supports only xoauth2)",
    )
    server.add_argument("--user", metavar="EMAIL", help="SASL user name (default: the token's username)")
    server.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS", help="network timeout (default 30)")
    server.add_argument("--source-address", metavar="IP", help="local address to connect from")


def build_parser(prog: str = "emailtoken check-mail") -> argparse.ArgumentParser:
    """A stand-alone parser (``register`` adds the same options to the main CLI)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return parser


_DESCRIPTION = (
    "Log in to a mail server with a mounted email token, as a mail task would (SASL XOAUTH2 or "
    "OAUTHBEARER), and explain the server's answer in plain words. The token is never printed."
)
_EPILOG = """\
examples:
  emailtoken check-mail --token sales-mailbox --imap outlook.office365.com:993 --ssl
  emailtoken check-mail --properties /etc/mailtask/task.properties --smtp smtp.office365.com:587 --starttls
Production servers need --ssl or --starttls; plain connections are for local test servers.
exit codes: 0 login works, 1 login or connection failed, 2 usage or configuration error"""


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``check-mail`` sub-command to the main CLI's subparsers."""
    parser = subparsers.add_parser(
        "check-mail",
        help="log in to a mail server with a mounted email token and explain the result",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def _target(args: argparse.Namespace) -> Endpoint:
    security = "ssl" if args.ssl else "starttls" if args.starttls else "plain"
    for protocol in PROTOCOLS:
        value = getattr(args, protocol, None)
        if value:
            return parse_endpoint(value, protocol, security)
    raise ValueError("one of --imap, --pop3 or --smtp is required")


class _Usage(Exception):
    """A usage or configuration error: exit code 2, the message on stderr."""


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Execute check-mail for parsed arguments; returns the exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        endpoint = _target(args)
        name, origin = _token_name(args, endpoint)
        token = _read_token(name, args.mount_root)
        context = _ssl_context(args.ca_file)
    except (_Usage, ValueError) as usage:  # ValueError: a bad HOST[:PORT]
        print(f"check-mail: {usage}", file=err)
        return EXIT_USAGE
    except TokenError as error:
        print(f"FAILED: {error}", file=out)
        return EXIT_FAILED
    user = args.user or token.username
    if endpoint.security == "plain" and not is_loopback(endpoint.host):
        print(
            "check-mail: warning: a plain connection sends the token unencrypted; production servers need "
            "--ssl or --starttls",
            file=err,
        )
    outcome = check_login(
        endpoint,
        token,
        user=user,
        mechanism=args.sasl,
        timeout=args.timeout,
        ssl_context=context,
        source_address=args.source_address,
    )
    minutes = int(token.expires_in().total_seconds() // 60)
    expiry = f"token {name!r} ({origin}, {resolve_mount_root(args.mount_root) / name}) expires at " + (
        token.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ") + f" (in {minutes} min)"
    )
    what = f"{_LABEL[endpoint.protocol]} {args.sasl.upper()} login as {user} to {endpoint} ({endpoint.security})"
    print(redact(render(outcome, what, expiry), token.access_token), file=out)
    return EXIT_OK if outcome.ok else EXIT_FAILED


def _token_name(args: argparse.Namespace, endpoint: Endpoint) -> tuple[str, str]:
    """The token to check and where its name came from (--token, or the task's properties/environment)."""
    if args.timeout <= 0:
        raise _Usage("--timeout must be positive")
    if args.token:
        return args.token, "--token"
    role = args.role or ("sender" if endpoint.protocol == "smtp" else "reader")
    try:
        auth = resolve_mail_auth(role, args.properties, os.environ)
    except AuthConfigError as error:
        raise _Usage(str(error)) from None
    if not auth.uses_oauth2 or not auth.token_name:
        type_key, name_key = KEYS[role]
        where = args.properties or "the environment"
        raise _Usage(
            f"the {role} logs in with a password ({type_key} is PASSWORD or unset in {where}); "
            f"set {type_key} = OAUTH2 and {name_key} = <token name> to use an email token"
        )
    return auth.token_name, auth.source


def _read_token(name: str, mount_root: str | None) -> AccessToken:
    """The mounted token; a missing token or a bad name is a usage error, an unusable one a failure."""
    try:
        return MountedToken(name, mount_root).read()
    except (ValueError, TokenNotFoundError) as error:
        raise _Usage(str(error)) from None


def _ssl_context(ca_file: str | None) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as error:
        raise _Usage(f"cannot load --ca-file {ca_file}: {error}") from None


_VERBS = {
    "connect": "could not connect",
    "tls": "could not set up TLS",
    "capability": "cannot use OAuth",
    "login": "was refused",
    "mailbox": "succeeded but the mailbox could not be opened",
}


def render(outcome: LoginOutcome, what: str, expiry: str) -> str:
    """The report check-mail prints: the verdict, the server's words, the likely cause and the fix."""
    if outcome.ok:
        return f"OK: {what} succeeded; {outcome.info}.\n  {expiry}"
    lines = [f"FAILED: {what} {_VERBS[outcome.stage]}."]
    if outcome.server_reply:
        lines.append(f"  server said: {outcome.server_reply}")
    if outcome.challenge:
        lines.append(f"  error details: {outcome.challenge}")
    lines.extend(f"  what it means: {detail}" for detail in outcome.details)
    if outcome.cause:
        lines.append(f"  likely cause: {outcome.cause}")
    lines.extend(f"  fix: {fix}" for fix in outcome.fixes)
    lines.append(f"  {expiry}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (the main CLI wires ``register`` instead)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())

"""Which email token a legacy mail task uses, from its properties file or environment.

Mail tasks carry Java-style properties. The inbound reader says
``MAILBOX_AUTH_TYPE = PASSWORD | OAUTH2`` and ``MAILBOX_EMAIL_TOKEN_NAME = <token>``;
the outbound sender says ``MAIL_AUTH_TYPE`` and ``MAIL_TOKEN_NAME``. Both are commented
out by default, so PASSWORD is what an untouched file means.

Precedence: an environment variable of the same name overrides the file, key by key
(a Deployment can switch one task to OAuth 2.0 with ``env`` while the ConfigMap stays
shared). An empty environment variable counts as unset. Auth type values are
case-insensitive; token names are Kubernetes object names, so they are lower-cased and
must then be valid DNS-1123 subdomains. Stdlib only, no Kubernetes import.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "AUTH_TYPES",
    "KEYS",
    "ROLES",
    "AuthConfigError",
    "MailAuth",
    "load_properties",
    "parse_properties",
    "resolve_mail_auth",
    "resolve_token_name",
]

Role = Literal["reader", "sender"]
ROLES: tuple[Role, ...] = ("reader", "sender")
PASSWORD = "PASSWORD"
OAUTH2 = "OAUTH2"
AUTH_TYPES = (PASSWORD, OAUTH2)
#: role -> (auth type key, token name key)
KEYS: dict[str, tuple[str, str]] = {
    "reader": ("MAILBOX_AUTH_TYPE", "MAILBOX_EMAIL_TOKEN_NAME"),
    "sender": ("MAIL_AUTH_TYPE", "MAIL_TOKEN_NAME"),
}
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


class AuthConfigError(ValueError):
    """The task's auth settings are unusable; the message names the key and the fix."""


@dataclass(frozen=True)
class MailAuth:
    """How one role of a mail task authenticates, and where that came from."""

    role: str
    auth_type: str
    token_name: str | None
    source: str  # e.g. "task.properties", "environment", "default"

    @property
    def uses_oauth2(self) -> bool:
        """True when the task must log in with an email token."""
        return self.auth_type == OAUTH2


def _unescape(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "\\" or i + 1 >= len(text):
            out.append(char)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", text[i + 2 : i + 6]):
            out.append(chr(int(text[i + 2 : i + 6], 16)))
            i += 6
            continue
        out.append(_ESCAPES.get(nxt, nxt))
        i += 2
    return "".join(out)


def _logical_lines(text: str) -> list[str]:
    """Join backslash continuations and drop comment and blank lines, as java.util.Properties does."""
    lines: list[str] = []
    pending: str | None = None
    for raw in text.splitlines():
        line = raw.lstrip(" \t\f")
        if pending is None and (not line or line[0] in "#!"):
            continue
        trailing = len(line) - len(line.rstrip("\\"))
        continued = trailing % 2 == 1
        if continued:
            line = line[:-1]
        pending = line if pending is None else pending + line
        if not continued:
            lines.append(pending)
            pending = None
    if pending is not None:
        lines.append(pending)
    return lines


def _split_key(line: str) -> tuple[str, str]:
    i = 0
    while i < len(line):
        char = line[i]
        if char == "\\":
            i += 2
            continue
        if char in "=: \t\f":
            break
        i += 1
    key, rest = line[:i], line[i:]
    rest = rest.lstrip(" \t\f")
    if rest[:1] in ("=", ":"):
        rest = rest[1:].lstrip(" \t\f")
    return _unescape(key), _unescape(rest)


def parse_properties(text: str) -> dict[str, str]:
    """Parse Java properties text: ``key = value``, ``key: value`` or ``key value``; ``#``/``!`` comments.

    Values keep trailing whitespace stripped (legacy files are hand-edited); a ``#`` after a
    value is part of the value, exactly as Java reads it.
    """
    result: dict[str, str] = {}
    for line in _logical_lines(text):
        key, value = _split_key(line)
        if key:
            result[key] = value.rstrip()
    return result


def load_properties(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read a properties file (UTF-8, falling back to Java's traditional ISO-8859-1)."""
    file = Path(path)
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise AuthConfigError(f"properties file {file} does not exist") from None
    except OSError as error:
        raise AuthConfigError(f"cannot read properties file {file}: {error.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("iso-8859-1")
    return parse_properties(text)


def _pick(key: str, props: Mapping[str, str], env: Mapping[str, str], file_label: str) -> tuple[str, str]:
    env_value = (env.get(key) or "").strip()
    if env_value:
        return env_value, f"environment variable {key}"
    file_value = (props.get(key) or "").strip()
    if file_value:
        return file_value, f"{key} in {file_label}"
    return "", "default"


def resolve_mail_auth(
    role: str,
    properties: str | os.PathLike[str] | Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> MailAuth:
    """Resolve a role's auth type and token name; raise AuthConfigError with the fix otherwise.

    ``properties`` is a file path, an already parsed mapping, or None (environment only).
    ``environ`` defaults to ``os.environ``; pass ``{}`` to ignore the environment.
    """
    if role not in KEYS:
        raise AuthConfigError(f"unknown role {role!r}; expected one of: {', '.join(ROLES)}")
    type_key, name_key = KEYS[role]
    if properties is None:
        props: Mapping[str, str] = {}
        file_label = "(no properties file)"
    elif isinstance(properties, Mapping):
        props, file_label = properties, "the properties"
    else:
        props, file_label = load_properties(properties), str(properties)
    env = os.environ if environ is None else environ

    raw_type, type_source = _pick(type_key, props, env, file_label)
    auth_type = raw_type.upper() if raw_type else PASSWORD
    if auth_type not in AUTH_TYPES:
        raise AuthConfigError(
            f"{type_source} is {raw_type!r}, which is not an auth type; allowed values: "
            f"{' | '.join(AUTH_TYPES)} (case-insensitive; unset means {PASSWORD})"
        )
    if auth_type == PASSWORD:
        return MailAuth(role=role, auth_type=auth_type, token_name=None, source=type_source)

    raw_name, name_source = _pick(name_key, props, env, file_label)
    if not raw_name:
        raise AuthConfigError(
            f"{type_source} says {OAUTH2} but {name_key} is not set (checked the environment and "
            f"{file_label}); set {name_key} to the name of the EmailToken whose Secret is mounted"
        )
    name = raw_name.lower()
    if len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
        raise AuthConfigError(
            f"{name_source} is {raw_name!r}, which is not a Kubernetes object name: use lowercase "
            "letters, digits, '-' and '.', starting and ending with a letter or digit"
        )
    source = type_source if type_source == name_source else f"{type_source}; {name_source}"
    return MailAuth(role=role, auth_type=auth_type, token_name=name, source=source)


def resolve_token_name(
    role: str,
    properties: str | os.PathLike[str] | Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """The email token name for a role, or None when the role still uses a password."""
    return resolve_mail_auth(role, properties, environ).token_name

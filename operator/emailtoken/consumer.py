"""Read an access token that the operator keeps in a mounted Secret, for mail tasks.

The operator writes the consumer Secret ``<token-name>``; a mail-task pod mounts it
(without ``subPath``) at ``/var/run/emailtokens/<token-name>/``. The kubelet swaps the
files in place after every refresh, so a task that reads the token at each connection
never needs a restart. This module does exactly that and nothing more: it is stdlib
only, imports nothing from Kubernetes or the rest of the package, and can be copied
into any Python mail task as a single file.

Three lines in a mail task::

    from emailtoken.consumer import MountedToken
    token = MountedToken("sales-mailbox")  # /var/run/emailtokens/sales-mailbox/
    imap.authenticate("XOAUTH2", lambda _: token.xoauth2())  # read fresh, refused if expired

``smtp.auth("XOAUTH2", lambda challenge=None: token.xoauth2(), initial_response_ok=True)``
does the same for ``smtplib``. The mount root can be changed with the ``mount_root``
argument or the ``EMAILTOKEN_MOUNT_ROOT`` environment variable. Errors
(:class:`TokenNotFoundError`, :class:`TokenExpiredError`, :class:`TokenFormatError`, all
:class:`TokenError`) say what to fix and never contain the token.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

__all__ = [
    "DEFAULT_MOUNT_ROOT",
    "DEFAULT_SKEW",
    "MOUNT_ROOT_ENV",
    "AccessToken",
    "MountedToken",
    "TokenError",
    "TokenExpiredError",
    "TokenFormatError",
    "TokenNotFoundError",
    "oauthbearer_string",
    "read_token",
    "resolve_mount_root",
    "xoauth2_string",
]

DEFAULT_MOUNT_ROOT = "/var/run/emailtokens"
MOUNT_ROOT_ENV = "EMAILTOKEN_MOUNT_ROOT"
#: A token this close to expiry is refused: it could die between read and login.
DEFAULT_SKEW = timedelta(seconds=60)
#: The kubelet's atomic writer points this symlink at the current generation of files.
_DATA_LINK = "..data"
_READ_ATTEMPTS = 5


class TokenError(Exception):
    """A mounted token cannot be used; the message says why and never holds the token."""

    def __init__(self, message: str, *, name: str, path: Path) -> None:
        super().__init__(message)
        self.name = name
        self.path = path


class TokenNotFoundError(TokenError):
    """No token of that name is mounted under the mount root."""


class TokenFormatError(TokenError):
    """The mounted files exist but are not a usable token (empty or malformed)."""


class TokenExpiredError(TokenError):
    """The token has expired, or expires within the skew; the operator is not refreshing it."""

    def __init__(self, message: str, *, name: str, path: Path, expires_at: datetime) -> None:
        super().__init__(message, name=name, path=path)
        self.expires_at = expires_at


def xoauth2_string(user: str, access_token: str) -> str:
    """The SASL XOAUTH2 client response (not base64: imaplib and smtplib encode it)."""
    return f"user={user}\x01auth=Bearer {access_token}\x01\x01"


def _gs2_saslname(user: str) -> str:
    # RFC 5801: ',' and '=' are escaped in the GS2 authzid.
    return user.replace("=", "=3D").replace(",", "=2C")


def oauthbearer_string(user: str, access_token: str, host: str | None = None, port: int | None = None) -> str:
    """The RFC 7628 OAUTHBEARER client response (not base64)."""
    parts = [f"n,a={_gs2_saslname(user)},"]
    if host:
        parts.append(f"host={host}")
    if port is not None:
        parts.append(f"port={port}")
    parts.append(f"auth=Bearer {access_token}")
    return "\x01".join(parts) + "\x01\x01"


def resolve_mount_root(override: str | os.PathLike[str] | None = None) -> Path:
    """The directory holding one sub-directory per token: argument, then env, then default."""
    if override:
        return Path(override)
    return Path(os.environ.get(MOUNT_ROOT_ENV) or DEFAULT_MOUNT_ROOT)


def _parse_expiry(text: str) -> datetime:
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class AccessToken:
    """One consistent reading of the mounted files. Short-lived: do not keep it around."""

    name: str
    access_token: str = field(repr=False)
    username: str
    expires_at: datetime
    token_type: str = "Bearer"
    scope: str = ""

    def expires_in(self, now: datetime | None = None) -> timedelta:
        """Time left before expiry (negative once expired)."""
        return self.expires_at - (now or _utcnow())

    def xoauth2(self, user: str | None = None) -> str:
        """SASL XOAUTH2 client response for ``user`` (default: the token's username)."""
        return xoauth2_string(user or self.username, self.access_token)

    def xoauth2_base64(self, user: str | None = None) -> str:
        """The same, base64 encoded, as the Secret's ``xoauth2`` key and raw protocols need it."""
        return base64.b64encode(self.xoauth2(user).encode()).decode()

    def oauthbearer(self, host: str | None = None, port: int | None = None, user: str | None = None) -> str:
        """RFC 7628 OAUTHBEARER client response (Gmail and Dovecot; Microsoft wants XOAUTH2)."""
        return oauthbearer_string(user or self.username, self.access_token, host, port)


class MountedToken:
    """A token by name under a mount root; every call reads the files again.

    Reading fresh is the point: the kubelet replaces the files after each refresh, and
    a long-running task must pick the new token up without a restart.
    """

    def __init__(
        self,
        name: str,
        mount_root: str | os.PathLike[str] | None = None,
        *,
        skew: timedelta = DEFAULT_SKEW,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        if not name or name in {".", ".."} or "/" in name or "\\" in name or "\x00" in name:
            raise ValueError(f"{name!r} is not a token name (expected a Kubernetes object name)")
        self.name = name
        self.root = resolve_mount_root(mount_root)
        self.path = self.root / name
        self.skew = skew
        self._clock = clock

    def __repr__(self) -> str:
        return f"MountedToken({self.name!r}, path={str(self.path)!r})"

    def read(self) -> AccessToken:
        """Read all files as one snapshot and refuse a missing, malformed or expiring token."""
        token = self._read_snapshot()
        now = self._clock()
        if token.expires_at - self.skew <= now:
            when = token.expires_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            state = "expired" if token.expires_at <= now else f"expires within {int(self.skew.total_seconds())}s"
            raise TokenExpiredError(
                f"email token {self.name!r} at {self.path} {state} (expires_at {when}); the operator has "
                f"not refreshed it: check `kubectl describe emailtoken {self.name}` (Ready condition, Events)",
                name=self.name,
                path=self.path,
                expires_at=token.expires_at,
            )
        return token

    def access_token(self) -> str:
        """The bearer token, read fresh."""
        return self.read().access_token

    def username(self) -> str:
        """The mailbox (SASL user name) the token was issued for."""
        return self.read().username

    def xoauth2(self, user: str | None = None) -> str:
        """SASL XOAUTH2 client response, read fresh (pass to imaplib/smtplib as is)."""
        return self.read().xoauth2(user)

    def xoauth2_base64(self, user: str | None = None) -> str:
        """Base64 XOAUTH2 client response, read fresh (for raw protocol lines)."""
        return self.read().xoauth2_base64(user)

    def oauthbearer(self, host: str | None = None, port: int | None = None, user: str | None = None) -> str:
        """RFC 7628 OAUTHBEARER client response, read fresh."""
        return self.read().oauthbearer(host, port, user)

    def _read_snapshot(self) -> AccessToken:
        # A swap can happen between two reads; the old generation directory then vanishes
        # and a retry reads the new one whole.
        last: OSError | None = None
        for attempt in range(_READ_ATTEMPTS):
            try:
                return self._read_once()
            except FileNotFoundError as error:
                last = error
                time.sleep(0.01 * (attempt + 1))
            except PermissionError as error:
                raise TokenError(
                    f"email token {self.name!r}: cannot read {Path(error.filename or self.path).name} in "
                    f"{self.path} (permission denied); give the volume a defaultMode the container user "
                    "can read (0440 with the pod's fsGroup, or 0444)",
                    name=self.name,
                    path=self.path,
                ) from None
        raise self._not_found(last)

    def _read_once(self) -> AccessToken:
        base = self._generation_dir()
        values = {key: _read_text(base / key) for key in ("access_token", "username", "expires_at")}
        optional = {key: _read_optional(base / key) for key in ("token_type", "scope")}
        if base != self.path and not base.is_dir():
            # The generation was swapped out while we read: start again from ..data.
            raise FileNotFoundError(base)
        for key, value in values.items():
            if not value.strip():
                raise TokenFormatError(
                    f"email token {self.name!r} at {self.path}: file {key!r} is empty",
                    name=self.name,
                    path=self.path,
                )
        try:
            expires_at = _parse_expiry(values["expires_at"])
        except ValueError:
            raise TokenFormatError(
                f"email token {self.name!r} at {self.path}: expires_at is not an RFC 3339 time",
                name=self.name,
                path=self.path,
            ) from None
        return AccessToken(
            name=self.name,
            access_token=values["access_token"].strip(),
            username=values["username"].strip(),
            expires_at=expires_at,
            token_type=(optional["token_type"] or "Bearer").strip(),
            scope=(optional["scope"] or "").strip(),
        )

    def _generation_dir(self) -> Path:
        """The directory to read all files from, so that they belong to one generation."""
        link = self.path / _DATA_LINK
        if link.is_symlink():
            target = Path(os.readlink(link))
            return target if target.is_absolute() else self.path / target
        return self.path

    def _not_found(self, cause: OSError | None) -> TokenNotFoundError:
        if not self.root.is_dir():
            hint = f"the mount root {self.root} does not exist"
        elif not self.path.is_dir():
            present = sorted(p.name for p in self.root.iterdir() if not p.name.startswith("."))
            hint = f"{self.path} does not exist (mounted here: {', '.join(present) or 'nothing'})"
        else:
            missing = getattr(cause, "filename", None)
            hint = f"{Path(missing).name if missing else 'a file'} is missing in {self.path}"
        return TokenNotFoundError(
            f"email token {self.name!r} not found: {hint}. Mount the Secret {self.name!r} (without subPath) "
            f"at {self.path}, or set {MOUNT_ROOT_ENV}",
            name=self.name,
            path=self.path,
        )


def _read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _read_optional(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def read_token(
    name: str, mount_root: str | os.PathLike[str] | None = None, *, skew: timedelta = DEFAULT_SKEW
) -> AccessToken:
    """Read a mounted token once (a shortcut for ``MountedToken(name, root).read()``)."""
    return MountedToken(name, mount_root, skew=skew).read()

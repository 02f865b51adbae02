"""A Secret volume on disk, updated the way the kubelet's atomic writer does it.

The kubelet never rewrites a mounted file in place. It writes a new hidden generation
directory ``..2026_11_29_00_00_00.123456789``, points a temporary symlink at it, renames
that over ``..data`` (atomic), makes every visible key a symlink ``key -> ..data/key``
and removes the previous generation. Tests use this to prove that a consumer reading at
each connection sees the new token without being re-created (and that nobody depends
on file identity, which a ``subPath`` mount would freeze).
"""

from __future__ import annotations

import base64
import os
import shutil
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

DATA_LINK = "..data"


class SecretVolume:
    """One mounted Secret: ``<root>/<name>/`` with kubelet-style generations."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.generations = 0

    def update(self, data: Mapping[str, str | bytes]) -> Path:
        """Publish a new generation with exactly these keys; returns its directory."""
        self.path.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y_%m_%d_%H_%M_%S")
        generation = self.path / f"..{stamp}.{time.monotonic_ns()}"
        generation.mkdir()
        for key, value in data.items():
            content = value.encode() if isinstance(value, str) else value
            (generation / key).write_bytes(content)
            (generation / key).chmod(0o644)
        old_target = os.readlink(self.path / DATA_LINK) if (self.path / DATA_LINK).is_symlink() else None
        tmp_link = self.path / "..data_tmp"
        if tmp_link.is_symlink():
            tmp_link.unlink()
        tmp_link.symlink_to(generation.name)
        tmp_link.rename(self.path / DATA_LINK)  # the atomic swap
        wanted = set(data)
        for entry in self.path.iterdir():
            if entry.name.startswith(".."):
                continue
            if entry.name not in wanted and entry.is_symlink():
                entry.unlink()
        for key in wanted:
            link = self.path / key
            if not link.is_symlink():
                link.symlink_to(f"{DATA_LINK}/{key}")
        if old_target:
            shutil.rmtree(self.path / old_target, ignore_errors=True)
        self.generations += 1
        return generation

    def update_from_secret(self, secret: Mapping[str, object]) -> Path:
        """Publish the ``data`` (base64) and ``stringData`` of a Secret body, as the kubelet would."""
        raw = secret.get("data") or {}
        assert isinstance(raw, Mapping)
        data: dict[str, str | bytes] = {k: base64.b64decode(str(v)) for k, v in raw.items()}
        string_data = secret.get("stringData") or {}
        assert isinstance(string_data, Mapping)
        data.update({k: str(v) for k, v in string_data.items()})
        return self.update(data)


def consumer_files(
    *,
    access_token: str,
    username: str,
    expires_at: datetime,
    scope: str = "",
    token_type: str = "Bearer",
) -> dict[str, str]:
    """The consumer Secret's keys as files (the contract in docs/consuming-tokens.md)."""
    raw = f"user={username}\x01auth=Bearer {access_token}\x01\x01"
    return {
        "access_token": access_token,
        "token_type": token_type,
        "expires_at": expires_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "username": username,
        "xoauth2": base64.b64encode(raw.encode()).decode(),
        "scope": scope,
    }

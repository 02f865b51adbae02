"""Durations (``90s``, ``10m``, ``1h30m``, ``2d``) and RFC 3339 timestamps as the API writes them."""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime, timedelta

_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """Parse a Go-like duration; raise ValueError with a readable message otherwise."""
    cleaned = text.strip()
    pos, total = 0, 0.0
    for match in _PART.finditer(cleaned):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not cleaned or pos != len(cleaned):
        raise ValueError(f"{text!r} is not a duration; use forms like 90s, 10m, 1h30m or 2d")
    return timedelta(seconds=total)


def format_duration(delta: timedelta) -> str:
    """Print a duration compactly, for messages."""
    seconds = int(delta.total_seconds())
    if seconds <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, seconds = divmod(seconds, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts)


@functools.lru_cache(maxsize=512)
def rfc3339(moment: datetime) -> str:
    """UTC timestamp in the form Kubernetes uses (``2026-11-29T01:02:03Z``).

    ``isoformat`` rather than ``strftime``, and remembered: a refresh formats about seven of
    these, most of them the same few moments (its ``now``, the new expiry), and formatting was
    still 3 % of the operator's CPU per refresh (bench/README.md, Profiles).
    """
    return moment.astimezone(UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 timestamp into an aware datetime."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    """Now, aware, in UTC."""
    return datetime.now(UTC)

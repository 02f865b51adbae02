"""emailtoken.timefmt: durations as people write them, timestamps as the API writes them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from emailtoken.timefmt import format_duration, parse_duration, parse_rfc3339, rfc3339, utcnow


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("10m", timedelta(minutes=10)),
        ("2h", timedelta(hours=2)),
        ("2d", timedelta(days=2)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("1.5h", timedelta(minutes=90)),
        ("0.5m", timedelta(seconds=30)),
        ("2.25s", timedelta(seconds=2.25)),
        (" 10m ", timedelta(minutes=10)),
        ("0s", timedelta(0)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    """Go-like forms, decimals included, add up."""
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "   ", "10", "m", "10x", "1h 30m", "-5m", "1.5.5h", "h1", "1H", "10m!", ".5h", "1,5h", "PT1H"],
)
def test_parse_duration_rejects_garbage(text: str) -> None:
    """Anything else is a readable error quoting the input, never a partial parse."""
    with pytest.raises(ValueError) as info:
        parse_duration(text)
    assert str(info.value) == f"{text!r} is not a duration; use forms like 90s, 10m, 1h30m or 2d"


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(seconds=90), "1m30s"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(days=1, hours=1, minutes=1, seconds=1), "1d1h1m1s"),
        (timedelta(days=3), "3d"),
        (timedelta(seconds=1.9), "1s"),
        (timedelta(0), "0s"),
        (timedelta(seconds=-5), "0s"),
    ],
)
def test_format_duration(delta: timedelta, text: str) -> None:
    """Compact, largest unit first, zero parts omitted, never negative."""
    assert format_duration(delta) == text


@pytest.mark.parametrize("delta", [timedelta(seconds=90), timedelta(hours=26, minutes=5, seconds=7)])
def test_format_then_parse_round_trip(delta: timedelta) -> None:
    """What we print in messages can be pasted back into refreshBefore."""
    assert parse_duration(format_duration(delta)) == delta


def test_rfc3339_is_utc_with_z_and_whole_seconds() -> None:
    """Kubernetes writes times like 2026-11-29T01:02:03Z."""
    moment = datetime(2026, 11, 29, 1, 2, 3, 987654, tzinfo=UTC)
    assert rfc3339(moment) == "2026-11-29T01:02:03Z"


def test_rfc3339_converts_other_zones_to_utc() -> None:
    """A non-UTC aware time is converted, not relabelled."""
    moment = datetime(2026, 11, 29, 3, 2, 3, tzinfo=timezone(timedelta(hours=2)))
    assert rfc3339(moment) == "2026-11-29T01:02:03Z"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-29T01:02:03Z", datetime(2026, 11, 29, 1, 2, 3, tzinfo=UTC)),
        ("2026-11-29T03:02:03+02:00", datetime(2026, 11, 29, 1, 2, 3, tzinfo=UTC)),
        ("2026-11-29T01:02:03.250000Z", datetime(2026, 11, 29, 1, 2, 3, 250000, tzinfo=UTC)),
        ("2026-11-29T01:02:03", datetime(2026, 11, 29, 1, 2, 3, tzinfo=UTC)),
    ],
)
def test_parse_rfc3339(text: str, expected: datetime) -> None:
    """Z, offsets and fractions parse to aware datetimes; a naive text is taken as UTC."""
    parsed = parse_rfc3339(text)
    assert parsed == expected
    assert parsed.tzinfo is not None


def test_rfc3339_round_trip() -> None:
    """Formatting and parsing agree to the second (what status and Secrets store)."""
    moment = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_rfc3339(rfc3339(moment)) == moment
    assert rfc3339(parse_rfc3339("2030-01-02T03:04:05Z")) == "2030-01-02T03:04:05Z"


def test_parse_rfc3339_rejects_garbage() -> None:
    """Callers rely on ValueError to ignore unreadable annotations."""
    with pytest.raises(ValueError):
        parse_rfc3339("yesterday")


def test_utcnow_is_aware_utc() -> None:
    """Naive datetimes would compare wrongly against parsed API times."""
    now = utcnow()
    assert now.tzinfo is not None
    assert now.utcoffset() == timedelta(0)

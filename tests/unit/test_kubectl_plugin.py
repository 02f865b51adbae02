"""The kubectl plugin's pure parts: time in words, tables, next-step hints, flags, delegation.

The plugin against a real API and the running operator is in
tests/integration/test_kubectl_plugin.py.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from emailtoken import kubectl_plugin as plugin

NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (45, "45s"),
        (119, "119s"),
        (150, "2m30s"),
        (300, "5m"),
        (3540, "59m"),
        (3 * 3600 + 60, "3h1m"),
        (9 * 3600, "9h"),
        (3 * 86400 + 3600, "3d1h"),
        (40 * 86400, "40d"),
    ],
)
def test_human_duration(seconds: int, text: str) -> None:
    assert plugin.human_duration(timedelta(seconds=seconds)) == text
    assert plugin.human_duration(timedelta(seconds=-seconds)) == text


def test_relative_and_when() -> None:
    assert plugin.relative(NOW + timedelta(minutes=5), NOW) == "in 5m"
    assert plugin.relative(NOW - timedelta(minutes=5), NOW) == "5m ago"
    assert plugin.when("2026-11-29T13:00:00Z", NOW) == "2026-11-29T13:00:00Z (in 60m)"
    assert plugin.when(None, NOW) == "-"
    assert plugin.when("not a time", NOW) == "-"


def token(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "inbox", "namespace": "mail", "creationTimestamp": "2026-11-29T11:00:00Z"},
        "spec": {
            "provider": "Microsoft",
            "flow": status.pop("flow", "AuthorizationCode"),
            "emailAddress": "a@contoso.com",
            "clientSecretRef": {"name": "app"},
        },
        "status": status,
    }


def test_list_rows() -> None:
    ready = token(
        conditions=[{"type": "Ready", "status": "True"}],
        phase="Ready",
        expiresAt="2026-11-29T12:59:00Z",
        lastRefreshTime="2026-11-29T11:59:00Z",
    )
    rows = plugin.list_rows([ready, token()], NOW, all_namespaces=True)
    assert rows[0][:2] == ["NAMESPACE", "NAME"]
    assert rows[1] == [
        "mail",
        "inbox",
        "Microsoft",
        "AuthorizationCode",
        "a@contoso.com",
        "True",
        "Ready",
        "in 59m",
        "60s ago",
        "60m",
    ]
    assert rows[2][5:9] == ["Unknown", "Pending", "-", "-"]
    assert plugin.table([["A", "BB"], ["ccc", "d"]]) == "A     BB\nccc   d"


@pytest.mark.parametrize(
    ("status", "hint"),
    [
        (
            {"conditions": [{"type": "Authorized", "status": "False", "reason": "AwaitingAuthorization"}]},
            "kubectl emailtoken authorize inbox -n mail or use the callback admin page",
        ),
        (
            {
                "conditions": [{"type": "Authorized", "status": "False", "reason": "AwaitingAuthorization"}],
                "authorizeUrl": "http://localhost:8081/authorize/mail/inbox",
            },
            "or open http://localhost:8081/authorize/mail/inbox",
        ),
        (
            {"conditions": [{"type": "Authorized", "status": "False", "reason": "ReauthorizationRequired"}]},
            "kubectl emailtoken reauthorize inbox -n mail",
        ),
        (
            {"conditions": [{"type": "Authorized", "status": "False", "reason": "InvalidClient"}]},
            "Secret app (key client_secret)",
        ),
        (
            {"conditions": [{"type": "Ready", "status": "False", "reason": "SecretNotFound"}]},
            "create the Secret app in namespace mail",
        ),
        (
            {"flow": "DeviceCode", "deviceCode": {"userCode": "ABCD", "verificationUri": "https://x/devicelogin"}},
            "open https://x/devicelogin and enter the code ABCD",
        ),
    ],
)
def test_next_step(status: dict[str, Any], hint: str) -> None:
    step = plugin.next_step(token(**status))
    assert step is not None and hint in step


def test_no_next_step_when_ready() -> None:
    assert plugin.next_step(token(conditions=[{"type": "Ready", "status": "True", "reason": "TokenValid"}])) is None


def test_describe_without_status_or_events() -> None:
    text = plugin.describe(token(), [], NOW)
    assert "Phase:         Pending" in text
    assert "  Ready: Unknown" in text
    assert "Events:        <none>" in text


def test_describe_shows_recent_events_newest_last() -> None:
    events = [
        {"type": "Normal", "reason": f"R{i}", "message": f"m{i}", "lastTimestamp": f"2026-11-29T11:{i:02d}:00Z"}
        for i in range(15)
    ]
    events[-1]["count"] = 3
    text = plugin.describe(token(), events, NOW)
    lines = text.split("Events:\n")[1].splitlines()
    assert lines[0].split() == ["TYPE", "REASON", "AGE", "MESSAGE"]
    assert len(lines) == 1 + plugin.MAX_EVENTS
    assert lines[-1].split() == ["Normal", "R14", "46m", "(x3)", "m14"]


def test_global_flags_before_or_after_the_command() -> None:
    parser = plugin.build_parser()
    for argv in (
        ["-n", "mail", "--context", "prod", "status", "inbox"],
        ["status", "inbox", "-n", "mail", "--context", "prod"],
        ["status", "--namespace=mail", "inbox", "--context=prod"],
    ):
        args, extra = parser.parse_known_args(argv)
        assert (args.command, args.name, args.namespace, args.context, extra) == ("status", "inbox", "mail", "prod", [])
    args = parser.parse_args(["refresh", "inbox", "--wait", "--timeout", "2m"])
    assert args.wait and args.timeout == timedelta(minutes=2)
    args = parser.parse_args(["list", "-A"])
    assert args.all_namespaces


def test_unknown_flags_are_errors_except_for_authorize(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        plugin.main(["list", "--bogus"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_authorize_without_the_command(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(plugin, "_authorize_options", lambda: None)
    assert plugin.main(["authorize", "inbox", "-n", "mail"]) == 1
    out = capsys.readouterr().out
    assert "emailtoken authorize NAMESPACE/NAME" in out and "not part of this installation" in out


def test_authorize_delegates_to_emailtoken_authorize(monkeypatch: pytest.MonkeyPatch) -> None:
    from emailtoken import cli

    seen: list[list[str]] = []
    monkeypatch.setattr(plugin, "_authorize_options", lambda: {"--no-browser", "--context"})
    monkeypatch.setattr(cli, "main", lambda argv: seen.append(list(argv)) or 0)
    assert plugin.main(["authorize", "inbox", "-n", "mail", "--no-browser", "--context", "prod"]) == 0
    assert seen == [["authorize", "mail/inbox", "--no-browser", "--context", "prod"]]


def test_authorize_refuses_a_context_it_cannot_pass(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(plugin, "_authorize_options", lambda: {"--no-browser"})
    assert plugin.main(["authorize", "inbox", "-n", "mail", "--context", "prod"]) == 1
    assert "use-context" in capsys.readouterr().out


def test_the_real_authorize_command_is_found_when_installed() -> None:
    options = plugin._authorize_options()
    try:
        import emailtoken.authorize  # noqa: F401
    except ImportError:
        assert options is None
    else:
        assert options is not None and "--help" in options


def test_stamp_changes_within_a_second() -> None:
    assert plugin._stamp(NOW) == "2026-11-29T12:00:00.000000Z"
    assert plugin._stamp(NOW) != plugin._stamp(NOW + timedelta(microseconds=1))
    assert isinstance(plugin.build_parser(), argparse.ArgumentParser)

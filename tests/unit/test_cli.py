"""emailtoken.cli: operator flags become the right OperatorConfig."""

from __future__ import annotations

from datetime import timedelta

import pytest

from emailtoken.cli import build_parser, config_from_args
from emailtoken.settings import OperatorConfig


def config(*flags: str) -> OperatorConfig:
    return config_from_args(build_parser().parse_args(["run", *flags]))


def test_defaults_send_events_for_changes_only() -> None:
    """Routine refreshes are visible in status and metrics; Events are kept for changes."""
    default = config()
    assert default.routine_events is False
    assert default.keepalive == timedelta(days=3)


def test_refresh_events_all_and_keepalive() -> None:
    """``--refresh-events all`` turns the per-refresh Event back on; durations parse."""
    chosen = config("--refresh-events", "all", "--keepalive", "12h", "--concurrency", "4")
    assert chosen.routine_events is True
    assert chosen.keepalive == timedelta(hours=12)
    assert chosen.concurrency == 4


def test_namespaces_are_exact_names() -> None:
    """Each served namespace gets its own Secret watch, so a pattern is refused at the command line."""
    chosen = config("--namespace", "mail", "-n", "team-a")
    assert chosen.namespaces == ("mail", "team-a") and chosen.all_namespaces is False
    assert config().all_namespaces is True
    for bad in ("team-*", "Mail", "-x", "a" * 64):
        with pytest.raises(SystemExit):
            config("--namespace", bad)


def test_peering_was_removed_and_standalone_is_ignored(capsys: pytest.CaptureFixture[str]) -> None:
    """kopf watches no resource, so its peering would pause nothing: ``--peering`` says so in one
    line (exit 2); ``--standalone``, the old default, still starts; neither is in ``--help``."""
    with pytest.raises(SystemExit) as exited:
        config("--peering", "x")
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err == (
        "emailtoken run: --peering was removed: kopf peering no longer pauses anything (kopf watches no "
        "resource); leader election (--leader-election, on by default) keeps a second operator from writing\n"
    )
    assert config("--standalone") == config()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    shown = capsys.readouterr().out
    assert "--peering" not in shown and "--standalone" not in shown

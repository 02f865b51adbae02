"""emailtoken.report: the pure policy from a step's findings to the status it writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from emailtoken.failures import Failure
from emailtoken.model import TokenRef, parse_spec
from emailtoken.outcomes import ErrorKind
from emailtoken.report import (
    Findings,
    Links,
    Report,
    after_write,
    announced,
    changed,
    first_authorization,
    known_status,
    phase_of,
    render_status,
)
from emailtoken.secretdata import PublishedToken

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
TOKEN = TokenRef("mail", "inbox")
SPEC = parse_spec(
    {"provider": "Microsoft", "tenantId": "t", "clientId": "c", "clientSecretRef": {"name": "s"}, "services": ["IMAP"]},
    "inbox",
)


def published(expires_in: timedelta) -> PublishedToken:
    return PublishedToken(NOW + expires_in, NOW, "ann@example.com", "IMAP", None)


def test_phase_names_the_condition_that_is_not_true() -> None:
    assert phase_of({"status": "True"}, {"status": "True"}) == "Ready"
    assert phase_of({"status": "True"}, {"status": "False", "reason": "ReauthorizationRequired"}) == (
        "ReauthorizationRequired"
    )
    assert phase_of({"status": "False", "reason": "ProviderUnavailable"}, None) == "ProviderUnavailable"
    assert phase_of(None, None) == "Pending"


def test_a_transient_failure_keeps_ready_while_the_token_is_valid_and_says_nothing_of_the_grant() -> None:
    report = Report()
    error = Failure(ErrorKind.TRANSIENT, "HTTP 503", "ProviderUnavailable")
    report.failed(error, published(timedelta(minutes=30)), token_valid=True)
    assert report.ready is not None and report.ready.status and report.ready.reason == "TokenValid"
    assert report.authorized is None


def test_status_is_rendered_whole_and_only_changes_are_written() -> None:
    report = Report()
    report.steady(published(timedelta(hours=1)), "Microsoft", token_valid=True)
    found = Findings(published(timedelta(hours=1)), NOW + timedelta(minutes=40), None, 0, None, {})
    body = {"metadata": {"generation": 3}, "status": {}}
    status = render_status(body, TOKEN, SPEC, found, report, Links("https://cb.example", None), NOW)
    assert status["phase"] == "Ready" and status["secretName"] == "inbox"
    assert status["redirectUri"] == "https://cb.example/callback" and "authorizeUrl" not in status
    assert status["account"] == "ann@example.com" and status["observedGeneration"] == 3
    assert status["deviceCode"] is None and status["refreshFailures"] == 0
    again = render_status({**body, "status": status}, TOKEN, SPEC, found, Report(), Links("https://cb.example"), NOW)
    assert changed(again, status) == {}


def test_a_step_that_changed_nothing_shows_the_standing_failure_else_the_steady_conditions() -> None:
    failing, steady, token = Report(), Report(), published(timedelta(hours=1))
    failing.standing(Failure(ErrorKind.REAUTHORIZE, "revoked"), token, "Microsoft", token_valid=True)
    steady.standing(None, token, "Microsoft", token_valid=True)
    assert failing.authorized is not None and failing.authorized.status is False
    assert steady.authorized is not None and steady.authorized.status is True


def test_the_first_token_or_the_first_after_a_failure_is_announced_as_authorized() -> None:
    assert first_authorization(None, None, 0)
    assert first_authorization(published(timedelta(hours=1)), Failure(ErrorKind.TRANSIENT, "down"), 0)
    assert first_authorization(published(timedelta(hours=1)), None, 1)
    assert not first_authorization(published(timedelta(hours=1)), None, 0)


def test_known_status_prefers_our_write_over_the_body_it_was_computed_from() -> None:
    written = ("41", {"refreshFailures": 1})
    stale = {"metadata": {"resourceVersion": "41"}, "status": {"refreshFailures": 0}}
    echoed = {"metadata": {"resourceVersion": "42"}, "status": {"refreshFailures": 1, "phase": "Ready"}}
    assert known_status(stale, written) == {"refreshFailures": 1}
    assert known_status(echoed, written) == echoed["status"]
    assert known_status(stale, None) == {"refreshFailures": 0}
    assert known_status({"status": {"phase": "Ready"}}, ("", {"phase": "Failed"})) == {"phase": "Ready"}


def test_writes_on_the_same_stale_body_add_up_and_an_echo_starts_over() -> None:
    """Only the written fields are kept (the body has the rest), and two writes computed from the
    same old body both count; a newer body starts over."""
    stale = {"metadata": {"resourceVersion": "41"}, "status": {"phase": "Ready", "refreshFailures": 0}}
    first = after_write(stale, None, {"refreshFailures": 1})
    assert first == ("41", {"refreshFailures": 1})
    second = after_write(stale, first, {"nextRefreshTime": "later"})
    assert known_status(stale, second) == {"phase": "Ready", "refreshFailures": 1, "nextRefreshTime": "later"}
    echoed = {"metadata": {"resourceVersion": "42"}, "status": {"phase": "Ready"}}
    assert after_write(echoed, second, {"phase": "Failed"}) == ("42", {"phase": "Failed"})


def test_a_refresh_is_announced_when_asked_for_after_a_spec_change_or_when_all_are() -> None:
    assert announced(asked=True, spec_current=True, routine=False)
    assert announced(asked=False, spec_current=False, routine=False)  # the spec changed
    assert announced(asked=False, spec_current=True, routine=True)  # --refresh-events all
    assert not announced(asked=False, spec_current=True, routine=False)  # routine: status and metrics show it

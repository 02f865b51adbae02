"""emailtoken.failures: every way a step fails as one value, and what follows (retry time, Warning Event)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from emailtoken import failures
from emailtoken.failures import Failure, Refusal
from emailtoken.model import parse_spec
from emailtoken.outcomes import ErrorKind, ProviderError, TokenSet
from emailtoken.secretdata import Grant

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
TEN_MIN = timedelta(minutes=10)
SPEC = parse_spec(
    {
        "provider": "Microsoft",
        "tenantId": "contoso",
        "clientId": "c",
        "clientSecretRef": {"name": "s"},
        "emailAddress": "ann@contoso.com",
        "services": ["IMAP"],
    },
    "inbox",
)


def after(failure: Failure, count: int, last: tuple[str, str] | None = None) -> failures.Verdict:
    return failures.after(failure, count, last, NOW, rng=random.Random(7))


@pytest.mark.parametrize(
    ("kind", "low", "high"),
    [
        (ErrorKind.TRANSIENT, 2.5, 5),  # the first backoff: 5 s with jitter down to half
        (ErrorKind.INVALID_CLIENT, 30, 60),
        (ErrorKind.PERMISSION_DENIED, 1, 2),
        (ErrorKind.BAD_CONFIG, 600, 600),
    ],
)
def test_each_kind_retries_on_its_own_schedule(kind: ErrorKind, low: float, high: float) -> None:
    verdict = after(Failure(kind, "x"), 1)
    assert verdict.retry_at is not None
    assert low <= (verdict.retry_at - NOW).total_seconds() <= high


def test_a_dead_grant_waits_for_a_person_and_retry_after_is_a_floor() -> None:
    assert after(Failure(ErrorKind.REAUTHORIZE, "revoked"), 1).retry_at is None
    throttled = after(failures.of_provider(ProviderError(ErrorKind.TRANSIENT, "busy", retry_after=120)), 1)
    assert throttled.retry_at == NOW + timedelta(seconds=120)


def test_a_standing_failure_warns_when_new_then_at_powers_of_two() -> None:
    failure = Failure(ErrorKind.TRANSIENT, "HTTP 503", "ProviderUnavailable")
    last = (failure.reason, failure.message)
    warned = [n for n in range(1, 20) if after(failure, n, last).event is not None]
    assert warned == [1, 2, 4, 8, 16]
    assert after(failure, 3).event == ("Warning", "RefreshFailed", "ProviderUnavailable: HTTP 503")
    assert after(Failure(ErrorKind.REAUTHORIZE, "gone"), 3).event == (
        "Warning",
        "ReauthorizationRequired",
        "ReauthorizationRequired: gone",
    )


def test_a_bad_configuration_warns_once_until_it_changes() -> None:
    """A Secret conflict (reading or writing the consumer Secret alike) waits for a person: retried
    every ten minutes in case a watch was missed, warned about once."""
    conflict = failures.of_conflict("Secret mail/box exists and is not managed by this EmailToken")
    last = (conflict.reason, conflict.message)
    assert after(conflict, 1).event == ("Warning", "RefreshFailed", f"SecretConflict: {conflict.message}")
    assert [n for n in range(1, 20) if after(conflict, n, last).event is not None] == []
    assert all(after(conflict, n, last).retry_at == NOW + TEN_MIN for n in (1, 2, 8))


def test_api_failures_name_the_refusal_and_show_other_answers_by_status_only() -> None:
    refused = failures.of_api(403, 'secrets "x" is forbidden', "reading Secret ns/x")
    assert (refused.kind, refused.reason) == (ErrorKind.PERMISSION_DENIED, "PermissionDenied")
    assert 'secrets "x" is forbidden' in refused.message
    other = failures.of_api(422, "the body quoted: refresh_token=abc", "writing Secret ns/x")
    assert other.reason == "APIUnavailable" and "abc" not in other.message and "HTTP 422" in other.message


def test_the_same_refused_inputs_wait_for_their_retry_other_inputs_do_not() -> None:
    refusal = Refusal("digest-1", NOW + TEN_MIN)
    assert failures.repeats(refusal, "digest-1", NOW)
    assert not failures.repeats(refusal, "digest-1", NOW + TEN_MIN)
    assert not failures.repeats(refusal, "digest-2", NOW)
    assert failures.repeats(Refusal("digest-1", None), "digest-1", NOW + 1000 * TEN_MIN)  # a person must act
    assert not failures.repeats(None, "digest-1", NOW)


def test_a_grant_for_another_account_or_endpoint_is_not_presented() -> None:
    theirs = Grant("rt", "bob@contoso.com", "IMAP", token_url=SPEC.token_url)
    assert failures.unpresentable(SPEC, theirs).reason == "AccountMismatch"  # type: ignore[union-attr]
    moved = Grant("rt", "Ann@Contoso.com", "IMAP", token_url="https://login.example/other/token")
    assert failures.unpresentable(SPEC, moved).reason == "EndpointChanged"  # type: ignore[union-attr]
    ours = Grant("rt", "Ann@Contoso.com", "IMAP", token_url=SPEC.token_url)
    assert failures.unpresentable(SPEC, ours) is None


def test_a_device_sign_in_needs_the_mailbox_and_a_refresh_token() -> None:
    signed = TokenSet("at", NOW + TEN_MIN, refresh_token="rt", account="ann@contoso.com")
    assert failures.device_sign_in(SPEC, signed) is None
    wrong = TokenSet("at", NOW + TEN_MIN, refresh_token="rt", account="bob@contoso.com")
    assert failures.device_sign_in(SPEC, wrong).reason == "AccountMismatch"  # type: ignore[union-attr]
    no_rt = TokenSet("at", NOW + TEN_MIN, account="ann@contoso.com")
    assert failures.device_sign_in(SPEC, no_rt).reason == "NoRefreshToken"  # type: ignore[union-attr]


def test_a_refused_attempt_holds_back_its_repeat_while_the_token_fails_unless_refresh_now() -> None:
    refused = Failure(ErrorKind.REAUTHORIZE, "dead grant")
    refusal = Refusal("digest", NOW + TEN_MIN)
    assert failures.holds_back(refusal, refused, "digest", NOW, force=False)
    assert not failures.holds_back(refusal, refused, "digest", NOW, force=True)  # someone asked
    assert not failures.holds_back(refusal, None, "digest", NOW, force=False)  # no failure stands
    assert not failures.holds_back(refusal, refused, "other", NOW, force=False)  # a new secret or grant
    assert not failures.holds_back(refusal, refused, "digest", NOW + TEN_MIN, force=False)  # retry due


def test_a_changed_secret_wakes_a_failing_or_waiting_token_and_not_a_healthy_one() -> None:
    failing = Failure(ErrorKind.TRANSIENT, "down")
    assert failures.retry_on_change(2, None, NOW + TEN_MIN)
    assert failures.retry_on_change(0, failing, NOW + TEN_MIN)  # an awaiting or standing failure
    assert failures.retry_on_change(0, None, None)  # nothing planned: it waits for a change
    assert not failures.retry_on_change(0, None, NOW + TEN_MIN)  # healthy: keeps its plan


def test_only_a_failure_that_needs_a_sign_in_makes_the_grant_unusable() -> None:
    assert failures.grant_usable(None)
    assert failures.grant_usable(Failure(ErrorKind.TRANSIENT, "down"))
    assert not failures.grant_usable(Failure(ErrorKind.REAUTHORIZE, "revoked"))

"""emailtoken.setbacks: a failure written into the token's state and the step's report as failures.after decides."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from emailtoken.failures import Failure, Refusal
from emailtoken.model import TokenRef, parse_spec
from emailtoken.outcomes import ErrorKind
from emailtoken.report import Report
from emailtoken.setbacks import Setbacks
from emailtoken.tokenstate import TokenState

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(seconds=30)
TOKEN = TokenRef("mail", "inbox")
SPEC = parse_spec(
    {"provider": "Microsoft", "tenantId": "t", "clientId": "c", "clientSecretRef": {"name": "s"}, "services": ["IMAP"]},
    "inbox",
)
DOWN = Failure(ErrorKind.TRANSIENT, "down", retry_after=60.0)


def setbacks() -> Setbacks:
    return Setbacks(lambda: LATER, random.Random(1))


def test_a_failure_is_counted_retried_after_the_slow_call_and_warned_once() -> None:
    st, first, second = TokenState(), Report(), Report()
    setbacks().fail(st, DOWN, first, NOW)
    assert st.failures == 1 and st.error == DOWN and first.outcome == "ProviderUnavailable"
    assert st.attempt_at is not None and st.attempt_at >= LATER + timedelta(seconds=60)  # from the clock, not `now`
    assert [e[1] for e in first.events] == ["RefreshFailed"] and st.last_warning == ("ProviderUnavailable", "down")
    assert first.ready is not None and first.ready.status is False
    setbacks().fail(st, DOWN, second, NOW)
    assert st.failures == 2 and [e[1] for e in second.events] == ["RefreshFailed"]  # 2 is a power of two
    setbacks().fail(st, DOWN, third := Report(), NOW)
    assert third.events == []  # the same failure, a third time: no new Warning


def test_a_refusal_remembers_what_was_presented_and_holds_back_its_repeat() -> None:
    st, report = TokenState(), Report()
    setbacks().refused(st, DOWN, "digest", report, NOW)
    assert st.refusal == Refusal("digest", st.attempt_at)
    st.attempt_at = NOW  # a nudge
    held = Report()
    assert setbacks().held_back(st, "digest", held, NOW, force=False)
    assert st.attempt_at == st.refusal.retry_at and held.ready is not None
    assert not setbacks().held_back(st, "digest", Report(), NOW, force=True)
    assert not setbacks().held_back(st, "new secret", Report(), NOW, force=False)


def test_no_grant_yet_waits_for_a_person_and_says_so_once() -> None:
    st, first, again = TokenState(failures=3, attempt_at=NOW), Report(), Report()
    setbacks().awaiting(TOKEN, SPEC, st, first, NOW)
    assert st.attempt_at is None and st.failures == 0 and st.error is not None
    assert [e[:2] for e in first.events] == [("Normal", "AwaitingAuthorization")]
    setbacks().awaiting(TOKEN, SPEC, st, again, NOW)
    assert again.events == []

"""emailtoken.advisories: warnings before a grant dies or a service is switched off (pure policy)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from emailtoken import advisories
from emailtoken.advisories import GRANT_EXPIRING, SERVICE_RETIRING, advise, grant_limit, stated_expiry
from emailtoken.conditions import merge
from emailtoken.metrics import MetricsObserver
from emailtoken.model import TokenRef, parse_spec
from emailtoken.outcomes import TokenSet
from emailtoken.report import Findings, Links, Report, render_status
from emailtoken.secretdata import Grant

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
WINDOW = timedelta(days=3)
GOOGLE = parse_spec(
    {"provider": "Google", "clientId": "c", "clientSecretRef": {"name": "s"}, "services": ["Gmail"]}, "inbox"
)


def microsoft(**spec: Any) -> Any:
    base = {"provider": "Microsoft", "tenantId": "t", "clientId": "c", "clientSecretRef": {"name": "s"}}
    return parse_spec({**base, "services": ["IMAP"], **spec}, "inbox")


def run(spec: Any, limit: Any, status: dict[str, Any] | None = None, warned: frozenset[str] = frozenset(), **kw: Any):
    return advise(
        spec,
        "mail/inbox",
        limit,
        grant_usable=kw.get("usable", True),
        status=status or {},
        warned=warned,
        now=kw.get("now", NOW),
        window=WINDOW,
    )


def as_status(advice: advisories.Advice) -> dict[str, Any]:
    return {"conditions": merge(None, advice.conditions, now=NOW, generation=1), **advice.fields}


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (604799, NOW + timedelta(seconds=604799)),
        ("3600", NOW + timedelta(hours=1)),
        (None, None),
        ("", None),
        ("soon", None),
        (True, None),
        (0, None),
        (-5, None),
        (10**12, None),
        ([604799], None),
    ],
)
def test_stated_expiry_believes_only_a_sane_number_of_seconds(seconds: Any, expected: datetime | None) -> None:
    """A provider's refresh_token_expires_in becomes a time; junk becomes 'unknown', never an exception."""
    assert stated_expiry(seconds, NOW) == expected


def test_the_earliest_known_limit_wins() -> None:
    """A Testing grant's 7 days come before the 6-month unused limit; without a stated end, the unused one."""
    stated = NOW + timedelta(days=7)
    limit = grant_limit("Google", stated, NOW)
    assert limit is not None and limit.at == stated and limit.reason == advisories.STATED_LIFETIME
    unused = grant_limit("Google", None, NOW)
    assert unused is not None and unused.at == NOW + timedelta(days=183) and unused.reason == advisories.UNUSED_LIMIT
    ms = grant_limit("Microsoft", None, NOW - timedelta(days=10))
    assert ms is not None and ms.at == NOW + timedelta(days=80)
    assert grant_limit("Microsoft", None, None) is None


def test_a_stated_end_names_the_cause_of_its_provider() -> None:
    """Google's stated end comes from an app in Testing; Microsoft's from a SPA redirect URI (24 h)."""
    google = grant_limit("Google", NOW + timedelta(days=7), NOW)
    microsoft = grant_limit("Microsoft", NOW + timedelta(hours=24), NOW)
    assert google is not None and "Testing" in google.cause and "single-page" not in google.cause
    assert microsoft is not None and "single-page" in microsoft.cause and "Testing" not in microsoft.cause


def test_a_testing_grant_outside_the_window_says_when_without_warning() -> None:
    """Status carries the date from the start; the condition is False and no Event yet."""
    advice = run(GOOGLE, grant_limit("Google", NOW + timedelta(days=6), NOW))
    (cond,) = advice.conditions
    assert (cond.type, cond.status, cond.reason) == (GRANT_EXPIRING, False, "StatedLifetime")
    assert advice.fields == {"reauthorizationRequiredBy": "2026-12-11T12:00:00Z"}
    assert advice.events == [] and advice.warned == frozenset()
    assert cond.message == "re-authorization is needed by 2026-12-11T12:00:00Z; a warning comes 3 days before"
    assert advice.deadline == NOW + timedelta(days=6)


def test_inside_the_window_the_condition_turns_true_with_the_date_and_one_warning_event() -> None:
    limit = grant_limit("Google", NOW + timedelta(days=2, hours=5), NOW - timedelta(days=5))
    advice = run(GOOGLE, limit)
    (cond,) = advice.conditions
    assert (cond.type, cond.status, cond.reason) == (GRANT_EXPIRING, True, "StatedLifetime")
    assert "re-authorization is needed by 2026-12-07T17:00:00Z (in 2 days 5 hours)" in cond.message
    assert "Testing" in cond.message and "emailtoken authorize mail/inbox" in cond.message
    assert advice.events == [("Warning", GRANT_EXPIRING, cond.message)]
    assert advice.warned == {GRANT_EXPIRING}
    # The next steps: remembered in memory, or already True in status (a restart): no second Event.
    assert run(GOOGLE, limit, warned=advice.warned).events == []
    assert run(GOOGLE, limit, status=as_status(advice)).events == []


def test_a_new_grant_ends_the_warning_and_a_later_window_warns_again() -> None:
    old = grant_limit("Google", NOW + timedelta(days=1), NOW)
    first = run(GOOGLE, old)
    renewed = run(
        GOOGLE, grant_limit("Google", NOW + timedelta(days=7), NOW), status=as_status(first), warned=first.warned
    )
    assert renewed.conditions[0].status is False and renewed.warned == frozenset() and renewed.events == []
    later = NOW + timedelta(days=5)
    again = run(GOOGLE, grant_limit("Google", NOW + timedelta(days=7), NOW), warned=renewed.warned, now=later)
    assert again.conditions[0].status is True and len(again.events) == 1


def test_microsoft_warns_when_no_refresh_has_succeeded_for_almost_90_days() -> None:
    """Refreshes slide the 90 days; a token stuck for 88 days is two days from needing a sign-in."""
    last = NOW - timedelta(days=88)
    advice = run(microsoft(), grant_limit("Microsoft", None, last))
    (cond,) = advice.conditions
    assert cond.status is True and cond.reason == "UnusedLimit"
    assert "90 days unused" in cond.message and "2026-09-08T12:00:00Z" in cond.message
    healthy = run(microsoft(), grant_limit("Microsoft", None, NOW - timedelta(hours=1)))
    assert healthy.conditions[0].status is False


def test_app_only_and_grantless_tokens_get_no_grant_warning() -> None:
    """ClientCredentials has no refresh token; a token waiting for a sign-in has nothing to lose."""
    app_only = microsoft(flow="ClientCredentials", emailAddress="box@contoso.com")
    assert run(app_only, grant_limit("Microsoft", None, NOW)).conditions == []
    assert run(app_only, None).fields == {"reauthorizationRequiredBy": None}
    shown = as_status(run(GOOGLE, grant_limit("Google", NOW + timedelta(days=1), NOW)))
    dead = run(GOOGLE, grant_limit("Google", NOW + timedelta(days=1), NOW), status=shown, usable=False)
    assert [(c.type, c.status, c.reason) for c in dead.conditions] == [(GRANT_EXPIRING, False, "NoGrant")]
    assert dead.fields == {"reauthorizationRequiredBy": None} and dead.events == []


@pytest.mark.parametrize(
    "spec",
    [
        microsoft(services=["EWS"]),
        microsoft(services=["IMAP", "EWS"], flow="ClientCredentials", emailAddress="box@contoso.com"),
        microsoft(services=None, scopes=["https://outlook.office.com/EWS.AccessAsUser.All"]),
    ],
    ids=["delegated", "app-only", "scope"],
)
def test_an_ews_token_is_marked_retiring_with_the_dates_once(spec: Any) -> None:
    advice = run(spec, None)
    cond = next(c for c in advice.conditions if c.type == SERVICE_RETIRING)
    assert (cond.status, cond.reason) == (True, "EWSRetirement")
    assert "2026-10-01" in cond.message and "2027-04-01" in cond.message and "MC1227454" in cond.message
    assert "Graph" in cond.message
    assert advice.events == [("Warning", SERVICE_RETIRING, cond.message)]
    assert run(spec, None, status=as_status(advice)).events == []


def test_moving_off_ews_clears_the_condition_and_others_never_get_it() -> None:
    shown = as_status(run(microsoft(services=["EWS"]), None))
    moved = run(microsoft(services=["GraphMailRead"]), None, status=shown)
    assert [(c.type, c.status) for c in moved.conditions] == [(SERVICE_RETIRING, False)]
    assert run(microsoft(services=["GraphMailRead", "GraphMailSend"]), None).conditions == []
    assert run(GOOGLE, None).conditions == []


def test_remembered_stated_reads_only_a_stated_end_back_from_status() -> None:
    """After a restart the stated end is kept until the next refresh restates it; an unused limit is recomputed."""
    stated = run(GOOGLE, grant_limit("Google", NOW + timedelta(days=1), NOW))
    assert advisories.remembered_stated(as_status(stated)) == NOW + timedelta(days=1)
    not_yet = run(GOOGLE, grant_limit("Google", NOW + timedelta(days=6), NOW))
    assert advisories.remembered_stated(as_status(not_yet)) == NOW + timedelta(days=6)
    unused = run(microsoft(), grant_limit("Microsoft", None, NOW))
    assert advisories.remembered_stated(as_status(unused)) is None
    assert advisories.remembered_stated({}) is None


def test_the_stated_end_is_the_answers_else_the_grants() -> None:
    """Google states a Testing app's refresh token end on some answers only: the grant Secret keeps it."""
    stored = Grant("rt", "box@example.com", refresh_expires_at="2026-12-09T12:00:00Z")
    stating = TokenSet("at", NOW, refresh_expires_at=NOW + timedelta(days=7))
    silent = TokenSet("at", NOW)
    assert advisories.stated_end(stating, stored) == NOW + timedelta(days=7)
    assert advisories.stated_end(silent, stored) == datetime(2026, 12, 9, 12, 0, tzinfo=UTC)
    assert advisories.stated_end(silent, Grant("rt", "box@example.com")) is None
    assert advisories.stated_end(silent, Grant("rt", "box@example.com", refresh_expires_at="garbage")) is None


def test_the_report_renders_the_advisories_next_to_ready_and_authorized() -> None:
    advice = run(GOOGLE, grant_limit("Google", NOW + timedelta(days=1), NOW))
    report = Report(advisories=list(advice.conditions), fields=dict(advice.fields))
    found = Findings(None, None, None, 0, None, {})
    status = render_status(
        {"metadata": {"generation": 2}}, TokenRef("mail", "inbox"), GOOGLE, found, report, Links(), NOW
    )
    assert [c["type"] for c in status["conditions"]] == [GRANT_EXPIRING]
    assert status["reauthorizationRequiredBy"] == "2026-12-06T12:00:00Z"


def test_the_gauge_carries_the_deadline_and_disappears_without_one() -> None:
    obs = MetricsObserver()
    deadline = NOW + timedelta(days=2, microseconds=5)
    obs.token_state(
        ("mail", "inbox"),
        provider="Google",
        ready=True,
        authorized=True,
        expires_at=None,
        next_refresh=None,
        reauthorize_by=deadline,
    )
    labels = {"namespace": "mail", "name": "inbox", "provider": "Google"}
    metric = "emailtoken_token_reauthorization_required_timestamp_seconds"
    assert obs.registry.get_sample_value(metric, labels) == (NOW + timedelta(days=2)).timestamp()
    obs.token_state(
        ("mail", "inbox"), provider="Google", ready=True, authorized=True, expires_at=None, next_refresh=None
    )
    assert obs.registry.get_sample_value(metric, labels) is None

"""emailtoken.tokenstate: the two ways a grant stops being ours mid-step, as named transitions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from emailtoken.failures import of_conflict
from emailtoken.outcomes import TokenSet
from emailtoken.providers.base import DeviceFlow
from emailtoken.secretdata import Grant, PublishedToken
from emailtoken.tokenstate import Rotation, TokenState, Unpublished

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def busy_state() -> TokenState:
    """A token mid-refresh: a rotation and an access token not written yet, a sign-in and a failure standing."""
    answer = TokenSet("at", NOW + timedelta(hours=1))
    return TokenState(
        attempt_at=NOW + timedelta(minutes=40),
        failures=2,
        error=of_conflict("x"),
        rotation=Rotation(successor=Grant("rt-2", "a@b.c"), spent=Grant("rt-1", "a@b.c")),
        unpublished=Unpublished(answer, NOW, "a@b.c", "fp"),
        device=DeviceFlow("UC", "https://example.com/device", NOW + timedelta(minutes=15), 5, "sign in"),
    )


def test_a_replaced_grant_drops_what_the_refresh_bought_and_steps_again_now() -> None:
    st = busy_state()
    st.grant_replaced(NOW)
    assert (st.rotation, st.unpublished, st.attempt_at) == (None, None, NOW)
    assert st.device is not None and st.error is not None and st.failures == 2  # not the grant's


def test_a_dropped_grant_also_ends_its_sign_in_and_its_failure() -> None:
    st = busy_state()
    st.grant_dropped(NOW)
    assert (st.rotation, st.unpublished, st.attempt_at, st.device, st.error) == (None, None, NOW, None, None)


def test_a_new_spec_starts_over_without_the_old_specs_failures() -> None:
    st = busy_state()
    st.start_over("fp-2", NOW)
    assert (st.fingerprint, st.failures, st.error, st.attempt_at) == ("fp-2", 0, None, NOW)


def test_a_published_token_ends_failures_warnings_and_refusals() -> None:
    st = busy_state()
    st.last_warning = ("SecretConflict", "x")
    published = PublishedToken(
        expires_at=NOW + timedelta(hours=1), obtained_at=NOW, username="a@b.c", scope="s", spec_hash="fp"
    )
    st.recovered(published, NOW + timedelta(minutes=40))
    assert (st.unpublished, st.published, st.failures, st.error) == (None, published, 0, None)
    assert (st.last_warning, st.refusal, st.attempt_at) == (None, None, NOW + timedelta(minutes=40))

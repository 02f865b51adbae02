"""emailtoken.devicecode: which device-code step comes next, and what the token says meanwhile."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from emailtoken import devicecode, failures
from emailtoken.devicecode import Move
from emailtoken.failures import Failure
from emailtoken.model import EmailTokenSpec, parse_spec
from emailtoken.outcomes import ErrorKind
from emailtoken.providers.base import DeviceFlow

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
FLOW = DeviceFlow("ABCD-EFGH", "https://login.example/device", NOW + timedelta(minutes=15), 5.0, "sign in")


def spec(flow: str) -> EmailTokenSpec:
    return parse_spec(
        {
            "provider": "Microsoft",
            "tenantId": "t",
            "clientId": "c",
            "clientSecretRef": {"name": "s"},
            "flow": flow,
            "scopes": ["x"],
        },
        "inbox",
    )


def test_without_a_code_the_step_asks_for_one_and_then_polls_until_it_expires() -> None:
    waiting = devicecode.issued(FLOW)
    assert devicecode.next_move(None, None, NOW) is Move.START
    assert devicecode.next_move(None, Failure(ErrorKind.TRANSIENT, "down"), NOW) is Move.START
    assert devicecode.next_move(FLOW, waiting, NOW) is Move.POLL
    assert devicecode.next_move(FLOW, Failure(ErrorKind.TRANSIENT, "down"), NOW) is Move.POLL  # a failed poll
    assert devicecode.next_move(FLOW, waiting, FLOW.expires_at) is Move.EXPIRED


def test_a_declined_expired_or_wrong_account_sign_in_is_final_until_a_new_reauthorize() -> None:
    for reason in failures.DEVICE_FINAL:
        final = Failure(ErrorKind.REAUTHORIZE, "no", reason)
        assert devicecode.next_move(FLOW, final, NOW) is Move.FINISHED
        assert devicecode.next_move(None, final, NOW) is Move.START  # the reauthorize annotation dropped the code


def test_the_waiting_code_is_shown_with_where_to_enter_it_and_polled_at_the_provider_interval() -> None:
    waiting = devicecode.issued(FLOW)
    assert waiting.reason == "AwaitingAuthorization" and waiting.kind is ErrorKind.REAUTHORIZE
    assert "https://login.example/device" in waiting.message and "ABCD-EFGH" in waiting.message
    assert "2026-12-01T12:15:00Z" in waiting.message
    assert devicecode.poll_at(FLOW, NOW) == NOW + timedelta(seconds=5)
    assert devicecode.approved_event("ann@example.com") == (
        "Normal",
        "DeviceCodeApproved",
        "signed in as ann@example.com with the device code",
    )


def test_only_the_device_code_flow_signs_in_without_a_person() -> None:
    assert devicecode.signs_in_itself(spec("DeviceCode"))
    assert not devicecode.signs_in_itself(spec("AuthorizationCode"))

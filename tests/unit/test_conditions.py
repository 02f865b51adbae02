"""emailtoken.conditions: Kubernetes condition conventions that kubectl wait and kstatus rely on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from emailtoken.conditions import AUTHORIZED, READY, Condition, get, merge

T0 = datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)
T2 = T0 + timedelta(minutes=10)


def test_new_conditions_are_stamped() -> None:
    """A first condition transitions now and records the generation it describes."""
    conds = merge(None, [Condition(READY, True, "TokenValid", "ok")], now=T0, generation=3)
    assert conds == [
        {
            "type": "Ready",
            "status": "True",
            "reason": "TokenValid",
            "message": "ok",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
            "observedGeneration": 3,
        }
    ]


def test_transition_time_kept_when_status_unchanged() -> None:
    """A new reason or message with the same status is not a transition."""
    first = merge(None, [Condition(READY, True, "TokenValid", "valid until 1")], now=T0, generation=1)
    second = merge(first, [Condition(READY, True, "TokenValid", "valid until 2")], now=T1, generation=2)
    ready = get(second, READY)
    assert ready is not None
    assert ready["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert ready["message"] == "valid until 2"
    assert ready["observedGeneration"] == 2


def test_transition_time_moves_on_flip() -> None:
    """True -> False -> True each stamp a new time."""
    conds = merge(None, [Condition(READY, True, "TokenValid", "")], now=T0, generation=1)
    conds = merge(conds, [Condition(READY, False, "ProviderUnavailable", "down")], now=T1, generation=1)
    assert get(conds, READY)["lastTransitionTime"] == "2026-01-01T00:05:00Z"  # type: ignore[index]
    conds = merge(conds, [Condition(READY, True, "TokenValid", "")], now=T2, generation=1)
    assert get(conds, READY)["lastTransitionTime"] == "2026-01-01T00:10:00Z"  # type: ignore[index]


def test_unknown_status_text() -> None:
    """None is spelled Unknown, and Unknown -> False is a transition."""
    conds = merge(None, [Condition(AUTHORIZED, None, "Pending", "")], now=T0, generation=None)
    assert get(conds, AUTHORIZED)["status"] == "Unknown"  # type: ignore[index]
    conds = merge(conds, [Condition(AUTHORIZED, False, "AwaitingAuthorization", "")], now=T1, generation=None)
    assert get(conds, AUTHORIZED)["lastTransitionTime"] == "2026-01-01T00:05:00Z"  # type: ignore[index]


def test_no_observed_generation_without_generation() -> None:
    """Objects without metadata.generation get no invented one."""
    conds = merge(None, [Condition(READY, False, "Pending", "")], now=T0, generation=None)
    assert "observedGeneration" not in conds[0]


def test_missing_previous_time_is_filled() -> None:
    """A hand-edited condition without a time gets one instead of a KeyError."""
    conds = merge([{"type": READY, "status": "True"}], [Condition(READY, True, "TokenValid", "")], now=T1, generation=1)
    assert conds[0]["lastTransitionTime"] == "2026-01-01T00:05:00Z"


def test_other_conditions_kept_and_order_stable() -> None:
    """Ready first, Authorized second, then foreign conditions by name: status diffs stay small."""
    previous = [
        {"type": "Zeta", "status": "True", "reason": "x", "message": "", "lastTransitionTime": "t"},
        {"type": "Alpha", "status": "False", "reason": "y", "message": "", "lastTransitionTime": "t"},
        {"status": "True"},  # no type: dropped
    ]
    conds = merge(
        previous,
        [Condition(AUTHORIZED, True, "Authorized", ""), Condition(READY, True, "TokenValid", "")],
        now=T0,
        generation=1,
    )
    assert [c["type"] for c in conds] == ["Ready", "Authorized", "Alpha", "Zeta"]
    assert get(conds, "Zeta") == previous[0]


def test_merge_does_not_mutate_previous() -> None:
    """The body kopf hands over must not be edited in place."""
    previous = [{"type": READY, "status": "True", "reason": "a", "message": "", "lastTransitionTime": "t"}]
    merge(previous, [Condition(READY, False, "b", "")], now=T0, generation=1)
    assert previous[0]["status"] == "True"


def test_get() -> None:
    """Look-up by type; None when absent."""
    conds = [{"type": READY, "status": "True"}]
    assert get(conds, READY) == conds[0]
    assert get(conds, AUTHORIZED) is None
    assert get(None, READY) is None


def test_status_text() -> None:
    """The API spells booleans with a capital letter."""
    assert Condition(READY, True, "", "").status_text == "True"
    assert Condition(READY, False, "", "").status_text == "False"
    assert Condition(READY, None, "", "").status_text == "Unknown"


def test_messages_are_cut_to_fit_status() -> None:
    """A long message (provider text, API errors) must not make the API server refuse the status."""
    from emailtoken.conditions import MAX_MESSAGE, Condition, merge

    long = "x" * 100_000
    [entry] = merge(None, [Condition("Ready", False, "ProviderUnavailable", long)], now=T0, generation=1)
    assert len(entry["message"]) == MAX_MESSAGE and entry["message"].endswith("…")

"""emailtoken.control: a control annotation's value is acted on once."""

from __future__ import annotations

from emailtoken import control
from emailtoken.api import ANNOTATION_REAUTHORIZE, ANNOTATION_REFRESH_NOW
from emailtoken.control import Requests


def test_a_value_not_handled_yet_is_a_request_and_is_recorded() -> None:
    annotations = {ANNOTATION_REFRESH_NOW: "2", ANNOTATION_REAUTHORIZE: "a"}
    asked = control.requests(annotations, {"refreshNow": "1", "reauthorize": "a"})
    assert asked == Requests(refresh_now="2", reauthorize=None)
    assert control.recorded({"refreshNow": "1", "reauthorize": "a"}, asked) == {"refreshNow": "2", "reauthorize": "a"}


def test_no_annotation_or_an_empty_or_handled_value_asks_nothing() -> None:
    assert control.requests({}, {}) == Requests()
    assert control.requests({ANNOTATION_REFRESH_NOW: ""}, {}) == Requests()
    assert control.requests({ANNOTATION_REAUTHORIZE: "x"}, {"reauthorize": "x"}) == Requests()
    assert control.recorded({"refreshNow": "1"}, Requests()) == {"refreshNow": "1"}


def test_memory_wins_over_a_status_that_predates_the_last_write() -> None:
    assert control.handled({"refreshNow": "1", "reauthorize": "a"}, {"refreshNow": "2"}) == {
        "refreshNow": "2",
        "reauthorize": "a",
    }
    assert control.handled(None, {}) == {}

"""emailtoken.events: the Event body, and a poster that never makes a step wait nor grows without bound."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from emailtoken.events import MAX_MESSAGE, EventPoster, event_body
from emailtoken.kube import KubeError

TOKEN = {"metadata": {"name": "inbox", "namespace": "mail", "uid": "u-1"}, "spec": {"clientId": "app"}}


class Api:
    """Records posted Events; fails the first ``failures`` posts with ``error``; may hang until released."""

    def __init__(self, failures: int = 0, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or KubeError(503, "unavailable")
        self.posted: list[tuple[str, dict[str, Any]]] = []
        self.calls = 0
        self.release = asyncio.Event()
        self.release.set()

    async def create_event(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        await self.release.wait()
        if self.failures:
            self.failures -= 1
            raise self.error
        self.posted.append((namespace, body))
        return {}


def test_body_names_the_token_and_the_component() -> None:
    body = event_body(TOKEN, type="Warning", reason="Failed", message="m", component="c", reporter="r/c")
    assert body["metadata"] == {"generateName": "inbox.", "namespace": "mail"}
    assert body["involvedObject"] == {
        "apiVersion": "emailtoken.io/v1alpha1",
        "kind": "EmailToken",
        "name": "inbox",
        "namespace": "mail",
        "uid": "u-1",
    }
    assert (body["type"], body["reason"], body["message"]) == ("Warning", "Failed", "m")
    assert body["source"] == {"component": "c"} and body["reportingComponent"] == "r/c"
    assert body["firstTimestamp"] == body["lastTimestamp"] and body["firstTimestamp"].endswith("Z")
    assert "spec" not in body["involvedObject"]


def test_a_long_message_is_cut_in_the_middle_to_what_the_api_server_takes() -> None:
    message = "a" * 600 + "b" * 600
    cut = event_body(TOKEN, type="Normal", reason="R", message=message, component="c", reporter="r")["message"]
    assert len(cut) <= MAX_MESSAGE and cut.startswith("a" * 100) and cut.endswith("b" * 100) and "..." in cut


async def test_posts_in_the_background_and_flushes_on_stop() -> None:
    api = Api()
    poster = EventPoster(api, workers=2)
    poster.start()
    api.release.clear()
    for i in range(5):
        poster.post(TOKEN, type="Normal", reason=f"R{i}", message="m")  # returns at once
    assert api.posted == []
    api.release.set()
    await poster.stop(timeout=5)
    assert sorted(body["reason"] for _, body in api.posted) == [f"R{i}" for i in range(5)]
    assert {ns for ns, _ in api.posted} == {"mail"}
    assert {body["source"]["component"] for _, body in api.posted} == {"emailtoken-operator"}


async def test_a_refused_post_is_retried_then_logged_without_the_message(caplog: pytest.LogCaptureFixture) -> None:
    api = Api(failures=2)
    poster = EventPoster(api, workers=1, backoffs=(0, 0))
    poster.start()
    poster.post(TOKEN, type="Warning", reason="Retried", message="secret-looking text")
    await poster.stop(timeout=5)
    assert [b["reason"] for _, b in api.posted] == ["Retried"] and api.calls == 3

    api = Api(failures=10)
    poster = EventPoster(api, workers=1, backoffs=(0, 0))
    poster.start()
    with caplog.at_level(logging.WARNING, logger="emailtoken"):
        poster.post(TOKEN, type="Warning", reason="GivenUp", message="secret-looking text")
        await poster.stop(timeout=5)
    assert api.posted == [] and api.calls == 3
    assert "could not post Event GivenUp on mail/inbox: HTTP 503" in caplog.text
    assert "secret-looking" not in caplog.text


async def test_the_queue_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    api = Api()
    api.release.clear()
    poster = EventPoster(api, workers=1, capacity=3)
    poster.start()
    with caplog.at_level(logging.WARNING, logger="emailtoken"):
        for _ in range(10):
            poster.post(TOKEN, type="Normal", reason="R", message="m")
        await asyncio.sleep(0)
    assert poster.dropped >= 6 and "not posted" in caplog.text
    api.release.set()
    await poster.stop(timeout=5)
    assert 3 <= len(api.posted) <= 4


async def test_stop_gives_up_after_its_timeout() -> None:
    api = Api()
    api.release.clear()  # the API server never answers
    poster = EventPoster(api, workers=1)
    poster.start()
    poster.post(TOKEN, type="Normal", reason="R", message="m")
    await asyncio.wait_for(poster.stop(timeout=0.2), 2)
    assert api.posted == []


async def test_a_refusal_that_will_not_change_is_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    """A 403 (a namespace being deleted refuses Events) or a 422 is logged at once, not retried."""
    api = Api(failures=10, error=KubeError(403, "forbidden"))
    poster = EventPoster(api, workers=1, backoffs=(5, 5))
    poster.start()
    with caplog.at_level(logging.WARNING, logger="emailtoken"):
        poster.post(TOKEN, type="Warning", reason="Refused", message="m")
        await asyncio.wait_for(poster.stop(timeout=2), 3)
    assert api.calls == 1 and "HTTP 403" in caplog.text

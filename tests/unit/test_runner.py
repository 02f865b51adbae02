"""emailtoken.runner: how the process ends, by exit code and by what it waits for.

kopf is injected (``run_kopf``) and the Lease lives in the API double that enforces
resourceVersion, so these run in simulated time; the real kopf and API server are in
tests/cluster (test_leadership_handover, test_leader_election).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from emailtoken.cli import main
from emailtoken.leader import holder_of
from emailtoken.metrics import RUNNING, Health
from emailtoken.runner import _elect_and_run
from emailtoken.settings import OperatorConfig
from tests.support.fakeapi import InMemoryApi

pytestmark = pytest.mark.looptime

NS = "ops"
LEASE = (NS, "emailtoken-operator")
CONFIG = OperatorConfig(
    leader_election=True, lease_namespace=NS, lease_duration=15, provider_timeout=5, health_port=None
)


def take_lease(api: InMemoryApi, holder: str) -> None:
    """Another candidate's write to the Lease (a new holder, a new resourceVersion)."""
    lease = api.leases[LEASE]
    lease["spec"]["holderIdentity"] = holder
    lease["metadata"]["resourceVersion"] = str(int(lease["metadata"]["resourceVersion"]) + 1000)


async def test_kopf_failing_after_the_lease_was_won_exits_non_zero_and_releases_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """It released the Lease and returned 0, so a crash looked like a clean stop to Kubernetes."""
    api = InMemoryApi()
    health = Health()

    async def kopf_that_fails(**_: Any) -> None:
        assert health.phase == RUNNING and holder_of(api.leases[LEASE]) != ""
        raise RuntimeError("kopf could not log in")

    with caplog.at_level(logging.ERROR, logger="emailtoken"):
        code = await _elect_and_run(CONFIG, health, api=api, run_kopf=kopf_that_fails)
    assert code == 1
    assert holder_of(api.leases[LEASE]) == "", "released, so a standby need not wait a lease"
    assert "kopf stopped unexpectedly" in caplog.text and "could not log in" in caplog.text


async def test_kopf_stopping_on_its_own_is_a_clean_exit() -> None:
    """SIGTERM: kopf's cleanup handler sets the stop flag and kopf returns; the Lease is released."""
    api = InMemoryApi()

    async def kopf_stopped_by_sigterm(*, memo: Any, stop_flag: asyncio.Event, **_: Any) -> None:
        await asyncio.sleep(30)
        memo["launch"].stop_flag.set()

    assert await _elect_and_run(CONFIG, Health(), api=api, run_kopf=kopf_stopped_by_sigterm) == 0
    assert holder_of(api.leases[LEASE]) == ""


async def test_a_lost_lease_gives_kopf_the_provider_timeout_to_finish_its_refreshes() -> None:
    """The runner cancelled kopf lease_duration/5 (3 s) after losing the Lease, which cut the
    scheduler's drain: a refresh whose token was at the provider lost its successor. Now kopf gets
    the provider timeout plus a margin (5 + 5 s here) before it is cancelled."""
    api = InMemoryApi()
    drained: list[float] = []
    loop = asyncio.get_running_loop()

    async def kopf_draining_a_refresh(*, stop_flag: asyncio.Event, **_: Any) -> None:
        await stop_flag.wait()
        stopped = loop.time()
        await asyncio.sleep(8)  # its cleanup waits for a step whose provider call answers late
        drained.append(loop.time() - stopped)

    async def intruder() -> None:
        await asyncio.sleep(20)
        take_lease(api, "someone-else")

    taking = asyncio.create_task(intruder())
    code = await _elect_and_run(CONFIG, Health(), api=api, run_kopf=kopf_draining_a_refresh)
    await taking
    assert code == 1
    assert drained == [8], "kopf was cancelled before its refreshes were stored"
    assert holder_of(api.leases[LEASE]) == "someone-else", "a lost Lease is not released"


async def test_a_lost_lease_does_not_wait_for_kopf_forever() -> None:
    api = InMemoryApi()
    loop = asyncio.get_running_loop()
    cancelled: list[float] = []

    async def kopf_that_hangs(*, stop_flag: asyncio.Event, **_: Any) -> None:
        await stop_flag.wait()
        stopped = loop.time()
        try:
            await asyncio.sleep(3600)
        finally:
            cancelled.append(loop.time() - stopped)

    async def intruder() -> None:
        await asyncio.sleep(20)
        take_lease(api, "someone-else")

    taking = asyncio.create_task(intruder())
    assert await _elect_and_run(CONFIG, Health(), api=api, run_kopf=kopf_that_hangs) == 1
    await taking
    assert cancelled == [pytest.approx(10, abs=0.01)]  # provider timeout + STOP_MARGIN


@pytest.mark.looptime(False)
def test_timings_that_cannot_work_stop_the_start_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--lease-duration", "15"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("emailtoken run: --lease-duration 15 is too short for --provider-timeout 20")


@pytest.mark.looptime(False)
def test_a_ca_bundle_that_cannot_be_loaded_stops_the_start_with_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Said once at start, rather than as every provider call failing its TLS handshake."""
    assert main(["run", "--ca-bundle", str(tmp_path / "missing.pem")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"emailtoken run: the CA bundle {tmp_path / 'missing.pem'} cannot be loaded")


def test_the_callback_refuses_a_ca_bundle_it_cannot_load(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "key").write_bytes(b"k" * 32)
    code = main(
        [
            "callback",
            "--ca-bundle",
            str(tmp_path / "missing.pem"),
            "--state-key-file",
            str(tmp_path / "key"),
            "--redirect-base-url",
            "https://cb.example",
        ]
    )
    assert code == 2
    assert f"the CA bundle {tmp_path / 'missing.pem'} cannot be loaded" in capsys.readouterr().err

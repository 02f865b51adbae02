"""Set-ups the fault suites share: the faulty API, a provider reset between tests, the Lease's holder.

Used by tests/integration/test_refresh_faults.py, test_restart_safety.py and the leader,
outage, handover and grant-safety suites of tests/cluster. Each suite keeps its fixtures
(one line each, over these) so that its scope and its constants stay visible where it runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from emailtoken_dev.devprovider import DevProviderThread
from tests.support.faultkit import FaultyKube
from tests.support.kube import ApiClient
from tests.support.operator_process import OperatorProcess

#: the access-token lifetime the local provider issues unless a test says otherwise
DEFAULT_LIFETIME = 3600
LEASE_NAME = "emailtoken-operator"


def faulty_kube(workdir: Path) -> Iterator[FaultyKube]:
    """A kmock API that can stall or fail on command, for a module (a fixture body)."""
    kube = FaultyKube(workdir).start()
    yield kube
    kube.stop()


def provider_reset(provider: DevProviderThread, lifetime: int | None = None) -> Iterator[None]:
    """Faults and lifetimes are provider-wide: a test starts with none (and ``lifetime``, if given)
    and ends with the defaults (a fixture body)."""
    provider.faults.clear()
    if lifetime is not None:
        provider.token_lifetime = lifetime
    yield
    provider.faults.clear()
    provider.token_lifetime = DEFAULT_LIFETIME


def leader_identity(op: OperatorProcess) -> str:
    """The Lease identity a replica announced when it became the leader ("" before that)."""
    for line in op.log.splitlines():
        if "acquired leadership" in line and " as " in line:
            return line.rsplit(" as ", 1)[1].split(")")[0].strip()
    return ""


def lease_holder(admin: ApiClient, namespace: str, lease: str = LEASE_NAME) -> str:
    """Who holds the operator's Lease now ("" when nobody)."""
    return ((admin.get("leases", namespace, lease) or {}).get("spec") or {}).get("holderIdentity") or ""

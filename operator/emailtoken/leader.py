"""Exactly one writer: leader election on a coordination.k8s.io/v1 Lease.

Only the holder of the Lease runs the operator; the others wait. Every write to the
Lease carries the resourceVersion it read, so two candidates racing for an expired Lease
cannot both win (the API server answers 409 to the slower one). A leader that cannot
renew before its lease runs out stops itself at once instead of writing as a stale
leader; its replacement waits out the full lease duration before taking over.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from emailtoken.kube import Conflict, KubeError, NotFound
from emailtoken.timefmt import utcnow

log = logging.getLogger(__name__)
MICRO = "%Y-%m-%dT%H:%M:%S.%fZ"


class LeaseApi(Protocol):
    """Lease calls; ``resource_version`` makes a write conditional."""

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]: ...

    async def patch_lease(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]: ...


@dataclass(frozen=True)
class LeaseConfig:
    """Timings like client-go's defaults (15 s lease, renew every 5 s, give up after 10 s)."""

    namespace: str
    name: str = "emailtoken-operator"
    identity: str = ""
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


def default_identity() -> str:
    """Pod name (hostname) plus a random suffix: a restarted pod is a new candidate."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:6]}"


def holder_of(lease: dict[str, Any] | None) -> str:
    """Who holds the Lease ('' for nobody)."""
    return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")


def lease_is_free(lease: dict[str, Any] | None, identity: str, unchanged_for: float) -> bool:
    """May ``identity`` take (or keep) this Lease?

    Expiry is judged by how long *we* have seen the same record unchanged, not by the
    holder's timestamps, so clock skew between nodes cannot cause two leaders.
    """
    holder = holder_of(lease)
    if not holder or holder == identity:
        return True
    duration = float(((lease or {}).get("spec") or {}).get("leaseDurationSeconds") or 0)
    return unchanged_for >= duration


def lease_body(config: LeaseConfig, previous: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
    """The Lease we write to take or renew leadership (resourceVersion of what we read)."""
    spec = dict((previous or {}).get("spec") or {})
    taking_over = spec.get("holderIdentity") != config.identity
    body: dict[str, Any] = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": config.name, "namespace": config.namespace},
        "spec": {
            **spec,
            "holderIdentity": config.identity,
            "leaseDurationSeconds": int(config.lease_duration),
            "renewTime": now.strftime(MICRO),
        },
    }
    if taking_over:
        body["spec"]["acquireTime"] = now.strftime(MICRO)
        body["spec"]["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (1 if previous else 0)
    if previous is not None:
        body["metadata"]["resourceVersion"] = (previous.get("metadata") or {}).get("resourceVersion")
    return body


class LeaderElector:
    """Acquire, then keep, the Lease; ``lost`` is set when leadership cannot be kept."""

    def __init__(self, api: LeaseApi, config: LeaseConfig, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.api = api
        self.config = config
        self.clock = clock
        self.lost = asyncio.Event()
        self.holder = ""
        self._seen: tuple[str, str, str] | None = None
        self._seen_at = 0.0
        self._renewed_at: float | None = None  # loop time at which the last successful renewal started

    def _unchanged_for(self, lease: dict[str, Any] | None) -> float:
        loop = asyncio.get_running_loop()
        spec = (lease or {}).get("spec") or {}
        # Every renewal is a write, so the resourceVersion changes even when the holder's clock
        # repeats a renewTime (stuck or stepped back): that is still a live leader, not silence.
        version = ((lease or {}).get("metadata") or {}).get("resourceVersion")
        record = (str(spec.get("holderIdentity")), str(spec.get("renewTime")), str(version))
        if record != self._seen:
            self._seen, self._seen_at = record, loop.time()
        return loop.time() - self._seen_at

    def fresh(self) -> bool:
        """May this process still act as the leader right now?

        True only within the renew deadline of the start of the last successful renewal: a
        candidate takes over after a full lease duration of silence, counted from when it saw
        that renewal, so a leader that stalled (a long pause, a frozen node, a slow API) stops
        spending refresh tokens before anyone else may start. The keeper notices the loss on
        its next attempt; this check covers the moments before it does.
        """
        if self._renewed_at is None:
            return False
        return asyncio.get_running_loop().time() - self._renewed_at < self.config.renew_deadline

    async def try_acquire(self) -> bool:
        """One attempt to take or renew the Lease; False when someone else holds it or we lost a race."""
        now = self.clock()
        started = asyncio.get_running_loop().time()
        try:
            lease = await self.api.get_lease(self.config.namespace, self.config.name)
            self.holder = holder_of(lease)
            if not lease_is_free(lease, self.config.identity, self._unchanged_for(lease)):
                return False
            body = lease_body(self.config, lease, now)
            if lease is None:
                await self.api.create_lease(self.config.namespace, body)
            else:
                await self.api.patch_lease(self.config.namespace, self.config.name, body)
            self.holder = self.config.identity
            self._renewed_at = started
            return True
        except (Conflict, NotFound):
            return False
        except KubeError as exc:
            log.warning("lease %s/%s: API error %s", self.config.namespace, self.config.name, exc.status)
            return False

    async def acquire(self) -> None:
        """Wait until this process is the leader."""
        announced = False
        while not await self.try_acquire():
            if not announced:
                log.info("waiting for leadership (lease %s/%s is held)", self.config.namespace, self.config.name)
                announced = True
            await asyncio.sleep(self.config.retry_period)
        log.info(
            "acquired leadership (lease %s/%s as %s)", self.config.namespace, self.config.name, self.config.identity
        )

    async def keep(self) -> None:
        """Renew until a renewal fails for longer than the renew deadline; then set ``lost`` and return."""
        loop = asyncio.get_running_loop()
        last_ok = loop.time()
        renew_every = max(self.config.retry_period, self.config.lease_duration / 3)
        while True:
            await asyncio.sleep(renew_every if loop.time() - last_ok < renew_every else self.config.retry_period)
            if await self.try_acquire():
                last_ok = loop.time()
            elif self.holder and self.holder != self.config.identity:
                log.error("lease %s/%s was taken by %s; stopping", self.config.namespace, self.config.name, self.holder)
                self.lost.set()
                return
            elif loop.time() - last_ok > self.config.renew_deadline:
                log.error("lost leadership of lease %s/%s; stopping", self.config.namespace, self.config.name)
                self.lost.set()
                return

    async def release(self) -> None:
        """Give the Lease up on a clean shutdown so a successor need not wait for it to expire."""
        try:
            lease = await self.api.get_lease(self.config.namespace, self.config.name)
            if holder_of(lease) != self.config.identity:
                return
            body = lease_body(self.config, lease, self.clock())
            body["spec"]["holderIdentity"] = ""
            await self.api.patch_lease(self.config.namespace, self.config.name, body)
            log.info("released lease %s/%s", self.config.namespace, self.config.name)
        except KubeError as exc:
            log.warning(
                "could not release lease %s/%s: API error %s", self.config.namespace, self.config.name, exc.status
            )

"""Exactly one writer: leader election on a coordination.k8s.io/v1 Lease.

Only the holder of the Lease runs the operator; the others wait. Every write to the
Lease carries the resourceVersion it read, so two candidates racing for an expired Lease
cannot both win (the API server answers 409 to the slower one). A leader that cannot
renew within the renew deadline stops acting (:meth:`LeaderElector.fresh`) before anyone
may take over, but keeps its process and state and goes on trying: when the API answers
again and the Lease is still its own, it renews and acts again; if someone else holds it,
it stops. A control-plane outage therefore pauses the operator instead of killing it.

A provider call spends a rotating refresh token the moment the provider sees it, so one may
start only if it can end, and its successor be stored, before another candidate could take
the Lease (:meth:`LeaderElector.call_window`): the lease duration must exceed the provider
timeout by :data:`CALL_MARGIN` plus :data:`MIN_CALL_WINDOW` (:func:`timing_problem`).

Failures are named for what they are: a missing permission (the API server's message says
which verb on which resource), a rejected credential, a missing namespace, an unreachable
API server; never "the lease is held" when it is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from emailtoken.kube import Conflict, KubeError, NotFound, Unreachable
from emailtoken.timefmt import utcnow

log = logging.getLogger(__name__)
MICRO = "%Y-%m-%dT%H:%M:%S.%fZ"
#: A problem that does not change is logged again this often (a single line scrolls away).
REMIND_EVERY = 300.0
#: Seconds allowed after a provider call ends to store what it returned (the rotated refresh token).
CALL_MARGIN = 3.0
#: After each renewal, provider calls must have at least this long in which they may start.
MIN_CALL_WINDOW = 2.0


def timing_problem(lease_duration: float, provider_timeout: float) -> str | None:
    """Why a Lease of ``lease_duration`` cannot fence provider calls of ``provider_timeout`` (None: it can).

    A refresh that started under this replica's Lease must end, and its rotated refresh token
    be stored, before another replica could take the Lease; else the next leader presents the
    token that refresh spent, and a provider with reuse detection revokes the grant.
    """
    need = provider_timeout + CALL_MARGIN + MIN_CALL_WINDOW
    if lease_duration >= need:
        return None
    return (
        f"--lease-duration {lease_duration:g} is too short for --provider-timeout {provider_timeout:g}: "
        f"it must be at least the provider timeout + {CALL_MARGIN + MIN_CALL_WINDOW:g} s ({need:g} s), so that "
        "a refresh started under this replica's Lease ends, and its new refresh token is stored, before "
        "another replica may take the Lease"
    )


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
    #: what a provider call may need once started: the provider timeout plus CALL_MARGIN (0: calls unfenced)
    call_budget: float = 0.0

    @property
    def renew_every(self) -> float:
        """A third of the lease, or more often: twice within the window in which provider calls may
        start, so that a healthy leader's calls never find it closed."""
        window = self.lease_duration - self.call_budget
        return max(0.5, min(self.lease_duration / 3, window / 2))


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


@dataclass(frozen=True)
class LeaseProblem:
    """Why the last attempt on the Lease failed, in words an administrator can act on.

    ``blocking`` problems (a missing permission, a rejected credential, a missing namespace)
    do not go away by waiting; an unreachable or failing API server usually does.
    """

    reason: str  # Forbidden, Unauthorized, NotFound, Unreachable, ServerError, Error
    status: int
    message: str

    @property
    def blocking(self) -> bool:
        return self.reason in ("Forbidden", "Unauthorized", "NotFound")

    def __str__(self) -> str:
        if self.reason == "Unreachable":
            return f"API server unreachable: {self.message}; retrying"
        return f"HTTP {self.status} {self.reason}: {self.message}{_WHAT_TO_DO.get(self.reason, '; retrying')}"


#: What an administrator does about a Lease problem (the API server's message names verb and namespace).
_WHAT_TO_DO = {
    "Forbidden": "; grant it (the chart's leader-election Role does), or run with --no-leader-election",
    "Unauthorized": "; the credentials are invalid or expired: renew them, or restart the Pod",
    "NotFound": "; create that namespace, or choose another with --lease-namespace",
}


def problem_of(exc: BaseException) -> LeaseProblem:
    """Classify a failed Lease call; the API server's message (verb, resource, namespace) is kept."""
    if isinstance(exc, Unreachable):
        return LeaseProblem("Unreachable", 0, exc.message)
    if isinstance(exc, KubeError):
        reason = {401: "Unauthorized", 403: "Forbidden", 404: "NotFound"}.get(exc.status)
        if reason is None:
            reason = "ServerError" if exc.status >= 500 or exc.status == 429 else "Error"
        return LeaseProblem(reason, exc.status, exc.message or "no message")
    # Not from our API layer: name the type only, a library's message may quote a request.
    return LeaseProblem("Error", 0, f"unexpected {type(exc).__name__}")


class LeaderElector:
    """Acquire, then keep, the Lease; ``lost`` is set when another candidate has taken it.

    ``on_problem`` is called with the current :class:`LeaseProblem` (None once cleared)
    whenever it changes, for the health endpoints.
    """

    def __init__(
        self,
        api: LeaseApi,
        config: LeaseConfig,
        *,
        clock: Callable[[], datetime] = utcnow,
        on_problem: Callable[[LeaseProblem | None], None] | None = None,
    ) -> None:
        self.api = api
        self.config = config
        self.clock = clock
        self.on_problem = on_problem
        self.lost = asyncio.Event()
        self.holder = ""
        self.problem: LeaseProblem | None = None
        self._seen: tuple[str, str, str] | None = None
        self._seen_at = 0.0
        self._renewed_at: float | None = None  # loop time at which the last successful renewal started
        self._logged_at = 0.0
        #: set (and replaced) at every renewal, and when the Lease is lost: what paused steps wait on
        self._renewal = asyncio.Event()
        #: the lease duration of another candidate that held the Lease when we last read it
        self._other_held: float | None = None

    @property
    def where(self) -> str:
        return f"{self.config.namespace}/{self.config.name}"

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
        that renewal, so a leader that stalled (a long pause, a frozen node, a slow or absent
        API) stops spending refresh tokens before anyone else may start. It acts again only
        after a renewal succeeds.
        """
        if self._renewed_at is None or self.lost.is_set():
            return False
        return asyncio.get_running_loop().time() - self._renewed_at < self.config.renew_deadline

    def time_left(self) -> float:
        """Seconds until another candidate could take the Lease (0 when not leading).

        Counted from the start of the last successful renewal: a candidate counts a full lease
        from when it saw that renewal, which was later.
        """
        if self._renewed_at is None or self.lost.is_set():
            return 0.0
        return max(0.0, self._renewed_at + self.config.lease_duration - asyncio.get_running_loop().time())

    def call_window(self) -> float:
        """Seconds from now in which a provider call may still start (0 or less: none may).

        A call may take ``call_budget`` (the provider timeout plus the time to store its answer),
        and must be over before another candidate could take the Lease: a call that ended later
        would leave the next leader holding a refresh token this one spent.
        """
        if not self.fresh():
            return 0.0
        return self.time_left() - self.config.call_budget

    async def next_renewal(self, timeout: float) -> bool:
        """Wait for the next successful renewal, at most ``timeout`` seconds; False once the Lease is lost.

        Steps that may not act wait here instead of looking again every second.
        """
        if self.lost.is_set():
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._renewal.wait(), timeout)
        return not self.lost.is_set()

    def _renewed(self, started: float) -> None:
        self._renewed_at = started
        self._renewal.set()
        self._renewal = asyncio.Event()

    def _note(self, problem: LeaseProblem | None) -> None:
        """Log a problem when it starts, changes or persists (every REMIND_EVERY s), and when it ends."""
        now = asyncio.get_running_loop().time()
        changed = problem != self.problem
        if problem is None:
            if changed and self.problem is not None:
                log.info("lease %s: the API server answers again (was: %s)", self.where, self.problem.reason)
        elif changed or now - self._logged_at >= REMIND_EVERY:
            self._logged_at = now
            level = logging.ERROR if problem.blocking else logging.WARNING
            log.log(level, "lease %s: %s", self.where, problem)
        self.problem = problem
        if changed and self.on_problem is not None:
            self.on_problem(problem)

    async def try_acquire(self) -> bool:
        """One attempt to take or renew the Lease.

        False when someone else holds it, when we lost a race for it, or when the attempt
        failed (then :attr:`problem` says why). Never raises for API or network failures.
        """
        now = self.clock()
        started = asyncio.get_running_loop().time()
        try:
            lease = await self.api.get_lease(self.config.namespace, self.config.name)
        except Exception as exc:
            # Silence counts only while we can see the Lease: after an outage the standby starts
            # counting again, so the leader (which could not renew either) gets to renew first.
            self._seen = None
            self._note(problem_of(exc))
            return False
        try:
            if not self._free(lease):
                self._note(None)
                return False
            body = lease_body(self.config, lease, now)
            if lease is None:
                await self.api.create_lease(self.config.namespace, body)
            else:
                await self.api.patch_lease(self.config.namespace, self.config.name, body)
        except Conflict:
            self._note(None)  # another candidate wrote first: a race, not a problem
            return False
        except NotFound as exc:
            # Deleted between our read and our write: try again. A create answered 404: the
            # namespace (or the API group) is missing.
            self._note(None if lease is not None else problem_of(exc))
            return False
        except Exception as exc:
            self._note(problem_of(exc))
            return False
        self._note(None)
        self.holder = self.config.identity
        self._other_held = None
        self._renewed(started)
        return True

    def _free(self, lease: dict[str, Any] | None) -> bool:
        """May we write the Lease we just read (None: there is none)? Remembers who holds it."""
        self.holder = holder_of(lease)
        unchanged = self._unchanged_for(lease)
        if lease is None and self._other_held is not None:
            # Deleted while another candidate held it (kubectl, a GitOps prune): that leader may
            # still be acting, and will create it again when it renews. Its absence counts as
            # its silence, or two leaders could spend the same refresh token.
            return unchanged >= self._other_held
        free = lease_is_free(lease, self.config.identity, unchanged)
        if lease is not None:
            spec = lease.get("spec") or {}
            other = self.holder not in ("", self.config.identity)
            duration = float(spec.get("leaseDurationSeconds") or self.config.lease_duration)
            self._other_held = duration if other else None
        return free

    async def acquire(self) -> None:
        """Wait until this process is the leader (through API outages and missing permissions, which are logged)."""
        waiting_for = ""
        while not await self.try_acquire():
            if self.problem is None and self.holder and self.holder != waiting_for:
                log.info("waiting for leadership (lease %s is held by %s)", self.where, self.holder)
                waiting_for = self.holder
            await asyncio.sleep(self.config.retry_period)
        log.info("acquired leadership (lease %s as %s)", self.where, self.config.identity)

    async def keep(self) -> None:
        """Renew until another candidate holds the Lease; then set ``lost`` and return.

        A renewal that keeps failing (API server or etcd down, credentials or permission
        gone) does not end the process: past the renew deadline :meth:`fresh` is False and
        nothing acts; renewing goes on every retry period, and the first one that succeeds
        (the Lease still ours) resumes leadership.
        """
        loop = asyncio.get_running_loop()
        last_ok = loop.time()
        suspended = False
        renew_every = self.config.renew_every
        retry = min(renew_every, self.config.retry_period)
        while True:
            await asyncio.sleep(renew_every if loop.time() - last_ok < renew_every else retry)
            if await self.try_acquire():
                if suspended:
                    log.warning("renewed lease %s after %.1fs without; acting again", self.where, loop.time() - last_ok)
                    suspended = False
                last_ok = loop.time()
            elif self.holder and self.holder != self.config.identity:
                log.error("lease %s was taken by %s; stopping", self.where, self.holder)
                self.lost.set()
                self._renewal.set()  # steps waiting for a renewal: there will be none
                return
            elif not suspended and not self.fresh():
                suspended = True
                log.error(
                    "could not renew lease %s for %.1fs (%s); not acting until it is renewed",
                    self.where,
                    loop.time() - last_ok,
                    self.problem or "no answer",
                )

    async def release(self) -> None:
        """Give the Lease up on a clean shutdown so a successor need not wait for it to expire."""
        try:
            lease = await self.api.get_lease(self.config.namespace, self.config.name)
            if holder_of(lease) != self.config.identity:
                return
            body = lease_body(self.config, lease, self.clock())
            body["spec"]["holderIdentity"] = ""
            await self.api.patch_lease(self.config.namespace, self.config.name, body)
            log.info("released lease %s", self.where)
        except Exception as exc:
            # Shutting down anyway: the Lease then expires after its duration.
            log.warning("could not release lease %s: %s", self.where, problem_of(exc))

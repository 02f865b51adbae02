"""Start kopf with the operator's handlers and settings."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import kopf

from emailtoken.settings import OperatorConfig

if TYPE_CHECKING:
    from emailtoken.kube import Credentials
    from emailtoken.leader import LeaderElector, LeaseApi, LeaseConfig
    from emailtoken.metrics import Health
    from emailtoken.wiring import Launch

log = logging.getLogger("emailtoken")

_FORMATS = {"plain": kopf.LogFormat.PLAIN, "full": kopf.LogFormat.FULL, "json": kopf.LogFormat.JSON}


def operator_kwargs(config: OperatorConfig, launch: Launch | None = None) -> dict[str, Any]:
    """Arguments for ``kopf.operator``/``kopf.run`` derived from the config; kopf's memo carries
    ``launch`` (the config and what leader election adds) to the startup handler."""
    import emailtoken.handlers  # noqa: F401  (registers the handlers)
    from emailtoken.wiring import Launch

    return {
        "clusterwide": config.all_namespaces,
        "namespaces": list(config.namespaces),
        # kopf watches no resource (emailtoken.informer does), so its peering would pause
        # nothing; the Lease (emailtoken.leader) keeps a second operator from writing
        "standalone": True,
        "liveness_endpoint": f"http://0.0.0.0:{config.health_port}/healthz" if config.health_port else None,
        "memo": kopf.Memo(launch=launch or Launch(config=config)),
    }


def tune_collector() -> None:
    """Process tuning, once the operator's code is loaded (:func:`run_operator`, before kopf starts).

    What exists now (the modules of kopf, the clients and the engine: most of the objects that
    live as long as the process) is frozen: out of the cyclic collector's reach, so that full
    collections scan only what tokens add. A young generation of 10,000 instead of 700 objects
    lets most of a step's and an event's temporaries die by reference count before a collection
    sees them.
    Together they cut the collector's share of the CPU at start-up (see bench/README.md).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000)


def configure_logging(config: OperatorConfig) -> None:
    """kopf's log setup, plus quiet third-party loggers that could echo HTTP bodies."""
    kopf.configure(verbose=config.verbose, log_format=_FORMATS[config.log_format])
    if config.log_level in ("warning", "error"):  # kopf knows only debug, info and warning (quiet)
        logging.getLogger().setLevel(config.log_level.upper())
    for noisy in ("msal", "google", "kubernetes"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # urllib3 warns of each retry ("Retrying (Retry(total=2 ...)) after connection broken by ...")
    # before the call fails anyway; the failure itself is reported once, in our words.
    logging.getLogger("urllib3").setLevel(logging.ERROR)


def run_operator(config: OperatorConfig) -> int:
    """Run until interrupted (blocking); exit code 1 when leadership was lost, kopf failed or the
    Kubernetes credentials cannot work, 2 for timings or a CA bundle that cannot work (each said in one line)."""
    from emailtoken.kube import ConfigError, load_config

    if config.leader_election:
        from emailtoken.leader import timing_problem

        problem = timing_problem(config.lease_duration, config.provider_timeout)
        if problem:
            print(f"emailtoken run: {problem}", file=sys.stderr)
            return 2
    from emailtoken.providers.http import ca_bundle_problem

    problem = ca_bundle_problem(config.ca_bundle)
    if problem:
        print(f"emailtoken run: {problem}", file=sys.stderr)
        return 2
    configure_logging(config)
    try:
        creds = load_config()
    except ConfigError as exc:
        log.error("%s", exc)
        return 1
    if config.metrics_port:
        from emailtoken import metrics

        metrics.serve(config.metrics_port)
    import emailtoken.handlers  # noqa: F401  (the handlers and every module they use, loaded before the freeze)

    tune_collector()
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(_main(config, creds))


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (the ``kopf[uvloop]`` dependency), as kopf's own CLI does.

    The event loop is a tenth of the operator's CPU while it takes up thousands of new
    tokens (see bench/README.md); uvloop runs the same callbacks for less.
    """
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _main(config: OperatorConfig, creds: Credentials) -> int:
    """Report the process phase to the probes (see :mod:`emailtoken.metrics`) around the real work."""
    from emailtoken import metrics

    health = metrics.health()
    beating = asyncio.create_task(health.heartbeat(), name="heartbeat")
    try:
        if not await _api_usable(config, creds, health):
            return 1
        return await _elect_and_run(config, health)
    finally:
        health.phase = metrics.STOPPING
        beating.cancel()
        await asyncio.gather(beating, return_exceptions=True)


def lease_config(config: OperatorConfig, identity: str) -> LeaseConfig:
    """The Lease timings for this config: client-go's proportions, and provider calls fenced by the
    provider timeout (see :func:`emailtoken.leader.timing_problem`)."""
    from emailtoken import leader

    return leader.LeaseConfig(
        namespace=config.lease_namespace,
        name=config.lease_name,
        identity=identity,
        lease_duration=config.lease_duration,
        renew_deadline=config.lease_duration * 2 / 3,
        retry_period=max(0.5, min(2.0, config.lease_duration / 7.5)),
        call_budget=config.provider_timeout + leader.CALL_MARGIN,
    )


async def _api_usable(config: OperatorConfig, creds: Credentials, health: Health) -> bool:
    """Wait until the API server lets the operator list EmailTokens where it works (see
    :mod:`emailtoken.apicheck`); False when its credentials are rejected. /readyz names the problem."""
    from emailtoken.apicheck import ApiProblem, wait_for_api
    from emailtoken.kube import KubernetesApi

    def show(problem: ApiProblem | None) -> None:
        health.problem = problem.text if problem else ""
        health.blocked = problem is not None and problem.blocking

    api = KubernetesApi(threads=1, request_timeout=config.api_timeout)
    hint = "grant it to the operator's ServiceAccount (the Helm chart and deploy/kustomize carry its RBAC)"
    namespaces = () if config.all_namespaces else config.namespaces
    problem = await wait_for_api(api, creds, namespaces, timeout=config.api_timeout, rbac_hint=hint, on_problem=show)
    return problem is None


async def _elect_and_run(
    config: OperatorConfig,
    health: Health,
    *,
    api: LeaseApi | None = None,
    run_kopf: Callable[..., Awaitable[Any]] = kopf.operator,
) -> int:
    """Run kopf, after winning the Lease when leader election is on.

    ``api`` (the Lease calls) and ``run_kopf`` are for tests; production uses the real client
    and ``kopf.operator``.
    """
    from emailtoken.metrics import RUNNING, STANDBY

    if not config.leader_election:
        health.phase = RUNNING
        await run_kopf(**operator_kwargs(config))
        return 0
    from emailtoken.leader import LeaderElector, LeaseProblem, default_identity

    lease = lease_config(config, default_identity())

    def show(problem: LeaseProblem | None) -> None:
        # /readyz names the problem; one that waiting will not fix (RBAC) also fails readiness.
        health.problem = f"lease {lease.namespace}/{lease.name}: {problem}" if problem else ""
        health.blocked = problem is not None and problem.blocking

    elector = LeaderElector(api or _lease_api(lease), lease, on_problem=show)
    health.phase = STANDBY  # ready as a hot standby: a rolling update may proceed
    await elector.acquire()
    health.phase = RUNNING
    return await _lead(config, elector, run_kopf)


def _lease_api(lease: LeaseConfig) -> LeaseApi:
    """The Lease calls' own client: a renewal never queues behind the engine's calls, and each call
    is bounded so that a hung API server costs one attempt, not the renew deadline."""
    from emailtoken.kube import KubernetesApi, load_config

    load_config()
    return KubernetesApi(threads=2, request_timeout=lease.renew_deadline / 2)


async def _lead(config: OperatorConfig, elector: LeaderElector, run_kopf: Callable[..., Awaitable[Any]]) -> int:
    """Run kopf while holding the Lease; stop it when the Lease is lost (exit code 1) or kopf ends."""
    stop_flag: asyncio.Event = asyncio.Event()
    keeper = asyncio.create_task(elector.keep(), name="lease-keeper")
    # The engine asks the elector before every step and every provider call (see
    # LeaderElector.fresh and call_window): a stalled leader stops spending refresh tokens before
    # its Lease can pass to another replica. An API outage only pauses it: kopf, the engine and
    # their state stay, and keep() renews when the API answers again; only a Lease taken by
    # someone else ends the process.
    # stop_flag in the memo: the cleanup handler sets it when kopf stops on its own (SIGTERM), or
    # kopf waits 5 s for its task watching an unset flag before it gives up on it.
    from emailtoken.wiring import Launch

    kwargs = operator_kwargs(config, Launch(config=config, may_act=elector, stop_flag=stop_flag))
    operator = asyncio.create_task(run_kopf(**kwargs, stop_flag=stop_flag), name="kopf")
    done, _ = await asyncio.wait({keeper, operator}, return_when=asyncio.FIRST_COMPLETED)
    grace = config.stop_grace
    if keeper in done:
        # Another replica holds the Lease (or, a bug, the keeper failed): nothing new may start
        # (the fence is shut), but a refresh whose token is at the provider must still store the
        # successor, or the next leader presents a spent token. The compare-and-swap on the grant
        # keeps a stale write out, so waiting is safe; cancelling is not.
        if not elector.lost.is_set() and keeper.exception() is not None:
            log.error("lease keeper failed", exc_info=keeper.exception())
        await _stop_kopf(operator, stop_flag, grace)
        log.error("exiting after losing leadership")
        return 1
    # kopf ended: on SIGTERM (its cleanup handler drained the scheduler, whose steps wait for
    # their refreshes), or because it failed. Nothing of the engine runs any more: kopf cancels
    # every task it did not start with before it returns.
    failed = operator.cancelled() or operator.exception() is not None
    if failed:
        log.error("kopf stopped unexpectedly; exiting", exc_info=None if operator.cancelled() else operator.exception())
    keeper.cancel()
    await asyncio.gather(keeper, return_exceptions=True)
    await elector.release()  # nothing in flight: a successor may start at once
    return 1 if failed else 0


async def _stop_kopf(operator: asyncio.Task[Any], stop_flag: asyncio.Event, grace: float) -> None:
    """Stop kopf, giving refreshes in flight up to ``grace`` seconds to store their rotated tokens.

    kopf's cleanup handler drains the scheduler, whose steps wait for their refreshes (shielded
    from cancellation, see Engine._spend); a refresh that started before the loss ends within the
    provider timeout plus a grant write. kopf is cancelled only after ``grace``: cancelled, it
    cancels every task it did not start with, the engine's refreshes too.
    """
    stop_flag.set()
    await asyncio.wait({operator}, timeout=grace)
    if not operator.done():
        operator.cancel()
    await asyncio.gather(operator, return_exceptions=True)

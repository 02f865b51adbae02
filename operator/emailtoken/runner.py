"""Start kopf with the operator's handlers and settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import kopf

from emailtoken.settings import OperatorConfig

if TYPE_CHECKING:
    from emailtoken.metrics import Health

_FORMATS = {"plain": kopf.LogFormat.PLAIN, "full": kopf.LogFormat.FULL, "json": kopf.LogFormat.JSON}


def operator_kwargs(config: OperatorConfig, memo: dict[str, Any] | None = None) -> dict[str, Any]:
    """Arguments for ``kopf.operator``/``kopf.run`` derived from the config."""
    import emailtoken.handlers  # noqa: F401  (registers the handlers)

    return {
        "clusterwide": config.all_namespaces,
        "namespaces": list(config.namespaces),
        "standalone": config.peering is None,
        "peering_name": config.peering,
        "liveness_endpoint": f"http://0.0.0.0:{config.health_port}/healthz" if config.health_port else None,
        "memo": kopf.Memo(config=config, **(memo or {})),
    }


def configure_logging(config: OperatorConfig) -> None:
    """kopf's log setup, plus quiet third-party loggers that could echo HTTP bodies."""
    kopf.configure(verbose=config.verbose, log_format=_FORMATS[config.log_format])
    for noisy in ("urllib3", "msal", "google", "kubernetes"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not config.verbose:
        # kopf says "Handler 'token_event' succeeded." for every watch event: one line per
        # token and refresh, thousands a minute at scale. Our own log says what happened.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)


def run_operator(config: OperatorConfig) -> int:
    """Run until interrupted (blocking); exit code 1 when leadership was lost."""
    configure_logging(config)
    if config.metrics_port:
        from emailtoken import metrics

        metrics.serve(config.metrics_port)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(_main(config))


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


async def _main(config: OperatorConfig) -> int:
    """Report the process phase to the probes (see :mod:`emailtoken.metrics`) around the real work."""
    from emailtoken import metrics

    health = metrics.health()
    beating = asyncio.create_task(health.heartbeat(), name="heartbeat")
    try:
        return await _elect_and_run(config, health)
    finally:
        health.phase = metrics.STOPPING
        beating.cancel()
        await asyncio.gather(beating, return_exceptions=True)


async def _elect_and_run(config: OperatorConfig, health: Health) -> int:
    """Run kopf, after winning the Lease when leader election is on."""
    from emailtoken.metrics import RUNNING, STANDBY

    if not config.leader_election:
        health.phase = RUNNING
        await kopf.operator(**operator_kwargs(config))
        return 0
    from emailtoken.kube import KubernetesApi, load_config
    from emailtoken.leader import LeaderElector, LeaseConfig, LeaseProblem, default_identity

    load_config()
    lease = LeaseConfig(
        namespace=config.lease_namespace,
        name=config.lease_name,
        identity=default_identity(),
        lease_duration=config.lease_duration,
        renew_deadline=config.lease_duration * 2 / 3,
        retry_period=max(0.5, config.lease_duration / 7.5),
    )

    def show(problem: LeaseProblem | None) -> None:
        # /readyz names the problem; one that waiting will not fix (RBAC) also fails readiness.
        health.problem = f"lease {lease.namespace}/{lease.name}: {problem}" if problem else ""
        health.blocked = problem is not None and problem.blocking

    elector = LeaderElector(
        # Its own client: a renewal never queues behind the engine's calls, and each call is
        # bounded so that a hung API server costs one attempt, not the renew deadline.
        KubernetesApi(threads=2, request_timeout=lease.renew_deadline / 2),
        lease,
        on_problem=show,
    )
    health.phase = STANDBY  # ready as a hot standby: a rolling update may proceed
    await elector.acquire()
    health.phase = RUNNING
    stop_flag: asyncio.Event = asyncio.Event()
    keeper = asyncio.create_task(elector.keep(), name="lease-keeper")
    # The engine checks elector.fresh before every provider call: a stalled leader stops spending
    # refresh tokens before its Lease can pass to another replica (see LeaderElector.fresh). An
    # API outage only pauses it: kopf, the engine and their state stay, and keep() renews when
    # the API answers again; only a Lease taken by someone else ends the process.
    # stop_flag in the memo: the cleanup handler sets it when kopf stops on its own (SIGTERM), or
    # kopf waits 5 s for its task watching an unset flag before it gives up on it.
    kwargs = operator_kwargs(config, memo={"may_act": elector.fresh, "stop_flag": stop_flag})
    operator = asyncio.create_task(kopf.operator(**kwargs, stop_flag=stop_flag), name="kopf")
    done, _ = await asyncio.wait({keeper, operator}, return_when=asyncio.FIRST_COMPLETED)
    if keeper in done:
        # Another replica holds the Lease (or, a bug, the keeper failed): nothing may act any more;
        # stop kopf and exit, and the restarted pod stands by.
        if not elector.lost.is_set() and keeper.exception() is not None:
            logging.getLogger("emailtoken").error("lease keeper failed", exc_info=keeper.exception())
        stop_flag.set()
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(operator, timeout=config.lease_duration / 5)
        logging.getLogger("emailtoken").error("exiting after losing leadership")
        return 1
    keeper.cancel()
    await asyncio.gather(keeper, return_exceptions=True)
    await elector.release()
    return 0

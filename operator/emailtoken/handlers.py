"""kopf handlers: translate watch events into scheduler and engine calls, nothing more.

Importing this module registers the handlers in kopf's default registry. The
operator-wide objects (engine, scheduler) live in kopf's ``memo``, built at startup
from the :class:`~emailtoken.settings.OperatorConfig` that the command line put there.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import logging
from collections.abc import Mapping
from functools import partial
from typing import Any

import kopf

from emailtoken import metrics
from emailtoken.api import (
    ANNOTATION_REAUTHORIZE,
    ANNOTATION_REFRESH_NOW,
    GROUP,
    LABEL_MANAGED_BY,
    LABEL_TOKEN,
    MANAGED_BY,
    PLURAL,
    VERSION,
)
from emailtoken.engine import Engine, EngineConfig
from emailtoken.informer import Event, SecretInformer
from emailtoken.kube import KubernetesApi, load_config
from emailtoken.providers import Providers
from emailtoken.scheduler import Scheduler
from emailtoken.settings import OperatorConfig

log = logging.getLogger("emailtoken")
_WATCHED_ANNOTATIONS = (ANNOTATION_REFRESH_NOW, ANNOTATION_REAUTHORIZE)


def post_event(body: Mapping[str, Any], *, type: str, reason: str, message: str) -> None:
    """Events through kopf's poster (batched, retried, attached to the object)."""
    kopf.event(dict(body), type=type, reason=reason, message=message)


class NoDiffBase(kopf.DiffBaseStorage):
    """No diff base: kopf builds one (a deep copy of the object) for every event, but only
    change handlers (on.create/on.update) read it, and this operator has event handlers only.
    Building it was a third of kopf's cost per event (see bench/README.md).
    """

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        return None

    def fetch(self, *, body: kopf.Body) -> Any:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        return None


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Build the engine and start the scheduler."""
    config: OperatorConfig = memo.get("config") or OperatorConfig()
    # Only explicit kopf.event() calls become Events; log lines stay logs.
    settings.posting.level = logging.CRITICAL + 1
    # No cluster-wide CRD/namespace scanning: RBAC does not grant it (see rbac.py).
    settings.scanning.disabled = True
    # List in pages like client-go (500): the initial list is otherwise one response parsed at once.
    settings.watching.chunk_size = 500
    # kopf keeps each object's worker (and the last event it handled) for idle_timeout after
    # the event. The default 5 s keeps every token's worker alive through a restart's initial
    # list; the short-lived objects of 5,000 workers, interleaved with the long-lived state,
    # left Python's memory arenas fragmented (see bench/README.md).
    settings.queueing.idle_timeout = 0.5
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.watching.server_timeout = config.watch_timeout
    settings.watching.client_timeout = config.watch_timeout + 30
    settings.networking.request_timeout = 60
    settings.batching.error_delays = [1, 2, 5, 10, 30]
    load_config()
    # As many API and provider connections as steps run at once (Scheduler concurrency).
    api = KubernetesApi(threads=max(config.concurrency, 4))
    providers = Providers(
        ca_bundle=config.ca_bundle,
        timeout=config.provider_timeout,
        pool=config.concurrency,
        allowed_hosts=config.allowed_provider_hosts,
    )
    engine = Engine(
        api,
        providers,
        events=post_event,
        config=EngineConfig(
            redirect_base_url=config.redirect_base_url,
            admin_url=config.admin_url,
            keepalive=config.keepalive,
            min_refresh_interval=config.min_refresh_interval,
            routine_events=config.routine_events,
            provider_threads=config.concurrency,
            may_act=memo.get("may_act"),  # set by the runner when leader election is on
        ),
        observer=metrics.observer() if config.metrics_port else None,
    )

    async def step(packed: bytes) -> float | None:
        return (await engine.step(json.loads(packed))).delay

    scheduler = Scheduler(step, concurrency=config.concurrency)
    memo["engine"] = engine
    memo["scheduler"] = scheduler
    # Secrets are followed outside kopf (see emailtoken.informer for why): the metadata of every
    # Secret in scope, the bodies of the operator's own.
    informer = SecretInformer(
        partial(secret_events, engine, scheduler),
        own=partial(own_secret_events, engine),
        namespaces=() if config.all_namespaces else config.namespaces,
        page=settings.watching.chunk_size,
        timeout=config.watch_timeout,
    )
    engine.secret_index = informer
    informer.start(asyncio.get_running_loop())
    memo["informer"] = informer
    # Started by the first watch event, inside kopf's full context. kopf hands each object's
    # handlers a shallow copy of this memo, so the task lives in a dict they all share: a plain
    # memo key set from a handler would be seen by that object only (one loop per token).
    memo["tasks"] = {}
    # What exists now (modules, kopf, the clients: about 180,000 objects) lives as long as the
    # process. Frozen, it is out of the cyclic collector's reach: full collections scan only
    # what tokens add. A young generation of 10,000 instead of 700 objects lets most of a
    # step's and an event's temporaries die by reference count before a collection sees them.
    # Together they cut the collector's share of the CPU at start-up (see bench/README.md).
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000)
    log.info("emailtoken operator started (concurrency %d)", config.concurrency)


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    """Stop the scheduler; steps in flight get its drain period to finish (see Scheduler.run)."""
    task = (memo.get("tasks") or {}).get("scheduler")
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    informer: SecretInformer | None = memo.get("informer")
    if informer is not None:
        await asyncio.to_thread(informer.stop)
    if memo.get("stop_flag") is not None:
        memo["stop_flag"].set()  # the runner's flag: kopf is stopping anyway (see runner)


def _ensure_running(memo: kopf.Memo, scheduler: Scheduler) -> None:
    """Start the scheduler from a handler: kopf's event poster is only reachable from there."""
    tasks = memo["tasks"]
    if tasks.get("scheduler") is None:
        tasks["scheduler"] = asyncio.create_task(scheduler.run(), name="emailtoken-scheduler")


def _pack(body: Mapping[str, Any]) -> bytes:
    """The body as compact JSON: between steps a token waits as ~1.5 KB instead of ~6 KB of dicts.

    ``metadata.managedFields`` (server-side apply bookkeeping, often larger than the rest of
    the object) is left out: no step reads it.
    """
    metadata = {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
    return json.dumps({**body, "metadata": metadata}, separators=(",", ":")).encode()


def _watched(body: Mapping[str, Any]) -> tuple[bytes, tuple[str | None, ...]]:
    """What decides whether an event needs a step: a digest of the spec, the control annotations."""
    spec = hashlib.blake2b(json.dumps(body.get("spec"), sort_keys=True).encode(), digest_size=16).digest()
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    return spec, tuple(annotations.get(a) for a in _WATCHED_ANNOTATIONS)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def token_event(event: Mapping[str, Any], body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Keep the scheduler's copy of every EmailToken current."""
    scheduler: Scheduler | None = memo.get("scheduler")
    engine: Engine | None = memo.get("engine")
    if scheduler is None or engine is None:
        return
    _ensure_running(memo, scheduler)
    key = (body.metadata.namespace or "", body.metadata.name or "")
    if event.get("type") == "DELETED" or body.metadata.get("deletionTimestamp"):
        scheduler.remove(key)
        engine.forget(key)
        return
    latest = dict(body)
    watched = _watched(latest)
    seen = memo.setdefault("seen", {})
    previous = seen.get(key)
    seen[key] = watched
    # A change of spec or of a control annotation needs a step now; status echoes do not.
    scheduler.upsert(key, _pack(latest), wake=previous != watched)


def secret_events(engine: Engine, scheduler: Scheduler, events: list[Event]) -> None:
    """Secrets changed (the informer's batch of metadata): drop stale credentials, let waiting tokens retry now.

    A Secret a token reads (client secret, key, grant, its consumer Secret) changing wakes a
    failing token at once instead of at its next backoff; a credential Secret's value kept
    from a GET is dropped, so the step reads the new one.
    """
    for kind, secret in events:
        metadata = secret.get("metadata") or {}
        namespace, name = metadata.get("namespace") or "", metadata.get("name") or ""
        deleted = kind == "DELETED"
        if deleted:
            engine.credential_secrets.removed(namespace, name)
        else:
            engine.credential_secrets.observed(namespace, name, secret, kind=kind)
        for key in engine.referencing(namespace, name):
            if deleted:
                engine.secret_deleted(key, name)
            elif _own_write(engine, key, name, metadata):
                continue
            engine.nudge(key)
            scheduler.wake(key)


def own_secret_events(engine: Engine, events: list[Event]) -> None:
    """The operator's own Secrets with their data: what each consumer Secret holds, for a token
    not stepped yet (a restart reads them here instead of one GET per token)."""
    for kind, secret in events:
        metadata = secret.get("metadata") or {}
        if (metadata.get("labels") or {}).get(LABEL_MANAGED_BY) != MANAGED_BY:
            continue  # a server that ignored the label selector (kmock)
        namespace, name = metadata.get("namespace") or "", metadata.get("name") or ""
        engine.consumer_observed(namespace, name, secret, deleted=kind == "DELETED")


def _own_write(engine: Engine, key: tuple[str, str], name: str, metadata: Mapping[str, Any]) -> bool:
    """The echo of a healthy token's own consumer-Secret write: stepping again would do nothing.

    Every refresh comes back as one such event; waking the token for it cost a second step
    per refresh, and that step could carry the body from before this step's status write
    and so write the same status again.
    """
    st = engine.states.get(key)
    return (
        st is not None
        and st.loaded
        and st.error is None
        and name == st.consumer
        and (metadata.get("labels") or {}).get(LABEL_TOKEN) == key[1]
    )


@kopf.on.probe(id="tokens")
async def probe_tokens(memo: kopf.Memo, **_: Any) -> int:
    """Liveness detail: how many tokens are scheduled."""
    scheduler: Scheduler | None = memo.get("scheduler")
    return len(scheduler) if scheduler is not None else 0

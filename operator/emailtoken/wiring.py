"""The operator's parts, built once from its config and held in one typed object.

The runner hands kopf a :class:`Launch` (the config and what leader election adds); kopf's
startup handler builds a :class:`Wiring` from it with :func:`build` and the handlers use
only that object. Nothing else lives in kopf's memo.

Flows (see docs/CONTRIBUTING-internals.md): an EmailToken event goes informer →
:meth:`Wiring.token_events` → scheduler → :meth:`Engine.step`; a Secret event goes informer →
:func:`emailtoken.tokenindex.secret_events` → scheduler. Events go to the API server through
:class:`emailtoken.events.EventPoster`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from emailtoken import metrics
from emailtoken.api import ANNOTATION_REAUTHORIZE, ANNOTATION_REFRESH_NOW, Key
from emailtoken.engine import Engine, EngineConfig
from emailtoken.events import EventPoster
from emailtoken.fence import Leadership
from emailtoken.informer import Event, Informer
from emailtoken.kube import KubernetesApi, load_config
from emailtoken.providers import Providers
from emailtoken.scheduler import Scheduler
from emailtoken.settings import OperatorConfig
from emailtoken.tokenindex import own_secret_events, secret_events

log = logging.getLogger("emailtoken")
_WATCHED_ANNOTATIONS = (ANNOTATION_REFRESH_NOW, ANNOTATION_REAUTHORIZE)
#: List in pages like client-go (500): the initial list is otherwise one response parsed at once.
PAGE = 500


@dataclass(frozen=True)
class Launch:
    """What the runner gives kopf's startup handler (kopf's memo carries it as ``launch``)."""

    config: OperatorConfig = field(default_factory=OperatorConfig)
    #: the leader elector when leader election is on (fences every step and provider call)
    may_act: Leadership | None = None
    #: the runner's flag: set by the cleanup handler when kopf stops on its own (SIGTERM)
    stop_flag: asyncio.Event | None = None


@dataclass
class Wiring:
    """The engine, the scheduler that runs its steps, the informer that wakes them and the Event poster."""

    launch: Launch
    engine: Engine
    scheduler: Scheduler
    informer: Informer
    events: EventPoster
    #: per token, the uid and the control annotations of its last event (see :func:`controls`)
    seen: dict[Key, tuple[str, tuple[str | None, ...]]] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None

    @property
    def config(self) -> OperatorConfig:
        return self.launch.config

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start posting Events, running steps and following EmailTokens and Secrets (on ``loop``, the running one)."""
        self.events.start()
        self._task = loop.create_task(self.scheduler.run(), name="emailtoken-scheduler")
        self.informer.start(loop)

    def token_events(self, batch: list[Event]) -> None:
        """The informer's EmailToken events, in the order the API server sent them."""
        for kind, body in batch:
            metadata = body.get("metadata") or {}
            key = (metadata.get("namespace") or "", metadata.get("name") or "")
            try:
                self.token_event(key, body, gone=kind == "DELETED" or bool(metadata.get("deletionTimestamp")))
            except Exception:  # a bug must cost this event, not the rest of the batch
                log.exception("could not take the %s event of EmailToken %s/%s", kind, *key)

    def token_event(self, key: Key, body: Mapping[str, Any], *, gone: bool) -> None:
        """Keep the scheduler's copy of one EmailToken current; a spec the engine has not stepped
        with or a changed control annotation needs a step now, status echoes (one per refresh) do not."""
        if gone:
            self.scheduler.remove(key)
            self.engine.forget(key)
            self.seen.pop(key, None)
            return
        now = (str((body.get("metadata") or {}).get("uid") or ""), controls(body))
        previous = self.seen.get(key)
        self.seen[key] = now
        if previous is not None and previous[0] != now[0]:
            # Deleted and created again under the same name while no DELETED reached us (the
            # watch had to list again, after 410 Gone): nothing of the old token's state applies.
            self.engine.forget(key)
        stepped = self.engine.stepped_with(key, body.get("spec") or {})
        self.scheduler.upsert(key, pack(body), wake=previous != now or not stepped)

    async def stop(self) -> None:
        """Stop the scheduler (steps in flight get its drain period, see Scheduler.run), then the
        informer; post the Events the last steps queued."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        # Together: the Events the last steps queued are posted while the watches close, both
        # within the stop's grace (the runner cancels kopf after it).
        await asyncio.gather(asyncio.to_thread(self.informer.stop), self.events.stop())
        if self.launch.stop_flag is not None:
            self.launch.stop_flag.set()  # kopf is stopping anyway (see runner)


def build(launch: Launch) -> Wiring:
    """Build the operator's parts from its config (the kube config is loaded here)."""
    config = launch.config
    load_config()
    # As many API and provider connections as steps run at once (Scheduler concurrency).
    api = KubernetesApi(threads=max(config.concurrency, 4))
    providers = Providers(
        ca_bundle=config.ca_bundle,
        timeout=config.provider_timeout,
        pool=config.concurrency,
        allowed_hosts=config.allowed_provider_hosts,
    )
    # The informer calls back into the engine and the scheduler, which it is built before: the
    # callbacks look them up when a batch arrives (after start()).
    parts: dict[str, Any] = {}

    def on_secrets(batch: list[Event]) -> None:
        secret_events(parts["engine"], parts["scheduler"], batch)

    def on_own_secrets(batch: list[Event]) -> None:
        own_secret_events(parts["engine"], batch)

    def on_tokens(batch: list[Event]) -> None:
        parts["wiring"].token_events(batch)

    # EmailTokens and Secrets are followed outside kopf (see emailtoken.informer for why): every
    # EmailToken, the metadata of every Secret in scope, the bodies of the operator's own.
    informer = Informer(
        on_secrets,
        own=on_own_secrets,
        tokens=on_tokens,
        namespaces=() if config.all_namespaces else config.namespaces,
        page=PAGE,
        timeout=config.watch_timeout,
    )
    # Its own client and threads: an Event never waits for a step's call, nor a step for an Event.
    events = EventPoster(KubernetesApi(threads=4))
    engine = Engine(
        api,
        providers,
        events=events.post,
        config=engine_config(launch),
        observer=metrics.observer() if config.metrics_port else None,
        secret_index=informer,
    )
    scheduler = Scheduler(_stepper(engine), concurrency=config.concurrency, drain=config.stop_grace)
    wiring = Wiring(launch=launch, engine=engine, scheduler=scheduler, informer=informer, events=events)
    parts.update(engine=engine, scheduler=scheduler, wiring=wiring)
    return wiring


#: Each field of :class:`EngineConfig` and the :class:`OperatorConfig` setting it comes from (all
#: but ``may_act``, which leader election adds: :func:`engine_config`).
ENGINE_SETTINGS: Mapping[str, str] = {
    "redirect_base_url": "redirect_base_url",
    "admin_url": "admin_url",
    "keepalive": "keepalive",
    "min_refresh_interval": "min_refresh_interval",
    "federation": "federation",
    "grant_warning": "grant_warning",
    "mail_hosts": "allowed_mail_hosts",
    "routine_events": "routine_events",
    "provider_threads": "concurrency",
    "persist_grace": "stop_grace",
}


def engine_config(launch: Launch) -> EngineConfig:
    """The engine's share of the operator config, field by field as :data:`ENGINE_SETTINGS` maps it."""
    settings = {name: getattr(launch.config, setting) for name, setting in ENGINE_SETTINGS.items()}
    return EngineConfig(may_act=launch.may_act, **settings)


def _stepper(engine: Engine) -> Callable[[bytes], Any]:
    async def step(packed: bytes) -> float | None:
        return (await engine.step(json.loads(packed))).delay

    return step


def pack(body: Mapping[str, Any]) -> bytes:
    """The body as compact JSON: between steps a token waits as ~1.5 KB instead of ~6 KB of dicts.

    ``metadata.managedFields`` (server-side apply bookkeeping, often larger than the rest of
    the object) is left out: no step reads it.
    """
    metadata = {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
    return json.dumps({**body, "metadata": metadata}, separators=(",", ":")).encode()


def controls(body: Mapping[str, Any]) -> tuple[str | None, ...]:
    """The control annotations' values: a change needs a step now."""
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    return tuple(annotations.get(a) for a in _WATCHED_ANNOTATIONS)

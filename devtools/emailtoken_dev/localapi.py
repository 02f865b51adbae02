"""An embedded Kubernetes API for the demo, the tests and the benchmark (PyPI ``kmock``).

kmock emulates the API over real HTTP (lists, watches, patches, the status
subresource). Three gaps matter here and are filled in: ``generateName`` (kopf names
every Event that way), ``creationTimestamp`` (printer columns) and an initial
``resourceVersion`` (a grant Secret created without one would read back as "no version",
and the next compare-and-swap write would try to create it again and get 409).
For ``kubectl`` (the demo prints a kubeconfig): lists carry their ``kind``, the core group's
discovery says ``v1`` (kmock says ``/v1``), field selectors are applied to lists and watches
(``kubectl describe``'s Events, ``kubectl wait``), and EmailTokens come as server-side tables
with the CRD's printer columns (:mod:`emailtoken_dev.kubeviews`).
Everything else is kmock as is; see TESTING.md for what it does not emulate.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

import kmock
import yaml
from kmock._internal import enums

from emailtoken_dev import kubeviews

EMAILTOKENS = "emailtoken.io/v1alpha1/emailtokens"


class _Emulator(kmock.KubernetesEmulator):  # type: ignore[misc]
    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        # kubectl decodes watch streams by Content-Type; kmock's say application/octet-stream.
        json_stream = kmock.headers({"Content-Type": "application/json"})
        (self.fallback**1)[enums.action.WATCH] << json_stream << (lambda request: self._serve_watch(request))

    async def _handle(self, request: Any) -> Any:
        if request.action == enums.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:8]
            meta.setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            meta.setdefault("resourceVersion", "1")
        return await super()._handle(request)

    async def _serve_version(self, request: Any) -> Any:
        payload = await super()._serve_version(request)
        payload["groupVersion"] = payload["groupVersion"].lstrip("/")  # the core group is "v1"
        for entry in payload["resources"]:
            if "/" in entry["name"]:  # a subresource has no short names of its own (kubectl warns)
                entry.update(shortNames=[], categories=[], verbs=["get", "patch", "update"])
        return payload

    async def _serve_list(self, request: Any) -> Any:
        payload = await super()._serve_list(request)
        terms = kubeviews.field_selector(request.params)
        items = [item for item in payload["items"] if kubeviews.selected(item, terms)]
        resource = request.resource
        if kubeviews.wants_table(request.headers) and _printer_columns(resource.group, resource.plural):
            return kubeviews.table(items, _printer_columns(resource.group, resource.plural), "1")
        info = next((self.resources[r] for r in self._get_resources() if r == resource), None)
        api_version = f"{resource.group}/{resource.version}".lstrip("/")
        return {"apiVersion": api_version, "kind": f"{info.kind if info else ''}List", **payload, "items": items}

    async def _serve_fetch(self, request: Any) -> Any:
        obj = await super()._serve_fetch(request)
        columns = kubeviews.wants_table(request.headers) and _printer_columns(
            request.resource.group, request.resource.plural
        )
        return kubeviews.table([obj], columns, "1") if columns else obj

    async def _serve_watch(self, request: Any) -> AsyncIterator[Any]:
        terms = kubeviews.field_selector(request.params)
        columns = kubeviews.wants_table(request.headers) and _printer_columns(
            request.resource.group, request.resource.plural
        )
        # kmock replays every object as ADDED at the start of a watch. `kubectl get -w` has just
        # printed them from its list, so its table watch gets the changes only, as from a real server.
        changes_only = bool(columns) and request.params.get("resourceVersion") not in (None, "", "0")
        events = self._changes(request) if changes_only else super()._serve_watch(request)
        async for event in events:
            if not isinstance(event, dict):
                yield event
            elif kubeviews.selected(event.get("object") or {}, terms):
                obj = event["object"]
                yield {**event, "object": kubeviews.table([obj], columns, "1")} if columns else event

    async def _changes(self, request: Any) -> AsyncIterator[Any]:
        yield b""  # the headers now: the stream is open
        async for event in self._buses[request.resource]:
            meta = (event.get("object") or {}).get("metadata") or {}
            if request.namespace in (None, meta.get("namespace")) and request.name in (None, meta.get("name")):
                yield event


@functools.cache
def _printer_columns(group: str, plural: str) -> tuple[dict[str, Any], ...]:
    """The CRD's additionalPrinterColumns for EmailTokens (the built-in kinds get kubectl's defaults)."""
    if (group, plural) != ("emailtoken.io", "emailtokens"):
        return ()
    crd = yaml.safe_load(resources.files("emailtoken").joinpath("crds", "emailtokens.emailtoken.io.yaml").read_text())
    return tuple(crd["spec"]["versions"][0].get("additionalPrinterColumns") or ())


def register_resources(emulator: kmock.KubernetesEmulator) -> None:
    """The built-in Kubernetes kinds plus the EmailToken CRD (with its status subresource)."""
    emulator.resources.load_bundled()
    emulator.resources[EMAILTOKENS] = kmock.ResourceInfo(
        kind="EmailToken",
        singular="emailtoken",
        namespaced=True,
        shortnames={"et"},
        verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
        subresources={"status"},
    )


def kubeconfig_for(url: str, namespace: str | None = None) -> str:
    """A kubeconfig for an unauthenticated local API server."""
    context: dict[str, str] = {"cluster": "local", "user": "local"}
    if namespace:
        context["namespace"] = namespace
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "local", "cluster": {"server": url}}],
            "users": [{"name": "local", "user": {}}],
            "contexts": [{"name": "local", "context": context}],
            "current-context": "local",
        }
    )


class LocalKubernetes:
    """``async with LocalKubernetes() as k:`` serves the API at ``k.url``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self.url = ""
        self.emulator: kmock.KubernetesEmulator | None = None
        self._stack: Any = None

    async def __aenter__(self) -> LocalKubernetes:
        import contextlib

        self._stack = contextlib.AsyncExitStack()
        emulator = await self._stack.enter_async_context(_Emulator())
        server = await self._stack.enter_async_context(kmock.Server(emulator, host=self.host, port=self.port or None))
        register_resources(emulator)
        self.emulator = emulator
        self.url = str(server.url).rstrip("/")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.__aexit__(*exc)

    def write_kubeconfig(self, path: Path, namespace: str | None = None) -> Path:
        """Write a kubeconfig for this server and return its path."""
        path.write_text(kubeconfig_for(self.url, namespace))
        return path


class LocalKubernetesThread:
    """The same, served from a background thread for synchronous callers (tests)."""

    def __init__(self, workdir: Path, port: int = 0) -> None:
        self.workdir = workdir
        self.port = port
        self.url = ""
        self.kubeconfig = workdir / "kubeconfig"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="local-kubernetes", daemon=True)

    def start(self) -> LocalKubernetesThread:
        """Start serving and write ``workdir/kubeconfig``."""
        self._thread.start()
        if not self._ready.wait(20) or self._error:
            raise RuntimeError(f"the local Kubernetes API did not start: {self._error!r}")
        self.kubeconfig.write_text(kubeconfig_for(self.url))
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with LocalKubernetes(port=self.port) as local:
            self.url = local.url
            self._ready.set()
            await self._stop.wait()

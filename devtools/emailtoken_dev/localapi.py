"""An embedded Kubernetes API for the demo, the tests and the benchmark (PyPI ``kmock``).

kmock emulates the API over real HTTP (lists, watches, patches, the status
subresource). Three gaps matter here and are filled in: ``generateName`` (kopf names
every Event that way), ``creationTimestamp`` (printer columns) and an initial
``resourceVersion`` (a grant Secret created without one would read back as "no version",
and the next compare-and-swap write would try to create it again and get 409).
Everything else is kmock as is; see TESTING.md for what it does not emulate.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import kmock
from kmock._internal import enums

EMAILTOKENS = "emailtoken.io/v1alpha1/emailtokens"


class _Emulator(kmock.KubernetesEmulator):  # type: ignore[misc]
    async def _handle(self, request: Any) -> Any:
        if request.action == enums.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:8]
            meta.setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            meta.setdefault("resourceVersion", "1")
        return await super()._handle(request)


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

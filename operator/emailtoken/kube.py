"""The Kubernetes API calls the operator makes, and nothing else.

Every call goes through the official ``kubernetes`` client in a worker thread and
returns plain dicts. Keeping the list here (and mirrored in :mod:`emailtoken.rbac`)
is what lets RBAC stay least-privilege. Optimistic concurrency uses
``metadata.resourceVersion`` preconditions: the API server answers 409 when stale.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from emailtoken.api import GROUP, PLURAL, VERSION

MERGE_PATCH = "application/merge-patch+json"


class KubeError(Exception):
    """An API call failed in a way the caller may want to tell apart."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message  # the API server's own words (e.g. which verb and resource RBAC refused)


class Conflict(KubeError):
    """409: someone else changed the object (resourceVersion precondition failed)."""


class NotFound(KubeError):
    """404: no such object."""


class Unreachable(KubeError):
    """No HTTP answer at all (refused, reset, timed out, TLS failure): ``status`` is 0.

    A KubeError like any other, so callers that already treat API errors as transient
    (retry later, keep state) do the same during an outage instead of crashing on a
    urllib3 exception they never heard of.
    """

    def __init__(self, message: str) -> None:
        super().__init__(0, message)
        self.args = (f"API server unreachable: {message}",)


class KubeApi(Protocol):
    """What the engine and the stores need from the API server."""

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def create_secret(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]: ...

    async def patch_secret(
        self, namespace: str, name: str, patch: dict[str, Any], *, resource_version: str | None = None
    ) -> dict[str, Any]: ...

    async def delete_secret(self, namespace: str, name: str, *, resource_version: str | None = None) -> None: ...

    async def patch_token_status(self, namespace: str, name: str, status: dict[str, Any]) -> None: ...


def load_config() -> None:
    """In-cluster config when running in a pod, else the current kubeconfig."""
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        # Read $KUBECONFIG now: the client only looks at it when first imported.
        kubernetes.config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)


def _raise(exc: ApiException) -> None:
    if not exc.status:  # the client's own wrapping of a TLS failure: no answer from the server
        raise Unreachable(_first_line(str(exc.reason or "TLS error"))) from None
    reason = ""
    try:
        reason = json.loads(exc.body or "{}").get("message", "")
    except (ValueError, AttributeError):
        reason = str(exc.reason or "")
    if exc.status == 409:
        raise Conflict(409, reason or "conflict") from None
    if exc.status == 404:
        raise NotFound(404, reason or "not found") from None
    raise KubeError(exc.status or 0, reason or str(exc.reason)) from None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:300] if text.strip() else ""


def unreachable(exc: BaseException) -> Unreachable:
    """A transport failure as :class:`Unreachable`, named by its cause (host, port, errno; never headers)."""
    cause = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None else exc
    return Unreachable(_first_line(str(cause)) or type(cause).__name__)


def _json(response: Any) -> dict[str, Any]:
    data = response.data if hasattr(response, "data") else response
    return json.loads(data) if data else {}


class KubernetesApi:
    """:class:`KubeApi` over the official client (blocking calls in threads)."""

    def __init__(
        self,
        api_client: kubernetes.client.ApiClient | None = None,
        *,
        threads: int = 16,
        request_timeout: float | None = None,
        configuration: kubernetes.client.Configuration | None = None,
    ) -> None:
        """``request_timeout`` bounds each call of this instance (connect and read) and turns
        off urllib3's own retries: for callers on a deadline (the leader elector), a hung call
        is worth less than the next attempt. ``configuration``: where to connect (default: the
        loaded kubeconfig or in-cluster config); ignored when ``api_client`` is given."""
        self._timeout = request_timeout
        if api_client is None:
            # One pooled connection per thread: the client's default pool (5 per CPU) is smaller
            # than the thread pool on small nodes, and every call beyond it opened and then
            # discarded a connection (a TLS handshake each against a real API server).
            if configuration is None:
                configuration = kubernetes.client.Configuration.get_default_copy()
            else:
                configuration = copy.deepcopy(configuration)
            configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize or 0, threads)
            if request_timeout is not None:
                configuration.retries = 0
            api_client = kubernetes.client.ApiClient(configuration)
        self.client = api_client
        self.core = kubernetes.client.CoreV1Api(self.client)
        self.custom = kubernetes.client.CustomObjectsApi(self.client)
        self.coordination = kubernetes.client.CoordinationV1Api(self.client)
        # Threads of this instance only: the leader elector's renewals (its own instance) never
        # wait behind the engine's calls, whatever the size of asyncio's default pool.
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="emailtoken-kube")

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if self._timeout is not None:
            kwargs.setdefault("_request_timeout", self._timeout)

        def call() -> dict[str, Any]:
            try:
                return _json(fn(*args, _preload_content=False, **kwargs))
            except ApiException as exc:
                _raise(exc)
                raise
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                # Refused, reset, timed out: the client lets urllib3's exceptions through
                # (reading the body too may raise them). Callers handle KubeError.
                raise unreachable(exc) from None

        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Secret, or None."""
        try:
            return await self._run(self.core.read_namespaced_secret, name, namespace)
        except NotFound:
            return None

    async def create_secret(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create; Conflict when it exists already."""
        return await self._run(self.core.create_namespaced_secret, namespace, body)

    async def patch_secret(
        self, namespace: str, name: str, patch: dict[str, Any], *, resource_version: str | None = None
    ) -> dict[str, Any]:
        """Merge-patch; with ``resource_version`` the write only lands on that version."""
        body = json.loads(json.dumps(patch))
        if resource_version is not None:
            body.setdefault("metadata", {})["resourceVersion"] = resource_version
        return await self._run(self.core.patch_namespaced_secret, name, namespace, body, _content_type=MERGE_PATCH)

    async def delete_secret(self, namespace: str, name: str, *, resource_version: str | None = None) -> None:
        """Delete (only that version of it, when ``resource_version`` is given: else Conflict); missing is fine."""
        options = None
        if resource_version:
            options = kubernetes.client.V1DeleteOptions(
                preconditions=kubernetes.client.V1Preconditions(resource_version=resource_version)
            )
        try:
            await self._run(self.core.delete_namespaced_secret, name, namespace, body=options)
        except NotFound:
            return

    async def patch_token_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge-patch the status subresource (never spec)."""
        await self._run(
            self.custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"status": status},
            _content_type=MERGE_PATCH,
        )

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Lease, or None."""
        try:
            return await self._run(self.coordination.read_namespaced_lease, name, namespace)
        except NotFound:
            return None

    async def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create; Conflict when another candidate created it first."""
        return await self._run(self.coordination.create_namespaced_lease, namespace, body)

    async def patch_lease(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch carrying metadata.resourceVersion: 409 if someone wrote in between."""
        return await self._run(
            self.coordination.patch_namespaced_lease, name, namespace, body, _content_type=MERGE_PATCH
        )

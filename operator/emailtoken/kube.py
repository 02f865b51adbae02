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
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from emailtoken.api import GROUP, PLURAL, VERSION
from emailtoken.apicheck import default_api_timeout

MERGE_PATCH = "application/merge-patch+json"
#: What a write whose answer nobody reads asks for: the object's metadata, not its data (a
#: consumer Secret's answer shrinks from ~4.7 KB to ~0.7 KB); plain JSON from a server that cannot.
_METADATA_ANSWER = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"
#: Seconds the credentials header of :meth:`KubernetesApi._send` is reused before the configuration
#: is asked again. Asking runs its refresh hook (an in-cluster token re-read from its file, a
#: kubeconfig exec plugin's token renewed near its expiry), which also re-derives the proxies from
#: the whole environment: ~50 µs per request with 36 variables, twice that in a Pod of a namespace
#: with many Services. A 401 asks again at once (and resends when the answer differs).
AUTH_REUSE = 10.0


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

    async def write_secret_and_status(
        self, namespace: str, name: str, body: dict[str, Any], token: str, status: dict[str, Any], *, create: bool
    ) -> KubeError | None: ...

    async def create_service_account_token(
        self, namespace: str, name: str, audience: str, seconds: int
    ) -> dict[str, Any]: ...


#: What the operator's own calls (Secrets, status) wait for an answer at most: a connection that
#: went silent (a vanished load balancer, a half-open socket) ends the call instead of a thread.
READ_TIMEOUT = 60.0


class ConfigError(Exception):
    """No usable Kubernetes credentials; the message says why and what to do, in one line."""


@dataclass(frozen=True)
class Credentials:
    """Where the client connects and whose credentials it presents, for messages that must say so."""

    server: str
    #: ``kubeconfig PATH (context C, user U)`` or ``the Pod's ServiceAccount``
    source: str
    in_cluster: bool = False
    #: the context's namespace (None: not set)
    namespace: str | None = None


def load_config(
    *,
    kubeconfig: str | None = None,
    context: str | None = None,
    configuration: kubernetes.client.Configuration | None = None,
    in_cluster_first: bool = True,
) -> Credentials:
    """In a Pod its ServiceAccount (the order of kopf's own login, which must agree), else the
    kubeconfig: ``kubeconfig`` (a ``--kubeconfig`` flag), else ``$KUBECONFIG``, else
    ``~/.kube/config``. ``in_cluster_first=False`` is kubectl's order (the plugin): an existing
    kubeconfig wins over the Pod's ServiceAccount. A ``kubeconfig`` or ``context`` asked for
    always means the kubeconfig.

    Fills ``configuration``, or the client's default. Raises :class:`ConfigError` when none works.
    """
    pod_problem = ""
    path = kubeconfig or os.environ.get("KUBECONFIG") or None  # now: the client reads it only once
    wanted = bool(kubeconfig or context) or (not in_cluster_first and bool(_existing(path)))
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not wanted:
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
            return Credentials(_server(configuration), "the Pod's ServiceAccount", in_cluster=True)
        except kubernetes.config.ConfigException as exc:
            pod_problem = f"the Pod's ServiceAccount credentials cannot be read ({exc}); "
    return _load_kubeconfig(kubeconfig, path, context, configuration, pod_problem)


def _existing(path: str | None) -> list[str]:
    """The files of a kubeconfig path list (``$KUBECONFIG`` may name several) that exist."""
    files = [os.path.expanduser(p) for p in (path or "~/.kube/config").split(os.pathsep) if p]
    return [f for f in files if os.path.isfile(f)]


def _load_kubeconfig(
    flag: str | None,
    path: str | None,
    context: str | None,
    configuration: kubernetes.client.Configuration | None,
    pod_problem: str,
) -> Credentials:
    named = f"--kubeconfig {flag}" if flag else f"KUBECONFIG={path}" if path else "~/.kube/config"
    if not _existing(path):
        where = "" if pod_problem or os.environ.get("KUBERNETES_SERVICE_HOST") else " and this is not a Pod"
        raise ConfigError(
            f"no Kubernetes credentials: {pod_problem}{named} is not a file{where}; "
            "point KUBECONFIG at a kubeconfig file (or run in a Pod with a ServiceAccount)"
        )
    try:
        kubernetes.config.load_kube_config(config_file=path, context=context, client_configuration=configuration)
        contexts, active = kubernetes.config.list_kube_config_contexts(config_file=path)
    except Exception as exc:  # the loader raises ConfigException, yaml, key and type errors for a bad file
        words = _first_line(str(exc)) or type(exc).__name__
        raise ConfigError(f"cannot use the kubeconfig {named}: {words}; fix it or use another") from None
    chosen = next((c for c in contexts if c.get("name") == context), None) if context else active
    details = (chosen or {}).get("context") or {}
    source = f"kubeconfig {path or '~/.kube/config'} (context {(chosen or {}).get('name')}, user {details.get('user')})"
    return Credentials(_server(configuration), source, namespace=details.get("namespace") or None)


def _server(configuration: kubernetes.client.Configuration | None) -> str:
    return str((configuration or kubernetes.client.Configuration.get_default_copy()).host)


def _raise(exc: ApiException) -> None:
    if not exc.status:  # the client's own wrapping of a TLS failure: no answer from the server
        raise Unreachable(_first_line(str(exc.reason or "TLS error"))) from None
    raise refusal(exc.status, exc.body, str(exc.reason or "")) from None


def refusal(status: int, body: str | bytes | None, reason: str) -> KubeError:
    """The API server's refusal as a :class:`KubeError` carrying its own words (``message`` of its Status)."""
    message = ""
    try:
        message = json.loads(body or "{}").get("message", "")
    except (ValueError, AttributeError):
        message = reason
    if status == 409:
        return Conflict(409, message or "conflict")
    if status == 404:
        return NotFound(404, message or "not found")
    return KubeError(status, message or reason)


def _secret_path(namespace: str, name: str | None = None) -> str:
    path = f"/api/v1/namespaces/{quote(namespace, safe='')}/secrets"
    return f"{path}/{quote(name, safe='')}" if name is not None else path


def _event_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{quote(namespace, safe='')}/events"


def _status_path(namespace: str, name: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace, safe='')}/{PLURAL}/{quote(name, safe='')}/status"


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
        is worth less than the next attempt. Without it, connecting may take
        :func:`default_api_timeout` and an answer :data:`READ_TIMEOUT`. ``configuration``: where
        to connect (default: the loaded kubeconfig or in-cluster config); ignored when
        ``api_client`` is given."""
        self._timeout: float | tuple[float, float] = (
            request_timeout if request_timeout is not None else (default_api_timeout(), READ_TIMEOUT)
        )
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
        timeout = self._timeout
        self._http_timeout = (
            urllib3.Timeout(connect=timeout[0], read=timeout[1])
            if isinstance(timeout, tuple)
            else urllib3.Timeout(total=timeout)
        )
        self._host = str(self.client.configuration.host).rstrip("/")
        #: a server behind a path (a proxy such as Rancher's): the part every request path starts with
        self._prefix = urllib3.util.parse_url(self._host).path or ""
        self._server: urllib3.HTTPConnectionPool | None = None
        self._auth: tuple[float, dict[str, str]] | None = None
        self.core = kubernetes.client.CoreV1Api(self.client)
        self.custom = kubernetes.client.CustomObjectsApi(self.client)
        self.coordination = kubernetes.client.CoordinationV1Api(self.client)
        # Threads of this instance only: the leader elector's renewals (its own instance) never
        # wait behind the engine's calls, whatever the size of asyncio's default pool.
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="emailtoken-kube")

    async def _run(self, fn: Any, *args: Any, answer: bool = True, **kwargs: Any) -> dict[str, Any]:
        """Call ``fn`` in a thread; its decoded answer, or ``{}`` without decoding when ``answer`` is False."""
        kwargs.setdefault("_request_timeout", self._timeout)

        def call() -> dict[str, Any]:
            try:
                response = fn(*args, _preload_content=False, **kwargs)
                if not answer:
                    _ = response.data  # read to the end, so that the connection goes back to the pool
                    return {}
                return _json(response)
            except ApiException as exc:
                _raise(exc)
                raise
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                # Refused, reset, timed out: the client lets urllib3's exceptions through
                # (reading the body too may raise them). Callers handle KubeError.
                raise unreachable(exc) from None

        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    def _send(self, method: str, path: str, body: Any = None, *, answer: bool = True) -> dict[str, Any]:
        """One request through the client's own connection pool, TLS settings and credentials
        (its refresh hook included, see :data:`AUTH_REUSE`), without its generated layers:
        argument validation, serialization and a pool lookup per request cost about a quarter of
        each call's CPU, and every refresh makes two of these calls (bench/README.md). Blocking:
        call it in a thread."""
        headers = {**self._credentials(), "Accept": "application/json" if answer else _METADATA_ANSWER}
        data = None
        if body is not None:
            headers["Content-Type"] = MERGE_PATCH if method == "PATCH" else "application/json"
            data = json.dumps(body, separators=(",", ":")).encode()
        response = self._request(method, path, data, headers)
        if response.status == 401:  # refused: the client may have renewed its token since we read it
            fresh = self._credentials(fresh=True)
            if any(headers.get(k) != v for k, v in fresh.items()):  # the same ones again: no second refusal
                headers.update(fresh)
                response = self._request(method, path, data, headers)
        if not 200 <= response.status <= 299:
            raise refusal(response.status, response.data, str(response.reason or ""))
        return json.loads(response.data) if answer and response.data else {}

    def _credentials(self, *, fresh: bool = False) -> dict[str, str]:
        """The client's default headers and its credentials header, asked for at most every
        :data:`AUTH_REUSE` seconds (or now: ``fresh``). Callers copy it, never change it."""
        now = time.monotonic()
        cached = self._auth
        if cached is not None and not fresh and now < cached[0]:
            return cached[1]
        headers = dict(self.client.default_headers)
        try:
            # auth_settings() asks the refresh hook (an in-cluster token re-read from its file)
            for setting in self.client.configuration.auth_settings().values():
                if setting.get("in") == "header" and setting.get("value"):
                    headers[setting["key"]] = setting["value"]
        except (urllib3.exceptions.HTTPError, OSError) as exc:  # an exec plugin or OIDC refresh that found no server
            raise unreachable(exc) from None
        self._auth = (now + AUTH_REUSE, headers)
        return headers

    def _request(self, method: str, path: str, data: bytes | None, headers: dict[str, str]) -> Any:
        """Send on the API server's connection pool, looked up once (the manager's lookup builds
        and normalizes a key per request); through the manager itself behind a proxy."""
        manager = self.client.rest_client.pool_manager
        pool = self._server
        try:
            if pool is None or pool.pool is None:  # first use, or closed by the manager: look it up
                if isinstance(manager, urllib3.ProxyManager):
                    url, timeout = self._host + path, self._http_timeout
                    return manager.urlopen(method, url, body=data, headers=headers, timeout=timeout, redirect=False)
                pool = self._server = manager.connection_from_url(self._host)
            return pool.urlopen(
                method,
                self._prefix + path,
                body=data,
                headers=headers,
                timeout=self._http_timeout,
                redirect=False,
                assert_same_host=False,
            )
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise unreachable(exc) from None

    async def _call(self, method: str, path: str, body: Any = None, *, answer: bool = True) -> dict[str, Any]:
        """:meth:`_send` in one of this instance's threads."""
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, lambda: self._send(method, path, body, answer=answer)
        )

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Secret, or None."""
        try:
            return await self._call("GET", _secret_path(namespace, name))
        except NotFound:
            return None

    async def create_secret(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create; Conflict when it exists already."""
        return await self._call("POST", _secret_path(namespace), body)

    async def patch_secret(
        self, namespace: str, name: str, patch: dict[str, Any], *, resource_version: str | None = None
    ) -> dict[str, Any]:
        """Merge-patch; with ``resource_version`` the write only lands on that version (the
        caller's ``patch`` is not changed)."""
        body = patch
        if resource_version is not None:
            body = {**patch, "metadata": {**(patch.get("metadata") or {}), "resourceVersion": resource_version}}
        return await self._call("PATCH", _secret_path(namespace, name), body)

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
        """Merge-patch the status subresource (never spec). The answer (the whole object) is not
        decoded: no caller reads it, and the watch brings the same object anyway."""
        await self._call("PATCH", _status_path(namespace, name), {"status": status}, answer=False)

    async def write_secret_and_status(
        self, namespace: str, name: str, body: dict[str, Any], token: str, status: dict[str, Any], *, create: bool
    ) -> KubeError | None:
        """Create Secret ``name`` from ``body`` (``create``) or merge-patch it with ``body``, and once
        that landed, patch the status of EmailToken ``token``, one after the other in one thread: a
        refresh hands its writes to a thread once, not twice.

        The Secret's failure raises as :meth:`create_secret` and :meth:`patch_secret` do (and nothing
        else is written); the status write's failure is returned. Neither answer is decoded.
        """

        def both() -> KubeError | None:
            if create:
                self._send("POST", _secret_path(namespace), body, answer=False)
            else:
                self._send("PATCH", _secret_path(namespace, name), body, answer=False)
            try:
                self._send("PATCH", _status_path(namespace, token), {"status": status}, answer=False)
            except KubeError as exc:
                return exc
            return None

        return await asyncio.get_running_loop().run_in_executor(self._pool, both)

    async def create_event(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Post a core v1 Event (see :mod:`emailtoken.events`)."""
        return await self._call("POST", _event_path(namespace), body, answer=False)

    async def probe_tokens(self, namespace: str | None) -> None:
        """List at most one EmailToken (of ``namespace``, or of all): what the process needs first.

        Raises :class:`KubeError`: :class:`Unreachable`, 401, 403, or 404 when the CRD is missing.
        """
        if namespace is None:
            await self._run(self.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL, limit=1)
        else:
            await self._run(self.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, limit=1)

    async def create_service_account_token(
        self, namespace: str, name: str, audience: str, seconds: int
    ) -> dict[str, Any]:
        """A TokenRequest for ServiceAccount ``namespace/name`` (``status.token``, never logged)."""
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"audiences": [audience], "expirationSeconds": seconds},
        }
        return await self._run(self.core.create_namespaced_service_account_token, name, namespace, body)

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

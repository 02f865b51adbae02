"""Can this process work with the Kubernetes API? The answer in one line that says what to do.

Used by ``emailtoken run`` and ``emailtoken callback`` at start (:func:`wait_for_api`) and by
``kubectl emailtoken`` for every failed call (:func:`explain`). What each failure does, and
why, is in docs/troubleshooting.md: credentials the API server rejects (401) end the process
(exit 1; waiting will not make them valid, and a restarted Pod reads a fresh token); a
missing permission (403) or a missing CRD (404) is logged as an error and checked again,
since RBAC and CRDs are often applied a moment after the Deployment; an API server that
refuses or does not answer is logged as a warning and tried again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # this module is imported by the command line, before any Kubernetes client
    from emailtoken.kube import Credentials, KubeError

log = logging.getLogger("emailtoken")

#: Seconds to wait for the API server to accept a connection, and then for each answer.
API_TIMEOUT = 15.0
#: Overrides :data:`API_TIMEOUT` for every command (the tests set 1).
API_TIMEOUT_ENV = "EMAILTOKEN_API_TIMEOUT"

#: Seconds between checks while the API server cannot be used.
RETRY_EVERY = 5.0
#: A problem that does not change is logged again this often.
REMIND_EVERY = 60.0

#: what a failure to connect is called, by a phrase of the client library's message
_TRANSPORT = (
    ("Read timed out", "it accepted the connection but did not answer within {timeout:g} s"),
    ("Connect timed out", "no connection within {timeout:g} s"),
    ("timed out", "no answer within {timeout:g} s"),
    ("Connection refused", "connection refused"),
    ("Name or service not known", "unknown host name"),
    ("nodename nor servname", "unknown host name"),
    ("CERTIFICATE_VERIFY_FAILED", "its TLS certificate is not trusted (certificate-authority in the kubeconfig)"),
)
_POOL_PREFIX = re.compile(r"^\w+\(host=[^)]*\):\s*")


def default_api_timeout() -> float:
    """``$EMAILTOKEN_API_TIMEOUT`` seconds when set to a positive number, else :data:`API_TIMEOUT`."""
    try:
        value = float(os.environ.get(API_TIMEOUT_ENV) or API_TIMEOUT)
    except ValueError:
        return API_TIMEOUT
    return value if value > 0 else API_TIMEOUT


def _transport(message: str, timeout: float) -> str:
    for phrase, words in _TRANSPORT:
        if phrase in message:
            return words.format(timeout=timeout)
    return _POOL_PREFIX.sub("", message) or "no answer"


def explain(exc: KubeError, creds: Credentials, *, timeout: float, rbac_hint: str) -> str:
    """One line: what failed, in the API server's own words where it gave some, and what to do.

    ``rbac_hint`` says how the caller gets a missing permission (the chart's Role for a
    ServiceAccount, a cluster admin for a person).
    """
    server = f"the Kubernetes API server at {creds.server}"
    if exc.status == 0:  # Unreachable: no answer at all
        where = (
            "the Pod's network path to it (NetworkPolicy, egress)"
            if creds.in_cluster
            else f"that {creds.source} names the right server"
        )
        return f"cannot reach {server}: {_transport(exc.message, timeout)}; check that it is running and {where}"
    if exc.status == 401:
        fix = (
            "restart the Pod, and check that its ServiceAccount exists"
            if creds.in_cluster
            else "log in again or use another kubeconfig"
        )
        return (
            f"{server} rejected the credentials of {creds.source} (401 Unauthorized): "
            f"the token or certificate is invalid or expired; {fix}"
        )
    message = " ".join((exc.message or "").split())
    if exc.status == 403:
        return f"{message or 'forbidden'} (403 Forbidden; credentials: {creds.source}); {rbac_hint}"
    if exc.status == 404:
        return (
            f"{server} does not serve EmailTokens (emailtoken.io/v1alpha1: 404 {message or 'not found'}); "
            "install the CRD: the Helm chart, or kubectl apply -f crds/"
        )
    return f"{server} answered HTTP {exc.status}: {message or 'no message'}"


@dataclass(frozen=True)
class ApiProblem:
    """Why the API server cannot be used right now; ``fatal``: waiting will not help (exit 1);
    ``blocking``: a person must act (RBAC, the CRD), but the process checks again."""

    text: str
    status: int

    @property
    def fatal(self) -> bool:
        return self.status == 401

    @property
    def blocking(self) -> bool:
        return self.status in (401, 403, 404)


class Prober(Protocol):
    """The one call the check makes (:meth:`emailtoken.kube.KubernetesApi.probe_tokens`)."""

    async def probe_tokens(self, namespace: str | None) -> None: ...


async def check(api: Prober, namespaces: Sequence[str]) -> None:
    """List at most one EmailToken in each namespace this process works in (all: none given)."""
    for namespace in namespaces or [None]:
        await api.probe_tokens(namespace)


async def wait_for_api(
    api: Prober,
    creds: Credentials,
    namespaces: Sequence[str],
    *,
    timeout: float,
    rbac_hint: str,
    on_problem: Callable[[ApiProblem | None], None] | None = None,
    retry: float = RETRY_EVERY,
    remind: float = REMIND_EVERY,
) -> ApiProblem | None:
    """Check until the API server lets this process list EmailTokens: None then, or the fatal problem.

    A problem is logged when it starts or changes and every ``remind`` seconds while it lasts
    (a warning for an unreachable server, an error for what a person must fix); its end, once.
    """
    from emailtoken.kube import KubeError

    loop = asyncio.get_running_loop()
    shown: ApiProblem | None = None
    shown_at = 0.0
    while True:
        try:
            await check(api, namespaces)
            break
        except KubeError as exc:
            problem = ApiProblem(explain(exc, creds, timeout=timeout, rbac_hint=rbac_hint), exc.status)
        if problem != shown or loop.time() - shown_at >= remind:
            again = "" if problem.fatal else f"; checking again every {retry:g} s"
            log.log(logging.ERROR if problem.blocking else logging.WARNING, "%s%s", problem.text, again)
            shown, shown_at = problem, loop.time()
            if on_problem is not None:
                on_problem(problem)
        if problem.fatal:
            return problem
        await asyncio.sleep(retry)
    if shown is not None:
        log.info("the Kubernetes API server at %s answers now", creds.server)
        if on_problem is not None:
            on_problem(None)
    return None

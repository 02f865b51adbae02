"""Settings of one callback service and the long-lived objects its handlers share."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from emailtoken.callback.csrf import CsrfGuard
from emailtoken.callback.state import StateSealer
from emailtoken.clientauth import DEFAULTS, Federation
from emailtoken.endpoints import DEFAULT_ALLOWED_HOSTS
from emailtoken.kube import KubeApi
from emailtoken.providers.base import Provider
from emailtoken.satokens import ServiceAccountTokens
from emailtoken.timefmt import utcnow

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


@dataclass(frozen=True)
class CallbackConfig:
    """What ``emailtoken callback`` was asked to do."""

    redirect_base_url: str
    public_host: str = "0.0.0.0"  # noqa: S104 - the public listener must be reachable by the Service
    public_port: int = 8080
    admin_host: str = "127.0.0.1"
    admin_port: int = 8081
    namespaces: tuple[str, ...] = ()
    ca_bundle: str | None = None
    #: identity-provider hosts tokens may name (emailtoken.endpoints)
    provider_hosts: tuple[str, ...] = DEFAULT_ALLOWED_HOSTS
    state_ttl: float = 600
    admin_url: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    provider_timeout: float = 20.0
    #: Create now, edit and delete on the admin page (--manage-tokens; off by default)
    manage_tokens: bool = False
    #: what spec.federatedCredential may use: audiences, ambient namespaces, this pod's projected
    #: tokens (emailtoken.clientauth)
    federation: Federation = DEFAULTS

    @property
    def redirect_uri(self) -> str:
        """The one redirect URI of this service (register it at the provider)."""
        return self.redirect_base_url.rstrip("/") + "/callback"

    def serves(self, namespace: str) -> bool:
        """True when this service may act on tokens of the namespace."""
        return not self.namespaces or namespace in self.namespaces

    def admin_hosts(self) -> frozenset[str]:
        """Host names the admin listener answers to (DNS-rebinding guard)."""
        extra = {h.lower() for h in self.allowed_hosts}
        if self.admin_host not in ("", "0.0.0.0", "::"):  # noqa: S104 - comparing, not binding
            extra.add(self.admin_host.lower())
        return LOOPBACK_HOSTS | extra


class ApiForCallback(KubeApi, Protocol):
    """The API calls the callback service makes (see :class:`~emailtoken.callback.kubeapi.CallbackApi`)."""

    async def get_token(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def list_tokens(self, namespaces: tuple[str, ...] = ()) -> list[dict[str, object]]: ...

    async def apply_token(self, body: dict[str, Any], *, manager: str) -> dict[str, Any]: ...

    async def apply_secret(self, body: dict[str, Any], *, manager: str) -> dict[str, Any]: ...

    async def delete_token(self, namespace: str, name: str, *, uid: str) -> None: ...

    async def create_event(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]: ...


class ProviderSource(Protocol):
    """Gives the provider implementation for ``spec.provider``."""

    def for_spec(self, provider: str) -> Provider: ...


@dataclass
class Services:
    """Everything a handler needs, built once per process."""

    config: CallbackConfig
    api: ApiForCallback
    providers: ProviderSource
    sealer: StateSealer
    csrf: CsrfGuard
    now: Callable[[], datetime] = utcnow
    #: ServiceAccount tokens requested for spec.federatedCredential.serviceAccountName (cached)
    sa_tokens: ServiceAccountTokens = field(default_factory=ServiceAccountTokens)
    started: float = field(default_factory=time.time)

    @property
    def admin_link(self) -> str:
        """Where pages on the public origin link back to (configured, never from a request)."""
        return self.config.admin_url or f"http://localhost:{self.config.admin_port}/"

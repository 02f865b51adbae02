"""Identity providers behind one small interface (:class:`~emailtoken.providers.base.Provider`)."""

from __future__ import annotations

from collections.abc import Iterable

from emailtoken.providers.base import ClientCredentials, DeviceFlow, Provider
from emailtoken.providers.google import GoogleProvider
from emailtoken.providers.http import ProviderSession
from emailtoken.providers.microsoft import MicrosoftProvider


class Providers:
    """One provider instance per kind, sharing an HTTP session (connection reuse)."""

    def __init__(
        self,
        *,
        ca_bundle: str | None = None,
        timeout: float = 20.0,
        pool: int = 10,
        allowed_hosts: Iterable[str] | None = None,
    ) -> None:
        self.session = ProviderSession(ca_bundle=ca_bundle, timeout=timeout, pool=pool, allowed_hosts=allowed_hosts)
        self.microsoft = MicrosoftProvider(self.session)
        self.google = GoogleProvider(self.session)

    def for_spec(self, provider: str) -> Provider:
        """The provider implementation for ``spec.provider``."""
        return self.microsoft if provider == "Microsoft" else self.google


__all__ = ["ClientCredentials", "DeviceFlow", "GoogleProvider", "MicrosoftProvider", "Provider", "Providers"]

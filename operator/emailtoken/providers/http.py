"""The one HTTP session shape the OAuth libraries share.

Why a custom session: ``REQUESTS_CA_BUNDLE`` in the environment silently overrides a
session's ``verify``, so a private CA (tests, air-gapped proxies) needs ``trust_env``
off; a default timeout keeps a hung provider from pinning a worker thread; and the
last ``Retry-After`` is remembered so the engine can honour it even though msal
returns plain dicts; and the connection pool is as large as the number of threads that
call at once (requests' default of 10 discarded a connection, a TLS handshake, per extra caller).
"""

from __future__ import annotations

import threading
import urllib.request
from typing import Any

import requests
import requests.adapters

DEFAULT_TIMEOUT = 20.0


class ProviderSession(requests.Session):
    """A requests session with a default timeout and Retry-After bookkeeping."""

    def __init__(self, *, ca_bundle: str | None = None, timeout: float = DEFAULT_TIMEOUT, pool: int = 10) -> None:
        super().__init__()
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=max(pool, 10))
        self.mount("https://", adapter)
        self.mount("http://", adapter)
        self.timeout = timeout
        self._local = threading.local()
        if ca_bundle:
            # Proxies still come from the environment; only the CA bundle is pinned.
            self.trust_env = False
            self.verify = ca_bundle
            self.proxies.update(urllib.request.getproxies())
        self.headers["User-Agent"] = "emailtoken-operator"

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        kwargs.setdefault("timeout", self.timeout)
        self._local.retry_after = None
        response = super().request(method, url, *args, **kwargs)
        value = response.headers.get("Retry-After")
        if value is not None and response.status_code >= 400:
            try:
                self._local.retry_after = float(value)
            except ValueError:
                self._local.retry_after = None
        return response

    @property
    def last_retry_after(self) -> float | None:
        """Retry-After (seconds) of this thread's last failed response, if any."""
        return getattr(self._local, "retry_after", None)

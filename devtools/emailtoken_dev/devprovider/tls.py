"""The provider's own certificate authority and server certificate (PyPI ``trustme``).

Clients trust the CA file (``ca_pem_path``), exactly as a cluster would trust a private CA.
The CA can be saved and loaded so a restarted provider keeps serving under the same trust.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Iterable
from pathlib import Path

import trustme


class Authority:
    """A CA plus a server certificate for the names the provider is reached by."""

    def __init__(self, names: Iterable[str], ca_pem: bytes | None = None, ca_key_pem: bytes | None = None) -> None:
        if ca_pem and ca_key_pem:
            self.ca = trustme.CA.from_pem(ca_pem, ca_key_pem)
        else:
            self.ca = trustme.CA(organization_name="emailtoken devprovider")
        identities = []
        for name in dict.fromkeys(["127.0.0.1", "localhost", "::1", *names]):
            if name in ("0.0.0.0", "::", ""):  # noqa: S104 - a bind address, not a name to certify
                continue
            identities.append(name)
        self._names = identities
        self.leaf = self.ca.issue_cert(*identities)

    @property
    def names(self) -> list[str]:
        """Host names and addresses the server certificate is valid for."""
        return list(self._names)

    def server_context(self) -> ssl.SSLContext:
        """TLS settings for the listening socket."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.leaf.configure_cert(ctx)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """A context trusting only this CA, for in-process clients."""
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx

    def write_ca(self, path: Path) -> Path:
        """Write the CA certificate (public) where clients can read it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.ca.cert_pem.write_to_path(str(path))
        return path

    def ca_pem(self) -> bytes:
        """The CA certificate in PEM."""
        return self.ca.cert_pem.bytes()

    def ca_key_pem(self) -> bytes:
        """The CA private key in PEM (state file only)."""
        return self.ca.private_key_pem.bytes()


def is_ip(name: str) -> bool:
    """Whether a host is a literal address (URLs need brackets for IPv6)."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True

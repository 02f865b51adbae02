"""The flags ``emailtoken run`` and ``emailtoken callback`` share, defined once: the identity
providers' CA bundle and the two timeouts. Each is its own function so that each command keeps
its flags in its own order; a command adds what the flag means for it to the help text.
"""

from __future__ import annotations

import argparse

from emailtoken.apicheck import API_TIMEOUT_ENV, default_api_timeout


def add_ca_bundle(p: argparse.ArgumentParser) -> None:
    """``--ca-bundle``: trust for the identity providers (private CAs)."""
    p.add_argument("--ca-bundle", metavar="PATH", help="CA bundle for the identity providers (private CAs)")


def add_provider_timeout(p: argparse.ArgumentParser, *, note: str = "") -> None:
    """``--provider-timeout``; ``note`` follows the default in the help (a limit the command sets)."""
    p.add_argument(
        "--provider-timeout",
        type=float,
        default=20.0,
        metavar="SECONDS",
        help=f"seconds per provider request (default 20){note}",
    )


def add_api_timeout(p: argparse.ArgumentParser, *, what: str) -> None:
    """``--api-timeout``, its default from :func:`emailtoken.apicheck.default_api_timeout`; ``what``
    opens the help (how the command waits)."""
    p.add_argument(
        "--api-timeout",
        type=float,
        default=default_api_timeout(),
        metavar="SECONDS",
        help=f"{what} (default {default_api_timeout():g}; ${API_TIMEOUT_ENV} sets the default)",
    )

"""``emailtoken callback``: the admin page and the public ``/callback`` endpoint."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from urllib.parse import urlsplit

from emailtoken import clientauth, endpoints
from emailtoken.callback.app import hostname, quiet_libraries, serve_forever
from emailtoken.callback.context import LOOPBACK_HOSTS, CallbackConfig, Services


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``callback`` subcommand."""
    p = sub.add_parser(
        "callback",
        help="serve the admin page (Get Email Token) and the OAuth /callback endpoint",
        description="Admin page on --admin-host:--admin-port (reach it with kubectl port-forward); "
        "GET /callback and /healthz on --public-host:--public-port (the only part the provider's redirect needs).",
    )
    p.add_argument("--public-port", type=int, default=8080, help="port of /callback and /healthz (default 8080)")
    p.add_argument("--admin-port", type=int, default=8081, help="port of the admin page (default 8081)")
    p.add_argument("--public-host", default="0.0.0.0", help="address of the public listener (default 0.0.0.0)")  # noqa: S104
    p.add_argument("--admin-host", default="127.0.0.1", help="address of the admin listener (default 127.0.0.1)")
    p.add_argument(
        "--redirect-base-url",
        metavar="URL",
        help="public base URL the provider redirects to; the redirect URI is URL/callback "
        "(default http://localhost:<public port>)",
    )
    p.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="serve EmailTokens of this namespace (repeatable); default: all namespaces",
    )
    p.add_argument("--ca-bundle", metavar="PATH", help="CA bundle for the identity providers (private CAs)")
    endpoints.add_argument(p)
    p.add_argument(
        "--state-key-file",
        metavar="PATH",
        help="file with the key that seals the OAuth state (share it between replicas and restarts, so a "
        "sign-in started on one finishes on any); default: $EMAILTOKEN_STATE_KEY, else a random key per process",
    )
    p.add_argument("--state-ttl", type=float, default=600, help="seconds a sign-in may take (default 600)")
    p.add_argument(
        "--admin-url",
        metavar="URL",
        help="how people reach the admin page, for the link on result pages (default http://localhost:<admin port>/)",
    )
    p.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="HOST",
        help="extra Host name the admin page answers to (default: loopback names only)",
    )
    p.add_argument("--provider-timeout", type=float, default=20.0, help="seconds per provider request")
    p.add_argument(
        "--manage-tokens",
        action="store_true",
        help="let the admin page create (Create now), edit and delete EmailTokens and their credential Secrets "
        "(server-side apply; needs the chart's callback.manageTokens RBAC); default: the form only offers manifests",
    )
    clientauth.add_argument(p)
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="least severe messages logged (default info; -v means debug)",
    )
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> CallbackConfig:
    """Flags to a :class:`CallbackConfig`; raises ValueError with a readable message."""
    base = (args.redirect_base_url or f"http://localhost:{args.public_port}").rstrip("/")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError("--redirect-base-url must be an http(s) URL without query or fragment")
    if base.endswith("/callback"):
        raise ValueError("--redirect-base-url is the base: /callback is appended")
    if args.state_ttl <= 0:
        raise ValueError("--state-ttl must be positive")
    if parts.scheme == "http" and hostname(parts.netloc) not in LOOPBACK_HOSTS:
        logging.getLogger("emailtoken.callback").warning(
            "the redirect base URL is plain http on a non-loopback host: Entra ID and Google require https there"
        )
    return CallbackConfig(
        redirect_base_url=base,
        public_host=args.public_host,
        public_port=args.public_port,
        admin_host=args.admin_host,
        admin_port=args.admin_port,
        namespaces=tuple(args.namespace),
        ca_bundle=args.ca_bundle,
        provider_hosts=endpoints.from_args(args.allow_provider_hosts),
        state_ttl=args.state_ttl,
        admin_url=args.admin_url,
        allowed_hosts=tuple(args.allowed_host),
        provider_timeout=args.provider_timeout,
        manage_tokens=args.manage_tokens,
        federated_token_files=tuple(args.federated_token_files),
    )


def build_services(config: CallbackConfig, key: bytes) -> Services:
    """The long-lived objects of one process (Kubernetes client, providers, keys)."""
    from emailtoken.callback.csrf import CsrfGuard
    from emailtoken.callback.kubeapi import CallbackApi
    from emailtoken.callback.state import StateSealer
    from emailtoken.kube import load_config
    from emailtoken.providers import Providers

    load_config()
    return Services(
        config=config,
        api=CallbackApi(),  # type: ignore[arg-type]
        providers=Providers(
            ca_bundle=config.ca_bundle, timeout=config.provider_timeout, allowed_hosts=config.provider_hosts
        ),
        sealer=StateSealer(key, ttl=config.state_ttl),
        csrf=CsrfGuard(key),
    )


def run(args: argparse.Namespace) -> int:
    """Blocking entry point."""
    from emailtoken.callback.state import load_key

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else args.log_level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    quiet_libraries()
    log = logging.getLogger("emailtoken.callback")
    try:
        config = config_from_args(args)
        key, source = load_key(args.state_key_file)
    except (ValueError, OSError) as exc:
        print(f"emailtoken callback: {exc}", file=sys.stderr)
        return 2
    log.info("state key: %s", source)
    asyncio.run(serve_forever(build_services(config, key)))
    return 0

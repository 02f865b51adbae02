"""``emailtoken callback``: the admin page and the public ``/callback`` endpoint."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import TYPE_CHECKING

from emailtoken import clientauth, cliflags, endpoints, redirecturl
from emailtoken.callback.app import quiet_libraries, serve_forever
from emailtoken.callback.context import CallbackConfig, Services
from emailtoken.providers.http import ca_bundle_problem

if TYPE_CHECKING:
    from emailtoken.kube import Credentials


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``callback`` subcommand."""
    p = sub.add_parser(
        "callback",
        help="serve the admin page (Get Email Token) and the OAuth /callback endpoint",
        description="Admin page on --admin-host:--admin-port (reach it with kubectl port-forward); "
        "GET /callback and /healthz on --public-host:--public-port (the only part the provider's redirect needs).",
    )
    _add_listener_args(p)
    p.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="serve EmailTokens of this namespace (repeatable); default: all namespaces",
    )
    _add_provider_args(p)
    p.add_argument(
        "--state-key-file",
        metavar="PATH",
        help="file with the key that seals the OAuth state (share it between replicas and restarts, so a "
        "sign-in started on one finishes on any); default: $EMAILTOKEN_STATE_KEY, else a random key per process",
    )
    p.add_argument(
        "--state-ttl", type=float, default=600, metavar="SECONDS", help="seconds a sign-in may take (default 600)"
    )
    p.add_argument(
        "--manage-tokens",
        action="store_true",
        help="let the admin page create (Create now), edit and delete EmailTokens and their credential Secrets "
        "(server-side apply; needs the chart's callback.manageTokens RBAC); default: the form only offers manifests",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug messages (same as --log-level debug)")
    p.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="least severe messages logged (default info; -v means debug)",
    )
    p.set_defaults(func=run)


def _add_listener_args(p: argparse.ArgumentParser) -> None:
    """Where the two listeners are, and how people and the provider reach them."""
    p.add_argument(
        "--public-port", type=int, default=8080, metavar="PORT", help="port of /callback and /healthz (default 8080)"
    )
    p.add_argument("--admin-port", type=int, default=8081, metavar="PORT", help="port of the admin page (default 8081)")
    p.add_argument(
        "--public-host",
        default="0.0.0.0",  # noqa: S104  (the public listener: /callback and /healthz only)
        metavar="ADDRESS",
        help="address of the public listener (default 0.0.0.0)",
    )
    p.add_argument(
        "--admin-host", default="127.0.0.1", metavar="ADDRESS", help="address of the admin listener (default 127.0.0.1)"
    )
    p.add_argument(
        "--redirect-base-url",
        metavar="URL",
        help="public base URL the provider redirects to; the redirect URI is URL/callback "
        "(https; plain http only for localhost, 127.0.0.1 and ::1; default http://localhost:<public port>)",
    )
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


def _add_provider_args(p: argparse.ArgumentParser) -> None:
    """The identity providers and the Kubernetes API: trust, allowed hosts, timeouts."""
    cliflags.add_ca_bundle(p)
    endpoints.add_argument(p)
    clientauth.add_argument(p)
    cliflags.add_provider_timeout(p)
    cliflags.add_api_timeout(
        p, what="seconds to wait for the Kubernetes API server to accept a connection and to answer"
    )


def config_from_args(args: argparse.Namespace) -> CallbackConfig:
    """Flags to a :class:`CallbackConfig`; raises ValueError with a readable message."""
    base = (args.redirect_base_url or f"http://localhost:{args.public_port}").rstrip("/")
    problem = redirecturl.problem(base)
    if problem:
        raise ValueError(f"--redirect-base-url: {problem}")
    if args.state_ttl <= 0:
        raise ValueError("--state-ttl must be positive")
    if args.api_timeout <= 0:
        raise ValueError("--api-timeout must be positive")
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
        federation=clientauth.from_args(args),
    )


def build_services(config: CallbackConfig, key: bytes, *, timeout: float | None = None) -> Services:
    """The long-lived objects of one process (Kubernetes client, providers, keys); ``timeout``
    bounds each Kubernetes call. Raises :class:`emailtoken.kube.ConfigError` without credentials."""
    from emailtoken.callback.csrf import CsrfGuard
    from emailtoken.callback.kubeapi import CallbackApi
    from emailtoken.callback.state import StateSealer
    from emailtoken.kube import load_config
    from emailtoken.providers import Providers

    load_config()
    return Services(
        config=config,
        api=CallbackApi(request_timeout=timeout),  # type: ignore[arg-type]
        providers=Providers(
            ca_bundle=config.ca_bundle, timeout=config.provider_timeout, allowed_hosts=config.provider_hosts
        ),
        sealer=StateSealer(key, ttl=config.state_ttl),
        csrf=CsrfGuard(key),
    )


def run(args: argparse.Namespace) -> int:
    """Blocking entry point."""
    from emailtoken.callback.state import load_key
    from emailtoken.kube import ConfigError, load_config

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
        problem = ca_bundle_problem(config.ca_bundle)
        if problem:
            raise ValueError(problem)
    except (ValueError, OSError) as exc:
        print(f"emailtoken callback: {exc}", file=sys.stderr)
        return 2
    try:
        creds = load_config()
    except ConfigError as exc:
        log.error("%s", exc)
        return 1
    log.info("state key: %s", source)
    services = build_services(config, key, timeout=args.api_timeout)
    if not asyncio.run(_api_usable(services, creds, args.api_timeout)):
        return 1
    asyncio.run(serve_forever(services))
    return 0


async def _api_usable(services: Services, creds: Credentials, timeout: float) -> bool:
    """One check at start: rejected credentials end the process (exit 1); anything else is said
    once and the service starts anyway (its pages name the problem until it is fixed)."""
    from emailtoken.apicheck import ApiProblem, check, explain
    from emailtoken.kube import KubeError

    hint = "grant it to the callback's ServiceAccount (the Helm chart carries its RBAC)"
    try:
        await check(services.api, services.config.namespaces)  # type: ignore[arg-type]
    except KubeError as exc:
        problem = ApiProblem(explain(exc, creds, timeout=timeout, rbac_hint=hint), exc.status)
        if problem.fatal:
            logging.getLogger("emailtoken.callback").error("%s", problem.text)
            return False
        level = logging.ERROR if problem.blocking else logging.WARNING
        logging.getLogger("emailtoken.callback").log(level, "%s; serving anyway", problem.text)
    return True

"""The ``emailtoken`` command: operator, demo, callback service and admin tools."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
from collections.abc import Sequence
from datetime import timedelta

from emailtoken import __version__, clientauth, cliflags, endpoints, mailhosts, redirecturl
from emailtoken.settings import OperatorConfig
from emailtoken.timefmt import parse_duration

#: Values of ``--log-level`` (``run`` and ``callback``), least severe first.
LOG_LEVELS = ("debug", "info", "warning", "error")

#: Subcommands contributed by other modules: each has ``register(subparsers)``.
_PLUGINS = (
    "emailtoken_dev.demo",  # the development distribution (emailtoken-operator-dev), absent from the image
    "emailtoken.checkmail",
    "emailtoken.callback.cli",
    "emailtoken.authorize",
    "emailtoken.validate",
)


def _namespace(value: str) -> str:
    """A namespace name: each one gets its own Secret watch, which cannot follow a pattern."""
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a namespace name (lowercase letters, digits and '-')")
    return value


def _redirect_base_url(value: str) -> str:
    """``--redirect-base-url``: see :mod:`emailtoken.redirecturl` for the rule."""
    problem = redirecturl.problem(value)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return value


def _add_run(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("run", help="run the operator against the current kubeconfig or in-cluster config")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        type=_namespace,
        metavar="NS",
        help="watch this namespace (repeatable; exact names, no patterns); default: all namespaces",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch all namespaces (the default)")
    p.add_argument(
        "--log-format", choices=("plain", "full", "json"), default="full", help="log line format (default full)"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug messages (kopf's own too)")
    p.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default="info",
        help="least severe messages logged (default info; -v means debug)",
    )
    p.add_argument(
        "--health-port", type=int, default=8080, metavar="PORT", help="kopf's liveness endpoint (default 8080; 0: off)"
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        metavar="PORT",
        help="/metrics, /healthz and /readyz (default 0: off; the chart uses 9090)",
    )
    cliflags.add_api_timeout(
        p,
        what="how long to wait for the Kubernetes API server to accept a connection and to answer, when "
        "checking it at start",
    )
    _add_leadership_args(p)
    _add_refresh_args(p)
    _add_schedule_args(p)
    p.set_defaults(func=_run)


#: What ``run --peering`` answers: the flag is gone, and why.
PEERING_REMOVED = (
    "emailtoken run: --peering was removed: kopf peering no longer pauses anything (kopf watches no "
    "resource); leader election (--leader-election, on by default) keeps a second operator from writing"
)


class _PeeringRemoved(argparse.Action):
    """``--peering NAME`` from an old command line: exit 2 with :data:`PEERING_REMOVED`."""

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        parser.exit(2, PEERING_REMOVED + "\n")


def _add_leadership_args(p: argparse.ArgumentParser) -> None:
    """The Lease; and the removed kopf peering flags, hidden, for old command lines."""
    p.add_argument("--peering", action=_PeeringRemoved, metavar="NAME", help=argparse.SUPPRESS)
    # the old default: accepted and ignored, so that an old command line still starts
    p.add_argument("--standalone", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--leader-election",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="hold a coordination.k8s.io Lease so that only one replica writes (default: on)",
    )
    p.add_argument(
        "--lease-namespace",
        default=os.environ.get("POD_NAMESPACE", "default"),
        metavar="NS",
        help="namespace of the Lease (default: $POD_NAMESPACE or default)",
    )
    p.add_argument(
        "--lease-name",
        default="emailtoken-operator",
        metavar="NAME",
        help="name of the Lease (default emailtoken-operator)",
    )
    p.add_argument(
        "--lease-duration",
        type=float,
        metavar="SECONDS",
        default=30.0,
        help="seconds a silent leader keeps the Lease (default 30); at least --provider-timeout + 5, so that "
        "a refresh in flight ends before another replica may take over",
    )


def _add_refresh_args(p: argparse.ArgumentParser) -> None:
    """Providers, the callback's URLs, how many refreshes at once and how long each may take."""
    cliflags.add_ca_bundle(p)
    endpoints.add_argument(p)
    mailhosts.add_argument(p)
    p.add_argument(
        "--redirect-base-url",
        type=_redirect_base_url,
        metavar="URL",
        help="public base URL of the callback service; status.redirectUri is URL/callback (https; plain http "
        "only for localhost, 127.0.0.1 and ::1, as Entra ID and Google require); default: none",
    )
    p.add_argument(
        "--admin-url",
        metavar="URL",
        help="where admins reach the callback admin page (e.g. http://localhost:8081 via port-forward); "
        "status.authorizeUrl links there",
    )
    p.add_argument(
        "--concurrency", type=int, default=16, metavar="N", help="token refreshes in flight at once (default 16)"
    )
    clientauth.add_argument(p)
    cliflags.add_provider_timeout(p, note="; with leader election at most --lease-duration - 5")


def _add_schedule_args(p: argparse.ArgumentParser) -> None:
    """How often a token is refreshed, and which refreshes are announced."""
    p.add_argument(
        "--keepalive", default="3d", metavar="DURATION", help="refresh idle grants at least this often (default 3d)"
    )
    p.add_argument(
        "--min-refresh-interval",
        default="15s",
        metavar="DURATION",
        help="never refresh one token more often than this, whatever lifetime its provider claims (default 15s)",
    )
    p.add_argument(
        "--grant-warning",
        default="3d",
        metavar="DURATION",
        help="warn (condition GrantExpiring, a Warning Event) this long before a grant's known end, "
        "such as a Google app in Testing's 7-day refresh tokens (default 3d)",
    )
    p.add_argument(
        "--refresh-events",
        choices=("changes", "all"),
        default="changes",
        help="'changes' (default): a Refreshed Event for refresh-now and spec changes (the first "
        "token and recoveries get an Authorized Event); 'all': for every routine refresh too",
    )


def config_from_args(args: argparse.Namespace) -> OperatorConfig:
    """Command-line flags to an :class:`OperatorConfig`."""
    keepalive: timedelta = parse_duration(args.keepalive)
    return OperatorConfig(
        namespaces=tuple(args.namespace),
        all_namespaces=not args.namespace,
        redirect_base_url=args.redirect_base_url,
        admin_url=args.admin_url,
        ca_bundle=args.ca_bundle,
        allowed_provider_hosts=endpoints.from_args(args.allow_provider_hosts),
        allowed_mail_hosts=mailhosts.from_args(args.allow_mail_hosts),
        provider_timeout=args.provider_timeout,
        api_timeout=args.api_timeout,
        federation=clientauth.from_args(args),
        concurrency=args.concurrency,
        keepalive=keepalive,
        min_refresh_interval=parse_duration(args.min_refresh_interval),
        grant_warning=parse_duration(args.grant_warning),
        routine_events=args.refresh_events == "all",
        health_port=args.health_port or None,
        metrics_port=args.metrics_port or None,
        leader_election=args.leader_election,
        lease_namespace=args.lease_namespace,
        lease_name=args.lease_name,
        lease_duration=args.lease_duration,
        log_format=args.log_format,
        verbose=args.verbose or args.log_level == "debug",
        log_level="debug" if args.verbose else args.log_level,
    )


def _run(args: argparse.Namespace) -> int:
    from emailtoken.runner import run_operator

    return run_operator(config_from_args(args))


def build_parser() -> argparse.ArgumentParser:
    """The full command-line parser."""
    parser = argparse.ArgumentParser(prog="emailtoken", description=__doc__)
    parser.add_argument("--version", action="version", version=f"emailtoken {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(sub)
    for name in _PLUGINS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                if name == "emailtoken_dev.demo":
                    _add_demo_hint(sub)
                continue  # that part of the product is not installed
            raise
        module.register(sub)
    plain_help(parser)
    return parser


def plain_help(parser: argparse.ArgumentParser) -> None:
    """Drop reStructuredText's double backticks (docstrings used as descriptions) from --help."""
    parsers = [parser]
    while parsers:
        p = parsers.pop()
        if p.description:
            p.description = p.description.replace("``", "")
        for action in p._actions:
            if action.help:
                action.help = action.help.replace("``", "")
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())


def _add_demo_hint(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``emailtoken demo`` without the development tools: one line on how to get them."""

    def hint(_: argparse.Namespace) -> int:
        print(
            "emailtoken demo needs the development tools: pip install -e ./devtools in a checkout "
            "(or run `make demo` there)",
            file=sys.stderr,
        )
        return 2

    # Any arguments (no option prefix here): the answer is the hint whatever the user typed.
    p = sub.add_parser("demo", help="the local demo (needs the emailtoken-operator-dev tools)", prefix_chars="\0")
    p.add_argument("ignored", nargs="*", help=argparse.SUPPRESS)
    p.set_defaults(func=hint)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``emailtoken`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        logging.getLogger("emailtoken").info("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())

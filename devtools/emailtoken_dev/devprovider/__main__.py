"""``python -m emailtoken_dev.devprovider``: run the provider until SIGTERM/SIGINT.

Prints one JSON line on stdout when ready, e.g.
``{"url": "https://127.0.0.1:8443", "ca": "/tmp/.../ca.pem", "control_token": "...",
"introspection_url": "http://dovecot:...@127.0.0.1:41234/introspect"}``;
logs go to stderr so the line is easy to read from a parent process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys

from .server import DevProvider


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m emailtoken_dev.devprovider", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="HTTPS port (default: any free port)")
    p.add_argument("--lifetime", type=int, default=3600, help="access-token lifetime in seconds")
    p.add_argument("--state-file", help="JSON file keeping registry, grants, keys and CA across restarts")
    p.add_argument("--config", help="JSON file with clients, users and service accounts to preload")
    p.add_argument("--ca-file", help="where to write the CA certificate (default: a temporary file)")
    p.add_argument("--hostname", action="append", default=[], help="extra name for the server certificate")
    p.add_argument("--public-url", help="base URL clients use, if not the listening address")
    p.add_argument("--no-tls", action="store_true", help="plain HTTP (the libraries need https; for debugging)")
    p.add_argument("--no-rotation", action="store_true", help="do not rotate Microsoft refresh tokens")
    p.add_argument("--google-rotation", action="store_true", help="rotate Google refresh tokens too")
    p.add_argument("--no-reuse-detection", action="store_true", help="old refresh tokens fail without revoking")
    p.add_argument("--device-interval", type=int, default=5, help="device-code polling interval (s)")
    p.add_argument("--introspection-user", default="dovecot")
    p.add_argument("--introspection-password", help="default: random (see the ready line)")
    p.add_argument("--introspection-port", type=int, default=0, help="plain-HTTP introspection port (default any)")
    p.add_argument("--control-token", help="bearer secret for /_control/ (default: random)")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


async def run(args: argparse.Namespace) -> None:
    """Start, announce, wait for a signal, stop."""
    provider = DevProvider(
        host=args.host,
        port=args.port,
        tls=not args.no_tls,
        token_lifetime=args.lifetime,
        refresh_token_rotation=not args.no_rotation,
        google_refresh_token_rotation=args.google_rotation,
        reuse_detection=not args.no_reuse_detection,
        device_interval=args.device_interval,
        introspection_user=args.introspection_user,
        introspection_password=args.introspection_password,
        introspection_port=args.introspection_port,
        control_token=args.control_token,
        state_file=args.state_file,
        ca_file=args.ca_file,
        hostnames=args.hostname,
        public_url=args.public_url,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await provider.start()
    try:
        if args.config:
            provider.load_config_file(args.config)
        sys.stdout.write(json.dumps(provider.ready_info) + "\n")
        sys.stdout.flush()
        await stop.wait()
    finally:
        await provider.stop()


def main(argv: list[str] | None = None) -> None:
    """Entry point."""
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()

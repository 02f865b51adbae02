"""``emailtoken demo``: the whole product on one laptop, no cluster and no cloud account.

Starts an embedded Kubernetes API (kmock), the built-in demo provider (speaks the
Entra ID protocol over HTTPS with its own CA), the operator itself and the callback
service (admin page + ``/callback``), and applies two EmailTokens with short-lived
tokens: an app-only one that becomes Ready by itself, and an AuthorizationCode one for
the demo user that becomes Ready once you press "Get Email Token" on the admin page and
sign in. Then it shows the tokens the way ``kubectl get emailtokens -w`` would.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import secrets
import signal
import socket
import sys
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from emailtoken.endpoints import DEFAULT_ALLOWED_HOSTS

DEMO_NAMESPACE = "demo"
#: the demo provider listens on loopback; a real installation allows only its providers' hosts
DEMO_PROVIDER_HOSTS = (*DEFAULT_ALLOWED_HOSTS, "127.0.0.1")
DEMO_CLIENT = "demo-app"
DEMO_SECRET = "demo-client-secret"  # a local demo value, not a credential anywhere
DEMO_MAILBOX = "shared-mailbox@demo.example"
DEMO_WEB_CLIENT = "demo-web"
DEMO_WEB_SECRET = "demo-web-client-secret"  # a local demo value, not a credential anywhere
DEMO_USER = "alice@demo.example"
DEMO_PASSWORD = "demo-password"  # the demo provider's sign-in page for DEMO_USER


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``demo`` subcommand."""
    p = sub.add_parser("demo", help="run the operator on an embedded Kubernetes API with a built-in demo provider")
    p.add_argument("--lifetime", type=int, default=60, help="access token lifetime in seconds (default 60)")
    p.add_argument("--api-port", type=int, default=0, help="port of the embedded Kubernetes API (default: any)")
    p.add_argument("--duration", type=float, default=0, help="stop after this many seconds (default: until Ctrl-C)")
    p.add_argument("--admin-port", type=int, default=8081, help="admin page port (default 8081; busy: any)")
    p.add_argument("--public-port", type=int, default=8080, help="/callback port (default 8080; busy: any)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Blocking entry point; Ctrl-C stops everything cleanly."""
    try:
        import kmock  # noqa: F401
    except ImportError:
        print("the demo needs kmock and trustme: pip install -e ./devtools", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_demo(args))
    except KeyboardInterrupt:
        return 0


def _row(obj: dict[str, Any], fingerprint: str) -> str:
    status = obj.get("status") or {}
    spec = obj.get("spec") or {}
    ready = next((c.get("status", "") for c in status.get("conditions") or [] if c.get("type") == "Ready"), "")
    return (
        f"{obj['metadata']['name']:<16} {spec.get('provider', ''):<10} {spec.get('emailAddress', ''):<28} "
        f"{ready:<6} {status.get('expiresAt', ''):<21} {status.get('lastRefreshTime', ''):<21} "
        f"{status.get('phase', ''):<22} {fingerprint}"
    )


HEADER = (
    f"{'NAME':<16} {'PROVIDER':<10} {'EMAIL':<28} {'READY':<6} {'EXPIRES':<21} {'LAST REFRESH':<21} "
    f"{'PHASE':<22} TOKEN (sha256 prefix)"
)


async def _demo(args: argparse.Namespace) -> int:
    from emailtoken_dev.devprovider import DevProvider
    from emailtoken_dev.localapi import LocalKubernetes

    async with contextlib.AsyncExitStack() as stack:
        # The kubeconfig lives as long as the demo: removed on exit, Ctrl-C included.
        kubeconfig = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="emailtoken-demo-"))) / "kubeconfig"
        provider = await stack.enter_async_context(DevProvider(token_lifetime=args.lifetime))
        local = await stack.enter_async_context(LocalKubernetes(port=args.api_port))
        provider.add_client(DEMO_CLIENT, DEMO_SECRET, mailboxes=[DEMO_MAILBOX])
        # Any redirect URI: the callback's and `emailtoken authorize`'s loopback ones.
        provider.add_client(DEMO_WEB_CLIENT, DEMO_WEB_SECRET, name="emailtoken demo")
        provider.add_user(DEMO_USER, DEMO_PASSWORD)
        emulator = local.emulator
        url = local.url
        local.write_kubeconfig(kubeconfig, DEMO_NAMESPACE)
        os.environ["KUBECONFIG"] = str(kubeconfig)
        print(f"embedded Kubernetes API: {url}   (KUBECONFIG={kubeconfig})")
        print(f"  in another terminal: KUBECONFIG={kubeconfig} kubectl get emailtokens -A -w")
        print(f"demo provider (Entra ID protocol): {provider.url}   tokens live {args.lifetime}s")
        callback = await stack.enter_async_context(_callback_service(provider.ca_pem_path, args))
        admin_url, redirect_base = callback.admin_url, callback.svc.config.redirect_base_url
        print(f"admin page: {admin_url}   (press Get Email Token for {DEMO_NAMESPACE}/alice-mailbox)")
        print(f"  sign in as {DEMO_USER} with password {DEMO_PASSWORD}; the browser warns about the demo")
        print(f"  provider's certificate (a local test CA: {provider.ca_pem_path}): accept it for this demo")
        print(
            f"  or, in another terminal: KUBECONFIG={kubeconfig} emailtoken authorize "
            f"{DEMO_NAMESPACE}/alice-mailbox --ca-bundle {provider.ca_pem_path} --allow-provider-host 127.0.0.1"
        )
        operator = asyncio.create_task(
            _operator(provider.ca_pem_path, url, redirect_base, admin_url, lifetime=args.lifetime)
        )
        await _apply_examples(emulator, provider)
        print(f"applied Secret {DEMO_NAMESPACE}/demo-app-secret and EmailToken {DEMO_NAMESPACE}/shared-mailbox")
        print(
            f"applied Secret {DEMO_NAMESPACE}/demo-web-secret and EmailToken {DEMO_NAMESPACE}/alice-mailbox "
            "(AuthorizationCode: waits for your sign-in)\n"
        )
        print(HEADER)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        if args.duration:
            loop.call_later(args.duration, stop.set)
        watcher = asyncio.create_task(_watch(emulator, stop))
        await stop.wait()
        print("\nstopping…")
        operator.cancel()
        watcher.cancel()
        await asyncio.gather(operator, watcher, return_exceptions=True)
    return 0


def _port(preferred: int) -> int:
    """The preferred loopback port if it is free, else any free one (a demo must not fail on a busy port)."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _callback_service(ca_bundle: str | None, args: argparse.Namespace) -> Any:
    """The callback service (admin page and /callback) on loopback ports, in this event loop."""
    from emailtoken.callback.app import CallbackService
    from emailtoken.callback.cli import build_services
    from emailtoken.callback.context import CallbackConfig

    public_port, admin_port = _port(args.public_port), _port(args.admin_port)
    config = CallbackConfig(
        redirect_base_url=f"http://127.0.0.1:{public_port}",
        public_host="127.0.0.1",
        public_port=public_port,
        admin_port=admin_port,
        ca_bundle=ca_bundle,
        provider_hosts=DEMO_PROVIDER_HOSTS,
        admin_url=f"http://127.0.0.1:{admin_port}/",
    )
    return CallbackService(build_services(config, secrets.token_bytes(32)))


async def _operator(ca_bundle: str | None, url: str, redirect_base_url: str, admin_url: str, *, lifetime: int) -> None:
    import kopf

    from emailtoken.runner import configure_logging, operator_kwargs
    from emailtoken.settings import OperatorConfig
    from emailtoken.timing import MIN_REFRESH_INTERVAL

    config = OperatorConfig(
        ca_bundle=ca_bundle,
        allowed_provider_hosts=DEMO_PROVIDER_HOSTS,
        health_port=None,
        log_format="plain",
        redirect_base_url=redirect_base_url,
        admin_url=admin_url.rstrip("/"),
        # The demo's tokens may live seconds (--lifetime): its own provider, so no floor is needed
        # beyond a quarter of that lifetime.
        min_refresh_interval=min(MIN_REFRESH_INTERVAL, timedelta(seconds=max(1, lifetime // 4))),
    )
    configure_logging(config)
    import logging

    logging.getLogger().setLevel(logging.WARNING)  # the table is the demo's output

    @kopf.on.login()
    def demo_login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=url, insecure=True)

    await kopf.operator(**operator_kwargs(config))


async def _apply_examples(emulator: Any, provider: Any) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "demo-app-secret", "namespace": DEMO_NAMESPACE, "resourceVersion": "1"},
        "data": {"client_secret": base64.b64encode(DEMO_SECRET.encode()).decode()},
    }
    token = {
        "apiVersion": "emailtoken.io/v1alpha1",
        "kind": "EmailToken",
        "metadata": {
            "name": "shared-mailbox",
            "namespace": DEMO_NAMESPACE,
            "uid": "demo-0001",
            "resourceVersion": "1",
            "generation": 1,
        },
        "spec": {
            "provider": "Microsoft",
            "flow": "ClientCredentials",
            "tenantId": "demo",
            "clientId": DEMO_CLIENT,
            "clientSecretRef": {"name": "demo-app-secret"},
            "emailAddress": DEMO_MAILBOX,
            "services": ["IMAP", "SMTP"],
            "tokenUrl": provider.microsoft_token_url("demo"),
        },
    }
    web_secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "demo-web-secret", "namespace": DEMO_NAMESPACE, "resourceVersion": "1"},
        "data": {"client_secret": base64.b64encode(DEMO_WEB_SECRET.encode()).decode()},
    }
    user_token = {
        "apiVersion": "emailtoken.io/v1alpha1",
        "kind": "EmailToken",
        "metadata": {
            "name": "alice-mailbox",
            "namespace": DEMO_NAMESPACE,
            "uid": "demo-0002",
            "resourceVersion": "1",
            "generation": 1,
        },
        "spec": {
            "provider": "Microsoft",
            "flow": "AuthorizationCode",
            "tenantId": "demo",
            "clientId": DEMO_WEB_CLIENT,
            "clientSecretRef": {"name": "demo-web-secret"},
            "emailAddress": DEMO_USER,
            "services": ["IMAP", "SMTP"],
            "authorizationUrl": provider.microsoft_authorize_url("demo"),
            "tokenUrl": provider.microsoft_token_url("demo"),
        },
    }
    await _post(emulator, "/api/v1/namespaces/demo/secrets", secret)
    await _post(emulator, "/apis/emailtoken.io/v1alpha1/namespaces/demo/emailtokens", token)
    await _post(emulator, "/api/v1/namespaces/demo/secrets", web_secret)
    await _post(emulator, "/apis/emailtoken.io/v1alpha1/namespaces/demo/emailtokens", user_token)


async def _post(emulator: Any, path: str, body: dict[str, Any]) -> None:
    import aiohttp

    url = os.environ["KUBECONFIG"]
    server = json.loads(Path(url).read_text())["clusters"][0]["cluster"]["server"]
    async with aiohttp.ClientSession() as session, session.post(server + path, json=body) as response:
        response.raise_for_status()


async def _watch(emulator: Any, stop: asyncio.Event) -> None:
    import aiohttp

    server = json.loads(Path(os.environ["KUBECONFIG"]).read_text())["clusters"][0]["cluster"]["server"]
    last: dict[str, str] = {}
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            async with session.get(f"{server}/apis/emailtoken.io/v1alpha1/emailtokens") as r:
                items = (await r.json()).get("items") or []
            for obj in items:
                name = obj["metadata"]["name"]
                async with session.get(f"{server}/api/v1/namespaces/{DEMO_NAMESPACE}/secrets/{name}") as r:
                    secret = await r.json() if r.status == 200 else {}
                token = base64.b64decode((secret.get("data") or {}).get("access_token", "")).decode()
                fingerprint = hashlib.sha256(token.encode()).hexdigest()[:12] if token else "-"
                row = _row(obj, fingerprint)
                if last.get(name) != row:
                    last[name] = row
                    print(row, flush=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)

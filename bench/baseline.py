"""The baseline: what a user would write instead of the operator.

A loop (think CronJob) that every ``--period`` seconds lists the EmailTokens, and for
every app-only Microsoft token reads its client secret, gets a token with msal
(``acquire_token_for_client``) and writes the consumer Secret through the Kubernetes
API (merge-patch, create when missing), with the same keys the operator writes. It runs
``--concurrency`` tokens at once, and starts the next pass on a fixed-rate schedule (at
once when a pass overran the period). It never looks at expiry: that is the point of
the comparison. It writes no status and no Events.

Every pass starts from nothing, as a CronJob's new pod would: a new msal application
per token (no token cache) and one discovery cache for the pass, so every pass asks the
provider for every token whatever the lifetime. (``--keep-apps`` keeps the applications,
and so msal's token cache, from pass to pass: msal then answers from its cache while a
token has more than 5 minutes left, so with hour-long tokens and a half-hour period every
other pass would rewrite the Secret with the old token and the next would refresh it only
at expiry. That loop is cheaper only by running at the edge.)

``python -m bench.baseline --period 30 --ca-bundle CA`` (KUBECONFIG selects the API).
"""

from __future__ import annotations

import argparse
import base64
import logging
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import kubernetes
import msal
import requests
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("baseline")
APP_ONLY_SCOPE = "https://outlook.office365.com/.default"


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


class Baseline:
    """One refresh pass over every token, repeated on a timer."""

    def __init__(self, *, ca_bundle: str | None, concurrency: int, keep_apps: bool = False) -> None:
        kubernetes.config.load_kube_config()
        self.core = kubernetes.client.CoreV1Api()
        self.custom = kubernetes.client.CustomObjectsApi()
        self.http = requests.Session()
        self.http.trust_env = False
        self.http.verify = ca_bundle or True
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=concurrency)
        self.http.mount("https://", adapter)
        self.discovery: dict[Any, Any] = {}
        self.apps: dict[tuple[str, str, str], msal.ConfidentialClientApplication] = {}
        self.lock = threading.Lock()
        self.keep_apps = keep_apps
        self.pool = ThreadPoolExecutor(concurrency)

    def _app(self, authority: str, client_id: str, secret: str) -> msal.ConfidentialClientApplication:
        key = (authority, client_id, secret)
        with self.lock:
            app = self.apps.get(key)
        if app is None:
            app = msal.ConfidentialClientApplication(
                client_id,
                client_credential=secret,
                authority=authority,
                instance_discovery=False,
                http_client=self.http,
                http_cache=self.discovery,
            )
            with self.lock:
                self.apps[key] = app
        return app

    def refresh_one(self, token: dict[str, Any]) -> bool:
        """Refresh one token and write its Secret; False on any failure (logged)."""
        meta, spec = token["metadata"], token.get("spec") or {}
        namespace, name = meta["namespace"], meta["name"]
        try:
            ref = spec["clientSecretRef"]
            secret = self.core.read_namespaced_secret(ref["name"], namespace)
            client_secret = base64.b64decode(secret.data[ref.get("key", "client_secret")]).decode().strip()
            authority = spec["tokenUrl"].removesuffix("/oauth2/v2.0/token")
            app = self._app(authority, spec["clientId"], client_secret)
            result = app.acquire_token_for_client(scopes=[APP_ONLY_SCOPE])
            if "access_token" not in result:
                log.warning("%s/%s: %s", namespace, name, result.get("error"))
                return False
            expires = datetime.now(UTC) + timedelta(seconds=int(result.get("expires_in", 3600)))
            user = spec.get("emailAddress", "")
            data = {
                "access_token": result["access_token"],
                "token_type": result.get("token_type", "Bearer"),
                "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "username": user,
                "xoauth2": _b64(f"user={user}\x01auth=Bearer {result['access_token']}\x01\x01"),
                "scope": APP_ONLY_SCOPE,
            }
            body = {
                "metadata": {
                    "name": spec.get("secretName") or name,
                    "namespace": namespace,
                    "labels": {"emailtoken.io/token": name},
                },
                "type": "Opaque",
                "data": {k: _b64(v) for k, v in data.items()},
            }
            try:
                self.core.patch_namespaced_secret(body["metadata"]["name"], namespace, body)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                self.core.create_namespaced_secret(namespace, body)
            return True
        except Exception as exc:  # a loop script logs and carries on
            log.warning("%s/%s: %s", namespace, name, type(exc).__name__)
            return False

    def run_pass(self) -> tuple[int, int]:
        """List the tokens and refresh them all; returns (tokens, failures)."""
        listing = self.custom.list_cluster_custom_object("emailtoken.io", "v1alpha1", "emailtokens")
        tokens = [
            t
            for t in listing.get("items") or []
            if (t.get("spec") or {}).get("flow") == "ClientCredentials"
            and (t.get("spec") or {}).get("provider") == "Microsoft"
        ]
        if not self.keep_apps:  # a new pod: nothing cached from the previous pass
            self.apps, self.discovery = {}, {}
        results = list(self.pool.map(self.refresh_one, tokens))
        return len(tokens), results.count(False)


def main(argv: list[str] | None = None) -> int:
    """Run passes every ``--period`` seconds until SIGTERM."""
    p = argparse.ArgumentParser(prog="python -m bench.baseline", description=__doc__.splitlines()[0])
    p.add_argument("--period", type=float, required=True, help="seconds between pass starts")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--ca-bundle")
    p.add_argument("--once", action="store_true", help="one pass, then exit (a CronJob run)")
    p.add_argument(
        "--keep-apps", action="store_true", help="keep msal applications (and their token cache) across passes"
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("urllib3", "msal", "kubernetes"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    baseline = Baseline(ca_bundle=args.ca_bundle, concurrency=args.concurrency, keep_apps=args.keep_apps)
    log.info("baseline started (period %.0fs, concurrency %d)", args.period, args.concurrency)
    next_start = time.monotonic()
    while not stop.is_set():
        started = time.monotonic()
        try:
            count, failures = baseline.run_pass()
            log.info("pass: %d tokens, %d failures, %.2fs", count, failures, time.monotonic() - started)
        except Exception as exc:
            log.warning("pass failed: %s", exc)
        if args.once:
            break
        next_start = max(next_start + args.period, time.monotonic())
        stop.wait(next_start - time.monotonic())
    baseline.pool.shutdown(wait=False, cancel_futures=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``emailtoken authorize NAMESPACE/NAME``: the first sign-in from a laptop, no ingress needed.

Like ``gcloud auth login``: a one-shot HTTP server on the loopback interface receives the
provider's redirect (Entra ID and Google accept ``http://127.0.0.1`` / ``http://localhost``
redirect URIs on any port), the code is exchanged here with PKCE, the signed-in account
is checked against ``emailAddress``, and the grant is written through the Kubernetes API
with your kubeconfig's credentials. The operator notices the grant Secret and publishes
the access token. Nothing secret is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import http.server
import secrets
import sys
import time
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from emailtoken import cliflags, endpoints
from emailtoken.callback import pages, pkce
from emailtoken.callback.signin import SignInRefused, SignInResult, authorization_url, complete, load_token
from emailtoken.model import EmailTokenSpec, TokenRef
from emailtoken.outcomes import ProviderError
from emailtoken.providers.base import Provider
from emailtoken.timefmt import rfc3339

#: Flows whose grant is a refresh token obtained by a person signing in.
FLOWS = ("AuthorizationCode", "DeviceCode")
LOOPBACK_HEADERS = {
    "Content-Security-Policy": pages.CSP,
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
}


class AuthorizeError(Exception):
    """A failure to report on stderr with exit status 1."""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``authorize`` subcommand."""
    p = sub.add_parser(
        "authorize",
        help="sign in for an EmailToken from this machine (loopback redirect, no ingress)",
        description="Open the provider's sign-in page, receive the redirect on a loopback port, and store the "
        "grant through the Kubernetes API (your kubeconfig). Register http://127.0.0.1 (or http://localhost with "
        "--redirect-host localhost) as a redirect URI of the app; both providers accept any port there.",
    )
    p.add_argument("target", metavar="NAMESPACE/NAME", help="the EmailToken (NAME alone: the context's namespace)")
    p.add_argument("--no-browser", action="store_true", help="print the URL instead of opening a browser")
    p.add_argument("--port", type=int, default=0, help="loopback port for the redirect (default: any free port)")
    p.add_argument(
        "--redirect-host",
        choices=("127.0.0.1", "localhost"),
        default="127.0.0.1",
        help="host name in the redirect URI, as registered at the provider (default 127.0.0.1)",
    )
    cliflags.add_ca_bundle(p)
    endpoints.add_argument(p)
    p.add_argument("--timeout", type=float, default=300, help="seconds to wait for the sign-in (default 300)")
    p.set_defaults(func=run)


def _target(text: str, default_namespace: str) -> tuple[str, str]:
    if "/" in text:
        namespace, _, name = text.partition("/")
    else:
        namespace, name = default_namespace, text
    if not namespace or not name or "/" in name:
        raise AuthorizeError(f"{text!r} is not NAMESPACE/NAME")
    return namespace, name


@dataclass
class _Answer:
    """The one redirect this run waits for."""

    params: dict[str, str]


class _LoopbackServer(http.server.HTTPServer):
    """Serves requests one at a time on the calling thread until a redirect with our state arrives."""

    def __init__(self, host: str, port: int, state: str, finish: Callable[[dict[str, str]], tuple[bool, str]]) -> None:
        super().__init__((host, port), _Handler)
        self.expected_state = state
        self.finish = finish
        self.answer: _Answer | None = None
        self.outcome: tuple[bool, str] | None = None


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _LoopbackServer

    def do_GET(self) -> None:  # the http.server API names it so
        parts = urlsplit(self.path)
        params = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if parts.path != "/" or not ({"state", "code", "error"} & params.keys()):
            self._send(404, pages.not_found())  # favicon.ico and friends: keep waiting
            return
        if self.server.answer is not None:
            self._send(400, pages.loopback_result(ok=False, text="This sign-in was already completed."))
            return
        if not hmac.compare_digest(params.get("state", "").encode(), self.server.expected_state.encode()):
            print("ignored a redirect with a wrong state (not from this sign-in)", file=sys.stderr)
            self._send(400, pages.loopback_result(ok=False, text="The state does not match this sign-in."))
            return
        self.server.answer = _Answer(params)
        ok, text = self.server.finish(params)
        self.server.outcome = (ok, text)
        self._send(200 if ok else 400, pages.loopback_result(ok=ok, text=text))

    def _send(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in LOOPBACK_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        """Silent: the request line carries the authorization code."""


def _finisher(
    api: object, provider: Provider, token: TokenRef, spec: EmailTokenSpec, redirect_uri: str, verifier: str
) -> tuple[Callable[[dict[str, str]], tuple[bool, str]], list[SignInResult | SignInRefused]]:
    """The function the server calls with the redirect's parameters, and where it leaves the outcome."""
    outcome: list[SignInResult | SignInRefused] = []

    def finish(params: dict[str, str]) -> tuple[bool, str]:
        try:
            if params.get("error"):
                detail = params.get("error_description", "")[:400]
                raise SignInRefused(
                    "ProviderError",
                    f"the provider reported {params['error'][:100]}" + (f": {detail}" if detail else ""),
                )
            if not params.get("code"):
                raise SignInRefused("MissingCode", "the provider sent no authorization code")
            result = asyncio.run(
                complete(
                    api,  # type: ignore[arg-type]
                    provider,
                    token,
                    spec,
                    code=params["code"],
                    redirect_uri=redirect_uri,
                    verifier=verifier,
                )
            )
        except SignInRefused as exc:
            outcome.append(exc)
            return False, f"{exc.message} ({exc.reason}). Nothing was stored."
        outcome.append(result)
        return True, f"{result.account or 'The account'} is authorized for EmailToken {token}. Return to the terminal."

    return finish, outcome


def _load_target(target: str) -> tuple[object, TokenRef, EmailTokenSpec]:
    """The API client and the EmailToken to sign in for (one this command can sign in for)."""
    from emailtoken.callback.kubeapi import CallbackApi
    from emailtoken.kube import load_config

    try:
        creds = load_config(in_cluster_first=False)  # a laptop command: kubectl's order
    except Exception as exc:  # the kubernetes client raises several types for a bad kubeconfig
        raise AuthorizeError(f"no usable kubeconfig: {exc}") from None
    namespace, name = _target(target, creds.namespace or "default")
    api = CallbackApi()  # reads one EmailToken and writes its grant, as the callback does
    token, spec = asyncio.run(load_token(api, namespace, name, flows=FLOWS))
    if spec.federated_credential is not None:  # only the operator and the callback authenticate such a client
        raise AuthorizeError(
            f"EmailToken {token} authenticates its client with a federated credential (a ServiceAccount "
            "token), which this command does not present: for flow AuthorizationCode sign in through the "
            "callback service's admin page; for flow DeviceCode the operator itself starts the sign-in "
            f"and shows the code in status.deviceCode (kubectl emailtoken status {name} -n {namespace})"
        )
    return api, token, spec


def _show(token: TokenRef, spec: EmailTokenSpec, redirect_uri: str, url: str, args: argparse.Namespace) -> None:
    """Tell the person where to sign in (and open their browser unless asked not to)."""
    who = spec.email_address or "the mailbox's account"
    print(f"Sign in as {who} for EmailToken {token} ({spec.provider}).")
    print(f"Redirect URI (must be registered at the provider): {redirect_uri}")
    if not args.no_browser and webbrowser.open(url):
        print("Your browser has been opened. If not, open this URL on this machine:")
    else:
        print("Open this URL in a browser on this machine:")
    print(f"\n  {url}\n", flush=True)
    print(f"Waiting for the sign-in (up to {int(args.timeout)}s; Ctrl-C cancels)...", flush=True)


def authorize(args: argparse.Namespace) -> SignInResult:
    """Run one loopback sign-in; raises AuthorizeError/SignInRefused with a readable message."""
    from emailtoken.providers import Providers

    api, token, spec = _load_target(args.target)
    provider = Providers(
        ca_bundle=args.ca_bundle, allowed_hosts=endpoints.from_args(args.allow_provider_hosts)
    ).for_spec(spec.provider)
    state = secrets.token_urlsafe(32)
    verifier = pkce.new_verifier()

    try:
        server = _LoopbackServer("127.0.0.1", args.port, state, lambda p: (False, ""))
    except OSError as exc:
        raise AuthorizeError(f"cannot listen on 127.0.0.1:{args.port}: {exc.strerror}") from None
    with server:
        redirect_uri = f"http://{args.redirect_host}:{server.server_address[1]}/"
        finish, outcome = _finisher(api, provider, token, spec, redirect_uri, verifier)
        server.finish = finish
        try:
            url = authorization_url(provider, spec, redirect_uri=redirect_uri, state=state, verifier=verifier)
        except ProviderError as exc:
            raise AuthorizeError(f"the sign-in address could not be built: {exc.message}") from None
        _show(token, spec, redirect_uri, url, args)
        deadline = time.monotonic() + args.timeout
        while server.outcome is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AuthorizeError(f"no sign-in arrived within {int(args.timeout)}s; nothing was stored")
            server.timeout = min(remaining, 1.0)
            server.handle_request()
    result = outcome[0]
    if isinstance(result, SignInRefused):
        raise result
    return result


def run(args: argparse.Namespace) -> int:
    """Entry point: 0 when the grant is stored, 1 when refused, 2 for usage errors."""
    try:
        result = authorize(args)
    except SignInRefused as exc:
        print(f"emailtoken authorize: {exc.reason}: {exc.message}", file=sys.stderr)
        return 1
    except AuthorizeError as exc:
        print(f"emailtoken authorize: {exc}", file=sys.stderr)
        return 1
    print(
        f"Authorized {result.token} as {result.account or 'the signed-in account'}. The access token from this "
        f"sign-in expires at {rfc3339(result.expires_at)}; the operator now refreshes it and publishes Secret "
        f"{result.token.namespace}/{result.secret_name}."
    )
    print(f"Check: kubectl get emailtoken -n {result.token.namespace} {result.token.name}", flush=True)
    return 0

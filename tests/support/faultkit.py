"""Fault injection for the refresh-engine suites: an API that can stall or fail on command,
real sign-ins at the local provider, a TCP relay that can refuse connections, and a ledger
of every secret value a run handed out (to prove none of them leaked).

Why a kmock subclass: kmock applies a create/patch/delete to its store *before* it consults
the reactions registered with its DSL, so a DSL reaction can only delay or fail the answer
of a write that already landed ("post-commit"). Stopping the operator right before a write
lands needs a hook in front of the emulator ("pre-commit"); :class:`FaultyKube` offers both.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp.web
import kmock
import msal

from emailtoken import scopes as scopes_mod
from emailtoken.timefmt import rfc3339, utcnow
from emailtoken_dev.devprovider import DevProviderThread, redirect_params, session, sign_in
from emailtoken_dev.localapi import _Emulator, register_resources
from tests.support.kube import ApiClient, KmockThread, wait_for

REDIRECT = "http://localhost/callback"
TENANT = "contoso"
SECRETS_RESOURCE = kmock.resource("", "v1", "secrets")
TOKENS_RESOURCE = kmock.resource("emailtoken.io", "v1alpha1", "emailtokens")


# --------------------------------------------------------------------------- the API


@dataclass
class Hold:
    """One request held at the API until released (``entered`` tells that it arrived)."""

    method: str
    namespace: str
    name: str
    subresource: str | None = None
    commit: bool = True  # pre-commit holds only: land the write on release, or answer 503 and drop it
    plural: str = "secrets"
    entered: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    used: bool = False

    def matches(self, request: kmock.Request) -> bool:
        return (
            not self.used
            and str(request.method.value if request.method else "").upper() == self.method
            and request.namespace == self.namespace
            and request.name == self.name
            and request.resource is not None
            and request.resource.plural == self.plural
            and (request.subresource or None) == self.subresource
        )

    def wait_entered(self, timeout: float = 30) -> None:
        if not self.entered.wait(timeout):
            raise AssertionError(f"nothing reached the held {self.method} {self.namespace}/{self.name}")

    async def wait_released(self, limit: float = 120) -> None:
        self.entered.set()
        deadline = time.monotonic() + limit
        while not self.released.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)


class _GatedEmulator(_Emulator):
    """The product's emulator with pre-commit holds in front of it, and a request log that stays cheap.

    kmock keeps every request for assertions and matches each new one against its reactions by
    scanning that history, so a long module (thousands of polls, watch events and patches)
    grows quadratically slow. Served requests are forgotten (as bench/kubeserver.py does) and
    only their routing facts are kept in ``seen``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gates: list[Hold] = []
        self.gate_lock = threading.Lock()
        self.seen: list[tuple[str, str | None, str | None, str | None]] = []

    async def _handle(self, request: Any) -> Any:
        method = str(request.method.value if request.method else "").upper()
        self.seen.append((method, request.namespace, request.name, request.subresource or None))
        try:
            with self.gate_lock:
                gate = next((g for g in self.gates if g.matches(request)), None)
                if gate is not None:
                    gate.used = True
            if gate is not None:
                await gate.wait_released()
                if not gate.commit:
                    return aiohttp.web.json_response(
                        {"kind": "Status", "status": "Failure", "code": 503, "message": "held and dropped by the test"},
                        status=503,
                    )
            return await super()._handle(request)
        finally:
            for index in range(len(self._requests) - 1, -1, -1):
                if self._requests[index] is request:
                    del self._requests[index]
                    break


class FaultyKube(KmockThread):
    """kmock on a loopback port whose answers a test can stall or fail (see the module docstring)."""

    emulator: _GatedEmulator
    holds: list[Hold]

    def release_all(self) -> None:
        """Let every stalled request go (a test's cleanup: nothing may stay stuck for the next one)."""
        for hold in getattr(self, "holds", []):
            hold.released.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with contextlib.AsyncExitStack() as stack:
            emulator = await stack.enter_async_context(_GatedEmulator())
            server = await stack.enter_async_context(kmock.Server(emulator, host="127.0.0.1", port=self.port or None))
            register_resources(emulator)
            self.emulator = emulator
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def _on_loop(self, fn: Any) -> Any:
        """Run ``fn`` on the API's event loop (kmock's DSL is not thread-safe) and return its result."""
        assert self._loop is not None
        done: asyncio.Future[Any] = asyncio.run_coroutine_threadsafe(_call(fn), self._loop)  # type: ignore[assignment]
        return done.result(10)

    def hold_before(
        self,
        method: str,
        namespace: str,
        name: str,
        *,
        plural: str = "secrets",
        subresource: str | None = None,
        commit: bool = False,
    ) -> Hold:
        """Stall the next matching request before it lands; on release it lands (``commit``) or fails 503."""
        hold = Hold(method.upper(), namespace, name, subresource, commit, plural)
        with self.emulator.gate_lock:
            self.emulator.gates.append(hold)
        self.holds = [*getattr(self, "holds", []), hold]
        return hold

    def fail_before(
        self, method: str, namespace: str, name: str, *, times: int = 1, plural: str = "secrets"
    ) -> list[Hold]:
        """Answer the next ``times`` matching requests 503 without letting them land (pre-commit)."""
        holds = [Hold(method.upper(), namespace, name, None, False, plural) for _ in range(times)]
        for hold in holds:
            hold.released.set()
        with self.emulator.gate_lock:
            self.emulator.gates.extend(holds)
        return holds

    def hold_after(
        self, method: str, namespace: str, name: str, *, plural: str = "secrets", subresource: str | None = None
    ) -> Hold:
        """Stall the *answer* of the next matching request; a write has landed by then (kmock's DSL)."""
        hold = Hold(method.upper(), namespace, name, subresource, plural=plural)

        async def stall() -> None:
            await hold.wait_released()

        def install() -> None:
            # A side effect without content answers nothing, so kmock disables this one-shot reaction
            # and serves the request as usual once ``stall`` returns.
            self.emulator[_criteria(hold.method, plural, namespace, name, subresource)] >> stall

        self._on_loop(install)
        self.holds = [*getattr(self, "holds", []), hold]
        return hold

    def fail(
        self,
        method: str,
        namespace: str,
        name: str,
        status: int,
        *,
        times: int = 1,
        plural: str = "secrets",
        subresource: str | None = None,
    ) -> None:
        """Answer the next ``times`` matching requests with ``status`` (kmock's DSL; writes still land)."""

        def install() -> None:
            body = {"kind": "Status", "status": "Failure", "code": status, "message": "injected by the test"}
            left = [times]

            def answer() -> Any:
                if left[0] <= 0:
                    return StopIteration  # kmock: this reaction is spent, serve as usual from now on
                left[0] -= 1
                return body

            self.emulator[_criteria(method.upper(), plural, namespace, name, subresource)] << status << answer

        self._on_loop(install)


async def _call(fn: Any) -> Any:
    return fn()


def _criteria(method: str, plural: str, namespace: str, name: str, subresource: str | None) -> tuple[Any, ...]:
    """kmock DSL criteria for one object's requests (the resource matters: a token and its Secret share a name)."""
    criteria: list[Any] = [
        kmock.method(method),
        kmock.resource(plural=plural),
        kmock.namespace(namespace),
        kmock.name(name),
    ]
    if subresource:
        criteria.append(kmock.subresource(subresource))
    return tuple(criteria)


# --------------------------------------------------------------------------- the network


class TcpRelay:
    """A TCP relay in front of the provider; ``down()`` closes the port so connections are refused."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self.up()

    def up(self) -> None:
        with self._lock:
            if self._listener is not None:
                return
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(32)
            self._listener = listener
            threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        """Refuse new connections and cut the open ones (a pooled keep-alive connection must not survive)."""
        with self._lock:
            listener, self._listener = self._listener, None
            connections, self._open = self._open, set()
        for s in ([listener] if listener else []) + list(connections):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def url(self, provider_url: str) -> str:
        """The provider URL with the relay's port instead of the provider's."""
        parts = urlsplit(provider_url)
        return provider_url.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{self.port}", 1)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while chunk := src.recv(65536):
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


# --------------------------------------------------------------------------- secrets ledger


class SecretLedger:
    """Every secret value a run handed out or observed; ``scan`` proves none appears in a text."""

    def __init__(self) -> None:
        self.values: set[str] = set()
        self.namespaces: set[str] = set()

    def add(self, *values: str | None) -> None:
        for value in values:
            if value and len(value) >= 8:
                self.values.add(value)

    def harvest(self, api: ApiClient, namespaces: Iterable[str]) -> None:
        """Collect access tokens, XOAUTH2 strings, refresh tokens and client secrets from the Secrets now."""
        for ns in namespaces:
            self.namespaces.add(ns)
            for secret in api.list("secrets", ns):
                data = {
                    k: base64.b64decode(v).decode("utf-8", "replace") for k, v in (secret.get("data") or {}).items()
                }
                for key in ("access_token", "xoauth2", "refresh_token", "client_secret"):
                    self.add(data.get(key))
                if "key.json" in data:
                    with contextlib.suppress(ValueError):
                        self.add(json.loads(data["key.json"]).get("private_key"))

    def leaks(self, *texts: str) -> list[str]:
        """Abbreviated values found in the texts (empty when clean)."""
        blob = "\n".join(texts)
        return sorted(v[:6] + "…" for v in self.values if v in blob)

    def api_texts(self, api: ApiClient) -> list[str]:
        """Status and Events as the API serves them: everything an operator writes but Secrets."""
        out = []
        for ns in sorted(self.namespaces):
            for kind in ("emailtokens", "events"):
                out.append(json.dumps(api.list(kind, ns)))
        return out


# --------------------------------------------------------------------------- sign-ins and objects


def microsoft_scopes(services: Iterable[str] = ("IMAP", "SMTP")) -> list[str]:
    """The scopes an AuthorizationCode EmailToken asks for (what the sign-in must consent to)."""
    return scopes_mod.for_request("Microsoft", scopes_mod.expand("Microsoft", "AuthorizationCode", services, ()))


def microsoft_sign_in(provider: DevProviderThread, client_id: str, client_secret: str, email: str) -> dict[str, Any]:
    """A real interactive sign-in (authorization code + PKCE through msal and the sign-in form)."""
    app = msal.ConfidentialClientApplication(
        client_id,
        client_credential=client_secret,
        authority=provider.microsoft_authority(TENANT),
        instance_discovery=False,
        http_client=session(provider.ca_pem_path or True),
    )
    flow = app.initiate_auth_code_flow(microsoft_scopes(), redirect_uri=REDIRECT, login_hint=email)
    location = sign_in(flow["auth_uri"], email, verify=provider.ca_pem_path or True)
    result = app.acquire_token_by_auth_code_flow(flow, redirect_params(location))
    assert "refresh_token" in result, {k: v for k, v in result.items() if "token" not in k}
    return result


def google_sign_in(provider: DevProviderThread, client_id: str, client_secret: str, email: str) -> dict[str, Any]:
    """A real Google consent (offline access, PKCE) and code exchange."""
    verifier = base64.urlsafe_b64encode(uuid.uuid4().bytes * 2).rstrip(b"=").decode()
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state = uuid.uuid4().hex
    query = urlencode(
        {
            "client_id": client_id,
            "redirect_uri": REDIRECT,
            "response_type": "code",
            "scope": "https://mail.google.com/ openid email",
            "access_type": "offline",
            "prompt": "consent",
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    location = sign_in(f"{provider.google_auth_url}?{query}", email, verify=provider.ca_pem_path or True)
    params = redirect_params(location)
    assert params["state"] == state
    answer = session(provider.ca_pem_path or True).post(
        provider.google_token_url,
        data={
            "grant_type": "authorization_code",
            "code": params["code"],
            "redirect_uri": REDIRECT,
            "client_id": client_id,
            "client_secret": client_secret,
            "code_verifier": verifier,
        },
        timeout=30,
    )
    assert answer.status_code == 200, answer.status_code
    result: dict[str, Any] = answer.json()
    assert result.get("refresh_token")
    return result


def create_grant(
    api: ApiClient, namespace: str, token_name: str, refresh_token: str, account: str, scope: str = ""
) -> None:
    """The grant Secret as the callback service writes it after a sign-in."""
    now = rfc3339(utcnow())
    values = {"refresh_token": refresh_token, "account": account, "scope": scope, "obtained_at": now, "updated_at": now}
    api.create(
        "secrets",
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "emailtoken.io/grant",
            "metadata": {
                "name": f"emailtoken-grant-{token_name}",
                "labels": {
                    "app.kubernetes.io/managed-by": "emailtoken-operator",
                    "emailtoken.io/grant-for": token_name,
                },
            },
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
        },
    )


def token_manifest(name: str, spec: dict[str, Any], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """An EmailToken body."""
    meta: dict[str, Any] = {"name": name}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "emailtoken.io/v1alpha1", "kind": "EmailToken", "metadata": meta, "spec": spec}


def microsoft_delegated_spec(provider: DevProviderThread, client_id: str, mailbox: str, **extra: Any) -> dict[str, Any]:
    return {
        "provider": "Microsoft",
        "tenantId": TENANT,
        "clientId": client_id,
        "clientSecretRef": {"name": "app-secret"},
        "emailAddress": mailbox,
        "services": ["IMAP", "SMTP"],
        "tokenUrl": provider.microsoft_token_url(TENANT),
        **extra,
    }


def microsoft_app_spec(provider: DevProviderThread, client_id: str, mailbox: str, **extra: Any) -> dict[str, Any]:
    return {**microsoft_delegated_spec(provider, client_id, mailbox), "flow": "ClientCredentials", **extra}


def google_delegated_spec(provider: DevProviderThread, client_id: str, mailbox: str, **extra: Any) -> dict[str, Any]:
    return {
        "provider": "Google",
        "clientId": client_id,
        "clientSecretRef": {"name": "app-secret"},
        "emailAddress": mailbox,
        "services": ["Gmail"],
        "tokenUrl": provider.google_token_url,
        **extra,
    }


@dataclass
class Delegated:
    """One EmailToken in its own namespace (delegated ones signed in for real)."""

    namespace: str
    name: str
    client_id: str
    client_secret: str
    mailbox: str
    provider: str = "Microsoft"
    manifest: dict[str, Any] = field(default_factory=dict, repr=False)

    def create(self, api: ApiClient) -> Delegated:
        """Create the EmailToken (when it was prepared with ``create=False``)."""
        api.create("emailtokens", self.namespace, self.manifest)
        return self


def delegated_token(
    api: ApiClient,
    provider: DevProviderThread,
    ledger: SecretLedger,
    *,
    kind: str = "Microsoft",
    name: str = "box",
    namespace: str | None = None,
    create: bool = True,
    **spec_extra: Any,
) -> Delegated:
    """Register a client and a user, sign in, store the grant, create the EmailToken (unless not ``create``)."""
    ns = namespace or f"t-{uuid.uuid4().hex[:8]}"
    client_id = f"{kind.lower()}-{ns}"
    client_secret = f"cs-{uuid.uuid4().hex}"
    mailbox = f"{name}-{ns}@{'contoso.com' if kind == 'Microsoft' else 'example.com'}"
    if kind == "Microsoft":
        provider.add_client(client_id, client_secret)
        provider.add_user(mailbox)
        result = microsoft_sign_in(provider, client_id, client_secret, mailbox)
        spec = microsoft_delegated_spec(provider, client_id, mailbox, **spec_extra)
    else:
        provider.add_client(client_id, client_secret, provider="google")
        provider.add_user(mailbox, provider="google")
        result = google_sign_in(provider, client_id, client_secret, mailbox)
        spec = google_delegated_spec(provider, client_id, mailbox, **spec_extra)
    ledger.add(client_secret, result["refresh_token"], result.get("access_token"), result.get("id_token"))
    ledger.namespaces.add(ns)
    api.create_secret(ns, "app-secret", {"client_secret": client_secret})
    create_grant(api, ns, name, result["refresh_token"], mailbox, result.get("scope", ""))
    token = Delegated(ns, name, client_id, client_secret, mailbox, kind, token_manifest(name, spec))
    return token.create(api) if create else token


# --------------------------------------------------------------------------- reading state


def status(api: ApiClient, ns: str, name: str) -> dict[str, Any]:
    return ((api.get("emailtokens", ns, name) or {}).get("status")) or {}


def condition(api: ApiClient, ns: str, name: str, type_: str) -> dict[str, Any]:
    return api.condition(ns, name, type_) or {}


def is_ready(api: ApiClient, ns: str, name: str) -> bool:
    return condition(api, ns, name, "Ready").get("status") == "True"


def grant_refresh_token(api: ApiClient, ns: str, name: str) -> str | None:
    data = api.secret_data(ns, f"emailtoken-grant-{name}")
    return (data or {}).get("refresh_token")


def access_token(api: ApiClient, ns: str, secret_name: str) -> str | None:
    return (api.secret_data(ns, secret_name) or {}).get("access_token")


def warnings(api: ApiClient, ns: str, name: str, reason: str | None = None) -> list[dict[str, Any]]:
    return [e for e in api.events_for(ns, name) if e.get("type") == "Warning" and reason in (None, e.get("reason"))]


def annotate(api: ApiClient, ns: str, name: str, key: str, value: str) -> None:
    api.patch("emailtokens", ns, name, {"metadata": {"annotations": {key: value}}})


def refresh_token_status(provider: DevProviderThread, refresh_token: str) -> str | None:
    """The provider's record of a refresh token: active, rotated, expired, revoked (None: unknown)."""
    rec = provider.state._refresh.get(hashlib.sha256(refresh_token.encode()).hexdigest())
    return rec.status if rec else None


def grant_family(provider: DevProviderThread, refresh_token: str) -> Any:
    """The provider's grant record behind a refresh token (``revoked`` says why, if it was)."""
    rec = provider.state._refresh[hashlib.sha256(refresh_token.encode()).hexdigest()]
    return provider.state._grants[rec.grant_id]


def reuse_errors(provider: DevProviderThread, client_id: str) -> int:
    """Token calls the provider answered with invalid_grant for this client (reuse shows up here)."""
    return sum(1 for c in provider.calls if c.client_id == client_id and c.error == "invalid_grant")


def refresh_calls(provider: DevProviderThread, client_id: str) -> list[Any]:
    """The provider's record of refresh-token grants presented by this client."""
    return [c for c in provider.calls if c.client_id == client_id and c.grant_type == "refresh_token"]


def explain(api: ApiClient, provider: DevProviderThread, t: Delegated) -> str:
    """What a failed wait should show: the token's status and the provider's record of its client."""
    calls = [
        (c.grant_type, c.status, c.error, round(c.duration, 1)) for c in provider.calls if c.client_id == t.client_id
    ]
    rt = grant_refresh_token(api, t.namespace, t.name)
    return (
        f"status={status(api, t.namespace, t.name)} calls={calls} "
        f"grant_rt={refresh_token_status(provider, rt) if rt else None}"
    )


def wait_explained(
    predicate: Any, timeout: float, api: ApiClient, provider: DevProviderThread, t: Delegated, what: str
) -> Any:
    """``wait_for`` that, on timeout, says where the token and its provider calls ended up."""
    try:
        return wait_for(predicate, timeout, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{explain(api, provider, t)}") from None


def wait_quiet(seconds: float) -> None:
    """Let time pass on purpose: the assertion after it is that nothing happened meanwhile."""
    time.sleep(seconds)

"""Running the provider: :class:`DevProvider` (asyncio) and :class:`DevProviderThread` (own loop).

Both expose the same Python controls (:class:`ProviderControls`); the thread runner only
exists so synchronous tests (msal, google-auth, requests are blocking) and subprocess
wrappers can use the provider without sharing an event loop with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

from aiohttp import web

from .app import SafeAccessLogger, build_app, build_introspection_app
from .calls import Call, CallLog
from .common import Context
from .config import apply_config, load_config_file, write_private
from .faults import FaultQueue
from .federation import FederatedCredential, federation_of
from .jws import SigningKey
from .state import DEFAULT_PASSWORD, Client, Settings, State, User
from .tls import Authority, is_ip

log = logging.getLogger("emailtoken_dev.devprovider")


class ProviderControls:
    """The Python API of a running provider: registry, test controls and URL helpers.

    Everything here is thread-safe: the state takes a lock, the fault queue and call log
    have their own.
    """

    ctx: Context

    # --------------------------------------------------------------- addresses
    @property
    def url(self) -> str:
        """Base URL, e.g. ``https://127.0.0.1:PORT``."""
        raise NotImplementedError

    def microsoft_authority(self, tenant: str) -> str:
        """What msal takes as ``authority`` (with ``instance_discovery=False``)."""
        return f"{self.url}/{tenant}"

    def microsoft_authorize_url(self, tenant: str) -> str:
        """The EmailToken ``authorizationUrl`` override for Microsoft."""
        return f"{self.url}/{tenant}/oauth2/v2.0/authorize"

    def microsoft_token_url(self, tenant: str) -> str:
        """The EmailToken ``tokenUrl`` override for Microsoft."""
        return f"{self.url}/{tenant}/oauth2/v2.0/token"

    @property
    def google_auth_url(self) -> str:
        """The EmailToken ``authorizationUrl`` override for Google."""
        return f"{self.url}/google/o/oauth2/v2/auth"

    @property
    def google_token_url(self) -> str:
        """The EmailToken ``tokenUrl`` override (and key-file ``token_uri``) for Google."""
        return f"{self.url}/google/token"

    @property
    def device_login_url(self) -> str:
        """Where a person enters a device code."""
        return f"{self.url}/devicelogin"

    # ------------------------------------------------------------ shared parts
    @property
    def state(self) -> State:
        """The registry and grant store."""
        return self.ctx.state

    @property
    def settings(self) -> Settings:
        """Mutable knobs (lifetimes, rotation per provider, device interval...)."""
        return self.ctx.state.settings

    @property
    def faults(self) -> FaultQueue:
        """Scripted failures: ``p.faults.add(endpoint='token', status=503, retry_after=7)``."""
        return self.ctx.faults

    @property
    def control_token(self) -> str:
        """Bearer secret for the ``/_control/`` API."""
        return self.ctx.control_token

    @property
    def token_lifetime(self) -> int:
        """Access-token lifetime in seconds for tokens issued from now on."""
        return self.ctx.state.settings.token_lifetime

    @token_lifetime.setter
    def token_lifetime(self, seconds: int) -> None:
        self.ctx.state.settings.token_lifetime = int(seconds)

    # ---------------------------------------------------------------- registry
    def add_client(
        self,
        client_id: str,
        client_secret: str | None = None,
        *,
        provider: str = "microsoft",
        redirect_uris: Sequence[str] | None = None,
        public: bool = False,
        require_pkce: bool = False,
        name: str | None = None,
        mailboxes: Sequence[str] = (),
        testing: bool = False,
    ) -> Client:
        """Register a client. ``redirect_uris=None`` accepts any http(s) redirect URI; a list
        is matched exactly, loopback entries on any port. ``mailboxes``: what app-only tokens
        of this client may open (introspection reports the address when there is one).
        ``testing``: a Google app in Testing (refresh tokens end after
        ``settings.testing_refresh_lifetime``, stated in ``refresh_token_expires_in``)."""
        return self.ctx.state.add_client(
            client_id,
            client_secret,
            provider=provider,
            redirect_uris=redirect_uris,
            public=public,
            require_pkce=require_pkce,
            name=name,
            mailboxes=mailboxes,
            testing=testing,
        )

    def add_federated_client(
        self, client_id: str, credential: FederatedCredential, *, mailboxes: Sequence[str] = ()
    ) -> Client:
        """A Microsoft app registration with no client secret at all, only federated credentials: it
        authenticates with client assertions that ``credential`` (issuer, subject, audiences) trusts.
        Called again for the same client, it adds one more credential."""
        client = self.ctx.state.client(client_id, "microsoft")
        if client is None:
            client = self.ctx.state.add_client(client_id, secrets.token_urlsafe(), mailboxes=mailboxes)
            client.secrets.clear()  # State insists on a secret for confidential clients; this app has none
        federation_of(self.ctx.extra).add(client_id, credential)
        return client

    def set_client_secret(self, client_id: str, new: str, *, keep_old: bool = False) -> None:
        """Rotate a client secret (``keep_old`` leaves the previous one valid too)."""
        self.ctx.state.set_client_secret(client_id, new, keep_old=keep_old)

    def add_user(
        self,
        email: str,
        password: str = DEFAULT_PASSWORD,
        *,
        provider: str = "microsoft",
        name: str | None = None,
        tenant: str | None = None,
    ) -> User:
        """Add a person who can sign in."""
        return self.ctx.state.add_user(email, password, provider=provider, name=name, tenant=tenant)

    def set_password(self, email: str, new: str) -> None:
        """Change a password; revokes the person's grants (Entra AADSTS50173)."""
        self.ctx.state.set_password(email, new)

    def disable_user(self, email: str, disabled: bool = True) -> None:
        """Block sign-in and refresh (Entra AADSTS50057)."""
        self.ctx.state.disable_user(email, disabled)

    def add_service_account(
        self,
        email: str,
        client_id: str,
        *,
        subjects: Iterable[str] | None = None,
        scopes: Iterable[str] | None = None,
    ) -> dict[str, str]:
        """Create a Google service account (or another key for it); returns the key file dict,
        whose ``token_uri`` points here. Domain-wide delegation is allowed for ``subjects``
        (None: every Google user added) and ``scopes`` (None: any)."""
        return self.ctx.state.add_service_account(
            email,
            client_id,
            token_uri=self.google_token_url,
            auth_uri=self.google_auth_url,
            subjects=subjects,
            scopes=scopes,
        )

    def delete_service_account_key(self, email: str, key_id: str) -> None:
        """Delete one service-account key (its ``private_key_id``)."""
        self.ctx.state.delete_service_account_key(email, key_id)

    def load_config(self, data: dict[str, Any]) -> dict[str, dict[str, str]]:
        """Apply a config mapping (see :mod:`.config`); returns generated service-account keys."""
        return apply_config(self, data)

    def load_config_file(self, path: str | Path) -> dict[str, dict[str, str]]:
        """Apply a JSON config file."""
        return load_config_file(self, path)

    # ------------------------------------------------------------ test controls
    def approve_device(self, user_code: str, email: str) -> None:
        """Approve a pending device code as ``email``."""
        self.ctx.state.approve_device(user_code, email)

    def deny_device(self, user_code: str) -> None:
        """Deny a pending device code."""
        self.ctx.state.deny_device(user_code)

    def revoke_grant(self, target: str, *, revoke_access_tokens: bool = False) -> int:
        """Revoke by e-mail (all the person's grants) or by refresh token; returns grants revoked."""
        return self.ctx.state.revoke_grant(target, revoke_access_tokens=revoke_access_tokens)

    def expire_all_refresh_tokens(self) -> int:
        """Expire every live refresh token (Entra then answers AADSTS70008)."""
        return self.ctx.state.expire_all_refresh_tokens()

    def advance_clock(self, seconds: float) -> None:
        """Move the provider's clock forward (expiry, idle refresh tokens, device codes)."""
        self.ctx.state.advance_clock(seconds)

    def token_info(self, access_token: str) -> dict[str, Any] | None:
        """Whether an access token is live and whose it is; None if never issued here."""
        return self.ctx.state.token_info(access_token)

    @property
    def issued_tokens(self) -> list[dict[str, Any]]:
        """Info about every access token issued (the tokens themselves are not kept)."""
        return self.ctx.state.issued_tokens

    @property
    def calls(self) -> list[Call]:
        """Requests received so far (no secrets: endpoint, grant type, client, status...)."""
        return self.ctx.calls.calls

    @property
    def counters(self) -> dict[str, int]:
        """Calls per endpoint and per ``token:<grant_type>``."""
        return self.ctx.calls.counters

    def count(self, endpoint: str | None = None, **match: Any) -> int:
        """Number of calls matching endpoint / grant_type / status / provider / client_id."""
        return self.ctx.calls.count(endpoint, **match)

    def reset_counters(self) -> None:
        """Forget recorded calls and counters."""
        self.ctx.calls.reset()

    @property
    def tenants(self) -> list[str]:
        """Microsoft tenant path segments clients have used."""
        return self.ctx.state.tenants


class DevProvider(ProviderControls):
    """Local Entra ID + Google OAuth provider over HTTPS; ``async with DevProvider() as p``."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: bool = True,
        token_lifetime: int = 3600,
        refresh_token_rotation: bool = True,
        google_refresh_token_rotation: bool = False,
        reuse_detection: bool = True,
        device_interval: int = 5,
        introspection_user: str = "dovecot",
        introspection_password: str | None = None,
        introspection_port: int | None = 0,
        control_token: str | None = None,
        state_file: str | Path | None = None,
        ca_file: str | Path | None = None,
        hostnames: Sequence[str] = (),
        public_url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``introspection_port``: a plain-HTTP listener for Dovecot (None: only on the main
        port). ``state_file``: JSON persisted across restarts (registry, grants, keys, CA).
        ``ca_file``: where to write the CA PEM (default: a temporary directory)."""
        settings = Settings(
            token_lifetime=token_lifetime,
            rotation={"microsoft": refresh_token_rotation, "google": google_refresh_token_rotation},
            reuse_detection=reuse_detection,
            device_interval=device_interval,
        )
        self.ctx = Context(
            state=State(settings, clock=clock),
            faults=FaultQueue(),
            calls=CallLog(),
            signing_key=SigningKey(),
            control_token=control_token or secrets.token_urlsafe(24),
            introspection_user=introspection_user,
            introspection_password=introspection_password or secrets.token_urlsafe(12),
            tls=tls,
            public_url=public_url,
        )
        self.ctx.extra["registry"] = self
        self.host = host
        self.port = port
        self.tls = tls
        self._introspection_port = introspection_port
        self._hostnames = list(hostnames)
        self._state_file = Path(state_file) if state_file else None
        self._ca_file = Path(ca_file) if ca_file else None
        self._tmpdir: str | None = None
        self._runners: list[web.AppRunner] = []
        self._saver: asyncio.Task[None] | None = None
        self._url: str | None = None
        self.ca_pem_path: str | None = None
        self.introspection_url: str | None = None
        self.authority: Authority | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the provider is not started")
        return self._url

    @property
    def ready_info(self) -> dict[str, Any]:
        """What ``python -m emailtoken_dev.devprovider`` prints when ready."""
        return {
            "url": self.url,
            "ca": self.ca_pem_path,
            "control_token": self.control_token,
            "introspection_url": self.introspection_url,
        }

    async def start(self) -> Self:
        """Load state, make certificates, listen; returns self once accepting connections."""
        saved = self._load_state_file()
        ca = saved.get("ca", {})
        if self.tls:
            self.authority = Authority(
                [self.host, *self._hostnames],
                ca_pem=ca.get("cert", "").encode() or None,
                ca_key_pem=ca.get("key", "").encode() or None,
            )
            ca_path = self._ca_file
            if ca_path is None:
                self._tmpdir = tempfile.mkdtemp(prefix="devprovider-")
                ca_path = Path(self._tmpdir) / "ca.pem"
            self.ca_pem_path = str(self.authority.write_ca(ca_path))
        ssl_ctx = self.authority.server_context() if self.authority else None
        runner = await self._listen(build_app(self.ctx), self.host, self.port, ssl_ctx)
        self.port = runner.addresses[0][1]
        self._url = f"{'https' if self.tls else 'http'}://{_url_host(self.host)}:{self.port}"
        creds = f"{quote(self.ctx.introspection_user, safe='')}:{quote(self.ctx.introspection_password, safe='')}"
        if self.tls and self._introspection_port is not None:
            side = await self._listen(build_introspection_app(self.ctx), self.host, self._introspection_port, None)
            side_port = side.addresses[0][1]
            self.introspection_url = f"http://{creds}@{_url_host(self.host)}:{side_port}/introspect"
        else:
            scheme, rest = self.url.split("://", 1)
            self.introspection_url = f"{scheme}://{creds}@{rest}/introspect"
        if self._state_file:
            self._saver = asyncio.create_task(self._save_periodically())
        log.info("devprovider listening on %s", self.url)
        return self

    async def _listen(self, app: web.Application, host: str, port: int, ssl_ctx: Any) -> web.AppRunner:
        runner = web.AppRunner(app, access_log_class=SafeAccessLogger, handle_signals=False)
        await runner.setup()
        self._runners.append(runner)
        await web.TCPSite(runner, host, port, ssl_context=ssl_ctx).start()
        return runner

    async def stop(self) -> None:
        """Stop listening, save state, remove temporary files."""
        if self._saver:
            self._saver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._saver
            self._saver = None
        self._save_state_file()
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -------------------------------------------------------------- state file
    def _load_state_file(self) -> dict[str, Any]:
        if not self._state_file or not self._state_file.exists():
            return {}
        saved: dict[str, Any] = json.loads(self._state_file.read_text())
        self.ctx.state.restore(saved["state"])
        self.ctx.signing_key = SigningKey(saved["signing_key"])
        self.ctx.control_token = saved.get("control_token", self.ctx.control_token)
        intro = saved.get("introspection", {})
        self.ctx.introspection_user = intro.get("user", self.ctx.introspection_user)
        self.ctx.introspection_password = intro.get("password", self.ctx.introspection_password)
        return saved

    def _save_state_file(self) -> None:
        if not self._state_file:
            return
        data = {
            "state": self.ctx.state.snapshot(),
            "signing_key": self.ctx.signing_key.pem(),
            "control_token": self.ctx.control_token,
            "introspection": {"user": self.ctx.introspection_user, "password": self.ctx.introspection_password},
        }
        if self.authority:
            data["ca"] = {"cert": self.authority.ca_pem().decode(), "key": self.authority.ca_key_pem().decode()}
        write_private(self._state_file, json.dumps(data))

    async def _save_periodically(self) -> None:
        saved_generation = -1
        while True:
            generation = self.ctx.state.generation
            if generation != saved_generation:
                await asyncio.to_thread(self._save_state_file)
                saved_generation = generation
            await asyncio.sleep(0.5)


class DevProviderThread(ProviderControls):
    """A :class:`DevProvider` on its own event loop in a daemon thread, for synchronous callers."""

    def __init__(self, **kwargs: Any) -> None:
        """Takes the :class:`DevProvider` keyword arguments."""
        self.provider = DevProvider(**kwargs)
        self.ctx = self.provider.ctx
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return self.provider.url

    @property
    def ca_pem_path(self) -> str | None:
        """The CA certificate file clients must trust."""
        return self.provider.ca_pem_path

    @property
    def introspection_url(self) -> str | None:
        """``http://user:pass@host:port/introspect`` for Dovecot."""
        return self.provider.introspection_url

    @property
    def port(self) -> int:
        """The HTTPS port."""
        return self.provider.port

    @property
    def ready_info(self) -> dict[str, Any]:
        """Same as :attr:`DevProvider.ready_info`."""
        return self.provider.ready_info

    def start(self, timeout: float = 30.0) -> Self:
        """Start the loop thread and wait until the provider accepts connections."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.provider.start())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="devprovider", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError("devprovider did not start in time")
        if failure:
            raise failure[0]
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the provider and its thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.provider.stop(), loop).result(timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._loop = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0"):  # noqa: S104 - bound to all interfaces: clients use loopback
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if is_ip(host) and ":" in host else host

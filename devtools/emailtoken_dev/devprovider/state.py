"""The provider's memory: registered clients, users and service accounts, and every grant.

Protocol-neutral on purpose: failures are raised as :class:`GrantError` with a neutral
``reason`` and the dialect modules (``microsoft``, ``google``) translate them into the
exact error each service sends. Secrets handed out (codes, refresh and access tokens) are
kept only as SHA-256 digests, so the state file and debug dumps never hold a usable token.

All public methods take one re-entrant lock: the aiohttp loop thread and a test thread
call them concurrently.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from . import jws

PROVIDERS = ("microsoft", "google")
#: Every test user's password unless given: this is a local test provider.
DEFAULT_PASSWORD = "password"
DAY = 86400.0
_USER_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def digest(secret: str) -> str:
    """Key under which a handed-out secret is stored."""
    return hashlib.sha256(secret.encode()).hexdigest()


def pkce_s256(verifier: str) -> str:
    """RFC 7636 S256 transform of a code verifier."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


class GrantError(Exception):
    """A request cannot be honoured; ``reason`` is neutral, ``info`` feeds error templates.

    Reasons: unknown, redeemed, expired, idle, revoked, rotated, reused, client_mismatch,
    redirect_mismatch, pkce_missing, pkce_mismatch, user_disabled, no_user, bad_password,
    wrong_tenant, pending, slow_down, declined, device_expired.
    """

    def __init__(self, reason: str, **info: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.info = info


@dataclass
class Settings:
    """Knobs a test may turn while the provider runs."""

    token_lifetime: int = 3600
    rotation: dict[str, bool] = field(default_factory=lambda: {"microsoft": True, "google": False})
    reuse_detection: bool = True
    code_lifetime: int = 600
    login_lifetime: int = 1800
    device_expires_in: int = 900
    device_interval: int = 5
    #: a device poll sooner than this fraction of the interval earns ``slow_down``
    device_slow_down_factor: float = 0.8
    #: refresh tokens die after this long unused (Entra: 90 days; Google: none)
    refresh_idle_lifetime: dict[str, float | None] = field(
        default_factory=lambda: {"microsoft": 90 * DAY, "google": None}
    )
    #: a Google client in Testing (``Client.testing``): its refresh tokens die this long after the
    #: sign-in, and token answers say so in ``refresh_token_expires_in``
    testing_refresh_lifetime: float = 7 * DAY


@dataclass
class Client:
    """An app registration (Entra) or OAuth client (Google)."""

    client_id: str
    provider: str
    secrets: list[str]
    redirect_uris: list[str] | None
    public: bool
    require_pkce: bool = False
    name: str = ""
    #: mailboxes an app-only (client credentials) token may open; introspection reports the
    #: address when there is exactly one, so Dovecot can match it to the SASL user
    mailboxes: list[str] = field(default_factory=list)
    #: Google: the OAuth consent screen's publishing status is Testing (7-day refresh tokens)
    testing: bool = False

    def secret_ok(self, secret: str) -> bool:
        """Constant-time comparison against every current secret."""
        return any(hmac.compare_digest(secret.encode(), s.encode()) for s in self.secrets)

    def redirect_ok(self, uri: str) -> bool:
        """Exact match, except that loopback URIs match on any port (RFC 8252, Entra and Google)."""
        if self.redirect_uris is None:
            return uri.startswith(("http://", "https://"))
        return any(uri == r or _same_loopback(uri, r) for r in self.redirect_uris)


@dataclass
class User:
    """A person who can sign in."""

    email: str
    provider: str
    password: str
    name: str
    oid: str
    google_id: str
    tenant: str | None = None
    disabled: bool = False
    tokens_valid_from: float = 0.0


@dataclass
class ServiceAccount:
    """A Google service account: public keys only, and where domain-wide delegation applies."""

    email: str
    client_id: str
    keys: dict[str, str]
    subjects: list[str] | None = None
    scopes: list[str] | None = None


@dataclass
class LoginRequest:
    """An authorization request waiting for the person to sign in."""

    provider: str
    tenant: str
    client_id: str
    redirect_uri: str
    scopes: list[str]
    state: str | None = None
    nonce: str | None = None
    code_challenge: str | None = None
    code_challenge_method: str | None = None
    response_mode: str = "query"
    login_hint: str | None = None
    client_info: bool = False
    offline: bool = False
    consent: bool = False
    created: float = 0.0


@dataclass
class AuthCode:
    """An issued authorization code (stored by digest)."""

    provider: str
    tenant: str
    client_id: str
    redirect_uri: str
    scopes: list[str]
    email: str
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    issued_at: float
    expires_at: float
    client_info: bool
    offline: bool
    redeemed: bool = False


@dataclass
class Grant:
    """A family of refresh tokens descending from one sign-in."""

    grant_id: str
    provider: str
    tenant: str
    client_id: str
    email: str
    scopes: list[str]
    created_at: float
    revoked: str | None = None  # None, "admin", "reused", "password"


@dataclass
class RefreshToken:
    """One refresh token of a grant (stored by digest)."""

    grant_id: str
    issued_at: float
    last_used: float
    status: str = "active"  # active, rotated, expired, revoked


@dataclass
class AccessToken:
    """An issued access token (stored by digest)."""

    kind: str  # user, app, service_account
    provider: str
    client_id: str
    email: str | None
    scopes: list[str]
    tenant: str
    issued_at: float
    expires_at: float
    grant_id: str | None = None
    revoked: bool = False
    token_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])


@dataclass
class DeviceAuth:
    """A device-code authorization in progress (stored by device-code digest)."""

    user_code: str
    tenant: str
    client_id: str
    scopes: list[str]
    created: float
    expires_at: float
    interval: int
    last_poll: float | None = None
    status: str = "pending"  # pending, approved, denied, redeemed
    email: str | None = None


class State:
    """Registry and grant store shared by the HTTP handlers and the Python controls."""

    def __init__(self, settings: Settings | None = None, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings or Settings()
        self._clock = clock
        self._offset = 0.0
        self.lock = threading.RLock()
        self._clients: dict[str, Client] = {}
        self._users: dict[tuple[str, str], User] = {}
        self._service_accounts: dict[str, ServiceAccount] = {}
        self._logins: dict[str, LoginRequest] = {}
        self._codes: dict[str, AuthCode] = {}
        self._grants: dict[str, Grant] = {}
        self._refresh: dict[str, RefreshToken] = {}
        self._access: dict[str, AccessToken] = {}
        self._devices: dict[str, DeviceAuth] = {}
        self._consented: set[tuple[str, str]] = set()
        self._tenants: list[str] = []
        self.generation = 0  # bumped on every change, so a state file knows when to save

    # ----------------------------------------------------------------- time
    def now(self) -> float:
        """The provider's clock (wall clock plus any simulated advance)."""
        return self._clock() + self._offset

    def advance_clock(self, seconds: float) -> None:
        """Pretend time passed: expires codes, tokens and idle refresh tokens without sleeping."""
        with self.lock:
            self._offset += seconds
            self._changed()

    def _changed(self) -> None:
        self.generation += 1

    # ------------------------------------------------------------- registry
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
        """Register (or replace) a client; confidential clients need a secret."""
        _check_provider(provider)
        if not public and not client_secret:
            raise ValueError("a confidential client needs client_secret (or pass public=True)")
        client = Client(
            client_id=client_id,
            provider=provider,
            secrets=[client_secret] if client_secret else [],
            redirect_uris=list(redirect_uris) if redirect_uris is not None else None,
            public=public,
            require_pkce=require_pkce,
            name=name or client_id,
            mailboxes=[m.lower() for m in mailboxes],
            testing=testing,
        )
        with self.lock:
            self._clients[client_id] = client
            self._changed()
        return client

    def set_client_secret(self, client_id: str, new: str, *, keep_old: bool = False) -> None:
        """Rotate a client secret; ``keep_old`` models an overlap period with two valid secrets."""
        with self.lock:
            client = self._clients[client_id]
            client.secrets = [*client.secrets, new] if keep_old else [new]
            self._changed()

    def client(self, client_id: str, provider: str) -> Client | None:
        """The client registered under this id for this provider."""
        with self.lock:
            found = self._clients.get(client_id)
            return found if found and found.provider == provider else None

    def add_user(
        self,
        email: str,
        password: str = DEFAULT_PASSWORD,
        *,
        provider: str = "microsoft",
        name: str | None = None,
        tenant: str | None = None,
    ) -> User:
        """Add a person; ``tenant`` (Microsoft) restricts sign-in to that tenant segment."""
        _check_provider(provider)
        key = email.lower()
        user = User(
            email=email,
            provider=provider,
            password=password,
            name=name or email.split("@")[0].replace(".", " ").title(),
            oid=str(uuid.uuid5(uuid.NAMESPACE_URL, f"devprovider:{provider}:{key}")),
            google_id=str(int(hashlib.sha256(key.encode()).hexdigest(), 16))[:21],
            tenant=tenant,
        )
        with self.lock:
            self._users[(provider, key)] = user
            self._changed()
        return user

    def user(self, provider: str, email: str) -> User | None:
        """The account for an address (case-insensitive)."""
        with self.lock:
            return self._users.get((provider, email.lower()))

    def set_password(self, email: str, new: str) -> None:
        """Change a password; like Entra and Google this revokes the user's refresh tokens."""
        with self.lock:
            users = self._users_by_email(email)
            for user in users:
                user.password = new
            self._revoke_users(users, "password")

    def disable_user(self, email: str, disabled: bool = True) -> None:
        """Block (or unblock) sign-in and refresh for an account."""
        with self.lock:
            for user in self._users_by_email(email):
                user.disabled = disabled
            self._changed()

    def add_service_account(
        self,
        email: str,
        client_id: str,
        *,
        token_uri: str,
        auth_uri: str,
        subjects: Iterable[str] | None = None,
        scopes: Iterable[str] | None = None,
    ) -> dict[str, str]:
        """Create a service account (or add a key to it) and return the new key file as a dict.

        ``subjects`` lists who it may impersonate by domain-wide delegation (None: any Google
        user added); ``scopes`` limits the delegated scopes (None: any).
        """
        project = email.split("@", 1)[1].split(".", 1)[0] if "@" in email else "devprovider"
        info, key_id, pem = jws.service_account_key(
            email, client_id, token_uri=token_uri, auth_uri=auth_uri, project_id=project
        )
        with self.lock:
            sa = self._service_accounts.get(email)
            if sa is None:
                sa = self._service_accounts[email] = ServiceAccount(email, client_id, {})
            sa.keys[key_id] = pem
            if subjects is not None:
                sa.subjects = [s.lower() for s in subjects]
            if scopes is not None:
                sa.scopes = list(scopes)
            self._changed()
        return info

    def delete_service_account_key(self, email: str, key_id: str) -> None:
        """Delete one key, as an administrator would after a leak."""
        with self.lock:
            del self._service_accounts[email].keys[key_id]
            self._changed()

    def service_account(self, email: str) -> ServiceAccount | None:
        """A service account by its e-mail (the assertion's ``iss``)."""
        with self.lock:
            return self._service_accounts.get(email)

    def note_tenant(self, tenant: str) -> None:
        """Remember a tenant path segment a client used."""
        with self.lock:
            if tenant not in self._tenants:
                self._tenants.append(tenant)

    @property
    def tenants(self) -> list[str]:
        """Tenant segments seen, in first-use order."""
        with self.lock:
            return list(self._tenants)

    # -------------------------------------------------------------- sign-in
    def begin_login(self, request: LoginRequest) -> str:
        """Park an authorization request until the sign-in form comes back; returns its handle."""
        txn = secrets.token_urlsafe(24)
        with self.lock:
            request.created = self.now()
            self._prune_logins()
            self._logins[txn] = request
        return txn

    def login(self, txn: str) -> LoginRequest | None:
        """A parked authorization request, if still fresh."""
        with self.lock:
            req = self._logins.get(txn)
            if req and self.now() - req.created > self.settings.login_lifetime:
                del self._logins[txn]
                return None
            return req

    def end_login(self, txn: str) -> None:
        """Forget a parked request once answered."""
        with self.lock:
            self._logins.pop(txn, None)

    def authenticate(self, provider: str, email: str, password: str, tenant: str | None = None) -> User:
        """Check a password; raises GrantError no_user / bad_password / user_disabled / wrong_tenant."""
        with self.lock:
            user = self.user(provider, email)
            if user is None:
                raise GrantError("no_user", email=email)
            if not hmac.compare_digest(password.encode(), user.password.encode()):
                raise GrantError("bad_password", email=email)
            if user.disabled:
                raise GrantError("user_disabled", email=email)
            if tenant and user.tenant and tenant not in (user.tenant, "common", "organizations"):
                raise GrantError("wrong_tenant", email=email, tenant=tenant)
            return user

    def has_consented(self, client_id: str, email: str) -> bool:
        """Whether this person already consented to this client (Google issues one refresh token)."""
        with self.lock:
            return (client_id, email.lower()) in self._consented

    def issue_code(self, req: LoginRequest, user: User) -> str:
        """Mint a single-use authorization code bound to the request's client, redirect and PKCE."""
        code = secrets.token_urlsafe(48)
        now = self.now()
        with self.lock:
            self._codes[digest(code)] = AuthCode(
                provider=req.provider,
                tenant=req.tenant,
                client_id=req.client_id,
                redirect_uri=req.redirect_uri,
                scopes=list(req.scopes),
                email=user.email,
                nonce=req.nonce,
                code_challenge=req.code_challenge,
                code_challenge_method=req.code_challenge_method,
                issued_at=now,
                expires_at=now + self.settings.code_lifetime,
                client_info=req.client_info,
                offline=req.offline,
            )
            self._consented.add((req.client_id, user.email.lower()))
            self._changed()
        return code

    def redeem_code(
        self, provider: str, code: str, client_id: str, redirect_uri: str | None, verifier: str | None
    ) -> AuthCode:
        """Spend an authorization code, checking client, expiry, redirect URI and PKCE."""
        with self.lock:
            rec = self._codes.get(digest(code))
            if rec is None or rec.provider != provider:
                raise GrantError("unknown")
            if rec.redeemed:
                raise GrantError("redeemed")
            if rec.client_id != client_id:
                raise GrantError("client_mismatch", client_id=client_id)
            if self.now() > rec.expires_at:
                raise GrantError("expired")
            if redirect_uri != rec.redirect_uri:
                raise GrantError("redirect_mismatch", redirect_uri=redirect_uri or "", expected=rec.redirect_uri)
            if rec.code_challenge:
                if not verifier:
                    raise GrantError("pkce_missing")
                computed = pkce_s256(verifier) if rec.code_challenge_method == "S256" else verifier
                if not hmac.compare_digest(computed.encode(), rec.code_challenge.encode()):
                    raise GrantError("pkce_mismatch")
            rec.redeemed = True
            self._changed()
            return rec

    # --------------------------------------------------------------- grants
    def create_grant(self, provider: str, tenant: str, client_id: str, email: str, scopes: Sequence[str]) -> Grant:
        """Start a refresh-token family after an interactive sign-in."""
        grant = Grant(
            grant_id=uuid.uuid4().hex,
            provider=provider,
            tenant=tenant,
            client_id=client_id,
            email=email,
            scopes=list(scopes),
            created_at=self.now(),
        )
        with self.lock:
            self._grants[grant.grant_id] = grant
            self._changed()
        return grant

    def refresh_deadline(self, grant: Grant) -> float | None:
        """When a grant's refresh tokens die whatever their use (a Google client in Testing), else None."""
        client = self._clients.get(grant.client_id)
        if client is None or not client.testing:
            return None
        return grant.created_at + self.settings.testing_refresh_lifetime

    def issue_refresh_token(self, grant: Grant) -> str:
        """Add a refresh token to a grant."""
        raw = secrets.token_urlsafe(64)
        now = self.now()
        with self.lock:
            self._refresh[digest(raw)] = RefreshToken(grant.grant_id, issued_at=now, last_used=now)
            self._changed()
        return raw

    def refresh(
        self,
        provider: str,
        raw: str,
        client_id: str,
        *,
        reissue: bool,
        check: Callable[[Grant], None] | None = None,
    ) -> tuple[Grant, str | None]:
        """Spend a refresh token; return its grant and, when ``reissue``, a new refresh token.

        ``check`` may veto the request (by raising) after the token is found valid but before
        anything is spent, e.g. for a scope the person never consented to.

        With rotation on, the presented token stops working once a successor is issued; if it
        comes back later and reuse detection is on, the whole family is revoked (OAuth 2.0
        Security BCP 4.14). With rotation off, a reissued token leaves the old one valid, which
        is how Entra behaves.
        """
        with self.lock:
            rec = self._refresh.get(digest(raw))
            if rec is None:
                raise GrantError("unknown")
            grant = self._grants[rec.grant_id]
            if grant.provider != provider:
                raise GrantError("unknown")
            if grant.client_id != client_id:
                raise GrantError("client_mismatch", client_id=client_id)
            info = {"issued": _iso(grant.created_at), "client_id": client_id}
            user = self.user(provider, grant.email)
            if grant.revoked or user is None:
                valid_from = user.tokens_valid_from if user else self.now()
                raise GrantError("revoked", cause=grant.revoked or "admin", valid_from=_iso(valid_from), **info)
            if user.disabled:
                raise GrantError("user_disabled", **info)
            if grant.created_at < user.tokens_valid_from:
                raise GrantError("revoked", cause="password", valid_from=_iso(user.tokens_valid_from), **info)
            if rec.status in ("expired", "revoked"):
                raise GrantError(rec.status, **info)
            now = self.now()
            ends = self.refresh_deadline(grant)
            if ends is not None and now >= ends:
                rec.status = "expired"
                self._changed()
                raise GrantError("expired", **info)
            idle_limit = self.settings.refresh_idle_lifetime.get(provider)
            if idle_limit is not None and now - rec.last_used > idle_limit:
                rec.status = "expired"
                self._changed()
                raise GrantError("idle", idle=_duration(now - rec.last_used), **info)
            if rec.status == "rotated":
                if self.settings.reuse_detection:
                    self._revoke_grants([grant], "reused")
                    raise GrantError("reused", **info)
                raise GrantError("rotated", **info)
            if check is not None:
                check(grant)
            rec.last_used = now
            new = None
            if reissue:
                if self.settings.rotation.get(provider, False):
                    rec.status = "rotated"
                new = self.issue_refresh_token(grant)
            self._changed()
            return grant, new

    def issue_access_token(
        self,
        *,
        kind: str,
        provider: str,
        client_id: str,
        email: str | None,
        scopes: Sequence[str],
        tenant: str = "",
        grant_id: str | None = None,
    ) -> tuple[str, AccessToken]:
        """Mint an opaque access token living ``settings.token_lifetime`` seconds."""
        raw = secrets.token_urlsafe(48)
        now = self.now()
        rec = AccessToken(
            kind=kind,
            provider=provider,
            client_id=client_id,
            email=email,
            scopes=list(scopes),
            tenant=tenant,
            issued_at=now,
            expires_at=now + self.settings.token_lifetime,
            grant_id=grant_id,
        )
        with self.lock:
            self._access[digest(raw)] = rec
            self._prune()
            self._changed()
        return raw, rec

    # --------------------------------------------------------------- device
    def start_device(self, tenant: str, client_id: str, scopes: Sequence[str]) -> tuple[str, DeviceAuth]:
        """Begin a device authorization; returns the device code and its record."""
        raw = secrets.token_urlsafe(48)
        now = self.now()
        with self.lock:
            taken = {d.user_code for d in self._devices.values()}
            user_code = _user_code()
            while user_code in taken:
                user_code = _user_code()
            rec = DeviceAuth(
                user_code=user_code,
                tenant=tenant,
                client_id=client_id,
                scopes=list(scopes),
                created=now,
                expires_at=now + self.settings.device_expires_in,
                interval=self.settings.device_interval,
            )
            self._devices[digest(raw)] = rec
            self._changed()
        return raw, rec

    def _device_by_user_code(self, user_code: str) -> DeviceAuth:
        wanted = "".join(ch for ch in user_code.upper() if ch.isalnum())
        for rec in self._devices.values():
            if rec.user_code == wanted:
                if rec.status != "pending" or self.now() >= rec.expires_at:
                    raise KeyError(f"user code {user_code!r} is no longer pending")
                return rec
        raise KeyError(f"unknown user code {user_code!r}")

    def device_pending(self, user_code: str) -> DeviceAuth:
        """The pending device authorization a user code names (KeyError if none)."""
        with self.lock:
            return self._device_by_user_code(user_code)

    def approve_device(self, user_code: str, email: str) -> None:
        """Approve a device code as ``email`` (who must exist as a Microsoft user)."""
        with self.lock:
            rec = self._device_by_user_code(user_code)
            user = self.user("microsoft", email)
            if user is None:
                raise KeyError(f"unknown user {email!r}")
            rec.status, rec.email = "approved", user.email
            self._changed()

    def deny_device(self, user_code: str) -> None:
        """Decline a device code, as a person pressing "Deny" would."""
        with self.lock:
            self._device_by_user_code(user_code).status = "denied"
            self._changed()

    def poll_device(self, raw: str, client_id: str) -> DeviceAuth:
        """One token-endpoint poll; returns the approved record once, else raises the RFC 8628 state."""
        with self.lock:
            rec = self._devices.get(digest(raw))
            if rec is None:
                raise GrantError("unknown")
            if rec.client_id != client_id:
                raise GrantError("client_mismatch", client_id=client_id)
            now = self.now()
            if rec.status == "redeemed":
                raise GrantError("redeemed")
            if now >= rec.expires_at:
                raise GrantError("device_expired")
            if rec.status == "denied":
                raise GrantError("declined")
            if rec.status == "approved":
                rec.status = "redeemed"
                self._changed()
                return rec
            last, rec.last_poll = rec.last_poll, now
            if last is not None and now - last < rec.interval * self.settings.device_slow_down_factor:
                rec.interval += 5
                raise GrantError("slow_down")
            raise GrantError("pending")

    # ----------------------------------------------------------- inspection
    def token_info(self, access_token: str) -> dict[str, Any] | None:
        """What an access token is (and whether it is still good), or None if never issued."""
        with self.lock:
            rec = self._access.get(digest(access_token))
            return self._info(rec) if rec else None

    def _info(self, rec: AccessToken) -> dict[str, Any]:
        now = self.now()
        expired = now >= rec.expires_at
        return {
            "active": not expired and not rec.revoked,
            "token_id": rec.token_id,
            "kind": rec.kind,
            "provider": rec.provider,
            "client_id": rec.client_id,
            "email": rec.email,
            "scope": " ".join(rec.scopes),
            "tenant": rec.tenant,
            "issued_at": rec.issued_at,
            "expires_at": rec.expires_at,
            "expired": expired,
            "revoked": rec.revoked,
            "grant_id": rec.grant_id,
        }

    @property
    def issued_tokens(self) -> list[dict[str, Any]]:
        """Every access token issued (as :meth:`token_info` dicts; the tokens themselves are not kept)."""
        with self.lock:
            return [self._info(rec) for rec in self._access.values()]

    def introspect(self, access_token: str) -> dict[str, Any]:
        """RFC 7662 answer shaped for Dovecot's ``passdb oauth2`` (email, active)."""
        with self.lock:
            rec = self._access.get(digest(access_token))
            if rec is None or rec.revoked or self.now() >= rec.expires_at:
                return {"active": False}
            email = rec.email
            if rec.kind == "app":
                client = self._clients.get(rec.client_id)
                email = client.mailboxes[0] if client and len(client.mailboxes) == 1 else None
            answer: dict[str, Any] = {
                "active": True,
                "scope": " ".join(rec.scopes),
                "client_id": rec.client_id,
                "token_type": "Bearer",
                "exp": int(rec.expires_at),
                "iat": int(rec.issued_at),
                "sub": email or rec.client_id,
            }
            if email:
                answer["email"] = answer["username"] = email
            return answer

    # ------------------------------------------------------------ revocation
    def revoke_grant(self, target: str, *, revoke_access_tokens: bool = False) -> int:
        """Revoke by user e-mail (all their grants, like "revoke sessions") or by refresh token.

        Access tokens stay valid until expiry, as with the real services, unless
        ``revoke_access_tokens``. Returns the number of grants revoked.
        """
        with self.lock:
            users = self._users_by_email(target) if "@" in target else []
            if users:
                grants = self._revoke_users(users, "admin")
            else:
                rec = self._refresh.get(digest(target))
                grants = [self._grants[rec.grant_id]] if rec else []
                self._revoke_grants(grants, "admin")
            if revoke_access_tokens:
                ids = {g.grant_id for g in grants}
                emails = {u.email.lower() for u in users}
                for at in self._access.values():
                    if at.grant_id in ids or (at.email and at.email.lower() in emails):
                        at.revoked = True
            self._changed()
            return len(grants)

    def revoke_token(self, token: str) -> bool:
        """Google's /revoke: a refresh token or an access token; both end the grant behind them."""
        with self.lock:
            key = digest(token)
            grant_id: str | None = None
            if key in self._refresh:
                grant_id = self._refresh[key].grant_id
            elif key in self._access:
                self._access[key].revoked = True
                grant_id = self._access[key].grant_id
            else:
                return False
            if grant_id:
                grant = self._grants[grant_id]
                self._revoke_grants([grant], "admin")
                self._consented.discard((grant.client_id, grant.email.lower()))
            self._changed()
            return True

    def expire_all_refresh_tokens(self) -> int:
        """Make every live refresh token expired (Entra answers AADSTS70008); returns how many."""
        with self.lock:
            live = [r for r in self._refresh.values() if r.status == "active"]
            for rec in live:
                rec.status = "expired"
            self._changed()
            return len(live)

    def _users_by_email(self, email: str) -> list[User]:
        return [u for (_, key), u in self._users.items() if key == email.lower()]

    def _revoke_users(self, users: list[User], cause: str) -> list[Grant]:
        now = self.now()
        emails = {u.email.lower() for u in users}
        for user in users:
            user.tokens_valid_from = now
        grants = [g for g in self._grants.values() if g.email.lower() in emails and not g.revoked]
        self._revoke_grants(grants, cause)
        return grants

    def _revoke_grants(self, grants: Iterable[Grant], cause: str) -> None:
        ids = set()
        for grant in grants:
            grant.revoked = grant.revoked or cause
            ids.add(grant.grant_id)
        for rec in self._refresh.values():
            if rec.grant_id in ids and rec.status in ("active", "rotated"):
                rec.status = "revoked"
        self._changed()

    # -------------------------------------------------------------- hygiene
    def _prune_logins(self) -> None:
        cutoff = self.now() - self.settings.login_lifetime
        for txn in [t for t, r in self._logins.items() if r.created < cutoff]:
            del self._logins[txn]

    def _prune(self) -> None:
        """Every 1024 access tokens, forget tokens, codes and device codes a day past expiry,
        so a long benchmark run does not grow without bound."""
        if len(self._access) % 1024:
            return
        cutoff = self.now() - DAY
        for store in (self._access, self._codes, self._devices):
            for key in [k for k, r in store.items() if r.expires_at < cutoff]:
                del store[key]

    # ---------------------------------------------------------- persistence
    def snapshot(self) -> dict[str, Any]:
        """Everything needed to survive a restart, as JSON-able data (tokens only as digests)."""
        with self.lock:
            return {
                "version": 1,
                "offset": self._offset,
                "settings": dataclasses.asdict(self.settings),
                "clients": [dataclasses.asdict(c) for c in self._clients.values()],
                "users": [dataclasses.asdict(u) for u in self._users.values()],
                "service_accounts": [dataclasses.asdict(s) for s in self._service_accounts.values()],
                "codes": {k: dataclasses.asdict(v) for k, v in self._codes.items()},
                "grants": [dataclasses.asdict(g) for g in self._grants.values()],
                "refresh": {k: dataclasses.asdict(v) for k, v in self._refresh.items()},
                "access": {k: dataclasses.asdict(v) for k, v in self._access.items()},
                "devices": {k: dataclasses.asdict(v) for k, v in self._devices.items()},
                "consented": sorted(list(pair) for pair in self._consented),
                "tenants": list(self._tenants),
            }

    def restore(self, data: dict[str, Any]) -> None:
        """Load a :meth:`snapshot`, replacing the current contents."""
        with self.lock:
            self._offset = float(data.get("offset", 0.0))
            self.settings = Settings(**data.get("settings", {}))
            self._clients = {c["client_id"]: Client(**c) for c in data.get("clients", [])}
            self._users = {(u["provider"], u["email"].lower()): User(**u) for u in data.get("users", [])}
            self._service_accounts = {s["email"]: ServiceAccount(**s) for s in data.get("service_accounts", [])}
            self._codes = {k: AuthCode(**v) for k, v in data.get("codes", {}).items()}
            self._grants = {g["grant_id"]: Grant(**g) for g in data.get("grants", [])}
            self._refresh = {k: RefreshToken(**v) for k, v in data.get("refresh", {}).items()}
            self._access = {k: AccessToken(**v) for k, v in data.get("access", {}).items()}
            self._devices = {k: DeviceAuth(**v) for k, v in data.get("devices", {}).items()}
            self._consented = {(a, b) for a, b in data.get("consented", [])}
            self._tenants = list(data.get("tenants", []))
            self._changed()


def _check_provider(provider: str) -> None:
    if provider not in PROVIDERS:
        raise ValueError(f"provider must be one of {PROVIDERS}, not {provider!r}")


def _user_code() -> str:
    return "".join(secrets.choice(_USER_CODE_ALPHABET) for _ in range(9))


def _same_loopback(uri: str, registered: str) -> bool:
    """http://localhost:PORT/path matches a registered http://localhost/path (any port)."""
    a, b = urlsplit(uri), urlsplit(registered)
    loopback = {"localhost", "127.0.0.1", "::1"}
    return (
        a.scheme == b.scheme == "http"
        and a.hostname in loopback
        and a.hostname == b.hostname
        and (a.path or "/") == (b.path or "/")
    )


def _iso(ts: float) -> str:
    return time.strftime("%m/%d/%Y %H:%M:%S", time.gmtime(ts))


def _duration(seconds: float) -> str:
    """Entra's d.hh:mm:ss rendering of an idle period."""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{days}.{hours:02d}:{minutes:02d}:{secs:02d}"

"""The refresh engine: one ``step`` per EmailToken reads, acts on what the policies decide, and reports.

A step reads the token's spec, asks whether a refresh is due, talks to the provider, writes
the grant (compare-and-swap) before the consumer Secret, then writes status and Events only
when something changed. It returns how long to wait before the next step. The decisions are
pure functions elsewhere (:mod:`~emailtoken.timing` when, :mod:`~emailtoken.failures` what a
failure means and when to retry, :mod:`~emailtoken.devicecode` the device-code sign-in's next
move, :mod:`~emailtoken.grants` whose grant, :mod:`~emailtoken.report` the status and Events);
the engine carries them out, with :class:`~emailtoken.setbacks.Setbacks` (a failure into the
token's state) and :class:`~emailtoken.deviceflow.DeviceSignIn` (the device-code moves). It
imports neither kopf nor an HTTP library: the API and providers are injected.

What a provider call bought is never thrown away for want of a Secret write: a rotated
refresh token (:class:`Rotation`) and an access token (:class:`Unpublished`) stay in
memory until they are written (or, for the access token, until it expires), and the next
attempt retries the write, not the provider call.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from emailtoken import (
    advisories,
    clientauth,
    conditions,
    control,
    failures,
    grants,
    loginprobe,
    mailhosts,
    routing,
    satokens,
)
from emailtoken.api import Key
from emailtoken.conditions import Condition
from emailtoken.credcache import CredentialSecrets
from emailtoken.deviceflow import DeviceSignIn
from emailtoken.failures import Failure
from emailtoken.fence import Fence, Leadership, NotLeader
from emailtoken.kube import KubeApi, KubeError
from emailtoken.mailhosts import MailHost
from emailtoken.model import EmailTokenSpec, LoginProbe, SpecError, TokenRef, parse_spec
from emailtoken.observe import NullObserver, Observer
from emailtoken.outcomes import ProviderError, TokenSet
from emailtoken.providercalls import ProviderCalls
from emailtoken.providers.base import ClientCredentials, DeviceCodeProvider, Provider
from emailtoken.report import (
    GRANT_DROPPED,
    Findings,
    Links,
    Report,
    after_write,
    announced,
    changed,
    first_authorization,
    is_true,
    known_status,
    refresh_event,
    render_status,
)
from emailtoken.routing import Route
from emailtoken.secretdata import LABEL_TOKEN, Grant, PublishedToken, consumer_secret, read_published
from emailtoken.setbacks import Setbacks
from emailtoken.settings import OperatorConfig
from emailtoken.spending import Spending
from emailtoken.store import (
    GrantReplaced,
    GrantStore,
    NotOurGrant,
    SecretMissing,
    check_owner,
    publish,
    publish_with_status,
    read_secret_key,
)
from emailtoken.timefmt import rfc3339, utcnow
from emailtoken.timing import (
    DEFAULT_KEEPALIVE,
    MIN_REFRESH_INTERVAL,
    Plan,
    attempt_due,
    follow_spec,
    ready_until,
    restored_plan,
    step_delay,
    worth_publishing,
)
from emailtoken.tokenindex import TokenIndex, keeps_watched_copy, secrets_read, watched_copy
from emailtoken.tokenstate import Rotation, StepResult, TokenState, Unpublished, inputs_digest

__all__ = [
    "Engine",
    "EngineConfig",
    "EventSink",
    "ProviderSource",
    "SecretIndex",
]

log = logging.getLogger(__name__)


class EventSink(Protocol):
    """Posts a Kubernetes Event about an EmailToken (:meth:`emailtoken.events.EventPoster.post` in production)."""

    def __call__(self, body: Mapping[str, Any], *, type: str, reason: str, message: str) -> None: ...


class SecretIndex(Protocol):
    """Which Secrets exist, as the operator's Secret watch last listed them."""

    def exists(self, namespace: str, name: str) -> bool | None:
        """Whether the Secret exists; None when that namespace has not been listed yet."""
        ...

    def version(self, namespace: str, name: str) -> str | None:
        """The Secret's resourceVersion as the watch last saw it; None when it has not seen it."""
        ...


class ProviderSource(Protocol):
    """Gives the provider implementation for ``spec.provider``."""

    def for_spec(self, provider: str) -> Provider: ...


@dataclass
class EngineConfig:
    """Operator-wide settings that shape every step."""

    redirect_base_url: str | None = None
    admin_url: str | None = None
    keepalive: timedelta = DEFAULT_KEEPALIVE
    #: no token is refreshed more often than this, whatever lifetime its provider claims
    min_refresh_interval: timedelta = MIN_REFRESH_INTERVAL
    #: what spec.federatedCredential may use: audiences, ambient namespaces, token files (emailtoken.clientauth)
    federation: clientauth.Federation = clientauth.DEFAULTS
    #: threads for blocking provider calls (as many as steps run at once, see Scheduler)
    provider_threads: int = 16
    #: may this replica act: leader election (a :class:`Leadership`, which also fences provider calls
    #: by time and wakes paused steps), or a plain predicate polled every second; None: always
    may_act: Leadership | Callable[[], bool] | None = None
    #: a Refreshed Event for every routine refresh too (otherwise only for refresh-now and spec
    #: changes; status.lastRefreshTime and the metrics show routine ones)
    routine_events: bool = False
    #: seconds a cancelled step (shutdown, lost leadership) waits for its refresh to be persisted
    #: (default: OperatorConfig.stop_grace's; the wiring passes the configured one)
    persist_grace: float = OperatorConfig().stop_grace
    #: how long before a grant's known end the GrantExpiring condition turns True (emailtoken.advisories)
    grant_warning: timedelta = advisories.DEFAULT_WINDOW
    #: mail servers spec.loginProbe may connect to (emailtoken.mailhosts); the installer adds to the defaults
    mail_hosts: tuple[MailHost, ...] = mailhosts.from_args(())


def _api_failure(exc: KubeError, doing: str, kept: str = "") -> Failure:
    """A Kubernetes API error as the failure a step reports (:func:`failures.of_api`)."""
    return failures.of_api(exc.status, getattr(exc, "message", None) or str(exc), doing, kept)


@dataclass
class _Attempt:
    """One refresh attempt: the token, its spec and state, the step's report and time, whether a
    person asked for it (refresh-now); what it was doing when an API call failed (for the message)
    and what it presented."""

    token: TokenRef
    spec: EmailTokenSpec
    st: TokenState
    report: Report
    now: datetime
    force: bool = False
    doing: str = ""
    kept: str = ""
    #: digest of what the provider call presents (set just before it; None: the failure came earlier)
    inputs: str | None = None
    #: the access token to publish together with the step's status (and whether to announce it)
    deferred: tuple[Unpublished, bool] | None = None

    def writing_grant(self, what: str) -> None:
        self.doing = f"writing Secret {self.token.namespace}/{self.token.grant_secret_name} (the grant)"
        self.kept = f"; the new {what} is kept in memory and the write retried"


@dataclass(frozen=True)
class _Rendered:
    """A step's status as rendered (:meth:`Engine._render`), for its write and what follows it."""

    token: TokenRef
    spec: EmailTokenSpec | None
    st: TokenState
    report: Report
    #: the token's body with the status as last known (what the Events are posted about)
    body: Mapping[str, Any]
    status: Mapping[str, Any]
    #: the fields of ``status`` that changed: the status write
    patch: dict[str, Any]


class Engine:
    """Keeps every EmailToken's consumer Secret fresh."""

    def __init__(
        self,
        api: KubeApi,
        providers: ProviderSource,
        *,
        events: EventSink,
        config: EngineConfig | None = None,
        clock: Callable[[], datetime] = utcnow,
        rng: random.Random | None = None,
        observer: Observer | None = None,
        secret_index: SecretIndex | None = None,
    ) -> None:
        self.observer: Observer = observer or NullObserver()
        #: a Secret the watch has listed as absent needs no GET before the first publish
        self.secret_index = secret_index
        self.api = api
        self.providers = providers
        self.events = events
        self.config = config or EngineConfig()
        self.clock = clock
        self.rng = rng or random.Random()
        self.grants = GrantStore(api)
        self._links = Links(self.config.redirect_base_url, self.config.admin_url)
        self.states: dict[Key, TokenState] = {}
        #: which tokens read which Secret: a Secret's watch event finds its tokens without a scan
        #: over every token (quadratic at startup)
        self.index = TokenIndex()
        #: client secrets and keys read once, dropped when the Secret watch reports a change (handlers)
        self.credential_secrets = CredentialSecrets()
        #: consumer Secrets listed before their token's first step (a restart lists both at once):
        #: (namespace, token name) -> (Secret name, what it holds, its resourceVersion); saves a GET each
        self._seen_consumers: dict[Key, tuple[str, PublishedToken | None, str]] = {}
        self._fence = Fence(self.config.may_act)
        self._calls = ProviderCalls(self._fence, self.observer, self.config.provider_threads)
        self._setbacks = Setbacks(self.clock, self.rng)
        self._device_sign_in = DeviceSignIn(self._calls, self._setbacks)
        self._probes = loginprobe.Probes(self.config.mail_hosts)
        self._sa_tokens = satokens.ServiceAccountTokens()
        #: refreshes whose refresh token was presented and whose successor may not be stored yet
        self._spending = Spending(self.config.persist_grace)

    # -- bookkeeping used by the handlers -------------------------------------------------

    def consumer_observed(self, namespace: str, name: str, secret: Mapping[str, Any], *, deleted: bool = False) -> None:
        """The list of the operator's own Secrets delivered a consumer Secret (ours by its label):
        remember it for a token not stepped yet (used only while the Secret watch knows the same
        version of it, see :meth:`_load_published`)."""
        metadata = secret.get("metadata") or {}
        token_name = (metadata.get("labels") or {}).get(LABEL_TOKEN)
        if not token_name:
            return
        key = (namespace, token_name)
        st = self.states.get(key)
        if keeps_watched_copy(deleted, st is not None and st.loaded):
            self._seen_consumers[key] = (name, read_published(secret), str(metadata.get("resourceVersion") or ""))
        else:
            self._seen_consumers.pop(key, None)

    def consumer_version(self, namespace: str, name: str, metadata: Mapping[str, Any], *, deleted: bool) -> None:
        """The Secret watch saw a consumer Secret change or go: a remembered copy of another version
        is stale (the bodies are listed once, not watched), and the token's first step reads it."""
        token_name = (metadata.get("labels") or {}).get(LABEL_TOKEN)
        seen = self._seen_consumers.get((namespace, token_name)) if token_name else None
        if seen is not None and seen[0] == name and (deleted or seen[2] != metadata.get("resourceVersion")):
            del self._seen_consumers[(namespace, token_name)]

    def forget(self, key: Key) -> None:
        """The object is gone: drop everything remembered about it."""
        self._seen_consumers.pop(key, None)
        st = self.states.pop(key, None)
        if st is not None:
            self.index.track(key, st.refs, frozenset())
            self.credential_secrets.track(key, st.credential_refs, frozenset())
        self.observer.forget(key)

    def secret_deleted(self, key: Key, name: str) -> None:
        """Someone deleted the consumer Secret: publish again at the next step."""
        st = self.states.get(key)
        if st is not None and name == st.consumer:
            st.loaded = False
            st.published = None
            st.fingerprint = None

    def nudge(self, key: Key) -> None:
        """A referenced Secret changed: a failing or waiting token should try again now."""
        st = self.states.get(key)
        if st is not None and failures.retry_on_change(st.failures, st.error, st.attempt_at):
            st.attempt_at = self.clock()

    # -- the step ----------------------------------------------------------------------------

    async def step(self, body: Mapping[str, Any]) -> StepResult:
        """Bring one token up to date and report; never raises for a token's own problems.

        A replica whose leadership is not confirmed (see :attr:`EngineConfig.may_act`) does
        nothing at all and waits for it (:meth:`Fence.refused`).
        """
        meta = body.get("metadata") or {}
        try:
            self._fence.enter()
            return await self._step(body)
        except NotLeader as exc:
            return await self._fence.refused(exc)
        except KubeError as exc:
            # An API call outside the places that report their own failures: the same setback as
            # any other (counted, retried, warned), without a traceback; status shows it next step.
            st = self.states.setdefault((meta.get("namespace", ""), meta.get("name", "")), TokenState())
            failure = _api_failure(exc, "acting on the token")
            log.warning("%s/%s: %s", meta.get("namespace"), meta.get("name"), failure.message)
            report, now = Report(), self.clock()
            self._setbacks.fail(st, failure, report, now)
            for type_, reason, message in report.events:
                self.events(body, type=type_, reason=reason, message=message)
            return StepResult(delay=self._delay(st, now))

    async def drain(self, timeout: float) -> None:
        """Wait (up to ``timeout`` seconds) for refreshes that presented a refresh token to store
        its successor: a process about to exit calls this after stopping its steps."""
        await self._spending.drain(timeout)

    def stepped_with(self, key: Key, raw: Mapping[str, Any]) -> bool:
        """Did the token's last step parse an equal spec (valid or not)? (A comparison of two
        dicts: the watch brings the echo of every status write, and digesting each spec cost more.)"""
        st = self.states.get(key)
        return st is not None and st.parsed is not None and st.parsed[0] == raw

    @staticmethod
    def _spec(raw: Mapping[str, Any], token: TokenRef, st: TokenState) -> EmailTokenSpec:
        """The parsed spec: the one parsed last time when the body holds an equal spec (a spec
        that failed raises the same complaint again, without parsing)."""
        if st.parsed is not None and st.parsed[0] == raw:
            parsed = st.parsed[1]
            if isinstance(parsed, str):
                raise SpecError(parsed)
            return parsed
        try:
            spec = parse_spec(raw, token.name)
        except SpecError as exc:
            st.parsed = (raw, str(exc))
            raise
        st.parsed = (raw, spec)
        return spec

    async def _step(self, body: Mapping[str, Any]) -> StepResult:
        """Read the spec, load what is published, apply the control annotations, refresh when due, report."""
        meta = body.get("metadata") or {}
        token = TokenRef(meta.get("namespace", ""), meta["name"], meta.get("uid", ""))
        st = self.states.setdefault((token.namespace, token.name), TokenState())
        now = self.clock()
        report = Report()
        status_in: Mapping[str, Any] = body.get("status") or {}
        handled = control.handled(status_in.get("handledAnnotations"), st.handled)

        try:
            spec = self._spec(body.get("spec") or {}, token, st)
        except SpecError as exc:
            st.error = failures.of_spec(str(exc))
            st.fingerprint = None
            self._setbacks.shown(report, st, now)
            await self._finish(self._render(body, token, None, st, report, handled, now))
            return StepResult(delay=None)
        self._track_refs(token, spec, st)
        restored = None
        if not st.loaded or st.published is None:
            stopped = await self._load(body, token, spec, st, report, handled, now)
            if stopped is not None:
                return stopped
            restored = restored_plan(status_in.get("nextRefreshTime"), st.published)
            st.grant_stated = st.grant_stated or advisories.remembered_stated(status_in)

        asked = control.requests(meta.get("annotations") or {}, handled)
        handled = control.recorded(handled, asked)
        await self._reauthorize_if_asked(token, spec, st, asked.reauthorize, report, now)
        force = asked.refresh_now is not None
        announce = announced(force, self._follow_spec(st, spec, now, restored), self.config.routine_events)
        refreshed, attempt = False, None
        if attempt_due(now, st.attempt_at, force=force):
            attempt = _Attempt(token, spec, st, report, now, force)
            refreshed = await self._attempt(attempt, announce=announce)
            now = max(now, self.clock())  # a provider call can take up to its timeout: judge expiry after it
        else:
            self._steady_report(report, st, spec, now)

        if attempt is not None and attempt.deferred is not None:
            refreshed = await self._publish_with_status(body, attempt, handled, now)
        else:
            await self._finish(self._render(body, token, spec, st, report, handled, now))
        return StepResult(delay=self._delay(st, now), refreshed=refreshed)

    @staticmethod
    def _delay(st: TokenState, now: datetime) -> float | None:
        """Seconds to the next step (:func:`~emailtoken.timing.step_delay`)."""
        return step_delay(now, st.attempt_at, ready_until(st.published, st.error is not None))

    def _track_refs(self, token: TokenRef, spec: EmailTokenSpec, st: TokenState) -> None:
        """Index the Secrets this token reads (its Secret events wake it) and its credentials (kept from a GET)."""
        key = (token.namespace, token.name)
        refs, credential_refs = secrets_read(spec, token.grant_secret_name)
        if refs != st.refs:
            self.index.track(key, st.refs, refs)
            st.refs = refs
            self.credential_secrets.track(key, st.credential_refs, credential_refs)
            st.credential_refs = credential_refs
        st.consumer = spec.secret_name

    async def _load(
        self,
        body: Mapping[str, Any],
        token: TokenRef,
        spec: EmailTokenSpec,
        st: TokenState,
        report: Report,
        handled: dict[str, str],
        now: datetime,
    ) -> StepResult | None:
        """Read what the consumer Secret holds; on failure report it and return the step's result."""
        try:
            await self._load_published(token, spec, st)
            return None
        except SecretMissing as exc:  # someone else's Secret has the name: as when publishing (_publish_failed)
            self._setbacks.fail(st, failures.of_conflict(str(exc)), report, now)
        except KubeError as exc:
            doing = f"reading Secret {token.namespace}/{spec.secret_name}"
            self._setbacks.fail(st, _api_failure(exc, doing), report, now)
        await self._finish(self._render(body, token, spec, st, report, handled, now))
        return StepResult(delay=self._delay(st, now))

    async def _reauthorize_if_asked(
        self,
        token: TokenRef,
        spec: EmailTokenSpec,
        st: TokenState,
        value: str | None,
        report: Report,
        now: datetime,
    ) -> None:
        """A new ``emailtoken.io/reauthorize`` value (:func:`control.requests`): drop the grant
        (interactive flows) and start over."""
        if value is None:
            return
        # Remembered now, not only with the status at the end: a step that stops early (no
        # leadership) must not drop a grant signed in since when it runs again.
        st.handled[control.REAUTHORIZE] = value
        if not spec.interactive:
            return
        try:
            await self.grants.drop(token)
        except NotOurGrant as exc:  # told, not counted: the refresh goes on with the grant that is there
            report.events.append(failures.warning(failures.of_conflict(str(exc))))
        except KubeError as exc:
            doing = f"deleting Secret {token.namespace}/{token.grant_secret_name} (the grant)"
            self._setbacks.fail(st, _api_failure(exc, doing), report, now)
        else:
            st.grant_dropped(now)
            report.events.append(GRANT_DROPPED)

    def _follow_spec(self, st: TokenState, spec: EmailTokenSpec, now: datetime, restored: datetime | None) -> bool:
        """Carry out :func:`~emailtoken.timing.follow_spec` (a new spec starts over). Returns whether
        the published token belongs to the current spec."""
        fingerprint = spec.fingerprint()
        follow = follow_spec(
            st.fingerprint, fingerprint, st.published, spec.refresh_before, now, restored=restored, plan=self._plan()
        )
        if follow.start_over_at is not None:
            st.start_over(fingerprint, follow.start_over_at)
        return follow.current

    # -- pieces of a step --------------------------------------------------------------------

    async def _load_published(self, token: TokenRef, spec: EmailTokenSpec, st: TokenState) -> None:
        seen = self._seen_consumers.pop((token.namespace, token.name), None)
        if (
            seen is not None
            and self.secret_index is not None
            and self.secret_index.version(token.namespace, seen[0]) != seen[2]
        ):
            # The bodies were listed once; the Secret watch has since seen another version of the
            # Secret, or none (deleted, or the two lists crossed): read it.
            seen = None
        watched = watched_copy(seen, spec.secret_name)
        if watched is not None:
            st.published, st.consumer_exists, st.loaded = watched, True, True
            return
        if self.secret_index is not None and self.secret_index.exists(token.namespace, spec.secret_name) is False:
            # A new token (or a deleted consumer Secret): publish creates it, and checks the owner
            # of one that appeared since the watch's last word (see store.publish).
            st.published, st.consumer_exists, st.loaded = None, False, True
            return
        secret = await self.api.get_secret(token.namespace, spec.secret_name)
        check_owner(secret, token.namespace, spec.secret_name, token.name)
        st.published = read_published(secret)
        st.consumer_exists = secret is not None
        st.loaded = True

    def _plan(self) -> Plan:
        """The operator's refresh plan (:class:`~emailtoken.timing.Plan`) from its settings."""
        return Plan(self.config.keepalive, self.config.min_refresh_interval, self.rng)

    async def _credentials(self, token: TokenRef, spec: EmailTokenSpec) -> ClientCredentials:
        if spec.federated_credential is not None:  # no secret at all: a ServiceAccount token (emailtoken.satokens)
            fed, sa_tokens = self.config.federation, self._sa_tokens
            assertion = await satokens.assertion(fed, sa_tokens, self.api, token.namespace, spec.federated_credential)
            return ClientCredentials(client_assertion=assertion)
        secret = None
        if spec.client_secret_ref is not None:
            secret = await read_secret_key(self.api, token.namespace, spec.client_secret_ref, self.credential_secrets)
        info = None
        if spec.service_account_key_ref is not None:
            ref = spec.service_account_key_ref
            raw = await read_secret_key(self.api, token.namespace, ref, self.credential_secrets)
            try:
                info = clientauth.service_account_key(raw, f"Secret {token.namespace}/{ref.name} key {ref.key!r}")
            except ValueError as exc:
                raise SecretMissing(str(exc)) from None
        return ClientCredentials(client_secret=secret, service_account_info=info)

    async def _attempt(self, a: _Attempt, *, announce: bool) -> bool:
        """One refresh: store what an earlier attempt could not, else ask the provider; then publish
        (with the step's status, :meth:`_publish_with_status`, unless a login probe runs in between)."""
        if not await self._acquire(a):
            return False
        held = a.st.unpublished
        assert held is not None  # every path that got here obtained or kept one
        if a.spec.login_probe is None:
            a.deferred = (held, announce)
            return True
        if not await self._publish_held(a, held):
            return False
        self._published(a, held, announce=announce)
        a.st.login = await self._probe(a.token, a.spec.login_probe, held)
        return True

    async def _probe(self, token: TokenRef, probe: LoginProbe, held: Unpublished) -> Condition:
        """Log in to the mail server with the token just published (spec.loginProbe): an allowed host
        only, in a thread of its own, waited for a bounded time, one at a time per namespace
        (:class:`loginprobe.Probes`), so that one tenant's mail servers cannot hold the others' probes."""
        result = held.result
        return await self._probes.login(
            probe, result.access_token, held.username, result.scope, result.expires_at, namespace=token.namespace
        )

    async def _acquire(self, a: _Attempt) -> bool:
        """An access token into ``st.unpublished`` (kept from before, or from the provider); every
        failure is reported here and returns False."""
        token, spec, st, report, now = a.token, a.spec, a.st, a.report, a.now
        a.writing_grant("refresh token")
        try:
            grant = await self._persist(token, st) if st.rotation is not None else None  # first: the Secret's is spent
            return self._held(st, spec, now) is not None or await self._obtain(a, grant)
        except ProviderError as exc:
            self._setbacks.refused(st, failures.of_provider(exc), a.inputs, report, now)
        except NotOurGrant as exc:
            self._setbacks.fail(st, failures.of_conflict(str(exc)), report, now)
        except SecretMissing as exc:
            self._setbacks.fail(st, failures.of_conflict(str(exc), "SecretNotFound"), report, now)
        except GrantReplaced as exc:
            log.info("%s: the grant changed during the refresh (%s); using what is there now", token, exc)
            st.grant_replaced(now)
            self._steady_report(report, st, spec, now)
        except KubeError as exc:
            self._setbacks.fail(st, _api_failure(exc, a.doing, a.kept), report, now)
        return False

    async def _publish_held(self, a: _Attempt, held: Unpublished) -> bool:
        """Write the consumer Secret; a failure is reported and the token stays held for the next attempt."""
        try:
            await publish(self.api, a.token.namespace, self._consumer_secret(a, held), exists=a.st.consumer_exists)
        except (SecretMissing, KubeError) as exc:
            self._publish_failed(a, exc)
            return False
        a.st.consumer_exists = True
        return True

    def _publish_failed(self, a: _Attempt, exc: SecretMissing | KubeError) -> None:
        """The consumer Secret was not written: reported; the access token stays held for the next attempt."""
        st = a.st
        if isinstance(exc, SecretMissing):  # someone else's Secret took the name since the step looked
            st.loaded, st.published = False, None
            self._setbacks.fail(st, failures.of_conflict(str(exc)), a.report, a.now)
            return
        doing = f"writing Secret {a.token.namespace}/{a.spec.secret_name}"
        kept = "; the new access token is kept and published once the write succeeds"
        self._setbacks.fail(st, _api_failure(exc, doing, kept), a.report, a.now)

    async def _publish_with_status(
        self, body: Mapping[str, Any], a: _Attempt, handled: dict[str, str], now: datetime
    ) -> bool:
        """Publish the held access token and write the status that reports it in one hand-off to a
        thread (every routine refresh: two writes, one wake-up). The state and report are moved on
        as if the Secret write landed, the status rendered from them, and both put back when it did
        not; that failure is then reported as :meth:`_publish_held` does, with a status write of its own."""
        assert a.deferred is not None
        (held, announce), st, report = a.deferred, a.st, a.report
        saved, told = st.undo_point(), report.copy()
        self._published(a, held, announce=announce)
        shown = self._render(body, a.token, a.spec, st, report, handled, now)
        try:
            secret = self._consumer_secret(a, held)
            error = await publish_with_status(
                self.api, a.token.namespace, secret, a.token.name, shown.patch, exists=st.consumer_exists
            )
        except (SecretMissing, KubeError) as exc:
            st.undo(saved)
            vars(report).update(vars(told))
            self._publish_failed(a, exc)
            await self._finish(self._render(body, a.token, a.spec, st, report, handled, now))
            return False
        except BaseException:  # cancelled (a stop), or a bug: the held token stays held, as before the write
            st.undo(saved)
            vars(report).update(vars(told))
            raise
        st.consumer_exists = True
        self._reported(shown, error)
        return True

    def _published(self, a: _Attempt, held: Unpublished, *, announce: bool) -> None:
        """The consumer Secret holds the new token: the state starts over, plan the next refresh, report."""
        spec, st, report, now = a.spec, a.st, a.report, a.now
        result, username, obtained = held.result, held.username, held.obtained_at
        first = first_authorization(st.published, st.error, st.failures)
        published = PublishedToken(
            expires_at=result.expires_at,
            obtained_at=obtained,
            username=username,
            scope=result.scope or spec.scope_string,
            spec_hash=spec.fingerprint(),
        )
        st.recovered(published, self._plan().refresh_at(published, spec.refresh_before, now))
        event = refresh_event(spec.provider, username, result.expires_at, st.attempt_at, first=first, announce=announce)
        if event is not None:
            report.events.append(event)
        self._steady_report(report, st, spec, now)
        report.fields["lastRefreshTime"] = rfc3339(obtained)
        report.outcome = "ok"

    async def _obtain(self, a: _Attempt, grant: Grant | None) -> bool:
        """Ask the provider for an access token into ``st.unpublished`` (a rotated refresh token is
        stored on the way), the way :func:`routing.route` says; False when there is nothing to ask
        with, already reported."""
        token, spec = a.token, a.spec
        provider = self.providers.for_spec(spec.provider)
        federated = spec.federated_credential is not None and spec.federated_credential.service_account_name
        a.doing, a.kept = ("requesting a ServiceAccount token" if federated else "reading Secrets"), ""
        creds = await self._credentials(token, spec)
        if routing.needs_grant(spec):
            a.doing = f"reading Secret {token.namespace}/{token.grant_secret_name} (the grant)"
            grant = grant or await self.grants.load(token)
        way = routing.route(spec, grant)
        if way is Route.APP_ONLY:
            return await self._app_token(a, provider, creds)
        if way is Route.AWAIT_SIGN_IN:
            self._setbacks.awaiting(token, spec, a.st, a.report, a.now)
            return False
        if way is Route.DEVICE_CODE:
            device_provider: DeviceCodeProvider = provider  # type: ignore[assignment]
            signed_in = await self._device_sign_in.step(spec, a.st, creds, device_provider, a.report, a.now)
            if signed_in is None:
                return False
            await self._store_sign_in(a, *signed_in)
            return True
        assert grant is not None  # Route.PRESENT
        return await self._present(a, provider, creds, grant)

    async def _app_token(self, a: _Attempt, provider: Provider, creds: ClientCredentials) -> bool:
        """An app-only flow: the client's credentials alone get an access token (no grant)."""
        a.inputs = inputs_digest(creds, None)
        if self._setbacks.held_back(a.st, a.inputs, a.report, a.now, force=a.force):
            return False
        result = await self._calls.run(a.spec, "app_token", provider.acquire_app_token, a.spec, creds)
        self._hold(a, None, result)
        return True

    async def _present(self, a: _Attempt, provider: Provider, creds: ClientCredentials, grant: Grant) -> bool:
        """Present the grant's refresh token, unless it may not be (:func:`failures.unpresentable`) or
        would repeat a refused attempt (:meth:`Setbacks.held_back`)."""
        refused = failures.unpresentable(a.spec, grant)
        if refused is not None:
            self._setbacks.refused(a.st, refused, None, a.report, a.now)
            return False
        a.inputs = inputs_digest(creds, grant.refresh_token)
        if self._setbacks.held_back(a.st, a.inputs, a.report, a.now, force=a.force):
            return False
        a.writing_grant("refresh token")
        await self._spend(a, provider, creds, grant)
        return True

    def _held(self, st: TokenState, spec: EmailTokenSpec, now: datetime) -> Unpublished | None:
        """The access token an earlier attempt obtained and could not publish, while it is still worth publishing."""
        held = st.unpublished
        if held is not None and not worth_publishing(held.fingerprint, held.result.expires_at, spec.fingerprint(), now):
            st.unpublished = held = None  # issued for another spec, or expired: ask again
        return held

    async def _spend(self, a: _Attempt, provider: Provider, creds: ClientCredentials, grant: Grant) -> None:
        """Present the grant's refresh token and keep what comes back, as one unit that a
        cancelled step still lets finish (:class:`~emailtoken.spending.Spending`)."""
        await self._spending.run(a.token, self._redeem(a, provider, creds, grant))

    async def _redeem(self, a: _Attempt, provider: Provider, creds: ClientCredentials, grant: Grant) -> None:
        spec, st, now = a.spec, a.st, a.now
        result: TokenSet = await self._calls.run(spec, "refresh", provider.refresh, spec, creds, grant.refresh_token)
        self._hold(a, grant, result)
        st.grant_stated = advisories.stated_end(result, grant)
        successor = grants.successor(grant, spec, result, now)
        if successor is not None:
            st.rotation = Rotation(successor=successor, spent=grant)
            await self._persist(a.token, st)

    async def _persist(self, token: TokenRef, st: TokenState) -> Grant:
        """Write the pending rotation (compare-and-swap); the saved grant carries its new resourceVersion."""
        rotation = st.rotation
        assert rotation is not None
        if rotation.spent is None:
            saved = await self.grants.save_new(token, rotation.successor)
        else:
            saved = await self.grants.save_successor(token, rotation.spent, rotation.successor)
        st.rotation = None
        return saved

    # -- the device authorization grant --------------------------------------------------------

    @staticmethod
    def _hold(a: _Attempt, grant: Grant | None, result: TokenSet) -> None:
        """Keep an access token to publish, under the account the consumer Secret names."""
        username = grants.published_account(a.spec, grant, result)
        a.st.unpublished = Unpublished(result, a.now, username, a.spec.fingerprint())

    async def _store_sign_in(self, a: _Attempt, grant: Grant, result: TokenSet) -> None:
        """An approved device-code sign-in: hold its access token and store its grant first."""
        self._hold(a, grant, result)
        a.st.rotation = Rotation(successor=grant, spent=None)
        a.writing_grant("grant")
        await self._persist(a.token, a.st)

    # -- writing and reporting -------------------------------------------------------------------

    @staticmethod
    def _consumer_secret(a: _Attempt, held: Unpublished) -> dict[str, Any]:
        """The consumer Secret that publishes ``held`` (:func:`emailtoken.secretdata.consumer_secret`)."""
        result, spec = held.result, a.spec
        return consumer_secret(
            a.token,
            spec.secret_name,
            access_token=result.access_token,
            token_type=result.token_type or "Bearer",
            expires_at=result.expires_at,
            obtained_at=held.obtained_at,
            username=held.username,
            scope=result.scope or spec.scope_string,
            spec_hash=spec.fingerprint(),
        )

    def _steady_report(self, report: Report, st: TokenState, spec: EmailTokenSpec, now: datetime) -> None:
        report.standing(st.error, st.published, spec.provider, token_valid=st.valid_at(now))

    async def _finish(self, shown: _Rendered) -> None:
        """Write what changed of the rendered status (:meth:`_render`), update the metrics, post Events."""
        error = None
        if shown.patch:
            try:
                await self.api.patch_token_status(shown.token.namespace, shown.token.name, shown.patch)
            except KubeError as exc:
                error = exc
        self._reported(shown, error)

    def _render(
        self,
        body: Mapping[str, Any],
        token: TokenRef,
        spec: EmailTokenSpec | None,
        st: TokenState,
        report: Report,
        handled: dict[str, str],
        now: datetime,
    ) -> _Rendered:
        """The status to show (pure, :mod:`emailtoken.report`) and the patch of what changed."""
        if handled:
            st.handled = dict(handled)
        found = Findings(st.published, st.attempt_at, st.error, st.failures, st.device, handled)
        shown = {**body, "status": known_status(body, st.status_written)}
        if spec is not None:
            self._advise(token, spec, st, report, shown["status"], now)
        status = render_status(shown, token, spec, found, report, self._links, now)
        return _Rendered(token, spec, st, report, shown, status, changed(status, shown["status"]))

    def _reported(self, r: _Rendered, error: KubeError | None) -> None:
        """After the status write (``error``: it failed): remember what was written, update the metrics, post Events."""
        if error is not None:
            log.warning("could not write status of %s: %s", r.token, f"HTTP {error.status}" if error.status else error)
        elif r.patch:
            r.st.status_written = after_write(r.body, r.st.status_written, r.patch)
        provider_name = r.spec.provider if r.spec is not None else str((r.body.get("spec") or {}).get("provider", ""))
        self._observe(r.token, provider_name, r.st, r.report, r.status)
        for type_, reason, message in r.report.events:
            self.events(r.body, type=type_, reason=reason, message=message)

    def _observe(
        self, token: TokenRef, provider: str, st: TokenState, report: Report, status: Mapping[str, Any]
    ) -> None:
        key = (token.namespace, token.name)
        if report.outcome is not None:
            self.observer.refresh_attempt(key, provider, report.outcome)
        pub = st.published
        self.observer.token_state(
            key,
            provider=provider,
            ready=is_true(conditions.get(status["conditions"], conditions.READY)),
            authorized=is_true(conditions.get(status["conditions"], conditions.AUTHORIZED)),
            expires_at=pub.expires_at if pub is not None else None,
            next_refresh=st.attempt_at,
            reauthorize_by=advisories.deadline_of(status),
        )

    def _advise(
        self,
        token: TokenRef,
        spec: EmailTokenSpec,
        st: TokenState,
        report: Report,
        status: Mapping[str, Any],
        now: datetime,
    ) -> None:
        """Warnings ahead of a known end (a grant's stated or unused limit, a retiring service): pure policy."""
        last_used = st.published.obtained_at if st.published is not None else None
        limit = advisories.grant_limit(spec.provider, st.grant_stated, last_used)
        usable = failures.grant_usable(st.error)
        window = self.config.grant_warning
        advice = advisories.advise(
            spec, str(token), limit, grant_usable=usable, status=status, warned=st.warned, now=now, window=window
        )
        report.advisories.extend(advice.conditions)
        report.events.extend(advice.events)
        report.fields.update(advice.fields)
        st.warned = advice.warned
        shown, events = loginprobe.advise(spec.login_probe is not None, st.login, status)
        report.advisories.extend(shown)
        report.events.extend(events)

"""Every way a step can fail, as one value, and what follows from it: the retry time and the Event.

Pure policy (no I/O, no clock; randomness comes in through ``rng``). The engine catches each
concern's own exception precisely (:class:`~emailtoken.outcomes.ProviderError`,
:class:`~emailtoken.model.SpecError`, the store's conflicts, ``KubeError``), turns it into a
:class:`Failure` here, asks :func:`after` what to do, and does it. Messages are shown in status
and Events, so they never carry a secret value.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from emailtoken import grants, signinrule
from emailtoken.model import EmailTokenSpec, TokenRef
from emailtoken.outcomes import REASONS, ErrorKind, ProviderError, TokenSet
from emailtoken.secretdata import Grant
from emailtoken.timing import backoff, invalid_client_backoff

#: The API refused a call (RBAC): nothing announces the fix (Roles are not watched), so retry
#: soon and often enough that tokens recover within seconds of the permission coming back.
PERMISSION_RETRY_BASE = timedelta(seconds=2)
PERMISSION_RETRY_CAP = timedelta(seconds=15)
#: While a spec (or a Secret it names) is unusable nothing can succeed; look again now and then
#: in case a watch was missed.
BAD_CONFIG_RETRY = timedelta(minutes=10)


@dataclass(frozen=True)
class Failure:
    """Why a token is not (or no longer) refreshed, as status shows it: ``reason`` is the condition reason."""

    kind: ErrorKind
    message: str
    reason: str = ""
    retry_after: float | None = None

    def __post_init__(self) -> None:
        if not self.reason:
            object.__setattr__(self, "reason", REASONS[self.kind])


@dataclass(frozen=True)
class Verdict:
    """What a failure decides: when to try again (None: once a person acts) and the Warning Event, if due."""

    retry_at: datetime | None
    event: tuple[str, str, str] | None


def of_provider(exc: ProviderError) -> Failure:
    """A provider's refusal or outage, as reported."""
    return Failure(exc.kind, exc.message, exc.reason, exc.retry_after)


def of_spec(message: str) -> Failure:
    """A spec that does not parse (the CRD's rules let it through): wait for a new one."""
    return Failure(ErrorKind.BAD_CONFIG, message, "InvalidSpec")


def of_conflict(message: str, reason: str = "SecretConflict") -> Failure:
    """A Secret the token needs is someone else's (SecretConflict) or missing (SecretNotFound)."""
    return Failure(ErrorKind.BAD_CONFIG, message, reason)


def of_api(status: int, words: str, doing: str, kept: str = "") -> Failure:
    """A Kubernetes API error (``status`` 0: no answer) while ``doing`` something.

    A refusal (401/403) gets a reason of its own and the API server's words, which name the
    verb and resource RBAC refused; an outage or a busy server backs off like a provider's.
    Other answers are shown by status only: their bodies may quote what was sent.
    """
    words = words.strip()[:300]
    if status in (401, 403):
        return Failure(
            ErrorKind.PERMISSION_DENIED, f"the Kubernetes API refused {doing}: {words}{kept}", "PermissionDenied"
        )
    if status == 0:
        return Failure(
            ErrorKind.TRANSIENT, f"the Kubernetes API was unreachable while {doing} ({words}){kept}", "APIUnavailable"
        )
    return Failure(ErrorKind.TRANSIENT, f"API error {doing} (HTTP {status}){kept}", "APIUnavailable")


def awaiting(token: TokenRef, spec: EmailTokenSpec) -> Failure:
    """No grant yet: what a person must do (not a failure to back off from)."""
    how = f"run `emailtoken authorize {token}` or use the callback service's admin page"
    if spec.flow == "DeviceCode":
        how = "the device-code sign-in has not started yet"
    return Failure(ErrorKind.REAUTHORIZE, f"no grant yet: {how}", "AwaitingAuthorization")


def unpresentable(spec: EmailTokenSpec, grant: Grant) -> Failure | None:
    """Why the grant may not be presented for this spec (another account, another endpoint), or None."""
    if spec.email_address and not grants.same_account(spec.email_address, grant.account):
        return Failure(
            ErrorKind.REAUTHORIZE,
            f"the grant belongs to {grant.account or 'an unnamed account'}, not {spec.email_address}; "
            "sign in as the mailbox",
            "AccountMismatch",
        )
    moved = grants.endpoint_problem(grant, spec)
    return Failure(ErrorKind.REAUTHORIZE, moved, "EndpointChanged") if moved else None


def device_sign_in(spec: EmailTokenSpec, result: TokenSet) -> Failure | None:
    """Why a device-code sign-in may not become this token's grant (:func:`signinrule.sign_in_problem`,
    the callback's rule too), as the failure the token reports, or None."""
    problem = signinrule.sign_in_problem(spec, result)
    if problem is None:
        return None
    if problem.reason == signinrule.ACCOUNT_MISMATCH:
        return Failure(
            ErrorKind.REAUTHORIZE,
            f"{problem.message}; nothing was stored. Set the emailtoken.io/reauthorize annotation to a new value "
            "and sign in as the mailbox",
            problem.reason,
        )
    return Failure(ErrorKind.BAD_CONFIG, problem.message, problem.reason)


@dataclass(frozen=True)
class Refusal:
    """An attempt the provider refused: a digest of what it presented (None: refused before
    presenting anything) and the earliest retry its failure allows (None: once a person acts)."""

    inputs: str | None
    retry_at: datetime | None


def repeats(refusal: Refusal | None, inputs: str, now: datetime) -> bool:
    """Would an attempt presenting ``inputs`` repeat the refused one before its retry is due?

    Woken by a change to some watched Secret (a nudge, a watch re-list, a tool touching
    labels), an attempt with the very same client secret and refresh token would fail the
    same way: a dead grant would be presented again and again, and Retry-After and the
    backoff would not hold.
    """
    if refusal is None or refusal.inputs != inputs:
        return False
    return refusal.retry_at is None or now < refusal.retry_at


def holds_back(refusal: Refusal | None, error: Failure | None, inputs: str, now: datetime, *, force: bool) -> bool:
    """Does an attempt presenting ``inputs`` wait for the refused one's retry (:func:`repeats`) while
    the token still fails? Only an explicit refresh-now overrides this."""
    return not force and error is not None and repeats(refusal, inputs, now)


def retry_on_change(failures: int, error: Failure | None, attempt_at: datetime | None) -> bool:
    """A Secret the token reads changed: does it try again now? A failing token (the change may be
    the fix) or one waiting for a change (no attempt planned) does; a healthy one keeps its plan."""
    return bool(failures) or error is not None or attempt_at is None


def grant_usable(error: Failure | None) -> bool:
    """Can the grant still be presented, as far as the last step knows (no sign-in required)?"""
    return error is None or error.kind is not ErrorKind.REAUTHORIZE


#: Authorized=False reasons that a new sign-in fixes (the grant itself is refused or is not this
#: token's); any other (a missing client Secret, a wrong client secret) needs a fix first, and a
#: token never signed in is offered its first sign-in, not a re-authorization
SIGN_IN_FIXES = ("ReauthorizationRequired", "AccountMismatch", "EndpointChanged")

#: device-code outcomes after which only a new reauthorize annotation starts over
DEVICE_FINAL = ("AuthorizationDeclined", "DeviceCodeExpired", "AccountMismatch")

DEVICE_EXPIRED = Failure(
    ErrorKind.REAUTHORIZE,
    "the device code expired before anyone signed in; set the "
    "emailtoken.io/reauthorize annotation to a new value for a new code",
    "DeviceCodeExpired",
)


def retry_delay(failure: Failure, failures: int, *, rng: random.Random | None = None) -> timedelta | None:
    """How long after the ``failures``-th failure in a row to try again; None: only once a person acts."""
    kind = failure.kind
    if kind is ErrorKind.TRANSIENT:
        return backoff(failures, retry_after=failure.retry_after, rng=rng)
    if kind is ErrorKind.INVALID_CLIENT:
        return invalid_client_backoff(failures, rng=rng)
    if kind is ErrorKind.BAD_CONFIG:
        return BAD_CONFIG_RETRY
    if kind is ErrorKind.PERMISSION_DENIED:
        return backoff(failures, base=PERMISSION_RETRY_BASE, cap=PERMISSION_RETRY_CAP, rng=rng)
    return None  # a person must act; the grant Secret's change wakes the token


def after(
    failure: Failure,
    failures: int,
    last_warning: tuple[str, str] | None,
    now: datetime,
    *,
    rng: random.Random | None = None,
) -> Verdict:
    """The ``failures``-th failure in a row: when to retry, and a Warning Event when the failure is
    new or its count a power of two (a long outage warns ever more rarely). A bad configuration
    (a Secret conflict, a missing Secret) stands until a person acts: it warns once, until it changes."""
    delay = retry_delay(failure, failures, rng=rng)
    if failure.kind is ErrorKind.BAD_CONFIG:
        return Verdict(now + delay if delay is not None else None, standing_event(failure, last_warning))
    event = None
    if (failure.reason, failure.message) != last_warning or (failures & (failures - 1)) == 0:
        event = warning(failure)
    return Verdict(now + delay if delay is not None else None, event)


def standing_event(failure: Failure, last_warning: tuple[str, str] | None) -> tuple[str, str, str] | None:
    """The Event for a failure that stands without a retry count (no grant yet, a Secret conflict):
    once, until it changes."""
    if (failure.reason, failure.message) == last_warning:
        return None
    if failure.reason == "AwaitingAuthorization":
        return ("Normal", "AwaitingAuthorization", failure.message)
    return warning(failure)


def warning(failure: Failure) -> tuple[str, str, str]:
    """The Warning Event for a failure: one format for all of them."""
    reason = "ReauthorizationRequired" if failure.kind is ErrorKind.REAUTHORIZE else "RefreshFailed"
    return ("Warning", reason, f"{failure.reason}: {failure.message}")

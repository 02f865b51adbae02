"""The device authorization grant (``flow: DeviceCode``), decided one step at a time.

Pure policy (no I/O, no clock): the operator signs in itself, so each step either asks for a
code, polls the provider once, or waits for a person. :func:`next_move` says which;
:func:`issued` is what status and the Event show while the code waits; the engine carries
these out (:class:`~emailtoken.deviceflow.DeviceSignIn`) and :func:`emailtoken.failures.device_sign_in`
judges the approved sign-in.
"""

from __future__ import annotations

import enum
from datetime import datetime, timedelta

from emailtoken.failures import DEVICE_FINAL, Failure
from emailtoken.model import EmailTokenSpec
from emailtoken.outcomes import ErrorKind
from emailtoken.providers.base import DeviceFlow
from emailtoken.timefmt import rfc3339


class Move(enum.Enum):
    """What a device-code step does."""

    #: declined, expired or the wrong account, already reported: only a new reauthorize annotation starts over
    FINISHED = "finished"
    #: no code yet: ask the provider for one
    START = "start"
    #: the code expired before anyone signed in
    EXPIRED = "expired"
    #: ask the provider once whether someone signed in
    POLL = "poll"


def signs_in_itself(spec: EmailTokenSpec) -> bool:
    """Without a grant, does the operator sign in itself (device code) rather than wait for a person?"""
    return spec.flow == "DeviceCode"


def next_move(device: DeviceFlow | None, error: Failure | None, now: datetime) -> Move:
    """The step for a token without a grant, from the code it holds (``device``) and its standing failure."""
    if device is not None and error is not None and error.reason in DEVICE_FINAL:
        return Move.FINISHED
    if device is None:
        return Move.START
    if now >= device.expires_at:
        return Move.EXPIRED
    return Move.POLL


def issued(flow: DeviceFlow) -> Failure:
    """What the token says while the code waits for a person (condition, status and Event message)."""
    message = (
        f"to sign in, open {flow.verification_uri} and enter the code {flow.user_code} "
        f"(expires at {rfc3339(flow.expires_at)})"
    )
    return Failure(ErrorKind.REAUTHORIZE, message, "AwaitingAuthorization")


def poll_at(flow: DeviceFlow, now: datetime) -> datetime:
    """When to ask again: the provider's polling interval (polling faster gets ``slow_down``)."""
    return now + timedelta(seconds=flow.interval)


def approved_event(account: str) -> tuple[str, str, str]:
    """The Event for a completed device-code sign-in."""
    return ("Normal", "DeviceCodeApproved", f"signed in as {account} with the device code")

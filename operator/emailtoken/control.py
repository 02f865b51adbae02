"""The control annotations: which values are requests the operator has not acted on yet.

A person (or ``kubectl emailtoken refresh|reauthorize``) sets ``emailtoken.io/refresh-now`` or
``emailtoken.io/reauthorize`` to a new value; the operator acts once per value and records it
in ``status.handledAnnotations``. Pure (no I/O): the engine carries the requests out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from emailtoken.api import ANNOTATION_REAUTHORIZE, ANNOTATION_REFRESH_NOW

#: keys of status.handledAnnotations
REFRESH_NOW = "refreshNow"
REAUTHORIZE = "reauthorize"


@dataclass(frozen=True)
class Requests:
    """The annotation values not handled yet (None: nothing new)."""

    refresh_now: str | None = None
    reauthorize: str | None = None


def handled(in_status: Mapping[str, str] | None, remembered: Mapping[str, str]) -> dict[str, str]:
    """The values already acted on: status says so, but memory wins (a body may predate our own status write)."""
    return {**(in_status or {}), **remembered}


def requests(annotations: Mapping[str, str], handled: Mapping[str, str]) -> Requests:
    """Which control annotations carry a value not acted on yet."""
    return Requests(
        refresh_now=_new(annotations.get(ANNOTATION_REFRESH_NOW), handled.get(REFRESH_NOW)),
        reauthorize=_new(annotations.get(ANNOTATION_REAUTHORIZE), handled.get(REAUTHORIZE)),
    )


def recorded(handled: Mapping[str, str], asked: Requests) -> dict[str, str]:
    """``handled`` with the new requests marked as acted on."""
    new = {REFRESH_NOW: asked.refresh_now, REAUTHORIZE: asked.reauthorize}
    return {**handled, **{k: v for k, v in new.items() if v is not None}}


def _new(value: str | None, done: str | None) -> str | None:
    return value if value and value != done else None

"""Kubernetes-style conditions (``Ready``, ``Authorized``) for status.

``lastTransitionTime`` only moves when ``status`` flips, as the API conventions ask,
so that `kubectl wait --for=condition=Ready` and kstatus-based tools behave.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from emailtoken.timefmt import rfc3339

READY = "Ready"
AUTHORIZED = "Authorized"
#: Far below the CRD's maxLength (32768): a status the API server refuses would go stale,
#: and the text (provider answers among it) is for people, who read the start.
MAX_MESSAGE = 2048


@dataclass(frozen=True)
class Condition:
    """A condition before it is stamped with times and generation."""

    type: str
    status: bool | None
    reason: str
    message: str

    @property
    def status_text(self) -> str:
        """``True``/``False``/``Unknown`` as the API spells it."""
        return "Unknown" if self.status is None else str(self.status)


def merge(
    previous: Iterable[Mapping[str, Any]] | None,
    updates: Iterable[Condition],
    *,
    now: datetime,
    generation: int | None,
) -> list[dict[str, Any]]:
    """New conditions list: updates applied, others kept, transition times preserved."""
    by_type: dict[str, dict[str, Any]] = {c["type"]: dict(c) for c in (previous or ()) if "type" in c}
    for cond in updates:
        old = by_type.get(cond.type)
        changed = old is None or old.get("status") != cond.status_text
        entry: dict[str, Any] = {
            "type": cond.type,
            "status": cond.status_text,
            "reason": cond.reason,
            "message": cond.message if len(cond.message) <= MAX_MESSAGE else cond.message[: MAX_MESSAGE - 1] + "…",
            "lastTransitionTime": rfc3339(now) if changed else old.get("lastTransitionTime", rfc3339(now)),
        }
        if generation is not None:
            entry["observedGeneration"] = generation
        by_type[cond.type] = entry
    order = {READY: 0, AUTHORIZED: 1}
    return sorted(by_type.values(), key=lambda c: (order.get(c["type"], 9), c["type"]))


def get(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    """The condition of a type, if present."""
    for cond in conditions or ():
        if cond.get("type") == type_:
            return cond
    return None

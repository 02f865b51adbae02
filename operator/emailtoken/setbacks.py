"""Carrying out a failure on a token: count it, schedule the retry, show it, warn once.

No I/O and no policy of its own: :func:`emailtoken.failures.after` and
:func:`~emailtoken.failures.holds_back` decide; :class:`Setbacks` writes their verdict into the
token's :class:`~emailtoken.tokenstate.TokenState` and the step's :class:`~emailtoken.report.Report`.
The refresh step (:mod:`emailtoken.engine`) and the device-code sign-in
(:mod:`emailtoken.deviceflow`) share it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime

from emailtoken import failures
from emailtoken.failures import Failure, Refusal
from emailtoken.model import EmailTokenSpec, TokenRef
from emailtoken.report import Report
from emailtoken.tokenstate import TokenState


class Setbacks:
    """Applies failures to token state; ``clock`` dates a retry after a slow call, not before it."""

    def __init__(self, clock: Callable[[], datetime], rng: random.Random) -> None:
        self._clock = clock
        self._rng = rng

    def fail(self, st: TokenState, failure: Failure, report: Report, now: datetime) -> None:
        """Carry out what :func:`failures.after` decides: count it, schedule the retry, report, warn."""
        now = max(now, self._clock())  # back off from the failure, not from the start of a slow call
        report.outcome = failure.reason
        st.failures += 1
        st.error = failure
        verdict = failures.after(failure, st.failures, st.last_warning, now, rng=self._rng)
        st.attempt_at = verdict.retry_at
        self.shown(report, st, now)
        self.announce(st, report, verdict.event)

    def refused(self, st: TokenState, failure: Failure, inputs: str | None, report: Report, now: datetime) -> None:
        """A refusal of what the attempt presented (``inputs``): fail, and remember it (:meth:`held_back`)."""
        self.fail(st, failure, report, now)
        st.refusal = Refusal(inputs, st.attempt_at)

    def held_back(self, st: TokenState, inputs: str, report: Report, now: datetime, *, force: bool) -> bool:
        """Would this attempt repeat one the provider already refused (:func:`failures.holds_back`)?
        Then wait for its retry instead."""
        if not failures.holds_back(st.refusal, st.error, inputs, now, force=force):
            return False
        assert st.refusal is not None
        st.attempt_at = st.refusal.retry_at
        self.shown(report, st, now)
        return True

    def awaiting(self, token: TokenRef, spec: EmailTokenSpec, st: TokenState, report: Report, now: datetime) -> None:
        """No grant to present: say what a person must do; nothing to retry until the grant Secret appears."""
        st.error = failures.awaiting(token, spec)
        st.attempt_at = None
        st.failures = 0
        self.shown(report, st, now)
        self.announce(st, report, failures.standing_event(st.error, st.last_warning))

    def announce(self, st: TokenState, report: Report, event: tuple[str, str, str] | None) -> None:
        """Post a failure's Event, remembering it so that the same failure does not repeat it."""
        if event is not None and st.error is not None:
            st.last_warning = (st.error.reason, st.error.message)
            report.events.append(event)

    @staticmethod
    def shown(report: Report, st: TokenState, now: datetime) -> None:
        """The standing failure's conditions."""
        assert st.error is not None
        report.failed(st.error, st.published, token_valid=st.valid_at(now))

"""Carrying out the device authorization grant (``flow: DeviceCode``), one step at a time.

The operator signs in itself: :func:`emailtoken.devicecode.next_move` decides whether a step
asks for a code, polls the provider once or waits for a person; :class:`DeviceSignIn` does it
(provider calls through :class:`~emailtoken.providercalls.ProviderCalls`, failures through
:class:`~emailtoken.setbacks.Setbacks`) and hands an approved sign-in back to the engine,
which stores its grant before anything else.
"""

from __future__ import annotations

from datetime import datetime

from emailtoken import devicecode, failures, grants
from emailtoken.devicecode import Move
from emailtoken.model import EmailTokenSpec
from emailtoken.outcomes import TokenSet
from emailtoken.providercalls import ProviderCalls
from emailtoken.providers.base import ClientCredentials, DeviceCodeProvider
from emailtoken.report import Report
from emailtoken.secretdata import Grant
from emailtoken.setbacks import Setbacks
from emailtoken.tokenstate import TokenState


class DeviceSignIn:
    """Drives one token's device-code sign-in; status and an Event show the code."""

    def __init__(self, calls: ProviderCalls, setbacks: Setbacks) -> None:
        self._calls = calls
        self._setbacks = setbacks

    async def step(
        self,
        spec: EmailTokenSpec,
        st: TokenState,
        creds: ClientCredentials,
        provider: DeviceCodeProvider,
        report: Report,
        now: datetime,
    ) -> tuple[Grant, TokenSet] | None:
        """One move of the sign-in; the grant and its first tokens once someone signed in, else None."""
        move = devicecode.next_move(st.device, st.error, now)
        if move is Move.FINISHED:
            self._setbacks.shown(report, st, now)
            st.attempt_at = None  # finished without a grant: the reauthorize annotation starts over
            return None
        if move is Move.START:
            await self._start(spec, st, creds, provider, report, now)
            return None
        if move is Move.EXPIRED:
            self._setbacks.refused(st, failures.DEVICE_EXPIRED, None, report, now)
            return None
        assert st.device is not None
        result = await self._calls.run(spec, "device_poll", provider.poll_device_flow, spec, creds, st.device)
        if result is None:
            st.attempt_at = devicecode.poll_at(st.device, now)
            st.failures = 0
            self._setbacks.shown(report, st, now)
            return None
        refused = failures.device_sign_in(spec, result)
        if refused is not None:
            self._setbacks.refused(st, refused, None, report, now)
            return None
        grant = grants.from_sign_in(spec, result, result.account or "", now)
        st.device, st.error = None, None  # the code is redeemed: never poll it again, whatever happens next
        report.events.append(devicecode.approved_event(grant.account))
        return grant, result

    async def _start(
        self,
        spec: EmailTokenSpec,
        st: TokenState,
        creds: ClientCredentials,
        provider: DeviceCodeProvider,
        report: Report,
        now: datetime,
    ) -> None:
        """Ask for a device code; status and an Event show it until someone signs in."""
        flow = await self._calls.run(spec, "device_start", provider.start_device_flow, spec, creds)
        st.device = flow
        st.error = devicecode.issued(flow)
        st.failures = 0
        self._setbacks.announce(st, report, ("Normal", "DeviceCodeIssued", st.error.message))
        st.attempt_at = devicecode.poll_at(flow, now)
        self._setbacks.shown(report, st, now)

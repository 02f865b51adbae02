"""The device-code flow keeps the one account rule (emailtoken.grants): never empty, compared after casefold.

It used to store a grant when the provider named no account (the callback refused the same
answer) and compared with ``lower()`` where the callback used ``casefold()``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from emailtoken.model import EmailTokenSpec
from emailtoken.outcomes import TokenSet
from emailtoken.providers.base import ClientCredentials, DeviceFlow
from tests.unit.test_engine_writes import GRANT, MAILBOX, NS, DeviceProvider, device_harness


class NamingProvider(DeviceProvider):
    """Approves the device code, naming ``account`` as the one who signed in."""

    account: str | None = None

    def poll_device_flow(self, spec: EmailTokenSpec, creds: ClientCredentials, flow: DeviceFlow) -> TokenSet | None:
        result = super().poll_device_flow(spec, creds, flow)
        assert result is not None
        return replace(result, account=self.account)


async def approved_by(account: str | None) -> Any:
    h = await device_harness()
    provider = NamingProvider(h.clock)
    provider.account = account
    h.provider = provider
    h.engine = h.new_engine()
    await h.step()  # a new engine issues its own code
    h.clock.advance(seconds=5)
    await h.step()
    return h


async def test_an_unnamed_account_stores_no_grant() -> None:
    h = await approved_by(None)
    assert (NS, GRANT) not in h.api.secrets
    assert h.cond("Authorized")["reason"] == "AccountMismatch"
    assert "did not say which account" in h.cond("Authorized")["message"]


async def test_the_account_is_compared_after_casefold() -> None:
    h = await approved_by(MAILBOX.upper())
    assert h.grant_rt() == "device-refresh-token-value-0001"
    assert h.cond("Ready")["status"] == "True"

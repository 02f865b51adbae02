"""ServiceAccount tokens for spec.federatedCredential.serviceAccountName: whose, for what, how long kept.

The TokenRequest call itself runs against the real API server in
tests/cluster/test_federated_credentials.py; here a recording stand-in for that one call
pins the pure rules: only the token's own namespace, only allowed audiences, checked before
any request, cached until shortly before expiry, and what a refusal says.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from emailtoken import clientauth, satokens
from emailtoken.kube import KubeError
from emailtoken.model import FederatedCredential
from emailtoken.outcomes import ErrorKind, ProviderError

ENTRA = "api://AzureADTokenExchange"


class TokenApi:
    """Answers TokenRequests as the API server does (status.token, status.expirationTimestamp)."""

    def __init__(self, clock: list[float], fail: KubeError | None = None) -> None:
        self.clock, self.fail = clock, fail
        self.requests: list[tuple[str, str, str, int]] = []

    async def create_service_account_token(
        self, namespace: str, name: str, audience: str, seconds: int
    ) -> dict[str, Any]:
        self.requests.append((namespace, name, audience, seconds))
        if self.fail is not None:
            raise self.fail
        expires = datetime.fromtimestamp(self.clock[0] + seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        token = f"token-{namespace}-{name}-{audience}-{len(self.requests)}"
        return {"status": {"token": token, "expirationTimestamp": expires}}


@pytest.fixture
def clock() -> list[float]:
    return [1_800_000_000.0]


async def test_a_token_is_requested_for_the_tokens_own_namespace_and_kept_until_shortly_before_expiry(
    clock: list[float],
) -> None:
    api, tokens = TokenApi(clock), satokens.ServiceAccountTokens(lambda: clock[0])
    credential = FederatedCredential(ENTRA, "mail-client")
    first = (await satokens.assertion(clientauth.DEFAULTS, tokens, api, "team-a", credential))()
    assert api.requests == [("team-a", "mail-client", ENTRA, satokens.TOKEN_SECONDS)]
    clock[0] += satokens.TOKEN_SECONDS - satokens.RENEW_BEFORE - 1
    assert await tokens.get(api, "team-a", "mail-client", ENTRA) == first  # still well inside its life
    clock[0] += 2
    renewed = await tokens.get(api, "team-a", "mail-client", ENTRA)
    assert renewed != first and len(api.requests) == 2
    # Another namespace with the same ServiceAccount name gets its own token, never team A's.
    other = await tokens.get(api, "team-b", "mail-client", ENTRA)
    assert other not in (first, renewed) and api.requests[-1][0] == "team-b"


@pytest.mark.parametrize(
    ("federation", "credential", "reason"),
    [
        (
            clientauth.DEFAULTS,
            FederatedCredential("https://kubernetes.default.svc", "mail-client"),
            "AudienceNotAllowed",
        ),
        (clientauth.DEFAULTS, FederatedCredential(ENTRA, None), "AmbientCredentialsNotAllowed"),
        (
            clientauth.Federation(ambient_namespaces=("ops",)),
            FederatedCredential(ENTRA, None),
            "AmbientCredentialsNotAllowed",
        ),
    ],
)
async def test_what_the_installer_did_not_allow_is_refused_before_any_token_is_requested(
    clock: list[float], federation: clientauth.Federation, credential: FederatedCredential, reason: str
) -> None:
    api = TokenApi(clock)
    with pytest.raises(ProviderError) as caught:
        await satokens.assertion(federation, satokens.ServiceAccountTokens(), api, "team-b", credential)
    assert (caught.value.kind, caught.value.reason) == (ErrorKind.BAD_CONFIG, reason)
    assert api.requests == []


async def test_an_allowed_namespace_uses_the_pods_own_projected_token(clock: list[float], tmp_path: Path) -> None:
    from tests.unit.test_clientauth import jwt, write

    path = write(tmp_path / "token", jwt(ENTRA, clock[0] + 3600))
    federation = clientauth.Federation(token_files=(path,), ambient_namespaces=("ops",))
    api = TokenApi(clock)
    assertion = await satokens.assertion(
        federation, satokens.ServiceAccountTokens(), api, "ops", FederatedCredential(ENTRA)
    )
    assert assertion() == Path(path).read_text().strip() and api.requests == []


async def test_a_missing_service_account_is_a_configuration_problem(clock: list[float]) -> None:
    api = TokenApi(clock, KubeError(404, "the server says no"))
    with pytest.raises(ProviderError) as caught:
        await satokens.ServiceAccountTokens().get(api, "team-a", "mail-client", ENTRA)
    assert (caught.value.kind, caught.value.reason) == (ErrorKind.BAD_CONFIG, "ServiceAccountTokenUnavailable")
    assert "ServiceAccount team-a/mail-client (federatedCredential.serviceAccountName) does not exist" in (
        caught.value.message
    )


async def test_a_refusal_stays_an_api_error_that_names_the_rule_to_add(clock: list[float]) -> None:
    """failures.of_api makes it PermissionDenied, retried in seconds once RBAC is fixed (not a
    provider's answer, not a 10-minute configuration wait)."""
    api = TokenApi(clock, KubeError(403, "the server says no"))
    with pytest.raises(KubeError) as caught:
        await satokens.ServiceAccountTokens().get(api, "team-a", "mail-client", ENTRA)
    assert not isinstance(caught.value, ProviderError) and caught.value.status == 403
    assert caught.value.message.startswith("the server says no")
    assert "RBAC: create serviceaccounts/token in namespace team-a" in caught.value.message


async def test_an_api_outage_stays_an_api_error(clock: list[float]) -> None:
    """The engine retries those as it retries any API failure (not a 10-minute configuration wait)."""
    api = TokenApi(clock, KubeError(503, "unavailable"))
    with pytest.raises(KubeError):
        await satokens.ServiceAccountTokens().get(api, "team-a", "mail-client", ENTRA)

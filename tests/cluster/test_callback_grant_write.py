"""The callback's single-use guarantee against a real API server (kmock accepts stale resourceVersions).

Two replicas finishing the same sign-in at the same moment both read the grant Secret, then both
write it with a resourceVersion precondition: the API server lets exactly one through, and the
loser's re-read finds the sign-in recorded. The record survives the operator's own grant writes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kubernetes
import pytest

from emailtoken.callback import pkce
from emailtoken.callback.signin import ANNOTATION_SIGN_INS, SignInRefused, ensure_unused, replace_grant
from emailtoken.callback.state import SignInState, StateSealer
from emailtoken.kube import KubernetesApi
from emailtoken.model import TokenRef
from emailtoken.secretdata import Grant, decode_data
from emailtoken.store import GrantStore
from tests.support.cluster import ControlPlane


class MeetingApi(KubernetesApi):
    """The real client; the first ``parties`` reads of a Secret wait for each other before answering."""

    def __init__(self, client: kubernetes.client.ApiClient, parties: int) -> None:
        super().__init__(client)
        self.barrier = asyncio.Barrier(parties)
        self.meetings = parties

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        answer = await super().get_secret(namespace, name)
        if self.meetings:
            self.meetings -= 1
            await self.barrier.wait()
        return answer


#: No EmailToken exists here: an ownerReference to a made-up uid would have the garbage
#: collector delete the grant Secret mid-test (seen ~20 s into a session), so none is set.
NO_OWNER = ""


def grant(refresh_token: str) -> Grant:
    return Grant(refresh_token=refresh_token, account="alice@contoso.com", scope="s", obtained_at="t", updated_at="t")


def sign_in_for(token: TokenRef) -> SignInState:
    return StateSealer(b"k" * 32).seal(token, verifier=pkce.new_verifier())[1]


@pytest.mark.parametrize("existing", [False, True], ids=["first-grant", "replacing-a-grant"])
async def test_one_sign_in_finished_by_two_replicas_at_once_is_written_once(
    cluster: ControlPlane, namespace: str, existing: bool
):
    client = kubernetes.config.new_client_from_config(config_file=str(cluster.admin_kubeconfig))
    token = TokenRef(namespace, "alice", NO_OWNER)
    if existing:
        await replace_grant(KubernetesApi(client), token, grant("rt-old"))
    api = MeetingApi(client, parties=2)
    sign_in = sign_in_for(token)
    outcomes = await asyncio.gather(
        replace_grant(api, token, grant("rt-a"), sign_in=sign_in),
        replace_grant(api, token, grant("rt-b"), sign_in=sign_in),
        return_exceptions=True,
    )
    assert api.meetings == 0, "both writers must have read the Secret before either wrote"
    refused = [o for o in outcomes if isinstance(o, SignInRefused)]
    assert outcomes.count(None) == 1 and [r.reason for r in refused] == ["AlreadyUsed"], outcomes
    secret = await api.get_secret(namespace, token.grant_secret_name)
    assert decode_data(secret)["refresh_token"] == ("rt-a" if outcomes[0] is None else "rt-b")
    assert sign_in.sign_in_id in secret["metadata"]["annotations"][ANNOTATION_SIGN_INS]


async def test_the_record_survives_the_operators_rotation(cluster: ControlPlane, namespace: str):
    client = kubernetes.config.new_client_from_config(config_file=str(cluster.admin_kubeconfig))
    api = KubernetesApi(client)
    token = TokenRef(namespace, "alice", NO_OWNER)
    done = sign_in_for(token)
    await replace_grant(api, token, grant("rt-1"), sign_in=done)
    store = GrantStore(api)
    current = await store.load(token)
    await store.save(token, grant("rt-rotated"), expected_version=current.resource_version)
    with pytest.raises(SignInRefused, match="already completed"):
        await ensure_unused(api, token, done)
    await ensure_unused(api, token, sign_in_for(token))  # another sign-in is still welcome

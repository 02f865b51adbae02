"""Workload identity federation on a real API server: no client secret anywhere.

The app registration (the local Entra) trusts the cluster's ServiceAccount issuer and reads
its keys the way Entra does: the API server's OIDC discovery document, then its
``/openid/v1/jwks``, fetched anonymously. Assertions are projected-token-shaped
TokenRequest tokens. Entra's refusals come back in its own words (AADSTS codes), and the
operator, given only the token file, gets tokens, redeems refresh tokens and keeps working
after the kubelet-style rotation of the file.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import kubernetes
import msal
import pytest

from emailtoken import rbac
from emailtoken.callback import pkce
from emailtoken.callback.kubeapi import CallbackApi
from emailtoken.callback.signin import SignInRefused, authorization_url, complete, load_token
from emailtoken.clientauth import Federation
from emailtoken.providers.http import ProviderSession
from emailtoken.providers.microsoft import MicrosoftProvider
from emailtoken_dev.devprovider import DevProviderThread, FederatedCredential, session, sign_in
from emailtoken_dev.devprovider.jws import new_rsa_key
from tests.support.cluster import ControlPlane
from tests.support.kube import ApiClient, wait_for
from tests.support.signin import web_token
from tests.support.tokens import client_credentials

AUDIENCE = "api://AzureADTokenExchange"
SCOPE = "https://outlook.office365.com/.default"
OPERATOR_SA = "emailtoken-operator"
MAILBOX = "shared@contoso.com"


@pytest.fixture(scope="module")
def public_issuer(cluster: ControlPlane) -> None:
    """Let anyone read the issuer's discovery document and keys (Entra reads them anonymously).

    Managed clusters publish them; a self-managed one binds this ClusterRole to the
    unauthenticated group, as docs/federated-credentials.md says.
    """
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "emailtoken-test-oidc-discovery"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "system:service-account-issuer-discovery",
        },
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:unauthenticated"}],
    }
    r = cluster.session().post(cluster.url + "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", json=binding)
    assert r.status_code in (201, 409), r.text
    anonymous = session(str(cluster.ca_path)).get(cluster.url + "/.well-known/openid-configuration", timeout=10)
    assert anonymous.json()["issuer"] == cluster.url


def service_account(cluster: ControlPlane, namespace: str, name: str) -> str:
    """Create a ServiceAccount; its federated-credential subject."""
    r = cluster.session().post(
        f"{cluster.url}/api/v1/namespaces/{namespace}/serviceaccounts",
        json={"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
        timeout=10,
    )
    r.raise_for_status()
    return f"system:serviceaccount:{namespace}:{name}"


def project(path: Path, token: str) -> None:
    """Write the file the way the kubelet does: a new file swapped in, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    partial.write_text(token)
    os.replace(partial, path)


def entra_app(provider: DevProviderThread, client_id: str, assertion: str) -> dict[str, Any]:
    """What msal (the real client) gets for a client-credentials request with this assertion."""
    app = msal.ConfidentialClientApplication(
        client_id,
        client_credential={"client_assertion": assertion},
        authority=provider.microsoft_authority("contoso"),
        instance_discovery=False,
        http_client=session(provider.ca_pem_path or True),
    )
    return app.acquire_token_for_client(scopes=[SCOPE])


def refused(result: dict[str, Any]) -> tuple[str, int]:
    assert "access_token" not in result, "the provider accepted the assertion"
    code = result["error_codes"][0]
    assert result["error_description"].startswith(f"AADSTS{code}: ")
    return result["error"], code


def test_entra_verifies_assertions_with_the_cluster_issuers_keys(
    cluster: ControlPlane, provider: DevProviderThread, namespace: str, public_issuer: None
) -> None:
    client_id = f"wif-{namespace}"
    subject = service_account(cluster, namespace, OPERATOR_SA)
    service_account(cluster, namespace, "intruder")
    trust = FederatedCredential(issuer=cluster.url, subject=subject, ca_bundle=str(cluster.ca_path))
    provider.add_federated_client(client_id, trust, mailboxes=[MAILBOX])

    def token(sa: str = OPERATOR_SA, audience: str = AUDIENCE) -> str:
        return cluster.service_account_token(namespace, sa, 600, [audience])

    good = token()
    assert entra_app(provider, client_id, good)["token_type"] == "Bearer"
    assert refused(entra_app(provider, client_id, token(audience="api://other"))) == ("invalid_client", 700212)
    assert refused(entra_app(provider, client_id, token(sa="intruder"))) == ("invalid_client", 700213)
    assert refused(entra_app(provider, client_id, token("intruder", "api://other"))) == ("invalid_request", 70021)

    # Signed by a key that is not in the issuer's /openid/v1/jwks (same kid, same claims).
    claims = jwt.decode(good, options={"verify_signature": False})
    forged = jwt.encode(
        claims, new_rsa_key(), algorithm="RS256", headers={"kid": jwt.get_unverified_header(good)["kid"]}
    )
    assert refused(entra_app(provider, client_id, forged)) == ("invalid_client", 50013)
    stranger = jwt.encode({**claims, "iss": "https://issuer.example"}, new_rsa_key(), algorithm="RS256")
    assert refused(entra_app(provider, client_id, stranger)) == ("invalid_client", 700211)
    # Signed with the issuer's own key but claiming "<issuer>/" (trusted as written): the discovery
    # document found there names "<issuer>", so Entra does not take keys from it.
    slash = cluster.url + "/"
    provider.add_federated_client(client_id, FederatedCredential(slash, subject, ca_bundle=str(cluster.ca_path)))
    kid = jwt.get_unverified_header(good)["kid"]
    mimic = jwt.encode({**claims, "iss": slash}, (cluster.dir / "sa.key").read_bytes(), "RS256", headers={"kid": kid})
    assert refused(entra_app(provider, client_id, mimic)) == ("invalid_request", 90061)

    late = claims["exp"] - time.time() + 60  # the provider's clock, a minute past the token's expiry
    provider.advance_clock(late)
    try:
        result = entra_app(provider, client_id, good)
    finally:
        provider.advance_clock(-late)
    assert refused(result) == ("invalid_client", 700024)
    assert "Client assertion is not within its valid time range" in result["error_description"]


@pytest.fixture
def quick_device_codes(provider: DevProviderThread) -> Iterator[None]:
    provider.settings.device_interval = 1
    yield
    provider.settings.device_interval = 5


def federated(manifest: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A manifest with federatedCredential instead of clientSecretRef."""
    manifest["spec"].pop("clientSecretRef")
    manifest["spec"]["federatedCredential"] = extra
    return manifest


def test_no_client_secret_anywhere_ready_refreshed_and_rotated(
    cluster: ControlPlane,
    admin: ApiClient,
    provider: DevProviderThread,
    namespace: str,
    start_operator: Callable[..., Any],
    tmp_path: Path,
    public_issuer: None,
    quick_device_codes: None,
) -> None:
    client_id = f"wif-op-{namespace}"
    subject = service_account(cluster, namespace, OPERATOR_SA)
    trust = FederatedCredential(issuer=cluster.url, subject=subject, ca_bundle=str(cluster.ca_path))
    provider.add_federated_client(client_id, trust, mailboxes=[MAILBOX])
    provider.add_user("kiosk@contoso.com")
    token_file = tmp_path / "projected" / "token"
    first = cluster.service_account_token(namespace, OPERATOR_SA, 600, [AUDIENCE])
    project(token_file, first)
    allowed = ["--federation-audience", AUDIENCE, "--federation-audience", "api://other"]
    ambient = ["--federated-token-file", str(token_file), "--ambient-federation-namespace", namespace]
    op = start_operator([namespace], extra_args=[*ambient, *allowed])

    app_only = federated(client_credentials(provider, "inbox", client_id=client_id, mailbox=MAILBOX))
    device = federated(client_credentials(provider, "kiosk", client_id=client_id, mailbox="kiosk@contoso.com"))
    device["spec"]["flow"] = "DeviceCode"  # delegated: the operator redeems a device code, then refresh tokens
    elsewhere = federated(
        client_credentials(provider, "other-audience", client_id=client_id, mailbox=MAILBOX), audience="api://other"
    )
    for manifest in (app_only, device, elsewhere):
        admin.create("emailtokens", namespace, manifest)

    def ready(name: str) -> bool:
        return (admin.condition(namespace, name, "Ready") or {}).get("status") == "True"

    wait_for(lambda: ready("inbox"), 30, what="the app-only token Ready")
    code = wait_for(lambda: (admin.get("emailtokens", namespace, "kiosk")["status"] or {}).get("deviceCode"), 30)
    provider.approve_device(code["userCode"], "kiosk@contoso.com")
    wait_for(lambda: ready("kiosk"), 30, what="the device-code token Ready")
    unusable = wait_for(lambda: admin.condition(namespace, "other-audience", "Ready"), 30, what="a condition")
    assert unusable["status"] == "False" and unusable["reason"] == "FederatedTokenUnavailable"
    assert "api://other" in unusable["message"] and str(token_file) in unusable["message"]

    # No client secret anywhere: the namespace holds only what the operator wrote.
    kinds = {(s["metadata"]["name"], s["type"]) for s in admin.list("secrets", namespace)}
    assert kinds == {("inbox", "Opaque"), ("kiosk", "Opaque"), ("emailtoken-grant-kiosk", "emailtoken.io/grant")}

    # The kubelet rotates the file; the old token then expires (the provider's clock passes it).
    before = {name: admin.secret_data(namespace, name)["access_token"] for name in ("inbox", "kiosk")}
    rotated = cluster.service_account_token(namespace, OPERATOR_SA, 3600, [AUDIENCE])
    project(token_file, rotated)
    provider.advance_clock(700)
    try:
        for name in before:
            admin.patch(
                "emailtokens", namespace, name, {"metadata": {"annotations": {"emailtoken.io/refresh-now": "1"}}}
            )
        for name, old in before.items():
            wait_for(
                lambda n=name, o=old: admin.secret_data(namespace, n)["access_token"] != o, 30, what=f"{name} refreshed"
            )
            assert ready(name)
    finally:
        provider.advance_clock(-700)

    token_calls = [c for c in provider.calls if c.client_id == client_id and c.endpoint == "token"]
    grants = {c.grant_type for c in token_calls if c.status == 200}
    assert {"client_credentials", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"} <= grants
    assert {c.client_auth for c in token_calls if c.status == 200} == {"client_assertion"}
    assert not [c for c in token_calls if c.error_code == 700024], "an old (expired) projected token was presented"
    for name in ("inbox", "kiosk", "other-audience"):
        assert first not in str(admin.get("emailtokens", namespace, name)) and first[-40:] not in op.log
    assert rotated[-40:] not in op.log


async def test_the_callback_redeems_codes_with_its_own_pods_token(
    cluster: ControlPlane,
    admin: ApiClient,
    provider: DevProviderThread,
    namespace: str,
    tmp_path: Path,
    public_issuer: None,
) -> None:
    """Ambient mode (an installer-listed namespace): the callback's own ServiceAccount is the
    subject of a second federated credential."""
    client_id = f"wif-web-{namespace}"
    callback = service_account(cluster, namespace, "emailtoken-operator-callback")
    service_account(cluster, namespace, OPERATOR_SA)
    trust = FederatedCredential(issuer=cluster.url, subject=callback, ca_bundle=str(cluster.ca_path))
    provider.add_federated_client(client_id, trust)
    provider.add_user("alice@contoso.com")
    admin.create("emailtokens", namespace, federated(web_token(provider, "alice", client_id, "alice@contoso.com")))
    api = CallbackApi(kubernetes.config.new_client_from_config(config_file=str(cluster.admin_kubeconfig)))
    token, spec = await load_token(api, namespace, "alice", flows=("AuthorizationCode",))
    entra = MicrosoftProvider(ProviderSession(ca_bundle=provider.ca_pem_path))
    verifier, redirect_uri = pkce.new_verifier(), "https://mail-auth.example.com/callback"
    url = authorization_url(entra, spec, redirect_uri=redirect_uri, state="s", verifier=verifier)
    code = parse_qs(urlsplit(sign_in(url, "alice@contoso.com", verify=provider.ca_pem_path or True)).query)["code"][0]
    own, operators = tmp_path / "callback-token", tmp_path / "operator-token"
    project(own, cluster.service_account_token(namespace, "emailtoken-operator-callback", 600, [AUDIENCE]))
    project(operators, cluster.service_account_token(namespace, OPERATOR_SA, 600, [AUDIENCE]))

    async def finish(files: list[Path]) -> Any:
        federation = Federation(token_files=tuple(str(f) for f in files), ambient_namespaces=(namespace,))
        at = {"code": code, "redirect_uri": redirect_uri, "verifier": verifier}
        return await complete(api, entra, token, spec, **at, federation=federation)

    with pytest.raises(SignInRefused) as nothing:
        await finish([])
    assert nothing.value.reason == "FederatedTokenUnavailable"
    with pytest.raises(SignInRefused) as stranger:  # the operator's token: not this credential's subject
        await finish([operators])
    assert stranger.value.reason == "ExchangeFailed" and "AADSTS700213" in stranger.value.message
    result = await finish([own])
    assert result.account == "alice@contoso.com"
    assert admin.secret_data(namespace, "emailtoken-grant-alice")["refresh_token"]
    redeemed = [c for c in provider.calls if c.client_id == client_id and c.grant_type == "authorization_code"]
    assert [(c.status, c.client_auth) for c in redeemed][-1] == (200, "client_assertion")


def grant_rules(admin: ApiClient, namespace: str, rules: list[dict[str, Any]], subject: tuple[str, str]) -> None:
    """A Role with exactly ``rules`` in ``namespace``, bound to the ServiceAccount ``subject``
    (namespace, name): what the chart grants in each watched namespace."""
    admin.bind_role(namespace, f"{subject[1]}-{uuid.uuid4().hex[:6]}", rules, subject)


def component_rules(component: rbac.Component, *, leader_election: bool = False) -> list[dict[str, Any]]:
    scopes = {"leader_election": leader_election, "federation": True}  # chart: providers.federatedCredential.enabled
    perms = rbac.permissions(component, **scopes)
    return [p.rule() for p in perms]


def test_each_namespace_authenticates_as_its_own_service_account(
    cluster: ControlPlane,
    admin: ApiClient,
    provider: DevProviderThread,
    namespace: str,
    make_namespace: Callable[[str], str],
    start_operator: Callable[..., Any],
    tmp_path: Path,
    public_issuer: None,
) -> None:
    """A client ID is no secret: team B writing team A's clientId, tenant and mailbox gets nothing,
    neither with B's own ServiceAccount (Entra: not the trusted subject) nor with the operator's
    (ambient mode is only for the namespaces the installer lists). The operator runs as a
    ServiceAccount with exactly the generated rules, so those suffice for the TokenRequests."""
    team_a, team_b = namespace, make_namespace("b")
    client_id, strict = f"wif-a-{team_a}", f"wif-aud-{team_a}"
    a_subject = service_account(cluster, team_a, "mail-client")
    service_account(cluster, team_b, "mail-client")
    ambient_subject = service_account(cluster, team_a, OPERATOR_SA)  # the operator's own; team A may use it
    for n, subject in enumerate((a_subject, ambient_subject)):
        trust = FederatedCredential(cluster.url, subject, name=f"k8s-{n}", ca_bundle=str(cluster.ca_path))
        provider.add_federated_client(client_id, trust, mailboxes=[MAILBOX])
    other = FederatedCredential(cluster.url, a_subject, ("api://other",), ca_bundle=str(cluster.ca_path))
    provider.add_federated_client(strict, other, mailboxes=[MAILBOX])  # would accept, were it ever sent

    operator = (team_a, OPERATOR_SA)
    grant_rules(admin, team_a, component_rules(rbac.Component.OPERATOR, leader_election=True), operator)
    grant_rules(admin, team_b, component_rules(rbac.Component.OPERATOR), operator)
    token_file = tmp_path / "projected" / "token"
    project(token_file, cluster.service_account_token(team_a, OPERATOR_SA, 600, [AUDIENCE]))
    ambient = ["--federated-token-file", str(token_file), "--ambient-federation-namespace", team_a]
    kubeconfig = cluster.service_account_kubeconfig(team_a, OPERATOR_SA)
    op = start_operator([team_a, team_b], kubeconfig=kubeconfig, extra_args=ambient)

    def manifest(name: str, client: str = client_id, **fed: str) -> dict[str, Any]:
        return federated(client_credentials(provider, name, client_id=client, mailbox=MAILBOX), **fed)

    admin.create("emailtokens", team_a, manifest("a-own", serviceAccountName="mail-client"))
    admin.create("emailtokens", team_a, manifest("a-ambient"))
    admin.create(
        "emailtokens", team_a, manifest("a-audience", strict, serviceAccountName="mail-client", audience="api://other")
    )
    admin.create("emailtokens", team_b, manifest("b-own", serviceAccountName="mail-client"))
    admin.create("emailtokens", team_b, manifest("b-ambient"))

    def ready(ns: str, name: str) -> dict[str, Any]:
        return wait_for(lambda: admin.condition(ns, name, "Ready"), 30, what=f"{ns}/{name} Ready reported")

    for name in ("a-own", "a-ambient"):
        wait_for(lambda n=name: ready(team_a, n)["status"] == "True", 30, what=f"{name} Ready")
        assert admin.secret_data(team_a, name)["access_token"]
    assert (ready(team_b, "b-own")["status"], ready(team_b, "b-own")["reason"]) == ("False", "InvalidClient")
    refused_b = [c for c in provider.calls if c.client_id == client_id and c.status != 200]
    assert [c.error_code for c in refused_b] == [700213]  # Entra: no credential trusts B's subject
    ambient_b = ready(team_b, "b-ambient")
    assert (ambient_b["status"], ambient_b["reason"]) == ("False", "AmbientCredentialsNotAllowed")
    assert "serviceAccountName" in ambient_b["message"]
    events = wait_for(lambda: admin.events_for(team_b, "b-ambient"), 30, what="an Event for b-ambient")
    assert len([e for e in events if "serviceAccountName" in e.get("message", "")]) == 1
    audience = ready(team_a, "a-audience")
    assert (audience["status"], audience["reason"]) == ("False", "AudienceNotAllowed")
    assert not [c for c in provider.calls if c.client_id == strict], "a token for api://other was sent"

    # B's namespace never holds a token; every successful call authenticated as A's subjects.
    assert admin.list("secrets", team_b) == []
    subjects = {c.client_auth for c in provider.calls if c.client_id == client_id and c.status == 200}
    assert subjects == {"client_assertion"}
    assert "eyJ" not in op.log  # no JWT (TokenRequest or projected) in the log


async def test_the_callback_redeems_codes_with_the_tokens_own_service_account(
    cluster: ControlPlane, admin: ApiClient, provider: DevProviderThread, namespace: str, public_issuer: None
) -> None:
    """The callback requests the token of the EmailToken's ServiceAccount too, with exactly the
    generated callback rules; a refusal shows the reason only (the page may be the public one)."""
    client_id = f"wif-web-sa-{namespace}"
    subject = service_account(cluster, namespace, "mail-client")
    service_account(cluster, namespace, "callback")
    grant_rules(admin, namespace, component_rules(rbac.Component.CALLBACK), (namespace, "callback"))
    provider.add_federated_client(client_id, FederatedCredential(cluster.url, subject, ca_bundle=str(cluster.ca_path)))
    provider.add_user("bob@contoso.com")
    manifest = federated(web_token(provider, "bob", client_id, "bob@contoso.com"), serviceAccountName="mail-client")
    admin.create("emailtokens", namespace, manifest)
    kubeconfig = cluster.service_account_kubeconfig(namespace, "callback")
    api = CallbackApi(kubernetes.config.new_client_from_config(config_file=str(kubeconfig)))
    token, spec = await load_token(api, namespace, "bob", flows=("AuthorizationCode",))
    entra = MicrosoftProvider(ProviderSession(ca_bundle=provider.ca_pem_path))
    verifier, redirect_uri = pkce.new_verifier(), "https://mail-auth.example.com/callback"
    url = authorization_url(entra, spec, redirect_uri=redirect_uri, state="s", verifier=verifier)
    code = parse_qs(urlsplit(sign_in(url, "bob@contoso.com", verify=provider.ca_pem_path or True)).query)["code"][0]
    at = {"code": code, "redirect_uri": redirect_uri, "verifier": verifier}

    with pytest.raises(SignInRefused) as narrow:  # this installation allows another audience only
        await complete(api, entra, token, spec, **at, federation=Federation(audiences=("api://contoso",)))
    assert (narrow.value.reason, narrow.value.status) == ("AudienceNotAllowed", 500)
    assert "api://" not in narrow.value.message and "--federation-audience" not in narrow.value.message
    result = await complete(api, entra, token, spec, **at)  # the default: api://AzureADTokenExchange
    assert result.account == "bob@contoso.com"
    redeemed = [c for c in provider.calls if c.client_id == client_id and c.grant_type == "authorization_code"]
    assert [(c.status, c.client_auth) for c in redeemed] == [(200, "client_assertion")]

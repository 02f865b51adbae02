"""The "Add a new email token" form as data (emailtoken.callback.tokenform) and who may be edited (tokenwrite)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from emailtoken import validate
from emailtoken.callback import formpages, tokenform
from emailtoken.callback.formpages import FormContext
from emailtoken.callback.tokenform import Credential, TokenForm
from emailtoken.callback.tokenwrite import editable, gitops_owner
from emailtoken.endpoints import DEFAULT_ALLOWED_HOSTS

SECRET = "client-secret-value"


def _form(provider: str, flow: str) -> TokenForm:
    form = replace(
        tokenform.new_form(provider, "mail"),
        name="box",
        flow=flow,
        email_address="box@contoso.com",
        client_id="" if flow == "ServiceAccount" else "app",
    )
    return replace(form, tenant_id="contoso") if provider == "Microsoft" else form


def _check(form: TokenForm, namespaces: tuple[str, ...] = ()) -> tokenform.Checked:
    return tokenform.check(form, namespaces=namespaces, provider_hosts=DEFAULT_ALLOWED_HOSTS)


@pytest.mark.parametrize(("provider", "flow"), [(p, f) for p, flows in tokenform.FLOWS.items() for f, _ in flows])
def test_every_offered_flow_gives_a_valid_minimal_manifest(provider: str, flow: str) -> None:
    checked = _check(_form(provider, flow))
    assert checked.ok, checked.errors
    assert validate.check_object(checked.manifest) == []
    spec = checked.manifest["spec"]
    assert "authorizationUrl" not in spec and "tokenUrl" not in spec, "the defaults are left out"
    assert ("clientSecretRef" in spec) == (flow in ("AuthorizationCode", "ClientCredentials"))
    assert ("serviceAccountKeyRef" in spec) == (flow == "ServiceAccount")
    assert checked.expanded_scopes


def test_microsoft_endpoints_take_the_tenant() -> None:
    form = replace(
        _form("Microsoft", "AuthorizationCode"),
        token_url="https://login.microsoftonline.us/{tenantId}/oauth2/v2.0/token",
    )
    spec = _check(form).manifest["spec"]
    assert spec["tokenUrl"] == "https://login.microsoftonline.us/contoso/oauth2/v2.0/token"
    assert "authorizationUrl" not in spec


def test_each_error_lands_on_its_field() -> None:
    form = replace(
        _form("Microsoft", "ClientCredentials"),
        namespace="billing",
        name="Bad_Name",
        tenant_id="common",
        client_id="",
        scopes="https://outlook.office.com/IMAP.AccessAsUser.All",
        token_url="https://login.evil.example/x/oauth2/v2.0/token",
        secret_name="emailtoken-grant-x",
    )
    errors = _check(form, namespaces=("mail",)).errors
    assert set(errors) == {"namespace", "name", "tenantId", "clientId", "scopes", "tokenUrl", "secretName"}, errors
    assert "serves only mail" in errors["namespace"][0]
    assert any("allows" in m for m in errors["tokenUrl"])


def test_flows_of_the_other_provider_are_refused() -> None:
    assert "flow" in _check(_form("Google", "ClientCredentials")).errors


@pytest.mark.parametrize(
    ("flow", "value", "required", "problem"),
    [
        ("AuthorizationCode", "", True, "client secret is needed"),
        ("AuthorizationCode", "", False, None),
        ("AuthorizationCode", "two\nlines", True, "one line"),
        ("DeviceCode", "x", True, "uses no client secret"),
        ("ServiceAccount", "{", True, "not a JSON key file"),
        ("ServiceAccount", '{"type": "authorized_user"}', True, "not a service-account key"),
        ("ServiceAccount", '{"type": "service_account", "private_key": "k"}', True, None),
    ],
)
def test_credential_problems(flow: str, value: str, required: bool, problem: str | None) -> None:
    provider = "Google" if flow == "ServiceAccount" else "Microsoft"
    found = tokenform.credential_problem(_form(provider, flow), Credential(value), required=required)
    assert (found is None) if problem is None else (problem in str(found))


def test_the_secret_never_reaches_the_page_manifest_or_command() -> None:
    checked = _check(_form("Microsoft", "AuthorizationCode"))
    ctx = FormContext(csrf_token="t", namespaces=("mail",), provider_hosts=DEFAULT_ALLOWED_HOSTS, manage=True)
    page = formpages.token_form_page(checked, checked.form, ctx, secret_given=True)
    command = tokenform.credential_command(checked.form)
    assert "read -rs CLIENT_SECRET && kubectl create secret generic box-oauth-client -n mail" in command
    assert SECRET not in page and 'name="clientSecret" type="password" value=""' in page
    assert "The secret you typed was not kept" in page and 'value="create"' in page


def test_user_input_is_escaped() -> None:
    form = replace(_form("Microsoft", "AuthorizationCode"), name='"><script>x</script>')
    checked = _check(form)
    ctx = FormContext(csrf_token="t", namespaces=(), provider_hosts=DEFAULT_ALLOWED_HOSTS, manage=False)
    page = formpages.token_form_page(checked, form, ctx)
    assert "<script>x" not in page and "&lt;script&gt;x" in page
    assert "Create now is off" in page and 'value="create"' not in page


@pytest.mark.parametrize(
    ("meta", "owner"),
    [
        ({"labels": {"argocd.argoproj.io/instance": "mail"}}, "Argo CD"),
        ({"annotations": {"argocd.argoproj.io/tracking-id": "a:b/c"}}, "Argo CD"),
        ({"labels": {"kustomize.toolkit.fluxcd.io/name": "apps"}}, "Flux"),
        ({"labels": {"helm.toolkit.fluxcd.io/name": "mail"}}, "Flux"),
        ({"managedFields": [{"manager": "kustomize-controller"}]}, "Flux"),
        ({"managedFields": [{"manager": "kubectl-client-side-apply"}]}, None),
    ],
)
def test_gitops_owner(meta: dict, owner: str | None) -> None:
    obj = {"metadata": {**meta, "labels": {"emailtoken.io/created-by": "admin-page", **meta.get("labels", {})}}}
    assert gitops_owner(obj) == owner
    assert editable(obj) is (owner is None)
    assert not editable({"metadata": {}}), "only tokens the page created"


def test_schema_patterns_are_said_in_words() -> None:
    form = replace(_form("Microsoft", "AuthorizationCode"), email_address="not an email", secret_name="Bad Name")
    errors = _check(form).errors
    assert errors == {
        "emailAddress": ["must be an email address, like support@contoso.com"],
        "secretName": ["must be a Kubernetes name: lower-case letters, digits, '-' and '.'"],
    }

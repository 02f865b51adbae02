"""The "Add a new email token" form as data (emailtoken.callback.tokenform) and who may be edited (tokenwrite)."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

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
    assert command.startswith("read -rs CLIENT_SECRET && ")
    assert "| kubectl create secret generic box-oauth-client -n mail --from-file=client_secret=/dev/stdin" in command
    assert SECRET not in page and 'name="clientSecret" type="password" value=""' in page
    assert "The secret you typed was not kept" in page and 'value="create"' in page


def test_the_command_keeps_the_secret_out_of_argv(tmp_path: Path) -> None:
    """Run as shown, with a kubectl that records its argv and standard input: the value arrives
    on stdin exactly as typed (no newline added), and no process sees it in its arguments."""
    (tmp_path / "kubectl").write_text('#!/bin/sh\necho "$@" > "$0.argv"\ncat /dev/stdin > "$0.stdin"\n')
    (tmp_path / "kubectl").chmod(0o755)
    command = tokenform.credential_command(_form("Microsoft", "AuthorizationCode"))
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    subprocess.run(["bash", "-c", command], input=SECRET + "\n", text=True, check=True, env=env, timeout=10)
    assert (tmp_path / "kubectl.stdin").read_text() == SECRET
    assert SECRET not in (tmp_path / "kubectl.argv").read_text()
    assert "--from-file=client_secret=/dev/stdin" in (tmp_path / "kubectl.argv").read_text()


def test_graph_services_are_offered() -> None:
    """The checkboxes come from the scopes table: the Microsoft Graph services appear with their scopes."""
    rows = {service: (delegated, app) for service, delegated, app in tokenform.service_scopes("Microsoft")}
    assert rows["GraphMailSend"] == ("https://graph.microsoft.com/Mail.Send", "https://graph.microsoft.com/.default")
    assert {"GraphMailRead", "GraphMailReadWrite"} <= set(rows)
    form = replace(_form("Microsoft", "AuthorizationCode"), services=("GraphMailRead",))
    ctx = FormContext(csrf_token="t", namespaces=("mail",), provider_hosts=DEFAULT_ALLOWED_HOSTS, manage=False)
    assert 'value="GraphMailSend"' in formpages.token_form_page(None, form, ctx)
    assert _check(form).ok


@pytest.mark.parametrize(
    ("probe", "spec", "error"),
    [
        ({}, None, None),
        (
            {"probe_protocol": "IMAP", "probe_server": "outlook.office365.com:993"},
            {"protocol": "IMAP", "server": "outlook.office365.com:993"},
            None,
        ),
        ({"probe_protocol": "SMTP", "probe_server": "localhost:1025", "probe_tls": "None"}, ..., None),
        ({"probe_protocol": "SMTP", "probe_server": "smtp.office365.com", "probe_tls": "None"}, ..., "127.0.0.1"),
        ({"probe_protocol": "IMAP", "probe_server": "bad host"}, ..., "HOST or HOST:PORT"),
        ({"probe_server": "imap.gmail.com"}, ..., "'protocol' is a required property"),
    ],
)
def test_the_login_probe(probe: dict, spec: object, error: str | None) -> None:
    """spec.loginProbe from three fields, judged by the CRD's rules; its errors land on its fieldset."""
    checked = _check(replace(_form("Microsoft", "AuthorizationCode"), **probe))
    assert list(checked.errors) == ([] if error is None else ["loginProbe"]), checked.errors
    assert error is None or error in checked.errors["loginProbe"][0]
    if spec is not ...:
        assert checked.manifest["spec"].get("loginProbe") == spec
    if error is None:  # the edit form shows what is stored (tls SSL is the CRD's default)
        stored = {**checked.manifest, "spec": {**checked.manifest["spec"]}}
        if "loginProbe" in stored["spec"]:
            stored["spec"]["loginProbe"] = {"tls": "SSL", **stored["spec"]["loginProbe"]}
        assert tokenform.manifest_of(tokenform.form_of_object(stored))["spec"] == checked.manifest["spec"]
    ctx = FormContext(csrf_token="t", namespaces=("mail",), provider_hosts=DEFAULT_ALLOWED_HOSTS, manage=False)
    page = formpages.token_form_page(checked, checked.form, ctx)
    assert 'id="f-loginProbe"' in page and ('id="err-loginProbe"' in page) is (error is not None)


@pytest.mark.parametrize("credential", ["box-oauth-client", None])
def test_the_delete_confirmation_names_only_the_secrets_that_go(credential: str | None) -> None:
    page = formpages.delete_page("mail", "box", consumer_secret="box", credential_secret=credential, csrf_token="t")
    assert "Secret <code>box</code>, which mail tasks mount" in page
    assert ("oauth-client" in page) is (credential is not None)


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
        ({"labels": {"app.kubernetes.io/instance": "mail"}}, "Argo CD or Helm"),
        ({"managedFields": [{"manager": "helm"}]}, "Helm"),
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

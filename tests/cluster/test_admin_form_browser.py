"""Issue #19 in a real Chromium against the real API server: "Add a new email token".

* For Git (the default installation, Create now off): the form for each provider and flow gives a
  manifest the API server accepts as it is (copied from the page, or downloaded), plus a kubectl
  command that makes the credential Secret from the shell; bad input shows each error beside its
  field; no secret is ever echoed; the write endpoints refuse (403), not only the buttons are hidden.
* Create now (``--manage-tokens``, the callback running as a ServiceAccount with exactly the chart's
  Role for it): create, sign in at the dev provider, Ready; edit; delete with its confirmation;
  an object Argo CD manages is not edited in place.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from emailtoken import rbac
from emailtoken_dev.devprovider import DevProviderThread
from tests.support.callback_process import CallbackProcess
from tests.support.cluster import ControlPlane
from tests.support.kube import ApiClient, wait_for
from tests.support.operator_process import REPO, OperatorProcess
from tests.support.system import need_binary

pytestmark = pytest.mark.chromium
UPDATE_SCREENSHOT = os.environ.get("EMAILTOKEN_UPDATE_SCREENSHOT") == "1"
SECRET = "s3cr3t-value-never-shown"
ALICE = "alice@contoso.com"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    path = need_binary("chromium", "/usr/bin/chromium")
    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900}, locale="en-US")
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    yield context.new_page()
    context.close()


def _callback(
    tmp_path: Path, kubeconfig: Path, provider: DevProviderThread, namespace: str, *extra: str
) -> Iterator[CallbackProcess]:
    callback = CallbackProcess(
        kubeconfig, tmp_path, ca_bundle=provider.ca_pem_path, extra_args=["--namespace", namespace, *extra]
    ).start()
    yield callback
    callback.stop()


def _fill(page: Any, provider: DevProviderThread, flow: str, name: str, who: str) -> None:
    """Fill the form as a person would, for one provider (already chosen) and flow."""
    page.fill("#f-name", name)
    page.fill("#f-emailAddress", who)
    page.check(f"input[name=flow][value={flow}]")
    if page.locator("#f-tenantId").count():
        page.fill("#f-tenantId", "contoso")
        page.fill("#f-authorizationUrl", f"{provider.url}/{{tenantId}}/oauth2/v2.0/authorize")
        page.fill("#f-tokenUrl", f"{provider.url}/{{tenantId}}/oauth2/v2.0/token")
    else:
        page.fill("#f-authorizationUrl", provider.google_auth_url)
        page.fill("#f-tokenUrl", provider.google_token_url)
    if flow != "ServiceAccount":
        page.fill("#f-clientId", f"{name}-app")
    if flow in ("AuthorizationCode", "ClientCredentials"):
        page.fill("#f-clientSecret", SECRET)


CASES = [
    ("Microsoft", "AuthorizationCode"),
    ("Microsoft", "DeviceCode"),
    ("Microsoft", "ClientCredentials"),
    ("Google", "AuthorizationCode"),
    ("Google", "ServiceAccount"),
]


def test_for_git_each_provider_and_flow_and_errors_beside_fields(
    cluster: ControlPlane,
    admin: ApiClient,
    provider: DevProviderThread,
    namespace: str,
    tmp_path: Path,
    page: Any,
) -> None:
    callback = next(gen := _callback(tmp_path, cluster.admin_kubeconfig, provider, namespace))
    try:
        page.goto(callback.admin_url + "/")
        page.get_by_role("link", name="Add a new email token").click()
        assert page.get_by_role("heading", name="Add a new email token", level=1).is_visible()
        assert not page.get_by_role("button", name="Create now").count(), "Create now is off by default"
        for number, (provider_name, flow) in enumerate(CASES):
            page.goto(f"{callback.admin_url}/new?provider={provider_name}")
            name = f"box{number}"
            _fill(page, provider, flow, name, f"{name}@contoso.com")
            if number == 0:  # the services show the exact scopes they expand to
                assert (
                    "https://outlook.office.com/IMAP.AccessAsUser.All" in page.locator("fieldset").nth(1).inner_text()
                )
                page.check("input[name=services][value=SMTP]")
            if number == 4:
                with page.expect_download() as download:
                    page.get_by_role("button", name="Download manifest").click()
                text = Path(download.value.path()).read_text()
            else:
                page.get_by_role("button", name="Check").click()
                assert page.get_by_role("heading", name="The manifest is valid").is_visible(), page.inner_text("main")
                text = page.locator("#manifest").input_value()
                if number == 0:
                    page.get_by_role("button", name="Copy manifest").click()
                    assert page.evaluate("navigator.clipboard.readText()") == text
                    assert SECRET not in page.content(), "the secret is never echoed"
                    command = page.locator("#secret-command").input_value()
                    assert SECRET not in command and "--from-file=client_secret=/dev/stdin" in command
                    # The command as shown works from a shell: the value comes from the terminal.
                    subprocess.run(
                        ["bash", "-c", command],
                        input=SECRET + "\n",
                        text=True,
                        check=True,
                        env={**os.environ, "KUBECONFIG": str(cluster.admin_kubeconfig)},
                    )
                    assert admin.secret_data(namespace, f"{name}-oauth-client") == {"client_secret": SECRET}
            assert SECRET not in text
            manifest = yaml.safe_load(text)
            assert (
                manifest["spec"]["provider"] == provider_name
                and manifest["spec"].get("flow", "AuthorizationCode") == flow
            )
            cluster.kubectl("apply", "-f", "-", input=text)  # the real API server: schema and CEL rules
            stored = admin.get("emailtokens", namespace, name)["spec"]
            assert stored == {"flow": "AuthorizationCode", **manifest["spec"]}  # the CRD's default flow
        spec0 = admin.get("emailtokens", namespace, "box0")["spec"]
        assert spec0["services"] == ["IMAP", "SMTP"] and spec0["tokenUrl"] == provider.microsoft_token_url("contoso")

        _bad_input_errors_beside_fields(page, callback)
        _writes_refused_when_disabled(callback, admin, namespace)
    finally:
        next(gen, None)


def _bad_input_errors_beside_fields(page: Any, callback: CallbackProcess) -> None:
    page.goto(f"{callback.admin_url}/new?provider=Microsoft")
    page.fill("#f-name", "Bad_Name")
    page.check("input[name=flow][value=ClientCredentials]")
    page.fill("#f-tenantId", "common")
    page.fill("#f-clientSecret", SECRET)
    page.fill("#f-scopes", "https://outlook.office.com/IMAP.AccessAsUser.All")
    page.fill("#f-tokenUrl", "https://login.evil.example/contoso/oauth2/v2.0/token")
    page.fill("#f-secretName", "emailtoken-grant-x")
    page.get_by_role("button", name="Check").click()
    expected = {
        "name": "lower-case letters",
        "clientId": "clientId is required",
        "emailAddress": "emailAddress is required for flows ClientCredentials",
        "tenantId": "needs a specific tenant",
        "scopes": "must be a /.default scope",
        "tokenUrl": "host this installation allows",
        "secretName": "must not start with emailtoken-grant-",
    }
    for field, words in expected.items():
        error = page.locator(f"#err-{field}")
        assert words in error.inner_text(), (field, page.inner_text("main"))
        assert page.locator(f"#f-{field}").get_attribute("aria-invalid") == "true"
        # beside its field: the error and the input share one .field block
        assert page.locator(f".field:has(#f-{field}) #err-{field}").count() == 1 or field == "scopes"
    assert page.get_by_role("alert").first.is_visible()
    assert page.locator("#f-name").input_value() == "Bad_Name", "values are kept"
    assert page.locator("#f-clientSecret").input_value() == "" and SECRET not in page.content()
    assert not page.locator("#manifest").count()


def _writes_refused_when_disabled(callback: CallbackProcess, admin: ApiClient, namespace: str) -> None:
    """Not only hidden: a well-formed POST with a valid CSRF token is refused and writes nothing."""
    http = requests.Session()
    http.trust_env = False
    form = http.get(callback.admin_url + "/new", timeout=10).text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
    data = {
        "csrf": csrf,
        "action": "create",
        "namespace": namespace,
        "name": "sneaky",
        "provider": "Microsoft",
        "flow": "ClientCredentials",
        "tenantId": "contoso",
        "clientId": "a",
        "clientSecret": SECRET,
        "emailAddress": "x@contoso.com",
        "services": "IMAP",
    }
    answer = http.post(callback.admin_url + "/new", data=data, allow_redirects=False, timeout=10)
    assert answer.status_code == 403 and "TokenWritesDisabled" in answer.text
    for path in (f"/tokens/{namespace}/box0/edit", f"/tokens/{namespace}/box0/delete"):
        for answer in (
            http.post(callback.admin_url + path, data={**data, "action": "save"}, timeout=10),
            http.get(callback.admin_url + path, timeout=10),
        ):  # refused as disabled (CsrfFailed is a 403 too)
            assert answer.status_code == 403 and "TokenWritesDisabled" in answer.text, (path, answer.text[-500:])
    assert admin.get("emailtokens", namespace, "sneaky") is None
    assert admin.get("secrets", namespace, "sneaky-oauth-client") is None
    assert admin.get("emailtokens", namespace, "box0") is not None
    assert http.get(callback.public_url + "/new", timeout=10).status_code == 404, (
        "the form is on the private listener only"
    )


def _callback_identity(cluster: ControlPlane, admin: ApiClient, namespace: str) -> Path:
    """A ServiceAccount bound to exactly the chart's callback Role with manageTokens on."""
    admin.create(
        "serviceaccounts", namespace, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "cb"}}
    )
    rules = rbac.rules("callback", manage_tokens=True)
    admin.bind_role(namespace, "cb", rules, (namespace, "cb"))
    return cluster.service_account_kubeconfig(namespace, "cb")


def _shot(page: Any, tmp_path: Path, name: str) -> None:
    path = REPO / "docs" / name if UPDATE_SCREENSHOT else tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_create_now_sign_in_ready_edit_delete(
    cluster: ControlPlane,
    admin: ApiClient,
    provider: DevProviderThread,
    namespace: str,
    tmp_path: Path,
    page: Any,
    start_operator: Callable[..., OperatorProcess],
) -> None:
    kubeconfig = _callback_identity(cluster, admin, namespace)
    callback = next(gen := _callback(tmp_path, kubeconfig, provider, namespace, "--manage-tokens"))
    provider.add_client("form-app", SECRET, redirect_uris=[callback.redirect_uri], name="Form app")
    provider.add_user(ALICE)
    start_operator([namespace], extra_args=["--admin-url", callback.admin_url])
    try:
        page.goto(f"{callback.admin_url}/new?provider=Microsoft")
        _fill(page, provider, "AuthorizationCode", "alice", ALICE)
        page.fill("#f-clientId", "form-app")
        page.fill("#f-secretName", "alice-mail")
        page.get_by_role("button", name="Check").click()
        _shot(page, tmp_path, "admin-new-token.png")
        page.fill("#f-clientSecret", SECRET)  # the page asked for it again: it keeps no secret
        page.get_by_role("button", name="Create now").click()
        page.wait_for_url(re.compile(rf"/authorize/{namespace}/alice\?created=1$"))
        assert "were created. Next: Get Email Token." in page.get_by_role("status").first.inner_text()
        _shot(page, tmp_path, "admin-new-token-created.png")

        token = admin.get("emailtokens", namespace, "alice")
        assert any(
            f["manager"] == "emailtoken-admin-page" and f["operation"] == "Apply"
            for f in token["metadata"]["managedFields"]
        )
        secret = admin.get("secrets", namespace, "alice-oauth-client")
        assert base64.b64decode(secret["data"]["client_secret"]).decode() == SECRET
        assert secret["metadata"]["ownerReferences"][0]["uid"] == token["metadata"]["uid"]

        page.get_by_role("button", name=f"Get Email Token for {namespace}/alice").click()
        page.wait_for_selector("#password")
        page.fill("#password", "password")
        page.click("#accept")
        page.wait_for_url(re.compile(re.escape(callback.redirect_uri) + r"\?"))
        assert page.get_by_role("heading", name="Mailbox authorized").is_visible()
        wait_for(lambda: (c := admin.condition(namespace, "alice", "Ready")) and c["status"] == "True", 30)
        assert admin.secret_data(namespace, "alice-mail")["username"] == ALICE

        page.goto(callback.admin_url + "/")
        row = page.locator(f"#token-{namespace}-alice")
        assert "Ready" in row.inner_text()
        row.get_by_role("link", name=f"Edit {namespace}/alice").click()
        assert page.locator("#f-clientSecret").input_value() == ""
        page.check("input[name=services][value=SMTP]")
        page.get_by_role("button", name="Save").click()
        page.wait_for_url(re.compile(rf"/authorize/{namespace}/alice\?updated=1$"))
        assert admin.get("emailtokens", namespace, "alice")["spec"]["services"] == ["IMAP", "SMTP"]
        assert (
            base64.b64decode(admin.get("secrets", namespace, "alice-oauth-client")["data"]["client_secret"]).decode()
            == SECRET
        )

        _argo_managed_is_not_edited(page, callback, admin, namespace)
        _service_account_key_upload(page, callback, admin, namespace, tmp_path)

        page.goto(callback.admin_url + "/")
        page.get_by_role("link", name=f"Delete {namespace}/alice").click()
        assert "Secret alice-mail, which mail tasks mount" in page.inner_text("main")
        page.get_by_role("button", name=re.compile("^Delete ")).click()
        assert page.get_by_role("status").inner_text() == f"EmailToken {namespace}/alice was deleted."
        assert admin.get("emailtokens", namespace, "alice") is None
        reasons = {e["reason"] for e in admin.events_for(namespace, "alice")}
        assert {"CreatedOnAdminPage", "UpdatedOnAdminPage", "DeletedOnAdminPage"} <= reasons
        assert not any(SECRET in str(e) for e in admin.list("events", namespace))
        assert SECRET not in callback.log
    finally:
        next(gen, None)


def _service_account_key_upload(
    page: Any, callback: CallbackProcess, admin: ApiClient, namespace: str, tmp_path: Path
) -> None:
    """Google ServiceAccount: the key file goes from the browser into the Secret, never into the page."""
    key = '{"type": "service_account", "client_email": "sa@p.iam.gserviceaccount.com", "private_key": "PEM-KEY"}'
    (tmp_path / "key.json").write_text(key)
    page.goto(f"{callback.admin_url}/new?provider=Google")
    page.fill("#f-name", "reports")
    page.fill("#f-emailAddress", "reports@contoso.com")
    page.check("input[name=flow][value=ServiceAccount]")
    page.check("input[name=services][value=Gmail]")
    page.set_input_files("#f-serviceAccountKey", str(tmp_path / "key.json"))
    page.get_by_role("button", name="Create now").click()
    page.wait_for_url(re.compile(rf"/authorize/{namespace}/reports\?created=1$"))
    assert "PEM-KEY" not in page.content()
    assert admin.secret_data(namespace, "reports-oauth-client") == {"key.json": key}
    spec = admin.get("emailtokens", namespace, "reports")["spec"]
    assert spec["serviceAccountKeyRef"] == {"name": "reports-oauth-client", "key": "key.json"}


def _argo_managed_is_not_edited(page: Any, callback: CallbackProcess, admin: ApiClient, namespace: str) -> None:
    admin.create(
        "emailtokens",
        namespace,
        {
            "apiVersion": "emailtoken.io/v1alpha1",
            "kind": "EmailToken",
            "metadata": {
                "name": "synced",
                "labels": {"emailtoken.io/created-by": "admin-page"},
                "annotations": {"argocd.argoproj.io/tracking-id": "mail:emailtoken.io/EmailToken:x/synced"},
            },
            "spec": {
                "provider": "Google",
                "flow": "ServiceAccount",
                "serviceAccountKeyRef": {"name": "k"},
                "emailAddress": ALICE,
                "services": ["Gmail"],
            },
        },
    )
    page.goto(f"{callback.admin_url}/tokens/{namespace}/synced/edit")
    assert "managed by Argo CD" in page.get_by_role("alert").inner_text()
    assert not page.get_by_role("button", name="Save").count()
    page.get_by_role("button", name="Check").click()
    assert "name: synced" in page.locator("#manifest").input_value()
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    answer = page.request.post(
        f"{callback.admin_url}/tokens/{namespace}/synced/edit",
        multipart={
            "csrf": csrf,
            "action": "save",
            "flow": "ServiceAccount",
            "emailAddress": "mallory@contoso.com",
            "services": "Gmail",
        },
    )
    assert answer.status == 409 and "ManagedByGitOps" in answer.text()
    assert admin.get("emailtokens", namespace, "synced")["spec"]["emailAddress"] == ALICE

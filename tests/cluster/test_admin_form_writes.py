"""Issue #19's write paths at the HTTP level (no browser): the callback with ``--manage-tokens``
against the real API server (server-side apply, resourceVersion preconditions, garbage collection).

* CSRF: Create now, Save and Delete without a form token, with another cookie's token, or from
  another origin are refused (403 CsrfFailed) and write nothing.
* The page uses and changes only what it made: a hand-written token is neither saved nor deleted
  (NotCreatedHere), a Secret it did not make is never taken over by an edit, and an edit that keeps
  the secret needs the Secret to hold the key the (new) flow reads. Each refusal is a Warning Event.
* Create is all or nothing: when the Secret cannot be written the token is deleted again, and
  Create now works when pressed again.
* Replacing the secret value (CredentialReplaced); after Delete the garbage collector removes the
  credential Secret. An edit that checked an old resourceVersion is refused (ChangedMeanwhile).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import replace
from html import unescape
from typing import Any

import kubernetes
import pytest
import requests

from emailtoken.callback import tokenform
from emailtoken.callback.kubeapi import CallbackApi
from emailtoken.callback.signin import SignInRefused
from emailtoken.callback.tokenform import Credential
from emailtoken.callback.tokenwrite import TokenWriter
from emailtoken_dev.devprovider import DevProviderThread
from tests.cluster.test_secret_ownership import needs_garbage_collector
from tests.support.callback_process import CallbackProcess
from tests.support.cluster import ControlPlane
from tests.support.kube import ApiClient, wait_for

SECRET = "first-secret-value"
NEW_SECRET = "second-secret-value"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture(scope="module")
def ns(cluster: ControlPlane, admin: ApiClient) -> Iterator[str]:
    name = f"w-{uuid.uuid4().hex[:8]}"
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    admin.http.post(cluster.url + "/api/v1/namespaces", json=body, timeout=10).raise_for_status()
    yield name
    admin.http.delete(f"{cluster.url}/api/v1/namespaces/{name}", timeout=10)


@pytest.fixture(scope="module")
def callback(
    cluster: ControlPlane, provider: DevProviderThread, ns: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CallbackProcess]:
    process = CallbackProcess(
        cluster.admin_kubeconfig,
        tmp_path_factory.mktemp("cb"),
        ca_bundle=provider.ca_pem_path,
        extra_args=["--namespace", ns, "--manage-tokens"],
    ).start()
    yield process
    process.stop()


class Page:
    """A browser without JavaScript on the admin page: one cookie jar, the form token of /new."""

    def __init__(self, callback: CallbackProcess) -> None:
        self.url = callback.admin_url
        self.http = requests.Session()
        self.http.trust_env = False
        self.csrf = unescape(_CSRF.search(self.http.get(self.url + "/new", timeout=10).text).group(1))

    def post(self, path: str, data: dict[str, str], **kwargs: Any) -> requests.Response:
        return self.http.post(self.url + path, data={"csrf": self.csrf, **data}, allow_redirects=False, **kwargs)


def fields(ns: str, name: str, flow: str = "AuthorizationCode", provider: str = "Microsoft", **extra: str) -> dict:
    data = {"namespace": ns, "name": name, "provider": provider, "flow": flow, "clientId": "app"}
    data.update({"emailAddress": f"{name}@contoso.com", "services": "Gmail" if provider == "Google" else "IMAP"})
    if provider == "Microsoft":
        data["tenantId"] = "contoso"
    if flow != "DeviceCode":
        data["clientSecret"] = SECRET
    return {**data, **extra}


def create(page: Page, ns: str, name: str, **kwargs: str) -> requests.Response:
    answer = page.post("/new", {**fields(ns, name, **kwargs), "action": "create"})
    assert answer.status_code == 303, answer.text[-2000:]
    return answer


def reasons(admin: ApiClient, ns: str, name: str) -> list[str]:
    return [f"{e['reason']}: {e['message']}" for e in admin.events_for(ns, name)]


def test_posts_that_fail_csrf_write_nothing(callback: CallbackProcess, admin: ApiClient, ns: str) -> None:
    page = Page(callback)
    create(page, ns, "kept")
    before = admin.get("emailtokens", ns, "kept")
    other = Page(callback)  # a valid token, but for another cookie
    attempts = {
        "no form token": {"data": {"csrf": ""}},
        "another cookie's token": {"data": {"csrf": other.csrf}},
        "another origin": {"headers": {"Origin": "https://evil.example"}},
        "a cross-site fetch": {"headers": {"Sec-Fetch-Site": "cross-site"}},
    }
    targets = {
        "/new": {**fields(ns, "sneaky"), "action": "create"},
        f"/tokens/{ns}/kept/edit": {**fields(ns, "kept", scopes="https://evil/x"), "action": "save"},
        f"/tokens/{ns}/kept/delete": {},
    }
    for path, data in targets.items():
        for how, extra in attempts.items():
            answer = page.post(path, {**data, **extra.get("data", {})}, headers=extra.get("headers"), timeout=10)
            assert answer.status_code == 403 and "CsrfFailed" in answer.text, (path, how, answer.status_code)
    assert admin.get("emailtokens", ns, "sneaky") is None and admin.get("secrets", ns, "sneaky-oauth-client") is None
    after = admin.get("emailtokens", ns, "kept")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_a_hand_written_token_is_neither_saved_nor_deleted(
    callback: CallbackProcess, admin: ApiClient, ns: str
) -> None:
    spec = {"provider": "Microsoft", "flow": "DeviceCode", "tenantId": "contoso", "clientId": "app"}
    token = {"apiVersion": "emailtoken.io/v1alpha1", "kind": "EmailToken", "metadata": {"name": "byhand"}}
    version = admin.create("emailtokens", ns, {**token, "spec": {**spec, "services": ["IMAP"]}})["metadata"][
        "resourceVersion"
    ]
    page = Page(callback)
    for path, data in ((f"/tokens/{ns}/byhand/edit", {**fields(ns, "byhand", "DeviceCode"), "action": "save"}),
                       (f"/tokens/{ns}/byhand/delete", {})):  # fmt: skip
        answer = page.post(path, data, timeout=10)
        assert answer.status_code == 409 and "NotCreatedHere" in answer.text, (path, answer.status_code)
    assert admin.get("emailtokens", ns, "byhand")["metadata"]["resourceVersion"] == version
    refused = [r for r in reasons(admin, ns, "byhand") if r.startswith("RefusedOnAdminPage")]
    assert len(refused) == 2 and "edit on the admin page refused (NotCreatedHere)" in refused[0] + refused[1]


def test_an_edit_keeping_the_secret_needs_the_key_the_new_flow_reads(
    callback: CallbackProcess, admin: ApiClient, ns: str
) -> None:
    page = Page(callback)
    create(page, ns, "gmail", provider="Google")
    edit = {**fields(ns, "gmail", "ServiceAccount", provider="Google", clientId="", clientSecret=""), "action": "save"}
    answer = page.post(f"/tokens/{ns}/gmail/edit", edit, timeout=10)
    assert answer.status_code == 422, answer.text[-2000:]
    error = re.search(r'id="err-serviceAccountKey"[^>]*>(.*?)</', answer.text, re.S)
    assert error and "holds no key.json" in unescape(error.group(1)), answer.text[-3000:]
    assert "clientSecretRef" in admin.get("emailtokens", ns, "gmail")["spec"], "nothing applied"
    assert any("refused (CredentialMissing)" in r for r in reasons(admin, ns, "gmail"))


def test_an_edit_never_takes_over_a_secret_the_page_did_not_make(
    callback: CallbackProcess, admin: ApiClient, ns: str
) -> None:
    page = Page(callback)
    create(page, ns, "device", flow="DeviceCode")
    foreign = admin.create_secret(ns, "device-oauth-client", {"password": "theirs"})  # no apply conflict
    edit = {**fields(ns, "device", "AuthorizationCode", clientSecret=NEW_SECRET), "action": "save"}
    answer = page.post(f"/tokens/{ns}/device/edit", edit, timeout=10)
    assert answer.status_code == 409 and "was not made by this page" in unescape(answer.text), answer.text[-2000:]
    assert re.search(r'id="err-clientSecret"', answer.text)
    after = admin.get("secrets", ns, "device-oauth-client")
    assert after["metadata"]["resourceVersion"] == foreign["metadata"]["resourceVersion"]
    assert "ownerReferences" not in after["metadata"] and "labels" not in after["metadata"]
    assert admin.secret_data(ns, "device-oauth-client") == {"password": "theirs"}
    assert admin.get("emailtokens", ns, "device")["spec"]["flow"] == "DeviceCode"


def test_create_is_all_or_nothing(callback: CallbackProcess, admin: ApiClient, ns: str) -> None:
    """The Secret's write fails (another manager owns its value: a server-side apply conflict):
    the token is deleted again, and Create now succeeds once the obstacle is gone."""
    labels = {"emailtoken.io/created-by": "admin-page"}
    admin.create_secret(ns, "half-oauth-client", {"client_secret": "someone-elses"}, labels=labels)
    page = Page(callback)
    answer = page.post("/new", {**fields(ns, "half"), "action": "create"}, timeout=10)
    assert answer.status_code == 409 and "was deleted again" in answer.text, answer.text[-2000:]
    wait_for(lambda: admin.get("emailtokens", ns, "half") is None, 10, what="the half-made token deleted")
    assert any("create on the admin page refused (FieldConflict)" in r for r in reasons(admin, ns, "half"))
    admin.delete("secrets", ns, "half-oauth-client")
    create(page, ns, "half")
    assert admin.secret_data(ns, "half-oauth-client") == {"client_secret": SECRET}


def test_replace_the_secret_then_delete_collects_it(
    cluster: ControlPlane, callback: CallbackProcess, admin: ApiClient, ns: str
) -> None:
    needs_garbage_collector(cluster)
    page = Page(callback)
    create(page, ns, "box", probeProtocol="IMAP", probeServer="outlook.office365.com")
    probe = admin.get("emailtokens", ns, "box")["spec"]["loginProbe"]
    assert probe == {"protocol": "IMAP", "server": "outlook.office365.com", "tls": "SSL"}, "the CRD's default"
    edit = {**fields(ns, "box", clientSecret=NEW_SECRET), "action": "save"}
    assert page.post(f"/tokens/{ns}/box/edit", edit, timeout=10).status_code == 303
    assert admin.secret_data(ns, "box-oauth-client") == {"client_secret": NEW_SECRET}
    assert any(r.startswith("CredentialReplaced: Secret box-oauth-client") for r in reasons(admin, ns, "box"))
    confirm = page.http.get(f"{callback.admin_url}/tokens/{ns}/box/delete", timeout=10).text
    assert "credential Secret <code>box-oauth-client</code>" in confirm
    create(page, ns, "dev", flow="DeviceCode")
    assert "oauth-client" not in page.http.get(f"{callback.admin_url}/tokens/{ns}/dev/delete", timeout=10).text
    assert page.post(f"/tokens/{ns}/box/delete", {}, timeout=10).status_code == 200
    assert admin.get("emailtokens", ns, "box") is None
    # Up to ~30 s in a fresh session: the collector learns of a new CRD at its discovery resync.
    wait_for(lambda: admin.get("secrets", ns, "box-oauth-client") is None, 60, what="the garbage collector")


async def test_an_edit_checked_against_an_old_version_is_refused(
    cluster: ControlPlane, admin: ApiClient, ns: str, callback: CallbackProcess
) -> None:
    """The resourceVersion read with the GitOps/created-by check goes along as the apply's precondition."""
    create(Page(callback), ns, "race", flow="DeviceCode")
    stale = admin.get("emailtokens", ns, "race")
    admin.patch("emailtokens", ns, "race", {"metadata": {"labels": {"app.kubernetes.io/instance": "mail"}}})
    client = kubernetes.config.new_client_from_config(config_file=str(cluster.admin_kubeconfig))
    form = replace(tokenform.form_of_object(stale), services=("IMAP", "SMTP"))
    with pytest.raises(SignInRefused) as refused:
        await TokenWriter(CallbackApi(client)).update(form, Credential(), stale)
    assert refused.value.reason == "ChangedMeanwhile"
    assert admin.get("emailtokens", ns, "race")["spec"]["services"] == ["IMAP"]
    client.close()

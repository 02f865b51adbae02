"""The callback's admin page names a missing permission in the API server's words (no "try again")."""

from __future__ import annotations

from pathlib import Path

import requests

from emailtoken_dev.devprovider import DevProviderThread
from tests.support.callback_process import CallbackProcess
from tests.support.cluster import ControlPlane
from tests.support.kube import ApiClient


def test_a_callback_without_rights_says_which_permission_is_missing(
    cluster: ControlPlane, admin: ApiClient, provider: DevProviderThread, namespace: str, tmp_path: Path
) -> None:
    admin.create(
        "serviceaccounts", namespace, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "cb"}}
    )
    kubeconfig = cluster.service_account_kubeconfig(namespace, "cb")  # a ServiceAccount with no Role at all
    callback = CallbackProcess(
        kubeconfig, tmp_path, ca_bundle=provider.ca_pem_path, extra_args=["--namespace", namespace]
    )
    callback.start()
    try:
        page = requests.get(callback.admin_url + "/", timeout=10).text
        assert 'cannot list resource "emailtokens"' in page.replace("&#34;", '"').replace("&quot;", '"')
        assert "try again" not in page
        confirm = requests.get(f"{callback.admin_url}/authorize/{namespace}/box", timeout=10)
        assert confirm.status_code == 500
        assert 'cannot get resource "emailtokens"' in confirm.text.replace("&#34;", '"').replace("&quot;", '"')
    finally:
        callback.stop()

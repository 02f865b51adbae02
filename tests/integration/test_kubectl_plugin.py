"""``kubectl emailtoken`` against the local Kubernetes API with the real operator running.

The plugin runs as its own process with a kubeconfig, exactly as kubectl would start it;
one test goes through the real ``kubectl`` binary (plugin discovery on ``$PATH``).
Checks the list and status output, that ``refresh`` makes the operator issue a new
token, that ``reauthorize`` on an app-only token changes nothing, and that the plugin
writes annotations only (never spec) and prints no secret.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from emailtoken_dev.devprovider import DevProviderThread
from tests.support.kube import ApiClient, KmockThread, free_env, wait_for
from tests.support.operator_process import OperatorProcess
from tests.support.system import need_binary
from tests.support.tokens import authorization_code, client_credentials, device_code

pytestmark = pytest.mark.usefixtures("operator")
SECRET = "plugin-client-secret"


def run_plugin(kube: KmockThread, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """``kubectl-emailtoken ARGS`` as a separate process with the test API's kubeconfig."""
    env = {**free_env(), "KUBECONFIG": str(kube.kubeconfig)}
    return subprocess.run(
        [sys.executable, "-m", "emailtoken.kubectl_plugin", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result.stdout


def app_token(provider: DevProviderThread, name: str, client_id: str) -> dict[str, Any]:
    return client_credentials(provider, name, client_id=client_id, mailbox="shared@contoso.com")


def ready(api: ApiClient, ns: str, name: str) -> bool:
    cond = api.condition(ns, name, "Ready")
    return bool(cond and cond["status"] == "True")


@pytest.fixture
def inbox(api: ApiClient, provider: DevProviderThread, namespace: str) -> dict[str, str]:
    """A Ready app-only token named ``inbox``; returns its consumer Secret data."""
    client_id = f"app-{namespace}"
    provider.add_client(client_id, SECRET, mailboxes=["shared@contoso.com"])
    api.create_secret(namespace, "app-secret", {"client_secret": SECRET})
    api.create("emailtokens", namespace, app_token(provider, "inbox", client_id))
    wait_for(lambda: ready(api, namespace, "inbox"), 30, what="Ready=True")
    # Events are posted in batches: wait for the first token's Event before looking at output.
    wait_for(lambda: any(e["reason"] == "Authorized" for e in api.events_for(namespace, "inbox")), 15)
    data = api.secret_data(namespace, "inbox")
    assert data is not None
    return data


def no_secrets(text: str, *values: str) -> None:
    leaked = [v[:6] + "…" for v in values if v and v in text]
    assert not leaked, f"secret values in the plugin output: {leaked}"


def test_list_shows_readiness_and_expiry(kube: KmockThread, namespace: str, inbox: dict[str, str]) -> None:
    out = ok(run_plugin(kube, "list", "-n", namespace))
    header, *rows = out.strip().splitlines()
    assert header.split() == [
        "NAME",
        "PROVIDER",
        "FLOW",
        "EMAIL",
        "READY",
        "STATUS",
        "EXPIRES",
        "LAST",
        "REFRESH",
        "AGE",
    ]
    (row,) = rows
    cells = row.split()
    assert cells[:6] == ["inbox", "Microsoft", "ClientCredentials", "shared@contoso.com", "True", "Ready"]
    assert cells[6] == "in" and cells[7].endswith("m")  # about an hour left: "in 59m"
    assert cells[9] == "ago"
    # All namespaces: a NAMESPACE column, this namespace among others.
    out = ok(run_plugin(kube, "list", "-A"))
    lines = out.strip().splitlines()
    assert lines[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert any(line.split()[:2] == [namespace, "inbox"] for line in lines[1:])
    # An empty namespace says so instead of printing an empty table.
    out = ok(run_plugin(kube, "list", "--namespace", "nothing-here"))
    assert out.strip() == "No EmailTokens found in namespace nothing-here."
    no_secrets(out, inbox["access_token"], SECRET)


def test_status_reads_like_a_description(
    api: ApiClient, kube: KmockThread, namespace: str, inbox: dict[str, str]
) -> None:
    out = ok(run_plugin(kube, "status", "inbox", "-n", namespace))
    status = api.get("emailtokens", namespace, "inbox")["status"]
    assert f"Namespace:     {namespace}" in out
    assert "Provider:      Microsoft (ClientCredentials)" in out
    assert "Account:       shared@contoso.com" in out
    assert "Phase:         Ready" in out
    assert "  Ready: True (TokenValid, since " in out
    assert "  Authorized: True (Authorized, since " in out
    assert f"  Expires:       {status['expiresAt']} (in " in out
    assert f"  Last refresh:  {status['lastRefreshTime']} (" in out
    assert f"  Next refresh:  {status['nextRefreshTime']} (in " in out
    assert "Events:" in out and "Authorized" in out.split("Events:")[1]
    assert "Redirect URI" not in out and "Device code" not in out  # app-only: nothing to sign in
    assert "Next step" not in out
    no_secrets(out, inbox["access_token"], inbox["xoauth2"], SECRET)
    # Not found is an error with a clear message.
    missing = run_plugin(kube, "status", "nope", "-n", namespace)
    assert missing.returncode == 1
    assert f'emailtoken "nope" in namespace "{namespace}" not found' in missing.stderr


def test_refresh_makes_the_operator_issue_a_new_token(
    api: ApiClient, provider: DevProviderThread, kube: KmockThread, namespace: str, inbox: dict[str, str]
) -> None:
    before = api.get("emailtokens", namespace, "inbox")
    calls = provider.count("token", client_id=f"app-{namespace}")
    out = ok(run_plugin(kube, "refresh", "inbox", "-n", namespace, "--wait", "--timeout", "60s"))
    assert "refreshed: the access token expires at" in out
    after = wait_for(
        lambda: (d := api.secret_data(namespace, "inbox")) and d["access_token"] != inbox["access_token"] and d,
        10,
        what="a new access token",
    )
    assert provider.token_info(after["access_token"])["active"]
    assert provider.count("token", client_id=f"app-{namespace}") == calls + 1
    token = api.get("emailtokens", namespace, "inbox")
    value = token["metadata"]["annotations"]["emailtoken.io/refresh-now"]
    assert token["status"]["handledAnnotations"]["refreshNow"] == value
    assert datetime.fromisoformat(value.replace("Z", "+00:00")) <= datetime.now(UTC)
    assert token["spec"] == before["spec"]  # annotations only, never spec
    # A second refresh right away is a new value, hence a new token again.
    ok(run_plugin(kube, "refresh", "inbox", "-n", namespace, "--wait", "--timeout", "60s"))
    assert provider.count("token", client_id=f"app-{namespace}") == calls + 2
    no_secrets(out, inbox["access_token"], after["access_token"], SECRET)


def test_reauthorize_on_an_app_only_token_is_a_no_op(
    api: ApiClient,
    provider: DevProviderThread,
    kube: KmockThread,
    namespace: str,
    inbox: dict[str, str],
    operator: OperatorProcess,
) -> None:
    calls = provider.count("token", client_id=f"app-{namespace}")
    out = ok(run_plugin(kube, "reauthorize", "inbox", "-n", namespace))
    assert "flow ClientCredentials has no sign-in to repeat" in out
    value = api.get("emailtokens", namespace, "inbox")["metadata"]["annotations"]["emailtoken.io/reauthorize"]
    wait_for(
        lambda: (
            (api.get("emailtokens", namespace, "inbox")["status"].get("handledAnnotations") or {}).get("reauthorize")
            == value
        ),
        20,
        what="the operator to record the request",
    )
    assert ready(api, namespace, "inbox")
    assert api.condition(namespace, "inbox", "Authorized")["status"] == "True"
    assert api.secret_data(namespace, "inbox")["access_token"] == inbox["access_token"]
    assert provider.count("token", client_id=f"app-{namespace}") == calls
    assert not [e for e in api.events_for(namespace, "inbox") if e["reason"] == "GrantDropped"]
    assert "Traceback" not in operator.log
    # Still fine afterwards: a refresh works as before.
    ok(run_plugin(kube, "refresh", "inbox", "-n", namespace, "--wait", "--timeout", "60s"))


def test_status_guides_a_token_awaiting_sign_in(
    api: ApiClient, provider: DevProviderThread, kube: KmockThread, namespace: str
) -> None:
    api.create_secret(namespace, "web-secret", {"client_secret": "web-app-secret-value"})
    alice = authorization_code(
        provider, "alice", client_id="web-app", mailbox="alice@contoso.com", secret="web-secret", services=["IMAP"]
    )
    api.create("emailtokens", namespace, alice)
    wait_for(lambda: (c := api.condition(namespace, "alice", "Authorized")) and c["reason"] == "AwaitingAuthorization")
    out = ok(run_plugin(kube, "status", "alice", "-n", namespace))
    assert "Provider:      Microsoft (AuthorizationCode)" in out
    assert "  Authorized: False (AwaitingAuthorization" in out
    assert "  Redirect URI:  https://emailtoken.example.test/callback  (register it at the provider)" in out
    assert f"Next step:     sign in as the mailbox: kubectl emailtoken authorize alice -n {namespace}" in out
    assert "  Expires:       -" in out
    no_secrets(out, "web-app-secret-value")
    listed = ok(run_plugin(kube, "list", "-n", namespace)).strip().splitlines()[1].split()
    assert listed[4:7] == ["False", "AwaitingAuthorization", "-"]


def test_status_shows_the_device_code(
    api: ApiClient, provider: DevProviderThread, kube: KmockThread, namespace: str
) -> None:
    client_id = f"device-{namespace}"
    provider.add_client(client_id, public=True)
    kiosk = device_code(provider, "kiosk", client_id=client_id, mailbox="bob@contoso.com", services=["IMAP"])
    api.create("emailtokens", namespace, kiosk)
    code = wait_for(lambda: (api.get("emailtokens", namespace, "kiosk").get("status") or {}).get("deviceCode"), 30)
    out = ok(run_plugin(kube, "status", "kiosk", "-n", namespace))
    assert f"  Device code:   {code['userCode']} at {code['verificationUri']}" in out
    assert f"  Code expires:  {code['expiresAt']} (in " in out
    assert f"Next step:     open {code['verificationUri']} and enter the code {code['userCode']}" in out
    assert "Redirect URI" not in out


def test_through_real_kubectl(kube: KmockThread, namespace: str, inbox: dict[str, str], tmp_path: Path) -> None:
    """kubectl finds kubectl-emailtoken on $PATH and hands it the flags after the plugin name."""
    kubectl = need_binary("kubectl")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "kubectl-emailtoken"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m emailtoken.kubectl_plugin "$@"\n')
    shim.chmod(0o755)
    env = {**free_env(), "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(
        [kubectl, "emailtoken", "list", "-n", namespace, "--context", "local", "--kubeconfig", str(kube.kubeconfig)],
        capture_output=True,
        text=True,
        env={k: v for k, v in env.items() if k != "KUBECONFIG"},
        timeout=60,
        check=False,
    )
    out = ok(result)
    assert out.splitlines()[1].split()[:5] == ["inbox", "Microsoft", "ClientCredentials", "shared@contoso.com", "True"]
    # An unknown context is a clear error, not a traceback.
    bad = run_plugin(kube, "list", "-n", namespace, "--context", "no-such-context")
    assert bad.returncode == 1 and "error:" in bad.stderr and "Traceback" not in bad.stderr

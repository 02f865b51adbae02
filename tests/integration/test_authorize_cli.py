"""`emailtoken authorize NAMESPACE/NAME` end to end: the real CLI process with a loopback redirect,
the local provider's sign-in page over HTTPS, the grant written through the Kubernetes API, and
the real operator publishing the token."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from emailtoken_dev.devprovider import DevProviderThread, redirect_params, sign_in
from tests.support.kube import ApiClient, KmockThread, free_env, wait_for
from tests.support.operator_process import REPO
from tests.support.signin import web_client, web_token

pytestmark = pytest.mark.usefixtures("operator")
MAILBOX = "carol@contoso.com"
CLIENT_SECRET = "cli-client-secret-value"


class AuthorizeProcess:
    """`python -m emailtoken authorize ...` with its output read line by line."""

    def __init__(self, kube: KmockThread, *args: str) -> None:
        env = {**free_env(), "KUBECONFIG": str(kube.kubeconfig)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "emailtoken", "authorize", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO,
        )
        self.lines: list[str] = []
        self._url = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if line.startswith("  http"):
                self._url.set()

    def sign_in_url(self, timeout: float = 30) -> str:
        if not self._url.wait(timeout):
            self.proc.kill()
            raise AssertionError(f"no URL printed:\n{''.join(self.lines)}\n{self.proc.stderr.read()}")
        return next(line.strip() for line in self.lines if line.startswith("  http"))

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        assert self.proc.stderr is not None
        return code, "".join(self.lines), self.proc.stderr.read()


def local(provider: DevProviderThread) -> list[str]:
    """The flags an installer would give for the local provider: its CA, and its host allowed."""
    return ["--ca-bundle", provider.ca_pem_path, "--allow-provider-host", "127.0.0.1"]


def browser() -> requests.Session:
    http = requests.Session()
    http.trust_env = False
    return http


def user_token(provider: DevProviderThread, name: str, client_id: str, mailbox: str = MAILBOX) -> dict[str, Any]:
    return web_token(provider, name, client_id, mailbox)


@pytest.fixture
def client_id(provider: DevProviderThread, api: ApiClient, namespace: str) -> Iterator[str]:
    # A loopback registration matches any port, as at Entra ID and Google.
    yield web_client(
        provider,
        api,
        namespace,
        f"cli-{namespace}",
        client_secret=CLIENT_SECRET,
        redirect_uris=["http://127.0.0.1/"],
        users=(MAILBOX, "mallory@contoso.com"),
    )


def ready(api: ApiClient, ns: str, name: str) -> bool:
    cond = api.condition(ns, name, "Ready")
    return bool(cond and cond["status"] == "True")


def test_loopback_sign_in_stores_grant_and_operator_makes_it_ready(
    api: ApiClient, provider: DevProviderThread, kube: KmockThread, namespace: str, client_id: str
):
    api.create("emailtokens", namespace, user_token(provider, "carol", client_id))
    wait_for(lambda: api.condition(namespace, "carol", "Authorized"), 30, what="AwaitingAuthorization")

    cli = AuthorizeProcess(
        kube,
        f"{namespace}/carol",
        "--no-browser",
        "--port",
        "0",
        "--ca-bundle",
        provider.ca_pem_path,
        "--allow-provider-host",
        "127.0.0.1",
    )
    url = cli.sign_in_url()
    assert url.startswith(provider.microsoft_authorize_url("contoso"))
    query = dict(redirect_params(url))
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert query["login_hint"] == MAILBOX
    redirect_uri = query["redirect_uri"]
    assert urlsplit(redirect_uri).hostname == "127.0.0.1" and urlsplit(redirect_uri).port

    # Something else on this machine hitting the port with a wrong state is refused and ignored.
    forged = browser().get(redirect_uri, params={"state": "forged", "code": "stolen"}, timeout=10)
    assert forged.status_code == 400 and "does not match" in forged.text
    assert browser().get(redirect_uri + "favicon.ico", timeout=10).status_code == 404

    location = sign_in(url, MAILBOX, verify=provider.ca_pem_path)
    assert location.startswith(redirect_uri)
    page = browser().get(location, timeout=60)
    assert page.status_code == 200, page.text
    assert f"{MAILBOX} is authorized for EmailToken {namespace}/carol" in page.text
    assert page.headers["Cache-Control"] == "no-store"

    status, out, err = cli.finish()
    assert status == 0, (out, err)
    assert f"Authorized {namespace}/carol as {MAILBOX}" in out
    assert "ignored a redirect with a wrong state" in err

    grant = api.secret_data(namespace, "emailtoken-grant-carol")
    assert grant is not None and grant["account"] == MAILBOX and grant["refresh_token"]
    wait_for(lambda: ready(api, namespace, "carol"), 30, what="Ready after the CLI sign-in")
    data = api.secret_data(namespace, "carol")
    info = provider.token_info(data["access_token"])
    assert info and info["active"] and info["email"] == MAILBOX
    status_obj = api.get("emailtokens", namespace, "carol")["status"]
    assert status_obj["account"] == MAILBOX and status_obj["phase"] == "Ready"

    code = redirect_params(location)["code"]
    for text in (out, err):
        for value in (code, grant["refresh_token"], data["access_token"], CLIENT_SECRET):
            assert value not in text


def test_wrong_account_is_refused_and_nothing_stored(
    api: ApiClient, provider: DevProviderThread, kube: KmockThread, namespace: str, client_id: str
):
    api.create("emailtokens", namespace, user_token(provider, "carol", client_id))
    cli = AuthorizeProcess(
        kube,
        f"{namespace}/carol",
        "--no-browser",
        "--ca-bundle",
        provider.ca_pem_path,
        "--allow-provider-host",
        "127.0.0.1",
    )
    location = sign_in(cli.sign_in_url(), "mallory@contoso.com", verify=provider.ca_pem_path)
    page = browser().get(location, timeout=60)
    assert page.status_code == 400
    assert "signed in as mallory@contoso.com, but this token is for carol@contoso.com" in page.text
    status, _, err = cli.finish()
    assert status == 1
    assert "AccountMismatch" in err and "nothing was stored" in err
    assert api.get("secrets", namespace, "emailtoken-grant-carol") is None


def test_cancelled_sign_in_reports_the_provider_error(
    api: ApiClient, provider: DevProviderThread, kube: KmockThread, namespace: str, client_id: str
):
    api.create("emailtokens", namespace, user_token(provider, "carol", client_id))
    cli = AuthorizeProcess(
        kube,
        f"{namespace}/carol",
        "--no-browser",
        "--ca-bundle",
        provider.ca_pem_path,
        "--allow-provider-host",
        "127.0.0.1",
    )
    location = sign_in(cli.sign_in_url(), MAILBOX, verify=provider.ca_pem_path, accept=False)
    assert "error=access_denied" in location
    page = browser().get(location, timeout=60)
    assert page.status_code == 400 and "access_denied" in page.text
    status, _, err = cli.finish()
    assert status == 1 and "ProviderError" in err and "access_denied" in err
    assert api.get("secrets", namespace, "emailtoken-grant-carol") is None


def test_timeout_and_usage_errors(
    api: ApiClient, provider: DevProviderThread, kube: KmockThread, namespace: str, client_id: str, workdir: Path
):
    api.create("emailtokens", namespace, user_token(provider, "carol", client_id))
    cli = AuthorizeProcess(
        kube,
        f"{namespace}/carol",
        "--no-browser",
        "--timeout",
        "2",
        "--ca-bundle",
        provider.ca_pem_path,
        "--allow-provider-host",
        "127.0.0.1",
    )
    cli.sign_in_url()
    status, _, err = cli.finish()
    assert status == 1 and "no sign-in arrived within 2s; nothing was stored" in err

    status, _, err = AuthorizeProcess(kube, f"{namespace}/nope", "--no-browser").finish()
    assert status == 1 and f"TokenNotFound: there is no EmailToken {namespace}/nope" in err

    api.create(
        "emailtokens",
        namespace,
        {
            "apiVersion": "emailtoken.io/v1alpha1",
            "kind": "EmailToken",
            "metadata": {"name": "robot"},
            "spec": {
                "provider": "Microsoft",
                "flow": "ClientCredentials",
                "tenantId": "contoso",
                "clientId": client_id,
                "clientSecretRef": {"name": "web-secret"},
                "emailAddress": "robot@contoso.com",
                "services": ["IMAP"],
                "tokenUrl": provider.microsoft_token_url("contoso"),
            },
        },
    )
    status, _, err = AuthorizeProcess(kube, f"{namespace}/robot", "--no-browser").finish()
    assert status == 1 and "FlowNotSupported" in err and "ClientCredentials" in err
    keyless = user_token(provider, "keyless", client_id)
    del keyless["spec"]["clientSecretRef"]
    keyless["spec"]["federatedCredential"] = {}
    api.create("emailtokens", namespace, keyless)
    status, out, err = AuthorizeProcess(kube, f"{namespace}/keyless", "--no-browser").finish()
    assert status == 1 and "federated credential" in err and "callback service's admin page" in err
    assert "http" not in out  # refused before any sign-in URL: no code is wasted
    assert api.get("secrets", namespace, "emailtoken-grant-carol") is None

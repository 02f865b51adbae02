"""The callback service refuses every way a sign-in can go wrong, with a clear page and nothing stored.

Real parts only: `emailtoken callback` as a child process, its admin page and /callback over
HTTP, the local provider's sign-in page over HTTPS, the real operator against the local
Kubernetes API. The last test scans every log for codes, tokens and secrets.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import requests

from emailtoken.callback import pkce
from emailtoken.callback.state import StateSealer
from emailtoken.model import TokenRef
from emailtoken_dev.devprovider import DevProviderThread, redirect_params, sign_in
from tests.support.callback_process import AdminSession, CallbackProcess, browser_get
from tests.support.kube import ApiClient, KmockThread, wait_for
from tests.support.operator_process import OperatorProcess
from tests.support.signin import assert_refused, grant_of, state_key_file, web_client, web_token, with_params

pytestmark = pytest.mark.usefixtures("operator")
ALICE = "alice.sec@contoso.com"
BOB = "bob.sec@contoso.com"
MALLORY = "mallory.sec@contoso.com"
CLIENT_SECRET = "callback-client-secret-value"
#: Values that must never show up in a log: codes seen, plus tokens read from Secrets at the end.
SEEN: set[str] = {CLIENT_SECRET}
LOGS: list[Path] = []


@pytest.fixture(scope="module")
def state_key(workdir: Path) -> Path:
    return state_key_file(workdir / "state-key")


@pytest.fixture(scope="module")
def callback(
    kube: KmockThread, provider: DevProviderThread, workdir: Path, state_key: Path
) -> Iterator[CallbackProcess]:
    cb = CallbackProcess(kube.kubeconfig, workdir, ca_bundle=provider.ca_pem_path, state_key_file=state_key).start()
    LOGS.append(cb.log_path)
    yield cb
    cb.stop()


@pytest.fixture
def client_id(provider: DevProviderThread, api: ApiClient, namespace: str, callback: CallbackProcess) -> str:
    return web_client(
        provider,
        api,
        namespace,
        f"web-{namespace}",
        client_secret=CLIENT_SECRET,
        redirect_uris=[callback.redirect_uri],
        users=(ALICE, BOB, MALLORY),
    )


@pytest.fixture
def admin(callback: CallbackProcess) -> AdminSession:
    return AdminSession(callback.admin_url)


def signed_in(provider: DevProviderThread, admin: AdminSession, ns: str, name: str, email: str, **kw: Any) -> str:
    """Press "Get Email Token" and sign in at the provider: the URL the browser is sent back to."""
    url = admin.start_url(ns, name)
    assert url.startswith(provider.microsoft_authorize_url("contoso"))
    location = sign_in(url, email, verify=provider.ca_pem_path, **kw)
    params = redirect_params(location)
    if "code" in params:
        SEEN.add(params["code"])
    return location


def refused(answer: requests.Response, status: int, reason: str, *texts: str) -> None:
    """Refused with a page that says so, and no redirect anywhere."""
    assert_refused(answer, status, reason, "Sign-in not completed", *texts)
    assert "Location" not in answer.headers


def no_grant(api: ApiClient, ns: str, name: str) -> None:
    assert grant_of(api, ns, name) is None


def test_forged_states_are_refused_and_do_not_burn_the_real_sign_in(
    api: ApiClient, provider: DevProviderThread, admin: AdminSession, namespace: str, client_id: str
):
    api.create("emailtokens", namespace, web_token(provider, "alice", client_id, ALICE))
    location = signed_in(provider, admin, namespace, "alice", ALICE)
    state = redirect_params(location)["state"]

    refused(browser_get(with_params(location, state="")), 400, "MissingState")
    refused(browser_get(with_params(location, state="made-up")), 400, "InvalidState", "not one this service issued")
    tampered = state[:-2] + ("AA" if not state.endswith("AA") else "BB")
    refused(browser_get(with_params(location, state=tampered)), 400, "InvalidState", "failed authentication")
    uid = api.get("emailtokens", namespace, "alice")["metadata"]["uid"]
    other_key, _ = StateSealer(b"x" * 32).seal(TokenRef(namespace, "alice", uid), verifier=pkce.new_verifier())
    refused(browser_get(with_params(location, state=other_key)), 400, "InvalidState", "failed authentication")
    no_grant(api, namespace, "alice")

    good = browser_get(location)
    assert good.status_code == 200, good.text[-1500:]
    assert f"{ALICE}</strong> is authorized for EmailToken <code>{namespace}/alice</code>" in good.text
    wait_for(lambda: (c := api.condition(namespace, "alice", "Ready")) and c["status"] == "True", 30, what="Ready")
    data = api.secret_data(namespace, "alice")
    assert provider.token_info(data["access_token"])["email"] == ALICE


def test_expired_state_is_refused(
    api: ApiClient,
    provider: DevProviderThread,
    kube: KmockThread,
    workdir: Path,
    state_key: Path,
    namespace: str,
    client_id: str,
):
    quick = CallbackProcess(
        kube.kubeconfig,
        workdir,
        ca_bundle=provider.ca_pem_path,
        state_key_file=state_key,
        extra_args=["--state-ttl", "2"],
        name="callback-quick",
    ).start()
    LOGS.append(quick.log_path)
    try:
        provider.add_client(client_id, CLIENT_SECRET, redirect_uris=[quick.redirect_uri])
        api.create("emailtokens", namespace, web_token(provider, "alice", client_id, ALICE))
        location = signed_in(provider, AdminSession(quick.admin_url), namespace, "alice", ALICE)
        time.sleep(2.5)
        refused(browser_get(location), 400, "StateExpired", "has expired")
        no_grant(api, namespace, "alice")
    finally:
        quick.stop()


def test_code_moved_between_sign_ins_and_replaced_token_are_refused(
    api: ApiClient,
    provider: DevProviderThread,
    admin: AdminSession,
    namespace: str,
    client_id: str,
):
    api.create("emailtokens", namespace, web_token(provider, "alice", client_id, ALICE))
    api.create("emailtokens", namespace, web_token(provider, "bob", client_id, BOB))
    to_alice = signed_in(provider, admin, namespace, "alice", ALICE)

    # Alice's code moved into another sign-in (bob's): the verifier sealed in bob's state does not fit it.
    to_bob = signed_in(provider, admin, namespace, "bob", BOB)
    moved = with_params(to_bob, code=redirect_params(to_alice)["code"])
    refused(browser_get(moved), 502, "ExchangeFailed")
    no_grant(api, namespace, "alice")
    no_grant(api, namespace, "bob")

    # The token was deleted and created again (new uid) while its sign-in was in flight.
    api.delete("emailtokens", namespace, "alice")
    wait_for(lambda: api.get("emailtokens", namespace, "alice") is None, 10)
    api.create("emailtokens", namespace, web_token(provider, "alice", client_id, ALICE))
    refused(browser_get(to_alice), 409, "TokenReplaced")
    no_grant(api, namespace, "alice")


def test_replayed_state_and_code_are_refused(
    api: ApiClient, provider: DevProviderThread, admin: AdminSession, namespace: str, client_id: str
):
    api.create("emailtokens", namespace, web_token(provider, "alice", client_id, ALICE))
    location = signed_in(provider, admin, namespace, "alice", ALICE)
    assert browser_get(location).status_code == 200
    # Once Ready, the operator has spent (and rotated) the grant; it will not touch it for ~40 minutes.
    wait_for(lambda: (c := api.condition(namespace, "alice", "Ready")) and c["status"] == "True", 30, what="Ready")
    before = api.get("secrets", namespace, "emailtoken-grant-alice")

    refused(browser_get(location), 400, "AlreadyUsed", "already completed")
    fresh = signed_in(provider, admin, namespace, "alice", ALICE)
    old_code_new_state = with_params(fresh, code=redirect_params(location)["code"])
    refused(browser_get(old_code_new_state), 502, "ExchangeFailed")
    refused(browser_get(old_code_new_state), 502, "ExchangeFailed")
    assert api.get("secrets", namespace, "emailtoken-grant-alice")["data"] == before["data"]
    # A failed attempt consumed nothing: the fresh sign-in with its own code still completes, once.
    assert browser_get(fresh).status_code == 200
    refused(browser_get(fresh), 400, "AlreadyUsed")


def test_wrong_account_is_refused(
    api: ApiClient, provider: DevProviderThread, admin: AdminSession, namespace: str, client_id: str
):
    api.create("emailtokens", namespace, web_token(provider, "alice", client_id, ALICE))
    location = signed_in(provider, admin, namespace, "alice", MALLORY)
    refused(
        browser_get(location),
        403,
        "AccountMismatch",
        f"signed in as {MALLORY}, but this token is for {ALICE}; nothing was stored",
    )
    no_grant(api, namespace, "alice")
    assert api.get("secrets", namespace, "alice") is None


def test_provider_error_is_shown_plainly_and_escaped(
    api: ApiClient, provider: DevProviderThread, admin: AdminSession, namespace: str, client_id: str
):
    api.create("emailtokens", namespace, web_token(provider, "alice", client_id, ALICE))
    location = signed_in(provider, admin, namespace, "alice", ALICE, accept=False)
    assert redirect_params(location)["error"] == "access_denied"
    answer = browser_get(with_params(location, error_description="<script>alert(1)</script> declined"))
    refused(answer, 400, "ProviderError", "cancelled or consent was refused", "access_denied")
    assert "<script>alert(1)" not in answer.text and "&lt;script&gt;alert(1)" in answer.text
    no_grant(api, namespace, "alice")


def test_error_answers_and_bad_codes_cannot_cancel_a_sign_in(
    api: ApiClient,
    provider: DevProviderThread,
    admin: AdminSession,
    callback: CallbackProcess,
    namespace: str,
    client_id: str,
):
    """Issue #15: whoever holds a valid state (it is in the URL) must not be able to spend it."""
    api.create("emailtokens", namespace, web_token(provider, "alice", client_id, ALICE))
    location = signed_in(provider, admin, namespace, "alice", ALICE)
    state = redirect_params(location)["state"]
    cancel = f"{callback.redirect_uri}?{urlencode({'state': state, 'error': 'access_denied'})}"
    refused(browser_get(cancel), 400, "ProviderError", "access_denied")
    forged = f"{callback.redirect_uri}?{urlencode({'state': state[:-4] + 'AAAA', 'error': 'access_denied'})}"
    refused(browser_get(forged), 400, "InvalidState")
    refused(browser_get(with_params(location, code="not-the-code")), 502, "ExchangeFailed")
    no_grant(api, namespace, "alice")
    answer = browser_get(location)
    assert answer.status_code == 200, answer.text[-1500:]
    assert api.get("secrets", namespace, "emailtoken-grant-alice") is not None


def test_no_open_redirects(
    api: ApiClient,
    provider: DevProviderThread,
    admin: AdminSession,
    callback: CallbackProcess,
    namespace: str,
    client_id: str,
):
    evil = "https://evil.example/steal"
    http = requests.Session()
    http.trust_env = False
    answers = []
    for base in (callback.public_url, callback.admin_url):
        for path in ("//evil.example/", "/%2F%2Fevil.example", "/callback/..//evil.example", "/\\evil.example"):
            answer = http.get(base + path, params={"next": evil}, allow_redirects=False, timeout=10)
            assert answer.status_code == 404, (base, path, answer.status_code)
            answers.append(answer)
    assert http.post(callback.public_url + "/callback", allow_redirects=False, timeout=10).status_code == 404
    assert http.head(callback.public_url + "/callback", allow_redirects=False, timeout=10).status_code == 404
    assert http.get(callback.public_url + "/", allow_redirects=False, timeout=10).status_code == 404
    assert http.get(callback.public_url + "/authorize/x/y", allow_redirects=False, timeout=10).status_code == 404

    api.create("emailtokens", namespace, web_token(provider, "alice", client_id, ALICE))
    start = admin.http.post(
        f"{admin.url}/tokens/{namespace}/alice/authorize",
        params={"next": evil},
        data={"csrf": admin.csrf(), "next": evil, "redirect_uri": evil},
        allow_redirects=False,
        timeout=30,
    )
    assert start.status_code == 303 and start.headers["Location"].startswith(
        provider.microsoft_authorize_url("contoso")
    )
    assert "evil.example" not in start.headers["Location"]
    location = sign_in(start.headers["Location"], ALICE, verify=provider.ca_pem_path)
    SEEN.add(redirect_params(location)["code"])
    done = browser_get(with_params(location, next=evil, redirect_uri=evil, return_to="//evil.example"))
    answers.append(done)
    assert done.status_code == 200 and "evil.example" not in done.text
    assert f'href="{callback.admin_url}/"' in done.text
    for answer in answers:
        assert "evil.example" not in answer.headers.get("Location", "")


def test_admin_actions_need_csrf_token_same_origin_and_loopback_host(
    api: ApiClient, provider: DevProviderThread, admin: AdminSession, namespace: str, client_id: str
):
    api.create("emailtokens", namespace, web_token(provider, "alice", client_id, ALICE))
    url = f"{admin.url}/tokens/{namespace}/alice/authorize"
    token = admin.csrf()
    refused(admin.http.post(url, data={}, allow_redirects=False, timeout=10), 403, "CsrfFailed")
    refused(admin.http.post(url, data={"csrf": "0" * 64}, allow_redirects=False, timeout=10), 403, "CsrfFailed")
    stranger = requests.Session()
    stranger.trust_env = False
    refused(stranger.post(url, data={"csrf": token}, allow_redirects=False, timeout=10), 403, "CsrfFailed")
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        answer = admin.http.post(url, data={"csrf": token}, headers=headers, allow_redirects=False, timeout=10)
        refused(answer, 403, "CsrfFailed")
    rebinding = admin.http.get(admin.url + "/", headers={"Host": "evil.example"}, timeout=10)
    assert rebinding.status_code == 421 and "answers only to localhost" in rebinding.text
    ok = admin.http.post(url, data={"csrf": token}, headers={"Origin": admin.url}, allow_redirects=False, timeout=30)
    assert ok.status_code == 303


def test_security_headers_on_every_kind_of_answer(callback: CallbackProcess, admin: AdminSession):
    answers = [
        admin.index(),
        browser_get(callback.public_url + "/callback"),
        browser_get(callback.public_url + "/nothing-here"),
        browser_get(callback.admin_url + "/nothing-here"),
    ]
    for answer in answers:
        headers = answer.headers
        assert headers["Content-Security-Policy"].startswith("default-src 'none'; style-src 'sha256-")
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Referrer-Policy"] == "no-referrer"
        assert headers["Cache-Control"] == "no-store"
        assert headers["X-Content-Type-Options"] == "nosniff"
    cookie = answers[0].headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert browser_get(callback.public_url + "/healthz").text == "ok\n"


def _all_tokens(api: ApiClient) -> list[dict[str, Any]]:
    answer = api.http.get(api.url + "/apis/emailtoken.io/v1alpha1/emailtokens", timeout=10)
    answer.raise_for_status()
    return answer.json().get("items") or []


def test_confirm_page_behind_status_authorize_url(
    api: ApiClient, provider: DevProviderThread, admin: AdminSession, namespace: str, client_id: str
):
    api.create("emailtokens", namespace, web_token(provider, "alice", client_id, ALICE))
    page = admin.http.get(f"{admin.url}/authorize/{namespace}/alice", timeout=10)
    assert page.status_code == 200
    assert f"<h1>EmailToken {namespace}/alice</h1>" in page.text
    assert f'aria-label="Get Email Token for {namespace}/alice"' in page.text
    assert f"sign in as <strong>{ALICE}</strong>" in page.text
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    start = admin.http.post(
        f"{admin.url}/tokens/{namespace}/alice/authorize", data={"csrf": token}, allow_redirects=False, timeout=30
    )
    assert start.status_code == 303

    refused(admin.http.get(f"{admin.url}/authorize/{namespace}/nobody", timeout=10), 404, "TokenNotFound")
    app_only = web_token(provider, "robot", client_id, "robot@contoso.com")
    app_only["spec"]["flow"] = "ClientCredentials"
    api.create("emailtokens", namespace, app_only)
    page = admin.http.get(f"{admin.url}/authorize/{namespace}/robot", timeout=10)
    assert (
        page.status_code == 200
        and "app-only, nothing to sign in" in page.text
        and '<button type="submit"' not in page.text
    )
    refused(
        admin.http.post(
            f"{admin.url}/tokens/{namespace}/robot/authorize", data={"csrf": token}, allow_redirects=False, timeout=10
        ),
        409,
        "FlowNotSupported",
    )


def test_logs_hold_no_codes_tokens_or_secrets(
    api: ApiClient, kube: KmockThread, callback: CallbackProcess, operator: OperatorProcess
):
    """Runs last in this module: everything every process logged, against every value seen."""
    values = set(SEEN)
    namespaces = {t["metadata"]["namespace"] for t in _all_tokens(api)}
    for ns in namespaces:
        for secret in api.list("secrets", ns):
            data = api.secret_data(ns, secret["metadata"]["name"]) or {}
            for key in ("access_token", "xoauth2", "refresh_token", "client_secret"):
                if data.get(key):
                    values.add(data[key])
    assert len(values) > 3, "the scan needs values to look for"
    logs = {path.name: path.read_text(errors="replace") for path in LOGS}
    logs["operator"] = operator.log
    assert "sign-in for" in logs[callback.log_path.name]
    for name, text in logs.items():
        leaked = [v[:6] + "..." for v in values if v in text]
        assert not leaked, f"{name} log contains secret values: {leaked}"
        assert "code=" not in text and "state=" not in text, f"{name} log contains a query string"

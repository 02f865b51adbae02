"""A real headless Chromium clicks through the admin page: "Get Email Token", the provider's sign-in
page, the callback's success page, and back to a Ready token; then the same through `emailtoken demo`.

Everything is real and local: Debian chromium driven by Playwright, the callback service and the
operator as child processes, the Kubernetes API (kmock) and the OAuth provider over HTTPS.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from emailtoken_dev.devprovider import DevProviderThread
from tests.support.callback_process import CallbackProcess
from tests.support.kube import ApiClient, KmockThread, free_env, wait_for
from tests.support.operator_process import REPO, OperatorProcess
from tests.support.system import need_binary

pytestmark = pytest.mark.chromium
NS = "mail"
ALICE = "alice@contoso.com"
SCREENSHOT = REPO / "docs" / "admin-page.png"
#: Set EMAILTOKEN_UPDATE_SCREENSHOT=1 to refresh docs/admin-page.png; otherwise the shot goes to a temp dir
#: so that `make test` leaves the work tree clean.
UPDATE_SCREENSHOT = os.environ.get("EMAILTOKEN_UPDATE_SCREENSHOT") == "1"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]


@pytest.fixture(scope="module")
def chromium_path() -> str:
    return need_binary("chromium", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, chromium_path: str) -> Iterator[dict[str, Any]]:
    workdir = tmp_path_factory.mktemp("browser")
    provider = DevProviderThread(token_lifetime=3600).start()
    kube = KmockThread(workdir).start()
    callback = CallbackProcess(kube.kubeconfig, workdir, ca_bundle=provider.ca_pem_path).start()
    operator = OperatorProcess(
        kube.kubeconfig,
        workdir,
        ca_bundle=provider.ca_pem_path,
        extra_args=["--redirect-base-url", callback.public_url, "--admin-url", callback.admin_url],
    ).start()
    operator.wait_log("emailtoken operator started")
    try:
        yield {
            "provider": provider,
            "kube": kube,
            "callback": callback,
            "operator": operator,
            "api": ApiClient(kube.url),
            "workdir": workdir,
        }
    finally:
        operator.stop()
        callback.stop()
        kube.stop()
        provider.stop()


def _tokens(provider: DevProviderThread, callback: CallbackProcess) -> list[dict[str, Any]]:
    common = {"tenantId": "contoso", "tokenUrl": provider.microsoft_token_url("contoso")}
    return [
        {
            "metadata": {"name": "alice"},
            "spec": {
                "provider": "Microsoft",
                "clientId": "web-app",
                "clientSecretRef": {"name": "web-app"},
                "emailAddress": ALICE,
                "services": ["IMAP", "SMTP"],
                "authorizationUrl": provider.microsoft_authorize_url("contoso"),
                **common,
            },
        },
        {
            "metadata": {"name": "shared-inbox"},
            "spec": {
                "provider": "Microsoft",
                "flow": "ClientCredentials",
                "clientId": "daemon-app",
                "clientSecretRef": {"name": "daemon-app"},
                "emailAddress": "shared@contoso.com",
                "services": ["IMAP"],
                **common,
            },
        },
        {
            "metadata": {"name": "reports"},
            "spec": {
                "provider": "Google",
                "clientId": "reports.apps.googleusercontent.com",
                "clientSecretRef": {"name": "google-app"},
                "emailAddress": "reports@example.com",
                "services": ["Gmail"],
                "authorizationUrl": provider.google_auth_url,
                "tokenUrl": provider.google_token_url,
            },
        },
    ]


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def test_get_email_token_in_a_real_browser(stack: dict[str, Any], browser: Any):
    provider: DevProviderThread = stack["provider"]
    callback: CallbackProcess = stack["callback"]
    api: ApiClient = stack["api"]
    provider.add_client("web-app", "web-app-secret", redirect_uris=[callback.redirect_uri], name="Mail tasks")
    provider.add_client("daemon-app", "daemon-secret", mailboxes=["shared@contoso.com"])
    provider.add_client("reports.apps.googleusercontent.com", "g-secret", provider="google")
    provider.add_user(ALICE)
    for name, value in (("web-app", "web-app-secret"), ("daemon-app", "daemon-secret"), ("google-app", "g-secret")):
        api.create_secret(NS, name, {"client_secret": value})
    for token in _tokens(provider, callback):
        api.create("emailtokens", NS, {"apiVersion": "emailtoken.io/v1alpha1", "kind": "EmailToken", **token})
    wait_for(lambda: (c := api.condition(NS, "shared-inbox", "Ready")) and c["status"] == "True", 30)
    authorize_url = wait_for(lambda: (api.get("emailtokens", NS, "alice").get("status") or {}).get("authorizeUrl"), 30)
    assert authorize_url == f"{callback.admin_url}/authorize/{NS}/alice"

    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 720}, locale="en-US")
    csp_violations: list[str] = []
    page = context.new_page()
    page.on("console", lambda m: csp_violations.append(m.text) if "Content Security Policy" in m.text else None)
    try:
        page.goto(callback.admin_url + "/")
        assert page.title() == "Email tokens · emailtoken"
        assert page.get_by_role("heading", name="Email tokens", level=1).is_visible()
        row = page.locator(f"#token-{NS}-alice")
        assert "AwaitingAuthorization" in row.inner_text()
        assert "app-only, nothing to sign in" in page.locator(f"#token-{NS}-shared-inbox").inner_text()
        assert page.locator("#redirect-uri").input_value() == callback.redirect_uri
        copy = page.get_by_role("button", name="Copy")
        assert copy.is_visible(), "the copy button is shown only when its script ran (CSP hash ok)"
        copy.click()
        expect_text(page, "#redirect-uri-status", ("Copied to the clipboard.", "Selected: press Ctrl+C"))

        page.get_by_role("button", name=f"Get Email Token for {NS}/alice").click()
        page.wait_for_url(re.compile(re.escape(provider.microsoft_authorize_url("contoso")) + r"\?"))
        assert page.locator("#app-name").inner_text() == "Mail tasks"
        assert page.locator("#email").input_value() == ALICE  # login_hint
        page.fill("#password", "password")
        page.click("#accept")
        page.wait_for_url(re.compile(re.escape(callback.redirect_uri) + r"\?"))
        assert page.get_by_role("heading", name="Mailbox authorized").is_visible()
        status = page.get_by_role("status").inner_text()
        assert f"{ALICE} is authorized for EmailToken {NS}/alice at Microsoft." in status
        assert "expires at" in page.locator("main").inner_text()

        page.get_by_role("link", name="Back to the admin page").click()
        page.wait_for_url(callback.admin_url + "/")
        deadline = time.monotonic() + 30
        while "Ready" not in row.locator(".state").inner_text():
            assert time.monotonic() < deadline, row.inner_text()
            time.sleep(0.5)
            page.reload()
        text = row.inner_text()
        expires = api.get("emailtokens", NS, "alice")["status"]["expiresAt"]
        assert expires.replace("T", " ") in text and re.search(r"in (59m|1h)\b", text), text
        assert "Get Email Token" in text  # signing in again stays possible

        shot = SCREENSHOT if UPDATE_SCREENSHOT else stack["workdir"] / "admin-page.png"
        page.screenshot(path=str(shot))
        assert _png_size(shot) == (1280, 720)
        assert not csp_violations, csp_violations
    finally:
        context.close()

    data = api.secret_data(NS, "alice")
    info = provider.token_info(data["access_token"])
    assert info and info["active"] and info["email"] == ALICE
    assert data["username"] == ALICE and data["expires_at"] == expires


def test_admin_page_at_narrow_and_wide_widths(stack: dict[str, Any], browser: Any):
    """Issue #18: every sign-in button fully visible without sideways scrolling at 1400 px (it was cut off),
    a card per token on a phone; and the page does not send you to the admin page you are on."""
    callback: CallbackProcess = stack["callback"]
    context = browser.new_context(viewport={"width": 1400, "height": 900}, locale="en-US")
    page = context.new_page()
    try:
        page.goto(callback.admin_url + "/")
        text = page.locator("main").inner_text()
        assert "use the callback service's admin page" not in text
        assert "No sign-in yet: press Get Email Token" in page.locator(f"#token-{NS}-reports").inner_text()
        buttons = page.get_by_role("button", name=re.compile("^Get Email Token for "))
        assert buttons.count() >= 2
        for width in (1920, 1400, 1280, 1024, 390):
            page.set_viewport_size({"width": width, "height": 900})
            assert page.evaluate("document.documentElement.scrollWidth") <= width, f"page scrolls sideways at {width}"
            wrap = page.evaluate("(e => [e.scrollWidth, e.clientWidth])(document.querySelector('.table-wrap'))")
            assert wrap[0] <= wrap[1], f"the token table scrolls sideways at {width} px: {wrap}"
            for i in range(buttons.count()):
                box = buttons.nth(i).bounding_box()
                assert box and box["x"] >= 0 and box["x"] + box["width"] <= width, (width, box)
        page.set_viewport_size({"width": 390, "height": 900})
        row = page.locator(f"#token-{NS}-alice")
        assert row.evaluate("e => getComputedStyle(e).display") == "block", "a card per token on narrow screens"
        label = row.locator("td.time").first.evaluate("e => getComputedStyle(e, '::before').content")
        assert label == '"Expires: "', label  # each value says what it is
        page.screenshot(path=str(stack["workdir"] / "admin-page-narrow.png"), full_page=True)
    finally:
        context.close()


def expect_text(page: Any, selector: str, options: tuple[str, ...], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = page.locator(selector).inner_text()
        if any(option in text for option in options):
            return
        time.sleep(0.1)
    raise AssertionError(f"{selector} says {page.locator(selector).inner_text()!r}")


def test_demo_sign_in_end_to_end_in_a_real_browser(browser: Any):
    """`emailtoken demo` as a user runs it: open the printed admin page, sign in as the demo user."""
    from emailtoken_dev.demo import DEMO_PASSWORD, DEMO_USER

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "emailtoken",
            "demo",
            "--lifetime",
            "30",
            "--duration",
            "60",
            "--admin-port",
            "0",
            "--public-port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**free_env(), "KUBECONFIG": "/nonexistent"},
        cwd=REPO,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        admin = wait_for(
            lambda: next((m.group(1) for line in lines if (m := re.match(r"admin page: (\S+)", line))), None),
            30,
            what="the admin page URL",
        )
        assert any(f"sign in as {DEMO_USER} with password {DEMO_PASSWORD}" in line for line in lines)
        wait_for(
            lambda: any(line.startswith("alice-mailbox") and "AwaitingAuthorization" in line for line in lines), 30
        )
        context = browser.new_context(ignore_https_errors=True)
        page = context.new_page()
        try:
            page.goto(admin)
            page.get_by_role("button", name="Get Email Token for demo/alice-mailbox").click()
            page.wait_for_selector("#password")
            page.fill("#email", DEMO_USER)
            page.fill("#password", DEMO_PASSWORD)
            page.click("#accept")
            page.wait_for_url(re.compile(r"^http://127\.0\.0\.1:\d+/callback\?"))
            assert page.get_by_role("heading", name="Mailbox authorized").is_visible()
        finally:
            context.close()
        wait_for(
            lambda: any(re.match(r"alice-mailbox\s.*\sTrue\s.*\sReady\s+[0-9a-f]{12}$", line) for line in lines),
            30,
            what="alice-mailbox Ready in the demo's table",
        )
    finally:
        proc.terminate()
        proc.wait(30)
    assert proc.returncode == 0, proc.stderr.read()[-3000:]
    assert "Traceback" not in proc.stderr.read()

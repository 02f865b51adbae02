"""Warnings before a token dies, from the real operator process: status, Event and metric.

Also the opt-in login probe (``spec.loginProbe``): the operator logs in to a real SMTP server
(aiosmtpd, checking tokens at the local provider) with each new token and shows the outcome,
with the likely cause and its fix, in the condition MailLogin; it connects only where the
installer allows (``--allow-mail-host 127.0.0.1:<aiosmtpd's port>`` here), so a probe naming
any other port gets MailHostNotAllowed and no connection.

A Google app in "Testing" gets refresh tokens that end after 7 days, and Google's token
answers say so (``refresh_token_expires_in``); the local provider does the same for a client
registered with ``testing=True`` (here: 2 days, inside the default 3-day warning window).
The grant is stored the way an older callback wrote it (without the end), so the operator
learns the end from its own refresh. An EWS token is marked as retiring.
"""

from __future__ import annotations

import contextlib
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from emailtoken_dev.devprovider import DevProviderThread
from tests.integration.conftest import REDIRECT_BASE
from tests.support.faultkit import (
    create_grant,
    google_delegated_spec,
    google_sign_in,
    token_manifest,
    wait_quiet,
    warnings,
)
from tests.support.kube import ApiClient, KmockThread, wait_for
from tests.support.mailservers import SmtpXoauth2Server, introspection_validator
from tests.support.operator_process import OperatorProcess
from tests.support.ports import free_port

TESTING_LIFETIME = timedelta(days=2)
GAUGE = "emailtoken_token_reauthorization_required_timestamp_seconds"


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def smtp_port() -> int:
    """The one mail server port the operator may probe (the login probe's aiosmtpd listens there)."""
    return free_port()


@pytest.fixture(scope="module")
def operator(
    kube: KmockThread, provider: DevProviderThread, workdir: Path, metrics_port: int, smtp_port: int
) -> Iterator[OperatorProcess]:
    """The conftest operator plus ``--metrics-port`` and one allowed mail server (default --grant-warning: 3d)."""
    op = OperatorProcess(
        kube.kubeconfig,
        workdir,
        ca_bundle=provider.ca_pem_path,
        extra_args=[
            *("--redirect-base-url", REDIRECT_BASE, "--metrics-port", str(metrics_port)),
            *("--allow-mail-host", f"127.0.0.1:{smtp_port}"),
        ],
        name="operator-warnings",
    ).start()
    op.wait_log("emailtoken operator started")
    yield op
    op.stop()


def gauge(port: int, namespace: str, name: str) -> float | None:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == GAUGE and sample.labels.get("namespace") == namespace and sample.labels["name"] == name:
                return float(sample.value)
    return None


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_google_testing_grant_warns_in_status_event_and_metric(
    operator: OperatorProcess, api: ApiClient, provider: DevProviderThread, namespace: str, metrics_port: int
) -> None:
    provider.settings.testing_refresh_lifetime = TESTING_LIFETIME.total_seconds()
    client_id, secret, mailbox = f"gtest-{namespace}", f"cs-{uuid.uuid4().hex}", f"box-{namespace}@example.com"
    provider.add_client(client_id, secret, provider="google", testing=True)
    provider.add_user(mailbox, provider="google")
    signed_in = google_sign_in(provider, client_id, secret, mailbox)
    stated = int(signed_in["refresh_token_expires_in"])
    assert TESTING_LIFETIME.total_seconds() - 60 < stated <= TESTING_LIFETIME.total_seconds()
    api.create_secret(namespace, "app-secret", {"client_secret": secret})
    create_grant(api, namespace, "gmail", signed_in["refresh_token"], mailbox, signed_in.get("scope", ""))
    api.create("emailtokens", namespace, token_manifest("gmail", google_delegated_spec(provider, client_id, mailbox)))

    cond = wait_for(
        lambda: (c := api.condition(namespace, "gmail", "GrantExpiring")) and c["status"] == "True" and c,
        30,
        what="GrantExpiring=True",
    )
    status = api.get("emailtokens", namespace, "gmail")["status"]
    deadline = when(status["reauthorizationRequiredBy"])
    expected = datetime.now(UTC) + TESTING_LIFETIME
    assert abs((deadline - expected).total_seconds()) < 120, (deadline, expected)
    assert cond["reason"] == "StatedLifetime"
    assert status["reauthorizationRequiredBy"] in cond["message"] and "Testing" in cond["message"]
    assert api.condition(namespace, "gmail", "Ready")["status"] == "True", "the token itself is fine today"
    events = wait_for(lambda: warnings(api, namespace, "gmail", "GrantExpiring"), 10, what="a GrantExpiring Event")
    assert status["reauthorizationRequiredBy"] in events[0]["message"]
    assert wait_for(lambda: gauge(metrics_port, namespace, "gmail"), 10, what="the gauge") == deadline.timestamp()
    # Later steps (a refresh-now) restate the end but post no second Event in the same window.
    api.patch("emailtokens", namespace, "gmail", {"metadata": {"annotations": {"emailtoken.io/refresh-now": "1"}}})
    wait_for(
        lambda: api.get("emailtokens", namespace, "gmail")["status"].get("handledAnnotations", {}).get("refreshNow"),
        30,
        what="refresh-now handled",
    )
    # kopf posts Events asynchronously, after the status patch: give a second one time to show up.
    wait_quiet(2)
    assert len(warnings(api, namespace, "gmail", "GrantExpiring")) == 1


def test_an_ews_token_is_marked_retiring(
    operator: OperatorProcess, api: ApiClient, provider: DevProviderThread, namespace: str, metrics_port: int
) -> None:
    client_id = f"ews-{namespace}"
    provider.add_client(client_id, "ews-secret", mailboxes=["shared@contoso.com"])
    api.create_secret(namespace, "app-secret", {"client_secret": "ews-secret"})
    spec = {
        "provider": "Microsoft",
        "flow": "ClientCredentials",
        "tenantId": "contoso",
        "clientId": client_id,
        "clientSecretRef": {"name": "app-secret"},
        "emailAddress": "shared@contoso.com",
        "services": ["EWS"],
        "tokenUrl": provider.microsoft_token_url("contoso"),
    }
    api.create("emailtokens", namespace, token_manifest("ews", spec))
    cond = wait_for(lambda: api.condition(namespace, "ews", "ServiceRetiring"), 30, what="ServiceRetiring")
    assert (cond["status"], cond["reason"]) == ("True", "EWSRetirement")
    assert "2027-04-01" in cond["message"] and "MC1227454" in cond["message"]
    (event,) = wait_for(lambda: warnings(api, namespace, "ews", "ServiceRetiring"), 10, what="the Warning Event")
    assert "2026-10-01" in event["message"]
    wait_for(lambda: api.condition(namespace, "ews", "Ready")["status"] == "True", 30, what="Ready")
    status = api.get("emailtokens", namespace, "ews")["status"]
    assert "reauthorizationRequiredBy" not in status and api.condition(namespace, "ews", "GrantExpiring") is None
    assert gauge(metrics_port, namespace, "ews") is None, "app-only tokens have no grant to lose"


SMTP_AUTH_DISABLED = "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox."


def _probe_spec(provider: DevProviderThread, namespace: str, mailbox: str, server: str) -> dict[str, Any]:
    """An app-only SMTP token of the local provider's that probes ``server`` over plain SMTP."""
    client_id = f"probe-{namespace}"
    provider.add_client(client_id, "probe-secret", mailboxes=[mailbox])
    return {
        "provider": "Microsoft",
        "flow": "ClientCredentials",
        "tenantId": "contoso",
        "clientId": client_id,
        "clientSecretRef": {"name": "app-secret"},
        "emailAddress": mailbox,
        "services": ["SMTP"],
        "tokenUrl": provider.microsoft_token_url("contoso"),
        "loginProbe": {"protocol": "SMTP", "server": server, "tls": "None"},
    }


def test_a_login_probe_shows_the_cause_and_the_fix_on_the_token(
    operator: OperatorProcess, api: ApiClient, provider: DevProviderThread, namespace: str, smtp_port: int
) -> None:
    """spec.loginProbe: each new token logs in to the mail server (aiosmtpd here); a refusal names its fix."""
    mailbox = f"probe-{namespace}@contoso.com"
    api.create_secret(namespace, "app-secret", {"client_secret": "probe-secret"})
    validator = introspection_validator(provider.introspection_url or "", ca_file=provider.ca_pem_path)
    with SmtpXoauth2Server(validator, port=smtp_port) as server:
        spec = _probe_spec(provider, namespace, mailbox, f"{server.host}:{server.port}")
        api.create("emailtokens", namespace, token_manifest("probe", spec))
        ok = wait_for(lambda: api.condition(namespace, "probe", "MailLogin"), 30, what="MailLogin")
        assert (ok["status"], ok["reason"]) == ("True", "LoginSucceeded"), ok
        assert server.logins == [mailbox]
        with server.refusing_with(SMTP_AUTH_DISABLED):
            api.patch(
                "emailtokens", namespace, "probe", {"metadata": {"annotations": {"emailtoken.io/refresh-now": "1"}}}
            )
            failed = wait_for(
                lambda: (c := api.condition(namespace, "probe", "MailLogin")) and c["status"] == "False" and c,
                30,
                what="MailLogin=False",
            )
    assert failed["reason"] == "SmtpAuthDisabled"
    assert f"fix: Set-CASMailbox -Identity '{mailbox}' -SmtpClientAuthenticationDisabled $false" in failed["message"]
    assert api.condition(namespace, "probe", "Ready")["status"] == "True", "the token itself is fine"
    (event,) = wait_for(lambda: warnings(api, namespace, "probe", "MailLoginFailed"), 10, what="the Warning Event")
    assert "SmtpAuthDisabled" in event["message"]
    token = api.secret_data(namespace, "probe")["access_token"]
    assert token not in failed["message"] and token not in event["message"]


def test_a_login_probe_connects_only_to_an_allowed_mail_host(
    operator: OperatorProcess, api: ApiClient, provider: DevProviderThread, namespace: str, smtp_port: int
) -> None:
    """A tenant's probe naming another port (here: a loopback listener) is refused before any connection."""
    mailbox = f"scan-{namespace}@contoso.com"
    api.create_secret(namespace, "app-secret", {"client_secret": "probe-secret"})
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        port = listener.getsockname()[1]
        assert port != smtp_port, "127.0.0.1 is allowed, on aiosmtpd's port only"
        spec = _probe_spec(provider, namespace, mailbox, f"127.0.0.1:{port}")
        api.create("emailtokens", namespace, token_manifest("scan", spec))
        cond = wait_for(lambda: api.condition(namespace, "scan", "MailLogin"), 30, what="MailLogin")
        (event,) = wait_for(lambda: warnings(api, namespace, "scan", "MailLoginFailed"), 10, what="the Warning Event")
        with contextlib.suppress(BlockingIOError):
            pytest.fail(f"the operator connected to the refused host: {listener.accept()}")
    assert (cond["status"], cond["reason"]) == ("False", "MailHostNotAllowed"), cond
    assert f"127.0.0.1:{port}" in cond["message"] and "--allow-mail-host" in cond["message"]
    assert event["message"].startswith("MailHostNotAllowed: ")
    assert api.condition(namespace, "scan", "Ready")["status"] == "True", "the token itself is published"
    token = api.secret_data(namespace, "scan")["access_token"]
    assert token not in cond["message"] and token not in event["message"]

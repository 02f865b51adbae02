"""The whole chain: the operator (against the local Kubernetes API) issues a token from the
local provider; the token from the consumer Secret, mounted like the kubelet does, logs in to
a real Dovecot (IMAP, POP3, submission) and to an aiosmtpd server with XOAUTH2; check-mail
reports both outcomes; after a refresh the same mount yields the new token without restart."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from emailtoken import checkmail
from emailtoken.consumer import MountedToken
from emailtoken_dev.devprovider import DevProviderThread
from tests.support.kube import ApiClient, KmockThread, wait_for
from tests.support.mail_fixtures import *  # noqa: F403  (dovecot_factory, smtp_sink, ...)
from tests.support.mailservers import SmtpXoauth2Server, introspection_validator, smtp_login
from tests.support.operator_process import OperatorProcess
from tests.support.secretvolume import SecretVolume

MAILBOX = "shared@contoso.com"
NS = "mail"
TOKEN = "shared-mailbox"


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DevProviderThread, ApiClient, OperatorProcess]]:
    workdir = tmp_path_factory.mktemp("mail-e2e")
    provider = DevProviderThread(token_lifetime=3600).start()
    kube = KmockThread(workdir).start()
    api = ApiClient(kube.url)
    operator = OperatorProcess(kube.kubeconfig, workdir, ca_bundle=provider.ca_pem_path).start()
    provider.add_client("mail-app", "mail-app-secret", mailboxes=[MAILBOX])
    api.create_secret(NS, "mail-app", {"client_secret": "mail-app-secret"})
    api.create(
        "emailtokens",
        NS,
        {
            "apiVersion": "emailtoken.io/v1alpha1",
            "kind": "EmailToken",
            "metadata": {"name": TOKEN},
            "spec": {
                "provider": "Microsoft",
                "flow": "ClientCredentials",
                "tenantId": "contoso",
                "clientId": "mail-app",
                "clientSecretRef": {"name": "mail-app"},
                "emailAddress": MAILBOX,
                "services": ["IMAP", "POP", "SMTP"],
                "tokenUrl": provider.microsoft_token_url("contoso"),
            },
        },
    )
    wait_for(lambda: (c := api.condition(NS, TOKEN, "Ready")) and c["status"] == "True", 30, what="Ready")
    yield provider, api, operator
    operator.stop()
    kube.stop()
    provider.stop()


@pytest.fixture
def mount(chain, tmp_path: Path) -> tuple[SecretVolume, Path]:
    _, api, _ = chain
    root = tmp_path / "emailtokens"
    volume = SecretVolume(root / TOKEN)
    volume.update(api.secret_data(NS, TOKEN))
    return volume, root


@pytest.mark.dovecot
def test_operator_token_logs_in_to_dovecot(chain, mount, dovecot_factory) -> None:
    provider, api, _ = chain
    server = dovecot_factory(provider.introspection_url)
    _, root = mount
    mounted = MountedToken(TOKEN, root)
    token = mounted.read()
    assert token.username == MAILBOX
    assert server.imap_login(MAILBOX, token.access_token).ok
    assert server.pop3_login(MAILBOX, token.access_token).ok
    assert server.submission_login(MAILBOX, token.access_token).ok

    # Refused: a wrong token, an expired one, another user's.
    wrong = server.imap_login(MAILBOX, "not-a-token", source_address=server.source_address())
    assert not wrong.ok
    other = server.imap_login("someone-else@contoso.com", token.access_token, source_address=server.source_address())
    assert not other.ok
    provider.advance_clock(3601)
    try:
        expired = server.imap_login(MAILBOX, token.access_token, source_address=server.source_address())
        assert not expired.ok
    finally:
        provider.advance_clock(-3601)

    # check-mail, the doctor: both outcomes with exit codes and plain words.
    out, err = io.StringIO(), io.StringIO()
    code = checkmail.run(
        checkmail.build_parser().parse_args(
            ["--token", TOKEN, "--mount-root", str(root), "--imap", f"{server.host}:{server.imap_port}"]
        ),
        out=out,
        err=err,
    )
    assert code == 0, out.getvalue() + err.getvalue()
    assert token.access_token not in out.getvalue() + err.getvalue()
    bad_root = root.parent / "bad"
    SecretVolume(bad_root / TOKEN).update({**api.secret_data(NS, TOKEN), "access_token": "revoked-token-value"})
    out, err = io.StringIO(), io.StringIO()
    code = checkmail.run(
        checkmail.build_parser().parse_args(
            [
                "--token",
                TOKEN,
                "--mount-root",
                str(bad_root),
                "--imap",
                f"{server.host}:{server.imap_port}",
                "--source-address",
                server.source_address(),
            ]
        ),
        out=out,
        err=err,
    )
    assert code == 1
    assert "revoked-token-value" not in out.getvalue() + err.getvalue()
    assert out.getvalue() + err.getvalue()
    server.stop()


def test_operator_token_logs_in_to_aiosmtpd(chain, mount) -> None:
    provider, _, _ = chain
    _, root = mount
    server = SmtpXoauth2Server(introspection_validator(provider.introspection_url)).start()
    try:
        mounted = MountedToken(TOKEN, root)
        assert smtp_login(server.host, server.port, mounted.xoauth2()).ok
        assert not smtp_login(
            server.host, server.port, MountedToken(TOKEN, root).read().xoauth2(user="intruder@contoso.com")
        ).ok
    finally:
        server.stop()


def test_refresh_reaches_the_mount_without_restart(chain, mount) -> None:
    provider, api, _ = chain
    volume, root = mount
    mounted = MountedToken(TOKEN, root)
    before = mounted.access_token()
    api.patch("emailtokens", NS, TOKEN, {"metadata": {"annotations": {"emailtoken.io/refresh-now": "e2e-1"}}})
    fresh = wait_for(
        lambda: (d := api.secret_data(NS, TOKEN)) and d["access_token"] != before and d, 30, what="a refreshed token"
    )
    volume.update(fresh)  # what the kubelet does on its next sync
    after = mounted.access_token()  # same object, no restart
    assert after == fresh["access_token"] != before
    assert provider.token_info(after)["active"]

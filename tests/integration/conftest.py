"""Fixtures that run the real operator process against kmock and the local OAuth provider."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from emailtoken_dev.devprovider import DevProviderThread
from tests.support.kube import ApiClient, KmockThread
from tests.support.operator_process import OperatorProcess

REDIRECT_BASE = "https://emailtoken.example.test"


#: what HTTP clients read for a proxy (tests calling local endpoints clear them: :func:`no_proxy`)
PROXY_VARIABLES = (
    "https_proxy",
    "HTTPS_PROXY",
    "http_proxy",
    "HTTP_PROXY",
    "no_proxy",
    "NO_PROXY",
    "all_proxy",
    "ALL_PROXY",
)


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Local endpoints are called directly whatever proxy the machine running the tests names
    (a module uses it with ``pytestmark = pytest.mark.usefixtures("no_proxy")``)."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A CA of this module's own for local HTTPS endpoints."""
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    """:func:`ca` as a PEM file, as ``--ca-bundle`` takes it."""
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("it")


@pytest.fixture(scope="module")
def provider() -> Iterator[DevProviderThread]:
    p = DevProviderThread(token_lifetime=3600).start()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def kube(workdir: Path) -> Iterator[KmockThread]:
    k = KmockThread(workdir).start()
    yield k
    k.stop()


@pytest.fixture(scope="module")
def api(kube: KmockThread) -> ApiClient:
    return ApiClient(kube.url)


@pytest.fixture(scope="module")
def operator(kube: KmockThread, provider: DevProviderThread, workdir: Path) -> Iterator[OperatorProcess]:
    op = OperatorProcess(
        kube.kubeconfig, workdir, ca_bundle=provider.ca_pem_path, extra_args=["--redirect-base-url", REDIRECT_BASE]
    ).start()
    op.wait_log("emailtoken operator started")
    yield op
    op.stop()


@pytest.fixture
def namespace() -> str:
    """A fresh namespace per test keeps tests independent on one API server."""
    return f"t-{uuid.uuid4().hex[:8]}"

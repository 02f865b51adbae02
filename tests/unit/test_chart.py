"""The Helm chart and the generated kustomize manifests, checked offline.

The chart is rendered and linted with helm-python-sdk (Helm's own Go code, no cluster),
every rendered built-in object is validated against the Kubernetes 1.32 OpenAPI schema
(kubernetes-validate, strict: unknown fields fail), and the rules that matter for this
operator are asserted on the objects: restricted pod security on every container, one
operator replica with Recreate (more only with leader election, then RollingUpdate), RBAC
rules equal to operator/emailtoken/rbac.py, the Lease Role in the release namespace only,
the callback's Secret access confined to the namespaces it serves, only /callback public,
the CRD as a template with the keep policy, and alert and dashboard queries that name only
metrics the operator really exports (a real MetricsObserver's exposition).
The kustomize base and overlays must be what deploy/generate.py would write now, and
`kubectl kustomize` of them must equal a fresh render of the chart.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import random
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "charts" / "emailtoken-operator"
CRDS_DIR = ROOT / "crds"
KUBE_VERSION = "1.32.0"
RELEASE = "emailtoken-operator"
NAMESPACE = "emailtoken-system"

try:
    from emailtoken import rbac
except ImportError:  # the package is not installed: use the source root
    sys.path.insert(0, str(ROOT / "operator"))
    from emailtoken import rbac
from emailtoken import cli, mailhosts, metrics, runner  # noqa: E402  (after the source-root fallback)
from emailtoken.settings import OperatorConfig  # noqa: E402

try:
    from tests.support.system import need_binary
except ImportError:
    sys.path.insert(0, str(ROOT))
    from tests.support.system import need_binary

Obj = dict[str, Any]

STATE_KEY = {"stateKeySecret": {"name": "callback-state-key", "key": "state-key"}}
PUBLIC_URL = "https://mail-auth.example.com"
SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "ingress": {
        "callback": {
            "redirectBaseUrl": PUBLIC_URL,
            "ingress": {
                "enabled": True,
                "className": "nginx",
                "tlsSecretName": "mail-auth-tls",
                "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"},
            },
        }
    },
    "networkPolicy": {
        "networkPolicy": {
            "enabled": True,
            "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
        }
    },
    "networkPolicyNoPeers": {"networkPolicy": {"enabled": True, "callbackFrom": []}},
    "serviceMonitor": {"operator": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}}},
    "watchNamespaces": {"watchNamespaces": ["mail", "billing"]},
    "pdb": {"callback": {"replicaCount": 2, **STATE_KEY}},
    "pdbOneReplica": {"callback": {"pdb": {"enabled": True}}},
    "pdbDisabled": {"callback": {"replicaCount": 2, "pdb": {"enabled": False}, **STATE_KEY}},
    "callbackDisabled": {"callback": {"enabled": False}},
    "monitoring": {
        "commonLabels": {"team": "mail", "example.com/cost-centre": "42"},
        "operator": {
            "serviceMonitor": {"enabled": True},
            "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
            "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "Mail"}},
        },
    },
    "crdsOff": {"crds": {"enabled": False}},
    "crdsNotKept": {"crds": {"keep": False}},
    "quiet": {"operator": {"logLevel": "warning"}, "callback": {"logLevel": "error", "adminUrl": ""}},
    "spread": {
        "operator": {
            "replicaCount": 2,
            "topologySpreadConstraints": [
                {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule"}
            ],
        },
        "callback": {
            "topologySpreadConstraints": [
                {
                    "maxSkew": 1,
                    "topologyKey": "topology.kubernetes.io/zone",
                    "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": {"matchLabels": {"tier": "edge"}},
                }
            ]
        },
    },
    "hotStandby": {"operator": {"replicaCount": 2}},
    "privateProvider": {
        "providers": {"allowedHosts": ["idp.corp.example", "*.login.example"]},
        "mail": {"allowedHosts": ["imap.corp.example", "*.mail.corp.example", "dovecot.mail.svc:1143"]},
    },
    "noLeaderElection": {"operator": {"leaderElection": {"enabled": False}}},
    "scheduling": {
        "imagePullSecrets": [{"name": "regcred"}],
        "image": {"digest": "sha256:" + "a" * 64},
        "operator": {
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "mail", "effect": "NoSchedule"}],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}
                        ]
                    }
                }
            },
            "podAnnotations": {"example.com/team": "mail"},
            "podLabels": {"team": "mail"},
            "priorityClassName": "system-cluster-critical",
            "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
            "extraArgs": ["--ca-bundle", "/etc/ca/ca.crt"],
            "extraVolumes": [{"name": "ca", "configMap": {"name": "corp-ca"}}],
            "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/ca", "readOnly": True}],
        },
        "callback": {"nodeSelector": {"kubernetes.io/os": "linux"}, "podAnnotations": {"example.com/team": "mail"}},
    },
}


def _merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(a))
    for key, value in b.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) else value
        )
    return out


EVERYTHING: dict[str, Any] = {}
for _name in (
    "ingress",
    "networkPolicy",
    "serviceMonitor",
    "pdb",
    "scheduling",
    "hotStandby",
    "monitoring",
    "spread",
):
    EVERYTHING = _merge(EVERYTHING, SCENARIOS[_name])
EVERYTHING["watchNamespaces"] = ["mail", "billing"]
SCENARIOS["everything"] = EVERYTHING

CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
CRD_NAME = "emailtokens.emailtoken.io"
LEASE_ROLE = f"{RELEASE}-leader-election"
RESTRICTED_USER = 65532


@pytest.fixture(scope="module")
def chart() -> helm_python.Chart:
    return helm_python.Chart.load(CHART_DIR)


def render(chart: helm_python.Chart, values: Mapping[str, Any]) -> tuple[list[Obj], str]:
    """Objects of the rendered templates, and NOTES.txt."""
    rendered = chart.render(copy.deepcopy(dict(values)), name=RELEASE, namespace=NAMESPACE)
    objects: list[Obj] = []
    notes = ""
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects, notes


@pytest.fixture(scope="module", params=sorted(SCENARIOS))
def scenario(request: pytest.FixtureRequest, chart: helm_python.Chart) -> tuple[str, dict[str, Any], list[Obj]]:
    values = SCENARIOS[request.param]
    objects, _ = render(chart, values)
    return request.param, values, objects


def of_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def component(obj: Obj) -> str:
    return obj["metadata"]["labels"]["app.kubernetes.io/component"]


def one(objects: list[Obj], kind: str, comp: str) -> Obj:
    found = [o for o in of_kind(objects, kind) if component(o) == comp]
    assert len(found) == 1, f"expected one {kind} of {comp}, got {len(found)}"
    return found[0]


def containers(pod_spec: Obj) -> Iterator[Obj]:
    yield from pod_spec.get("initContainers") or []
    yield from pod_spec["containers"]


def merged(values: Mapping[str, Any], chart: helm_python.Chart) -> dict[str, Any]:
    return chart.merge_values(copy.deepcopy(dict(values)))


# --------------------------------------------------------------------------- lint & schema


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_lint_strict_is_clean(name: str) -> None:
    report = helm_python.lint(CHART_DIR, SCENARIOS[name], strict=True, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] == []
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == []


def test_chart_metadata(chart: helm_python.Chart) -> None:
    meta = chart.metadata
    assert meta["apiVersion"] == "v2"
    assert meta["appVersion"] == "0.1.0"
    assert meta["kubeVersion"] == ">=1.28.0-0", "CEL fieldPath/reason need 1.28+"
    assert chart.schema is not None and chart.schema["additionalProperties"] is False


def test_every_scenario_satisfies_the_schema(chart: helm_python.Chart) -> None:
    for values in SCENARIOS.values():
        chart.validate_schema(copy.deepcopy(values))


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"unknownKey": 1}, "unknownKey"),
        ({"operator": {"replicas": 2}}, "replicas"),
        ({"image": {"tag": "latest"}}, "tag"),
        ({"callback": {"redirectBaseUrl": "https://mail-auth.example.com/callback"}}, "redirectBaseUrl"),
        ({"callback": {"redirectBaseUrl": "http://mail-auth.example.com"}}, "redirectBaseUrl"),
        ({"callback": {"redirectBaseUrl": "http://10.0.0.7:8080"}}, "redirectBaseUrl"),
        ({"watchNamespaces": ["Mail_Apps"]}, "watchNamespaces"),
        ({"mail": {"allowedHosts": ["imap.example.com:port"]}}, "allowedHosts"),
        ({"mail": {"allowedHosts": ["imap.example.com:0"]}}, "allowedHosts"),
        ({"mail": {"allowedHosts": ["imap.example.com:99999"]}}, "allowedHosts"),
        ({"mail": {"allowedHosts": ["imap.example.com:65536"]}}, "allowedHosts"),
        ({"mail": {"allowedHosts": ["[::1]:0"]}}, "allowedHosts"),
        ({"mail": {"allowedHosts": ["[1:2]:993"]}}, "allowedHosts"),
        ({"mail": {"allowedHosts": ["[:::]"]}}, "allowedHosts"),
        ({"operator": {"logFormat": "xml"}}, "logFormat"),
        ({"operator": {"replicaCount": 0}}, "replicaCount"),
        ({"operator": {"leaderElection": {"enabled": "yes"}}}, "enabled"),
        # kopf peering was removed: an old values file says so instead of being half-applied
        ({"operator": {"peering": {"enabled": True}}}, "peering"),
        ({"operator": {"logLevel": "verbose"}}, "logLevel"),
        ({"callback": {"logLevel": "trace"}}, "logLevel"),
        ({"callback": {"adminUrl": "localhost:8081"}}, "adminUrl"),
        ({"commonLabels": {"app.kubernetes.io/name": "mine"}}, "invalid propertyName"),
        ({"crds": {"install": True}}, "install"),
        ({"operator": {"topologySpreadConstraints": [{"maxSkew": 1}]}}, "topologyKey"),
        ({"operator": {"prometheusRule": {"enabled": True, "expiringWithinSeconds": 0}}}, "expiringWithinSeconds"),
    ],
)
def test_schema_rejects_bad_values(chart: helm_python.Chart, values: dict[str, Any], needle: str) -> None:
    with pytest.raises(helm_python.HelmError, match=needle):
        chart.validate_schema(values)
    with pytest.raises(helm_python.HelmError):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)


def test_every_mail_host_the_schema_pattern_admits_is_one_the_operator_takes() -> None:
    """Random entries: whatever the schema's pattern lets through, mailhosts.parse_entry accepts."""
    schema = json.loads((CHART_DIR / "values.schema.json").read_text(encoding="utf-8"))
    pattern = re.compile(schema["properties"]["mail"]["properties"]["allowedHosts"]["items"]["pattern"])
    rng = random.Random(7)
    groups = ("", "0", "1", "ffff", "ABCD", "12345", ":", "1.2")
    admitted = 0
    for _ in range(20000):
        v6 = ":".join(rng.choice(groups) for _ in range(rng.randint(1, 10)))
        entry = f"[{v6}]" + rng.choice(("", ":0", ":1", ":993", ":65535", ":65536", ":099999"))
        if pattern.fullmatch(entry):
            admitted += 1
            mailhosts.parse_entry(entry)
    assert admitted > 300, "the random entries must exercise the pattern"


@pytest.mark.parametrize(
    "entry", ["imap.example.com:1", "imap.example.com:65535", "*.mail.example:993", "[::1]:1143", "imap.example.com"]
)
def test_mail_hosts_the_schema_accepts_start_the_operator(chart: helm_python.Chart, entry: str) -> None:
    """The schema must not let through an entry the operator refuses at start (exit 2: a crash loop)."""
    chart.validate_schema({"mail": {"allowedHosts": [entry]}})
    mailhosts.parse_entry(entry)


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"callback": {"ingress": {"enabled": True}}}, "https://"),
        ({"callback": {"replicaCount": 2}}, "stateKeySecret"),
        ({"callback": {"adminPort": 8080}}, "must differ"),
        ({"operator": {"replicaCount": 2, "leaderElection": {"enabled": False}}}, "leaderElection"),
        ({"operator": {"prometheusRule": {"enabled": True}}}, "serviceMonitor"),
    ],
)
def test_template_rejects_unsafe_combinations(chart: helm_python.Chart, values: dict[str, Any], needle: str) -> None:
    with pytest.raises(helm_python.HelmError, match=needle):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)


# ------------------------------------------------------------------ validity of the objects


def check_crd_object_shape(obj: Obj) -> None:
    """Objects of kinds kubernetes-validate has no schema for: the parts we rely on."""
    assert set(obj) <= {"apiVersion", "kind", "metadata", "spec"}
    assert obj["metadata"]["name"]
    if obj["kind"] == "ServiceMonitor":
        assert obj["apiVersion"] == "monitoring.coreos.com/v1"
        spec = obj["spec"]
        assert set(spec) == {"selector", "namespaceSelector", "endpoints"}
        assert spec["selector"]["matchLabels"]
        assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
        for endpoint in spec["endpoints"]:
            assert set(endpoint) <= {"port", "path", "scheme", "interval", "scrapeTimeout", "honorLabels"}
            assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
            assert endpoint["interval"].endswith("s") and endpoint["scrapeTimeout"].endswith("s")
            assert endpoint["honorLabels"] is True  # the token series' own `namespace` label stays
    else:
        assert obj["kind"] == "PrometheusRule"
        assert obj["apiVersion"] == "monitoring.coreos.com/v1"
        for group in obj["spec"]["groups"]:
            assert set(group) == {"name", "rules"}
            for rule in group["rules"]:
                assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}
                assert re.fullmatch(r"[A-Z][A-Za-z]+", rule["alert"])
                assert re.fullmatch(r"\d+[smh]", rule["for"])
                assert rule["labels"]["severity"] in {"warning", "critical"}
                assert set(rule["annotations"]) == {"summary", "description"}


def test_every_object_is_valid(scenario: tuple[str, dict[str, Any], list[Obj]]) -> None:
    _, _, objects = scenario
    assert objects
    for obj in objects:
        if obj["kind"] in CRD_KINDS:
            check_crd_object_shape(obj)
        else:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def test_names_are_unique_and_namespaced_correctly(scenario: tuple[str, dict[str, Any], list[Obj]]) -> None:
    _, values, objects = scenario
    keys = [(o["apiVersion"], o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys))
    watched = set(values.get("watchNamespaces") or [])
    for obj in objects:
        ns = obj["metadata"].get("namespace")
        if obj["kind"] in {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}:
            assert ns is None
        elif obj["kind"] in {"Role", "RoleBinding"} and obj["metadata"]["name"] == LEASE_ROLE:
            assert ns == NAMESPACE
        elif obj["kind"] in {"Role", "RoleBinding"}:
            assert ns in watched
        else:
            assert ns == NAMESPACE


def test_standard_labels(scenario: tuple[str, dict[str, Any], list[Obj]]) -> None:
    _, values, objects = scenario
    common = values.get("commonLabels") or {}
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "emailtoken-operator"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        expected = {"crds"} if obj["kind"] == "CustomResourceDefinition" else {"operator", "callback"}
        assert labels["app.kubernetes.io/component"] in expected
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == "emailtoken-operator-0.1.0"
        assert common.items() <= labels.items()
        if obj["kind"] == "Deployment":  # the pods carry them too, the selector does not
            assert common.items() <= obj["spec"]["template"]["metadata"]["labels"].items()
            assert not set(common) & set(obj["spec"]["selector"]["matchLabels"])


def rendered_crd(objects: list[Obj]) -> Obj | None:
    found = of_kind(objects, "CustomResourceDefinition")
    assert len(found) <= 1
    return found[0] if found else None


def test_crd_is_a_template_that_helm_upgrades_and_keeps(chart: helm_python.Chart) -> None:
    """Not in crds/ (Helm installs that once and never upgrades it): a template, equal to
    crds/ in everything but the chart's labels and the keep annotation, switched by crds.*."""
    assert chart.crds == [] and not list((CHART_DIR / "crds").glob("*"))
    repo = [doc for p in sorted(CRDS_DIR.glob("*.yaml")) for doc in yaml.safe_load_all(p.read_text()) if doc]
    assert [c["metadata"]["name"] for c in repo] == [CRD_NAME]
    crd = rendered_crd(render(chart, {})[0])
    assert crd is not None
    assert {k: v for k, v in crd.items() if k != "metadata"} == {k: v for k, v in repo[0].items() if k != "metadata"}
    assert crd["metadata"]["name"] == CRD_NAME
    assert repo[0]["metadata"]["labels"].items() <= crd["metadata"]["labels"].items()
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    kubernetes_validate.validate(crd, KUBE_VERSION, strict=True)
    not_kept = rendered_crd(render(chart, SCENARIOS["crdsNotKept"])[0])
    assert not_kept is not None and "annotations" not in not_kept["metadata"]
    argo = {"argocd.argoproj.io/sync-options": "Delete=false"}
    for keep, expected in ((True, {"helm.sh/resource-policy": "keep", **argo}), (False, argo)):
        annotated = rendered_crd(render(chart, {"crds": {"keep": keep, "annotations": argo}})[0])
        assert annotated is not None and annotated["metadata"]["annotations"] == expected
    assert rendered_crd(render(chart, SCENARIOS["crdsOff"])[0]) is None


# --------------------------------------------------------------------------- pod security


def test_restricted_pod_security_everywhere(scenario: tuple[str, dict[str, Any], list[Obj]]) -> None:
    _, _, objects = scenario
    deployments = of_kind(objects, "Deployment")
    assert deployments
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == RESTRICTED_USER
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
        tmp_volumes = [v["name"] for v in pod["volumes"] if "emptyDir" in v]
        for container in containers(pod):
            sc = container["securityContext"]
            assert sc["runAsNonRoot"] is True
            assert sc["runAsUser"] == RESTRICTED_USER
            assert sc["allowPrivilegeEscalation"] is False
            assert sc.get("privileged", False) is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts.get("/tmp") in tmp_volumes, "read-only root needs a writable /tmp"
            assert container["resources"]["requests"] and container["resources"]["limits"]
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert container["readinessProbe"]["httpGet"]["path"] in {"/healthz", "/readyz"}
            assert not container["image"].endswith(":latest")


def test_images_default_to_the_app_version(chart: helm_python.Chart) -> None:
    objects, _ = render(chart, {})
    images = {c["image"] for d in of_kind(objects, "Deployment") for c in d["spec"]["template"]["spec"]["containers"]}
    assert images == {"ghcr.io/emailtoken-operator/emailtoken-operator:0.1.0"}
    objects, _ = render(chart, SCENARIOS["scheduling"])
    images = {c["image"] for d in of_kind(objects, "Deployment") for c in d["spec"]["template"]["spec"]["containers"]}
    assert images == {"ghcr.io/emailtoken-operator/emailtoken-operator@sha256:" + "a" * 64}


# ------------------------------------------------------------------------------ operator


def test_operator_is_a_single_writer(scenario: tuple[str, dict[str, Any], list[Obj]], chart: helm_python.Chart) -> None:
    _, values, objects = scenario
    v = merged(values, chart)["operator"]
    operator = one(objects, "Deployment", "operator")
    args = args_of(operator)
    assert operator["spec"]["replicas"] == v["replicaCount"]
    if v["replicaCount"] == 1:
        assert operator["spec"]["strategy"] == {"type": "Recreate"}
    else:
        # Old and new pods may overlap only because the Lease picks one writer.
        assert v["leaderElection"]["enabled"] and "--leader-election" in args
        assert operator["spec"]["strategy"] == {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        }
    if v["leaderElection"]["enabled"]:
        assert "--leader-election" in args and "--no-leader-election" not in args
        assert option_values(args, "--lease-namespace") == [NAMESPACE]
        assert option_values(args, "--lease-name") == [RELEASE]
    else:
        assert "--no-leader-election" in args and "--leader-election" not in args
        assert operator["spec"]["replicas"] == 1
    assert not [p for p in of_kind(objects, "PodDisruptionBudget") if component(p) == "operator"]


def test_termination_grace_outlasts_the_stop_grace(chart: helm_python.Chart) -> None:
    """The kubelet waits longer than the operator's stop grace (provider timeout + 5 s,
    OperatorConfig.stop_grace), so a refresh in flight stores its rotated refresh token."""
    for timeout in (None, 50):
        values = {} if timeout is None else {"operator": {"providerTimeout": timeout}}
        operator = one(render(chart, values)[0], "Deployment", "operator")
        expected = 20 if timeout is None else timeout
        assert option_values(args_of(operator), "--provider-timeout") == [str(expected)]
        grace = operator["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace > OperatorConfig(provider_timeout=expected).stop_grace
        assert grace == expected + 10


def args_of(deployment: Obj) -> list[str]:
    return deployment["spec"]["template"]["spec"]["containers"][0]["args"]


def option_values(args: list[str], option: str) -> list[str]:
    return [args[i + 1] for i, arg in enumerate(args) if arg == option]


def test_operator_command_line(scenario: tuple[str, dict[str, Any], list[Obj]], chart: helm_python.Chart) -> None:
    _, values, objects = scenario
    v = merged(values, chart)
    args = args_of(one(objects, "Deployment", "operator"))
    assert args[0] == "run"
    if v["watchNamespaces"]:
        assert "--all-namespaces" not in args
        assert option_values(args, "--namespace") == v["watchNamespaces"]
    else:
        assert "--all-namespaces" in args and "--namespace" not in args
    assert option_values(args, "--health-port") == ["8080"]
    assert option_values(args, "--metrics-port") == ["9090"]
    assert option_values(args, "--log-format") == ["json"]
    assert option_values(args, "--log-level") == [v["operator"]["logLevel"]]
    assert "--peering" not in args and "--standalone" not in args
    expected_redirect = [v["callback"]["redirectBaseUrl"]] if v["callback"]["enabled"] else []
    assert option_values(args, "--redirect-base-url") == expected_redirect
    # status.authorizeUrl links to the admin page only where there is one.
    expected_admin = [v["callback"]["adminUrl"]] if v["callback"]["enabled"] and v["callback"]["adminUrl"] else []
    assert option_values(args, "--admin-url") == expected_admin
    # Both components that talk to providers get the installer's extra provider hosts.
    for component in ("operator", "callback") if v["callback"]["enabled"] else ("operator",):
        component_args = args_of(one(objects, "Deployment", component))
        assert option_values(component_args, "--allow-provider-host") == v["providers"]["allowedHosts"]
    # Only the operator connects to mail servers (spec.loginProbe).
    assert option_values(args, "--allow-mail-host") == v["mail"]["allowedHosts"]
    pod = one(objects, "Deployment", "operator")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    # Probes go to the metrics server: it runs before the election, so standbys pass them.
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    env = container["env"]
    assert "POD_ID" not in {e["name"] for e in env}  # kopf's peering identity; no peering any more
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in env
    assert {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}} in env


def test_metrics_service_and_servicemonitor(chart: helm_python.Chart) -> None:
    objects, _ = render(chart, SCENARIOS["serviceMonitor"])
    service = one(objects, "Service", "operator")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]
    monitor = one(objects, "ServiceMonitor", "operator")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert selector == service["spec"]["selector"]
    callback_service = one(objects, "Service", "callback")
    assert not selector.items() <= callback_service["metadata"]["labels"].items()
    objects, _ = render(chart, {})
    assert not of_kind(objects, "ServiceMonitor")


# ---------------------------------------------------------------------------- monitoring


def exported_series() -> dict[str, set[str]]:
    """Sample name -> label names, from a real MetricsObserver's Prometheus exposition after
    one of everything it observes (and the process collector the operator registers)."""
    from datetime import UTC, datetime

    from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    observer = metrics.MetricsObserver(registry)
    now = datetime.now(UTC)
    key = ("mail", "inbox")
    observer.token_state(
        key, provider="Microsoft", ready=True, authorized=True, expires_at=now, next_refresh=now, reauthorize_by=now
    )
    observer.refresh_attempt(key, "Microsoft", "ok")
    observer.refresh_attempt(key, "Microsoft", "InvalidGrant")
    observer.provider_call("Microsoft", "token", 0.2, "ok")
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


#: Labels Prometheus adds to every scraped series (the ServiceMonitor's target labels).
TARGET_LABELS = {"job", "namespace", "pod", "instance", "service", "container", "endpoint"}
PROMQL_FUNCTIONS = {
    "sum", "min", "max", "avg", "count", "topk", "bottomk", "quantile", "count_values", "group",
    "rate", "irate", "increase", "delta", "idelta", "deriv", "time", "vector", "scalar", "absent",
    "absent_over_time", "histogram_quantile", "max_over_time", "min_over_time", "avg_over_time",
    "changes", "resets", "clamp_min", "clamp_max", "abs", "label_replace", "timestamp",
}  # fmt: skip
PROMQL_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)\s*\{([^{}]*)\}")
_MATCHER = re.compile(r'\s*([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*""\s*')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")


def promql_problems(expr: str, series: dict[str, set[str]]) -> list[str]:
    """What promtool would reject, roughly: unbalanced brackets, bad ranges or matchers,
    unknown functions; plus metric and label names the operator does not export."""
    problems: list[str] = []
    text = _STRING.sub('""', expr)
    for opening, closing in ("()", "[]", "{}"):
        depth = 0
        for char in text:
            depth += (char == opening) - (char == closing)
            if depth < 0:
                break
        if depth:
            problems.append(f"unbalanced {opening}{closing}")
    for window in re.findall(r"\[([^\]]*)\]", text):
        if not re.fullmatch(r"\d+(ms|s|m|h|d|w|y)|\$__(rate_interval|interval|range)", window):
            problems.append(f"bad range [{window}]")
    text = re.sub(r"\[[^\]]*\]", "", text)
    used: set[str] = set()
    for name, body in _SELECTOR.findall(text):
        used.add(name)
        for matcher in filter(str.strip, body.split(",")):
            m = _MATCHER.fullmatch(matcher)
            if not m:
                problems.append(f"bad matcher {matcher!r} of {name}")
            elif m.group(1) not in series.get(name, set()) | TARGET_LABELS:
                problems.append(f"{name} has no label {m.group(1)}")
    text = _SELECTOR.sub(r"\1", text)
    labels_seen = set(TARGET_LABELS)
    grouping = _GROUPING.findall(text)
    text = _GROUPING.sub(" ", text)
    for word, following in re.findall(r"([A-Za-z_:][\w:]*)(\s*\(?)", text):
        if following.strip() == "(":
            if word not in PROMQL_FUNCTIONS:
                problems.append(f"unknown function {word}")
        elif word not in PROMQL_KEYWORDS:
            used.add(word)
    for name in sorted(used):
        if name not in series:
            problems.append(f"{name} is not exported")
        labels_seen |= series.get(name, set())
    for _, names in grouping:
        problems += [f"no series has label {n}" for n in map(str.strip, names.split(",")) if n not in labels_seen]
    return problems


def test_promql_check_finds_what_promtool_would() -> None:
    """The checker itself can fail: each broken expression is caught."""
    series = exported_series()
    assert promql_problems('sum by (provider) (rate(emailtoken_refresh_attempts_total{job="x"}[5m]))', series) == []
    for broken in (
        "sum(emailtoken_refresh_attempts[5m])",  # a counter's name without _total
        "rate(emailtoken_refresh_attempts_total[5 minutes])",
        "sum by (mailbox) (emailtoken_token_ready)",
        'emailtoken_token_ready{mailbox="x"}',
        "emailtoken_token_ready{job=x}",
        "sum(rate(emailtoken_refresh_attempts_total[5m])",
        "summ(emailtoken_token_ready)",
    ):
        assert promql_problems(broken, series), broken


def test_prometheus_rule_alerts_on_exported_metrics(chart: helm_python.Chart) -> None:
    objects, _ = render(chart, SCENARIOS["monitoring"])
    (rule,) = of_kind(objects, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    rules = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
    assert set(rules) == {
        "EmailTokenExpiringWithoutRefresh",
        "EmailTokenRefreshFailing",
        "EmailTokenReauthorizationRequired",
        "EmailTokenReauthorizationDue",
        "EmailTokenOperatorNoLeader",
    }
    series = exported_series()
    for name, alert in rules.items():
        assert promql_problems(alert["expr"], series) == [], name
        # Only the series of this release's metrics Service (the ServiceMonitor's job).
        assert 'job="emailtoken-operator-metrics"' in alert["expr"], name
        # Alertmanager templates reach Prometheus unrendered by Helm.
        for text in alert["annotations"].values():
            assert "{{" not in text or "$labels." in text or "$value" in text
    assert rules["EmailTokenExpiringWithoutRefresh"]["expr"].endswith("< 240")
    assert rules["EmailTokenReauthorizationDue"]["expr"].endswith("< 259200")  # --grant-warning's 3 days
    assert 'namespace="emailtoken-system"' in rules["EmailTokenOperatorNoLeader"]["expr"]
    # Tenants own tokens: each token alerts on its own, named, not one provider-wide alert.
    for per_token in (
        "EmailTokenRefreshFailing",
        "EmailTokenReauthorizationRequired",
        "EmailTokenExpiringWithoutRefresh",
    ):
        assert "by (namespace, name)" in rules[per_token]["expr"], per_token
        assert "{{ $labels.namespace }}/{{ $labels.name }}" in rules[per_token]["annotations"]["description"], per_token
    assert (
        "{{ $labels.namespace }}/{{ $labels.name }}"
        in rules["EmailTokenReauthorizationRequired"]["annotations"]["description"]
    )
    objects, _ = render(chart, SCENARIOS["serviceMonitor"])
    assert not of_kind(objects, "PrometheusRule")


def test_expiry_alert_threshold_is_below_the_refresh_margin() -> None:
    """The alert must not fire for a token the operator is about to refresh on schedule."""
    from datetime import timedelta

    from emailtoken.timing import MIN_MARGIN, refresh_margin

    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    threshold = timedelta(seconds=values["operator"]["prometheusRule"]["expiringWithinSeconds"])
    assert threshold < MIN_MARGIN
    for lifetime in (timedelta(minutes=60), timedelta(minutes=90), timedelta(hours=24)):
        assert threshold < refresh_margin(lifetime, None)


def test_grafana_dashboard_queries_exported_metrics(chart: helm_python.Chart) -> None:
    objects, _ = render(chart, SCENARIOS["monitoring"])
    (configmap,) = [o for o in of_kind(objects, "ConfigMap") if o["metadata"]["name"].endswith("-dashboard")]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"  # the Grafana sidecar's default label
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "Mail"}
    (text,) = configmap["data"].values()
    dashboard = json.loads(text)
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    series = exported_series()
    metric, label = re.fullmatch(r"label_values\((\w+), (\w+)\)", variables["job"]["definition"]).groups()
    assert metric in series and label in TARGET_LABELS
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(exprs) >= 8
    for expr in exprs:
        assert promql_problems(expr, series) == [], expr
        assert 'job=~"$job"' in expr, expr
    queried = {name for expr in exprs for name in re.findall(r"emailtoken_\w+", expr)}
    families = {name for name in series if name.startswith("emailtoken_")}
    # Every operator family is on the dashboard (counters and histograms by one of their series).
    assert {re.sub(r"_(total|created|bucket|sum|count)$", "", n) for n in families} <= {
        re.sub(r"_(total|created|bucket|sum|count)$", "", n) for n in queried
    }
    objects, _ = render(
        chart, _merge(SCENARIOS["monitoring"], {"operator": {"grafanaDashboard": {"namespace": "grafana"}}})
    )
    (configmap,) = [o for o in of_kind(objects, "ConfigMap") if o["metadata"]["name"].endswith("-dashboard")]
    assert configmap["metadata"]["namespace"] == "grafana"


def test_scheduling_and_extras_reach_the_pod(chart: helm_python.Chart) -> None:
    objects, _ = render(chart, SCENARIOS["scheduling"])
    template = one(objects, "Deployment", "operator")["spec"]["template"]
    pod = template["spec"]
    operator_values = SCENARIOS["scheduling"]["operator"]
    assert pod["nodeSelector"] == operator_values["nodeSelector"]
    assert pod["tolerations"] == operator_values["tolerations"]
    assert pod["affinity"] == operator_values["affinity"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert template["metadata"]["annotations"] == {"example.com/team": "mail"}
    assert template["metadata"]["labels"]["team"] == "mail"
    assert args_of(one(objects, "Deployment", "operator"))[-2:] == ["--ca-bundle", "/etc/ca/ca.crt"]
    assert {"name": "HTTPS_PROXY", "value": "http://proxy:3128"} in pod["containers"][0]["env"]
    callback_pod = one(objects, "Deployment", "callback")["spec"]["template"]["spec"]
    assert callback_pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert callback_pod["nodeSelector"] == {"kubernetes.io/os": "linux"}


def test_topology_spread_selects_the_component_pods(chart: helm_python.Chart) -> None:
    objects, _ = render(chart, SCENARIOS["spread"])
    operator = one(objects, "Deployment", "operator")
    (constraint,) = operator["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert constraint == {
        **SCENARIOS["spread"]["operator"]["topologySpreadConstraints"][0],
        "labelSelector": {"matchLabels": operator["spec"]["selector"]["matchLabels"]},
    }
    callback = one(objects, "Deployment", "callback")
    # A labelSelector of the installer's own is kept as given.
    assert (
        callback["spec"]["template"]["spec"]["topologySpreadConstraints"]
        == (SCENARIOS["spread"]["callback"]["topologySpreadConstraints"])
    )
    objects, _ = render(chart, {})
    for deployment in of_kind(objects, "Deployment"):
        assert "topologySpreadConstraints" not in deployment["spec"]["template"]["spec"]


# ------------------------------------------------------------------------------ callback


def test_callback_command_line_and_ports(
    scenario: tuple[str, dict[str, Any], list[Obj]], chart: helm_python.Chart
) -> None:
    _, values, objects = scenario
    v = merged(values, chart)
    if not v["callback"]["enabled"]:
        assert not [o for o in objects if component(o) == "callback"]
        return
    deployment = one(objects, "Deployment", "callback")
    args = args_of(deployment)
    assert args[0] == "callback"
    assert option_values(args, "--public-port") == ["8080"]
    assert option_values(args, "--admin-port") == ["8081"]
    assert option_values(args, "--redirect-base-url") == [v["callback"]["redirectBaseUrl"]]
    assert option_values(args, "--namespace") == v["watchNamespaces"]
    assert option_values(args, "--log-level") == [v["callback"]["logLevel"]]
    assert option_values(args, "--admin-url") == ([v["callback"]["adminUrl"]] if v["callback"]["adminUrl"] else [])
    assert deployment["spec"]["replicas"] == v["callback"]["replicaCount"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": 8080, "admin": 8081}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    if v["callback"]["stateKeySecret"]["name"]:
        assert option_values(args, "--state-key-file") == ["/etc/emailtoken/state-key/state-key"]
    # The admin page is never part of the Service: only `kubectl port-forward` reaches it.
    service = one(objects, "Service", "callback")
    assert service["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]


def test_ingress_exposes_only_the_callback_path(chart: helm_python.Chart) -> None:
    objects, _ = render(chart, {})
    assert not of_kind(objects, "Ingress")
    objects, _ = render(chart, SCENARIOS["ingress"])
    ingress = one(objects, "Ingress", "callback")
    spec = ingress["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == [{"hosts": ["mail-auth.example.com"], "secretName": "mail-auth-tls"}]
    assert ingress["metadata"]["annotations"] == {"cert-manager.io/cluster-issuer": "letsencrypt"}
    assert "defaultBackend" not in spec
    (rule,) = spec["rules"]
    assert rule["host"] == "mail-auth.example.com"
    service = one(objects, "Service", "callback")
    assert rule["http"]["paths"] == [
        {
            "path": "/callback",
            "pathType": "Exact",
            "backend": {"service": {"name": service["metadata"]["name"], "port": {"name": "http"}}},
        }
    ]
    for deployment in of_kind(objects, "Deployment"):
        assert option_values(args_of(deployment), "--redirect-base-url") == [PUBLIC_URL]


def test_pdb_only_where_it_helps(chart: helm_python.Chart) -> None:
    """Two callback replicas get a PodDisruptionBudget by default; one replica never (it would block drains)."""
    objects, _ = render(chart, SCENARIOS["pdb"])
    (pdb,) = of_kind(objects, "PodDisruptionBudget")
    assert component(pdb) == "callback"
    assert pdb["spec"]["minAvailable"] == 1
    assert (
        pdb["spec"]["selector"]["matchLabels"]
        == one(objects, "Deployment", "callback")["spec"]["selector"]["matchLabels"]
    )
    for name in ("pdbOneReplica", "defaults", "pdbDisabled"):
        objects, _ = render(chart, SCENARIOS[name])
        assert not of_kind(objects, "PodDisruptionBudget")


def test_network_policies(chart: helm_python.Chart) -> None:
    objects, _ = render(chart, {})
    assert not of_kind(objects, "NetworkPolicy")
    objects, _ = render(chart, SCENARIOS["networkPolicy"])
    operator_np = one(objects, "NetworkPolicy", "operator")
    callback_np = one(objects, "NetworkPolicy", "callback")
    for np, comp in ((operator_np, "operator"), (callback_np, "callback")):
        spec = np["spec"]
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        assert spec["podSelector"]["matchLabels"] == one(objects, "Deployment", comp)["spec"]["selector"]["matchLabels"]
        egress_ports = {(p["port"], p["protocol"]) for rule in spec["egress"] for p in rule["ports"]}
        assert egress_ports == {(53, "UDP"), (53, "TCP"), (443, "TCP"), (6443, "TCP")}
    # Callback: the public port from the ingress controller only, the admin port from nobody.
    (rule,) = callback_np["spec"]["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]
    # Operator: metrics from the monitoring namespace only.
    (rule,) = operator_np["spec"]["ingress"]
    assert rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    # No peers configured: no rule at all (an empty `from` would admit everybody).
    objects, _ = render(chart, SCENARIOS["networkPolicyNoPeers"])
    assert one(objects, "NetworkPolicy", "callback")["spec"]["ingress"] == []
    assert one(objects, "NetworkPolicy", "operator")["spec"]["ingress"] == []


def test_notes_tell_the_next_steps(chart: helm_python.Chart) -> None:
    _, notes = render(chart, {})
    assert "http://localhost:8080/callback" in notes
    assert f"kubectl -n {NAMESPACE} port-forward deploy/emailtoken-operator-callback 8081:8081 8080:8080" in notes
    assert "kubectl get emailtokens -A -w" in notes
    assert "examples/" in notes
    _, notes = render(chart, SCENARIOS["ingress"])
    assert f"{PUBLIC_URL}/callback" in notes
    assert "port-forward deploy/emailtoken-operator-callback 8081:8081\n" in notes
    _, notes = render(chart, SCENARIOS["callbackDisabled"])
    assert "emailtoken authorize NAMESPACE/NAME" in notes and "port-forward" not in notes


# ---------------------------------------------------------------------------------- RBAC


def test_rbac_file_is_generated_from_the_table() -> None:
    assert (CHART_DIR / "files" / "rbac.yaml").read_text(encoding="utf-8") == rbac.render_chart_file()


def test_rendered_rules_equal_the_table(
    scenario: tuple[str, dict[str, Any], list[Obj]], chart: helm_python.Chart
) -> None:
    _, values, objects = scenario
    v = merged(values, chart)
    all_namespaces = not v["watchNamespaces"]
    role_kind = "ClusterRole" if all_namespaces else "Role"
    components = ["operator", "callback"] if v["callback"]["enabled"] else ["operator"]
    roles = [
        o for o in of_kind(objects, "ClusterRole") + of_kind(objects, "Role") if o["metadata"]["name"] != LEASE_ROLE
    ]
    assert {o["kind"] for o in roles} == {role_kind}
    assert sorted(component(r) for r in roles) == sorted(
        components * (1 if all_namespaces else len(v["watchNamespaces"]))
    )
    for role in roles:
        expected = rbac.rules(component(role))
        assert role["rules"] == expected
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
            assert "resourceNames" not in rule
    if not all_namespaces:
        assert not of_kind(objects, "ClusterRole") and not of_kind(objects, "ClusterRoleBinding")
        for comp in components:
            assert sorted(r["metadata"]["namespace"] for r in roles if component(r) == comp) == sorted(
                v["watchNamespaces"]
            )


def grants(objects: list[Obj], service_account: str, verb: str, resource: str, group: str = "") -> set[str]:
    """Namespaces ("*" = all) in which the ServiceAccount may `verb` the resource."""
    roles = {
        (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o
        for o in objects
        if o["kind"] in {"Role", "ClusterRole"}
    }
    found: set[str] = set()
    for binding in objects:
        if binding["kind"] not in {"RoleBinding", "ClusterRoleBinding"}:
            continue
        if {"kind": "ServiceAccount", "name": service_account, "namespace": NAMESPACE} not in binding["subjects"]:
            continue
        ns = binding["metadata"].get("namespace")
        ref = binding["roleRef"]
        role = roles[(ref["kind"], ns if ref["kind"] == "Role" else None, ref["name"])]
        for rule in role["rules"]:
            if group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]:
                found.add(ns if binding["kind"] == "RoleBinding" else "*")
    return found


def service_account_of(objects: list[Obj], comp: str) -> str:
    name = one(objects, "Deployment", comp)["spec"]["template"]["spec"]["serviceAccountName"]
    (sa,) = [o for o in of_kind(objects, "ServiceAccount") if o["metadata"]["name"] == name]
    assert sa["automountServiceAccountToken"] is False
    return name


def test_secret_access_is_confined_to_the_served_namespaces(chart: helm_python.Chart) -> None:
    objects, _ = render(chart, SCENARIOS["watchNamespaces"])
    callback_sa = service_account_of(objects, "callback")
    operator_sa = service_account_of(objects, "operator")
    served = {"mail", "billing"}
    for verb in ("get", "create", "patch"):
        assert grants(objects, callback_sa, verb, "secrets") == served
    for verb in ("list", "watch", "delete", "update"):
        assert grants(objects, callback_sa, verb, "secrets") == set()
    for verb in ("get", "list", "watch", "create", "patch", "delete"):
        assert grants(objects, operator_sa, verb, "secrets") == served
    assert NAMESPACE not in grants(objects, callback_sa, "get", "secrets")
    objects, _ = render(chart, {})
    assert grants(objects, service_account_of(objects, "callback"), "get", "secrets") == {"*"}
    objects, _ = render(chart, SCENARIOS["callbackDisabled"])
    assert not [o for o in objects if o["kind"] in {"ClusterRole", "Role"} and component(o) == "callback"]


def test_lease_role_only_in_the_release_namespace(
    scenario: tuple[str, dict[str, Any], list[Obj]], chart: helm_python.Chart
) -> None:
    _, values, objects = scenario
    v = merged(values, chart)
    sa = service_account_of(objects, "operator")
    lease_roles = [o for o in of_kind(objects, "Role") if o["metadata"]["name"] == LEASE_ROLE]
    group = "coordination.k8s.io"
    if not v["operator"]["leaderElection"]["enabled"]:
        assert lease_roles == []
        for verb in ("get", "create", "patch"):
            assert grants(objects, sa, verb, "leases", group) == set()
        return
    (role,) = lease_roles
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == rbac.release_namespace_rules("operator", leader_election=True)
    (binding,) = [o for o in of_kind(objects, "RoleBinding") if o["metadata"]["name"] == LEASE_ROLE]
    assert binding["metadata"]["namespace"] == NAMESPACE
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": LEASE_ROLE}
    # Leases in the release namespace only, whether some or all namespaces are watched.
    for verb in ("get", "create", "patch"):
        assert grants(objects, sa, verb, "leases", group) == {NAMESPACE}
    for verb in ("list", "watch", "delete", "update"):
        assert grants(objects, sa, verb, "leases", group) == set()
    if v["callback"]["enabled"]:
        assert grants(objects, service_account_of(objects, "callback"), "get", "leases", group) == set()
    # The Lease Role adds nothing else: no Secret access in the release namespace unless watched.
    if v["watchNamespaces"] and NAMESPACE not in v["watchNamespaces"]:
        assert NAMESPACE not in grants(objects, sa, "get", "secrets")


def test_rbac_can_be_left_to_the_cluster_admin(chart: helm_python.Chart) -> None:
    objects, _ = render(chart, {"rbac": {"create": False}})
    assert not [o for o in objects if o["apiVersion"].startswith("rbac.authorization.k8s.io/")]


# -------------------------------------------------------------------- generated manifests


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("emailtoken_deploy_generate", ROOT / "deploy" / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    return load_generator()


def test_generated_files_are_up_to_date(generator: ModuleType) -> None:
    expected = {**generator.expected_files(), **generator.kustomize_files()}
    stale = [
        str(p.relative_to(ROOT))
        for p, text in expected.items()
        if not p.is_file() or p.read_text(encoding="utf-8") != text
    ]
    assert stale == [], "run: .venv/bin/python deploy/generate.py"
    on_disk = {p for p in (ROOT / "deploy" / "kustomize").rglob("*") if p.is_file()}
    assert on_disk == {p for p in expected if p.is_relative_to(ROOT / "deploy" / "kustomize")}


def by_key(objects: list[Obj]) -> dict[tuple[str, str, str, str], Obj]:
    out: dict[tuple[str, str, str, str], Obj] = {}
    for obj in objects:
        key = (obj["apiVersion"], obj["kind"], obj["metadata"].get("namespace") or "", obj["metadata"]["name"])
        assert key not in out
        out[key] = obj
    return out


def kustomize(path: Path) -> list[Obj]:
    kubectl = need_binary("kubectl")
    result = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def expected_plain(chart: helm_python.Chart, generator: ModuleType, values: Mapping[str, Any]) -> list[Obj]:
    """The chart without its CRD template, plus crds/ as it is (what generate.py promises)."""
    objects, _ = render(chart, _merge(values, {"crds": {"enabled": False}}))
    crds = [crd for p in sorted(CRDS_DIR.glob("*.yaml")) for crd in yaml.safe_load_all(p.read_text()) if crd]
    return [generator.namespace_object(), *crds, *(generator.normalize(o) for o in objects)]


def test_kustomize_base_equals_the_chart_default_render(chart: helm_python.Chart, generator: ModuleType) -> None:
    built = by_key(kustomize(ROOT / "deploy" / "kustomize" / "base"))
    assert built == by_key(expected_plain(chart, generator, {}))


@pytest.mark.parametrize("overlay", sorted(load_generator().OVERLAYS))
def test_kustomize_overlay_equals_the_chart_render(
    chart: helm_python.Chart, generator: ModuleType, overlay: str
) -> None:
    values = generator.OVERLAYS[overlay]
    built = by_key(kustomize(ROOT / "deploy" / "kustomize" / "overlays" / overlay))
    assert built == by_key(expected_plain(chart, generator, values))


def test_generated_objects_drop_only_the_helm_labels(chart: helm_python.Chart, generator: ModuleType) -> None:
    objects, _ = render(chart, {})
    assert rendered_crd(objects) is not None and generator.PLAIN_VALUES == {"crds": {"enabled": False}}
    for obj in objects:
        plain = generator.normalize(copy.deepcopy(obj))
        dropped = set(obj["metadata"]["labels"]) - set(plain["metadata"]["labels"])
        assert dropped == {"helm.sh/chart", "app.kubernetes.io/managed-by"}
    namespace = generator.namespace_object()
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    kubernetes_validate.validate(namespace, KUBE_VERSION, strict=True)


def test_json_patch_generator_round_trips(generator: ModuleType) -> None:
    old = {"a": {"b": [1, 2], "c/d": "x", "gone": 1}, "l": [{"k": 1}, {"k": 2}]}
    new = {"a": {"b": [1, 2, 3], "c/d": "y", "added": True}, "l": [{"k": 1}, {"k": 3}]}
    ops = generator.json_patch(old, new)
    assert {"op": "replace", "path": "/a/c~1d", "value": "y"} in ops
    assert {"op": "replace", "path": "/l/1/k", "value": 3} in ops
    assert generator.json_patch(old, old) == []


# ------------------------------------------------------------ the chart and the real CLI


def subcommands(parser: Any) -> dict[str, Any]:
    import argparse

    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


@pytest.mark.parametrize("name", ["defaults", "everything", "callbackDisabled", "noLeaderElection", "quiet"])
def test_operator_args_parse_with_the_real_command_line(chart: helm_python.Chart, name: str) -> None:
    values = merged(SCENARIOS[name], chart)
    objects, _ = render(chart, SCENARIOS[name])
    config = cli.config_from_args(cli.build_parser().parse_args(args_of(one(objects, "Deployment", "operator"))))
    assert config.all_namespaces == (not values["watchNamespaces"])
    assert list(config.namespaces) == values["watchNamespaces"]
    assert (config.health_port, config.metrics_port) == (8080, 9090)
    assert config.log_format == "json"
    expected = values["callback"]["redirectBaseUrl"] if values["callback"]["enabled"] else None
    assert config.redirect_base_url == expected
    admin_url = values["callback"]["adminUrl"] if values["callback"]["enabled"] else ""
    assert config.admin_url == (admin_url or None)
    assert config.log_level == values["operator"]["logLevel"]
    extra = [mailhosts.parse_entry(h) for h in values["mail"]["allowedHosts"]]
    assert config.allowed_mail_hosts == mailhosts.from_args(extra)
    assert config.leader_election == values["operator"]["leaderElection"]["enabled"]
    if config.leader_election:
        assert (config.lease_namespace, config.lease_name) == (NAMESPACE, RELEASE)


def test_log_level_value_sets_the_operator_log_level(chart: helm_python.Chart) -> None:
    """operator.logLevel reaches the root logger through the operator's own log setup."""
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    try:
        for level, expected in (("warning", logging.WARNING), ("error", logging.ERROR), ("debug", logging.DEBUG)):
            objects, _ = render(chart, {"operator": {"logLevel": level}})
            args = cli.build_parser().parse_args(args_of(one(objects, "Deployment", "operator")))
            runner.configure_logging(cli.config_from_args(args))
            assert root.level == expected, level
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]


@pytest.mark.parametrize("name", ["defaults", "everything", "quiet"])
def test_callback_args_parse_with_the_real_command_line(chart: helm_python.Chart, name: str) -> None:
    parser = cli.build_parser()
    assert "callback" in subcommands(parser)
    objects, _ = render(chart, SCENARIOS[name])
    parsed = parser.parse_args(args_of(one(objects, "Deployment", "callback")))
    assert parsed.command == "callback"
    values = merged(SCENARIOS[name], chart)["callback"]
    assert parsed.log_level == values["logLevel"]
    assert (parsed.admin_url or "") == values["adminUrl"]

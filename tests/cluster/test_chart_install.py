"""The Helm chart and the kustomize manifests, installed on a real API server and run as their Pods would.

The chart is rendered offline (helm-python-sdk, as in tests/unit/test_chart.py) and
applied with server-side apply; the kustomize base and overlays are built with
``kubectl kustomize`` and applied the same way. Every object is created for real: no kind
here needs a server-side dry-run (none of the rendered kinds depends on a CRD or a
controller this control plane lacks). Each chart test uses its own release name and
namespace, so the cluster-scoped ClusterRoles of one test never meet another's.

Then the operator and the callback run as local processes with exactly the args and env
of the rendered Deployments' containers (tests/support/localpod.py does the kubelet's
part: volumes, downward API, a port per containerPort) and with nothing but their
ServiceAccount's token from TokenRequest: whatever the rendered RBAC lacks, the real
API server refuses. The local provider's CA reaches both through chart values
(``extraArgs: [--ca-bundle, ...]`` plus a ConfigMap volume), the way an installer with a
private CA would set it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import helm_python
import pytest
import yaml

from emailtoken import rbac
from emailtoken_dev.devprovider import DevProviderThread, redirect_params, sign_in
from tests.support.callback_process import AdminSession, browser_get
from tests.support.cluster import ControlPlane
from tests.support.kube import ApiClient, wait_for
from tests.support.localpod import ContainerProcess, LocalContainer, prepare
from tests.support.ports import free_port
from tests.support.tokens import authorization_code, client_credentials

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "charts" / "emailtoken-operator"
KUSTOMIZE_DIR = ROOT / "deploy" / "kustomize"
CA_MOUNT = "/etc/emailtoken/provider-ca"
CRD = "emailtokens.emailtoken.io"
CA_CONFIGMAP = "provider-ca"
TENANT = "contoso"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/warn": "restricted",
}

Obj = dict[str, Any]


# --- rendering and applying ---------------------------------------------------------------
@pytest.fixture(scope="module")
def chart() -> helm_python.Chart:
    return helm_python.Chart.load(str(CHART_DIR))


def render_chart(chart: helm_python.Chart, values: dict[str, Any], release: str, namespace: str) -> list[Obj]:
    """The chart's templates rendered offline, as objects (NOTES.txt and empty documents dropped)."""
    objects: list[Obj] = []
    for path, text in sorted(chart.render(values, name=release, namespace=namespace).items()):
        if not path.endswith("NOTES.txt"):
            objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return objects


def crd_generation(cluster: ControlPlane) -> int:
    return int(cluster.kubectl("get", "crd/emailtokens.emailtoken.io", "-o", "jsonpath={.metadata.generation}").stdout)


def key(obj: Obj) -> tuple[str, str, str]:
    meta = obj["metadata"]
    return obj["kind"], meta.get("namespace") or "", meta["name"]


def apply(cluster: ControlPlane, objects: list[Obj]) -> list[Obj]:
    """Server-side apply, then read every object back: each must exist, with a uid the server gave it."""
    manifest = yaml.safe_dump_all(objects)
    cluster.kubectl("apply", "--server-side", "-f", "-", input=manifest)
    got = json.loads(cluster.kubectl("get", "-f", "-", "-o", "json", input=manifest).stdout)
    live = got["items"] if got.get("kind") == "List" else [got]
    assert [key(o) for o in live] == [key(o) for o in objects]
    assert all(o["metadata"].get("uid") for o in live)
    return live


def of_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def deployment(objects: list[Obj], component: str) -> Obj:
    (found,) = [
        o for o in of_kind(objects, "Deployment") if o["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    return found


@pytest.fixture
def cluster_scoped(cluster: ControlPlane) -> Iterator[list[Obj]]:
    """Cluster-scoped objects a test made (never the CRD, which the whole session shares); deleted after it."""
    made: list[Obj] = []
    yield made
    doomed = [o for o in made if o["kind"] not in ("CustomResourceDefinition", "Namespace")]
    if doomed:
        cluster.kubectl("delete", "--ignore-not-found", "--wait=false", "-f", "-", input=yaml.safe_dump_all(doomed))


def track(cluster_scoped: list[Obj], objects: list[Obj]) -> None:
    cluster_scoped += [o for o in objects if not o["metadata"].get("namespace")]


def label_namespace(admin: ApiClient, name: str, labels: dict[str, str]) -> None:
    r = admin.http.patch(
        f"{admin.url}/api/v1/namespaces/{name}",
        data=json.dumps({"metadata": {"labels": labels}}),
        headers={"Content-Type": "application/merge-patch+json"},
        timeout=10,
    )
    r.raise_for_status()


#: The local provider listens on loopback: an installer allows its host like any private IdP.
LOCAL_PROVIDER = {"allowedHosts": ["127.0.0.1"]}


def ca_values() -> dict[str, Any]:
    """How an installer hands a private CA to a component: a ConfigMap volume and --ca-bundle."""
    return {
        "extraArgs": ["--ca-bundle", f"{CA_MOUNT}/ca.crt"],
        "extraVolumes": [{"name": "provider-ca", "configMap": {"name": CA_CONFIGMAP}}],
        "extraVolumeMounts": [{"name": "provider-ca", "mountPath": CA_MOUNT, "readOnly": True}],
    }


def local_values(public: int, callback: dict[str, Any] | None = None, **values: Any) -> dict[str, Any]:
    """Values for both components against the local provider (its host allowed, its CA mounted);
    the callback's public port, as `kubectl port-forward` would expose it, is the redirect base."""
    return {
        **values,
        "providers": LOCAL_PROVIDER,
        "operator": ca_values(),
        "callback": {**ca_values(), "redirectBaseUrl": f"http://127.0.0.1:{public}", **(callback or {})},
    }


def create_ca_configmap(admin: ApiClient, provider: DevProviderThread, namespace: str) -> None:
    assert provider.ca_pem_path
    admin.create(
        "configmaps",
        namespace,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": CA_CONFIGMAP},
            "data": {"ca.crt": Path(provider.ca_pem_path).read_text()},
        },
    )


# --- running the containers ---------------------------------------------------------------
@dataclass
class Trail:
    """What a test leaves: secrets that must never reach a log, and its tokens (deleted after it)."""

    secrets: set[str] = field(default_factory=set)
    tokens: list[tuple[str, str]] = field(default_factory=list)


@pytest.fixture
def trail(admin: ApiClient, make_namespace: Callable[[str], str]) -> Iterator[Trail]:
    """Deletes the test's tokens before its namespaces go: the namespace controller takes ~10 s
    to get to them, and a later all-namespaces operator would wait for that."""
    made = Trail()
    yield made
    for namespace, name in made.tokens:
        admin.delete("emailtokens", namespace, name)


@pytest.fixture
def run_container(cluster: ControlPlane, admin: ApiClient, tmp_path: Path) -> Iterator[Callable[..., ContainerProcess]]:
    """Start a rendered Deployment's container here, as its ServiceAccount; stopped after the test."""
    started: list[ContainerProcess] = []

    def run(deployment: Obj, *, ports: dict[int, int] | None = None) -> ContainerProcess:
        local: LocalContainer = prepare(deployment, api=admin, workdir=tmp_path, ports=ports)
        # Exactly the rendered args: only a container port or a mounted path may read differently here.
        (rendered,) = deployment["spec"]["template"]["spec"]["containers"]
        assert len(local.argv) == 1 + len(rendered["args"])
        for before, after in zip(rendered["args"], local.argv[1:], strict=True):
            assert before == after or (
                (before.isdigit() and after == str(local.ports[int(before)]))
                or any(before.startswith(m + "/") and after.startswith(str(d)) for m, d in local.mounts.items())
            ), (before, after)
        kubeconfig = cluster.service_account_kubeconfig(local.namespace, local.service_account)
        process = ContainerProcess(local, kubeconfig, tmp_path).start()
        started.append(process)
        return process

    yield run
    for process in started:
        process.stop()


def start_operator(run: Callable[..., ContainerProcess], objects: list[Obj]) -> ContainerProcess:
    operator = run(deployment(objects, "operator"))
    operator.wait_log("emailtoken operator started", timeout=30)
    return operator


def lease_holder(admin: ApiClient, namespace: str, name: str) -> str:
    lease = admin.get("leases", namespace, name) or {}
    return (lease.get("spec") or {}).get("holderIdentity") or ""


def pods_in(admin: ApiClient, namespace: str) -> list[Obj]:
    return admin.http.get(f"{admin.url}/api/v1/namespaces/{namespace}/pods", timeout=10).json()["items"]


def assert_restricted_is_enforced(admin: ApiClient, namespace: str) -> None:
    """The namespace really refuses a Pod that breaks the restricted standard (so admitted Pods passed it)."""
    plain = {  # no securityContext at all: root allowed, privilege escalation, all capabilities
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "plain"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    r = admin.http.post(f"{admin.url}/api/v1/namespaces/{namespace}/pods", json=plain, timeout=10)
    assert r.status_code == 403, (r.status_code, r.text[:500])
    assert 'violates PodSecurity "restricted' in r.json()["message"]


def is_ready(admin: ApiClient, namespace: str, name: str) -> bool:
    return (admin.condition(namespace, name, "Ready") or {}).get("status") == "True"


def app_only_token_becomes_ready(
    admin: ApiClient, provider: DevProviderThread, namespace: str, trail: Trail
) -> dict[str, str]:
    """An app-only token becomes Ready: consumer Secret written, status patched, Event posted."""
    client_id = f"app-{namespace}"
    mailbox = f"shared-{namespace}@contoso.com"
    secret = f"app-secret-{namespace}"
    trail.secrets.add(secret)
    provider.add_client(client_id, secret, mailboxes=[mailbox])
    admin.create_secret(namespace, "app-secret", {"client_secret": secret})
    admin.create("emailtokens", namespace, client_credentials(provider, "inbox", client_id=client_id, mailbox=mailbox))
    trail.tokens.append((namespace, "inbox"))
    wait_for(lambda: is_ready(admin, namespace, "inbox"), 30, what=f"{namespace}/inbox Ready")
    data = admin.secret_data(namespace, "inbox") or {}
    trail.secrets.add(data["access_token"])
    assert provider.token_info(data["access_token"])["active"]
    assert data["username"] == mailbox
    status = (admin.get("emailtokens", namespace, "inbox") or {})["status"]
    assert status["secretName"] == "inbox" and status["expiresAt"] == data["expires_at"]
    wait_for(
        lambda: "Authorized" in {e["reason"] for e in admin.events_for(namespace, "inbox")},
        15,
        what="an Authorized Event",
    )
    return data


def sign_in_through_callback(
    admin: ApiClient,
    provider: DevProviderThread,
    callback: ContainerProcess,
    namespace: str,
    trail: Trail,
) -> None:
    """Press "Get Email Token" on the admin page, sign in at the provider, land on /callback: Ready."""
    local = callback.container
    redirect_uri = local.url("http") + "/callback"
    client_id = f"web-{namespace}"
    mailbox = f"alice-{namespace}@contoso.com"
    secret = f"web-secret-{namespace}"
    trail.secrets.add(secret)
    provider.add_client(client_id, secret, redirect_uris=[redirect_uri])
    provider.add_user(mailbox)
    admin.create_secret(namespace, "web-secret", {"client_secret": secret})
    admin.create(
        "emailtokens",
        namespace,
        authorization_code(
            provider,
            "alice",
            client_id=client_id,
            mailbox=mailbox,
            secret="web-secret",
            authorizationUrl=provider.microsoft_authorize_url(TENANT),
        ),
    )
    trail.tokens.append((namespace, "alice"))
    # The operator (same chart, same redirectBaseUrl value) tells the admin where to register.
    status = wait_for(
        lambda: ((admin.get("emailtokens", namespace, "alice") or {}).get("status") or {}).get("redirectUri"),
        30,
        what="status.redirectUri",
    )
    assert status == redirect_uri
    # The chart's callback.adminUrl (default: the port-forward NOTES.txt prints) reached the
    # operator as --admin-url: the token links to its page on the admin page, which answers.
    authorize_url = ((admin.get("emailtokens", namespace, "alice") or {}).get("status") or {}).get("authorizeUrl")
    assert authorize_url == f"http://localhost:8081/authorize/{namespace}/alice"

    page = AdminSession(local.url("admin"))
    confirm = page.http.get(page.url + urlsplit(authorize_url).path, timeout=20)
    assert confirm.status_code == 200 and f"{namespace}/alice" in confirm.text, confirm.text[:500]
    to_provider = page.start_url(namespace, "alice")
    assert to_provider.startswith(provider.microsoft_authorize_url(TENANT))
    location = sign_in(to_provider, mailbox, verify=provider.ca_pem_path)
    assert location.startswith(redirect_uri + "?")
    trail.secrets.add(redirect_params(location)["code"])
    landed = browser_get(location)
    assert landed.status_code == 200, landed.text[-1500:]
    assert f"{mailbox}</strong> is authorized for EmailToken <code>{namespace}/alice</code>" in landed.text

    grant = admin.get("secrets", namespace, "emailtoken-grant-alice")
    assert grant is not None, "the callback wrote no grant Secret"
    assert grant["type"] == "emailtoken.io/grant"
    wait_for(lambda: is_ready(admin, namespace, "alice"), 30, what=f"{namespace}/alice Ready")
    data = admin.secret_data(namespace, "alice") or {}
    assert provider.token_info(data["access_token"])["email"] == mailbox
    trail.secrets.add(data["access_token"])
    trail.secrets.add((admin.secret_data(namespace, "emailtoken-grant-alice") or {})["refresh_token"])


FORBIDDEN = re.compile(r"forbidden|HTTP 403", re.IGNORECASE)


def assert_clean_logs(*processes: ContainerProcess, trail: Trail) -> None:
    """No process was refused by RBAC, and no secret it handled reached its log."""
    for process in processes:
        log = process.log
        refused = [line for line in log.splitlines() if FORBIDDEN.search(line)]
        assert not refused, f"{process.container.pod_name} was refused:\n" + "\n".join(refused[:10])
        leaked = [s for s in trail.secrets if s and s in log]
        assert not leaked, f"{process.container.pod_name} logged a secret"


def forbidden(cluster: ControlPlane, kubeconfig: Path, *args: str) -> bool:
    """True when the API server refuses this request for that identity."""
    result = cluster.kubectl(*args, kubeconfig=kubeconfig, check=False)
    return result.returncode != 0 and "forbidden" in result.stderr.lower()


def no_token_in_a_terminating_namespace(admin: ApiClient) -> None:
    """Wait until earlier tests' tokens are gone with their namespaces.

    An operator with ``--all-namespaces`` serves every token of the cluster, and this
    control plane is shared by the whole session: a token of a namespace being deleted
    would make it write Secrets where the API server forbids new content.
    """

    def leftovers() -> list[str]:
        namespaces = admin.http.get(f"{admin.url}/api/v1/namespaces", timeout=10).json()["items"]
        terminating = {n["metadata"]["name"] for n in namespaces if n.get("status", {}).get("phase") == "Terminating"}
        tokens = admin.http.get(f"{admin.url}/apis/emailtoken.io/v1alpha1/emailtokens", timeout=10).json()["items"]
        return [
            f"{t['metadata']['namespace']}/{t['metadata']['name']}"
            for t in tokens
            if t["metadata"]["namespace"] in terminating
        ]

    wait_for(lambda: not leftovers(), 60, what="no EmailToken in a terminating namespace")


# --- the chart ----------------------------------------------------------------------------
def test_chart_with_default_values_installs_and_its_pods_pass_restricted_admission(
    cluster: ControlPlane,
    admin: ApiClient,
    chart: helm_python.Chart,
    make_namespace: Callable[[str], str],
    cluster_scoped: list[Obj],
) -> None:
    namespace = make_namespace("rel")
    label_namespace(admin, namespace, RESTRICTED)
    release = namespace  # unique per test, so the ClusterRoles are too
    objects = render_chart(chart, {}, release, namespace)
    track(cluster_scoped, objects)
    generation = crd_generation(cluster)  # the session installed crds/: the chart's template must change no spec
    live = apply(cluster, objects)
    (crd,) = of_kind(live, "CustomResourceDefinition")
    assert crd["metadata"]["generation"] == generation
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"

    kinds = sorted({o["kind"] for o in live})
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "Deployment",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]
    fullname = f"{release}-emailtoken-operator"
    by_name = {o["metadata"]["name"]: o for o in of_kind(live, "ClusterRole")}
    for component, name in (("operator", fullname), ("callback", f"{fullname}-callback")):
        assert by_name[name]["rules"] == rbac.rules(component)
    # The controller manager turns each Deployment into a ReplicaSet and a Pod; the
    # namespace enforces the restricted Pod Security Standard, so a Pod exists only if
    # the chart's pod template passes it (there is no scheduler: the Pods stay Pending).
    pods = wait_for(lambda: (lambda got: got if len(got) == 2 else None)(pods_in(admin, namespace)), 30, what="2 Pods")
    assert sorted(p["metadata"]["labels"]["app.kubernetes.io/component"] for p in pods) == ["callback", "operator"]
    assert {p["spec"]["serviceAccountName"] for p in pods} == {fullname, f"{fullname}-callback"}
    assert_restricted_is_enforced(admin, namespace)
    uninstall_keeps_the_crd_and_the_tokens(cluster, admin, live, namespace)


def uninstall_keeps_the_crd_and_the_tokens(
    cluster: ControlPlane, admin: ApiClient, live: list[Obj], namespace: str
) -> None:
    """What `helm uninstall` deletes (every object of the release but those annotated
    ``helm.sh/resource-policy: keep``) leaves the CRD, its EmailTokens and the Secrets they own."""
    example = ROOT / "examples" / "microsoft-client-credentials.yaml"
    cluster.kubectl("apply", "-n", namespace, "-f", str(example))
    (token,) = [d for d in yaml.safe_load_all(example.read_text()) if d and d["kind"] == "EmailToken"]
    name = token["metadata"]["name"]
    uid = (admin.get("emailtokens", namespace, name) or {})["metadata"]["uid"]
    owner = {"apiVersion": "emailtoken.io/v1alpha1", "kind": "EmailToken", "name": name, "uid": uid}
    consumer = {  # the consumer Secret as the operator writes it: owned by its EmailToken
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "ownerReferences": [owner]},
        "stringData": {"username": "reports@contoso.com"},
    }
    admin.create("secrets", namespace, consumer)
    kept = [o for o in live if (o["metadata"].get("annotations") or {}).get("helm.sh/resource-policy") == "keep"]
    assert [o["kind"] for o in kept] == ["CustomResourceDefinition"]
    doomed = [o for o in live if o not in kept]
    cluster.kubectl("delete", "--wait=true", "-f", "-", input=yaml.safe_dump_all(doomed))
    assert (
        cluster.kubectl("get", "-f", "-", "--ignore-not-found", "-o", "name", input=yaml.safe_dump_all(doomed)).stdout
        == ""
    )
    crd = admin.http.get(f"{admin.url}/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD}", timeout=10)
    assert {"type": "Established", "status": "True"} in [
        {"type": c["type"], "status": c["status"]} for c in crd.json()["status"]["conditions"]
    ]
    assert admin.get("emailtokens", namespace, name) is not None
    assert admin.get("secrets", namespace, name) is not None


def test_chart_optional_objects_install(
    cluster: ControlPlane,
    admin: ApiClient,
    chart: helm_python.Chart,
    make_namespace: Callable[[str], str],
    cluster_scoped: list[Obj],
) -> None:
    """Ingress, PodDisruptionBudget, NetworkPolicies, a hot standby spread over nodes, common
    labels and the Grafana dashboard ConfigMap are accepted too; a second release leaves the
    CRD to the first (crds.enabled false).

    Left out: the ServiceMonitor and PrometheusRule (need the Prometheus Operator's CRDs); this
    control plane has none, and without its CRD even a server-side dry-run of such a kind is
    refused.
    """
    namespace = make_namespace("rel")
    label_namespace(admin, namespace, RESTRICTED)
    values = {
        "watchNamespaces": [namespace],
        "networkPolicy": {"enabled": True},
        "crds": {"enabled": False},
        "commonLabels": {"team": "mail"},
        "operator": {
            "replicaCount": 2,
            "grafanaDashboard": {"enabled": True},
            "topologySpreadConstraints": [
                {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway"}
            ],
        },
        "callback": {
            "redirectBaseUrl": "https://mail-auth.example.com",
            "replicaCount": 2,
            "pdb": {"enabled": True},
            "stateKeySecret": {"name": "callback-state-key", "key": "state-key"},
            "ingress": {"enabled": True, "className": "nginx", "tlsSecretName": "mail-auth-tls"},
        },
    }
    objects = render_chart(chart, values, namespace, namespace)
    track(cluster_scoped, objects)
    live = apply(cluster, objects)
    kinds = {o["kind"] for o in live}
    assert {"Ingress", "PodDisruptionBudget", "NetworkPolicy", "ConfigMap"} <= kinds, kinds
    assert "CustomResourceDefinition" not in kinds
    assert all(o["metadata"]["labels"]["team"] == "mail" for o in live)
    spread = deployment(live, "operator")["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread[0]["labelSelector"]["matchLabels"] == deployment(live, "operator")["spec"]["selector"]["matchLabels"]
    (ingress,) = of_kind(live, "Ingress")
    assert [p["path"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]] == ["/callback"]
    assert deployment(live, "operator")["spec"]["strategy"]["type"] == "RollingUpdate"


def test_chart_all_namespaces_operator_and_callback_do_their_jobs_as_their_service_accounts(
    cluster: ControlPlane,
    admin: ApiClient,
    provider: DevProviderThread,
    chart: helm_python.Chart,
    make_namespace: Callable[[str], str],
    cluster_scoped: list[Obj],
    run_container: Callable[..., ContainerProcess],
    trail: Trail,
) -> None:
    release_ns = make_namespace("rel")
    tokens_ns = make_namespace("mail")
    release = release_ns
    public = free_port()  # the callback's public port 8080, as `kubectl port-forward` would expose it
    values = local_values(public)
    objects = render_chart(chart, values, release, release_ns)
    track(cluster_scoped, objects)
    create_ca_configmap(admin, provider, release_ns)
    apply(cluster, objects)
    assert "--all-namespaces" in deployment(objects, "operator")["spec"]["template"]["spec"]["containers"][0]["args"]

    no_token_in_a_terminating_namespace(admin)
    operator = start_operator(run_container, objects)
    callback = run_container(deployment(objects, "callback"), ports={8080: public})
    callback.wait_log("callback service ready", timeout=30)

    app_only_token_becomes_ready(admin, provider, tokens_ns, trail)
    holder = lease_holder(admin, release_ns, f"{release}-emailtoken-operator")
    assert holder.startswith(operator.container.pod_name)
    sign_in_through_callback(admin, provider, callback, tokens_ns, trail)
    assert_clean_logs(operator, callback, trail=trail)


def test_chart_watching_namespaces_grants_and_needs_only_those(
    cluster: ControlPlane,
    admin: ApiClient,
    provider: DevProviderThread,
    chart: helm_python.Chart,
    make_namespace: Callable[[str], str],
    cluster_scoped: list[Obj],
    run_container: Callable[..., ContainerProcess],
    trail: Trail,
) -> None:
    release_ns = make_namespace("rel")
    watched = [make_namespace("mail"), make_namespace("billing")]
    elsewhere = make_namespace("other")
    release = release_ns
    public = free_port()
    admin.create_secret(release_ns, "callback-state-key", {"state-key": "k" * 64})
    values = local_values(
        public,
        {"stateKeySecret": {"name": "callback-state-key", "key": "state-key"}},
        watchNamespaces=watched,
        networkPolicy={"enabled": True},
    )
    objects = render_chart(chart, values, release, release_ns)
    track(cluster_scoped, objects)
    # No ClusterRole or other cluster-wide grant; the CRD (crds.enabled) is cluster-scoped by nature.
    cluster_wide = [
        o for o in objects if not o["metadata"].get("namespace") and o["kind"] != "CustomResourceDefinition"
    ]
    assert not cluster_wide, "namespace mode made cluster-scoped objects"
    create_ca_configmap(admin, provider, release_ns)
    live = apply(cluster, objects)
    assert {o["metadata"]["namespace"] for o in of_kind(live, "RoleBinding")} == {*watched, release_ns}
    assert of_kind(live, "NetworkPolicy")

    operator = start_operator(run_container, objects)
    callback = run_container(deployment(objects, "callback"), ports={8080: public})
    callback.wait_log("callback service ready", timeout=30)
    assert "state key: file" in callback.log  # the Secret volume reached the process

    app_only_token_becomes_ready(admin, provider, watched[0], trail)
    assert lease_holder(admin, release_ns, f"{release}-emailtoken-operator").startswith(operator.container.pod_name)
    sign_in_through_callback(admin, provider, callback, watched[1], trail)
    assert_clean_logs(operator, callback, trail=trail)

    # Least privilege, as the server judges it: nothing outside the watched namespaces,
    # and in its own namespace the operator may touch its Lease but no Secret.
    op_config = Path(operator.env["KUBECONFIG"])
    cb_config = Path(callback.env["KUBECONFIG"])
    for kubeconfig in (op_config, cb_config):
        assert forbidden(cluster, kubeconfig, "get", "secrets", "-n", elsewhere)
        assert forbidden(cluster, kubeconfig, "get", "secrets", "-n", release_ns)
        assert forbidden(cluster, kubeconfig, "get", "secrets", "--all-namespaces")
        assert forbidden(cluster, kubeconfig, "get", "emailtokens", "-n", elsewhere)
    assert not forbidden(cluster, op_config, "get", "leases", "-n", release_ns, f"{release}-emailtoken-operator")


# --- the kustomize manifests --------------------------------------------------------------
def kustomize(cluster: ControlPlane, directory: Path) -> list[Obj]:
    """``kubectl kustomize DIR`` (offline), as objects."""
    return [doc for doc in yaml.safe_load_all(cluster.kubectl("kustomize", str(directory)).stdout) if doc]


def with_provider_ca(workdir: Path, source: Path) -> Path:
    """A kustomization over ``source`` that hands the provider's CA to every Deployment.

    The plain manifests have no values: this is how their user adds a private CA, a patch
    that appends ``--ca-bundle`` (and allows the provider's host) and mounts the ConfigMap. Everything else
    stays as built.
    """
    folder = workdir / f"with-ca-{source.parent.name}-{source.name}"
    folder.mkdir()
    container = "/spec/template/spec/containers/0"
    patch = [
        {"op": "add", "path": f"{container}/args/-", "value": "--ca-bundle"},
        {"op": "add", "path": f"{container}/args/-", "value": f"{CA_MOUNT}/ca.crt"},
        {"op": "add", "path": f"{container}/args/-", "value": "--allow-provider-host"},
        {"op": "add", "path": f"{container}/args/-", "value": "127.0.0.1"},
        {"op": "add", "path": f"{container}/volumeMounts/-", "value": ca_values()["extraVolumeMounts"][0]},
        {"op": "add", "path": "/spec/template/spec/volumes/-", "value": ca_values()["extraVolumes"][0]},
    ]
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(source, folder)],
        "patches": [{"target": {"kind": "Deployment"}, "patch": yaml.safe_dump(patch)}],
    }
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return folder


def watched_namespaces(objects: list[Obj]) -> list[str]:
    args = deployment(objects, "operator")["spec"]["template"]["spec"]["containers"][0]["args"]
    return [args[i + 1] for i, arg in enumerate(args) if arg == "--namespace"]


@pytest.fixture
def kustomize_cleanup(cluster: ControlPlane, admin: ApiClient) -> Iterator[tuple[list[Obj], list[str]]]:
    """Objects applied from deploy/kustomize and namespaces made for them; removed after the test (not the CRD)."""
    objects: list[Obj] = []
    namespaces: list[str] = []
    yield objects, namespaces
    doomed = [o for o in objects if o["kind"] not in ("CustomResourceDefinition", "Namespace")]
    if doomed:
        cluster.kubectl("delete", "--ignore-not-found", "--wait=false", "-f", "-", input=yaml.safe_dump_all(doomed))
    for o in objects:
        if o["kind"] == "Namespace":
            namespaces.append(o["metadata"]["name"])
    for name in dict.fromkeys(namespaces):
        admin.http.delete(f"{admin.url}/api/v1/namespaces/{name}", timeout=10)


def test_kustomize_base_and_overlays_apply_and_their_operator_does_its_job(
    cluster: ControlPlane,
    admin: ApiClient,
    provider: DevProviderThread,
    make_namespace: Callable[[str], str],
    kustomize_cleanup: tuple[list[Obj], list[str]],
    run_container: Callable[..., ContainerProcess],
    trail: Trail,
    tmp_path: Path,
) -> None:
    applied, made_namespaces = kustomize_cleanup
    base_dir = KUSTOMIZE_DIR / "base"
    base = kustomize(cluster, base_dir)
    applied += base
    live = apply(cluster, base)
    (namespace_obj,) = of_kind(live, "Namespace")
    release_ns = namespace_obj["metadata"]["name"]
    assert namespace_obj["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    # Each Deployment's Pod is admitted under the base Namespace's restricted standard.
    wait_for(lambda: len(pods_in(admin, release_ns)) == 2, 30, what="a Pod per Deployment")
    assert_restricted_is_enforced(admin, release_ns)
    create_ca_configmap(admin, provider, release_ns)
    runnable = kustomize(cluster, with_provider_ca(tmp_path, base_dir))
    apply(cluster, runnable)
    lease = deployment(runnable, "operator")["metadata"]["name"]

    tokens_ns = make_namespace("mail")
    no_token_in_a_terminating_namespace(admin)
    operator = start_operator(run_container, runnable)
    app_only_token_becomes_ready(admin, provider, tokens_ns, trail)
    assert lease_holder(admin, release_ns, lease).startswith(operator.container.pod_name)
    assert_clean_logs(operator, trail=trail)
    operator.stop()  # releases the Lease: the next operator takes it at once

    overlays = sorted(p for p in (KUSTOMIZE_DIR / "overlays").iterdir() if p.is_dir())
    assert overlays
    for overlay_dir in overlays:
        overlay = kustomize(cluster, overlay_dir)
        applied += overlay
        # Namespaces the overlay serves but does not create (the single-namespace overlay's `mail`).
        for name in {o["metadata"].get("namespace") for o in overlay} - {None, release_ns}:
            if admin.http.get(f"{admin.url}/api/v1/namespaces/{name}", timeout=10).status_code == 404:
                admin.http.post(
                    f"{admin.url}/api/v1/namespaces",
                    json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
                    timeout=10,
                ).raise_for_status()
                made_namespaces.append(name)
        apply(cluster, overlay)
        # What the overlay leaves out of the base goes, as with `kubectl apply --prune` or a GitOps sync.
        kept = {key(o) for o in overlay}
        dropped = [o for o in base if key(o) not in kept]
        if dropped:
            cluster.kubectl("delete", "--wait=true", "-f", "-", input=yaml.safe_dump_all(dropped))
        runnable = kustomize(cluster, with_provider_ca(tmp_path, overlay_dir))
        apply(cluster, runnable)
        watched = watched_namespaces(runnable)

        operator = start_operator(run_container, runnable)
        for namespace in watched or [make_namespace("mail")]:
            app_only_token_becomes_ready(admin, provider, namespace, trail)
        assert lease_holder(admin, release_ns, lease).startswith(operator.container.pod_name)
        assert_clean_logs(operator, trail=trail)
        if watched:  # the ClusterRole is gone: the same ServiceAccount now reaches only its namespaces
            assert forbidden(cluster, Path(operator.env["KUBECONFIG"]), "get", "secrets", "-n", tokens_ns)
        operator.stop()
        apply(cluster, base)  # back to the base before the next overlay

"""A real Kubernetes control plane for tests: etcd, kube-apiserver and kube-controller-manager.

The binaries come from the folder named by ``KUBEBUILDER_ASSETS`` (the convention of
controller-runtime's ``setup-envtest``): ``kube-apiserver`` is required, ``etcd`` is taken
from there or from ``PATH`` (Debian ``etcd-server``), ``kube-controller-manager`` is
optional outside CI (garbage collection tests need it). Outside CI the tier skips
without them; under ``CI=true`` it fails, because ``.ci/run`` provides them.

Everything listens on free loopback ports with a PKI made here; clients authenticate
with static tokens (``admin`` is in ``system:masters``) or with ServiceAccount tokens
from the TokenRequest API, exactly as a Pod's would be.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import trustme
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.ports import free_port
from tests.support.system import in_ci

ASSETS_ENV = "KUBEBUILDER_ASSETS"
ENABLE_HINT = (
    f"set {ASSETS_ENV} to a folder with kube-apiserver (and kube-controller-manager), with etcd there or on PATH; "
    "in this repo: `make k8s-assets` unpacks ../shared/k8s into .k8s-assets and prints the export line"
)


def _skip_or_fail(message: str) -> None:
    if in_ci():
        pytest.fail(f"real API server tier cannot run under CI: {message}")
    pytest.skip(f"real API server tier skipped: {message} ({ENABLE_HINT})")


def find_assets() -> dict[str, str | None]:
    """Locate the binaries, or skip (laptop) / fail (CI) with how to provide them."""
    folder = os.environ.get(ASSETS_ENV, "")
    if not folder:
        _skip_or_fail(f"{ASSETS_ENV} is not set")
    base = Path(folder)
    apiserver = base / "kube-apiserver"
    if not os.access(apiserver, os.X_OK):
        _skip_or_fail(f"no executable kube-apiserver in {base}")
    etcd = base / "etcd"
    etcd_path = str(etcd) if os.access(etcd, os.X_OK) else shutil.which("etcd")
    if not etcd_path:
        _skip_or_fail("etcd is neither in the assets folder nor on PATH (apt-get install etcd-server)")
    kcm = base / "kube-controller-manager"
    kcm_path = str(kcm) if os.access(kcm, os.X_OK) else None
    if kcm_path is None and in_ci():
        pytest.fail(f"no kube-controller-manager in {base}: garbage collection cannot be proven")
    return {"apiserver": str(apiserver), "etcd": str(etcd_path), "controller_manager": kcm_path}


class ControlPlane:
    """etcd + kube-apiserver (+ kube-controller-manager) as child processes.

    ``stop_apiserver``/``start_apiserver`` restart the API server on the same port and
    certificates, the way an upgrade or a crash looks to clients; etcd keeps the data.
    """

    ADMIN_TOKEN = "emailtoken-test-admin"

    def __init__(self, workdir: Path, assets: dict[str, str | None]) -> None:
        self.dir = workdir
        self.assets = assets
        self.etcd_port, self.peer_port, self.port = free_port(), free_port(), free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, Any] = {}
        self._pki()

    # --- set-up ---------------------------------------------------------------------------
    def _pki(self) -> None:
        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost", "kubernetes.default.svc")
        self.ca_path = self.dir / "ca.crt"
        ca.cert_pem.write_to_path(str(self.ca_path))
        server.cert_chain_pems[0].write_to_path(str(self.dir / "server.crt"))
        server.private_key_pem.write_to_path(str(self.dir / "server.key"))
        ca.private_key_pem.write_to_path(str(self.dir / "ca.key"))
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (self.dir / "sa.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
            )
        )
        (self.dir / "sa.pub").write_bytes(
            key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        (self.dir / "tokens.csv").write_text(f"{self.ADMIN_TOKEN},admin,admin,system:masters\n")
        self.admin_kubeconfig = self.kubeconfig_for(self.ADMIN_TOKEN, "admin")

    def kubeconfig_for(self, token: str, name: str) -> Path:
        """A kubeconfig file that authenticates with ``token`` (how a Pod's ServiceAccount would)."""
        path = self.dir / f"kubeconfig-{name}"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": {"server": self.url, "certificate-authority": str(self.ca_path)}}],
            "users": [{"name": name, "user": {"token": token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": name}}],
            "current-context": "test",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.dir / f"{name}.log", "ab")
        self._logs[name] = log
        self.procs[name] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)

    def start(self) -> ControlPlane:
        etcd_url = f"http://127.0.0.1:{self.etcd_port}"
        peer_url = f"http://127.0.0.1:{self.peer_port}"
        self._spawn(
            "etcd",
            [
                str(self.assets["etcd"]),
                "--data-dir", str(self.dir / "etcd"),
                "--name", "test",
                "--listen-client-urls", etcd_url,
                "--advertise-client-urls", etcd_url,
                "--listen-peer-urls", peer_url,
                "--initial-advertise-peer-urls", peer_url,
                "--initial-cluster", f"test={peer_url}",
            ],
        )  # fmt: skip
        self.start_apiserver()
        if self.assets.get("controller_manager"):
            self._spawn(
                "kube-controller-manager",
                [
                    str(self.assets["controller_manager"]),
                    f"--kubeconfig={self.admin_kubeconfig}",
                    "--leader-elect=false",
                    "--secure-port=0",
                    "--controllers=*",
                    "--use-service-account-credentials=false",
                    f"--service-account-private-key-file={self.dir / 'sa.key'}",
                    f"--root-ca-file={self.ca_path}",
                    f"--cluster-signing-cert-file={self.ca_path}",
                    f"--cluster-signing-key-file={self.dir / 'ca.key'}",
                    "--service-cluster-ip-range=10.0.0.0/24",
                ],
            )
        return self

    def start_apiserver(self, wait: bool = True) -> None:
        self._spawn(
            "kube-apiserver",
            [
                str(self.assets["apiserver"]),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.port}",
                f"--tls-cert-file={self.dir / 'server.crt'}",
                f"--tls-private-key-file={self.dir / 'server.key'}",
                f"--client-ca-file={self.ca_path}",
                # The issuer is this server's own URL, so its OIDC discovery document and
                # /openid/v1/jwks can be fetched the way Entra fetches a cluster's (workload identity
                # federation); the in-cluster name stays accepted.
                f"--service-account-issuer={self.url}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-jwks-uri={self.url}/openid/v1/jwks",
                f"--service-account-key-file={self.dir / 'sa.pub'}",
                f"--service-account-signing-key-file={self.dir / 'sa.key'}",
                f"--token-auth-file={self.dir / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--disable-admission-plugins=ServiceAccount",
                "--endpoint-reconciler-type=none",
            ],
        )
        if wait:
            self.wait_ready()

    def stop_apiserver(self) -> None:
        """SIGKILL the API server: connections are refused until it is started again."""
        proc = self.procs.pop("kube-apiserver", None)
        if proc is not None:
            proc.kill()
            proc.wait(10)

    def stop_etcd(self) -> None:
        """SIGKILL etcd (its data stays): the API server is up but can neither read nor write.

        Measured here: a request the API server takes meanwhile hangs (reads ~60 s, writes
        ~34 s) and ends in 504, or completes once etcd is back.
        """
        proc = self.procs.pop("etcd", None)
        if proc is not None:
            self._etcd_command = list(proc.args)  # type: ignore[arg-type]
            proc.kill()
            proc.wait(10)

    def start_etcd(self, timeout: float = 60) -> None:
        """Start etcd again with the same command and data; return once the API server reads
        from it again (its etcd client reconnects with a backoff: ~14 s measured here)."""
        self._spawn("etcd", self._etcd_command)
        deadline = time.monotonic() + timeout
        http = self.session()
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                # a quorum read: /readyz can answer 200 from a cached etcd check while etcd is gone
                if http.get(self.url + "/api/v1/namespaces/default", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"the API server did not read from etcd within {timeout}s of its restart")

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        http = self.session()
        last = ""
        while time.monotonic() < deadline:
            proc = self.procs.get("kube-apiserver")
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"kube-apiserver exited ({proc.returncode}): {self.log('kube-apiserver')[-3000:]}")
            with contextlib.suppress(requests.RequestException):
                r = http.get(self.url + "/readyz", timeout=2)
                if r.status_code == 200:
                    return
                last = r.text[-300:]
            time.sleep(0.2)
        raise RuntimeError(f"kube-apiserver not ready after {timeout}s: {last}")

    def stop(self) -> None:
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            proc = self.procs.pop(name, None)
            if proc is None:
                continue
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for log in self._logs.values():
            log.close()

    def log(self, name: str) -> str:
        path = self.dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # --- clients --------------------------------------------------------------------------
    def session(self, token: str | None = None) -> requests.Session:
        http = requests.Session()
        http.trust_env = False
        http.verify = str(self.ca_path)
        http.headers["Authorization"] = f"Bearer {token or self.ADMIN_TOKEN}"
        return http

    def kubectl(self, *args: str, kubeconfig: Path | None = None, input: str | None = None, check: bool = True):
        """Run the real kubectl against this server (admin unless another kubeconfig is given)."""
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            _skip_or_fail("kubectl is not installed")
        return subprocess.run(
            [kubectl, f"--kubeconfig={kubeconfig or self.admin_kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
        )

    def service_account_token(
        self, namespace: str, name: str, seconds: int = 3600, audiences: list[str] | None = None
    ) -> str:
        """A token for ``namespace/name`` from the TokenRequest API, as the kubelet projects it
        (``audiences``: a projected volume's ``audience``; default: the API server's own)."""
        spec: dict[str, Any] = {"expirationSeconds": seconds}
        if audiences:
            spec["audiences"] = audiences
        r = self.session().post(
            f"{self.url}/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
            timeout=10,
        )
        r.raise_for_status()
        return r.json()["status"]["token"]

    def service_account_kubeconfig(self, namespace: str, name: str) -> Path:
        return self.kubeconfig_for(self.service_account_token(namespace, name), f"sa-{namespace}-{name}")


def decode_secret(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


@contextlib.contextmanager
def control_plane(workdir: Path) -> Iterator[ControlPlane]:
    plane = ControlPlane(workdir, find_assets())
    try:
        yield plane.start()
    finally:
        plane.stop()


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True)

"""Run one container of a rendered Deployment as a local process, the way its Pod would run.

The test control plane has no kubelet (Pods stay Pending), so this does the kubelet's part
for one container and nothing more:

- the image's ENTRYPOINT, ENV and WORKDIR are read from the Dockerfile's final stage (the
  entrypoint ``emailtoken`` is the same console script, from this venv);
- the container's ``args`` and ``env`` are used exactly as rendered; downward-API env is
  resolved (``metadata.name`` is a Pod name made here, ``metadata.namespace`` the
  Deployment's namespace), ``secretKeyRef``/``configMapKeyRef`` are read from the API;
- volumes are materialized the kubelet's way (``emptyDir`` an empty folder, ``configMap``
  and ``secret`` read from the API server, ``items`` and ``defaultMode`` honoured) and
  each ``mountPath`` becomes a local folder: an argument or env value that names a path
  under a mountPath is rewritten to the local folder (unavoidable: the process shares this
  machine's filesystem);
- the Pod's own network namespace is emulated by giving each declared ``containerPort`` a
  free loopback port: the value of a ``--*-port`` flag that equals a declared port is
  rewritten (unavoidable: two processes on one machine cannot both listen on 8080).

Nothing else is changed. The process gets no environment from this machine beyond
``PATH`` and the locale, so it cannot borrow trust or credentials from the test run
(``REQUESTS_CA_BUNDLE``, an admin ``KUBECONFIG``); its only Kubernetes credential is the
kubeconfig the caller gives, normally a ServiceAccount token from the TokenRequest API.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.childprocess import ChildProcess
from tests.support.kube import ApiClient
from tests.support.operator_process import REPO
from tests.support.ports import free_port

DOCKERFILE = REPO / "Dockerfile"
_VARIABLE = re.compile(r"\$\([A-Za-z_][A-Za-z0-9_]*\)")


@dataclass(frozen=True)
class Image:
    """What the image contributes to a container: entrypoint, environment, working directory."""

    entrypoint: tuple[str, ...]
    env: dict[str, str]
    workdir: str


def image_from_dockerfile(path: Path = DOCKERFILE) -> Image:
    """ENTRYPOINT, ENV and WORKDIR of the Dockerfile's final stage.

    ENV values that expand other variables (``PATH=/opt/venv/bin:$PATH``) describe the
    image's own layout and are left out: the entrypoint is resolved in this venv instead.
    """
    logical: list[str] = []
    current = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#"):
            continue  # a comment, also inside a continued instruction (Docker allows that)
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        if (current + line).strip():
            logical.append((current + line).strip())
        current = ""
    last_from = max(i for i, line in enumerate(logical) if line.upper().startswith("FROM "))
    stage = logical[last_from + 1 :]
    entrypoint: tuple[str, ...] = ()
    env: dict[str, str] = {}
    workdir = "/"
    for line in stage:
        instruction, _, rest = line.partition(" ")
        if instruction == "ENTRYPOINT":
            entrypoint = tuple(json.loads(rest))
        elif instruction == "WORKDIR":
            workdir = rest.strip()
        elif instruction == "ENV":
            for token in shlex.split(rest):
                key, _, value = token.partition("=")
                if "$" not in value:
                    env[key] = value
    if not entrypoint:
        raise ValueError(f"no ENTRYPOINT in the final stage of {path}")
    return Image(entrypoint=entrypoint, env=env, workdir=workdir)


@dataclass
class LocalContainer:
    """A container prepared to run here: argv, env and the folder/port mappings applied."""

    deployment: str
    namespace: str
    pod_name: str
    service_account: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    ports: dict[int, int] = field(default_factory=dict)  # containerPort -> local port
    port_names: dict[str, int] = field(default_factory=dict)  # port name -> containerPort
    mounts: dict[str, Path] = field(default_factory=dict)  # mountPath -> local folder

    def port(self, name_or_number: str | int) -> int:
        """The local port standing in for a container port (by its name or number)."""
        number = self.port_names[name_or_number] if isinstance(name_or_number, str) else name_or_number
        return self.ports[number]

    def url(self, port: str | int) -> str:
        return f"http://127.0.0.1:{self.port(port)}"


def _container(deployment: dict[str, Any], name: str | None) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    if name is None:
        if len(containers) != 1:
            raise ValueError("the Deployment has several containers: name one")
        return containers[0]
    for container in containers:
        if container["name"] == name:
            return container
    raise KeyError(f"no container {name!r}")


def _projected(data: dict[str, bytes], volume: dict[str, Any]) -> dict[str, bytes]:
    """The files of a configMap/secret volume: every key, or just ``items`` under their paths."""
    items = volume.get("items")
    if not items:
        return data
    out: dict[str, bytes] = {}
    for item in items:
        if item["key"] not in data:
            raise KeyError(f"key {item['key']!r} is not in the source of the volume")
        out[item["path"]] = data[item["key"]]
    return out


def _materialize(volume: dict[str, Any], target: Path, namespace: str, api: ApiClient) -> None:
    """Write a volume's files under ``target`` as the kubelet would (read through ``api``)."""
    target.mkdir(parents=True, exist_ok=True)
    if "emptyDir" in volume:
        return
    if "configMap" in volume:
        source = volume["configMap"]
        obj = api.get("configmaps", namespace, source["name"])
        if obj is None:
            raise LookupError(f"ConfigMap {namespace}/{source['name']} of volume {volume['name']} does not exist")
        data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    elif "secret" in volume:
        source = volume["secret"]
        obj = api.get("secrets", namespace, source["secretName"])
        if obj is None:
            raise LookupError(f"Secret {namespace}/{source['secretName']} of volume {volume['name']} does not exist")
        data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
    else:
        raise NotImplementedError(f"volume {volume['name']}: only emptyDir, configMap and secret are emulated")
    mode = source.get("defaultMode", 0o644)
    for path, content in _projected(data, source).items():
        file = target / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(content)
        file.chmod(mode | 0o400)  # the kubelet makes it readable by the pod's fsGroup; here that is us


def prepare(
    deployment: dict[str, Any],
    *,
    api: ApiClient,
    workdir: Path,
    container: str | None = None,
    ports: dict[int, int] | None = None,
    image: Image | None = None,
) -> LocalContainer:
    """Map a rendered Deployment's container onto this machine (see the module docstring).

    ``ports`` pins local ports for some container ports (e.g. one a redirect URL was
    rendered with); the others get free ports. ``api`` reads configMap/secret volumes and
    env sources with the rights the kubelet has (use the admin client).
    """
    image = image or image_from_dockerfile()
    meta = deployment["metadata"]
    namespace = meta["namespace"]
    pod_spec = deployment["spec"]["template"]["spec"]
    spec = _container(deployment, container)
    if spec.get("command"):
        raise NotImplementedError("the container overrides the image's ENTRYPOINT; not emulated")
    pod_name = f"{meta['name']}-{secrets.token_hex(3)}"
    root = workdir / pod_name
    volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
    mounts: dict[str, Path] = {}
    for mount in spec.get("volumeMounts") or []:
        if mount.get("subPath"):
            raise NotImplementedError("subPath mounts are not emulated")
        local = root / "volumes" / mount["name"]
        _materialize(volumes[mount["name"]], local, namespace, api)
        mounts[mount["mountPath"].rstrip("/")] = local

    local_ports = dict(ports or {})
    port_names: dict[str, int] = {}
    for port in spec.get("ports") or []:
        local_ports.setdefault(port["containerPort"], free_port())
        if port.get("name"):
            port_names[port["name"]] = port["containerPort"]

    def local_path(value: str) -> str:
        for mount_path in sorted(mounts, key=len, reverse=True):
            if value == mount_path or value.startswith(mount_path + "/"):
                return str(mounts[mount_path]) + value[len(mount_path) :]
        return value

    def local_value(value: str, flag: str | None) -> str:
        if flag and flag.startswith("--") and flag.endswith("-port") and value.isdigit() and int(value) in local_ports:
            return str(local_ports[int(value)])
        return local_path(value)

    argv: list[str] = []
    previous: str | None = None
    for arg in spec.get("args") or []:
        if _VARIABLE.search(arg):
            raise NotImplementedError(f"$(VAR) expansion in args is not emulated: {arg!r}")
        if arg.startswith("--") and "=" in arg:
            flag, _, value = arg.partition("=")
            argv.append(f"{flag}={local_value(value, flag)}")
        else:
            argv.append(local_value(arg, previous))
        previous = arg

    service_account = pod_spec.get("serviceAccountName") or "default"
    env = {key: local_path(value) for key, value in image.env.items()}
    for item in spec.get("env") or []:
        env[item["name"]] = _env_value(item, namespace, pod_name, service_account, api, local_path)
    cwd = Path(local_path(image.workdir))
    if not cwd.is_absolute() or not str(cwd).startswith(str(root)):
        cwd = root
    cwd.mkdir(parents=True, exist_ok=True)
    return LocalContainer(
        deployment=meta["name"],
        namespace=namespace,
        pod_name=pod_name,
        service_account=service_account,
        argv=[*image.entrypoint, *argv],
        env=env,
        cwd=cwd,
        ports=local_ports,
        port_names=port_names,
        mounts=mounts,
    )


def _env_value(
    item: dict[str, Any], namespace: str, pod_name: str, service_account: str, api: ApiClient, local_path: Any
) -> str:
    if "value" in item:
        return local_path(str(item["value"]))
    source = item.get("valueFrom") or {}
    if "fieldRef" in source:
        fields = {
            "metadata.name": pod_name,
            "metadata.namespace": namespace,
            "spec.serviceAccountName": service_account,
        }
        path = source["fieldRef"]["fieldPath"]
        if path not in fields:
            raise NotImplementedError(f"downward API field {path!r} is not emulated")
        return fields[path]
    if "secretKeyRef" in source or "configMapKeyRef" in source:
        is_secret = "secretKeyRef" in source
        ref = source["secretKeyRef" if is_secret else "configMapKeyRef"]
        obj = api.get("secrets" if is_secret else "configmaps", namespace, ref["name"]) or {}
        data = obj.get("data") or {}
        if ref["key"] not in data:
            raise LookupError(f"{ref['name']}/{ref['key']} for env {item['name']} does not exist")
        return base64.b64decode(data[ref["key"]]).decode() if is_secret else data[ref["key"]]
    raise NotImplementedError(f"env {item['name']}: {sorted(source)} is not emulated")


class ContainerProcess(ChildProcess):
    """A :class:`LocalContainer` running as a child process with one kubeconfig as its credentials."""

    wait_timeout = 30.0

    def __init__(self, container: LocalContainer, kubeconfig: Path, log_dir: Path) -> None:
        self.container = container
        self.label = container.pod_name
        entry, *rest = container.argv
        executable = Path(sys.executable).parent / entry
        if not os.access(executable, os.X_OK):
            raise FileNotFoundError(f"the image's entrypoint {entry!r} is not installed in this venv")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            **container.env,
            "KUBECONFIG": str(kubeconfig),
        }
        super().__init__(log_dir / f"{container.pod_name}.log", [str(executable), *rest], env, Path(container.cwd))

    def start(self) -> ContainerProcess:
        super().start()
        return self

"""Run the real operator (``python -m emailtoken run``) as a child process for tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tests.support.childprocess import ChildProcess
from tests.support.kube import free_env

REPO = Path(__file__).resolve().parents[2]


class OperatorProcess(ChildProcess):
    """The operator as a separate process against a kubeconfig; logs captured to a file."""

    label = "operator"

    def __init__(
        self,
        kubeconfig: Path,
        workdir: Path,
        *,
        ca_bundle: str | None = None,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        name: str = "operator",
        namespaces: list[str] | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        scope = [f"--namespace={ns}" for ns in namespaces] if namespaces else ["--all-namespaces"]
        args = [
            sys.executable,
            "-m",
            "emailtoken",
            "run",
            *scope,
            "--health-port",
            "0",
            "--log-format",
            "full",
            "-v",
            # Tests use tokens that live seconds; the product's floor (15 s) would only slow them.
            "--min-refresh-interval",
            "1s",
        ]
        if ca_bundle:  # the local provider: its CA, and its host allowed like an installer would
            args += ["--ca-bundle", ca_bundle, "--allow-provider-host", "127.0.0.1"]
        args += extra_args or []
        env = {**free_env(), "KUBECONFIG": str(kubeconfig), **(env or {})}
        super().__init__(workdir / f"{name}.log", args, env, REPO)

    def start(self) -> OperatorProcess:
        super().start()
        return self


def python_path_env() -> dict[str, str]:
    """PYTHONPATH so a child finds the package even without an editable install."""
    src = str(REPO / "operator")
    return {"PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}

"""Run the real operator (``python -m emailtoken run``) as a child process for tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.kube import free_env

REPO = Path(__file__).resolve().parents[2]


class OperatorProcess:
    """The operator as a separate process against a kubeconfig; logs captured to a file."""

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
        self.log_path = workdir / f"{name}.log"
        scope = [f"--namespace={ns}" for ns in namespaces] if namespaces else ["--all-namespaces"]
        self.args = [
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
            self.args += ["--ca-bundle", ca_bundle, "--allow-provider-host", "127.0.0.1"]
        self.args += extra_args or []
        self.env = {**free_env(), "KUBECONFIG": str(kubeconfig), **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = None

    def start(self) -> OperatorProcess:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT, env=self.env, cwd=REPO)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._log:
            self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, like an OOM kill or node loss."""
        self.stop(signal.SIGKILL)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, text: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log:
                return
            if self.proc and self.proc.poll() is not None:
                raise AssertionError(f"operator exited ({self.proc.returncode}):\n{self.log[-4000:]}")
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not in operator log:\n{self.log[-4000:]}")


def python_path_env() -> dict[str, str]:
    """PYTHONPATH so a child finds the package even without an editable install."""
    src = str(REPO / "operator")
    return {"PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}

"""`emailtoken demo` on a machine with no cluster: the token becomes Ready and is refreshed,
plain kubectl works against the kubeconfig it prints, and nothing is left behind."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.kube import free_env
from tests.support.system import need_binary


@dataclass
class Demo:
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    kubeconfig: Path | None = None

    def read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            found = re.search(r"KUBECONFIG=(\S+?)\)", line)
            if found and self.kubeconfig is None:
                self.kubeconfig = Path(found.group(1))

    def wait_for(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert time.monotonic() < deadline, f"{text!r} not in demo output:\n{''.join(self.lines)}"
            assert self.process.poll() is None, "".join(self.lines)
            time.sleep(0.1)

    def finish(self) -> str:
        self.process.wait(timeout=60)
        return "".join(self.lines)


@pytest.fixture(scope="module")
def demo() -> Iterator[Demo]:
    """One demo run for the module: 6-second tokens, stops by itself after 14 s."""
    process = subprocess.Popen(
        [sys.executable, "-m", "emailtoken", "demo", "--lifetime", "6", "--duration", "14"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**free_env(), "KUBECONFIG": "/nonexistent"},
    )
    running = Demo(process)
    reader = threading.Thread(target=running.read, daemon=True)
    reader.start()
    yield running
    if process.poll() is None:
        process.kill()
        process.wait()


def _kubectl(demo: Demo, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    kubectl = need_binary("kubectl")
    return subprocess.run(
        [kubectl, f"--kubeconfig={demo.kubeconfig}", *args], capture_output=True, text=True, timeout=timeout
    )


def test_kubectl_against_the_demo_api(demo: Demo) -> None:
    demo.wait_for("TOKEN (sha256 prefix)")
    assert demo.kubeconfig is not None and demo.kubeconfig.exists()

    ready = _kubectl(demo, "wait", "--for=condition=Ready", "emailtoken/shared-mailbox", "--timeout=20s")
    assert ready.returncode == 0, ready.stderr
    assert "condition met" in ready.stdout
    assert ready.stderr == ""  # no watch decoding errors, no short-name warnings
    # The watch is for that one name: the other token's state does not answer it.
    other = _kubectl(demo, "wait", "--for=condition=Ready", "emailtoken/alice-mailbox", "--timeout=2s")
    assert other.returncode != 0
    assert "timed out" in other.stderr

    listed = _kubectl(demo, "get", "emailtokens", "-A")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split()[:6] == ["NAMESPACE", "NAME", "PROVIDER", "EMAIL", "READY", "PHASE"]
    assert any(row.split()[:2] == ["demo", "shared-mailbox"] and " True " in row for row in rows), listed.stdout
    assert any(row.split()[:2] == ["demo", "alice-mailbox"] and "AwaitingAuthorization" in row for row in rows)

    # -w: the list, then changes only (the unchanged token is not printed twice).
    try:
        watched = _kubectl(demo, "get", "emailtokens", "-A", "-w", timeout=3).stdout
    except subprocess.TimeoutExpired as stopped:
        watched = stopped.stdout.decode() if isinstance(stopped.stdout, bytes) else stopped.stdout or ""
    assert watched.startswith("NAMESPACE") and watched.count("alice-mailbox") == 1, watched

    described = _kubectl(demo, "describe", "emailtoken", "shared-mailbox")
    assert described.returncode == 0, described.stderr
    assert "Kind:         EmailToken" in described.stdout
    events = described.stdout.split("Events:", 1)[1]
    assert "shared-mailbox@demo.example" in events
    assert "alice" not in events  # only this token's Events (the field selector is applied)

    secrets = _kubectl(demo, "get", "secrets")
    assert secrets.returncode == 0, secrets.stderr
    assert {"demo-app-secret", "demo-web-secret", "shared-mailbox"} <= {
        line.split()[0] for line in secrets.stdout.splitlines()[1:]
    }


def test_demo_shows_token_ready_and_refreshed(demo: Demo) -> None:
    out = demo.finish()
    assert demo.process.returncode == 0, demo.process.stderr.read()[-2000:] if demo.process.stderr else ""
    assert "embedded Kubernetes API: http://127.0.0.1:" in out
    rows = [line for line in out.splitlines() if line.startswith("shared-mailbox")]
    ready_rows = [r for r in rows if re.search(r"\sTrue\s.*\sReady\s", r)]
    assert ready_rows, out
    fingerprints = {r.split()[-1] for r in ready_rows}
    assert len(fingerprints) >= 2, f"expected at least one refresh:\n{out}"
    assert demo.process.stderr is not None and "Traceback" not in demo.process.stderr.read()
    assert "stopping" in out


def test_demo_removes_its_kubeconfig(demo: Demo) -> None:
    demo.finish()
    assert demo.kubeconfig is not None
    assert not demo.kubeconfig.parent.exists()

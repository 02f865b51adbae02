"""`emailtoken demo` on a machine with no cluster: the token becomes Ready and is refreshed."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.support.kube import free_env


def test_demo_shows_token_ready_and_refreshed():
    result = subprocess.run(
        [sys.executable, "-m", "emailtoken", "demo", "--lifetime", "6", "--duration", "14"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**free_env(), "KUBECONFIG": "/nonexistent"},
    )
    out = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    assert "embedded Kubernetes API: http://127.0.0.1:" in out
    rows = [line for line in out.splitlines() if line.startswith("shared-mailbox")]
    ready_rows = [r for r in rows if re.search(r"\sTrue\s.*\sReady\s", r)]
    assert ready_rows, out
    fingerprints = {r.split()[-1] for r in ready_rows}
    assert len(fingerprints) >= 2, f"expected at least one refresh:\n{out}"
    assert "Traceback" not in result.stderr
    assert "stopping" in out

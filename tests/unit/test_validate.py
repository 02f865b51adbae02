"""``emailtoken validate``: the CRD's schema and rules plus the operator's checks, offline, fit for CI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from emailtoken import validate
from tests.support.spec_cases import CASES, MESSAGES, Case

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").rglob("*.yaml"))


def token(name: str, spec: dict, **meta: str) -> dict:
    return {
        "apiVersion": "emailtoken.io/v1alpha1",
        "kind": "EmailToken",
        "metadata": {"name": name, **meta},
        "spec": spec,
    }


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The installed console script, as a CI job would call it."""
    exe = Path(sys.executable).with_name("emailtoken")
    return subprocess.run([str(exe), "validate", *args], input=stdin, capture_output=True, text=True, timeout=60)


def test_the_package_ships_the_crd_of_the_repository() -> None:
    assert validate.crd() == yaml.safe_load((ROOT / "crds" / "emailtokens.emailtoken.io.yaml").read_text())


def test_every_example_is_valid() -> None:
    result = run(*map(str, EXAMPLES))
    assert (result.returncode, result.stdout) == (0, "")
    tokens = sum(1 for p in EXAMPLES for d in yaml.safe_load_all(p.read_text()) if d and d["kind"] == "EmailToken")
    assert f"{tokens} EmailToken(s) checked, 0 invalid" in result.stderr


@pytest.mark.parametrize("case", [c for c in CASES if c.old is None], ids=lambda c: c.id)
def test_the_spec_table(case: Case) -> None:
    """The same table the API server and parse_spec judge (tests/cluster/test_crd_server.py)."""
    problems = validate.check_object(token(case.id, case.spec, namespace="mail"), "t.yaml")
    assert sorted(p.message for p in problems) == sorted(MESSAGES[k] for k in case.fails)
    assert all(str(p).startswith(f"t.yaml: EmailToken mail/{case.id}: spec.") for p in problems)


def test_schema_problems_name_file_object_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump_all(
            [
                token(
                    "typo",
                    {
                        "provider": "Google",
                        "clientId": "c",
                        "clientSecretRef": {"name": "s"},
                        "services": ["Gmail"],
                        "tokenURL": "https://oauth2.googleapis.com/token",
                    },
                ),
                token(
                    "http",
                    {
                        "provider": "Google",
                        "clientId": "c",
                        "clientSecretRef": {"name": "s"},
                        "services": ["Gmail"],
                        "tokenUrl": "http://oauth2.googleapis.com/token",
                    },
                ),
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ignored"}},
                {"apiVersion": "v1", "kind": "List", "items": [token("listed", {"provider": "Yahoo"})]},
            ]
        )
    )
    result = run(str(bad))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert f"{bad}: EmailToken -/typo: spec: Additional properties are not allowed ('tokenURL' was unexpected)" in lines
    assert any(line.startswith(f"{bad}: EmailToken -/http: spec.tokenUrl: ") for line in lines)
    assert any(line.startswith(f"{bad}: EmailToken -/listed: spec.provider: ") for line in lines)
    assert "3 EmailToken(s) checked, 3 invalid" in result.stderr


def test_stdin_and_the_kubectl_plugin(tmp_path: Path) -> None:
    text = yaml.safe_dump(
        token("t", {"provider": "Microsoft", "clientId": "c", "clientSecretRef": {"name": "s"}, "services": ["IMAP"]})
    )
    result = run("-", stdin=text)
    assert result.returncode == 1
    assert "<stdin>: EmailToken -/t: spec.tenantId: tenantId is required when provider is Microsoft" in result.stdout
    plugin = Path(sys.executable).with_name("kubectl-emailtoken")
    via_kubectl = subprocess.run([str(plugin), "validate", "-"], input=text, capture_output=True, text=True, timeout=60)
    assert (via_kubectl.returncode, via_kubectl.stdout) == (1, result.stdout)


def test_unreadable_input_exits_2(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("spec: [unclosed\n")
    result = run(str(broken), str(tmp_path / "missing.yaml"), str(EXAMPLES[0]))
    assert result.returncode == 2
    assert f"{broken}: cannot read:" in result.stderr and "missing.yaml: cannot read:" in result.stderr

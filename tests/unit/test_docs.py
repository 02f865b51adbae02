"""What an outsider reads first agrees with the code: the README's two commands and its
`kubectl get` columns, namespaced kubectl commands in examples and docs, links that
resolve, the license the metadata names, a changelog in the Keep a Changelog shape."""

from __future__ import annotations

import itertools
import re
import shlex
import textwrap
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import helm_python
import pytest
import yaml

from emailtoken import validate

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
CRD = ROOT / "crds" / "emailtokens.emailtoken.io.yaml"
CHART = ROOT / "charts" / "emailtoken-operator"
#: Documents a user follows; their relative links must resolve.
DOCS = [
    README,
    ROOT / "CHANGELOG.md",
    ROOT / "deploy" / "README.md",
    CHART / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
]
KEEP_A_CHANGELOG = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}


def printer_columns() -> list[str]:
    """The columns `kubectl get emailtokens` prints (priority 0), as kubectl heads them."""
    (version,) = yaml.safe_load(CRD.read_text())["spec"]["versions"]
    return [c["name"].upper() for c in version["additionalPrinterColumns"] if not c.get("priority")]


def test_readme_states_the_two_commands() -> None:
    text = README.read_text()
    assert "`make demo`" in text and "`make test`" in text
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)


def test_readme_kubectl_get_output_has_the_crd_columns() -> None:
    lines = [line.strip() for line in README.read_text().splitlines()]
    shown = [i for i, line in enumerate(lines) if re.match(r"\$ kubectl get (emailtokens|et)\b(?!.*-o )", line)]
    assert shown, "the README shows no `kubectl get emailtokens` output"
    for i in shown:
        header = re.split(r"\s{2,}", lines[i + 1].strip())
        expected = ["NAMESPACE", "NAME"] if re.search(r"\s(-A|--all-namespaces)\b", lines[i]) else ["NAME"]
        assert header == expected + printer_columns(), lines[i]


def code_blocks(text: str, language: str) -> list[str]:
    """Fenced blocks of one language, also those indented in a list item (as rendered)."""
    found = re.findall(rf"^( *)```{language}\n(.*?)^\1```", text, re.M | re.S)
    return [textwrap.dedent(block) for _, block in found]


def quickstart() -> str:
    text = README.read_text()
    start = text.index("## Quickstart on a real cluster")
    return text[start : text.index("\n## ", start + 1)]


def test_quickstart_helm_command_exposes_the_callback_through_an_ingress() -> None:
    """The quickstart's `helm install` renders an Ingress for exactly /callback at the host
    of redirectBaseUrl (without one the provider cannot reach the callback), serves the
    namespace the quickstart's token lives in, and links status.authorizeUrl to the
    port-forward the quickstart tells you to open."""
    lines = [line for b in code_blocks(quickstart(), "sh") for line in b.replace("\\\n", " ").splitlines()]
    (command,) = [line for line in lines if line.startswith("helm install")]
    words = shlex.split(command)
    values: dict[str, Any] = {}
    for flag, value in itertools.pairwise(words):
        if flag == "--set":
            values = merge(values, helm_python.parse_set_string(value))
    chart = helm_python.Chart.load(str(CHART))
    merged = chart.merge_values(values)
    rendered = chart.render(values, name="emailtoken-operator", namespace="emailtoken-system")
    objects = [d for path, text in rendered.items() if path.endswith(".yaml") for d in yaml.safe_load_all(text) if d]
    (ingress,) = [o for o in objects if o["kind"] == "Ingress"]
    base = urlsplit(merged["callback"]["redirectBaseUrl"])
    assert base.scheme == "https"
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == base.hostname
    assert [p["path"] for p in rule["http"]["paths"]] == ["/callback"]
    assert f"{base.geturl()}/callback" in quickstart()  # the redirect URI to register
    assert re.findall(r"kubectl -n (\S+) (?:create|apply|get|wait)", quickstart()) and {
        ns for ns in re.findall(r"kubectl -n (\S+) (?:create|apply|wait)", quickstart()) if ns != "emailtoken-system"
    } <= set(merged["watchNamespaces"])
    forward = re.search(r"port-forward deploy/emailtoken-operator-callback (\d+):(\d+)", quickstart())
    assert forward and f"http://localhost:{forward.group(1)}" == merged["callback"]["adminUrl"]


def test_readme_emailtoken_manifests_pass_validate() -> None:
    """Every EmailToken the README shows is one the API server and the operator accept."""
    text = README.read_text()
    heredocs = [h for block in code_blocks(text, "sh") for h in re.findall(r"<<'EOF'\n(.*?)^EOF", block, re.M | re.S)]
    manifests = code_blocks(text, "yaml") + heredocs
    tokens = [d for block in manifests for d in yaml.safe_load_all(block) if d and d.get("kind") == "EmailToken"]
    assert len(tokens) >= 2
    for token in tokens:
        assert validate.check_object(token, "README.md") == [], token["metadata"]["name"]


def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def kubectl_lines() -> list[tuple[str, str]]:
    files = [*DOCS, ROOT / "examples" / "README.md", CHART / "templates" / "NOTES.txt"]
    files += sorted((ROOT / "examples").rglob("*.yaml"))
    return [
        (f"{path.relative_to(ROOT)}:{n}", line)
        for path in files
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\bkubectl\b.*\bget\b.*-o\s*jsonpath", line)
    ]


def test_kubectl_jsonpath_commands_name_the_namespace() -> None:
    """An EmailToken lives in a namespace: a command without -n reads the default one."""
    found = kubectl_lines()
    assert found
    unnamed = [
        where for where, line in found if not re.search(r"\s(-n|--namespace)[\s=]|\s(-A|--all-namespaces)\b", line)
    ]
    assert unnamed == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path) -> None:
    targets = re.findall(r"\]\(([^)\s]+)\)", doc.read_text())
    broken = [
        t
        for t in targets
        if not re.match(r"[a-z]+:", t) and not t.startswith("#") and not (doc.parent / t.split("#")[0]).exists()
    ]
    assert broken == []


def test_license_is_the_apache_license_the_metadata_names() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License\n                           Version 2.0, January 2004")
    assert "END OF TERMS AND CONDITIONS" in text and "APPENDIX: How to apply the Apache License" in text
    assert len(text) > 11_000  # the full text, not a pointer to it
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"] == "Apache-2.0"
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["annotations"]["artifacthub.io/license"] == "Apache-2.0"


def test_changelog_has_the_keep_a_changelog_shape() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    assert text.startswith("# Changelog\n") and "keepachangelog.com" in text
    releases = re.findall(r"^## \[([^\]]+)\]", text, re.M)
    assert releases and releases[0] == "Unreleased"
    for release in releases:
        assert re.search(rf"^\[{re.escape(release)}\]: \S+", text, re.M), f"no link for [{release}]"
    sections = set(re.findall(r"^### (.+)$", text, re.M))
    assert sections and sections <= KEEP_A_CHANGELOG | {"Upgrade notes"}

"""Chart value callback.manageTokens.enabled: off by default; on, the callback gets --manage-tokens and
exactly rbac.py's tokenWriter rows beside its namespaced ones (and nothing more)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from emailtoken import rbac

CHART_DIR = Path(__file__).resolve().parents[2] / "charts" / "emailtoken-operator"
CALLBACK = "emailtoken-operator-callback"


@pytest.fixture(scope="module")
def chart() -> helm_python.Chart:
    return helm_python.Chart.load(CHART_DIR)


def _objects(chart: helm_python.Chart, values: dict[str, Any]) -> list[dict[str, Any]]:
    rendered = chart.render(values, name="emailtoken-operator", namespace="emailtoken-system")
    return [d for p, t in sorted(rendered.items()) if not p.endswith("NOTES.txt") for d in yaml.safe_load_all(t) if d]


def _callback(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == CALLBACK]


@pytest.mark.parametrize("enabled", [False, True], ids=["default-off", "on"])
@pytest.mark.parametrize("namespaces", [[], ["mail", "billing"]], ids=["all-namespaces", "two-namespaces"])
def test_manage_tokens_switch(chart: helm_python.Chart, enabled: bool, namespaces: list[str]) -> None:
    values: dict[str, Any] = {"watchNamespaces": namespaces}
    if enabled:
        values["callback"] = {"manageTokens": {"enabled": True}}
    objects = _objects(chart, values)
    (deployment,) = _callback(objects, "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert ("--manage-tokens" in args) is enabled
    roles = _callback(objects, "Role" if namespaces else "ClusterRole")
    assert len(roles) == max(1, len(namespaces))
    expected = rbac.rules("callback", manage_tokens=enabled)
    for role in roles:
        assert role["rules"] == expected
    writes = {(r["resources"][0], v) for r in expected for v in r["verbs"]}
    assert (("emailtokens", "patch") in writes) is enabled and (("events", "create") in writes) is enabled

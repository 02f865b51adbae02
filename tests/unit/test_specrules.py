"""emailtoken.specrules: the CRD's CEL rules in Python, and parse_spec judging the shared table alike."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from emailtoken.model import SpecError, parse_spec
from emailtoken.specrules import PROVIDER_IMMUTABLE, RULES, violations
from tests.support.spec_cases import CASES, MESSAGES, Case

CRD = Path(__file__).resolve().parents[2] / "crds" / "emailtokens.emailtoken.io.yaml"


def crd_rules() -> list[dict]:
    """The spec's rules, then those of its object fields (fieldPath relative to spec)."""
    crd = yaml.safe_load(CRD.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    nested = [
        {**rule, "fieldPath": f".{name}{rule['fieldPath']}"}
        for name, field in spec["properties"].items()
        for rule in field.get("x-kubernetes-validations", ())
    ]
    return spec["x-kubernetes-validations"] + nested


def test_rules_mirror_the_crd_one_for_one() -> None:
    """Same messages, same fields, same order as the CRD (the transition rule aside)."""
    crd = [(r["fieldPath"].lstrip("."), r["message"]) for r in crd_rules() if "oldSelf" not in r["rule"]]
    assert crd == [(rule.field, rule.message) for rule in RULES]
    assert [r["message"] for r in crd_rules() if "oldSelf" in r["rule"]] == [PROVIDER_IMMUTABLE]
    assert sorted({*(r.message for r in RULES), PROVIDER_IMMUTABLE}) == sorted(MESSAGES.values())


@pytest.mark.parametrize("case", [c for c in CASES if c.old is None], ids=lambda c: c.id)
def test_parse_spec_judges_the_table_like_the_crd(case: Case) -> None:
    expected = sorted(MESSAGES[key] for key in case.fails)
    assert sorted(rule.message for rule in violations(case.spec)) == expected
    if not expected:
        parse_spec(case.spec, "token")
        return
    with pytest.raises(SpecError) as info:
        parse_spec(case.spec, "token")
    problems = info.value.problems
    assert sorted(p.split(": ", 1)[1] for p in problems) == expected
    assert all(p.startswith("spec.") for p in problems)

"""The EmailToken CRD and the examples, checked offline.

No API server is available here, so this module does what one would do on `kubectl apply`:
it validates the CRD against the apiextensions schema (kubernetes-validate), enforces the
structural-schema rules the API server would reject, validates the examples against the
CRD's openAPIV3Schema (jsonschema) and evaluates every `x-kubernetes-validations` CEL rule
Kubernetes-style with cel-python, for a table of valid and invalid specs.
"""

from __future__ import annotations

import copy
import json
import re
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import kubernetes_validate
import pytest
import yaml

from emailtoken.validate import to_jsonschema
from tests.support.spec_cases import (
    CASES,
    GOOGLE_AUTH_CODE,
    MESSAGES,
    MS_AUTH_CODE,
    Case,
    change,
)

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "emailtokens.emailtoken.io.yaml"
EXAMPLES_DIR = ROOT / "examples"
KUBE_VERSION = "1.32.0"
EXAMPLE_FILES = [
    "microsoft-authorization-code.yaml",
    "microsoft-device-code.yaml",
    "microsoft-client-credentials.yaml",
    "google-authorization-code.yaml",
    "google-service-account.yaml",
]

Json = dict[str, Any]
SchemaPath = tuple[str, ...]  # property names; "[]" for array items, "{}" for additionalProperties


# --------------------------------------------------------------------------- CRD helpers


def load_crd() -> Json:
    """Load the single CRD document (the file is copied byte-for-byte into the chart)."""
    docs = list(yaml.safe_load_all(CRD_PATH.read_text()))
    assert len(docs) == 1
    return docs[0]


def crd_version(crd: Json) -> Json:
    """The only version, v1alpha1."""
    (version,) = crd["spec"]["versions"]
    return version


def crd_schema(crd: Json) -> Json:
    """The openAPIV3Schema of v1alpha1."""
    return crd_version(crd)["schema"]["openAPIV3Schema"]


def iter_schema(node: Json, path: SchemaPath = ()) -> Iterator[tuple[SchemaPath, Json]]:
    """Walk a structural schema depth-first, yielding every node with its path."""
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from iter_schema(child, (*path, name))
    if isinstance(node.get("items"), dict):
        yield from iter_schema(node["items"], (*path, "[]"))
    if isinstance(node.get("additionalProperties"), dict):
        yield from iter_schema(node["additionalProperties"], (*path, "{}"))


def schema_at(root: Json, path: SchemaPath) -> Json:
    """The schema node at a path produced by iter_schema."""
    node = root
    for step in path:
        node = {"[]": node.get("items"), "{}": node.get("additionalProperties")}.get(step) or node["properties"][step]
    return node


FORMATS = jsonschema.FormatChecker(formats=())


@FORMATS.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    """RFC 3339 with a mandatory offset, as the API server checks format date-time."""
    if not isinstance(value, str):
        return True
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", value):
        raise ValueError(f"not RFC 3339: {value!r}")
    datetime.fromisoformat(value)
    return True


def schema_validator(crd: Json) -> jsonschema.Draft4Validator:
    """A validator for whole EmailToken objects."""
    return jsonschema.Draft4Validator(to_jsonschema(crd_schema(crd)), format_checker=FORMATS)


def apply_defaults(schema: Json, value: Any) -> Any:
    """Apply `default`s like the API server does before validation (returns a copy)."""
    value = copy.deepcopy(value)
    if isinstance(value, dict):
        for name, child in schema.get("properties", {}).items():
            if name not in value and "default" in child:
                value[name] = copy.deepcopy(child["default"])
            if name in value:
                value[name] = apply_defaults(child, value[name])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        value = [apply_defaults(schema["items"], item) for item in value]
    return value


# --------------------------------------------------------------------------- CEL evaluation


class CelEvaluationError(AssertionError):
    """A rule could not be evaluated; the API server would reject the object with an error."""


def _lower_ascii(value: celpy.celtypes.StringType) -> celpy.celtypes.StringType:
    """Kubernetes' CEL strings library (``lowerAscii``), which cel-python lacks: ASCII letters only."""
    return celpy.celtypes.StringType(value.translate(str.maketrans(string.ascii_uppercase, string.ascii_lowercase)))


#: the Kubernetes CEL library functions the CRD's rules use beyond standard CEL
K8S_CEL_FUNCTIONS = {"lowerAscii": _lower_ascii}


@dataclass(frozen=True)
class Rule:
    """One x-kubernetes-validations entry and the schema node it is attached to."""

    path: SchemaPath
    rule: str
    message: str
    field_path: str | None = None
    reason: str | None = None

    @property
    def is_transition(self) -> bool:
        """Transition rules (those that mention oldSelf) only run on update."""
        return re.search(r"\boldSelf\b", self.rule) is not None


@dataclass
class Outcome:
    """The result of one rule at one place in one object."""

    rule: Rule
    passed: bool


@dataclass
class CelChecker:
    """Evaluates a CRD's CEL rules against objects, the way the API server does.

    Each rule runs with `self` bound to every value found at its schema path (each item for
    array items); a rule is skipped when that value is absent. Transition rules run only
    when an old object is given and holds a value at the same path (list items are not
    correlated; this CRD has no rules below a list).
    """

    schema: Json
    rules: list[Rule] = field(init=False)
    programs: dict[Rule, celpy.Runner] = field(init=False)

    def __post_init__(self) -> None:
        """Collect and compile every rule once."""
        env = celpy.Environment()
        self.rules = [
            Rule(path, item["rule"], item["message"], item.get("fieldPath"), item.get("reason"))
            for path, node in iter_schema(self.schema)
            for item in node.get("x-kubernetes-validations", [])
        ]
        self.programs = {rule: env.program(env.compile(rule.rule), functions=K8S_CEL_FUNCTIONS) for rule in self.rules}

    def evaluate(self, obj: Json, old: Json | None = None, defaults: bool = True) -> list[Outcome]:
        """Every rule outcome for `obj` (an update from `old` when given)."""
        if defaults:
            obj = apply_defaults(self.schema, obj)
            old = apply_defaults(self.schema, old) if old is not None else None
        outcomes = []
        for rule in self.rules:
            new_values = values_at(obj, rule.path)
            if rule.is_transition:
                if old is None or "[]" in rule.path or "{}" in rule.path:
                    continue
                old_values = values_at(old, rule.path)
                if not new_values or not old_values:
                    continue
                pairs = [(new_values[0], old_values[0])]
            else:
                pairs = [(value, None) for value in new_values]
            for value, old_value in pairs:
                activation: dict[str, Any] = {"self": celpy.json_to_cel(value)}
                if rule.is_transition:
                    activation["oldSelf"] = celpy.json_to_cel(old_value)
                outcomes.append(Outcome(rule, self._run(rule, activation)))
        return outcomes

    def failures(self, obj: Json, old: Json | None = None, defaults: bool = True) -> list[str]:
        """The messages of the rules that reject `obj`, in CRD order."""
        return [o.rule.message for o in self.evaluate(obj, old, defaults) if not o.passed]

    def _run(self, rule: Rule, activation: dict[str, Any]) -> bool:
        """Run one compiled rule; errors fail the test loudly rather than pass silently."""
        try:
            result = self.programs[rule].evaluate(activation)
        except celpy.CELEvalError as exc:
            raise CelEvaluationError(f"{rule.rule!r}: {exc}") from exc
        if isinstance(result, celpy.CELEvalError) or not isinstance(result, celpy.celtypes.BoolType):
            raise CelEvaluationError(f"{rule.rule!r} did not return a bool: {result!r}")
        return bool(result)


def values_at(obj: Any, path: SchemaPath) -> list[Any]:
    """The values found at a schema path (several below arrays and maps; none if absent)."""
    values = [obj]
    for step in path:
        found: list[Any] = []
        for value in values:
            if step == "[]" and isinstance(value, list):
                found.extend(value)
            elif step == "{}" and isinstance(value, dict):
                found.extend(value.values())
            elif isinstance(value, dict) and step in value:
                found.append(value[step])
        values = found
    return values


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def crd() -> Json:
    """The parsed CRD."""
    return load_crd()


@pytest.fixture(scope="module")
def schema(crd: Json) -> Json:
    """The openAPIV3Schema of v1alpha1."""
    return crd_schema(crd)


@pytest.fixture(scope="module")
def checker(schema: Json) -> CelChecker:
    """The CEL rules, compiled."""
    return CelChecker(schema)


def load_examples() -> list[tuple[str, Json]]:
    """Every (file name, document) in the example manifests."""
    return [
        (name, doc)
        for name in EXAMPLE_FILES
        for doc in yaml.safe_load_all((EXAMPLES_DIR / name).read_text())
        if doc is not None
    ]


def emailtoken(spec: Json, name: str = "token") -> Json:
    """A whole EmailToken object around a spec."""
    return {
        "apiVersion": "emailtoken.io/v1alpha1",
        "kind": "EmailToken",
        "metadata": {"name": name, "namespace": "mail"},
        "spec": spec,
    }


# --------------------------------------------------------------------------- the CRD itself


def test_crd_is_a_valid_customresourcedefinition(crd: Json) -> None:
    """The API server's own schema for CRDs accepts it (strict: no unknown fields)."""
    kubernetes_validate.validate(crd, KUBE_VERSION, strict=True)


def test_crd_names_and_version(crd: Json) -> None:
    """Group, kind, names and the status subresource are the public contract."""
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "emailtokens.emailtoken.io"
    assert spec["group"] == "emailtoken.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "EmailToken",
        "listKind": "EmailTokenList",
        "plural": "emailtokens",
        "singular": "emailtoken",
        "shortNames": ["et", "emailtok"],
        "categories": ["emailtoken"],
    }
    version = crd_version(crd)
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


def test_crd_file_is_byte_stable() -> None:
    """The chart copies the file byte-for-byte: keep it free of noise that editors change."""
    raw = CRD_PATH.read_bytes()
    assert raw.endswith(b"\n") and not raw.endswith(b"\n\n")
    assert b"\r" not in raw and b"\t" not in raw
    assert not [n for n, line in enumerate(raw.splitlines(), 1) if line != line.rstrip()]


def test_every_field_is_documented(schema: Json) -> None:
    """`kubectl explain emailtoken.spec.X` must read like documentation for every field."""
    undocumented = [
        ".".join(path) or "<root>"
        for path, node in iter_schema(schema)
        if path != ("metadata",)  # the API server documents ObjectMeta and refuses our own text
        and not str(node.get("description", "")).strip()
    ]
    assert undocumented == []


def test_key_descriptions_mention_defaults_and_examples(schema: Json) -> None:
    """Fields with a default say so in their description, and spec fields give examples."""
    spec = schema["properties"]["spec"]
    for path, node in iter_schema(spec):
        if "default" in node:
            assert f"Default: {node['default']}" in node["description"], path
    for name in ["provider", "emailAddress", "tenantId", "clientId", "secretName", "refreshBefore"]:
        assert "Example" in spec["properties"][name]["description"], name


def test_schema_is_structural(schema: Json) -> None:
    """Rules the API server enforces on CRD schemas, which kubernetes-validate does not check."""
    for path, node in iter_schema(schema):
        where = ".".join(path) or "<root>"
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{where}: no type"
        assert "$ref" not in node, where
        assert not node.get("uniqueItems"), f"{where}: uniqueItems is forbidden in CRDs"
        assert not ("properties" in node and "additionalProperties" in node), where
        if "default" in node:
            jsonschema.Draft4Validator(to_jsonschema(node)).validate(node["default"])
        if node.get("x-kubernetes-list-type") == "map":
            keys = node["x-kubernetes-list-map-keys"]
            assert set(keys) <= set(node["items"].get("required", [])), where
        if node.get("x-kubernetes-list-type") == "set":
            assert node["items"]["type"] in {"string", "integer", "number", "boolean"}, where
        if "pattern" in node:
            # Go's RE2 has no lookaround or backreferences.
            assert not re.search(r"\(\?[=!<]|\\[1-9]", node["pattern"]), where
            re.compile(node["pattern"])
    # A real API server refuses anything but `type: object` here, a description included
    # ("must not specify anything other than name and generateName"); tests/cluster proves it.
    assert schema_at(schema, ("metadata",)) == {"type": "object"}, "metadata may not be described or constrained"


def test_strings_and_lists_are_bounded(schema: Json) -> None:
    """maxLength / maxItems everywhere keep CEL cost estimates within the API server's budget."""
    unbounded = []
    for path, node in iter_schema(schema):
        if len(path) < 2:
            continue  # apiVersion, kind, metadata: owned by the API server
        if node.get("type") == "string" and not (
            "maxLength" in node or "enum" in node or node.get("format") == "date-time"
        ):
            unbounded.append(".".join(path))
        if node.get("type") == "array" and "maxItems" not in node:
            unbounded.append(".".join(path))
    assert unbounded == []


def test_spec_enums_and_defaults(schema: Json) -> None:
    """Provider, flow and services are closed sets; flow defaults to AuthorizationCode."""
    spec = schema["properties"]["spec"]["properties"]
    assert spec["provider"]["enum"] == ["Microsoft", "Google"]
    assert spec["flow"]["enum"] == ["AuthorizationCode", "DeviceCode", "ClientCredentials", "ServiceAccount"]
    assert spec["flow"]["default"] == "AuthorizationCode"
    assert spec["services"]["items"]["enum"] == [
        "IMAP",
        "POP",
        "SMTP",
        "EWS",
        "GraphMailRead",
        "GraphMailReadWrite",
        "GraphMailSend",
        "Gmail",
    ]
    assert spec["services"]["x-kubernetes-list-type"] == "set"
    assert spec["scopes"]["x-kubernetes-list-type"] == "set"
    assert spec["clientSecretRef"]["properties"]["key"]["default"] == "client_secret"
    assert spec["serviceAccountKeyRef"]["properties"]["key"]["default"] == "key.json"


def test_status_fields_and_conditions(schema: Json) -> None:
    """Status carries the DESIGN fields; conditions have the metav1.Condition shape."""
    status = schema["properties"]["status"]["properties"]
    assert set(status) == {
        "observedGeneration", "conditions", "phase", "account", "secretName", "expiresAt",
        "lastRefreshTime", "nextRefreshTime", "redirectUri", "authorizeUrl", "deviceCode",
        "refreshFailures", "handledAnnotations", "reauthorizationRequiredBy",
    }  # fmt: skip
    for name in ["expiresAt", "lastRefreshTime", "nextRefreshTime", "reauthorizationRequiredBy"]:
        assert status[name]["format"] == "date-time"
    assert set(status["deviceCode"]["properties"]) == {"userCode", "verificationUri", "expiresAt"}
    assert status["refreshFailures"]["type"] == "integer"
    conditions = status["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    item = conditions["items"]["properties"]
    assert set(item) == {"type", "status", "reason", "message", "lastTransitionTime", "observedGeneration"}
    assert item["status"]["enum"] == ["True", "False", "Unknown"]


def test_status_example_validates(crd: Json) -> None:
    """A status as the operator writes it is accepted, and a malformed one is not."""
    status = {
        "observedGeneration": 3,
        "phase": "Ready",
        "account": "support@contoso.com",
        "secretName": "support-mailbox",
        "expiresAt": "2026-11-29T01:02:03Z",
        "lastRefreshTime": "2026-11-29T00:02:03Z",
        "nextRefreshTime": "2026-11-29T00:40:00.5+00:00",
        "redirectUri": "https://emailtoken.example.com/callback",
        "authorizeUrl": "https://login.microsoftonline.com/x/oauth2/v2.0/authorize?client_id=y",
        "deviceCode": {
            "userCode": "ABCD-EFGH",
            "verificationUri": "https://microsoft.com/devicelogin",
            "expiresAt": "2026-11-29T00:17:03Z",
        },
        "refreshFailures": 0,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Refreshed",
                "message": "access token valid until 2026-11-29T01:02:03Z",
                "lastTransitionTime": "2026-11-29T00:02:03Z",
                "observedGeneration": 3,
            },
            {"type": "Authorized", "status": "Unknown", "reason": "AwaitingAuthorization", "message": ""},
        ],
    }
    validator = schema_validator(crd)
    obj = emailtoken({"provider": "Google", "services": ["Gmail"], "clientId": "x"}) | {"status": status}
    validator.validate(obj)
    for bad in [
        {"expiresAt": "tomorrow"},
        {"expiresAt": "2026-11-29 01:02:03"},
        {"refreshFailures": -1},
        {"conditions": [{"type": "Ready", "status": "Yes"}]},
        {"conditions": [{"type": "Ready", "status": "True", "reason": "not camel case"}]},
        {"lastError": "unknown fields are rejected"},
    ]:
        assert not validator.is_valid(obj | {"status": status | bad}), bad


def test_printer_columns(crd: Json, schema: Json) -> None:
    """kubectl get shows the old admin screen's columns; Expires is a string column."""
    columns = {c["name"]: c for c in crd_version(crd)["additionalPrinterColumns"]}
    expected = {
        "Provider": (".spec.provider", "string", 0),
        "Email": (".spec.emailAddress", "string", 0),
        "Ready": ('.status.conditions[?(@.type=="Ready")].status', "string", 0),
        "Phase": (".status.phase", "string", 0),
        # A `date` column renders future times as <invalid>.
        "Expires": (".status.expiresAt", "string", 0),
        "Last Refresh": (".status.lastRefreshTime", "date", 0),
        "Age": (".metadata.creationTimestamp", "date", 0),
        "Flow": (".spec.flow", "string", 1),
        "Reason": ('.status.conditions[?(@.type=="Ready")].reason', "string", 1),
        "Secret": (".status.secretName", "string", 1),
    }
    actual = {name: (c["jsonPath"], c["type"], c.get("priority", 0)) for name, c in columns.items()}
    assert actual == expected
    assert all(c.get("description") for c in columns.values())
    for json_path, _, _ in expected.values():
        if json_path.startswith(".metadata."):
            continue
        steps = tuple(s for s in re.sub(r"\[\?\(.*?\)\]", ".[]", json_path).split(".") if s)
        schema_at(schema, steps)  # raises KeyError if the column points nowhere


# --------------------------------------------------------------------------- CEL rules


def test_rule_messages_are_pinned(checker: CelChecker) -> None:
    """Messages are user-facing API: the CRD carries exactly these, each once."""
    messages = [rule.message for rule in checker.rules]
    assert sorted(messages) == sorted(MESSAGES.values())


def test_rule_metadata(checker: CelChecker, schema: Json) -> None:
    """Rules point kubectl's error at the right field, with a standard reason."""
    for rule in checker.rules:
        node = schema_at(schema, rule.path)
        assert rule.field_path and rule.field_path.lstrip(".") in node["properties"], rule
        assert rule.reason in {"FieldValueRequired", "FieldValueForbidden", "FieldValueInvalid"}, rule
        assert "\n" not in rule.message and rule.message.strip() == rule.message, rule
        # cel-python answers has(self.a.b) with false when `a` is absent; the API server
        # raises "no such key". Nested has() would pass here and fail in a cluster.
        assert not re.search(r"has\(self(\.\w+){2,}\)", rule.rule), rule
    transitions = [rule for rule in checker.rules if rule.is_transition]
    assert [(r.rule, r.message) for r in transitions] == [
        ("self.provider == oldSelf.provider", MESSAGES["provider-immutable"])
    ]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_cel_rules(checker: CelChecker, case: Case) -> None:
    """Each spec is rejected by exactly the expected rules, with their messages."""
    old = emailtoken(case.old) if case.old is not None else None
    failures = checker.failures(emailtoken(case.spec), old)
    assert sorted(failures) == sorted(MESSAGES[key] for key in case.fails)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_cel_rules_do_not_depend_on_defaulting(checker: CelChecker, case: Case) -> None:
    """Rules guard `flow` with has(), so they also hold where defaults were not applied."""
    old = emailtoken(case.old) if case.old is not None else None
    obj = emailtoken(case.spec)
    assert checker.failures(obj, old, defaults=False) == checker.failures(obj, old)


def test_cel_cases_pass_the_schema(crd: Json) -> None:
    """The table's specs are schema-valid, so each failure is the CEL rule's doing alone."""
    validator = schema_validator(crd)
    for case in CASES:
        for spec in filter(None, [case.spec, case.old]):
            errors = [e.message for e in validator.iter_errors(emailtoken(spec))]
            assert errors == [], case.id


def test_every_rule_is_exercised_both_ways(checker: CelChecker) -> None:
    """Every rule passes for some case and fails for another: none is dead or always-false."""
    passed: set[str] = set()
    failed: set[str] = set()
    for case in CASES:
        old = emailtoken(case.old) if case.old is not None else None
        for outcome in checker.evaluate(emailtoken(case.spec), old):
            (passed if outcome.passed else failed).add(outcome.rule.rule)
    every = {rule.rule for rule in checker.rules}
    assert every - passed == set(), "never passes"
    assert every - failed == set(), "never fails"


def test_transition_rule_skipped_on_create(checker: CelChecker) -> None:
    """Without an old object (create), oldSelf rules do not run, as in the API server."""
    outcomes = checker.evaluate(emailtoken(GOOGLE_AUTH_CODE))
    assert not [o for o in outcomes if o.rule.is_transition]
    assert all(o.passed for o in outcomes)


def test_cel_helper_follows_has_semantics() -> None:
    """The helper binds `self` to the spec, so has() sees absent optional fields as absent."""
    env = celpy.Environment()
    program = env.program(env.compile("has(self.tenantId)"))
    assert program.evaluate({"self": celpy.json_to_cel(GOOGLE_AUTH_CODE)}) == celpy.celtypes.BoolType(False)
    assert values_at(emailtoken(MS_AUTH_CODE), ("spec", "services", "[]")) == ["IMAP", "SMTP"]
    assert values_at(emailtoken(MS_AUTH_CODE), ("status",)) == []


# --------------------------------------------------------------------------- schema details


@pytest.mark.parametrize(
    ("fields", "valid"),
    [
        ({"refreshBefore": "90s"}, True),
        ({"refreshBefore": "1h30m"}, True),
        ({"refreshBefore": "1.5h"}, True),
        ({"refreshBefore": "2d"}, True),
        ({"refreshBefore": "10"}, False),
        ({"refreshBefore": "10 minutes"}, False),
        ({"secretName": "support-mailbox.token"}, True),
        ({"secretName": "Support_Mailbox"}, False),
        ({"secretName": "-token"}, False),
        ({"tokenUrl": "http://login.microsoftonline.com/t/oauth2/v2.0/token"}, False),
        ({"authorizationUrl": "https://accounts.google.com/o/oauth2/v2/auth"}, True),
        ({"authorizationUrl": "accounts.google.com/o/oauth2/v2/auth"}, False),
        ({"emailAddress": "not-an-address"}, False),
        ({"provider": "Yahoo"}, False),
        ({"flow": "Password"}, False),
        ({"services": ["IMAP", "IMAP"]}, False),
        ({"services": ["IMAP4"]}, False),
        ({"services": []}, False),
        ({"scopes": ["two words"]}, False),
        ({"clientSecretRef": {"key": "client_secret"}}, False),
        ({"clientSecretRef": {"name": "c", "key": "bad/key"}}, False),
        ({"clientSecret": "inline secrets are not a field"}, False),
        ({"tenantId": "contoso.onmicrosoft.com"}, True),
        ({"tenantId": "contoso onmicrosoft"}, False),
    ],
)
def test_schema_field_validation(crd: Json, fields: Json, valid: bool) -> None:
    """Patterns, enums and bounds reject typos before the operator ever sees them."""
    obj = emailtoken(change(MS_AUTH_CODE, **fields))
    assert schema_validator(crd).is_valid(obj) == valid


def test_spec_is_required(crd: Json) -> None:
    """An EmailToken without spec or provider is rejected."""
    validator = schema_validator(crd)
    assert not validator.is_valid({"apiVersion": "emailtoken.io/v1alpha1", "kind": "EmailToken", "metadata": {}})
    assert not validator.is_valid(emailtoken(change(MS_AUTH_CODE, drop=("provider",))))


# --------------------------------------------------------------------------- examples


def test_examples_are_all_there_and_indexed() -> None:
    """One file per provider and flow, each linked from examples/README.md."""
    readme = (EXAMPLES_DIR / "README.md").read_text()
    for name in EXAMPLE_FILES:
        assert (EXAMPLES_DIR / name).is_file(), name
        assert f"]({name})" in readme, name


@pytest.mark.parametrize("name", EXAMPLE_FILES)
def test_example_emailtoken(crd: Json, checker: CelChecker, name: str) -> None:
    """Each example holds one EmailToken that matches its file name, the schema and the rules."""
    tokens = [doc for file, doc in load_examples() if file == name and doc["kind"] == "EmailToken"]
    assert len(tokens) == 1
    (token,) = tokens
    schema_validator(crd).validate(token)
    assert checker.failures(token) == []
    spec = apply_defaults(crd_schema(crd), token)["spec"]
    kebab_flow = re.sub(r"(?<!^)([A-Z])", r"-\1", spec["flow"]).lower()
    assert name == f"{spec['provider'].lower()}-{kebab_flow}.yaml"
    # The metadata passes the API server's ObjectMeta schema (checked through a ConfigMap).
    kubernetes_validate.validate(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": token["metadata"]}, KUBE_VERSION, strict=True
    )
    assert "namespace" not in token["metadata"], "examples are applied with -n"


@pytest.mark.parametrize("name", EXAMPLE_FILES)
def test_example_secrets(crd: Json, name: str) -> None:
    """Referenced Secrets are in the same file, valid, hold the referenced key and fake values only."""
    docs = [doc for file, doc in load_examples() if file == name]
    secrets = {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == "Secret"}
    for secret in secrets.values():
        kubernetes_validate.validate(secret, KUBE_VERSION, strict=True)
        for value in secret.get("stringData", {}).values():
            assert "replace-me" in value
        assert "data" not in secret, "use stringData so placeholders stay readable"
    (token,) = (apply_defaults(crd_schema(crd), d) for d in docs if d["kind"] == "EmailToken")
    refs = [token["spec"][k] for k in ("clientSecretRef", "serviceAccountKeyRef") if k in token["spec"]]
    for ref in refs:
        assert ref["key"] in secrets[ref["name"]]["stringData"], ref
    assert len(refs) == len(secrets), "every Secret in the file is referenced"


def test_examples_contain_only_known_kinds() -> None:
    """Examples are EmailTokens and Secrets; mail-task manifests live elsewhere."""
    kinds = {(doc["apiVersion"], doc["kind"]) for _, doc in load_examples()}
    assert kinds == {("v1", "Secret"), ("emailtoken.io/v1alpha1", "EmailToken")}


def test_examples_are_plain_json() -> None:
    """Examples round-trip through JSON, as kubectl sends them (no YAML-only types or dates)."""
    for name, doc in load_examples():
        assert json.loads(json.dumps(doc)) == doc, name

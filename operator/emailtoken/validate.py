"""``emailtoken validate FILE…|-``: check EmailToken manifests offline, as the API server and the operator would.

GitOps pipelines lint manifests before merge, where no API server is at hand and
``kubectl apply --dry-run=client`` cannot read a CRD. This applies the CRD's schema
(the copy shipped in the package, identical to ``crds/``), its CEL rules
(:mod:`emailtoken.specrules`, proven equal to the CRD's on a real API server) and the
operator's own checks (:func:`emailtoken.model.parse_spec`). One line per problem:
``FILE: EmailToken NAMESPACE/NAME: FIELD: MESSAGE``. Exit 0 when every EmailToken is
valid, 1 when one is not, 2 when an input cannot be read.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, TextIO

import jsonschema
import yaml

from emailtoken import specrules
from emailtoken.api import API_VERSION, GROUP, KIND
from emailtoken.model import SpecError, parse_spec

CRD_RESOURCE = "emailtokens.emailtoken.io.yaml"
OK, INVALID, UNREADABLE = 0, 1, 2

Json = dict[str, Any]


@dataclass(frozen=True)
class Problem:
    """One reason an object would be refused (by the API server) or not work (in the operator)."""

    source: str
    obj: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.obj}: {self.field}: {self.message}"


def to_jsonschema(node: Json) -> Json:
    """Translate a structural OpenAPI v3 schema into a JSON Schema (draft 4).

    x-kubernetes-* keys are dropped except where they change what is valid: list-type set
    becomes uniqueItems, int-or-string an anyOf. Objects with properties reject unknown
    fields, like ``kubectl apply --validate=strict`` (the API server would drop them silently,
    so a typo such as ``tokenURL`` would be lost).
    """
    out: Json = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key == "nullable":
            continue
        if key == "properties":
            out[key] = {name: to_jsonschema(child) for name, child in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = to_jsonschema(value)
        else:
            out[key] = copy.deepcopy(value)
    if node.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@cache
def crd() -> Json:
    """The CRD as shipped in the package (deploy/generate.py copies it from crds/)."""
    return yaml.safe_load(resources.files("emailtoken").joinpath("crds", CRD_RESOURCE).read_text(encoding="utf-8"))


@cache
def _validator() -> jsonschema.Draft4Validator:
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return jsonschema.Draft4Validator(to_jsonschema(schema))


def _path(error: jsonschema.ValidationError) -> str:
    parts = [f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path]
    return "".join(parts).lstrip(".") or "<object>"


def check_object(obj: Json, source: str = "-") -> list[Problem]:
    """Every problem of one EmailToken object (empty when valid)."""
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    name = f"{KIND} {meta.get('namespace') or '-'}/{meta.get('name') or '?'}"
    problems = [Problem(source, name, _path(e), e.message) for e in _validator().iter_errors(obj)]
    if not meta.get("name"):
        problems.append(Problem(source, name, "metadata.name", "required"))
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return problems
    broken = specrules.violations(spec)
    problems += [Problem(source, name, f"spec.{rule.field}", rule.message) for rule in broken]
    if not problems:  # the operator's own checks assume a spec the API server would accept
        try:
            parse_spec(spec, str(meta.get("name")))
        except SpecError as exc:
            problems += [Problem(source, name, "spec", text) for text in exc.problems]
    return problems


def _documents(stream: TextIO) -> Iterator[Any]:
    yield from yaml.safe_load_all(stream)


def _items(doc: Any) -> Iterable[Json]:
    """A document, or the items of a List (as ``kubectl get -o yaml`` prints)."""
    if isinstance(doc, dict) and doc.get("kind") == "List":
        return [item for item in doc.get("items") or () if isinstance(item, dict)]
    return [doc] if isinstance(doc, dict) else []


def check_stream(stream: TextIO, source: str) -> tuple[int, list[Problem]]:
    """(EmailTokens seen, problems) of a multi-document YAML stream; other kinds are skipped."""
    seen = 0
    problems: list[Problem] = []
    for doc in _documents(stream):
        for obj in _items(doc):
            if obj.get("kind") != KIND or not str(obj.get("apiVersion", "")).startswith(f"{GROUP}/"):
                continue
            seen += 1
            if obj.get("apiVersion") != API_VERSION:
                problems.append(
                    Problem(source, KIND, "apiVersion", f"unknown version; this release serves {API_VERSION}")
                )
                continue
            problems += check_object(obj, source)
    return seen, problems


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``validate`` subcommand."""
    p = sub.add_parser(
        "validate",
        help="check EmailToken manifests offline (schema, CEL rules, operator checks); for CI",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="YAML files ('-' reads standard input)")
    p.add_argument("-q", "--quiet", action="store_true", help="print problems only, no summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check every file; print one line per problem and a summary on stderr."""
    worst = OK
    total = 0
    failed = 0
    for name in args.files:
        try:
            if name == "-":
                seen, problems = check_stream(sys.stdin, "<stdin>")
            else:
                with open(name, encoding="utf-8") as handle:
                    seen, problems = check_stream(handle, name)
        except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
            print(f"{name}: cannot read: {_short(exc)}", file=sys.stderr)
            worst = UNREADABLE
            continue
        total += seen
        for problem in problems:
            print(problem)
        if problems:
            failed += len({p.obj for p in problems})
            worst = max(worst, INVALID)
    if not args.quiet:
        print(f"{total} EmailToken(s) checked, {failed} invalid", file=sys.stderr)
    return worst


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]

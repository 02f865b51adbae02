"""What ``kubectl`` needs from an API server beyond plain objects, for the embedded API.

kmock serves objects; kubectl also asks for field selectors (``kubectl describe`` lists the
object's Events, ``kubectl wait`` watches one name) and for server-side tables
(``Accept: application/json;as=Table;g=meta.k8s.io;v=v1``), which a real API server renders
from a CRD's ``additionalPrinterColumns``. These pure functions do both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

_FILTER = re.compile(r'\[\?\(@\.([\w.]+)=="([^"]*)"\)\]')


def field_selector(params: Mapping[str, str]) -> list[tuple[str, bool, str]]:
    """``fieldSelector=a.b=x,c!=y`` as (path, equal, value) triples (``=`` and ``==`` are the same)."""
    terms = []
    for term in filter(None, (params.get("fieldSelector") or "").split(",")):
        path, op, value = re.split(r"(!=|==|=)", term, maxsplit=1)
        terms.append((path.strip(), op != "!=", value.strip()))
    return terms


def selected(obj: Mapping[str, Any], terms: Sequence[tuple[str, bool, str]]) -> bool:
    """Whether an object passes every field-selector term, as the API server judges it."""
    for path, equal, value in terms:
        found = _dig(obj, path.split("."))
        if (str(found if found is not None else "") == value) != equal:
            return False
    return True


def wants_table(headers: Mapping[str, str]) -> bool:
    """kubectl get asks for a meta.k8s.io/v1 Table first and takes a plain list otherwise."""
    accept = headers.get("Accept") or headers.get("accept") or ""
    return any("as=Table" in part and "v=v1" in part and "v=v1beta1" not in part for part in accept.split(","))


def table(items: Sequence[Mapping[str, Any]], columns: Sequence[Mapping[str, Any]], version: str) -> dict[str, Any]:
    """A meta.k8s.io/v1 Table: Name, then the printer columns (``priority`` > 0 only with ``-o wide``)."""
    definitions = [{"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}]
    definitions += [
        {
            "name": c["name"],
            "type": c.get("type", "string"),
            "format": "",
            "description": c.get("description", ""),
            "priority": c.get("priority", 0),
        }
        for c in columns
    ]
    rows = [
        {"cells": [item["metadata"]["name"], *(_cell(item, c) for c in columns)], "object": dict(item)}
        for item in items
    ]
    return {
        "apiVersion": "meta.k8s.io/v1",
        "kind": "Table",
        "metadata": {"resourceVersion": version},
        "columnDefinitions": definitions,
        "rows": rows,
    }


def jsonpath(obj: Any, path: str) -> Any:
    """The subset of JSONPath that printer columns use: ``.a.b`` and ``[?(@.k=="v")]`` filters."""
    current: list[Any] = [obj]
    for part in re.findall(r'\[\?\(@\.[\w.]+=="[^"]*"\)\]|[^.\[]+', path):
        match = _FILTER.fullmatch(part)
        if match:
            key, value = match.groups()
            current = [e for v in current if isinstance(v, list) for e in v if str(_dig(e, key.split("."))) == value]
        else:
            current = [v[part] for v in current if isinstance(v, dict) and part in v]
    return current[0] if current else None


def _cell(item: Mapping[str, Any], column: Mapping[str, Any]) -> Any:
    value = jsonpath(item, column["jsonPath"])
    if value is None:
        return None
    if column.get("type") == "date":
        return _age(str(value))
    return value


def _age(timestamp: str) -> str:
    """A date column as kubectl shows it: the time since then (``45s``, ``3m12s``, ``5h``, ``2d``)."""
    try:
        then = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return timestamp
    seconds = int((datetime.now(UTC) - then).total_seconds())
    if seconds < 0:
        return "<invalid>"
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 600:
        return f"{seconds // 60}m{seconds % 60}s"
    if seconds < 3 * 3600:
        return f"{seconds // 60}m"
    if seconds < 2 * 86400:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _dig(obj: Any, keys: Sequence[str]) -> Any:
    for key in keys:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj

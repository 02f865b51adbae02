"""emailtoken.handlers and emailtoken.wiring: what the thin kopf layer keeps per token between steps."""

from __future__ import annotations

import json

import kopf

import emailtoken.handlers  # noqa: F401  (registers the handlers)
from emailtoken import GROUP, PLURAL, VERSION
from emailtoken.wiring import pack as _pack
from emailtoken.wiring import watched as _watched


def body(**metadata: object) -> dict:
    return {
        "apiVersion": "emailtoken.io/v1alpha1",
        "kind": "EmailToken",
        "metadata": {"name": "inbox", "namespace": "mail", **metadata},
        "spec": {"provider": "Microsoft", "clientId": "app"},
        "status": {"phase": "Ready"},
    }


def test_packed_body_keeps_what_steps_read_and_drops_managed_fields() -> None:
    original = body(managedFields=[{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}], annotations={"a": "b"})
    packed = json.loads(_pack(original))
    assert "managedFields" not in packed["metadata"]
    assert packed["metadata"]["annotations"] == {"a": "b"}
    assert packed["spec"] == original["spec"] and packed["status"] == original["status"]
    assert "managedFields" in original["metadata"]  # the caller's body is not changed


def test_watched_changes_with_spec_and_control_annotations_only() -> None:
    base = _watched(body())
    assert _watched(body(labels={"x": "y"})) == base
    assert _watched(body(annotations={"emailtoken.io/refresh-now": "1"})) != base
    changed = body()
    changed["spec"]["clientId"] = "other"
    assert _watched(changed) != base


def test_no_handler_needs_a_diff_base() -> None:
    """handlers.NoDiffBase is only safe while no handler reads kopf's diff base (change and spawning handlers)."""
    registry = kopf.get_default_registry()
    token = kopf.Resource(GROUP, VERSION, PLURAL)
    assert registry._watching.has_handlers(resource=token)
    assert not registry._changing.has_handlers(resource=token)
    assert not registry._spawning.has_handlers(resource=token)

"""emailtoken.handlers and emailtoken.wiring: what kopf still runs; what the wiring keeps per token."""

from __future__ import annotations

import json
import typing
from datetime import timedelta

import kopf

import emailtoken.handlers  # noqa: F401  (registers the handlers)
from emailtoken.engine import EngineConfig
from emailtoken.settings import OperatorConfig
from emailtoken.wiring import ENGINE_SETTINGS, Launch, controls, engine_config
from emailtoken.wiring import pack as _pack


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


def test_controls_change_with_the_control_annotations_only() -> None:
    base = controls(body())
    assert controls(body(labels={"x": "y"}, annotations={"other": "1"})) == base
    assert controls(body(annotations={"emailtoken.io/refresh-now": "1"})) != base
    assert controls(body(annotations={"emailtoken.io/reauthorize": "1"})) != base


def test_kopf_watches_no_resource() -> None:
    """EmailTokens and Secrets come from emailtoken.informer (issue #20): a kopf resource handler
    would bring back kopf's per-object workers for every event, and kopf's own Event poster with them."""
    registry = kopf.get_default_registry()
    for kind in (registry._watching, registry._changing, registry._spawning, registry._indexing, registry._webhooks):
        assert not kind.get_all_handlers()
    assert {h.id for h in registry._activities.get_all_handlers()} >= {"start", "stop", "tokens"}


def test_every_engine_setting_comes_from_an_operator_setting_of_its_type() -> None:
    """A new EngineConfig field is either mapped from a flag's setting or fails here (none is left
    at the engine's default by oversight); may_act comes from leader election."""
    engine = typing.get_type_hints(EngineConfig)
    settings = typing.get_type_hints(OperatorConfig)
    for name, attribute in vars(OperatorConfig).items():
        if isinstance(attribute, property):
            settings[name] = typing.get_type_hints(attribute.fget)["return"]
    assert set(engine) == set(ENGINE_SETTINGS) | {"may_act"}
    assert {field: settings.get(setting) for field, setting in ENGINE_SETTINGS.items()} == {
        field: engine[field] for field in ENGINE_SETTINGS
    }


def test_the_engine_gets_the_operators_settings_and_its_leadership() -> None:
    config = OperatorConfig(
        concurrency=7, provider_timeout=11.0, admin_url="https://admin", keepalive=timedelta(days=1)
    )
    leadership = object()
    built = engine_config(Launch(config=config, may_act=leadership))  # type: ignore[arg-type]
    assert (built.provider_threads, built.persist_grace, built.admin_url) == (7, config.stop_grace, "https://admin")
    assert built.keepalive == timedelta(days=1) and built.may_act is leadership

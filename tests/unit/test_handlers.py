"""emailtoken.handlers and emailtoken.wiring: what kopf still runs; what the wiring keeps per token."""

from __future__ import annotations

import json
import typing
from datetime import timedelta

import kopf

import emailtoken.handlers  # noqa: F401  (registers the handlers)
from emailtoken.engine import EngineConfig
from emailtoken.settings import OperatorConfig
from emailtoken.wiring import ENGINE_SETTINGS, Launch, Wiring, controls, engine_config
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


class Steps:
    """The scheduler's side of the wiring: what each event asked of it."""

    def __init__(self) -> None:
        self.upserts: list[tuple[tuple[str, str], bool]] = []
        self.removed: list[tuple[str, str]] = []

    def upsert(self, key: tuple[str, str], packed: bytes, *, wake: bool) -> None:
        if json.loads(packed)["metadata"]["name"] == "boom":
            raise RuntimeError("a bug")
        self.upserts.append((key, wake))

    def remove(self, key: tuple[str, str]) -> None:
        self.removed.append(key)


class Stepped:
    """The engine's side: which spec each token was last stepped with; what it was told to forget."""

    def __init__(self) -> None:
        self.specs: dict[tuple[str, str], dict] = {}
        self.forgotten: list[tuple[str, str]] = []

    def stepped_with(self, key: tuple[str, str], raw: dict) -> bool:
        return self.specs.get(key) == raw

    def forget(self, key: tuple[str, str]) -> None:
        self.forgotten.append(key)
        self.specs.pop(key, None)


def test_token_events_wake_for_new_specs_controls_and_tokens_but_not_for_echoes() -> None:
    steps, engine = Steps(), Stepped()
    wiring = Wiring(Launch(), engine, steps, informer=None, events=None)  # type: ignore[arg-type]
    key = ("mail", "inbox")
    first = body(uid="u1")
    wiring.token_events([("ADDED", first)])
    engine.specs[key] = first["spec"]  # the step ran with it
    echo = body(uid="u1")
    echo["status"] = {"phase": "Ready", "expiresAt": "later"}
    edited = body(uid="u1")
    edited["spec"]["clientId"] = "other"
    wiring.token_events([("MODIFIED", echo), ("MODIFIED", body(uid="u1", labels={"team": "a"}))])
    wiring.token_events([("MODIFIED", edited)])
    engine.specs[key] = edited["spec"]
    wiring.token_events([("MODIFIED", body(uid="u1", annotations={"emailtoken.io/refresh-now": "1"}))])
    assert [wake for _, wake in steps.upserts] == [True, False, False, True, True]
    assert engine.forgotten == []

    # the same name, another token (deleted and created again while no DELETED arrived)
    recreated = body(uid="u2", annotations={"emailtoken.io/refresh-now": "1"})
    recreated["spec"] = edited["spec"]
    wiring.token_events([("MODIFIED", recreated)])
    assert engine.forgotten == [key] and steps.upserts[-1] == (key, True)

    wiring.token_events([("MODIFIED", body(uid="u2", deletionTimestamp="2026-12-05T00:00:00Z"))])
    wiring.token_events([("DELETED", body(uid="u2"))])
    assert steps.removed == [key, key] and key not in wiring.seen


def test_one_failing_event_does_not_cost_the_rest_of_its_batch() -> None:
    steps, engine = Steps(), Stepped()
    wiring = Wiring(Launch(), engine, steps, informer=None, events=None)  # type: ignore[arg-type]
    boom = body()
    boom["metadata"]["name"] = "boom"
    wiring.token_events([("ADDED", boom), ("ADDED", body())])
    assert steps.upserts == [(("mail", "inbox"), True)]

"""The GitOps health checks for EmailToken, run for real against sample objects.

docs/argocd-health.lua runs in a Lua 5.1 runtime (lupa; Argo CD embeds gopher-lua, a
Lua 5.1) inside a sandbox holding only the base functions Argo CD offers. The Flux
`healthCheckExprs` of docs/flux-kustomization.yaml run with cel-python in Flux's order
(generic observedGeneration check, then inProgress, failed, current; none true = in
progress). Both must give the verdict of the table in docs/gitops.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lupa.lua51 as lupa
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
LUA_SCRIPT = ROOT / "docs" / "argocd-health.lua"
FLUX_EXAMPLE = ROOT / "docs" / "flux-kustomization.yaml"

Obj = dict[str, Any]


def token(*conditions: Obj, generation: int = 3, observed: int | None = 3, status: bool = True) -> Obj:
    obj: Obj = {
        "apiVersion": "emailtoken.io/v1alpha1",
        "kind": "EmailToken",
        "metadata": {"name": "sales-inbox", "namespace": "mail", "generation": generation},
        "spec": {"provider": "Microsoft", "tenantId": "t", "clientId": "c"},
    }
    if status:
        obj["status"] = {"conditions": list(conditions)}
        if observed is not None:
            obj["status"]["observedGeneration"] = observed
    return obj


def cond(type_: str, status: str, reason: str = "", message: str = "", generation: int | None = 3) -> Obj:
    c: Obj = {"type": type_, "status": status, "lastTransitionTime": "2026-11-28T10:00:00Z"}
    if reason:
        c["reason"] = reason
    if message:
        c["message"] = message
    if generation is not None:
        c["observedGeneration"] = generation
    return c


AUTHORIZED = cond("Authorized", "True", "Authorized", "Signed in as sales@example.com")
# name -> (object, Argo CD status, Flux status, words the Argo CD message must contain)
CASES: dict[str, tuple[Obj, str, str, str]] = {
    "no status": (token(status=False), "Progressing", "InProgress", "report status"),
    "no conditions": (token(), "Progressing", "InProgress", "Ready condition"),
    "ready": (
        token(cond("Ready", "True", "TokenRefreshed", "Access token valid until 2026-11-28T11:00:00Z"), AUTHORIZED),
        "Healthy",
        "Current",
        "valid until",
    ),
    "ready without message": (token(cond("Ready", "True"), AUTHORIZED), "Healthy", "Current", "fresh"),
    "ready, grant revoked": (
        token(
            cond("Ready", "True", "TokenRefreshed", "Access token valid until 11:00"),
            cond("Authorized", "False", "ReauthorizationRequired", "AADSTS70008: the refresh token has expired"),
        ),
        "Healthy",
        "Current",
        "AADSTS70008",
    ),
    "awaiting authorization": (
        token(
            cond("Ready", "False", "AwaitingAuthorization", "Sign in at the admin page"),
            cond("Authorized", "False", "AwaitingAuthorization", "No grant yet"),
        ),
        "Progressing",
        "InProgress",
        "Sign in",
    ),
    "awaiting authorization (Authorized says so)": (
        token(
            cond("Ready", "False", "NoAccessToken", "No access token yet"),
            cond("Authorized", "False", "AwaitingAuthorization", "No grant yet"),
        ),
        "Progressing",
        "InProgress",
        "No access token",
    ),
    "reauthorization required": (
        token(
            cond("Ready", "False", "ReauthorizationRequired", "AADSTS700082: the refresh token has expired"),
            cond("Authorized", "False", "ReauthorizationRequired", "AADSTS700082"),
        ),
        "Degraded",
        "Failed",
        "AADSTS700082",
    ),
    "invalid client": (
        token(cond("Ready", "False", "InvalidClient", "AADSTS7000215: invalid client secret")),
        "Degraded",
        "Failed",
        "AADSTS7000215",
    ),
    "secret not found (no message)": (
        token(cond("Ready", "False", "SecretNotFound")),
        "Degraded",
        "Failed",
        "SecretNotFound",
    ),
    "ready unknown": (
        token(cond("Ready", "Unknown", "Refreshing", "Refreshing")),
        "Progressing",
        "InProgress",
        "Refreshing",
    ),
    "status behind the spec": (
        token(cond("Ready", "True", "TokenRefreshed", "ok", generation=2), generation=3, observed=2),
        "Progressing",
        "InProgress",
        "generation 3",
    ),
    "condition behind the spec": (
        token(cond("Ready", "False", "InvalidClient", "bad", generation=2), generation=3, observed=3),
        "Progressing",
        "InProgress",
        "generation 3",
    ),
}

# What Argo CD's Lua sandbox offers (no os, io, require, load).
SANDBOX_GLOBALS = (
    "ipairs",
    "pairs",
    "next",
    "type",
    "tostring",
    "tonumber",
    "error",
    "pcall",
    "select",
    "string",
    "table",
    "math",
)


@pytest.fixture(scope="module")
def argo_health() -> Any:
    runtime = lupa.LuaRuntime(unpack_returned_tuples=True)
    script = LUA_SCRIPT.read_text(encoding="utf-8")
    runner = runtime.execute(
        """
        local names = ...
        return function(script, obj)
          local env = {obj = obj}
          for _, name in ipairs(names) do env[name] = _G[name] end
          local chunk = assert(loadstring(script, "argocd-health.lua"))
          setfenv(chunk, env)
          return chunk()
        end
        """,
        runtime.table_from(list(SANDBOX_GLOBALS)),
    )

    def check(obj: Obj) -> dict[str, str]:
        result = runner(script, runtime.table_from(obj, recursive=True))
        return {key: result[key] for key in ("status", "message")}

    return check


@pytest.fixture(scope="module")
def flux_health() -> Any:
    import celpy

    spec = yaml.safe_load(FLUX_EXAMPLE.read_text(encoding="utf-8"))["spec"]
    (check_exprs,) = [c for c in spec["healthCheckExprs"] if c["kind"] == "EmailToken"]
    assert check_exprs["apiVersion"] == "emailtoken.io/v1alpha1"
    env = celpy.Environment()
    programs = [
        (status, env.program(env.compile(check_exprs[key])))
        for key, status in (("inProgress", "InProgress"), ("failed", "Failed"), ("current", "Current"))
    ]

    def check(obj: Obj) -> str:
        generation = obj["metadata"].get("generation")
        observed = (obj.get("status") or {}).get("observedGeneration")
        if observed is not None and observed != generation:
            return "InProgress"  # Flux's generic check, before any expression
        activation = {key: celpy.json_to_cel(value) for key, value in obj.items()}
        for status, program in programs:
            result = program.evaluate(activation)
            assert not isinstance(result, Exception), result
            if result:
                return status
        return "InProgress"

    return check


@pytest.mark.parametrize("name", list(CASES))
def test_argocd_health(argo_health: Any, name: str) -> None:
    obj, argo_status, _, words = CASES[name]
    result = argo_health(obj)
    assert result["status"] == argo_status
    assert words in result["message"]


@pytest.mark.parametrize("name", [n for n in CASES if n != "no status"])
def test_flux_health(flux_health: Any, name: str) -> None:
    obj, _, flux_status, _ = CASES[name]
    assert flux_health(obj) == flux_status


def test_the_lua_script_only_uses_the_sandbox() -> None:
    script = LUA_SCRIPT.read_text(encoding="utf-8")
    for forbidden in ("os.", "io.", "require", "dofile", "loadstring", "debug."):
        assert forbidden not in script
    assert script.rstrip().endswith("return hs")

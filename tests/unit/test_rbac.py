"""The permission table in emailtoken.rbac, and the kopf handlers that must respect it.

The chart renders its Roles from the table (tests/unit/test_chart.py checks that); this
module checks the table itself and that every resource a kopf handler of the operator
watches is covered by it: the handler modules are imported in a separate interpreter with
a fresh kopf registry, and each handler's resource selector is matched against the
resources the table names.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = ROOT / "operator" / "emailtoken"

try:
    from emailtoken import rbac
except ImportError:  # the package is not installed: use the source root
    sys.path.insert(0, str(ROOT / "operator"))
    from emailtoken import rbac

KNOWN_VERBS = {"get", "list", "watch", "create", "patch", "update", "delete", "deletecollection"}


def test_every_row_is_explained_and_well_formed() -> None:
    for component, permissions in rbac.PERMISSIONS.items():
        seen: set[tuple[str, str, rbac.Scope]] = set()  # one row per resource and scope (scopes are granted apart)
        for p in permissions:
            assert p.why.strip(), p
            assert p.verbs and set(p.verbs) <= KNOWN_VERBS, p
            assert len(set(p.verbs)) == len(p.verbs), p
            assert "*" not in (p.api_group, p.resource), p
            assert (p.api_group, p.resource, p.scope) not in seen, f"{component}: duplicate row {p}"
            seen.add((p.api_group, p.resource, p.scope))


def test_least_privilege_decisions() -> None:
    allowed = rbac.is_allowed
    for component in rbac.Component:
        # Nobody PUTs anything, touches Leases (without leader election), or writes an EmailToken's spec/metadata.
        for resource, group in (
            ("secrets", ""),
            ("emailtokens", "emailtoken.io"),
            ("emailtokens/status", "emailtoken.io"),
        ):
            assert not allowed(component, "update", resource, group)
            assert not allowed(component, "deletecollection", resource, group)
        assert not allowed(component, "patch", "emailtokens", "emailtoken.io")
        assert not allowed(component, "update", "emailtokens/finalizers", "emailtoken.io")
        assert not allowed(component, "create", "leases", "coordination.k8s.io")
        assert not allowed(component, "list", "customresourcedefinitions", "apiextensions.k8s.io")
        assert not allowed(component, "list", "namespaces")
    # The callback reads tokens and writes grants, nothing else: no Secret listing either.
    callback = rbac.permissions(rbac.Component.CALLBACK)
    assert {(p.api_group, p.resource): set(p.verbs) for p in callback} == {
        ("emailtoken.io", "emailtokens"): {"get", "list"},  # lists per page view, reads one; never watches
        ("", "secrets"): {"get", "create", "patch"},
    }
    # The operator: status through /status only, core v1 Events, Secrets as the code uses them.
    operator = rbac.permissions(rbac.Component.OPERATOR)
    assert {(p.api_group, p.resource): set(p.verbs) for p in operator} == {
        ("emailtoken.io", "emailtokens"): {"list", "watch"},  # the informer's; never a GET by name
        ("emailtoken.io", "emailtokens/status"): {"patch"},
        ("", "secrets"): {"get", "list", "watch", "create", "patch", "delete"},
        ("", "events"): {"create"},
    }
    # TokenRequests (federatedCredential.serviceAccountName) only when the installer turns them on:
    # RBAC cannot narrow them to the EmailTokens' ServiceAccounts or audiences.
    for component in rbac.Component:
        assert not allowed(component, "create", "serviceaccounts/token")
        extra = rbac.permissions(component, federation=True)
        plain = rbac.permissions(component)
        assert [p.rule() for p in extra if p not in plain] == [
            {"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]}
        ]
    assert not allowed("operator", "create", "events", "events.k8s.io")


def test_leases_only_for_leader_election_in_the_release_namespace() -> None:
    allowed = rbac.is_allowed
    group = "coordination.k8s.io"
    for verb in ("get", "create", "patch"):
        assert allowed("operator", verb, "leases", group, leader_election=True)
        assert not allowed("operator", verb, "leases", group)
        assert not allowed("callback", verb, "leases", group, leader_election=True)
    # A departing leader releases by patching; nobody lists, watches or deletes Leases.
    for verb in ("list", "watch", "delete", "update", "deletecollection"):
        assert not allowed("operator", verb, "leases", group, leader_election=True)
    # The watched-namespace Roles / the ClusterRole never carry the Lease rule.
    assert all(r["resources"] != ["leases"] for r in rbac.rules("operator"))
    (lease,) = [p for p in rbac.PERMISSIONS[rbac.Component.OPERATOR] if p.resource == "leases"]
    assert lease.scope is rbac.Scope.RELEASE_NAMESPACE and lease.api_group == group
    assert rbac.release_namespace_rules("operator", leader_election=True) == [
        {"apiGroups": [group], "resources": ["leases"], "verbs": ["get", "create", "patch"]}
    ]
    assert rbac.release_namespace_rules("operator", leader_election=False) == []
    assert rbac.release_namespace_rules("callback", leader_election=True) == []
    assert rbac.chart_table()["callback"]["releaseNamespace"] == []


def test_no_kopf_rows() -> None:
    """kopf watches no resource (no peering either): nothing of kopf.dev is granted."""
    for component in rbac.Component:
        assert all(p.api_group != "kopf.dev" for p in rbac.PERMISSIONS[component])


def test_chart_table_shape() -> None:
    table = rbac.chart_table()
    assert set(table) == {"operator", "callback"}
    for component, scopes in table.items():
        assert set(scopes) == {s.value for s in rbac.Scope}
        flattened = [rule for rules in scopes.values() for rule in rules]
        assert flattened == [p.rule() for p in rbac.PERMISSIONS[rbac.Component(component)]]
    text = rbac.render_chart_file()
    assert text.startswith("# GENERATED")


def test_informer_calls_are_in_the_table() -> None:
    """The informer lists and watches Secrets and EmailTokens, cluster-wide or per served namespace."""
    source = (PACKAGE_DIR / "informer.py").read_text(encoding="utf-8")
    calls = set(re.findall(r"self\._core\.(\w+)", source))
    assert calls == {"list_secret_for_all_namespaces", "list_namespaced_secret"}, calls
    custom = set(re.findall(r"self\._custom\.(\w+)", source))
    assert custom == {"list_cluster_custom_object", "list_namespaced_custom_object"}, custom
    for verb in ("list", "watch"):
        assert rbac.is_allowed("operator", verb, "secrets", "")
        assert rbac.is_allowed("operator", verb, "emailtokens", "emailtoken.io")


# kubernetes-client method prefix -> RBAC verb
_VERBS = {
    "read": "get",
    "get": "get",
    "list": "list",
    "create": "create",
    "patch": "patch",
    "replace": "update",
    "delete": "delete",
}
# kubernetes-client method suffix -> (API group, resource); custom objects here are EmailTokens
_RESOURCES = {
    "namespaced_secret": ("", "secrets"),
    "namespaced_custom_object": ("emailtoken.io", "emailtokens"),
    "namespaced_custom_object_status": ("emailtoken.io", "emailtokens/status"),
    "namespaced_event": ("", "events"),
    "cluster_custom_object": ("emailtoken.io", "emailtokens"),  # probe_tokens with --all-namespaces
    "namespaced_lease": ("coordination.k8s.io", "leases"),
    "namespaced_service_account_token": ("", "serviceaccounts/token"),
}


# kube.py's own requests (KubernetesApi._send): HTTP method -> RBAC verb, path helper -> (API group, resource)
_HTTP_VERBS = {"GET": "get", "POST": "create", "PATCH": "patch", "DELETE": "delete"}
_PATHS = {
    "secret": ("", "secrets"),
    "status": ("emailtoken.io", "emailtokens/status"),
    "event": ("", "events"),
}
#: ``self._call("PATCH", _secret_path(`` and ``self._send(...)``
_OWN_REQUEST = r'self\._(?:call|send)\(\s*"(\w+)",\s*_(\w+)_path\('


def _api_calls(text: str) -> set[tuple[str, str, str, str]]:
    """(call, RBAC verb, API group, resource) of every API call in ``text``: generated client methods
    (``self.core.patch_namespaced_secret``) and kube.py's own requests."""
    calls = set()
    for call in re.findall(r"self\.(?:core|custom|coordination)\.(\w+)", text):
        verb_word, _, rest = call.partition("_")
        assert verb_word in _VERBS, f"unknown client method {call}"
        assert rest in _RESOURCES, f"{call}: add its resource to this test's map"
        calls.add((call, _VERBS[verb_word], *_RESOURCES[rest]))
    for method, helper in re.findall(_OWN_REQUEST, text):
        assert method in _HTTP_VERBS and helper in _PATHS, f"{method} _{helper}_path: add it to this test's maps"
        calls.add((f"{method} _{helper}_path", _HTTP_VERBS[method], *_PATHS[helper]))
    return calls


def test_operator_api_client_calls_are_in_the_table() -> None:
    """Every API call of the operator's API adapter (kube.py) is permitted."""
    calls = _api_calls((PACKAGE_DIR / "kube.py").read_text(encoding="utf-8"))
    assert calls, "kube.py no longer calls the API in a way this test can see"
    assert any(c[3] == "leases" for c in calls), "leader election's Lease calls moved out of kube.py?"
    assert {c[1:] for c in calls} >= {("patch", "", "secrets"), ("patch", "emailtoken.io", "emailtokens/status")}
    for call, verb, group, resource in sorted(calls):
        granted = {"leader_election": True, "federation": True}
        assert rbac.is_allowed("operator", verb, resource, group, **granted), (
            f"kube.py calls {call} ({verb} {resource}) but emailtoken/rbac.py does not grant it"
        )


def _client_calls_of(method: str, *sources: Path) -> set[tuple[str, str, str, str]]:
    """API calls (see :func:`_api_calls`) in the body of ``async def method`` in any of the sources."""
    calls: set[tuple[str, str, str, str]] = set()
    for source in sources:
        text = source.read_text(encoding="utf-8")
        # Every definition of that name (a Protocol's stub makes no call; the adapter's does).
        for match in re.finditer(rf"\n    async def {method}\(.*?(?=\n    (?:async )?def |\nclass |\Z)", text, re.S):
            calls |= _api_calls(match.group(0))
    return calls


def test_callback_api_client_calls_are_in_the_table() -> None:
    """Every API method the callback service calls maps to client calls its table rows permit."""
    callback_dir = PACKAGE_DIR / "callback"
    used = {
        m
        for path in sorted(callback_dir.glob("*.py"))
        if path.name not in ("kubeapi.py", "tokenwrite.py")
        for m in re.findall(r"\bapi\.(\w+)\(", path.read_text(encoding="utf-8"))
    }
    assert {"get_token", "list_tokens", "get_secret"} <= used, used
    # The admin page's writes (Create now, edit, delete) are granted only with callback.manageTokens.
    writes = set(re.findall(r"\bapi\.(\w+)\(", (callback_dir / "tokenwrite.py").read_text(encoding="utf-8")))
    writes -= used
    assert {"apply_token", "apply_secret", "delete_token", "create_event"} <= writes, writes
    used |= writes
    for method in sorted(used):
        calls = _client_calls_of(method, callback_dir / "kubeapi.py", PACKAGE_DIR / "kube.py")
        assert calls, f"the callback calls api.{method}, which makes no API call this test can see"
        for call, verb, group, resource in sorted(calls):
            ok = rbac.is_allowed("callback", verb, resource, group, manage_tokens=method in writes)
            assert ok, f"api.{method} calls {call} ({verb} {resource}) not granted to the callback"

"""The Kubernetes API permissions each component may use: the single source of truth.

Every API call the operator or the callback service makes must be covered by a row of
this table; anything not listed is a bug in the code, not a missing permission. The Helm
chart does not spell rules out by hand: ``deploy/generate.py`` writes this table to
``charts/emailtoken-operator/files/rbac.yaml`` and the RBAC templates render exactly
those rules (``tests/unit/test_chart.py`` checks both the file and the rendered Roles).

Scopes
------
``NAMESPACED`` rows are granted by a Role (+RoleBinding) in each watched namespace when
the chart's ``watchNamespaces`` is set, or by a ClusterRole when all namespaces are
watched.
``RELEASE_NAMESPACE`` rows are granted by one Role (+RoleBinding) in the namespace the
operator itself runs in (the Helm release namespace), whatever it watches, and only with
``operator.leaderElection.enabled``: that is where its Lease lives
(``--lease-namespace``, default ``$POD_NAMESPACE``).
``TOKEN_WRITER`` rows are the callback's, granted (beside its ``NAMESPACED`` rows, in the
same Role or ClusterRole) only with ``callback.manageTokens.enabled`` (``--manage-tokens``):
the admin page's "Create now", edit and delete of EmailTokens.
``FEDERATION`` rows (both components, in the same Role or ClusterRole) are granted only with
``providers.federatedCredential.enabled``: TokenRequests for
``spec.federatedCredential.serviceAccountName`` (see below).

Why the operator may get/create/patch Leases: leader election (``emailtoken.leader``,
``kube.get_lease``/``create_lease``/``patch_lease``) makes exactly one replica the writer,
so that two processes never spend the same rotating refresh token; with it, a second
replica is a safe hot standby. It never lists, watches or deletes Leases (a departing
leader releases by patching ``holderIdentity`` away), and it touches no Lease outside
its own namespace. RBAC cannot limit ``create`` by name, so the Role covers every Lease
of the release namespace: keep that namespace for the operator.

Why the operator may list/watch Secrets: ``emailtoken.informer`` watches the Secrets
of the served namespaces so that a token whose client secret, key or grant Secret
changed (e.g. the callback just wrote a grant) retries at once. It asks for the metadata
of every Secret and the bodies of its own only (a label selector), so unrelated Secrets
(Helm release records) cost it no memory; but RBAC cannot narrow ``list``/``watch`` to
metadata or to a label, so the permission reads every Secret of those namespaces (of the
whole cluster with ``--all-namespaces``). Serve few namespaces in production (chart value
``watchNamespaces``).

Why both may create ``serviceaccounts/token`` (opt-in, ``FEDERATION``): with
``spec.federatedCredential.serviceAccountName`` the client assertion is a short-lived token
(TokenRequest API) of that ServiceAccount of the EmailToken's own namespace, so each namespace
authenticates as itself (``emailtoken.satokens``). The code asks only for the token's own
namespace and only for an audience the installer allows (``--federation-audience``), but RBAC
can narrow neither: the permission could mint a token of any ServiceAccount of the served
namespaces, for any audience, the API server's included; with all namespaces served that is
every ServiceAccount of the cluster (kube-system's too), as good as cluster-admin to whoever
takes over the process. Hence off by default, and best with ``watchNamespaces``. It is the
trust External Secrets' controller holds for ``serviceAccountRef``.

Deliberately not granted (the code must not need them):

- ``get`` on ``emailtokens`` for the operator: its own informer (``emailtoken.informer``)
  lists and watches them, and events carry the whole object; reading one by name is the
  callback's (``CallbackApi.get_token``).
- ``watch`` on ``emailtokens`` for the callback: its admin page lists the tokens at each
  request and a sign-in reads the one it authorizes; nothing follows changes.
  A real API server runs both components with exactly these rules
  (tests/cluster/test_chart_install.py).
- ``patch``/``update`` on ``emailtokens``: kopf handles no resource (the informer follows
  the EmailTokens), so nothing adds a finalizer or progress annotations; the operator
  writes nothing but ``status`` (through ``/status``). GitOps sees no drift.
- ``emailtokens/finalizers``: the Secrets' ownerReferences set
  ``blockOwnerDeletion: false`` (``secretdata.owner_reference``), which admission
  (OwnerReferencesPermissionEnforcement) allows without that permission. The callback
  must do the same.
- ``update`` (PUT) on anything: writes are PATCHes; the grant Secret's optimistic
  concurrency is a merge patch that carries ``metadata.resourceVersion`` (the API server
  answers 409 when it is stale), so ``update`` adds nothing.
- ``customresourcedefinitions`` list/watch and ``namespaces`` list/watch: kopf uses them
  only to notice CRDs and namespaces appearing at run time; they are cluster-wide reads
  that a namespace-scoped install must not need. Without them kopf logs one warning at
  start and carries on (it scans API discovery once, which every authenticated client
  may read, and treats ``--namespace`` values as exact names); setting kopf's
  ``settings.scanning.disabled = True`` at startup silences that warning.
- ``coordination.k8s.io/leases`` in any namespace but the release namespace, and
  ``list``/``watch``/``delete``/``update`` on Leases anywhere (see above).
- ``events.k8s.io``: both components post core ``v1`` Events (POST only, never PATCH).
- Any API access for mail-task pods: they mount the consumer Secret.
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from emailtoken.api import GROUP, PLURAL

COORDINATION_GROUP = "coordination.k8s.io"


class Component(enum.StrEnum):
    """A process with its own ServiceAccount."""

    OPERATOR = "operator"
    CALLBACK = "callback"


class Scope(enum.StrEnum):
    """Where a permission is granted (see the module docstring)."""

    NAMESPACED = "namespaced"
    RELEASE_NAMESPACE = "releaseNamespace"
    TOKEN_WRITER = "tokenWriter"
    FEDERATION = "federation"


@dataclass(frozen=True)
class Permission:
    """One RBAC rule: verbs on one resource of one API group, with the reason it exists."""

    api_group: str
    resource: str
    verbs: tuple[str, ...]
    scope: Scope
    why: str

    def rule(self) -> dict[str, list[str]]:
        """The Kubernetes PolicyRule for this permission."""
        return {"apiGroups": [self.api_group], "resources": [self.resource], "verbs": list(self.verbs)}


PERMISSIONS: dict[Component, tuple[Permission, ...]] = {
    Component.OPERATOR: (
        Permission(
            api_group=GROUP,
            resource=PLURAL,
            verbs=("list", "watch"),
            scope=Scope.NAMESPACED,
            why="emailtoken.informer lists and watches every EmailToken of the served namespaces; "
            "the operator never reads one by name",
        ),
        Permission(
            api_group=GROUP,
            resource=f"{PLURAL}/status",
            verbs=("patch",),
            scope=Scope.NAMESPACED,
            why="conditions, expiry, redirect URI and device code (kube.patch_token_status)",
        ),
        Permission(
            api_group="",
            resource="secrets",
            verbs=("get", "list", "watch", "create", "patch", "delete"),
            scope=Scope.NAMESPACED,
            why="read client secrets, keys and grants; write consumer and grant Secrets (merge "
            "PATCH with a resourceVersion precondition, store); watch Secrets so a changed "
            "client secret or a new grant retries at once (emailtoken.informer); delete "
            "the grant Secret on emailtoken.io/reauthorize (store)",
        ),
        Permission(
            api_group="",
            resource="events",
            verbs=("create",),
            scope=Scope.NAMESPACED,
            why="emailtoken.events.EventPoster posts core v1 Events (Authorized, Refreshed, "
            "RefreshFailed, ReauthorizationRequired)",
        ),
        Permission(
            api_group=COORDINATION_GROUP,
            resource="leases",
            verbs=("get", "create", "patch"),
            scope=Scope.RELEASE_NAMESPACE,
            why="leader election on one Lease in the operator's own namespace (leader.LeaderElector: "
            "kube.get_lease reads it, create_lease takes a missing one, patch_lease renews, takes "
            "over or releases it with a resourceVersion precondition)",
        ),
        Permission(
            api_group="",
            resource="serviceaccounts/token",
            verbs=("create",),
            scope=Scope.FEDERATION,
            why="spec.federatedCredential.serviceAccountName: a short-lived token of that ServiceAccount "
            "of the token's own namespace, for an installer-allowed audience only, as the client "
            "assertion (satokens, kube.create_service_account_token)",
        ),
    ),
    Component.CALLBACK: (
        Permission(
            api_group=GROUP,
            resource=PLURAL,
            verbs=("get", "list"),
            scope=Scope.NAMESPACED,
            why="the admin page lists the tokens at each request (CallbackApi.list_tokens); starting a "
            "sign-in and /callback read the token being authorized (CallbackApi.get_token)",
        ),
        Permission(
            api_group="",
            resource="secrets",
            verbs=("get", "create", "patch"),
            scope=Scope.NAMESPACED,
            why="read the token's client secret for the code exchange and write its grant Secret; "
            "RBAC cannot restrict create by name and grant names follow token names created "
            "later, so this covers every Secret of the namespaces served (serve few namespaces)",
        ),
        Permission(
            api_group=GROUP,
            resource=PLURAL,
            verbs=("create", "patch", "delete"),
            scope=Scope.TOKEN_WRITER,
            why="the admin page's Create now and edit: server-side apply (PATCH; create for a new "
            "object) under field manager emailtoken-admin-page; delete of a token the page created "
            "(uid precondition). Its credential Secret is applied with the Secret rights above and "
            "owned by the token, so the garbage collector deletes it (no Secret delete)",
        ),
        Permission(
            api_group="",
            resource="events",
            verbs=("create",),
            scope=Scope.TOKEN_WRITER,
            why="an Event on the EmailToken for every create, edit, secret replacement and delete "
            "(callback.tokenwrite.TokenWriter.event)",
        ),
        Permission(
            api_group="",
            resource="serviceaccounts/token",
            verbs=("create",),
            scope=Scope.FEDERATION,
            why="redeem an authorization code with the token of spec.federatedCredential."
            "serviceAccountName (satokens), as the operator does for its own requests",
        ),
    ),
}


def permissions(
    component: Component | str,
    *,
    leader_election: bool = False,
    manage_tokens: bool = False,
    federation: bool = False,
) -> list[Permission]:
    """The permissions a component holds in the given deployment mode, table order.

    With ``leader_election`` the release-namespace rows are included; they are granted
    by their own Role (:func:`release_namespace_rules`), not by :func:`rules`. ``federation``:
    the TokenRequest rows (chart ``providers.federatedCredential.enabled``).
    All-namespaces and namespaced installs hold the same rows (the chart grants them by a
    ClusterRole instead of per-namespace Roles).
    """
    wanted = {Scope.NAMESPACED}
    if leader_election:
        wanted.add(Scope.RELEASE_NAMESPACE)
    if manage_tokens and Component(component) is Component.CALLBACK:
        wanted.add(Scope.TOKEN_WRITER)
    if federation:
        wanted.add(Scope.FEDERATION)
    return [p for p in PERMISSIONS[Component(component)] if p.scope in wanted]


def rules(
    component: Component | str,
    *,
    manage_tokens: bool = False,
    federation: bool = False,
) -> list[dict[str, list[str]]]:
    """The PolicyRules of a component's ClusterRole (all namespaces) or per-namespace Role."""
    perms = permissions(component, manage_tokens=manage_tokens, federation=federation)
    return [p.rule() for p in perms]


def release_namespace_rules(component: Component | str, *, leader_election: bool) -> list[dict[str, list[str]]]:
    """The PolicyRules of a component's Role in its own (release) namespace; [] when none."""
    if not leader_election:
        return []
    return [p.rule() for p in PERMISSIONS[Component(component)] if p.scope is Scope.RELEASE_NAMESPACE]


def is_allowed(
    component: Component | str,
    verb: str,
    resource: str,
    api_group: str = "",
    *,
    leader_election: bool = False,
    manage_tokens: bool = False,
    federation: bool = False,
) -> bool:
    """True when the table lets ``component`` use ``verb`` on ``api_group/resource``.

    Meant for tests that record the API calls a component really makes (``resource``
    includes a subresource, e.g. ``emailtokens/status``). Lease rows count only with
    ``leader_election`` and only in the release namespace; tokenWriter rows only with
    ``manage_tokens``; federation rows only with ``federation``.
    """
    granted = permissions(
        component,
        leader_election=leader_election,
        manage_tokens=manage_tokens,
        federation=federation,
    )
    return any(p.api_group == api_group and p.resource == resource and verb in p.verbs for p in granted)


def chart_table() -> dict[str, dict[str, list[dict[str, list[str]]]]]:
    """The table in the shape the chart's RBAC templates read (``files/rbac.yaml``)."""
    table: dict[str, dict[str, list[dict[str, list[str]]]]] = {}
    for component, perms in PERMISSIONS.items():
        by_scope: dict[str, list[dict[str, list[str]]]] = {scope.value: [] for scope in Scope}
        for perm in perms:
            by_scope[perm.scope.value].append(perm.rule())
        table[component.value] = by_scope
    return table


def render_chart_file() -> str:
    """Text of ``charts/emailtoken-operator/files/rbac.yaml`` (generated, never edited)."""
    import yaml  # a runtime dependency already; imported here to keep the table import-light

    header = (
        "# GENERATED from operator/emailtoken/rbac.py by deploy/generate.py: do not edit.\n"
        "# component -> scope -> PolicyRules; scopes are explained in that module.\n"
    )
    body: Any = chart_table()
    return header + yaml.safe_dump(body, sort_keys=False, default_flow_style=None, width=1000)


def describe(perms: Iterable[Permission]) -> str:
    """A readable table (for docs and reviews)."""
    lines = [f"{'group':<14} {'resource':<22} {'verbs':<42} scope"]
    for p in perms:
        lines.append(f"{p.api_group or 'core':<14} {p.resource:<22} {','.join(p.verbs):<42} {p.scope.value}")
    return "\n".join(lines)


def main() -> None:
    """Print the chart file (``python -m emailtoken.rbac``)."""
    sys.stdout.write(render_chart_file())


if __name__ == "__main__":
    main()

""" "Create now", edit and delete from the admin page: server-side apply under the page's own field manager.

Only with ``--manage-tokens`` (Helm ``callback.manageTokens.enabled``, off by default);
the handlers refuse before anything is read when it is off, and without it the chart
grants no write permission either. What the page may change:

* tokens it created (label ``emailtoken.io/created-by: admin-page``), never a token
  written by hand or by a pipeline;
* never an object Argo CD, Flux or Helm manages (their tracking labels, annotations or
  field managers): Git is the truth there, so the page offers the manifest instead;
* only Secrets it made itself (same label): a Secret of the credential Secret's name that
  someone else wrote is neither used nor changed, on create and on edit alike.

Server-side apply (field manager ``emailtoken-admin-page``, no force) means a field
another tool set since is a conflict reported to the person, not silently taken over.
The credential Secret is owned by the EmailToken (``blockOwnerDeletion: false``, as the
operator's own Secrets), so deleting the token lets the garbage collector remove it
with the consumer and grant Secrets. Every change, and every refused write, posts an
Event on the EmailToken.

Create is token first, then Secret: the Secret is owned from its first moment, so no
credential is ever left without an owner. Should the Secret's write fail, the token is
deleted again (uid precondition: never a namesake) and the page says why, so Create now
can simply be pressed again; should that delete fail too, the message says to Edit (enter
the secret) or Delete the half-made token, both of which work for a token the page made.
An edit sends the ``resourceVersion`` it checked, so a change made since (e.g. a GitOps
tool adopting the token) makes the apply fail instead of being overwritten.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from emailtoken.api import API_VERSION, GROUP, KIND
from emailtoken.callback.signin import SignInRefused, api_refused
from emailtoken.callback.tokenform import Credential, TokenForm, manifest_of
from emailtoken.events import event_body
from emailtoken.kube import Conflict, KubeError

FIELD_MANAGER = "emailtoken-admin-page"
LABEL_CREATED_BY = f"{GROUP}/created-by"
CREATED_BY = "admin-page"
#: Marks of a GitOps controller or release tool: Argo CD (label or annotation tracking), Flux
#: (kustomize and helm controllers), Helm. ``app.kubernetes.io/instance`` is Argo CD's default
#: label-tracking key and also what Helm charts set; the page never sets it, so either way the
#: token's manifest lives elsewhere (docs/gitops.md).
GITOPS_MARKS = {
    "argocd.argoproj.io/instance": "Argo CD",
    "app.kubernetes.io/instance": "Argo CD or Helm",
    "argocd.argoproj.io/tracking-id": "Argo CD",
    "kustomize.toolkit.fluxcd.io/name": "Flux",
    "helm.toolkit.fluxcd.io/name": "Flux",
}
GITOPS_MANAGERS = {
    "argocd-controller": "Argo CD",
    "argocd-application-controller": "Argo CD",
    "kustomize-controller": "Flux",
    "helm-controller": "Flux",
    "helm": "Helm",
}
log = logging.getLogger("emailtoken.callback")


class WriterApi(Protocol):
    """The calls :class:`TokenWriter` makes (:class:`~emailtoken.callback.kubeapi.CallbackApi`)."""

    async def get_token(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def apply_token(self, body: dict[str, Any], *, manager: str) -> dict[str, Any]: ...

    async def apply_secret(self, body: dict[str, Any], *, manager: str) -> dict[str, Any]: ...

    async def delete_token(self, namespace: str, name: str, *, uid: str) -> None: ...

    async def create_event(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]: ...


def gitops_owner(obj: Mapping[str, Any]) -> str | None:
    """ "Argo CD" or "Flux" when one of them manages the object, else None."""
    meta = obj.get("metadata") or {}
    for marks in (meta.get("labels") or {}, meta.get("annotations") or {}):
        for key in marks:
            if key in GITOPS_MARKS:
                return GITOPS_MARKS[key]
    for entry in meta.get("managedFields") or ():
        owner = GITOPS_MANAGERS.get(str(entry.get("manager") or ""))
        if owner:
            return owner
    return None


def created_here(obj: Mapping[str, Any]) -> bool:
    """True for an object this page created."""
    return ((obj.get("metadata") or {}).get("labels") or {}).get(LABEL_CREATED_BY) == CREATED_BY


def editable(obj: Mapping[str, Any]) -> bool:
    """True when the page may edit or delete the object in place."""
    return created_here(obj) and gitops_owner(obj) is None


class FieldRefused(SignInRefused):
    """A refusal about one form field (shown beside it): e.g. the secret value is needed."""

    def __init__(self, reason: str, message: str, *, field: str, status: int = 422) -> None:
        super().__init__(reason, message, status=status)
        self.field = field


def refuse_foreign(obj: Mapping[str, Any], what: str) -> None:
    """Refuse to change an object a GitOps tool manages or this page did not create."""
    owner = gitops_owner(obj)
    if owner:
        raise SignInRefused(
            "ManagedByGitOps",
            f"{what} is managed by {owner}: change it where its manifest lives (Git), not here",
            status=409,
        )
    if not created_here(obj):
        raise SignInRefused(
            "NotCreatedHere", f"{what} was not created on this page; change it where it was written", status=409
        )


def _secret_body(form: TokenForm, credential: Credential, owner_uid: str) -> dict[str, Any]:
    value = base64.b64encode(credential.value.encode()).decode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": form.credential_secret,
            "namespace": form.namespace,
            "labels": {LABEL_CREATED_BY: CREATED_BY},
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "name": form.name,
                    "uid": owner_uid,
                    "blockOwnerDeletion": False,
                }
            ],
        },
        "data": {form.credential_key: value},
    }


def _ref(namespace: str, name: str) -> dict[str, Any]:
    """An EmailToken not read (yet): enough to name it in an Event."""
    return {"metadata": {"namespace": namespace, "name": name}}


class TokenWriter:
    """Creates, edits and deletes EmailTokens for the admin page; each outcome is an Event."""

    def __init__(self, api: WriterApi, *, manager: str = FIELD_MANAGER) -> None:
        self.api = api
        self.manager = manager

    async def create(self, form: TokenForm, credential: Credential) -> None:
        """A new EmailToken and its credential Secret; refused when either exists and is not the page's."""
        what = f"EmailToken {form.namespace}/{form.name}"
        target: Mapping[str, Any] = _ref(form.namespace, form.name)
        try:
            existing = await self._call(self.api.get_token(form.namespace, form.name), f"reading {what}")
            if existing is not None:
                target = existing
                mine = " (made on this page: Edit or Delete it)" if created_here(existing) else ""
                raise SignInRefused("AlreadyExists", f"{what} exists already{mine}; choose another name", status=409)
            await self._check_secret(form, field="name")
            obj = await self._apply_token(form, what)
            target = obj
            if form.needs_credential:
                await self._secret_or_roll_back(form, credential, obj, what)
        except SignInRefused as exc:
            await self.refused(target, "create", exc)
            raise
        await self.event(obj, "CreatedOnAdminPage", f"created on the admin page ({form.provider}, {form.flow})")

    async def _secret_or_roll_back(
        self, form: TokenForm, credential: Credential, obj: Mapping[str, Any], what: str
    ) -> None:
        """Write the credential Secret; when that fails, delete the new token again (create is all or nothing)."""
        uid = str(obj["metadata"]["uid"])
        try:
            await self._apply_secret(form, credential, uid)
        except SignInRefused as exc:
            try:
                await self.api.delete_token(form.namespace, form.name, uid=uid)
            except KubeError as gone:
                exc.message += (
                    f"; {what} was created without it and could not be deleted again (HTTP {gone.status}): "
                    "Edit it to enter the secret, or Delete it"
                )
            else:
                exc.message += f"; {what} was deleted again, so nothing was created: press Create now again"
            raise

    async def update(self, form: TokenForm, credential: Credential, current: Mapping[str, Any]) -> None:
        """Apply the edited spec; replace the secret value only when a new one was given."""
        what = f"EmailToken {form.namespace}/{form.name}"
        try:
            refuse_foreign(current, what)
            if form.needs_credential:
                await self._check_secret(form, field=form.credential_field, kept=not credential.value)
            version = str((current.get("metadata") or {}).get("resourceVersion") or "")
            obj = await self._apply_token(form, what, resource_version=version)
            if credential.value and form.needs_credential:
                await self._apply_secret(form, credential, str(obj["metadata"]["uid"]))
        except SignInRefused as exc:
            await self.refused(current, "edit", exc)
            raise
        await self.event(obj, "UpdatedOnAdminPage", "spec changed on the admin page")
        if credential.value and form.needs_credential:
            await self.event(obj, "CredentialReplaced", f"Secret {form.credential_secret} replaced on the admin page")

    async def guard(self, current: Mapping[str, Any], action: str) -> None:
        """:func:`refuse_foreign`, the refusal posted as an Event like any other."""
        meta = current.get("metadata") or {}
        try:
            refuse_foreign(current, f"EmailToken {meta.get('namespace')}/{meta.get('name')}")
        except SignInRefused as exc:
            await self.refused(current, action, exc)
            raise

    async def delete(self, current: Mapping[str, Any]) -> None:
        """Delete the EmailToken; the garbage collector removes its Secrets (they are owned)."""
        meta = current.get("metadata") or {}
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        await self.guard(current, "delete")
        try:
            await self._call(
                self.api.delete_token(namespace, name, uid=str(meta.get("uid"))),
                f"deleting EmailToken {namespace}/{name}",
            )
        except SignInRefused as exc:
            await self.refused(current, "delete", exc)
            raise
        await self.event(current, "DeletedOnAdminPage", "deleted on the admin page, with the Secrets it owns")

    async def _check_secret(self, form: TokenForm, *, field: str, kept: bool = False) -> None:
        """The credential Secret is the page's own or absent; ``kept`` (an edit keeping the value):
        it must exist and hold the key the flow needs (a flow change may need another key)."""
        name = f"{form.namespace}/{form.credential_secret}"
        secret = await self._call(self.api.get_secret(form.namespace, form.credential_secret), f"reading Secret {name}")
        if secret is not None and not created_here(secret):
            raise FieldRefused(
                "SecretExists",
                f"Secret {name} exists and was not made by this page, which neither uses nor changes it"
                + ("; choose another name" if field == "name" else ""),
                field=field,
                status=409,
            )
        if not kept:
            return
        what = "the service-account key file" if form.flow == "ServiceAccount" else "the client secret"
        if secret is None:
            raise FieldRefused("CredentialMissing", f"Secret {name} does not exist: enter {what}", field=field)
        if form.credential_key not in (secret.get("data") or {}):
            raise FieldRefused(
                "CredentialMissing",
                f"Secret {name} holds no {form.credential_key} (flow {form.flow} needs it): enter {what}",
                field=field,
            )

    async def _apply_token(self, form: TokenForm, what: str, *, resource_version: str = "") -> dict[str, Any]:
        body = manifest_of(form)
        body["metadata"]["labels"] = {LABEL_CREATED_BY: CREATED_BY}
        if resource_version:  # a precondition: the object is still the one that was checked
            body["metadata"]["resourceVersion"] = resource_version
        return await self._call(self.api.apply_token(body, manager=self.manager), f"applying {what}")

    async def _apply_secret(self, form: TokenForm, credential: Credential, uid: str) -> None:
        body = _secret_body(form, credential, uid)
        await self._call(
            self.api.apply_secret(body, manager=self.manager),
            f"applying Secret {form.namespace}/{form.credential_secret}",
        )

    async def refused(self, obj: Mapping[str, Any], action: str, exc: SignInRefused) -> None:
        """A Warning Event for a write the page refused or could not finish (who tried is in the callback's log)."""
        await self.event(
            obj,
            "RefusedOnAdminPage",
            f"{action} on the admin page refused ({exc.reason}): {exc.message}",
            type_="Warning",
        )

    @staticmethod
    async def _call(awaitable: Any, doing: str) -> Any:
        try:
            return await awaitable
        except Conflict as exc:
            if "has been modified" in (exc.message or ""):
                raise SignInRefused(
                    "ChangedMeanwhile",
                    f"{doing}: it was changed meanwhile; open it again and redo the edit",
                    status=409,
                ) from None
            raise SignInRefused(
                "FieldConflict",
                f"{doing} conflicts with another tool's change ({(exc.message or '').strip()[:300]}); "
                "take the manifest and apply it where that tool works",
                status=409,
            ) from None
        except KubeError as exc:
            raise api_refused(exc, doing) from None

    async def event(self, obj: Mapping[str, Any], reason: str, message: str, *, type_: str = "Normal") -> None:
        """Post an Event on the EmailToken (a failure to post is logged, never fatal)."""
        meta = obj.get("metadata") or {}
        body = event_body(
            obj,
            type=type_,
            reason=reason,
            message=message,
            component="emailtoken-callback",
            reporter="emailtoken.io/callback",
        )
        try:
            await self.api.create_event(str(meta.get("namespace")), body)
        except KubeError as exc:
            log.warning(
                "event %s for %s/%s not posted (HTTP %s)", reason, meta.get("namespace"), meta.get("name"), exc.status
            )

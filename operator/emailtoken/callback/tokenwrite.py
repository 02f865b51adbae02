""" "Create now", edit and delete from the admin page: server-side apply under the page's own field manager.

Only with ``--manage-tokens`` (Helm ``callback.manageTokens.enabled``, off by default);
the handlers refuse before anything is read when it is off, and without it the chart
grants no write permission either. What the page may change:

* tokens it created (label ``emailtoken.io/created-by: admin-page``), never a token
  written by hand or by a pipeline;
* never an object Argo CD or Flux manages (their tracking labels, annotations or field
  managers): Git is the truth there, so the page offers the manifest instead.

Server-side apply (field manager ``emailtoken-admin-page``, no force) means a field
another tool set since is a conflict reported to the person, not silently taken over.
The credential Secret is owned by the EmailToken (``blockOwnerDeletion: false``, as the
operator's own Secrets), so deleting the token lets the garbage collector remove it
with the consumer and grant Secrets. Every change posts an Event on the EmailToken.
"""

from __future__ import annotations

import base64
import logging
import socket
from collections.abc import Mapping
from typing import Any, Protocol

from emailtoken.api import API_VERSION, GROUP, KIND
from emailtoken.callback.signin import SignInRefused, api_refused
from emailtoken.callback.tokenform import Credential, TokenForm, manifest_of
from emailtoken.kube import Conflict, KubeError
from emailtoken.timefmt import rfc3339, utcnow

FIELD_MANAGER = "emailtoken-admin-page"
LABEL_CREATED_BY = f"{GROUP}/created-by"
CREATED_BY = "admin-page"
#: Marks of a GitOps controller: Argo CD (label or annotation tracking), Flux (kustomize and helm controllers).
GITOPS_MARKS = {
    "argocd.argoproj.io/instance": "Argo CD",
    "argocd.argoproj.io/tracking-id": "Argo CD",
    "kustomize.toolkit.fluxcd.io/name": "Flux",
    "helm.toolkit.fluxcd.io/name": "Flux",
}
GITOPS_MANAGERS = {
    "argocd-controller": "Argo CD",
    "argocd-application-controller": "Argo CD",
    "kustomize-controller": "Flux",
    "helm-controller": "Flux",
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


def refuse_foreign(obj: Mapping[str, Any], what: str) -> None:
    """Refuse to change an object a GitOps tool manages or this page did not create."""
    owner = gitops_owner(obj)
    if owner:
        raise SignInRefused(
            "ManagedByGitOps",
            f"{what} is managed by {owner}: change it in Git (the manifest is below), not here",
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


class TokenWriter:
    """Creates, edits and deletes EmailTokens for the admin page."""

    def __init__(self, api: WriterApi, *, manager: str = FIELD_MANAGER) -> None:
        self.api = api
        self.manager = manager

    async def create(self, form: TokenForm, credential: Credential) -> None:
        """A new EmailToken and its credential Secret; refused when either exists and is not the page's."""
        what = f"EmailToken {form.namespace}/{form.name}"
        if await self._call(self.api.get_token(form.namespace, form.name), f"reading {what}") is not None:
            raise SignInRefused("AlreadyExists", f"{what} exists already; choose another name", status=409)
        await self._check_secret_free(form)
        obj = await self._apply_token(form, what)
        if form.needs_credential:
            await self._apply_secret(form, credential, str(obj["metadata"]["uid"]))
        await self.event(obj, "CreatedOnAdminPage", f"created on the admin page ({form.provider}, {form.flow})")

    async def update(self, form: TokenForm, credential: Credential, current: Mapping[str, Any]) -> None:
        """Apply the edited spec; replace the secret value only when a new one was given."""
        what = f"EmailToken {form.namespace}/{form.name}"
        refuse_foreign(current, what)
        if form.needs_credential and not credential.value:
            await self._check_credential_kept(form)
        obj = await self._apply_token(form, what)
        await self.event(obj, "UpdatedOnAdminPage", "spec changed on the admin page")
        if credential.value and form.needs_credential:
            await self._apply_secret(form, credential, str(obj["metadata"]["uid"]))
            await self.event(obj, "CredentialReplaced", f"Secret {form.credential_secret} replaced on the admin page")

    async def delete(self, current: Mapping[str, Any]) -> None:
        """Delete the EmailToken; the garbage collector removes its Secrets (they are owned)."""
        meta = current.get("metadata") or {}
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        what = f"EmailToken {namespace}/{name}"
        refuse_foreign(current, what)
        await self._call(self.api.delete_token(namespace, name, uid=str(meta.get("uid"))), f"deleting {what}")
        await self.event(current, "DeletedOnAdminPage", "deleted on the admin page, with the Secrets it owns")

    async def _check_credential_kept(self, form: TokenForm) -> None:
        """An edit that keeps the secret value needs the Secret to exist (a flow change may need a new one)."""
        name = f"{form.namespace}/{form.credential_secret}"
        if (
            await self._call(self.api.get_secret(form.namespace, form.credential_secret), f"reading Secret {name}")
            is None
        ):
            what = "the service-account key file" if form.flow == "ServiceAccount" else "the client secret"
            raise SignInRefused("CredentialMissing", f"Secret {name} does not exist: enter {what}", status=422)

    async def _check_secret_free(self, form: TokenForm) -> None:
        if not form.needs_credential:
            return
        name = f"{form.namespace}/{form.credential_secret}"
        secret = await self._call(self.api.get_secret(form.namespace, form.credential_secret), f"reading Secret {name}")
        if secret is not None and not created_here(secret):
            raise SignInRefused(
                "SecretExists", f"Secret {name} exists and was not made by this page; choose another name", status=409
            )

    async def _apply_token(self, form: TokenForm, what: str) -> dict[str, Any]:
        body = manifest_of(form)
        body["metadata"]["labels"] = {LABEL_CREATED_BY: CREATED_BY}
        return await self._call(self.api.apply_token(body, manager=self.manager), f"applying {what}")

    async def _apply_secret(self, form: TokenForm, credential: Credential, uid: str) -> None:
        body = _secret_body(form, credential, uid)
        await self._call(
            self.api.apply_secret(body, manager=self.manager),
            f"applying Secret {form.namespace}/{form.credential_secret}",
        )

    @staticmethod
    async def _call(awaitable: Any, doing: str) -> Any:
        try:
            return await awaitable
        except Conflict as exc:
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
        now = rfc3339(utcnow())
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name')}.", "namespace": meta.get("namespace")},
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
            },
            "reason": reason,
            "message": message,
            "type": type_,
            "source": {"component": "emailtoken-callback"},
            "reportingComponent": "emailtoken.io/callback",
            "reportingInstance": socket.gethostname()[:128],
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self.api.create_event(str(meta.get("namespace")), body)
        except KubeError as exc:
            log.warning(
                "event %s for %s/%s not posted (HTTP %s)", reason, meta.get("namespace"), meta.get("name"), exc.status
            )

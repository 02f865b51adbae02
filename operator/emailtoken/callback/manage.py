"""Handlers of the "Add a new email token" form: check, download, Create now, edit and delete.

Checking and downloading write nothing and are always on. Create now, Save and Delete
write to the cluster and answer 403 ``TokenWritesDisabled`` unless the service runs with
``--manage-tokens``: the endpoint refuses, hiding the button is only a courtesy. Every
POST passes the same CSRF check as "Get Email Token". Secret values are read from the
request, handed to :class:`~.tokenwrite.TokenWriter`, and never rendered or logged.
A refused write is a Warning Event on the token once the request passed both checks;
requests that fail CSRF or reach a disabled page are only logged: anyone can send those,
so they must not fill the namespace's Events (and a disabled page has no right to post).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from emailtoken.api import consumer_secret_name
from emailtoken.callback import formpages, tokenform
from emailtoken.callback.formpages import FormContext
from emailtoken.callback.responses import csrf_token, html_page, log, posted_form, refusal, served, services
from emailtoken.callback.signin import SignInRefused, api_refused, existing_token
from emailtoken.callback.tokenform import Checked, Credential, TokenForm
from emailtoken.callback.tokenwrite import FieldRefused, TokenWriter, editable, gitops_owner
from emailtoken.kube import KubeError

routes = web.RouteTableDef()
NOT_SAVED = "Nothing was changed"
Form = MultiDictProxy[Any]


def _context(
    request: web.Request, *, editing: tuple[str, str] | None = None, manage: bool | None = None
) -> FormContext:
    svc = services(request)
    token, _ = csrf_token(request)
    return FormContext(
        csrf_token=token,
        namespaces=svc.config.namespaces,
        provider_hosts=svc.config.provider_hosts,
        manage=svc.config.manage_tokens if manage is None else manage,
        editing=editing,
    )


def _writes_enabled(request: web.Request) -> None:
    if not services(request).config.manage_tokens:
        raise SignInRefused(
            "TokenWritesDisabled",
            "this admin page does not write EmailTokens (the installer enables it with Helm "
            "callback.manageTokens.enabled / --manage-tokens); take the manifest to Git instead",
            status=403,
        )


def _credential(form: Form, token_form: TokenForm) -> Credential:
    """The secret value the flow uses: the client secret, or the uploaded key file's text."""
    if token_form.flow == "ServiceAccount":
        upload = form.get("serviceAccountKey")
        raw = upload.file.read(16 * 1024) if isinstance(upload, web.FileField) else b""
        return Credential(raw.decode("utf-8", "replace").strip())
    value = form.get("clientSecret")
    return Credential(value.strip() if isinstance(value, str) else "")


def _check(request: web.Request, token_form: TokenForm) -> Checked:
    cfg = services(request).config
    return tokenform.check(token_form, namespaces=cfg.namespaces, provider_hosts=cfg.provider_hosts)


def _download(checked: Checked) -> web.Response:
    name = checked.form.name or "emailtoken"
    return web.Response(
        text=formpages.manifest_yaml(checked.manifest),
        content_type="application/yaml",
        headers={"Content-Disposition": f'attachment; filename="emailtoken-{name}.yaml"'},
    )


@routes.get("/new")
async def new_form(request: web.Request) -> web.Response:
    """The empty form, endpoints prefilled for the chosen provider."""
    namespaces = services(request).config.namespaces
    form = tokenform.new_form(request.query.get("provider", "Microsoft"), namespaces[0] if namespaces else "")
    return html_page(request, formpages.token_form_page(None, form, _context(request)))


@routes.post("/new")
async def submit_new(request: web.Request) -> web.Response:
    """Check, download, or Create now (then straight to "Get Email Token")."""
    try:
        form = await posted_form(request)
        action = form.get("action")
        if action == "create":
            _writes_enabled(request)
        token_form = tokenform.form_of(form, form.getall("services", []))
        credential = _credential(form, token_form)
        checked = _check(request, token_form)
        if action == "create":
            problem = tokenform.credential_problem(token_form, credential, required=True)
            checked = tokenform.with_errors(checked, {token_form.credential_field: problem})
        if not checked.ok or action not in ("create", "download"):
            status = 200 if checked.ok else 422
            page = formpages.token_form_page(
                checked, token_form, _context(request), secret_given=bool(credential.value)
            )
            return html_page(request, page, status)
        if action == "download":
            return _download(checked)
        return await _create(request, checked, credential)
    except SignInRefused as exc:
        return refusal(request, exc, what="new EmailToken", title=NOT_SAVED)


def _refused_form(
    request: web.Request, checked: Checked, ctx: FormContext, exc: SignInRefused, *, secret_given: bool
) -> web.Response:
    """The form again after a refused write: the reason beside its field when it is about one."""
    if isinstance(exc, FieldRefused):
        checked = tokenform.with_errors(checked, {exc.field: exc.message})
        page = formpages.token_form_page(checked, checked.form, ctx, secret_given=secret_given)
    else:
        page = formpages.token_form_page(checked, checked.form, ctx, notice=exc.message)
    return html_page(request, page, exc.status)


async def _create(request: web.Request, checked: Checked, credential: Credential) -> web.Response:
    form = checked.form
    writer = TokenWriter(services(request).api)
    try:
        await writer.create(form, credential)
    except SignInRefused as exc:
        log.warning("create of EmailToken %s/%s refused: %s", form.namespace, form.name, exc.reason)
        return _refused_form(request, checked, _context(request), exc, secret_given=bool(credential.value))
    log.info("EmailToken %s/%s created on the admin page", form.namespace, form.name)
    target = formpages.path_of("authorize", form.namespace, form.name)
    return web.Response(status=303, headers={"Location": target + "?created=1"})


async def _existing(request: web.Request) -> tuple[str, str, dict[str, Any]]:
    """The token the URL names, in a namespace this service serves."""
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    served(request, namespace)
    return namespace, name, await existing_token(services(request).api, namespace, name)


def _why_not_editable(obj: Mapping[str, Any]) -> str:
    owner = gitops_owner(obj)
    if owner:
        return f"This EmailToken is managed by {owner}: edit it in Git. Check gives the manifest to commit."
    return "This EmailToken was not created on this page: edit it where it was written. Check gives its manifest."


@routes.get("/tokens/{namespace}/{name}/edit")
async def edit_form(request: web.Request) -> web.Response:
    """The form prefilled from the token; Save only for tokens this page created and no GitOps tool manages."""
    try:
        _writes_enabled(request)
        namespace, name, obj = await _existing(request)
    except SignInRefused as exc:
        return refusal(request, exc, what="edit form", title=NOT_SAVED)
    can = editable(obj)
    ctx = _context(request, editing=(namespace, name), manage=can)
    page = formpages.token_form_page(
        None, tokenform.form_of_object(obj), ctx, notice="" if can else _why_not_editable(obj)
    )
    return html_page(request, page)


@routes.post("/tokens/{namespace}/{name}/edit")
async def submit_edit(request: web.Request) -> web.Response:
    """Check, download or Save an edit (name, namespace and provider stay)."""
    try:
        _writes_enabled(request)
        form = await posted_form(request)
        namespace, name, obj = await _existing(request)
        writer = TokenWriter(services(request).api)
        action = form.get("action")
        if action == "save":
            await writer.guard(obj, "edit")
    except SignInRefused as exc:
        return refusal(request, exc, what="edit of an EmailToken", title=NOT_SAVED)
    current = tokenform.form_of_object(obj)
    posted = tokenform.form_of({**form, "namespace": namespace, "name": name}, form.getall("services", []))
    token_form = replace(posted, provider=current.provider)
    credential = _credential(form, token_form)
    checked = _check(request, token_form)
    problem = tokenform.credential_problem(token_form, credential, required=False)
    checked = tokenform.with_errors(checked, {token_form.credential_field: problem})
    ctx = _context(request, editing=(namespace, name), manage=editable(obj))
    if not checked.ok or action not in ("save", "download"):
        page = formpages.token_form_page(checked, token_form, ctx, secret_given=bool(credential.value))
        return html_page(request, page, 200 if checked.ok else 422)
    if action == "download":
        return _download(checked)
    try:
        await writer.update(token_form, credential, obj)
    except SignInRefused as exc:
        log.warning("edit of EmailToken %s/%s refused: %s", namespace, name, exc.reason)
        return _refused_form(request, checked, ctx, exc, secret_given=bool(credential.value))
    log.info("EmailToken %s/%s edited on the admin page", namespace, name)
    return web.Response(
        status=303, headers={"Location": formpages.path_of("authorize", namespace, name) + "?updated=1"}
    )


@routes.get("/tokens/{namespace}/{name}/delete")
async def delete_confirm(request: web.Request) -> web.Response:
    """The confirmation, naming the Secret mail tasks mount."""
    try:
        _writes_enabled(request)
        namespace, name, obj = await _existing(request)
        if not editable(obj):
            raise SignInRefused("NotEditable", _why_not_editable(obj), status=409)
    except SignInRefused as exc:
        return refusal(request, exc, what="delete confirmation", title=NOT_SAVED)
    form = tokenform.form_of_object(obj)
    try:
        credential_secret = await _owned_credential_secret(request, form, obj)
    except SignInRefused as exc:
        return refusal(request, exc, what="delete confirmation", title=NOT_SAVED)
    token, _ = csrf_token(request)
    page = formpages.delete_page(
        namespace,
        name,
        consumer_secret=consumer_secret_name(name, obj.get("spec") or {}),
        credential_secret=credential_secret,
        csrf_token=token,
    )
    return html_page(request, page)


async def _owned_credential_secret(request: web.Request, form: TokenForm, obj: Mapping[str, Any]) -> str | None:
    """The credential Secret's name when it exists and the token owns it (so it goes with it), else None."""
    try:
        secret = await services(request).api.get_secret(form.namespace, form.credential_secret)
    except KubeError as exc:
        raise api_refused(exc, f"reading Secret {form.namespace}/{form.credential_secret}") from None
    uid = (obj.get("metadata") or {}).get("uid")
    owners = ((secret or {}).get("metadata") or {}).get("ownerReferences") or ()
    return form.credential_secret if any(o.get("uid") == uid for o in owners) else None


@routes.post("/tokens/{namespace}/{name}/delete")
async def delete(request: web.Request) -> web.Response:
    """Delete a token this page created (its Secrets follow through owner references)."""
    try:
        _writes_enabled(request)
        await posted_form(request)
        namespace, name, obj = await _existing(request)
        await TokenWriter(services(request).api).delete(obj)
    except SignInRefused as exc:
        return refusal(request, exc, what="delete of an EmailToken", title=NOT_SAVED)
    log.info("EmailToken %s/%s deleted on the admin page", namespace, name)
    return html_page(request, formpages.done_page("EmailToken deleted", f"EmailToken {namespace}/{name} was deleted."))

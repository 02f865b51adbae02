"""HTML of the "Add a new email token" form, its result, and the delete confirmation.

Same rules as :mod:`.pages`: everything escaped, no external assets, works without
JavaScript (the copy buttons need the page's one hashed script). Secret values are never
rendered: the password and file fields always come back empty, with a note why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape

import yaml

from emailtoken.callback.pages import layout, path_of
from emailtoken.callback.tokenform import (
    FIELDS,
    FLOWS,
    PROBE_TLS,
    PROVIDER_HELP,
    TENANT,
    Checked,
    TokenForm,
    auto_scopes,
    credential_command,
    service_scopes,
)
from emailtoken.model import PROVIDERS


@dataclass(frozen=True)
class FormContext:
    """What the form page needs besides the form itself."""

    csrf_token: str
    namespaces: Sequence[str]
    provider_hosts: Sequence[str]
    manage: bool
    #: (namespace, name) when editing an existing token
    editing: tuple[str, str] | None = None


def manifest_yaml(manifest: Mapping[str, object]) -> str:
    """The manifest as a person would commit it."""
    return yaml.safe_dump(dict(manifest), sort_keys=False, default_flow_style=False)


def _errors(errors: Mapping[str, list[str]], name: str) -> str:
    return "".join(f'<p class="field-error" id="err-{name}">{escape(m)}</p>' for m in errors.get(name, ()))


def _aria(errors: Mapping[str, list[str]], name: str) -> str:
    hint = f"hint-{name}"
    if name in errors:
        return f' aria-invalid="true" aria-describedby="err-{name} {hint}"'
    return f' aria-describedby="{hint}"'


def _input(name: str, label: str, value: str, hint: str, errors: Mapping[str, list[str]], **attrs: str) -> str:
    kind = attrs.pop("type", "text")
    extra = "".join(f' {k.replace("_", "-")}="{escape(v)}"' for k, v in attrs.items())
    return (
        f'<div class="field"><label for="f-{name}">{escape(label)}</label>{_errors(errors, name)}'
        f'<input id="f-{name}" name="{name}" type="{kind}" value="{escape(value)}"{_aria(errors, name)}{extra}>'
        f'<span class="hint" id="hint-{name}">{hint}</span></div>'
    )


def _namespace_field(form: TokenForm, ctx: FormContext, errors: Mapping[str, list[str]]) -> str:
    if ctx.editing:
        return f'<input type="hidden" name="namespace" value="{escape(form.namespace)}">'
    if not ctx.namespaces:
        return _input("namespace", "Namespace", form.namespace, "Where the token and its Secrets live.", errors)
    options = "".join(
        f"<option{' selected' if ns == form.namespace else ''}>{escape(ns)}</option>" for ns in ctx.namespaces
    )
    return (
        f'<div class="field"><label for="f-namespace">Namespace</label>{_errors(errors, "namespace")}'
        f'<select id="f-namespace" name="namespace"{_aria(errors, "namespace")}>{options}</select>'
        '<span class="hint" id="hint-namespace">The namespaces this service serves.</span></div>'
    )


def _flow_field(form: TokenForm, errors: Mapping[str, list[str]]) -> str:
    choices = []
    for flow, why in FLOWS.get(form.provider, ()):
        checked = " checked" if flow == form.flow else ""
        choices.append(
            f'<label class="choice"><input type="radio" name="flow" value="{flow}"{checked}> '
            f'<strong>{flow}</strong><span class="hint">{escape(why)}</span></label>'
        )
    return f"<fieldset><legend>Flow</legend>{_errors(errors, 'flow')}{''.join(choices)}</fieldset>"


def _services_field(form: TokenForm, errors: Mapping[str, list[str]]) -> str:
    app_flow = "ClientCredentials" if form.provider == "Microsoft" else "ServiceAccount"
    boxes = []
    for service, delegated, app_only in service_scopes(form.provider):
        checked = " checked" if service in form.services else ""
        boxes.append(
            f'<label class="choice"><input type="checkbox" name="services" value="{escape(service)}"{checked}> '
            f'<strong>{escape(service)}</strong><span class="hint">requests <code>{escape(delegated)}</code>'
            + (f"; with {app_flow}: <code>{escape(app_only)}</code>" if app_only != delegated else "")
            + "</span></label>"
        )
    added = ", ".join(
        f"{flow}: <code>{escape(' '.join(auto))}</code>"
        for flow, _ in FLOWS.get(form.provider, ())
        if (auto := auto_scopes(form.provider, flow))
    )
    note = f'<p class="hint">Added by the operator itself: {added}.</p>' if added else ""
    scopes = (
        f'<div class="field"><label for="f-scopes">Other scopes</label>{_errors(errors, "scopes")}'
        f'<textarea id="f-scopes" name="scopes"{_aria(errors, "scopes")}>{escape(form.scopes)}</textarea>'
        '<span class="hint" id="hint-scopes">Exact scope strings, one per line, for access the services do not '
        "cover.</span></div>"
    )
    return f"<fieldset><legend>Services</legend>{_errors(errors, 'services')}{''.join(boxes)}{note}{scopes}</fieldset>"


def _credential_fields(form: TokenForm, ctx: FormContext, errors: Mapping[str, list[str]]) -> str:
    keep = " Leave empty to keep the current one." if ctx.editing else ""
    never = "Never shown again, never put into the manifest."
    secret = _input(
        "clientSecret",
        "Client secret",
        "",
        f"For AuthorizationCode and ClientCredentials; stored in Secret <code>{escape(form.credential_secret)}"
        f"</code> by Create now. {never}{keep}",
        errors,
        type="password",
        autocomplete="off",
    )
    if form.provider != "Google":
        return secret
    key = (
        f'<div class="field"><label for="f-serviceAccountKey">Service-account key file</label>'
        f'{_errors(errors, "serviceAccountKey")}<input id="f-serviceAccountKey" name="serviceAccountKey" '
        f'type="file" accept=".json,application/json"{_aria(errors, "serviceAccountKey")}>'
        f'<span class="hint" id="hint-serviceAccountKey">For ServiceAccount: the JSON key from Google Cloud. '
        f"{never}{keep}</span></div>"
    )
    return secret + key


def _endpoint_fields(form: TokenForm, ctx: FormContext, errors: Mapping[str, list[str]]) -> str:
    hosts = ", ".join(f"<code>{escape(h)}</code>" for h in ctx.provider_hosts)
    tenant = f" <code>{escape(TENANT)}</code> is replaced by the tenant ID." if form.provider == "Microsoft" else ""
    hint = f"Prefilled with {escape(form.provider)}'s default.{tenant} Allowed hosts: {hosts}."
    return (
        "<fieldset><legend>Endpoints</legend>"
        + _input("authorizationUrl", "Authorization URL", form.authorization_url, hint, errors)
        + _input("tokenUrl", "Access token URL", form.token_url, hint, errors)
        + "</fieldset>"
    )


def _select(name: str, label: str, options: Sequence[tuple[str, str]], value: str) -> str:
    choices = "".join(
        f'<option value="{escape(v)}"{" selected" if v == value else ""}>{escape(text)}</option>' for v, text in options
    )
    return (
        f'<div class="field"><label for="f-{name}">{escape(label)}</label>'
        f'<select id="f-{name}" name="{name}">{choices}</select></div>'
    )


def _probe_fields(form: TokenForm, errors: Mapping[str, list[str]]) -> str:
    """``spec.loginProbe`` (optional): the operator logs in with each new token, as a mail task would."""
    protocols = [("", "none"), ("IMAP", "IMAP"), ("POP3", "POP3"), ("SMTP", "SMTP")]
    tls = [(v, {"": "SSL (default)", "None": "None (127.0.0.1 or localhost only)"}.get(v, v)) for v in PROBE_TLS]
    server_hint = "HOST or HOST:PORT, e.g. <code>outlook.office365.com:993</code> or <code>imap.gmail.com</code>."
    return (
        f'<fieldset id="f-loginProbe"><legend>Login probe (optional)</legend>{_errors(errors, "loginProbe")}'
        '<p class="hint">After each new token the operator logs in to this mail server and shows the outcome '
        "in the condition MailLogin; it connects only to the mail hosts its installer allows.</p>"
        + _select("probeProtocol", "Protocol", protocols, form.probe_protocol)
        + _input("probeServer", "Mail server", form.probe_server, server_hint, {})
        + _select("probeTls", "TLS", tls, form.probe_tls)
        + "</fieldset>"
    )


def _identity_fields(form: TokenForm, ctx: FormContext, errors: Mapping[str, list[str]]) -> str:
    name_hint = (
        "Recommended: the mailbox address with <code>@</code> and dots as dashes (e.g. <code>support-contoso-com"
        "</code>); lower-case letters, digits and dashes."
    )
    parts = [_namespace_field(form, ctx, errors)]
    if ctx.editing:
        parts.append(f'<input type="hidden" name="name" value="{escape(form.name)}">')
    else:
        parts.append(_input("name", "Email token name", form.name, name_hint, errors))
    parts.append(
        _input(
            "emailAddress",
            "Email address",
            form.email_address,
            "The mailbox. Sign-ins as another account are refused; app-only flows open this mailbox.",
            errors,
            type="email",
        )
    )
    if form.provider == "Microsoft":
        parts.append(_input("tenantId", "Tenant ID", form.tenant_id, "The directory ID or a verified domain.", errors))
    parts.append(_input("clientId", "Client ID", form.client_id, "The app's (client) ID.", errors))
    return "".join(parts)


def _buttons(ctx: FormContext) -> str:
    buttons = ['<button type="submit" name="action" value="check" class="secondary">Check</button>']
    buttons.append('<button type="submit" name="action" value="download" class="secondary">Download manifest</button>')
    if ctx.manage:
        label = "Save" if ctx.editing else "Create now"
        buttons.append(
            f'<button type="submit" name="action" value="{"save" if ctx.editing else "create"}">{label}</button>'
        )
    note = (
        ""
        if ctx.manage
        else '<p class="muted">Create now is off in this installation (Helm <code>callback.manageTokens.enabled'
        "</code>): take the manifest to Git.</p>"
    )
    return f'<div class="buttons">{"".join(buttons)}</div>{note}'


def form_html(form: TokenForm, ctx: FormContext, errors: Mapping[str, list[str]]) -> str:
    """The form itself (values kept, secret fields empty)."""
    target = path_of("tokens", *ctx.editing, "edit") if ctx.editing else "/new"
    return (
        f'<form method="post" action="{escape(target)}" enctype="multipart/form-data" novalidate>'
        f'<input type="hidden" name="csrf" value="{escape(ctx.csrf_token)}">'
        f'<input type="hidden" name="provider" value="{escape(form.provider)}">'
        + _identity_fields(form, ctx, errors)
        + _credential_fields(form, ctx, errors)
        + _flow_field(form, errors)
        + _services_field(form, errors)
        + _endpoint_fields(form, ctx, errors)
        + _input(
            "secretName",
            "Consumer Secret name",
            form.secret_name,
            "The Secret mail tasks mount; empty means the token's name.",
            errors,
        )
        + _probe_fields(form, errors)
        + _buttons(ctx)
        + "</form>"
    )


def _provider_switch(form: TokenForm, ctx: FormContext) -> str:
    if ctx.editing:
        return f"<p>Provider: <strong>{escape(form.provider)}</strong> (fixed once created)</p>"
    links = []
    for provider in PROVIDERS:
        current = ' aria-current="page"' if provider == form.provider else ""
        links.append(
            f'<li><a href="/new?provider={provider}"{current}>{provider}</a>: {escape(PROVIDER_HELP[provider])}</li>'
        )
    return f'<nav aria-label="Provider"><p>Email token type:</p><ul>{"".join(links)}</ul></nav>'


def _summary(errors: Mapping[str, list[str]]) -> str:
    if not errors:
        return ""
    items = "".join(
        f'<li><a href="#f-{name}">{escape(name)}</a>: {escape("; ".join(errors[name]))}</li>'
        for name in (*FIELDS, "form")
        if name in errors
    )
    return f'<div class="error" role="alert"><p>Please fix these fields:</p><ul>{items}</ul></div>'


def _result(checked: Checked, secret_given: bool) -> str:
    form = checked.form
    text = manifest_yaml(checked.manifest)
    scopes = " ".join(checked.expanded_scopes)
    command = credential_command(form) if form.needs_credential else ""
    parts = [
        '<section aria-labelledby="result-heading" class="success"><h2 id="result-heading">The manifest is valid'
        "</h2><p>It requests <code>" + escape(scopes) + "</code>. Commit it to Git, or use Create now.</p>",
        '<div class="copy"><label class="visually-hidden" for="manifest">EmailToken manifest</label>'
        f'<textarea id="manifest" class="manifest" readonly>{escape(text)}</textarea>'
        '<button type="button" class="secondary" data-copy="manifest" hidden>Copy manifest</button>'
        '<span id="manifest-status" role="status" aria-live="polite"></span></div>',
    ]
    if command:
        parts.append(
            "<p>Create the credential Secret from your shell, not from Git (the value is read from the "
            "terminal; the page never shows it):</p>"
            '<div class="copy"><label class="visually-hidden" for="secret-command">kubectl command</label>'
            f'<input id="secret-command" type="text" readonly value="{escape(command)}">'
            '<button type="button" class="secondary" data-copy="secret-command" hidden>Copy command</button>'
            '<span id="secret-command-status" role="status" aria-live="polite"></span></div>'
        )
    if secret_given:
        parts.append('<p class="muted">The secret you typed was not kept: enter it again for Create now.</p>')
    parts.append("</section>")
    return "".join(parts)


def token_form_page(
    checked: Checked | None, form: TokenForm, ctx: FormContext, *, secret_given: bool = False, notice: str = ""
) -> str:
    """The form page: errors beside their fields, or the manifest and the kubectl command when valid."""
    errors = checked.errors if checked else {}
    top = [_provider_switch(form, ctx), _summary(errors)]
    if notice:
        top.append(f'<p class="error" role="alert">{escape(notice)}</p>')
    if checked and checked.ok:
        top.append(_result(checked, secret_given and ctx.manage))
    top.append(form_html(form, ctx, errors))
    top.append('<p><a href="/">Back to all tokens</a></p>')
    title = f"Edit EmailToken {form.namespace}/{form.name}" if ctx.editing else "Add a new email token"
    return layout(title, "".join(top), script=True)


def delete_page(
    namespace: str, name: str, *, consumer_secret: str, credential_secret: str | None, csrf_token: str
) -> str:
    """The confirmation before a delete: what goes with the token, and which mail tasks notice.

    ``credential_secret``: the client-secret or key Secret the token owns, None when it owns none
    (a DeviceCode token, or one whose Secret is gone): only what really goes is named.
    """
    key = f"{namespace}/{name}"
    credential = (
        f" and the credential Secret <code>{escape(credential_secret)}</code> go too"
        if credential_secret
        else " goes too"
    )
    body = (
        f'<p class="error">Deleting EmailToken <code>{escape(key)}</code> also deletes Secret '
        f"<code>{escape(consumer_secret)}</code>, which mail tasks mount: they lose their access token. "
        f"Its sign-in (grant){credential}.</p>"
        f'<form method="post" action="{escape(path_of("tokens", namespace, name, "delete"))}">'
        f'<input type="hidden" name="csrf" value="{escape(csrf_token)}">'
        f'<div class="buttons"><button type="submit">Delete {escape(key)} and Secret {escape(consumer_secret)}'
        '</button><a href="/">Cancel</a></div></form>'
    )
    return layout(f"Delete EmailToken {key}?", body)


def done_page(title: str, message: str) -> str:
    """After a delete."""
    return layout(
        title, f'<p class="success" role="status">{escape(message)}</p><p><a href="/">Back to all tokens</a></p>'
    )

"""The "Add a new email token" form as data: what a person typed -> an EmailToken manifest, or errors per field.

Pure (no HTTP, no Kubernetes client). The rules are not restated here: the manifest the
form describes is judged by :func:`emailtoken.validate.check_object` (the CRD's schema, its
CEL rules from :mod:`emailtoken.specrules`, then :func:`emailtoken.model.parse_spec`),
and the endpoints by :mod:`emailtoken.endpoints` (the hosts the installer allows). This
module only maps each problem back to the form field it is about.

Secret values (client secret, service-account key) travel in :class:`Credential` only:
they never go into the manifest, the kubectl command or any text the page shows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from emailtoken import endpoints, scopes, validate
from emailtoken.api import API_VERSION, KIND
from emailtoken.model import (
    DEFAULT_CLIENT_SECRET_KEY,
    DEFAULT_SA_KEY,
    GOOGLE_AUTHORIZATION_URL,
    GOOGLE_TOKEN_URL,
    MICROSOFT_AUTHORITY,
    MICROSOFT_TOKEN_SUFFIX,
    PROVIDERS,
    SpecError,
    parse_spec,
)

#: The placeholder in the Microsoft endpoint fields, replaced by the tenant.
TENANT = "{tenantId}"
MICROSOFT_TOKEN_TEMPLATE = MICROSOFT_AUTHORITY.format(tenant=TENANT) + MICROSOFT_TOKEN_SUFFIX
MICROSOFT_AUTHORIZE_TEMPLATE = MICROSOFT_TOKEN_TEMPLATE[: -len("/token")] + "/authorize"

#: Flows per provider, each with the sentence that says when to pick it.
FLOWS: dict[str, tuple[tuple[str, str], ...]] = {
    "Microsoft": (
        (
            "AuthorizationCode",
            "A person signs in once in the browser (Get Email Token) as the mailbox; the operator then "
            "refreshes the token. Pick this for delegated access to one mailbox; it needs a client secret "
            "and this service's redirect URI registered on the app.",
        ),
        (
            "DeviceCode",
            "A person signs in on any device by typing a short code; pick it when no redirect URI can be "
            "registered. The app must allow public client flows; no client secret is used.",
        ),
        (
            "ClientCredentials",
            "App-only, nobody signs in: the app's admin-consented application permissions open the "
            "mailbox. Pick it for daemons when Exchange Online grants the app access to the mailbox.",
        ),
    ),
    "Google": (
        (
            "AuthorizationCode",
            "A person signs in once in the browser (Get Email Token) as the mailbox; the operator then "
            "refreshes the token. Pick this for one Gmail or Workspace mailbox.",
        ),
        (
            "ServiceAccount",
            "App-only, nobody signs in: a service account with domain-wide delegation acts as the mailbox. "
            "Pick it in Google Workspace when an administrator delegated the Gmail scope to it.",
        ),
    ),
}
PROVIDER_HELP = {
    "Microsoft": "Microsoft 365 / Exchange Online mailboxes, through an app registration in Entra ID.",
    "Google": "Gmail and Google Workspace mailboxes, through an OAuth client in Google Cloud.",
}
#: Form fields in page order; every error lands on one of them (or on "form").
FIELDS = (
    "namespace",
    "name",
    "provider",
    "flow",
    "services",
    "scopes",
    "tenantId",
    "clientId",
    "clientSecret",
    "serviceAccountKey",
    "emailAddress",
    "authorizationUrl",
    "tokenUrl",
    "secretName",
    "loginProbe",
)
_SPEC_TO_FIELD = {"clientSecretRef": "clientSecret", "serviceAccountKeyRef": "serviceAccountKey"}
#: ``spec.loginProbe.tls`` choices; "" is the CRD's default (SSL), left out of the manifest.
PROBE_TLS = ("", "STARTTLS", "None")
#: What a schema pattern means, per field, instead of the regular expression.
_FORMATS = {
    "emailAddress": "must be an email address, like support@contoso.com",
    "secretName": "must be a Kubernetes name: lower-case letters, digits, '-' and '.'",
    "name": "must be a Kubernetes name: lower-case letters, digits and '-'",
    "loginProbe": "the mail server must be HOST or HOST:PORT, like outlook.office365.com:993",
}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_SPLIT = re.compile(r"[\s,]+")


@dataclass(frozen=True)
class TokenForm:
    """What the form says, secrets excluded (safe to render back into the page)."""

    namespace: str = ""
    name: str = ""
    provider: str = "Microsoft"
    flow: str = "AuthorizationCode"
    services: tuple[str, ...] = ()
    scopes: str = ""
    tenant_id: str = ""
    client_id: str = ""
    email_address: str = ""
    authorization_url: str = ""
    token_url: str = ""
    secret_name: str = ""
    #: ``spec.loginProbe``: protocol ("" for no probe), server, tls ("" for the default, SSL)
    probe_protocol: str = ""
    probe_server: str = ""
    probe_tls: str = ""

    @property
    def credential_secret(self) -> str:
        """The Secret that holds the client secret or key: ``<name>-oauth-client`` (not the consumer Secret).

        A name that is not valid yet (reported on its own field) gives a placeholder, so the
        same mistake is not reported again on the secret's field.
        """
        return f"{self.name if _DNS_LABEL.match(self.name) else 'token'}-oauth-client"

    @property
    def credential_key(self) -> str:
        """The key in that Secret the spec points to."""
        return DEFAULT_SA_KEY if self.flow == "ServiceAccount" else DEFAULT_CLIENT_SECRET_KEY

    @property
    def credential_field(self) -> str:
        """The form field the secret value comes from (where its errors are shown)."""
        return "serviceAccountKey" if self.flow == "ServiceAccount" else "clientSecret"

    @property
    def needs_credential(self) -> bool:
        """True when the flow authenticates the app with a client secret or a key file."""
        return self.flow in ("AuthorizationCode", "ClientCredentials", "ServiceAccount")


@dataclass(frozen=True)
class Credential:
    """A secret value from the form (never rendered, never logged)."""

    value: str = field(default="", repr=False)


@dataclass(frozen=True)
class Checked:
    """The outcome of checking a form: the manifest, or the errors per field."""

    form: TokenForm
    manifest: dict[str, Any]
    errors: dict[str, list[str]]
    #: the scopes the token will request, as the operator expands them (when valid)
    expanded_scopes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when there is nothing to fix."""
        return not self.errors


def default_endpoints(provider: str) -> tuple[str, str]:
    """(authorization URL, token URL) the form is prefilled with; Microsoft's carry ``{tenantId}``."""
    if provider == "Microsoft":
        return MICROSOFT_AUTHORIZE_TEMPLATE, MICROSOFT_TOKEN_TEMPLATE
    return GOOGLE_AUTHORIZATION_URL, GOOGLE_TOKEN_URL


def new_form(provider: str, namespace: str = "") -> TokenForm:
    """An empty form for a provider, endpoints prefilled with its defaults."""
    provider = provider if provider in PROVIDERS else "Microsoft"
    auth, token = default_endpoints(provider)
    first_service = next(iter(scopes.services_for(provider)))
    return TokenForm(
        namespace=namespace,
        provider=provider,
        services=(first_service,),
        authorization_url=auth,
        token_url=token,
    )


def service_scopes(provider: str) -> list[tuple[str, str, str]]:
    """(service, delegated scope, app-only scope) per service: what each checkbox expands to."""
    app_flow = "ClientCredentials" if provider == "Microsoft" else "ServiceAccount"
    rows = []
    for service in scopes.services_for(provider):
        delegated = scopes.expand(provider, "DeviceCode", [service], [])[0]
        app_only = scopes.expand(provider, app_flow, [service], [])[0]
        rows.append((service, delegated, app_only))
    return rows


def auto_scopes(provider: str, flow: str) -> list[str]:
    """The scopes the operator adds by itself for a flow (offline access, identity)."""
    return [s for s in scopes.expand(provider, flow, [], ["x"]) if s != "x"]


def _text(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    return value.strip() if isinstance(value, str) else ""


def form_of(data: Mapping[str, Any], services: Iterable[str]) -> TokenForm:
    """The form from posted fields (``services``: every checked box)."""
    return TokenForm(
        namespace=_text(data, "namespace"),
        name=_text(data, "name"),
        provider=_text(data, "provider"),
        flow=_text(data, "flow") or "AuthorizationCode",
        services=tuple(dict.fromkeys(s.strip() for s in services if s.strip())),
        scopes=_text(data, "scopes"),
        tenant_id=_text(data, "tenantId"),
        client_id=_text(data, "clientId"),
        email_address=_text(data, "emailAddress"),
        authorization_url=_text(data, "authorizationUrl"),
        token_url=_text(data, "tokenUrl"),
        secret_name=_text(data, "secretName"),
        probe_protocol=_text(data, "probeProtocol"),
        probe_server=_text(data, "probeServer"),
        probe_tls=_text(data, "probeTls"),
    )


def form_of_object(obj: Mapping[str, Any]) -> TokenForm:
    """The form for editing an existing EmailToken (defaults shown as the prefilled values)."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    provider = str(spec.get("provider") or "Microsoft")
    auth, token = default_endpoints(provider)
    probe = spec.get("loginProbe") or {}
    return TokenForm(
        probe_protocol=str(probe.get("protocol") or ""),
        probe_server=str(probe.get("server") or ""),
        probe_tls="" if probe.get("tls") in (None, "SSL") else str(probe["tls"]),
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        provider=provider,
        flow=str(spec.get("flow") or "AuthorizationCode"),
        services=tuple(str(s) for s in spec.get("services") or ()),
        scopes="\n".join(str(s) for s in spec.get("scopes") or ()),
        tenant_id=str(spec.get("tenantId") or ""),
        client_id=str(spec.get("clientId") or ""),
        email_address=str(spec.get("emailAddress") or ""),
        authorization_url=str(spec.get("authorizationUrl") or auth),
        token_url=str(spec.get("tokenUrl") or token),
        secret_name=str(spec.get("secretName") or ""),
    )


def _endpoint(value: str, tenant: str, default: str) -> str | None:
    """The URL for the spec, or None when it is the provider's default (left out of the manifest)."""
    url = value.replace(TENANT, tenant) if value else ""
    return None if not url or url == default.replace(TENANT, tenant) else url


def manifest_of(form: TokenForm) -> dict[str, Any]:
    """The EmailToken the form describes: only what differs from the defaults, no secret value."""
    spec: dict[str, Any] = {"provider": form.provider}
    if form.flow != "AuthorizationCode":
        spec["flow"] = form.flow
    optional = {"tenantId": form.tenant_id, "clientId": form.client_id, "emailAddress": form.email_address}
    spec.update({k: v for k, v in optional.items() if v})
    if form.needs_credential:
        ref = {"name": form.credential_secret, "key": form.credential_key}
        spec["serviceAccountKeyRef" if form.flow == "ServiceAccount" else "clientSecretRef"] = ref
    if form.services:
        spec["services"] = list(form.services)
    extra = [s for s in _SPLIT.split(form.scopes) if s]
    if extra:
        spec["scopes"] = extra
    auth_default, token_default = default_endpoints(form.provider)
    for key, value, default in (
        ("authorizationUrl", form.authorization_url, auth_default),
        ("tokenUrl", form.token_url, token_default),
    ):
        url = _endpoint(value, form.tenant_id, default)
        if url:
            spec[key] = url
    if form.secret_name and form.secret_name != form.name:
        spec["secretName"] = form.secret_name
    if form.probe_protocol or form.probe_server:
        probe = {"protocol": form.probe_protocol, "server": form.probe_server, "tls": form.probe_tls}
        spec["loginProbe"] = {k: v for k, v in probe.items() if v}
    metadata = {"name": form.name, "namespace": form.namespace}
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}


def _field_of(path: str, message: str) -> str:
    """The form field a problem of ``validate.check_object`` is about."""
    if path.startswith("metadata"):
        return "name"
    head = re.split(r"[.\[]", path.removeprefix("spec."), maxsplit=1)[0]
    if head and head != "spec":
        return _SPEC_TO_FIELD.get(head, head if head in FIELDS else "form")
    # parse_spec's own checks name the field in the message
    for name in ("secretName", "tokenUrl", "authorizationUrl", "refreshBefore", "loginProbe"):
        if name in message:
            return name
    return "services" if "scope" in message or "service" in message else "form"


def _add(errors: dict[str, list[str]], name: str, message: str) -> None:
    if message not in errors.setdefault(name, []):
        errors[name].append(message)


def _own_checks(form: TokenForm, namespaces: Sequence[str], errors: dict[str, list[str]]) -> None:
    """What the CRD cannot know: the namespaces this service serves, the name's shape."""
    if not form.namespace:
        _add(errors, "namespace", "choose a namespace")
    elif namespaces and form.namespace not in namespaces:
        _add(errors, "namespace", f"this service serves only {', '.join(namespaces)}")
    elif not _DNS_LABEL.match(form.namespace):
        _add(errors, "namespace", "a namespace name: lower-case letters, digits and '-', at most 63")
    if form.name and (len(form.name) > 63 - len("-oauth-client") or not _DNS_LABEL.match(form.name)):
        _add(errors, "name", f"lower-case letters, digits and '-', at most {63 - len('-oauth-client')} characters")
    if form.provider not in PROVIDERS:
        _add(errors, "provider", f"choose {' or '.join(PROVIDERS)}")
    elif form.flow not in dict(FLOWS[form.provider]):
        _add(errors, "flow", f"for {form.provider} choose {', '.join(dict(FLOWS[form.provider]))}")


def _endpoint_checks(manifest: Mapping[str, Any], hosts: Sequence[str], errors: dict[str, list[str]]) -> None:
    spec = manifest["spec"]
    for key in ("authorizationUrl", "tokenUrl"):
        url = spec.get(key)
        if url and TENANT in url:
            _add(errors, key, "fill in the tenant ID first: it replaces {tenantId}")
        elif url and not endpoints.allowed(url, hosts):
            allowed = ", ".join(hosts)
            _add(errors, key, f"must be https:// on a host this installation allows ({allowed})")


def check(form: TokenForm, *, namespaces: Sequence[str], provider_hosts: Sequence[str]) -> Checked:
    """Judge the form with the CRD's rules and the operator's checks; errors keyed by form field."""
    errors: dict[str, list[str]] = {}
    _own_checks(form, namespaces, errors)
    manifest = manifest_of(form)
    if form.provider in PROVIDERS:
        for problem in validate.check_object(manifest):
            name = _field_of(problem.field, problem.message)
            message = problem.message
            if "does not match" in message:  # a schema pattern: say it in words
                message = _FORMATS.get(name, "must not contain spaces or other unexpected characters")
            _add(errors, name, message)
        _endpoint_checks(manifest, provider_hosts, errors)
    expanded: tuple[str, ...] = ()
    if not errors:
        try:
            expanded = parse_spec(manifest["spec"], form.name).scopes
        except SpecError as exc:  # validate.check_object ran parse_spec already; kept for safety
            _add(errors, "form", str(exc))
    return Checked(form=form, manifest=manifest, errors=errors, expanded_scopes=expanded)


def credential_problem(form: TokenForm, credential: Credential, *, required: bool) -> str | None:
    """Why the secret value cannot be stored (None when fine); ``required`` for a new token."""
    if not credential.value:
        if required and form.needs_credential:
            what = "the service-account key file" if form.flow == "ServiceAccount" else "the client secret"
            return f"{what} is needed to create the token now"
        return None
    if not form.needs_credential:
        return f"flow {form.flow} uses no client secret; leave it empty"
    if form.flow == "ServiceAccount":
        try:
            key = json.loads(credential.value)
        except ValueError:
            return "not a JSON key file"
        if not isinstance(key, dict) or key.get("type") != "service_account" or "private_key" not in key:
            return "not a service-account key (a JSON file with type service_account and a private_key)"
    elif len(credential.value) > 1024 or any(c in credential.value for c in "\r\n"):
        return "a client secret is one line of at most 1024 characters"
    return None


def with_errors(checked: Checked, extra: Mapping[str, str | None]) -> Checked:
    """The same outcome with more errors (e.g. the secret value's) added."""
    errors = {k: list(v) for k, v in checked.errors.items()}
    for name, message in extra.items():
        if message:
            _add(errors, name, message)
    return replace(checked, errors=errors)


def credential_command(form: TokenForm) -> str:
    """The kubectl command that makes the credential Secret; the value comes from the shell, never the page.

    The client secret is read from the terminal and piped in by ``printf`` (a shell builtin),
    so it appears in no process's argv (``ps``), no shell history and no file.
    """
    target = f"kubectl create secret generic {form.credential_secret} -n {form.namespace}"
    if form.flow == "ServiceAccount":
        return f"{target} --from-file={form.credential_key}=./service-account-key.json"
    return (
        f'read -rs CLIENT_SECRET && printf %s "$CLIENT_SECRET" | {target} --from-file={form.credential_key}=/dev/stdin'
    )

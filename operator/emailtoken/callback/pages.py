"""HTML of every page the callback service shows: self-contained, escaped, accessible.

No external assets (clusters are often offline): one inline style sheet and one inline
script (the copy button), both allowed by their SHA-256 in the Content-Security-Policy,
so ``default-src 'none'`` holds and no other inline code can run. Every page works
without JavaScript; the copy button only appears when the script runs.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from datetime import datetime
from html import escape
from urllib.parse import quote

from emailtoken.callback.tokens import Action, TokenRow, Tone, relative
from emailtoken.timefmt import rfc3339

STYLE = """
:root{color-scheme:light;--fg:#1b1b1b;--muted:#4a4a4a;--line:#c9c9c9;--accent:#0b57d0;--bg:#fff}
*{box-sizing:border-box}
body{font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg);margin:0}
header,main,footer{max-width:100rem;margin:0 auto;padding:0 1.25rem}
header{border-bottom:1px solid var(--line);padding-top:.75rem;padding-bottom:.25rem}
h1{font-size:1.5rem;margin:.25rem 0}h2{font-size:1.15rem;margin:1.25rem 0 .5rem}
p{margin:.5rem 0}.muted{color:var(--muted);font-size:.9rem}
a{color:var(--accent)}
a:focus-visible,button:focus-visible,input:focus-visible{outline:3px solid #1a73e8;outline-offset:2px}
code{font:.9rem ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;overflow-wrap:anywhere}
.table-wrap{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:.82rem}
caption{text-align:left;color:var(--muted);padding:.25rem 0}
th,td{border-bottom:1px solid var(--line);padding:.45rem .3rem;text-align:left;vertical-align:top}
thead th{background:#f3f3f3;font-weight:600}tbody th{font-weight:600}
.nowrap{white-space:nowrap}td.time{min-width:6.5rem}td.action{min-width:9rem}
.state{display:inline-block;padding:.05rem .5rem;border-radius:.75rem;font-weight:600;font-size:.85rem}
.ok{background:#e6f4ea;color:#0b5a27}.wait{background:#fff4e0;color:#6b4100}.bad{background:#fdecee;color:#8f0017}
.detail{display:block;color:var(--muted);font-size:.78rem;max-width:16rem}
button,.button{font:inherit;font-size:.88rem;padding:.35rem .75rem;border-radius:.3rem;border:1px solid var(--accent);
background:var(--accent);color:#fff;cursor:pointer;text-decoration:none;display:inline-block;white-space:nowrap}
button.secondary{background:#fff;color:var(--accent)}
form{margin:0}
.copy{display:flex;gap:.5rem;align-items:center;flex-wrap:wrap}
.copy input{flex:1 1 28rem;font:.95rem ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;padding:.4rem;
border:1px solid var(--line);border-radius:.3rem;color:var(--fg);background:#fafafa}
.notice{border-left:4px solid var(--accent);background:#eef3fd;padding:.6rem .8rem;margin:1rem 0}
.error{border-left:4px solid #8f0017;background:#fdecee;padding:.6rem .8rem;margin:1rem 0}
.success{border-left:4px solid #0b5a27;background:#e6f4ea;padding:.6rem .8rem;margin:1rem 0}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1rem}dt{font-weight:600}dd{margin:0}
fieldset{border:1px solid var(--line);border-radius:.4rem;margin:1rem 0;padding:.5rem 1rem}
legend{font-weight:600;padding:0 .3rem}
.field{margin:.8rem 0}.field label,.field .label{display:block;font-weight:600}
.field input[type=text],.field input[type=password],.field input[type=email],.field select,.field textarea{
width:100%;max-width:48rem;font:inherit;padding:.35rem;border:1px solid var(--line);border-radius:.3rem}
.field textarea{min-height:4rem}
.hint{display:block;color:var(--muted);font-size:.85rem}
.field-error{color:#8f0017;font-weight:600;margin:.2rem 0}
[aria-invalid=true]{border-color:#8f0017!important;outline:1px solid #8f0017}
.choice{display:block;margin:.35rem 0}.choice .hint{margin-left:1.6rem}
.buttons{display:flex;gap:.6rem;flex-wrap:wrap;margin:1rem 0}
textarea.manifest{width:100%;min-height:16rem;font:.85rem ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.visually-hidden{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
.toolbar{display:flex;gap:1rem;align-items:center;flex-wrap:wrap;margin:.5rem 0}
.row-actions{display:flex;gap:.4rem;flex-wrap:wrap;margin-top:.4rem}
@media (max-width:64rem){
.tokens table,.tokens tbody,.tokens tr,.tokens th,.tokens td{display:block}
.tokens thead{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}
.tokens tr{border:1px solid var(--line);border-radius:.4rem;margin:.6rem 0;padding:.3rem .6rem}
.tokens th,.tokens td{border:0;padding:.2rem 0}
.tokens caption{display:block}
.tokens td[data-label]::before{content:attr(data-label) ": ";font-weight:600}
}
"""

SCRIPT = """
for (const b of document.querySelectorAll('button[data-copy]')) {
  const field = document.getElementById(b.dataset.copy);
  const note = document.getElementById(b.dataset.copy + '-status');
  b.hidden = false;
  b.addEventListener('click', () => {
    const done = () => { note.textContent = 'Copied to the clipboard.'; };
    const manual = () => { field.select(); note.textContent = 'Selected: press Ctrl+C (or Cmd+C) to copy.'; };
    if (navigator.clipboard) { navigator.clipboard.writeText(field.value).then(done, manual); } else { manual(); }
  });
}
"""


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


#: Content-Security-Policy of every page. ``form-action`` allows https targets because the
#: "Get Email Token" POST answers 303 to the provider, and Chromium applies form-action to
#: that redirect; provider authorization URLs are https by construction (model.parse_spec).
CSP = (
    f"default-src 'none'; style-src {_sha256(STYLE)}; script-src {_sha256(SCRIPT)}; "
    "img-src 'none'; form-action 'self' https:; frame-ancestors 'none'; base-uri 'none'"
)


def layout(title: str, body: str, *, script: bool = False, subtitle: str = "") -> str:
    sub = f'<p class="muted">{escape(subtitle)}</p>' if subtitle else ""
    js = f"<script>{SCRIPT}</script>" if script else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{escape(title)} · emailtoken</title><style>{STYLE}</style></head>"
        f'<body><header><p class="muted">emailtoken-operator</p><h1>{escape(title)}</h1>{sub}</header>'
        f"<main>{body}</main>{js}</body></html>\n"
    )


_ANY_ACCOUNT = '<span class="muted">any account</span>'


def _when(moment: datetime | None, now: datetime, *, inline: bool = False) -> str:
    if moment is None:
        return '<span class="muted">&ndash;</span>'
    shown = escape(rfc3339(moment).replace("T", " "))
    rel = escape(relative(moment, now))
    if inline:
        return f'<time datetime="{rfc3339(moment)}">{shown}</time> ({rel})'
    return f'<time datetime="{rfc3339(moment)}">{shown}</time><span class="detail">{rel}</span>'


def path_of(*parts: str) -> str:
    return "/" + "/".join(quote(p, safe="") for p in parts)


def sign_in_form(row: TokenRow, csrf_token: str, *, label: str | None = None) -> str:
    """The POST form behind "Get Email Token" / "Re-authorize"."""
    text = label or row.action.value
    return (
        f'<form method="post" action="{escape(path_of("tokens", row.namespace, row.name, "authorize"))}">'
        f'<input type="hidden" name="csrf" value="{escape(csrf_token)}">'
        f'<button type="submit" aria-label="{escape(text)} for {escape(row.key)}">{escape(text)}</button></form>'
    )


def _action_cell(row: TokenRow, csrf_token: str) -> str:
    if row.can_sign_in:
        return sign_in_form(row, csrf_token)
    if row.action is Action.DEVICE_CODE and row.device_code:
        uri = str(row.device_code.get("verificationUri", ""))
        shown = escape(uri)
        where = f'<a href="{shown}" rel="noreferrer noopener">{shown}</a>' if uri.startswith("https://") else shown
        return f"Open {where} and enter <code>{escape(str(row.device_code.get('userCode', '')))}</code>"
    return f'<span class="muted">{escape(row.action.value)}</span>'


def _state_cell(row: TokenRow) -> str:
    """Phase first; when something needs attention, the condition reasons and message too."""
    badge = f'<span class="state {row.tone.value}">{escape(row.phase)}</span>'
    if row.tone is Tone.OK:
        return badge
    reasons = [r for r in dict.fromkeys((row.ready_reason, row.authorized_reason)) if r and r != row.phase]
    extra = f" ({escape(', '.join(reasons))})" if reasons else ""
    detail = f'<span class="detail">{escape(_message_here(row))}</span>' if row.message else ""
    return f"{badge}{extra}{detail}"


def _message_here(row: TokenRow) -> str:
    """The condition's message, except that "use the admin page" is not said on the admin page itself."""
    if row.can_sign_in and "AwaitingAuthorization" in (row.ready_reason, row.authorized_reason, row.phase):
        return f"No sign-in yet: press {row.action.value} and sign in as the mailbox."
    return row.message


def _redirect_block(redirect_uri: str) -> str:
    return (
        '<section aria-labelledby="redirect-heading"><h2 id="redirect-heading">Redirect URI</h2>'
        "<p>Register this URI at the provider (Entra ID: App registration &rsaquo; Authentication &rsaquo; "
        "Web &rsaquo; Redirect URIs; Google Cloud: OAuth client &rsaquo; Authorized redirect URIs).</p>"
        '<div class="copy"><label class="visually-hidden" for="redirect-uri">Redirect URI</label>'
        f'<input id="redirect-uri" type="text" readonly value="{escape(redirect_uri)}">'
        '<button type="button" class="secondary" data-copy="redirect-uri" hidden>Copy</button>'
        '<span id="redirect-uri-status" role="status" aria-live="polite"></span></div></section>'
    )


COLUMNS = ("Name", "Namespace", "Provider", "Mailbox", "Flow", "State", "Expires", "Last updated", "Action")


def _manage_links(row: TokenRow) -> str:
    """Edit and Delete, for tokens this page created (only with --manage-tokens)."""
    edit = escape(path_of("tokens", row.namespace, row.name, "edit"))
    delete = escape(path_of("tokens", row.namespace, row.name, "delete"))
    return (
        f'<span class="row-actions"><a href="{edit}" aria-label="Edit {escape(row.key)}">Edit</a>'
        f'<a href="{delete}" aria-label="Delete {escape(row.key)}">Delete</a></span>'
    )


def _token_row(row: TokenRow, csrf_token: str, now: datetime, *, manage: bool) -> str:
    link = escape(path_of("authorize", row.namespace, row.name))
    cells = (
        ("Namespace", escape(row.namespace), ""),
        ("Provider", escape(row.provider), ""),
        ("Mailbox", escape(row.mailbox) or _ANY_ACCOUNT, ""),
        ("Flow", escape(row.flow), ""),
        ("State", _state_cell(row), ""),
        ("Expires", _when(row.expires_at, now), "time"),
        ("Last updated", _when(row.last_refresh, now), "time"),
        ("Action", _action_cell(row, csrf_token) + (_manage_links(row) if manage else ""), "action"),
    )
    tds = "".join(f'<td data-label="{label}" class="{cls}">{html}</td>' for label, html, cls in cells)
    return (
        f'<tr id="token-{escape(row.namespace)}-{escape(row.name)}">'
        f'<th scope="row"><a href="{link}">{escape(row.name)}</a></th>{tds}</tr>'
    )


def admin_index(
    rows: Sequence[TokenRow],
    *,
    redirect_uri: str,
    csrf_token: str,
    namespaces: Sequence[str],
    now: datetime,
    error: str | None = None,
    editable: frozenset[tuple[str, str]] = frozenset(),
) -> str:
    """The token list: the old admin screen, Kubernetes-native; ``editable``: (namespace, name) the page may edit."""
    scope = "namespaces " + ", ".join(namespaces) if namespaces else "all namespaces"
    parts = [_redirect_block(redirect_uri), '<section aria-labelledby="tokens-heading" class="tokens">']
    parts.append(f'<h2 id="tokens-heading">Tokens <span class="muted">({len(rows)} in {escape(scope)})</span></h2>')
    parts.append(
        '<p class="toolbar"><a class="button" href="/new">Add a new email token</a>'
        '<a href="/">Refresh this list</a></p>'
    )
    if error:
        parts.append(f'<p class="error" role="alert">{escape(error)}</p>')
    if not rows and not error:
        parts.append(
            "<p>No EmailTokens yet. Add one with the form, or with <code>kubectl apply -f</code> (see the "
            "examples/ folder); it appears here.</p>"
        )
    if rows:
        head = "".join(f'<th scope="col">{h}</th>' for h in COLUMNS)
        parts.append(
            '<div class="table-wrap"><table><caption>EmailTokens and their access tokens</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>"
        )
        parts += [_token_row(r, csrf_token, now, manage=(r.namespace, r.name) in editable) for r in rows]
        parts.append("</tbody></table></div>")
    parts.append("</section>")
    parts.append(
        '<p class="muted">Times are UTC. The operator refreshes each access token before it expires and keeps it '
        "in the Secret named after the token; this page never shows tokens.</p>"
    )
    return layout("Email tokens", "".join(parts), script=True, subtitle=f"Showing {scope}")


def confirm(row: TokenRow, *, redirect_uri: str, csrf_token: str, now: datetime, notice: str = "") -> str:
    """The page behind ``status.authorizeUrl``: what will happen, and the button."""
    facts = (
        ("Provider", escape(row.provider)),
        ("Sign-in at", f"<code>{escape(row.sign_in_host)}</code>" if row.sign_in_host else "-"),
        ("Mailbox", escape(row.mailbox) or "any account"),
        ("Flow", escape(row.flow)),
        ("State", _state_cell(row)),
        ("Expires", _when(row.expires_at, now, inline=True)),
        ("Last updated", _when(row.last_refresh, now, inline=True)),
        ("Consumer Secret", f"<code>{escape(row.secret_name)}</code>"),
    )
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    body = [f'<p class="success" role="status">{escape(notice)}</p>'] if notice else []
    body += [f"<dl>{dl}</dl>", _redirect_block(redirect_uri)]
    if row.can_sign_in:
        who = f"as <strong>{escape(row.mailbox)}</strong>" if row.mailbox else "with the mailbox's account"
        body.append(
            f'<h2>Sign in</h2><p class="notice">You will be sent to {escape(row.provider)} at '
            f"<strong><code>{escape(row.sign_in_host)}</code></strong> to sign in {who}. "
            "Another account is refused and nothing is stored. After the sign-in you come back here and the "
            "operator publishes the access token within seconds.</p>"
        )
        body.append(sign_in_form(row, csrf_token))
    else:
        body.append(f'<p class="notice">{_action_cell(row, csrf_token)}</p>')
    body.append('<p><a href="/">Back to all tokens</a></p>')
    return layout(f"EmailToken {row.key}", "".join(body), script=True)


def success(
    *, token: str, account: str, provider: str, expires_at: datetime, secret_name: str, admin_url: str, now: datetime
) -> str:
    """After a good sign-in: which mailbox, until when, and where to look next."""
    body = (
        f'<p class="success" role="status"><strong>{escape(account) or "The account"}</strong> is authorized for '
        f"EmailToken <code>{escape(token)}</code> at {escape(provider)}.</p>"
        f"<p>The access token from this sign-in expires at {_when(expires_at, now, inline=True)}. "
        "The operator now refreshes it before it expires and publishes it in Secret "
        f"<code>{escape(secret_name)}</code>.</p>"
        f'<p><a href="{escape(admin_url)}">Back to the admin page</a></p>'
        '<p class="muted">You can close this window.</p>'
    )
    return layout("Mailbox authorized", body)


#: What to do next, per refusal reason.
HINTS: dict[str, str] = {
    "MissingState": "Start the sign-in from the admin page; this address is only meant for the provider's redirect.",
    "InvalidState": "Start the sign-in again from the admin page. Do not edit or bookmark sign-in links. If this "
    "happens every time, the callback's replicas do not share one state key (callback.stateKeySecret).",
    "StateExpired": "Sign-ins must be finished within the time limit. Start again from the admin page.",
    "AlreadyUsed": "Each sign-in link works once. If the token is not authorized yet, start again.",
    "ProviderError": "Nothing was stored. If you cancelled, start again when ready; otherwise ask the provider's "
    "administrator about the error above.",
    "MissingCode": "The provider sent no authorization code. Start again from the admin page.",
    "AccountMismatch": "Start again and choose the mailbox's account at the provider (sign out of the other "
    "account first if the provider picks it automatically).",
    "TokenReplaced": "The EmailToken was deleted and created again since the sign-in started. Start again.",
    "CsrfFailed": "Reload the admin page and press the button again.",
    "Forbidden": "Open the admin page through kubectl port-forward on this machine.",
    "TokenWritesDisabled": "Use Check or Download manifest on the form and apply the manifest from Git.",
    "FieldConflict": "Nothing was written. Apply the manifest with the tool that owns the field.",
}


def refused(reason: str, message: str, *, admin_url: str | None, title: str | None = None) -> str:
    """A refusal: what happened, in plain words, what to do, and that nothing was stored."""
    hint = HINTS.get(reason, "")
    back = f'<p><a href="{escape(admin_url)}">Back to the admin page</a></p>' if admin_url else ""
    body = (
        f'<p class="error" role="alert">{escape(message)}</p>'
        + (f"<p>{escape(hint)}</p>" if hint else "")
        + f'<p class="muted">Reason: <code>{escape(reason)}</code></p>{back}'
    )
    return layout(title or "Sign-in not completed", body)


def not_found() -> str:
    """404 for anything that is not a route (no echo of the requested path)."""
    return layout("Not found", "<p>There is nothing at this address.</p>")


def loopback_result(*, ok: bool, text: str) -> str:
    """What the browser shows at the end of ``emailtoken authorize``."""
    box = "success" if ok else "error"
    role = "status" if ok else "alert"
    body = f'<p class="{box}" role="{role}">{escape(text)}</p><p class="muted">You can close this window.</p>'
    return layout("Mailbox authorized" if ok else "Sign-in not completed", body)

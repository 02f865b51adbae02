"""HTML for the pages a person sees: sign-in, device code entry, results and errors.

Plain forms with labels and stable field names, so a person, a headless browser and a
``requests`` session can all complete them; every value is escaped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from html import escape

BRAND = {"microsoft": "Microsoft (local test provider)", "google": "Google (local test provider)"}

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;color:#1b1b1b}
h1{font-size:1.4rem} label{display:block;margin-top:1rem;font-weight:600}
input[type=text],input[type=email],input[type=password]{width:100%;padding:.5rem;font-size:1rem;box-sizing:border-box}
.actions{margin-top:1.5rem;display:flex;gap:.75rem} button{padding:.5rem 1.25rem;font-size:1rem}
.error{border-left:4px solid #b00020;padding:.5rem .75rem;background:#fdecee}
.muted{color:#555;font-size:.9rem} code{font-size:1rem}
"""


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )


def _error_block(error: str | None) -> str:
    return f'<p class="error" role="alert" id="error">{escape(error)}</p>' if error else ""


def sign_in(
    *,
    provider: str,
    app_name: str,
    action: str,
    txn: str,
    email: str = "",
    scopes: Iterable[str] = (),
    error: str | None = None,
) -> str:
    """The sign-in and consent form of an authorization request."""
    scope_items = "".join(f"<li><code>{escape(s)}</code></li>" for s in scopes)
    body = f"""
<h1>Sign in to {escape(BRAND[provider])}</h1>
<p>The application <strong id="app-name">{escape(app_name)}</strong> asks for access to:</p>
<ul id="scopes">{scope_items}</ul>
{_error_block(error)}
<form method="post" action="{escape(action)}" id="signin">
  <input type="hidden" name="txn" value="{escape(txn)}">
  <label for="email">Email address</label>
  <input type="email" id="email" name="email" value="{escape(email)}" autocomplete="username" required>
  <label for="password">Password</label>
  <input type="password" id="password" name="password" autocomplete="current-password" required>
  <div class="actions">
    <button type="submit" name="action" value="accept" id="accept">Sign in and accept</button>
    <button type="submit" name="action" value="cancel" id="cancel" formnovalidate>Cancel</button>
  </div>
</form>"""
    return _page(f"Sign in - {BRAND[provider]}", body)


def device_login(*, action: str, user_code: str = "", email: str = "", error: str | None = None) -> str:
    """Where a person types the code shown by a device and approves or denies it."""
    body = f"""
<h1>Enter code</h1>
<p>Enter the code displayed on your device or in the operator's status, then sign in.</p>
{_error_block(error)}
<form method="post" action="{escape(action)}" id="devicelogin">
  <label for="user_code">Code</label>
  <input type="text" id="user_code" name="user_code" value="{escape(user_code)}" autocomplete="off"
         autocapitalize="characters" required>
  <label for="email">Email address</label>
  <input type="email" id="email" name="email" value="{escape(email)}" autocomplete="username" required>
  <label for="password">Password</label>
  <input type="password" id="password" name="password" autocomplete="current-password" required>
  <div class="actions">
    <button type="submit" name="action" value="approve" id="approve">Approve</button>
    <button type="submit" name="action" value="deny" id="deny">Deny</button>
  </div>
</form>"""
    return _page("Device sign-in - Microsoft (local test provider)", body)


def device_done(*, approved: bool, app_name: str) -> str:
    """The result of a device sign-in."""
    if approved:
        text = (
            f"You have signed in to the <strong>{escape(app_name)}</strong> application on your device. "
            "You may now close this window."
        )
    else:
        text = f"You declined access for <strong>{escape(app_name)}</strong>. You may now close this window."
    return _page("Device sign-in", f'<h1 id="result">{"Approved" if approved else "Denied"}</h1><p>{text}</p>')


def error(*, title: str, message: str) -> str:
    """A dead end the provider cannot redirect from (unknown client, unregistered redirect URI)."""
    return _page(title, f"<h1>{escape(title)}</h1>{_error_block(message)}")


def form_post(redirect_uri: str, params: Mapping[str, str]) -> str:
    """``response_mode=form_post``: a self-submitting form carrying the response to the client."""
    fields = "".join(f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in params.items())
    body = (
        f'<form method="post" action="{escape(redirect_uri)}" id="response">{fields}'
        '<noscript><button type="submit">Continue</button></noscript></form>'
        "<script>document.getElementById('response').submit()</script>"
    )
    return _page("Working...", body)

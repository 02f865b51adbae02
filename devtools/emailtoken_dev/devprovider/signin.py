"""Completing the provider's sign-in and device pages from code, the way a browser would.

For tests and the demo: fetch the page, fill the form's own fields, submit, and hand back
the redirect the client would receive. Only the provider's own simple forms are parsed.
"""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit

import requests

from .state import DEFAULT_PASSWORD


class SignInError(RuntimeError):
    """The provider showed an error page instead of redirecting (message is the page's text)."""


class _Forms(HTMLParser):
    """Collects forms (action, fields) and the page's error text."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: dict[str, dict[str, object]] = {}
        self._current: dict[str, object] | None = None
        self._in_error = False
        self.error = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._current = {"action": a.get("action", ""), "fields": {}}
            self.forms[a.get("id", str(len(self.forms)))] = self._current
        elif tag == "input" and self._current is not None and a.get("name"):
            fields = self._current["fields"]
            assert isinstance(fields, dict)
            fields[a["name"]] = a.get("value", "")
        elif a.get("id") == "error" or a.get("role") == "alert":
            self._in_error = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None
        if tag == "p":
            self._in_error = False

    def handle_data(self, data: str) -> None:
        if self._in_error:
            self.error += data


def _parse(html: str) -> _Forms:
    parser = _Forms()
    parser.feed(html)
    return parser


def session(verify: str | bool = True) -> requests.Session:
    """A session that ignores proxy/CA environment variables (REQUESTS_CA_BUNDLE would win over verify=)."""
    s = requests.Session()
    s.trust_env = False
    s.verify = verify
    return s


def sign_in(
    authorize_url: str,
    email: str,
    password: str = DEFAULT_PASSWORD,
    *,
    verify: str | bool = True,
    http: requests.Session | None = None,
    accept: bool = True,
) -> str:
    """Open an authorization URL, sign in (or cancel) and return the redirect URL with its parameters.

    Raises :class:`SignInError` with the page's message when the provider does not redirect
    (unknown client, unregistered redirect URI, wrong password).
    """
    s = http or session(verify)
    page = s.get(authorize_url, allow_redirects=False, timeout=30)
    if page.status_code in (301, 302, 303):
        return page.headers["Location"]
    parsed = _parse(page.text)
    form = parsed.forms.get("signin")
    if page.status_code != 200 or form is None:
        raise SignInError(parsed.error.strip() or f"HTTP {page.status_code}")
    fields = dict(form["fields"])  # type: ignore[call-overload]
    fields.update({"email": email, "password": password, "action": "accept" if accept else "cancel"})
    answer = s.post(urljoin(page.url, str(form["action"])), data=fields, allow_redirects=False, timeout=30)
    if answer.status_code in (301, 302, 303):
        return answer.headers["Location"]
    parsed = _parse(answer.text)
    posted = parsed.forms.get("response")
    if posted is not None:  # response_mode=form_post: express it as a query for the caller
        return f"{posted['action']}?{urlencode(posted['fields'])}"  # type: ignore[arg-type]
    raise SignInError(parsed.error.strip() or f"HTTP {answer.status_code}")


def device_sign_in(
    verification_uri: str,
    user_code: str,
    email: str,
    password: str = DEFAULT_PASSWORD,
    *,
    approve: bool = True,
    verify: str | bool = True,
    http: requests.Session | None = None,
) -> None:
    """Enter a device code on the verification page and approve (or deny) it."""
    s = http or session(verify)
    page = s.get(verification_uri, timeout=30)
    form = _parse(page.text).forms.get("devicelogin")
    if form is None:
        raise SignInError(f"no device login form at {verification_uri}")
    data = {"user_code": user_code, "email": email, "password": password, "action": "approve" if approve else "deny"}
    answer = s.post(urljoin(page.url, str(form["action"])), data=data, timeout=30)
    parsed = _parse(answer.text)
    if "devicelogin" in parsed.forms:
        raise SignInError(parsed.error.strip() or "device sign-in failed")


def redirect_params(url: str) -> dict[str, str]:
    """The query (or fragment) parameters of a redirect: msal's ``auth_response``."""
    parts = urlsplit(url)
    return dict(parse_qsl(parts.query or parts.fragment))

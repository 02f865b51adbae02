"""A local OAuth 2.0 provider speaking Microsoft Entra ID v2.0 and Google, for the demo and tests.

Unmodified ``msal`` and ``google-auth`` work against it over HTTPS with its own CA
(``trustme``), including the error bodies the operator classifies. Nothing here talks to
the internet.

Quick start::

    async with DevProvider(token_lifetime=60) as p:       # or DevProviderThread().start()
        p.add_client("app", "secret")                      # Microsoft, confidential
        p.add_user("alice@contoso.com")                    # password "password"
        authority = p.microsoft_authority("contoso")       # msal: instance_discovery=False
        # trust p.ca_pem_path; Google: p.google_token_url, p.google_auth_url

URLs (``{t}`` is any tenant segment; each is recorded in ``p.tenants``)::

    GET  /{t}/v2.0/.well-known/openid-configuration      Entra discovery (msal reads it)
    GET  /{t}/discovery/v2.0/keys                        JWKS for id_tokens
    GET  /{t}/oauth2/v2.0/authorize  (+POST the form)    sign-in page -> 302 redirect_uri?code&state
    POST /{t}/oauth2/v2.0/token                          client_credentials, authorization_code,
                                                         refresh_token, device_code
    POST /{t}/oauth2/v2.0/devicecode                     RFC 8628 device authorization
    GET  /devicelogin (+POST)                            enter user code, approve or deny
    GET  /google/.well-known/openid-configuration        Google discovery
    GET  /google/o/oauth2/v2/auth    (+POST the form)    Google sign-in (access_type, prompt, PKCE)
    POST /google/token                                   authorization_code, refresh_token, jwt-bearer
    GET  /google/oauth2/v3/userinfo | tokeninfo, POST /google/revoke
    POST /introspect                                     RFC 7662 for Dovecot (HTTP Basic), also on
                                                         the plain-HTTP ``p.introspection_url``
    GET  /userinfo                                       Bearer
    *    /_control/...                                   control API (Bearer ``p.control_token``)

Behaviour worth knowing: Microsoft refresh tokens rotate (the old one dies; presenting it
again revokes the family when reuse detection is on); Google's do not unless enabled, and
Google issues a refresh token only with ``access_type=offline`` on first consent or with
``prompt=consent``. Access tokens are opaque; ``p.token_info(t)`` says whose they are.
Faults (``p.faults.add(...)``) script 5xx/429/Retry-After/delays/dropped connections.
``p.add_federated_client(id, FederatedCredential(issuer, subject))`` registers an app with no
secret that accepts client assertions (workload identity federation) checked against the
issuer's own discovery document and JWKS, refusing with Entra's AADSTS codes.
Codes and tokens are stored only as SHA-256 digests and never logged.

Run standalone: ``python -m emailtoken_dev.devprovider --port 8443 --config clients.json``.
"""

from .calls import Call
from .errors import OAuthError
from .faults import Fault, FaultQueue
from .federation import FederatedCredential
from .remote import RemoteProvider
from .server import DevProvider, DevProviderThread, ProviderControls
from .signin import SignInError, device_sign_in, redirect_params, session, sign_in
from .state import GrantError, Settings

__all__ = [
    "Call",
    "DevProvider",
    "DevProviderThread",
    "Fault",
    "FaultQueue",
    "FederatedCredential",
    "GrantError",
    "OAuthError",
    "ProviderControls",
    "RemoteProvider",
    "Settings",
    "SignInError",
    "device_sign_in",
    "redirect_params",
    "session",
    "sign_in",
]

"""emailtoken.routing: which way a step obtains its access token, from the spec and the grant it found."""

from __future__ import annotations

import pytest

from emailtoken.model import parse_spec
from emailtoken.routing import Route, needs_grant, route
from emailtoken.secretdata import Grant

GRANT = Grant("rt", "box@contoso.com")


def spec(flow: str):
    raw = {
        "provider": "Microsoft",
        "flow": flow,
        "tenantId": "contoso",
        "clientId": "app",
        "emailAddress": "box@contoso.com",
        "services": ["IMAP"],
    }
    if flow != "DeviceCode":
        raw["clientSecretRef"] = {"name": "s"}
    return parse_spec(raw, "box")


@pytest.mark.parametrize(
    ("flow", "grant", "expected"),
    [
        ("ClientCredentials", None, Route.APP_ONLY),
        ("ClientCredentials", GRANT, Route.APP_ONLY),  # an app-only flow never presents a grant
        ("AuthorizationCode", None, Route.AWAIT_SIGN_IN),  # a person signs in (callback, authorize)
        ("AuthorizationCode", GRANT, Route.PRESENT),
        ("DeviceCode", None, Route.DEVICE_CODE),  # the operator starts the sign-in itself
        ("DeviceCode", GRANT, Route.PRESENT),
    ],
)
def test_route(flow: str, grant: Grant | None, expected: Route) -> None:
    assert route(spec(flow), grant) is expected
    assert needs_grant(spec(flow)) is (expected is not Route.APP_ONLY)

"""Which way a step gets its access token, from the spec and the grant it found: one rule.

Pure: the refresh step (:meth:`emailtoken.engine.Engine._obtain`) carries the answer out.
"""

from __future__ import annotations

import enum

from emailtoken import devicecode
from emailtoken.model import EmailTokenSpec
from emailtoken.secretdata import Grant


class Route(enum.Enum):
    """How an access token is obtained this step."""

    #: an app-only flow: the client's credentials alone, no grant
    APP_ONLY = "app-only"
    #: no grant, and only a person can make one (the callback, ``emailtoken authorize``)
    AWAIT_SIGN_IN = "await-sign-in"
    #: no grant, and the operator signs in itself (the device-code flow's next move)
    DEVICE_CODE = "device-code"
    #: present the grant's refresh token
    PRESENT = "present"


def needs_grant(spec: EmailTokenSpec) -> bool:
    """Does the step read the grant Secret at all (a flow where a person signs in once)?"""
    return spec.interactive


def route(spec: EmailTokenSpec, grant: Grant | None) -> Route:
    """The way for this spec with this grant (None: no grant Secret, or not read for an app-only flow)."""
    if not needs_grant(spec):
        return Route.APP_ONLY
    if grant is not None:
        return Route.PRESENT
    return Route.DEVICE_CODE if devicecode.signs_in_itself(spec) else Route.AWAIT_SIGN_IN

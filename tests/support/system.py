"""Decide whether a test that needs a system program may skip.

On a developer laptop without Dovecot or Chromium those tests skip; under CI
(``CI=true``) the same absence is a failure, because `.ci/run` installs them.
"""

from __future__ import annotations

import os
import shutil

import pytest


def in_ci() -> bool:
    """True when running under CI, where missing tools are failures."""
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def need_binary(name: str, *candidates: str) -> str:
    """Return the path of a program, or skip (laptop) / fail (CI) without it."""
    for candidate in (name, *candidates):
        found = shutil.which(candidate) or (
            candidate if os.path.isabs(candidate) and os.access(candidate, os.X_OK) else None
        )
        if found:
            return found
    message = f"{name} is not installed (apt-get install it, or run .ci/run)"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)
    raise AssertionError("unreachable")

"""Preloading clients, users and service accounts from JSON (``--config`` and ``/_control/config``).

Schema (every section optional)::

    {
      "settings": {"token_lifetime": 3600, "device_interval": 5, "rotation": {"google": false}, ...},
      "clients": [{"client_id": "app", "client_secret": "s", "provider": "microsoft",
                   "redirect_uris": ["http://localhost/cb"], "public": false, "mailboxes": [],
                   "testing": false}],
      "users": [{"email": "a@contoso.com", "password": "password", "provider": "microsoft"}],
      "service_accounts": [{"email": "sa@proj.iam.gserviceaccount.com", "client_id": "1234",
                            "subjects": ["a@example.com"], "scopes": null, "key_file": "sa.json"}]
    }

A service account's generated key is written to ``key_file`` (mode 0600) when given and
returned either way, because the provider keeps only the public half.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .state import DEFAULT_PASSWORD, Settings

if TYPE_CHECKING:
    from .server import ProviderControls

_SETTING_FIELDS = {
    "token_lifetime": int,
    "reuse_detection": bool,
    "code_lifetime": int,
    "login_lifetime": int,
    "device_expires_in": int,
    "device_interval": int,
    "device_slow_down_factor": float,
    "testing_refresh_lifetime": float,
}


def apply_settings(settings: Settings, data: dict[str, Any]) -> None:
    """Change settings in place; unknown keys are an error so typos do not pass silently."""
    for key, value in data.items():
        if key in _SETTING_FIELDS:
            setattr(settings, key, _SETTING_FIELDS[key](value))
        elif key in ("rotation", "refresh_idle_lifetime"):
            getattr(settings, key).update(value)
        else:
            raise ValueError(f"unknown setting {key!r}")


def apply_config(registry: ProviderControls, data: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Load a config mapping; returns the generated service-account keys by e-mail."""
    apply_settings(registry.settings, data.get("settings", {}))
    for client in data.get("clients", []):
        spec = dict(client)
        registry.add_client(spec.pop("client_id"), spec.pop("client_secret", None), **spec)
    for user in data.get("users", []):
        spec = dict(user)
        registry.add_user(spec.pop("email"), spec.pop("password", DEFAULT_PASSWORD), **spec)
    keys: dict[str, dict[str, str]] = {}
    for sa in data.get("service_accounts", []):
        spec = dict(sa)
        key_file = spec.pop("key_file", None)
        email = spec.pop("email")
        key = registry.add_service_account(email, spec.pop("client_id"), **spec)
        keys[email] = key
        if key_file:
            write_private(Path(key_file), json.dumps(key, indent=2))
    return keys


def load_config_file(registry: ProviderControls, path: str | os.PathLike[str]) -> dict[str, dict[str, str]]:
    """:func:`apply_config` for a JSON file."""
    return apply_config(registry, json.loads(Path(path).read_text()))


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)

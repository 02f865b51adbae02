"""The API names module: one rule for each name, and light enough for the plugin."""

from __future__ import annotations

import subprocess
import sys

from emailtoken import api
from emailtoken.model import TokenRef, parse_spec


def test_consumer_secret_name_defaults_to_the_token_name() -> None:
    assert api.consumer_secret_name("mailbox", {}) == "mailbox"
    assert api.consumer_secret_name("mailbox", {"secretName": ""}) == "mailbox"
    assert api.consumer_secret_name("mailbox", {"secretName": "mail-token"}) == "mail-token"


def test_parse_spec_and_token_ref_use_the_same_names() -> None:
    spec = {"provider": "Google", "clientId": "c", "clientSecretRef": {"name": "s"}, "services": ["Gmail"]}
    assert parse_spec(spec, "inbox").secret_name == api.consumer_secret_name("inbox", spec)
    assert TokenRef("ns", "inbox").grant_secret_name == api.grant_secret_name("inbox") == "emailtoken-grant-inbox"


def test_the_kubectl_plugin_loads_neither_the_engine_nor_oauth_libraries() -> None:
    code = (
        "import sys, emailtoken.kubectl_plugin, emailtoken.callback.tokens;"
        "bad = [m for m in ('emailtoken.engine', 'msal', 'google.auth', 'kopf') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr

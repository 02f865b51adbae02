"""Legacy task properties (and environment variables) decide which email token a task uses."""

from __future__ import annotations

from pathlib import Path

import pytest

from emailtoken.properties import (
    AuthConfigError,
    load_properties,
    parse_properties,
    resolve_mail_auth,
    resolve_token_name,
)

#: What a legacy task file looks like out of the box: the OAuth keys are commented out.
DEFAULT_FILE = """\
# Mail task settings
MAILBOX_HOST = outlook.office365.com
MAILBOX_USER = sales@example.com
! MAILBOX_AUTH_TYPE = OAUTH2
#MAILBOX_EMAIL_TOKEN_NAME = sales-mailbox
MAIL_HOST = smtp.office365.com
#   MAIL_AUTH_TYPE = OAUTH2
#   MAIL_TOKEN_NAME = sales-sender
"""


def test_parse_java_properties_syntax() -> None:
    text = (
        "  # comment\n"
        "! bang comment\n"
        "\n"
        "A = 1\n"
        "B:2\n"
        "C 3\n"
        "\tD\t=\t  spaced value  \n"
        "E = first \\\n"
        "    second\n"
        "F = x # not a comment\n"
        "G =\n"
        "H = a\\=b\\u0041\\tz\n"
        "key\\ with\\ space = v\n"
        "#I = hidden\n"
    )
    assert parse_properties(text) == {
        "A": "1",
        "B": "2",
        "C": "3",
        "D": "spaced value",
        "E": "first second",
        "F": "x # not a comment",
        "G": "",
        "H": "a=bA\tz",
        "key with space": "v",
    }


def test_later_keys_win_and_crlf() -> None:
    assert parse_properties("A = 1\r\nA = 2\r\n") == {"A": "2"}


def test_default_file_means_password_for_both_roles() -> None:
    props = parse_properties(DEFAULT_FILE)
    for role in ("reader", "sender"):
        auth = resolve_mail_auth(role, props, environ={})
        assert auth.auth_type == "PASSWORD"
        assert auth.token_name is None
        assert not auth.uses_oauth2
        assert auth.source == "default"


@pytest.mark.parametrize(
    ("role", "text", "expected"),
    [
        ("reader", "MAILBOX_AUTH_TYPE = OAUTH2\nMAILBOX_EMAIL_TOKEN_NAME = sales-mailbox\n", "sales-mailbox"),
        ("reader", "MAILBOX_AUTH_TYPE=oauth2\nMAILBOX_EMAIL_TOKEN_NAME=sales-mailbox", "sales-mailbox"),
        ("reader", "  MAILBOX_AUTH_TYPE :  OAuth2  \n MAILBOX_EMAIL_TOKEN_NAME   Sales-Mailbox  ", "sales-mailbox"),
        ("reader", "MAILBOX_AUTH_TYPE = PASSWORD\nMAILBOX_EMAIL_TOKEN_NAME = sales-mailbox\n", None),
        ("reader", "MAILBOX_AUTH_TYPE = password\n", None),
        ("reader", "MAIL_AUTH_TYPE = OAUTH2\nMAIL_TOKEN_NAME = sender\n", None),  # sender keys do not apply
        ("sender", "MAIL_AUTH_TYPE = OAUTH2\nMAIL_TOKEN_NAME = sales-sender\n", "sales-sender"),
        ("sender", "MAIL_AUTH_TYPE = Oauth2\nMAIL_TOKEN_NAME = tokens.sales\n", "tokens.sales"),
        ("sender", "MAIL_AUTH_TYPE = PASSWORD\n", None),
        ("sender", "MAILBOX_AUTH_TYPE = OAUTH2\nMAILBOX_EMAIL_TOKEN_NAME = x\n", None),  # reader keys do not apply
        ("sender", "#MAIL_AUTH_TYPE = OAUTH2\nMAIL_TOKEN_NAME = sales-sender\n", None),  # type commented out
        ("sender", "MAIL_AUTH_TYPE =\nMAIL_TOKEN_NAME = sales-sender\n", None),  # empty means default
    ],
)
def test_each_combination(role: str, text: str, expected: str | None) -> None:
    assert resolve_token_name(role, parse_properties(text), environ={}) == expected


def test_both_roles_in_one_file(tmp_path: Path) -> None:
    file = tmp_path / "task.properties"
    file.write_text(
        DEFAULT_FILE.replace("! MAILBOX_AUTH_TYPE = OAUTH2", "MAILBOX_AUTH_TYPE = OAUTH2")
        .replace("#MAILBOX_EMAIL_TOKEN_NAME", "MAILBOX_EMAIL_TOKEN_NAME")
        .replace("#   MAIL_AUTH_TYPE", "MAIL_AUTH_TYPE")
        .replace("#   MAIL_TOKEN_NAME", "MAIL_TOKEN_NAME")
    )
    reader = resolve_mail_auth("reader", file, environ={})
    sender = resolve_mail_auth("sender", file, environ={})
    assert (reader.token_name, sender.token_name) == ("sales-mailbox", "sales-sender")
    assert str(file) in reader.source


def test_oauth2_without_token_name_is_an_error() -> None:
    with pytest.raises(AuthConfigError) as caught:
        resolve_mail_auth("reader", parse_properties("MAILBOX_AUTH_TYPE = OAUTH2\n#MAILBOX_EMAIL_TOKEN_NAME = x\n"), {})
    message = str(caught.value)
    assert "MAILBOX_EMAIL_TOKEN_NAME is not set" in message
    assert "OAUTH2" in message


def test_unknown_auth_type_lists_allowed_values() -> None:
    with pytest.raises(AuthConfigError) as caught:
        resolve_mail_auth("sender", parse_properties("MAIL_AUTH_TYPE = OAUTH\nMAIL_TOKEN_NAME = t\n"), {})
    message = str(caught.value)
    assert "'OAUTH'" in message
    assert "PASSWORD | OAUTH2" in message
    assert "MAIL_AUTH_TYPE" in message


def test_inline_hash_is_part_of_the_value_like_java() -> None:
    with pytest.raises(AuthConfigError, match="allowed values"):
        resolve_mail_auth("reader", parse_properties("MAILBOX_AUTH_TYPE = OAUTH2 # or PASSWORD\n"), {})


@pytest.mark.parametrize("bad", ["sales_mailbox", "-sales", "sales mailbox", "x" * 254])
def test_token_name_must_be_a_kubernetes_name(bad: str) -> None:
    props = {"MAIL_AUTH_TYPE": "OAUTH2", "MAIL_TOKEN_NAME": bad}
    with pytest.raises(AuthConfigError, match="not a Kubernetes object name"):
        resolve_mail_auth("sender", props, {})


def test_environment_overrides_file_key_by_key(tmp_path: Path) -> None:
    file = tmp_path / "task.properties"
    file.write_text("MAILBOX_AUTH_TYPE = PASSWORD\nMAILBOX_EMAIL_TOKEN_NAME = from-file\n")
    auth = resolve_mail_auth("reader", file, environ={"MAILBOX_AUTH_TYPE": "oauth2"})
    assert auth.token_name == "from-file"
    assert "environment variable MAILBOX_AUTH_TYPE" in auth.source
    auth = resolve_mail_auth(
        "reader", file, environ={"MAILBOX_AUTH_TYPE": "OAUTH2", "MAILBOX_EMAIL_TOKEN_NAME": "from-env"}
    )
    assert auth.token_name == "from-env"
    # an empty variable counts as unset
    assert resolve_token_name("reader", file, environ={"MAILBOX_AUTH_TYPE": ""}) is None
    # the environment alone is enough
    assert resolve_token_name("sender", None, environ={"MAIL_AUTH_TYPE": "OAUTH2", "MAIL_TOKEN_NAME": "s"}) == "s"
    # and can switch a task back to passwords
    file.write_text("MAILBOX_AUTH_TYPE = OAUTH2\nMAILBOX_EMAIL_TOKEN_NAME = x\n")
    assert resolve_token_name("reader", file, environ={"MAILBOX_AUTH_TYPE": "PASSWORD"}) is None


def test_os_environ_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAIL_AUTH_TYPE", "OAUTH2")
    monkeypatch.setenv("MAIL_TOKEN_NAME", "env-token")
    assert resolve_token_name("sender") == "env-token"


def test_missing_file_and_unknown_role(tmp_path: Path) -> None:
    with pytest.raises(AuthConfigError, match="does not exist"):
        resolve_mail_auth("reader", tmp_path / "nope.properties", {})
    with pytest.raises(AuthConfigError, match="reader, sender"):
        resolve_mail_auth("archiver", None, {})


def test_latin1_file(tmp_path: Path) -> None:
    file = tmp_path / "old.properties"
    file.write_bytes("OWNER = J\xfcrgen\nMAIL_AUTH_TYPE = OAUTH2\nMAIL_TOKEN_NAME = t\n".encode("iso-8859-1"))
    assert load_properties(file)["OWNER"] == "J\u00fcrgen"
    assert resolve_token_name("sender", file, environ={}) == "t"

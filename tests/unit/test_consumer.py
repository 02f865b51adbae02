"""The consumer helper reads the mounted Secret fresh, refuses expired tokens, builds SASL strings."""

from __future__ import annotations

import base64
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from emailtoken import consumer
from emailtoken.consumer import (
    MountedToken,
    TokenError,
    TokenExpiredError,
    TokenFormatError,
    TokenNotFoundError,
    oauthbearer_string,
    read_token,
    xoauth2_string,
)
from tests.support.secretvolume import SecretVolume, consumer_files

NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
TOKEN_A = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.first-token-value"
TOKEN_B = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.second-token-value"


def clock() -> datetime:
    return NOW


@pytest.fixture
def volume(tmp_path: Path) -> SecretVolume:
    vol = SecretVolume(tmp_path / "sales-mailbox")
    vol.update(consumer_files(access_token=TOKEN_A, username="sales@example.com", expires_at=NOW + timedelta(hours=1)))
    return vol


def test_sasl_strings_are_exact() -> None:
    assert xoauth2_string("u@example.com", "T") == "user=u@example.com\x01auth=Bearer T\x01\x01"
    assert (
        oauthbearer_string("u@example.com", "T", "imap.example.com", 993)
        == "n,a=u@example.com,\x01host=imap.example.com\x01port=993\x01auth=Bearer T\x01\x01"
    )
    assert oauthbearer_string("u@example.com", "T") == "n,a=u@example.com,\x01auth=Bearer T\x01\x01"
    # RFC 5801 escaping of the authzid
    assert oauthbearer_string("a,b=c@example.com", "T").startswith("n,a=a=2Cb=3Dc@example.com,\x01")


def test_reads_all_keys(volume: SecretVolume, tmp_path: Path) -> None:
    token = MountedToken("sales-mailbox", tmp_path, clock=clock).read()
    assert token.access_token == TOKEN_A
    assert token.username == "sales@example.com"
    assert token.expires_at == NOW + timedelta(hours=1)
    assert token.token_type == "Bearer"
    assert token.expires_in(NOW) == timedelta(hours=1)
    assert token.xoauth2() == f"user=sales@example.com\x01auth=Bearer {TOKEN_A}\x01\x01"
    # the Secret's own xoauth2 key and the helper agree byte for byte
    assert token.xoauth2_base64() == (volume.path / "xoauth2").read_text()
    assert token.oauthbearer("imap.example.com", 993) == (
        f"n,a=sales@example.com,\x01host=imap.example.com\x01port=993\x01auth=Bearer {TOKEN_A}\x01\x01"
    )
    assert token.xoauth2("shared@example.com").startswith("user=shared@example.com\x01")


def test_token_never_in_repr(volume: SecretVolume, tmp_path: Path) -> None:
    mounted = MountedToken("sales-mailbox", tmp_path, clock=clock)
    assert TOKEN_A not in repr(mounted.read())
    assert TOKEN_A not in repr(mounted)


def test_picks_up_kubelet_swap_without_recreating(volume: SecretVolume, tmp_path: Path) -> None:
    mounted = MountedToken("sales-mailbox", tmp_path, clock=clock)
    assert mounted.access_token() == TOKEN_A
    old_generation = (volume.path / "..data").readlink()
    volume.update(
        consumer_files(access_token=TOKEN_B, username="sales@example.com", expires_at=NOW + timedelta(hours=2))
    )
    assert (volume.path / "..data").readlink() != old_generation
    assert not (volume.path / old_generation).exists()  # the kubelet removed the old generation
    token = mounted.read()  # the same object, no restart
    assert token.access_token == TOKEN_B
    assert token.expires_at == NOW + timedelta(hours=2)
    assert mounted.xoauth2() == f"user=sales@example.com\x01auth=Bearer {TOKEN_B}\x01\x01"


def test_reads_one_generation_while_swaps_happen(volume: SecretVolume, tmp_path: Path) -> None:
    """Reads racing with swaps never mix a token with another generation's expiry."""
    expiries = {f"tok-{i:04d}-padding-padding": NOW + timedelta(hours=1, seconds=i) for i in range(200)}
    mounted = MountedToken("sales-mailbox", tmp_path, clock=clock)
    stop = threading.Event()

    def writer() -> None:
        for value, expires in expiries.items():
            volume.update(consumer_files(access_token=value, username="sales@example.com", expires_at=expires))
        stop.set()

    thread = threading.Thread(target=writer)
    thread.start()
    seen = 0
    while not stop.is_set():
        token = mounted.read()
        if token.access_token in expiries:
            assert token.expires_at == expiries[token.access_token]
            seen += 1
    thread.join()
    assert mounted.read().access_token == list(expiries)[-1]
    assert seen > 0


def test_plain_directory_without_data_link(tmp_path: Path) -> None:
    """A mount made by other tooling (or a copy) without ``..data`` still reads."""
    folder = tmp_path / "plain"
    folder.mkdir()
    for key, value in consumer_files(
        access_token=TOKEN_A, username="p@example.com", expires_at=NOW + timedelta(hours=1)
    ).items():
        (folder / key).write_text(value + "\n")  # trailing newlines are tolerated
    token = MountedToken("plain", tmp_path, clock=clock).read()
    assert token.access_token == TOKEN_A
    assert token.username == "p@example.com"


@pytest.mark.parametrize(
    ("left", "expired_word"),
    [(timedelta(minutes=-5), "expired"), (timedelta(seconds=0), "expired"), (timedelta(seconds=30), "expires within")],
)
def test_expired_or_expiring_is_refused(tmp_path: Path, left: timedelta, expired_word: str) -> None:
    SecretVolume(tmp_path / "old").update(
        consumer_files(access_token=TOKEN_A, username="o@example.com", expires_at=NOW + left)
    )
    with pytest.raises(TokenExpiredError) as caught:
        MountedToken("old", tmp_path, clock=clock).read()
    message = str(caught.value)
    assert expired_word in message
    assert "kubectl describe emailtoken old" in message
    assert TOKEN_A not in message
    assert caught.value.expires_at == NOW + left
    assert isinstance(caught.value, TokenError)


def test_skew_is_configurable(tmp_path: Path) -> None:
    SecretVolume(tmp_path / "t").update(
        consumer_files(access_token=TOKEN_A, username="o@example.com", expires_at=NOW + timedelta(seconds=30))
    )
    assert MountedToken("t", tmp_path, skew=timedelta(seconds=10), clock=clock).read().access_token == TOKEN_A


def test_real_clock_is_the_default(tmp_path: Path) -> None:
    SecretVolume(tmp_path / "t").update(
        consumer_files(
            access_token=TOKEN_A, username="o@example.com", expires_at=datetime.now(UTC) + timedelta(hours=1)
        )
    )
    assert read_token("t", tmp_path).access_token == TOKEN_A
    SecretVolume(tmp_path / "t").update(
        consumer_files(
            access_token=TOKEN_A, username="o@example.com", expires_at=datetime.now(UTC) - timedelta(hours=1)
        )
    )
    with pytest.raises(TokenExpiredError):
        read_token("t", tmp_path)


def test_not_found_names_what_is_mounted(volume: SecretVolume, tmp_path: Path) -> None:
    with pytest.raises(TokenNotFoundError) as caught:
        MountedToken("billing", tmp_path).read()
    assert "billing" in str(caught.value)
    assert "sales-mailbox" in str(caught.value)  # what is mounted instead
    assert "subPath" in str(caught.value)
    with pytest.raises(TokenNotFoundError, match="does not exist"):
        MountedToken("x", tmp_path / "nowhere").read()


def test_missing_key_is_not_found(tmp_path: Path) -> None:
    SecretVolume(tmp_path / "partial").update({"username": "u@example.com", "expires_at": "2030-01-01T00:00:00Z"})
    with pytest.raises(TokenNotFoundError, match="access_token is missing"):
        MountedToken("partial", tmp_path).read()


def test_malformed_files(tmp_path: Path) -> None:
    files = consumer_files(access_token=TOKEN_A, username="u@example.com", expires_at=NOW + timedelta(hours=1))
    SecretVolume(tmp_path / "bad-time").update({**files, "expires_at": "tomorrow"})
    with pytest.raises(TokenFormatError, match="RFC 3339") as caught:
        MountedToken("bad-time", tmp_path, clock=clock).read()
    assert TOKEN_A not in str(caught.value)
    SecretVolume(tmp_path / "empty").update({**files, "access_token": ""})
    with pytest.raises(TokenFormatError, match="access_token"):
        MountedToken("empty", tmp_path, clock=clock).read()


def test_optional_keys_default(tmp_path: Path) -> None:
    SecretVolume(tmp_path / "min").update(
        {"access_token": TOKEN_A, "username": "u@example.com", "expires_at": "2026-11-29T13:00:00+00:00"}
    )
    token = MountedToken("min", tmp_path, clock=clock).read()
    assert (token.token_type, token.scope) == ("Bearer", "")
    assert token.expires_at == NOW + timedelta(hours=1)


def test_mount_root_from_argument_env_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(consumer.MOUNT_ROOT_ENV, raising=False)
    assert MountedToken("a").path == Path("/var/run/emailtokens/a")
    monkeypatch.setenv(consumer.MOUNT_ROOT_ENV, str(tmp_path))
    assert MountedToken("a").path == tmp_path / "a"
    assert MountedToken("a", "/elsewhere").path == Path("/elsewhere/a")


@pytest.mark.parametrize("name", ["", "..", ".", "a/b", "../etc"])
def test_rejects_path_like_names(name: str) -> None:
    with pytest.raises(ValueError, match="not a token name"):
        MountedToken(name)


def test_xoauth2_base64_matches_secret_contract(volume: SecretVolume, tmp_path: Path) -> None:
    b64 = MountedToken("sales-mailbox", tmp_path, clock=clock).xoauth2_base64()
    assert base64.b64decode(b64) == f"user=sales@example.com\x01auth=Bearer {TOKEN_A}\x01\x01".encode()


def test_consumer_is_stdlib_only() -> None:
    """The module must be vendorable into any mail task: no third-party or package imports."""
    code = (
        "import sys, importlib.util;"
        f"spec = importlib.util.spec_from_file_location('c', {consumer.__file__!r});"
        "m = importlib.util.module_from_spec(spec); sys.modules['c'] = m; spec.loader.exec_module(m);"
        "third = {'kubernetes', 'kopf', 'emailtoken', 'requests', 'aiohttp'};"
        "bad = [n for n in sys.modules if n.split('.')[0] in third];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_reads_what_the_operator_writes(tmp_path: Path) -> None:
    """The operator's consumer Secret, projected like the kubelet does, is what the helper reads."""
    from emailtoken.model import TokenRef
    from emailtoken.secretdata import CONSUMER_KEYS, consumer_secret

    secret = consumer_secret(
        TokenRef("mail", "sales-mailbox", "uid-1"),
        "sales-mailbox",
        access_token=TOKEN_A,
        token_type="Bearer",
        expires_at=NOW + timedelta(hours=1),
        obtained_at=NOW,
        username="sales@example.com",
        scope="https://outlook.office.com/IMAP.AccessAsUser.All",
        spec_hash="h",
    )
    assert set(secret["data"]) == set(CONSUMER_KEYS)
    volume = SecretVolume(tmp_path / "sales-mailbox")
    volume.update_from_secret(secret)
    token = MountedToken("sales-mailbox", tmp_path, clock=clock).read()
    assert token.access_token == TOKEN_A
    assert token.expires_at == NOW + timedelta(hours=1)
    assert token.scope == "https://outlook.office.com/IMAP.AccessAsUser.All"
    assert token.xoauth2_base64() == (volume.path / "xoauth2").read_text()

"""emailtoken.secretdata: the consumer Secret contract and the grant Secret, byte for byte."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from emailtoken.model import TokenRef
from emailtoken.secretdata import (
    CONSUMER_KEYS,
    Grant,
    PublishedToken,
    consumer_secret,
    decode_data,
    grant_secret,
    owner_reference,
    read_grant,
    read_published,
    xoauth2,
)

TOKEN = TokenRef("mail", "box", "uid-123")
EXPIRES = datetime(2026, 11, 29, 1, 2, 3, tzinfo=UTC)
OBTAINED = datetime(2026, 11, 29, 0, 2, 3, tzinfo=UTC)
ACCESS = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.payload.signature"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def render(**overrides: object) -> dict:
    kwargs: dict = {
        "access_token": ACCESS,
        "token_type": "Bearer",
        "expires_at": EXPIRES,
        "obtained_at": OBTAINED,
        "username": "box@contoso.example",
        "scope": "https://outlook.office.com/IMAP.AccessAsUser.All offline_access",
        "spec_hash": "0123456789abcdef",
    }
    kwargs.update(overrides)
    return consumer_secret(TOKEN, "box-token", **kwargs)


def test_xoauth2_is_base64_of_the_exact_sasl_string() -> None:
    """Dovecot and Exchange parse exactly user=<u>^Aauth=Bearer <t>^A^A."""
    expected = base64.b64encode(b"user=box@contoso.example\x01auth=Bearer tok-123\x01\x01").decode()
    assert xoauth2("box@contoso.example", "tok-123") == expected
    assert xoauth2("box@contoso.example", "tok-123") == (
        "dXNlcj1ib3hAY29udG9zby5leGFtcGxlAWF1dGg9QmVhcmVyIHRvay0xMjMBAQ=="
    )


def test_consumer_secret_data_keys_and_values() -> None:
    """Every key of the public contract, base64-encoded as the Secret API wants."""
    body = render()
    data = body["data"]
    assert tuple(data) == CONSUMER_KEYS
    assert data["access_token"] == b64(ACCESS)
    assert data["token_type"] == b64("Bearer")
    assert data["expires_at"] == b64("2026-11-29T01:02:03Z")
    assert data["username"] == b64("box@contoso.example")
    assert data["scope"] == b64("https://outlook.office.com/IMAP.AccessAsUser.All offline_access")
    raw = base64.b64decode(base64.b64decode(data["xoauth2"]))
    assert raw == f"user=box@contoso.example\x01auth=Bearer {ACCESS}\x01\x01".encode()


def test_consumer_secret_metadata() -> None:
    """Name, namespace, type, labels, owner and annotations mail tasks and GC rely on."""
    body = render()
    assert body["apiVersion"] == "v1"
    assert body["kind"] == "Secret"
    assert body["type"] == "Opaque"
    meta = body["metadata"]
    assert meta["name"] == "box-token"
    assert meta["namespace"] == "mail"
    assert meta["labels"] == {"app.kubernetes.io/managed-by": "emailtoken-operator", "emailtoken.io/token": "box"}
    assert meta["annotations"] == {
        "emailtoken.io/spec-hash": "0123456789abcdef",
        "emailtoken.io/obtained-at": "2026-11-29T00:02:03Z",
    }
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "emailtoken.io/v1alpha1",
            "kind": "EmailToken",
            "name": "box",
            "uid": "uid-123",
            "controller": True,
            "blockOwnerDeletion": False,
        }
    ]


def test_no_owner_reference_without_uid() -> None:
    """An owner reference with an empty uid is rejected by the API server: leave it out."""
    body = consumer_secret(
        TokenRef("mail", "box"),
        "box",
        access_token="a",
        token_type="Bearer",
        expires_at=EXPIRES,
        obtained_at=OBTAINED,
        username="u",
        scope="s",
        spec_hash="h",
    )
    assert body["metadata"]["ownerReferences"] == []
    assert grant_secret(TokenRef("mail", "box"), Grant("rt", "u"))["metadata"]["ownerReferences"] == []


def test_owner_reference_points_at_the_token() -> None:
    """Garbage collection follows the uid, not the name."""
    ref = owner_reference(TOKEN)
    assert (ref["kind"], ref["name"], ref["uid"]) == ("EmailToken", "box", "uid-123")


def test_read_published_round_trip() -> None:
    """What was written reads back (without the token value itself)."""
    published = read_published(render())
    assert published == PublishedToken(
        expires_at=EXPIRES,
        obtained_at=OBTAINED,
        username="box@contoso.example",
        scope="https://outlook.office.com/IMAP.AccessAsUser.All offline_access",
        spec_hash="0123456789abcdef",
        has_token=True,
    )
    assert ACCESS not in repr(published)


def test_read_published_handles_string_data() -> None:
    """Some test API servers keep stringData as written."""
    secret = {
        "metadata": {"annotations": {}},
        "stringData": {"expires_at": "2026-11-29T01:02:03Z", "access_token": "x", "username": "u"},
    }
    published = read_published(secret)
    assert published is not None
    assert published.expires_at == EXPIRES
    assert published.obtained_at is None
    assert published.spec_hash is None
    assert published.username == "u"
    assert published.has_token


def test_read_published_without_token_value() -> None:
    """An emptied access_token is not a published token."""
    body = render(access_token="")
    published = read_published(body)
    assert published is not None
    assert published.has_token is False


def test_read_published_unreadable_is_none() -> None:
    """Absent, empty or garbled Secrets count as nothing published."""
    assert read_published(None) is None
    assert read_published({}) is None
    assert read_published({"data": {"access_token": b64("x")}}) is None
    assert read_published({"data": {"expires_at": b64("tomorrow")}}) is None
    bad_annotation = render()
    bad_annotation["metadata"]["annotations"]["emailtoken.io/obtained-at"] = "garbage"
    assert read_published(bad_annotation) is None


def test_decode_data_merges_string_data_over_data() -> None:
    """stringData wins, as the API server would apply it."""
    secret = {"data": {"a": b64("1"), "b": b64("2")}, "stringData": {"b": "3"}}
    assert decode_data(secret) == {"a": "1", "b": "3"}
    assert decode_data({}) == {}


def test_decode_data_tolerates_binary_neighbours() -> None:
    """A client-secret Secret may also hold a binary key (a .pfx): reading the text key must work."""
    secret = {"data": {"client_secret": b64("s3cret"), "cert.pfx": base64.b64encode(b"\x30\x82\xff\xfe").decode()}}
    assert decode_data(secret)["client_secret"] == "s3cret"


def test_grant_secret_body() -> None:
    """Operator-only type and label; every field base64-encoded."""
    grant = Grant(
        "rt-1", "box@contoso.example", "scope-a", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", "https://idp/token"
    )
    body = grant_secret(TOKEN, grant)
    assert body["type"] == "emailtoken.io/grant"
    assert body["metadata"]["name"] == "emailtoken-grant-box"
    assert body["metadata"]["namespace"] == "mail"
    assert body["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "emailtoken-operator",
        "emailtoken.io/grant-for": "box",
    }
    assert body["metadata"]["ownerReferences"][0]["uid"] == "uid-123"
    assert body["data"] == {
        "refresh_token": b64("rt-1"),
        "account": b64("box@contoso.example"),
        "scope": b64("scope-a"),
        "obtained_at": b64("2026-01-01T00:00:00Z"),
        "updated_at": b64("2026-01-02T00:00:00Z"),
        "token_url": b64("https://idp/token"),
        "refresh_token_expires_at": "",
    }
    assert read_grant(body) == grant, "the issuing endpoint round-trips"


def test_grant_secret_keeps_a_stated_refresh_token_end() -> None:
    """A time-limited grant (Google app in Testing) keeps its end; a merge patch with "" clears an old one."""
    grant = Grant("rt-1", "box@contoso.example", refresh_expires_at="2026-01-08T00:00:00Z")
    body = grant_secret(TOKEN, grant)
    assert body["data"]["refresh_token_expires_at"] == b64("2026-01-08T00:00:00Z")
    read = read_grant(body)
    assert read is not None and read.refresh_expires_at == "2026-01-08T00:00:00Z"


def test_grant_round_trip_with_resource_version() -> None:
    """read_grant gives back the grant plus the version to use as a precondition."""
    grant = Grant("rt-1", "box@contoso.example", "scope-a", "o", "u")
    body = grant_secret(TOKEN, grant)
    body["metadata"]["resourceVersion"] = "42"
    read = read_grant(body)
    assert read == grant
    assert read is not None and read.resource_version == "42"
    assert read.refresh_token == "rt-1"


def test_read_grant_empty_or_missing() -> None:
    """An emptied grant Secret means no grant (a sign-in is needed)."""
    assert read_grant(None) is None
    assert read_grant({"data": {}}) is None
    assert read_grant({"data": {"refresh_token": "", "account": b64("a")}}) is None
    assert read_grant({"stringData": {"refresh_token": "rt"}}) == Grant("rt", "")


def test_grant_repr_hides_refresh_token() -> None:
    """A logged Grant must not leak the refresh token."""
    assert "super-secret-rt" not in repr(Grant("super-secret-rt", "a"))

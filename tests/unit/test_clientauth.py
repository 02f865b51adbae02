"""The projected ServiceAccount token as a client assertion: which file, when it is refused, rotation."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest

from emailtoken import clientauth
from emailtoken.model import FederatedCredential, SpecError, parse_spec
from emailtoken.outcomes import ErrorKind, ProviderError
from tests.support.spec_cases import MS_CLIENT_CREDENTIALS, change

ENTRA = "api://AzureADTokenExchange"


def jwt(aud: str | list[str], exp: float, sub: str = "system:serviceaccount:mail:emailtoken-operator") -> str:
    """An unsigned-looking compact JWT (the module never verifies; the provider does)."""

    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256'})}.{part({'aud': aud, 'exp': exp, 'sub': sub})}.c2ln"


def write(path: Path, token: str) -> str:
    path.write_text(token + "\n")
    return str(path)


def test_the_file_whose_audience_matches_is_presented(tmp_path: Path) -> None:
    later = time.time() + 3600
    other = write(tmp_path / "token-0", jwt("sts.amazonaws.com", later))
    entra = write(tmp_path / "token-1", jwt([ENTRA, "x"], later))
    assert clientauth.read_assertion([other, entra], ENTRA) == jwt([ENTRA, "x"], later)


def test_every_request_reads_the_file_again(tmp_path: Path) -> None:
    """The kubelet rotates the file: the callable given to msal must never cache."""
    path = write(tmp_path / "token", jwt(ENTRA, time.time() + 600))
    assertion = clientauth.assertion_source([path], ENTRA)
    first = assertion()
    rotated = jwt(ENTRA, time.time() + 3600)
    write(tmp_path / "token", rotated)
    assert assertion() == rotated != first


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (None, "cannot be read"),
        ("not a token", "does not hold a JWT"),
        (jwt("https://kubernetes.default.svc", 2e9), "is for audience https://kubernetes.default.svc"),
        (jwt(ENTRA, 1000), "expired"),
    ],
)
def test_an_unusable_file_is_a_configuration_problem_that_names_it(
    tmp_path: Path, content: str | None, why: str
) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ProviderError) as caught:
        clientauth.assertion_source([str(path)], ENTRA)
    err = caught.value
    assert (err.kind, err.reason) == (ErrorKind.BAD_CONFIG, "FederatedTokenUnavailable")
    assert f"audience {ENTRA}" in err.message and str(path) in err.message and why in err.message
    assert content is None or content not in err.message  # the token itself is never quoted


def test_no_file_configured_says_which_flag() -> None:
    with pytest.raises(ProviderError, match="--federated-token-file"):
        clientauth.read_assertion([], ENTRA)


def test_spec_audience_defaults_to_entras() -> None:
    spec = change(MS_CLIENT_CREDENTIALS, drop=("clientSecretRef",), federatedCredential={})
    assert parse_spec(spec, "t").federated_credential.audience == ENTRA
    custom = change(spec, federatedCredential={"audience": "api://contoso"})
    assert parse_spec(custom, "t").federated_credential.audience == "api://contoso"
    assert parse_spec(MS_CLIENT_CREDENTIALS, "t").federated_credential is None


def test_both_processes_take_the_installers_rules_from_the_command_line() -> None:
    from emailtoken import cli
    from emailtoken.callback import cli as callback_cli

    parser = cli.build_parser()
    files = ["--federated-token-file", "/t/token-0", "--federated-token-file", "/t/token-1"]
    rules = ["--federation-audience", "api://contoso", "--ambient-federation-namespace", "ops"]
    operator = cli.config_from_args(parser.parse_args(["run", *files, *rules])).federation
    assert operator == clientauth.Federation(("/t/token-0", "/t/token-1"), ("api://contoso",), ("ops",))
    callback = callback_cli.config_from_args(parser.parse_args(["callback", *files[:2], *rules])).federation
    assert callback == clientauth.Federation(("/t/token-0",), ("api://contoso",), ("ops",))
    # Secure by default: Entra's audience only, and no namespace may use the pod's own token.
    default = cli.config_from_args(parser.parse_args(["run"])).federation
    assert default == clientauth.Federation((), (ENTRA,), ()) == clientauth.DEFAULTS


def test_an_audience_the_installer_did_not_allow_is_refused_naming_the_flag() -> None:
    allowed = clientauth.Federation(audiences=(ENTRA,), ambient_namespaces=("ops",))
    for sa in ("mail-client", None):  # before any token is requested or read, in either mode
        with pytest.raises(ProviderError) as caught:
            clientauth.check(allowed, "ops", "https://kubernetes.default.svc", sa)
        assert (caught.value.kind, caught.value.reason) == (ErrorKind.BAD_CONFIG, "AudienceNotAllowed")
        assert "--federation-audience" in caught.value.message and ENTRA in caught.value.message
    clientauth.check(allowed, "team-a", ENTRA, "mail-client")


def test_the_operators_own_token_only_for_the_namespaces_the_installer_lists() -> None:
    allowed = clientauth.Federation(audiences=(ENTRA,), ambient_namespaces=("ops",))
    clientauth.check(allowed, "ops", ENTRA, None)
    for federation, namespace in ((allowed, "team-b"), (clientauth.DEFAULTS, "ops")):
        with pytest.raises(ProviderError) as caught:
            clientauth.check(federation, namespace, ENTRA, None)
        assert (caught.value.kind, caught.value.reason) == (ErrorKind.BAD_CONFIG, "AmbientCredentialsNotAllowed")
        assert "serviceAccountName" in caught.value.message and namespace in caught.value.message


def test_spec_names_a_service_account_of_its_own_namespace() -> None:
    spec = change(MS_CLIENT_CREDENTIALS, drop=("clientSecretRef",), federatedCredential={"serviceAccountName": "mail"})
    assert parse_spec(spec, "t").federated_credential == FederatedCredential(ENTRA, "mail")
    for bad in ("other-ns/mail", "Mail", "x" * 254):
        with pytest.raises(SpecError, match="serviceAccountName"):
            parse_spec(change(spec, federatedCredential={"serviceAccountName": bad}), "t")


def test_the_hint_names_the_charts_value_by_its_full_path() -> None:
    with pytest.raises(ProviderError, match=r"providers\.federatedToken\.enabled=true"):
        clientauth.read_assertion([], ENTRA)


@pytest.mark.parametrize("code", [700211, 700212, 700213, 70021, 700024, 50013, 90061])
def test_entras_refusals_of_an_assertion_are_an_invalid_client_that_says_why(code: int) -> None:
    """The bodies as the local Entra renders them (its catalogue holds Entra's wording)."""
    from emailtoken.providers.microsoft import INVALID_CLIENT_CODES, classify
    from emailtoken_dev.devprovider.errors import microsoft_error, render

    params = {"issuer": "https://oidc.example", "subject": "system:serviceaccount:a:b", "audience": ENTRA}
    body = render(microsoft_error(code, **params), now=time.time(), correlation_id=None, base_url="https://x")
    err = classify(body)
    assert (err.kind, err.code) == (ErrorKind.INVALID_CLIENT, f"AADSTS{code}")
    assert err.message.startswith(INVALID_CLIENT_CODES[code])


@pytest.mark.parametrize("raw", ["not json", "[1, 2]", '"a string"', "42"])
def test_a_service_account_key_that_is_not_a_json_object_is_refused_naming_where_never_quoting_it(raw: str) -> None:
    with pytest.raises(ValueError) as caught:
        clientauth.service_account_key(raw, "Secret mail/sa key 'key.json'")
    assert str(caught.value) == "Secret mail/sa key 'key.json' is not a JSON service account key"
    assert clientauth.service_account_key('{"type": "service_account"}', "x") == {"type": "service_account"}

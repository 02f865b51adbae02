"""The first hour: failures to reach or use the Kubernetes API become one line that says what to do.

Pure parts here (the words, the retry and reminder policy, the kubeconfig loader on real files,
the command lines); the real processes against a real API server, a refusing port and a silent
socket are in tests/cluster/test_first_hour_failures.py.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pytest

from emailtoken import apicheck, cli, kubectl_plugin, redirecturl
from emailtoken.kube import ConfigError, Credentials, KubeError, Unreachable, load_config

CREDS = Credentials("https://10.0.0.1:6443", "kubeconfig /home/me/.kube/config (context prod, user me)")
POD = Credentials("https://10.96.0.1:443", "the Pod's ServiceAccount", in_cluster=True)
HINT = "grant it to the operator's ServiceAccount"


def words(exc: KubeError, creds: Credentials = CREDS) -> str:
    return apicheck.explain(exc, creds, timeout=3, rbac_hint=HINT)


def test_each_failure_says_what_is_wrong_and_what_to_do() -> None:
    refused = words(
        Unreachable("HTTPSConnection(host='10.0.0.1', port=6443): Failed to establish: [Errno 111] Connection refused")
    )
    assert refused == (
        "cannot reach the Kubernetes API server at https://10.0.0.1:6443: connection refused; check that it is "
        "running and that kubeconfig /home/me/.kube/config (context prod, user me) names the right server"
    )
    silent = words(Unreachable("HTTPSConnectionPool(host='10.0.0.1', port=6443): Read timed out. (read timeout=3)"))
    assert "it accepted the connection but did not answer within 3 s" in silent
    assert "NetworkPolicy" in words(Unreachable("Connection refused"), POD)
    rejected = words(KubeError(401, "Unauthorized"))
    assert "rejected the credentials of kubeconfig /home/me/.kube/config" in rejected
    assert rejected.endswith("invalid or expired; log in again or use another kubeconfig")
    assert words(KubeError(401, "Unauthorized"), POD).endswith("check that its ServiceAccount exists")
    forbidden = words(KubeError(403, 'emailtokens.emailtoken.io is forbidden: User "x" cannot list resource'))
    assert forbidden.startswith('emailtokens.emailtoken.io is forbidden: User "x" cannot list resource (403 Forbidden')
    assert forbidden.endswith(HINT)
    assert "install the CRD" in words(KubeError(404, "Not Found"))
    assert words(KubeError(500, "etcdserver: request timed out")) == (
        "the Kubernetes API server at https://10.0.0.1:6443 answered HTTP 500: etcdserver: request timed out"
    )
    for text in (refused, silent, rejected, forbidden):
        assert "\n" not in text and "Traceback" not in text


class Prober:
    """Answers the probe with the scripted failures, then succeeds."""

    def __init__(self, *failures: KubeError) -> None:
        self.failures = list(failures)
        self.calls: list[str | None] = []

    async def probe_tokens(self, namespace: str | None) -> None:
        self.calls.append(namespace)
        if self.failures:
            raise self.failures.pop(0)


async def wait(api: Prober, *, remind: float = 60.0) -> tuple[apicheck.ApiProblem | None, list]:
    seen: list[apicheck.ApiProblem | None] = []
    problem = await apicheck.wait_for_api(
        api, CREDS, ("a", "b"), timeout=3, rbac_hint=HINT, on_problem=seen.append, retry=0.01, remind=remind
    )
    return problem, seen


async def test_an_unreachable_server_is_said_once_then_periodically_and_its_return_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    down = Unreachable("Connection refused")
    with caplog.at_level(logging.INFO, logger="emailtoken"):
        problem, seen = await wait(Prober(*[down] * 20))
    assert problem is None
    lines = [r for r in caplog.records if r.name == "emailtoken"]
    assert [r.levelname for r in lines] == ["WARNING", "INFO"]
    assert lines[0].getMessage().endswith("names the right server; checking again every 0.01 s")
    assert lines[1].getMessage() == "the Kubernetes API server at https://10.0.0.1:6443 answers now"
    assert seen[-1] is None and seen[0] is not None and not seen[0].blocking
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="emailtoken"):
        await wait(Prober(*[down] * 20), remind=0.05)
    assert 2 <= len([r for r in caplog.records if r.levelname == "WARNING"]) < 20


async def test_what_a_person_must_fix_is_an_error_and_rejected_credentials_end_the_wait(
    caplog: pytest.LogCaptureFixture,
) -> None:
    forbidden = KubeError(403, "forbidden")
    api = Prober(forbidden, forbidden, KubeError(401, "Unauthorized"), forbidden)
    with caplog.at_level(logging.INFO, logger="emailtoken"):
        problem, seen = await wait(api)
    assert problem is not None and problem.fatal and problem.status == 401
    assert [r.levelname for r in caplog.records] == ["ERROR", "ERROR"]  # the 403 once, then the 401
    assert "checking again" not in caplog.records[1].getMessage()
    assert seen[0] is not None and seen[0].blocking and not seen[0].fatal


async def test_every_namespace_is_checked_and_all_namespaces_is_one_cluster_wide_list() -> None:
    api = Prober()
    await wait(api)
    assert api.calls == ["a", "b"]
    api = Prober()
    await apicheck.check(api, ())
    assert api.calls == [None]


# -- credentials ------------------------------------------------------------------------------


def test_a_missing_or_broken_kubeconfig_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with pytest.raises(ConfigError) as missing:
        load_config()
    assert str(missing.value) == (
        f"no Kubernetes credentials: KUBECONFIG={tmp_path / 'missing'} is not a file and this is not a Pod; "
        "point KUBECONFIG at a kubeconfig file (or run in a Pod with a ServiceAccount)"
    )
    broken = tmp_path / "broken"
    broken.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\n")
    with pytest.raises(ConfigError) as bad:
        load_config(kubeconfig=str(broken))
    assert str(bad.value).startswith(f"cannot use the kubeconfig --kubeconfig {broken}: ")
    assert "\n" not in str(bad.value)


def test_the_kubeconfig_names_server_context_user_and_namespace(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import kubernetes

    path = tmp_path / "config"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: prod\n"
        "clusters: [{name: c, cluster: {server: 'https://10.0.0.1:6443'}}]\n"
        "users: [{name: me, user: {token: t}}]\n"
        "contexts: [{name: prod, context: {cluster: c, user: me, namespace: mail}}]\n"
    )
    monkeypatch.setenv("KUBECONFIG", str(path))
    creds = load_config(configuration=kubernetes.client.Configuration())
    assert creds == Credentials(
        "https://10.0.0.1:6443", f"kubeconfig {path} (context prod, user me)", in_cluster=False, namespace="mail"
    )


def test_in_a_pod_the_service_account_comes_first_and_its_absence_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The operator's order is kopf's (the Pod's ServiceAccount first), the plugin's kubectl's (a
    kubeconfig that exists first). This machine is no Pod: its ServiceAccount files are missing."""
    import kubernetes

    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with pytest.raises(ConfigError) as neither:
        load_config()
    assert str(neither.value).startswith(
        "no Kubernetes credentials: the Pod's ServiceAccount credentials cannot be read ("
    )
    assert f"KUBECONFIG={tmp_path / 'missing'} is not a file; point KUBECONFIG" in str(neither.value)
    path = tmp_path / "config"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'https://10.0.0.1:6443'}}]\n"
        "users: [{name: me, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: c, user: me}}]\n"
    )
    monkeypatch.setenv("KUBECONFIG", str(path))
    creds = load_config(configuration=kubernetes.client.Configuration(), in_cluster_first=False)
    assert creds.server == "https://10.0.0.1:6443" and not creds.in_cluster


# -- command lines ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://mail-auth.example.com", None),
        ("https://mail-auth.example.com/emailtoken/", None),
        ("http://localhost:8080", None),
        ("http://127.0.0.2:8080", None),
        ("http://[::1]:8080", None),
        ("http://mail-auth.example.com", "plain http on a host that is not loopback"),
        ("mail-auth.example.com", "is not an absolute http(s) URL"),
        ("/callback", "is not an absolute http(s) URL"),
        ("ftp://mail-auth.example.com", "is not an absolute http(s) URL"),
        ("https://mail-auth.example.com/callback", "ends in /callback"),
        ("https://mail-auth.example.com/?x=1", "has a query or fragment"),
        ("https://mail-auth.example.com:http", "is not a URL"),
    ],
)
def test_the_redirect_base_url_rule(url: str, problem: str | None) -> None:
    found = redirecturl.problem(url)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_run_refuses_a_redirect_base_url_that_cannot_work(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.build_parser().parse_args(["run", "--redirect-base-url", "http://mail-auth.example.com"])
    assert exit_.value.code == 2
    assert "'http://mail-auth.example.com' is plain http on a host that is not loopback" in capsys.readouterr().err
    args = cli.build_parser().parse_args(["run", "--redirect-base-url", "https://mail-auth.example.com"])
    assert cli.config_from_args(args).redirect_base_url == "https://mail-auth.example.com"


def test_the_api_timeout_comes_from_the_flag_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli.config_from_args(cli.build_parser().parse_args(["run"])).api_timeout == apicheck.API_TIMEOUT
    monkeypatch.setenv(apicheck.API_TIMEOUT_ENV, "2.5")
    assert cli.config_from_args(cli.build_parser().parse_args(["run"])).api_timeout == 2.5
    assert cli.config_from_args(cli.build_parser().parse_args(["run", "--api-timeout", "4"])).api_timeout == 4
    args = kubectl_plugin.build_parser().parse_args(["list", "--request-timeout", "1m"])
    assert args.request_timeout == 60
    for nonsense in ("0", "-1", "soon"):
        monkeypatch.setenv(apicheck.API_TIMEOUT_ENV, nonsense)
        assert apicheck.default_api_timeout() == apicheck.API_TIMEOUT


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _parsers(sub)
    return found


def test_help_is_plain_text_and_every_run_option_says_what_it_does() -> None:
    for parser in _parsers(cli.build_parser()) + _parsers(kubectl_plugin.build_parser()):
        assert "``" not in parser.format_help(), parser.prog
    run = next(p for p in _parsers(cli.build_parser()) if p.prog.endswith(" run"))
    for action in run._actions:
        assert action.help, f"{action.option_strings} has no help"
        takes_value = action.nargs != 0 and not isinstance(action, argparse.BooleanOptionalAction)
        if takes_value and action.default not in (None, [], argparse.SUPPRESS) and not action.choices:
            assert "default" in action.help, f"{action.option_strings} does not show its default"


def test_apicheck_keeps_the_command_line_free_of_kubernetes_clients() -> None:
    """apicheck is imported to build every parser: it must not pull the Kubernetes client in."""
    import subprocess
    import sys

    code = "import sys, emailtoken.apicheck; print('kubernetes' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"

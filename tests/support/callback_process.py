"""Run the real callback service (``python -m emailtoken callback``) as a child process for tests,
and drive its admin page over HTTP the way a browser without JavaScript would."""

from __future__ import annotations

import re
import signal
import sys
import time
from html import unescape
from pathlib import Path

import requests

from tests.support.childprocess import ChildProcess
from tests.support.kube import free_env
from tests.support.operator_process import REPO
from tests.support.ports import free_port


class CallbackProcess(ChildProcess):
    """``emailtoken callback`` on loopback ports chosen here; logs captured to a file."""

    label = "callback"

    def __init__(
        self,
        kubeconfig: Path,
        workdir: Path,
        *,
        ca_bundle: str | None,
        state_key_file: Path | None = None,
        extra_args: list[str] | None = None,
        name: str = "callback",
        redirect_base_url: str | None = None,
    ) -> None:
        """``redirect_base_url``: where the provider sends the browser back (default: this process's
        public port; replicas behind one address share that address instead)."""
        self.public_port = free_port()
        self.admin_port = free_port()
        self.public_url = f"http://127.0.0.1:{self.public_port}"
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"
        self.redirect_uri = f"{redirect_base_url or self.public_url}/callback"
        args = [
            sys.executable,
            "-m",
            "emailtoken",
            "callback",
            "--public-host",
            "127.0.0.1",
            "--public-port",
            str(self.public_port),
            "--admin-port",
            str(self.admin_port),
            "--redirect-base-url",
            redirect_base_url or self.public_url,
            "--admin-url",
            self.admin_url + "/",
            "-v",
        ]
        if ca_bundle:  # the local provider: its CA, and its host allowed like an installer would
            args += ["--ca-bundle", ca_bundle, "--allow-provider-host", "127.0.0.1"]
        if state_key_file:
            args += ["--state-key-file", str(state_key_file)]
        args += extra_args or []
        env = {**free_env(), "KUBECONFIG": str(kubeconfig)}
        env.pop("EMAILTOKEN_STATE_KEY", None)
        super().__init__(workdir / f"{name}.log", args, env, REPO)

    def start(self, timeout: float = 20) -> CallbackProcess:
        started = self.log.count("callback service ready")
        super().start()
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log.count("callback service ready") > started:
                return self
            if self.proc.poll() is not None:
                raise AssertionError(f"callback exited ({self.proc.returncode}):\n{self.log[-4000:]}")
            time.sleep(0.1)
        raise AssertionError(f"callback did not start:\n{self.log[-4000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int | None:
        return super().stop(sig, timeout)

    def restart(self) -> CallbackProcess:
        """Stop and start again on the same ports (memory is lost, the key file is not)."""
        self.stop()
        return self.start()


_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class AdminSession:
    """A cookie-keeping HTTP client for the admin page (no redirects followed)."""

    def __init__(self, admin_url: str) -> None:
        self.url = admin_url.rstrip("/")
        self.http = requests.Session()
        self.http.trust_env = False

    def index(self) -> requests.Response:
        return self.http.get(self.url + "/", timeout=20)

    def csrf(self) -> str:
        page = self.index()
        page.raise_for_status()
        match = _CSRF.search(page.text)
        assert match, "no CSRF field on the admin page (no sign-in button?)"
        return unescape(match.group(1))

    def start(self, namespace: str, name: str, **extra: str) -> requests.Response:
        """Press "Get Email Token": the answer is a 303 to the provider."""
        data = {"csrf": self.csrf(), **extra}
        return self.http.post(
            f"{self.url}/tokens/{namespace}/{name}/authorize", data=data, allow_redirects=False, timeout=30
        )

    def start_url(self, namespace: str, name: str) -> str:
        answer = self.start(namespace, name)
        assert answer.status_code == 303, (answer.status_code, answer.text[:2000])
        return answer.headers["Location"]


def browser_get(url: str) -> requests.Response:
    """What the browser does with the provider's redirect: a plain GET, no cookies, no redirects."""
    http = requests.Session()
    http.trust_env = False
    return http.get(url, allow_redirects=False, timeout=60)

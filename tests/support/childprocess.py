"""A child process of a test whose output goes to a log file: the operator, the callback, a chart's container."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import IO


class ChildProcess:
    """Started with ``args``/``env`` as they are at :meth:`start`; stopped by a signal, then killed."""

    #: how failures name the process
    label = "process"
    #: how long :meth:`wait_log` waits by default
    wait_timeout = 20.0

    def __init__(self, log_path: Path, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.log_path = log_path
        self.args = args
        self.env = env
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> ChildProcess:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        """Send ``sig``, wait ``timeout`` seconds, then SIGKILL: the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._log:
            self._log.close()
            self._log = None
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, like an OOM kill or node loss."""
        self.stop(signal.SIGKILL)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, text: str, timeout: float | None = None) -> None:
        """Wait until ``text`` is in the log; fail at once if the process exits first."""
        deadline = time.monotonic() + (self.wait_timeout if timeout is None else timeout)
        while time.monotonic() < deadline:
            if text in self.log:
                return
            if self.proc and self.proc.poll() is not None:
                raise AssertionError(f"{self.label} exited ({self.proc.returncode}):\n{self.log[-4000:]}")
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not in the log of {self.label}:\n{self.log[-4000:]}")

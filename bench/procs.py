"""Child processes of a benchmark run and their resource use, read from /proc."""

from __future__ import annotations

import ctypes
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcStats:
    """CPU seconds (user + system), resident and peak resident memory of one process."""

    cpu_s: float
    rss_mib: float
    hwm_mib: float

    def to_dict(self) -> dict[str, float]:
        """JSON form."""
        return {"cpu_s": round(self.cpu_s, 3), "rss_mib": round(self.rss_mib, 1), "hwm_mib": round(self.hwm_mib, 1)}


def proc_stats(pid: int) -> ProcStats:
    """Read /proc/<pid>/stat (utime, stime) and /proc/<pid>/status (VmRSS, VmHWM)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime: fields 14 and 15 of stat
    mem: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            mem[key] = int(value.split()[0]) / 1024
    return ProcStats(cpu_s=cpu, rss_mib=mem.get("VmRSS", 0.0), hwm_mib=mem.get("VmHWM", 0.0))


def machine() -> dict[str, Any]:
    """Cores, memory and CPU model from /proc, plus the Python version."""
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "cpu_model": model,
        "python": sys.version.split()[0],
    }


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the harness dies (Linux prctl PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def child_env(**extra: str) -> dict[str, str]:
    """Environment for children: no REQUESTS_CA_BUNDLE (the baseline's requests would trust it over its
    ``verify=``; the operator is given ``--ca-bundle``), the package on the path."""
    env = dict(os.environ)
    env.pop("REQUESTS_CA_BUNDLE", None)
    src = str(REPO / "operator")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), src, env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


class Child:
    """A child process with its stderr (and stdout after the ready line) in a log file."""

    def __init__(self, name: str, args: list[str], workdir: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.args = args
        self.log_path = workdir / f"{name}.log"
        self.env = env or child_env()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.started_at = 0.0

    @property
    def pid(self) -> int:
        """The process id (the process must be started)."""
        assert self.proc is not None
        return self.proc.pid

    def start(self, *, ready_line: bool = False, timeout: float = 60.0) -> dict[str, Any]:
        """Spawn; with ``ready_line`` wait for the first stdout line and return it parsed as JSON."""
        self._log = open(self.log_path, "ab")
        self.started_at = time.time()
        stdout: Any = subprocess.PIPE if ready_line else self._log
        self.proc = subprocess.Popen(
            self.args, stdout=stdout, stderr=self._log, env=self.env, cwd=REPO, preexec_fn=_die_with_parent
        )
        if not ready_line:
            return {}
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            self.stop()
            raise RuntimeError(f"{self.name} did not start within {timeout}s; see {self.log_path}")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} exited before it was ready; see {self.log_path}")
        return dict(json.loads(line))

    def stats(self) -> ProcStats:
        """Resource use so far."""
        return proc_stats(self.pid)

    def alive(self) -> bool:
        """Still running?"""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.proc.returncode

    def tail(self, chars: int = 3000) -> str:
        """The end of the log, for error messages."""
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

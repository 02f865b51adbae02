"""The image's installation, done as the Dockerfile does it, in a clean venv.

The Dockerfile's two install steps are `requirements/install.sh deps` and `... app`; this test
runs the same script on a copy of exactly what the Dockerfile copies (requirements/,
pyproject.toml, README.md, operator/), then uses the console scripts from that venv and checks
that nothing but the lock's pins and the project is in it (no dev tools, test tools or pip).
The pinned wheels come from a wheelhouse in the user's cache
(`~/.cache/emailtoken-operator/wheelhouse/<lock hash>`), filled once from the package index
with the same hash-checked lock; then the install runs offline (PIP_NO_INDEX, PIP_FIND_LINKS:
pip's own settings, the script is unchanged) and still checks every file's sha256 (see
tests/README.md).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements" / "image.txt"
BUILD_LOCK = ROOT / "requirements" / "build.txt"
COPIED = ("requirements", "pyproject.toml", "README.md", "operator")


def _run(
    *args: str | Path, timeout: float = 240, env: dict[str, str] | None = None, **kw: object
) -> subprocess.CompletedProcess[str]:
    """Run as in the image: no PYTHONPATH or PYTHONHOME of the caller's reaches the venv."""
    clean = {k: v for k, v in (env or os.environ).items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=clean, **kw)  # type: ignore[call-overload]


def _wheelhouse() -> Path:
    """This platform's wheels of the lock and of the build lock (the setuptools that builds the project),
    hash-checked."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    key = hashlib.sha256(LOCK.read_bytes() + BUILD_LOCK.read_bytes()).hexdigest()[:12]
    house = cache / "emailtoken-operator" / "wheelhouse" / key
    if not (house / ".complete").exists():
        pip = (sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-d", house)
        for args in (("--require-hashes", "-r", LOCK), ("--require-hashes", "-r", BUILD_LOCK)):
            done = _run(*pip, *args, timeout=600)
            assert done.returncode == 0, done.stderr[-3000:]
        (house / ".complete").touch()
    return house


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """/opt/venv of the image, built here: the Dockerfile's build context, then its two steps."""
    src = tmp_path_factory.mktemp("context")
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(source, src / name)
    venv = tmp_path_factory.mktemp("image") / "venv"
    env = {
        "PYTHON": sys.executable,
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(Path.home()),
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(_wheelhouse()),
    }
    for step in (("deps", venv), ("app", venv, ".")):
        done = _run("sh", "requirements/install.sh", *step, cwd=src, env=env)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    yield venv


def _distributions(venv: Path) -> set[str]:
    code = "import importlib.metadata as m; print('\\n'.join(d.metadata['Name'] for d in m.distributions()))"
    out = _run(venv / "bin" / "python", "-c", code).stdout
    return {re.sub(r"[-_.]+", "-", name).lower() for name in out.split()}


def test_console_scripts_work_from_the_image_venv(image_venv: Path) -> None:
    bin_ = image_venv / "bin"
    help_ = _run(bin_ / "emailtoken", "--help", timeout=60)
    assert help_.returncode == 0, help_.stderr
    assert "run" in help_.stdout and "callback" in help_.stdout
    valid = _run(bin_ / "emailtoken", "validate", ROOT / "examples" / "microsoft-client-credentials.yaml", timeout=60)
    assert valid.returncode == 0, valid.stdout + valid.stderr
    plugin = _run(bin_ / "kubectl-emailtoken", "--help", timeout=60)
    assert plugin.returncode == 0, plugin.stderr
    # The demo is a development tool: the image answers with how to get it, in one line.
    demo = _run(bin_ / "emailtoken", "demo", timeout=60)
    assert demo.returncode == 2
    assert demo.stderr.count("\n") == 1 and "devtools" in demo.stderr


def test_image_venv_holds_the_lock_and_the_project_only(image_venv: Path) -> None:
    pinned = {re.sub(r"[-_.]+", "-", m).lower() for m in re.findall(r"^([A-Za-z0-9][\w.-]*)==", LOCK.read_text(), re.M)}
    installed = _distributions(image_venv)
    assert installed == (pinned & installed) | {"emailtoken-operator"}
    # Every pin installed (markers aside: none of this platform's pins is missing) and consistent.
    assert {"kopf", "kubernetes", "msal", "google-auth", "uvloop"} <= installed
    check = _run(sys.executable, "-m", "pip", "--python", image_venv / "bin" / "python", "check", timeout=60)
    assert check.returncode == 0, check.stdout
    for absent in ("emailtoken-operator-dev", "kmock", "trustme", "pytest", "playwright", "ruff", "pip", "setuptools"):
        assert absent not in installed
    no_dev = _run(image_venv / "bin" / "python", "-c", "import emailtoken_dev", timeout=60)
    assert no_dev.returncode != 0 and "ModuleNotFoundError" in no_dev.stderr


def test_the_wheel_carries_no_dev_tools(image_venv: Path) -> None:
    (record,) = image_venv.glob("lib/python*/site-packages/emailtoken_operator-*.dist-info/RECORD")
    names = [line.split(",", 1)[0] for line in record.read_text().splitlines()]
    assert "emailtoken/cli.py" in names and "emailtoken/crds/emailtokens.emailtoken.io.yaml" in names
    assert not [n for n in names if re.search(r"devprovider|localapi|emailtoken_dev|/demo\.py$|^tests/", n)]

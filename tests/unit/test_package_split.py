"""The runtime package stands alone: the development tools (emailtoken_dev) are a separate
distribution that the image does not install, so no runtime module may need them."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

RUNTIME = Path(__file__).parents[2] / "operator" / "emailtoken"

# Import every runtime module with the dev package and its test-only dependencies made
# unimportable (None in sys.modules), then run `emailtoken demo` as a user without them would.
_PROBE = """
import importlib, pkgutil, sys
for blocked in ("emailtoken_dev", "kmock", "trustme"):
    sys.modules[blocked] = None
import emailtoken
for info in pkgutil.walk_packages(emailtoken.__path__, "emailtoken."):
    if info.name != "emailtoken.__main__":
        importlib.import_module(info.name)
from emailtoken.cli import main
sys.exit(main(["demo", "--lifetime", "5"]))
"""


def test_no_runtime_module_imports_the_dev_package() -> None:
    offenders = []
    for path in RUNTIME.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(RUNTIME)}: {n}" for n in names if n.split(".")[0] == "emailtoken_dev"]
    assert offenders == []


def test_runtime_imports_and_demo_hint_without_dev_tools() -> None:
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "pip install -e ./devtools" in lines[0]


def test_demo_subcommand_comes_from_the_dev_package() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "emailtoken", "demo", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "--lifetime" in done.stdout

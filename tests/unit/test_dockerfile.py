"""The Dockerfile, .dockerignore and the image's dependency lock, checked by parsing (no Docker
engine here; tests/e2e/test_image_install.py runs the same install into a clean venv).

A small parser joins continuation lines, resolves ARG defaults in FROM lines and splits
the stages, so the rules below are asserted on what `docker build` would execute: every
base image pinned to a version (never `latest`), a final stage that copies only the venv,
runs as a numeric non-root user, starts `emailtoken`, carries the OCI labels and keeps
build tools and pip caches out.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
IMAGE = "ghcr.io/emailtoken-operator/emailtoken-operator"
BUILD_TOOLS = ("gcc", "g++", "build-essential", "make", "cmake", "git", "curl", "wget", "apt-get install")
OCI_LABELS = (
    "org.opencontainers.image.title",
    "org.opencontainers.image.description",
    "org.opencontainers.image.source",
    "org.opencontainers.image.licenses",
    "org.opencontainers.image.version",
)


@dataclass
class Instruction:
    keyword: str
    value: str


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [i.value for i in self.instructions if i.keyword == keyword]


def instructions(text: str) -> list[Instruction]:
    """Dockerfile instructions with continuation lines joined and comments dropped."""
    result: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if not full:
            continue
        keyword, _, value = full.partition(" ")
        result.append(Instruction(keyword.upper(), value.strip()))
    assert not pending, "dangling line continuation"
    return result


def substitute(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), value)


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the build stages."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for ins in instructions(text):
        if ins.keyword == "FROM":
            parts = ins.value.split()
            parts = [p for p in parts if not p.startswith("--platform")]
            image = substitute(parts[0], global_args)
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(image, name))
        elif not stages:
            assert ins.keyword == "ARG", f"{ins.keyword} before the first FROM"
            key, _, default = ins.value.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append(ins)
    return global_args, stages


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return parse(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def final(dockerfile: tuple[dict[str, str], list[Stage]]) -> Stage:
    return dockerfile[1][-1]


def test_multi_stage_with_the_same_pinned_slim_base(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    _, stages = dockerfile
    assert len(stages) >= 2
    assert stages[0].name == "builder"
    images = {s.image for s in stages}
    assert len(images) == 1, "builder and final must share the base: the venv links to its python"
    (image,) = images
    repository, _, tag = image.partition("@")[0].partition(":")
    assert repository == "python"
    assert re.fullmatch(r"3\.11\.\d+-slim-(bookworm|trixie)", tag), f"pin an exact version, got {tag!r}"


def test_no_latest_anywhere() -> None:
    assert "latest" not in DOCKERFILE.read_text(encoding="utf-8").lower()
    values = (ROOT / "charts" / "emailtoken-operator" / "values.yaml").read_text(encoding="utf-8")
    assert ":latest" not in values and not re.search(r"^\s*tag:\s*[\"']?latest", values, re.M)
    _, stages = parse(DOCKERFILE.read_text(encoding="utf-8"))
    for stage in stages:
        assert ":" in stage.image.split("/")[-1] or "@sha256:" in stage.image, f"unpinned FROM {stage.image}"


def test_builder_installs_the_lock_then_the_project_wheel(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    """Pinned dependencies in their own layer (before the source is copied), then the wheel."""
    builder = dockerfile[1][0]
    steps = [(i.keyword, i.value) for i in builder.instructions if i.keyword in ("COPY", "RUN")]
    assert steps[:2] == [
        ("COPY", "requirements/ ./requirements/"),
        ("RUN", "sh requirements/install.sh deps /opt/venv"),
    ]
    assert ("COPY", "operator/ ./operator/") in steps[2:]
    assert steps[-1][0] == "RUN" and steps[-1][1].startswith("sh requirements/install.sh app /opt/venv .")
    env = " ".join(builder.all("ENV"))
    assert "PIP_NO_CACHE_DIR=1" in env


def test_install_script_checks_hashes_and_installs_nothing_unpinned() -> None:
    script = (ROOT / "requirements" / "install.sh").read_text(encoding="utf-8")
    deps, app = script.split("deps)", 1)[1].split("app)", 1)
    assert "venv --without-pip" in deps
    assert re.search(r"install --no-deps --require-hashes --only-binary :all:\s*\\?\s*-r \"\$here/image.txt\"", deps)
    assert "install --no-deps --no-index" in app
    # The build backend too is pinned by hash: no build isolation fetching the newest setuptools.
    assert re.search(r"install --no-deps --require-hashes --only-binary :all:\s*\\?\s*-r \"\$here/build.txt\"", app)
    assert re.search(r"wheel --no-deps --no-build-isolation", app)


def test_build_lock_pins_the_build_backend_with_hashes() -> None:
    text = (ROOT / "requirements" / "build.txt").read_text(encoding="utf-8")
    pins = dict(re.findall(r"^([A-Za-z0-9][\w.-]*)==(\S+)", text, re.M))
    assert set(pins) == {"setuptools"}
    assert re.search(r"--hash=sha256:[0-9a-f]{64}", text)
    backend = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["build-system"]
    (requirement,) = (Requirement(r) for r in backend["requires"])
    assert requirement.specifier.contains(pins["setuptools"]), "run `make lock`"


def _pins() -> dict[str, tuple[str, list[str]]]:
    """requirements/image.txt as name -> (version, hashes)."""
    text = (ROOT / "requirements" / "image.txt").read_text(encoding="utf-8")
    pins = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        head = re.match(r"([A-Za-z0-9][\w.-]*)==([^\s;\\]+)", block)
        if head:
            pins[canonicalize_name(head.group(1))] = (head.group(2), re.findall(r"--hash=sha256:([0-9a-f]{64})", block))
    return pins


def test_lock_pins_every_dependency_with_hashes() -> None:
    pins = _pins()
    assert pins and all(hashes for _, hashes in pins.values()), "every pin needs its files' sha256"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for line in project["dependencies"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in requirements/image.txt: run `make lock`"
        assert requirement.specifier.contains(pins[name][0], prereleases=True), f"{name}: run `make lock`"
    # kopf[uvloop]: the extra's packages are locked too.
    assert "uvloop" in pins


def test_lock_holds_no_development_or_test_tools() -> None:
    pins = _pins()
    for tool in ("emailtoken-operator-dev", "kmock", "trustme", "pytest", "playwright", "ruff", "pip", "setuptools"):
        assert tool not in pins


def test_one_image_name_everywhere() -> None:
    """Chart, kustomize, examples, docs, Makefile and Dockerfile name the same image."""
    found: dict[str, set[str]] = {}
    for path in ROOT.rglob("*"):
        if path.suffix not in {".yaml", ".md", ".tpl", ".json", ""} or not path.is_file():
            continue
        if any(part.startswith(".") or part in {"tests", "bench"} for part in path.relative_to(ROOT).parts):
            continue
        for image in re.findall(r"ghcr\.io/[\w.-]+/[\w.-]+", path.read_text(encoding="utf-8", errors="replace")):
            found.setdefault(image, set()).add(str(path.relative_to(ROOT)))
    assert set(found) == {IMAGE}, found
    assert f"IMAGE ?= {IMAGE}" in (ROOT / "Makefile").read_text(encoding="utf-8")


def test_final_stage_copies_only_the_venv(final: Stage) -> None:
    copies = final.all("COPY")
    assert copies == ["--from=builder /opt/venv /opt/venv"]
    assert not final.all("ADD")
    runs = " ".join(final.all("RUN")).lower()
    for tool in BUILD_TOOLS:
        assert tool not in runs, f"{tool} in the final stage"
    assert "pip install" not in runs
    assert "pip uninstall" in runs and "pip" in runs.split("uninstall", 1)[1]


def test_final_stage_runs_as_numeric_non_root(final: Stage) -> None:
    users = final.all("USER")
    assert users, "no USER in the final stage"
    user = users[-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and gid.isdigit(), "numeric user so runAsNonRoot can verify it"
    assert int(uid) != 0 and int(gid) != 0
    assert int(uid) == 65532, "the chart's runAsUser"
    last = [i.keyword for i in final.instructions]
    assert "RUN" not in last[last.index("USER") :], "nothing runs as root after USER"


def test_read_only_root_filesystem_friendly(final: Stage) -> None:
    env = " ".join(final.all("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "HOME=/tmp" in env
    assert "PATH=/opt/venv/bin:$PATH" in env
    assert final.all("WORKDIR")[-1] == "/tmp"
    assert not final.all("VOLUME")


def test_entrypoint_and_default_command(final: Stage) -> None:
    assert json.loads(final.all("ENTRYPOINT")[-1]) == ["emailtoken"]
    assert json.loads(final.all("CMD")[-1]) == ["run", "--all-namespaces"]
    ports = {int(p) for value in final.all("EXPOSE") for p in value.split()}
    assert ports == {8080, 8081, 9090}


def test_oci_labels(final: Stage) -> None:
    labels: dict[str, str] = {}
    for value in final.all("LABEL"):
        for token in shlex.split(value):
            key, _, val = token.partition("=")
            labels[key] = val
    for label in OCI_LABELS:
        assert labels.get(label), f"missing {label}"
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    args = dict(a.partition("=")[::2] for a in final.all("ARG"))
    assert args["VERSION"] == "0.1.0"
    assert args["SOURCE_URL"].startswith("https://")


def test_entrypoint_is_a_console_script() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^emailtoken = "emailtoken\.cli:main"$', pyproject, re.M)


def test_dockerignore_allows_only_the_build_inputs() -> None:
    lines = [
        ln.strip()
        for ln in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if ln.strip() and not ln.strip().startswith("#")
    ]
    assert lines[0] == "*", "allow-list: exclude everything first"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "requirements", "operator"}
    # Everything the Dockerfile COPYs from the context is allowed.
    _, stages = parse(DOCKERFILE.read_text(encoding="utf-8"))
    for stage in stages:
        for value in stage.all("COPY"):
            if value.startswith("--from="):
                continue
            *sources, _ = value.split()
            for source in sources:
                assert source.rstrip("/") in allowed, source
    assert "**/__pycache__" in lines

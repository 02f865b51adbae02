# Two entry points for a fresh machine: `make demo` runs the product, `make test` runs every test.
# Both create .venv and install what they need into it.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test unit lint bench bench-smoke clean k8s-assets lock wheel image

# The real API server tier (tests/cluster) takes kube-apiserver, kube-controller-manager
# (and etcd, else from PATH) from $$KUBEBUILDER_ASSETS, as controller-runtime's envtest does.
# In this repo's workspace they come xz-compressed from ../shared/k8s.
SHARED_K8S ?= ../shared/k8s
ifneq ($(wildcard $(SHARED_K8S)/kube-apiserver.xz),)
KUBEBUILDER_ASSETS ?= $(CURDIR)/.k8s-assets
K8S_ASSETS := .k8s-assets/kube-apiserver .k8s-assets/kube-controller-manager
endif
export KUBEBUILDER_ASSETS

.k8s-assets/%: $(SHARED_K8S)/%.xz
	mkdir -p .k8s-assets
	xz -dc $< > $@.tmp && chmod +x $@.tmp && mv $@.tmp $@

## Unpack the control-plane binaries for tests/cluster (prints the variable to export).
k8s-assets: $(K8S_ASSETS)
	@echo "export KUBEBUILDER_ASSETS=$(KUBEBUILDER_ASSETS)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# The runtime and the development tools (devtools/: local provider, embedded API, demo) are two
# distributions; the image installs only the first (see Dockerfile).
$(VENV)/.demo-installed: pyproject.toml devtools/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e . -e ./devtools
	touch $@

$(VENV)/.test-installed: pyproject.toml devtools/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]' -e ./devtools
	touch $@ $(VENV)/.demo-installed

## Run the operator on an embedded Kubernetes API with a built-in demo provider (Ctrl-C stops).
demo: $(VENV)/.demo-installed
	$(BIN)/emailtoken demo

# Two pytest-xdist workers, each test module whole on one (--dist loadfile: a module's
# operator, provider and control plane are set up once); TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2

## Run every test (unit, integration, cluster, e2e); Dovecot/Chromium/control-plane tests fail
## instead of skipping when CI=true.
test: $(VENV)/.test-installed $(K8S_ASSETS)
	$(BIN)/ruff check
	$(BIN)/python -m pytest -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile

unit: $(VENV)/.test-installed
	$(BIN)/python -m pytest tests/unit -q

lint: $(VENV)/.test-installed
	$(BIN)/ruff check
	$(BIN)/ruff format --check

## Benchmarks (not part of `make test`); see bench/README.md.
bench: $(VENV)/.test-installed
	$(BIN)/python -m bench.run

bench-smoke: $(VENV)/.test-installed
	$(BIN)/python -m pytest tests/integration/test_bench_smoke.py -q

## Pin the image's dependencies (requirements/image.txt, sha256 of every file) to the versions
## .venv ran the tests with, and the wheel's build backend (requirements/build.txt); run it after
## changing [project] dependencies or [build-system] in pyproject.toml.
lock: $(VENV)/.test-installed
	$(BIN)/python -m pip install -q uv
	$(BIN)/python -m pip freeze --exclude-editable > $(VENV)/tested-versions.txt
	$(BIN)/uv pip compile pyproject.toml --constraint $(VENV)/tested-versions.txt --generate-hashes \
	  --universal --python-version 3.11 --annotation-style line --custom-compile-command 'make lock' \
	  -o requirements/image.txt
	$(BIN)/uv pip compile requirements/build.in --generate-hashes --universal --python-version 3.11 \
	  --annotation-style line --custom-compile-command 'make lock' -o requirements/build.txt

## The wheel of the runtime (dist/); install the CLI from it with pipx (see README).
wheel: | $(BIN)/python
	rm -rf dist
	$(BIN)/python -m pip wheel --no-deps --wheel-dir dist .

IMAGE ?= ghcr.io/emailtoken-operator/emailtoken-operator
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
CONTAINER_ENGINE ?= $(shell command -v docker 2>/dev/null || command -v podman 2>/dev/null)

## The container image $(IMAGE):$(VERSION), with docker or podman (CONTAINER_ENGINE=... to choose).
image:
	@test -n "$(CONTAINER_ENGINE)" || { echo "make image needs docker or podman on PATH" >&2; exit 2; }
	$(CONTAINER_ENGINE) build -t $(IMAGE):$(VERSION) --build-arg VERSION=$(VERSION) .

clean:
	rm -rf $(VENV) .k8s-assets .pytest_cache build dist *.egg-info operator/*.egg-info devtools/*.egg-info

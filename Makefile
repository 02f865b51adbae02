# Two entry points for a fresh machine: `make demo` runs the product, `make test` runs every test.
# Both create .venv and install what they need into it.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test unit lint bench bench-smoke clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.demo-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[demo]'
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@ $(VENV)/.demo-installed

## Run the operator on an embedded Kubernetes API with a built-in demo provider (Ctrl-C stops).
demo: $(VENV)/.demo-installed
	$(BIN)/emailtoken demo

## Run every test (unit, integration, e2e); Dovecot/Chromium tests fail instead of skipping when CI=true.
test: $(VENV)/.test-installed
	$(BIN)/ruff check
	$(BIN)/python -m pytest -p no:cacheprovider

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

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info operator/*.egg-info

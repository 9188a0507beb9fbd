# Tollway: `make dev` runs the gateway locally, `make test` runs every check. Both work from a
# fresh clone: they create the environment first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
CONFIG ?= infra/gateway.example.yaml
PORT ?= 8080
# sam runs offline here: no telemetry, a region for validation, no credentials needed.
# PYTHON: the layer build uses the venv's pip (an absolute path: sam runs make in a scratch copy).
# LAMBDA_PYTHON_BIN: a CPython 3.13 (the runtime's), found on PATH or under pyenv: it compiles the
# layer's bytecode and runs the suites a second time; without one the layer ships no .pyc.
ifeq ($(origin LAMBDA_PYTHON_BIN),undefined)
LAMBDA_PYTHON_BIN := $(shell bash layers/tollway/lambda_python.sh)
endif
SAM_ENV := SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} PYTHON=$(CURDIR)/$(BIN)/python \
	LAMBDA_PYTHON_BIN=$(LAMBDA_PYTHON_BIN)

.PHONY: dev test lint unit functional e2e runtime-python conformance conformance-install lint-template build bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP) $(DEV_STAMP)

# `make dev` installs only what `tollway dev` needs (the [dev] extra: no test or build tools),
# and shows pip's progress. A full environment (`make test`'s) has it already.
$(DEV_STAMP): pyproject.toml
	@echo "make dev: installing what \`tollway dev\` needs into $(VENV) (first run, or pyproject.toml changed)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install --progress-bar on -e ".[dev]"
	touch $(DEV_STAMP)

dev: $(DEV_STAMP)
	$(BIN)/tollway dev --config $(CONFIG) --port $(PORT)

# The unit and functional suites run on TEST_WORKERS processes (pytest-xdist); the e2e suite
# (real processes, real time) one test at a time.
TEST_WORKERS ?= 2
test: $(STAMP) lint lint-template build conformance-install runtime-python
	$(BIN)/pytest -q -n $(TEST_WORKERS) tests/unit tests/functional
	$(BIN)/pytest -q tests/e2e

# The unit and functional suites (the Lambda handler included) again on the Lambda runtime's
# Python, 3.13, when the host has one: the main venv may be older (the code supports 3.11-3.13).
RUNTIME_VENV := .venv-py313
$(RUNTIME_VENV)/.installed: pyproject.toml
	$(LAMBDA_PYTHON_BIN) -m venv --clear $(RUNTIME_VENV)
	$(RUNTIME_VENV)/bin/pip install --quiet --upgrade pip
	$(RUNTIME_VENV)/bin/pip install --quiet -e ".[suite]"
	touch $@

ifeq ($(LAMBDA_PYTHON_BIN),)
runtime-python:
	@echo "warning: no CPython 3.13 found: the unit and functional suites run on $$($(BIN)/python -V) only"
else
runtime-python: $(RUNTIME_VENV)/.installed
	$(RUNTIME_VENV)/bin/pytest -q -p no:cacheprovider -n $(TEST_WORKERS) tests/unit tests/functional
endif

conformance-install:
	bash scripts/install_conformance.sh

conformance: $(STAMP) conformance-install
	$(BIN)/python scripts/conformance.py --serve-fixture

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

functional: $(STAMP)
	$(BIN)/pytest -q tests/functional

e2e: $(STAMP)
	$(BIN)/pytest -q tests/e2e

lint-template: $(STAMP)
	$(SAM_ENV) $(BIN)/sam validate --lint

layers/tollway/requirements.txt: pyproject.toml
	$(BIN)/python scripts/sync_layer_requirements.py

build: $(STAMP) layers/tollway/requirements.txt
	$(SAM_ENV) $(BIN)/sam build
	$(BIN)/python scripts/check_sam_build.py $(if $(LAMBDA_PYTHON_BIN),--expect-bytecode) .aws-sam/build

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf .aws-sam .pytest_cache .ruff_cache

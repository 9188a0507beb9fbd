# Tollway: `make dev` runs the gateway locally, `make test` runs every check. Both work from a
# fresh clone: they create the environment first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= infra/gateway.example.yaml
PORT ?= 8080
# sam runs offline here: no telemetry, a region for validation, no credentials needed.
# PYTHON: the layer build uses the venv's pip (an absolute path: sam runs make in a scratch copy).
# LAMBDA_PYTHON_BIN: a CPython 3.13 (the runtime's) to compile the layer's bytecode, found on
# PATH or under pyenv; without one the layer ships no .pyc (check_sam_build.py says so).
ifeq ($(origin LAMBDA_PYTHON_BIN),undefined)
LAMBDA_PYTHON_BIN := $(shell bash layers/tollway/lambda_python.sh)
endif
SAM_ENV := SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} PYTHON=$(CURDIR)/$(BIN)/python \
	LAMBDA_PYTHON_BIN=$(LAMBDA_PYTHON_BIN)

.PHONY: dev test lint unit functional e2e conformance conformance-install lint-template build bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

dev: $(STAMP)
	$(BIN)/tollway dev --config $(CONFIG) --port $(PORT)

test: $(STAMP) lint lint-template build conformance-install
	$(BIN)/pytest -q

conformance-install:
	bash scripts/install_conformance.sh

conformance: $(STAMP) conformance-install
	$(BIN)/python scripts/conformance.py --serve-fixture

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

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

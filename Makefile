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
SAM_ENV := SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1}

.PHONY: dev test lint unit functional e2e conformance lint-template build bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

dev: $(STAMP)
	$(BIN)/tollway dev --config $(CONFIG) --port $(PORT)

test: $(STAMP) lint lint-template build
	$(BIN)/pytest -q

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

build: $(STAMP)
	$(SAM_ENV) $(BIN)/sam build
	$(BIN)/python scripts/check_sam_build.py .aws-sam/build

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf .aws-sam .pytest_cache .ruff_cache

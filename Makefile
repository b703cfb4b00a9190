# Lepton Engine — every target creates .venv and installs what it needs.
SHELL  := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
# torch/torchvision are pinned to the builds this project is tested with.
TORCH  := torch==2.14.1 torchvision==0.29.1
PLUGINS := $(wildcard plugins/*)
STAMP  := $(VENV)/.installed
# The local multi-node cluster's state dir (address, token, pids): `make cluster-up`.
CLUSTER_DIR ?= .lepton-cluster
# This machine's pip config names local indexes that lack most packages: drop that noise.
QUIET  := { grep -v -e 'is ignored: it is neither' -e 'WheelFile(wheel_path' -e '^  !!' || true; }

.PHONY: install demo test test-fast test-ray test-slow lint format bench clean \
        check-cluster cluster-up cluster-down

$(STAMP): pyproject.toml $(wildcard plugins/*/pyproject.toml) Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip 2>&1 | $(QUIET)
	$(PIP) install -q $(TORCH) 2>&1 | $(QUIET)
	$(PIP) install -q -e '.[dev,tune,export]' $(foreach p,$(PLUGINS),-e $(p)) 2>&1 | $(QUIET)
	# The NLP plugin's optional extras, so the tests exercise the pretrained MiniLM path too.
	$(PIP) install -q -e 'plugins/nlp[pretrained,datasets]' 2>&1 | $(QUIET)
	# matplotlib's font cache, built once here rather than by every Ray worker (torchmetrics
	# imports pyplot on import).
	$(BIN)/python -c 'import matplotlib.font_manager'
	touch $(STAMP)

install: $(STAMP)

## The main job on the embedded default: vision on digits, 2 Ray workers.
demo: $(STAMP)
	$(BIN)/lepton train task=vision

## Every tier: unit (no Ray), ray-marked integration, slow end-to-end.
test: $(STAMP)
	$(BIN)/python -m pytest -q

## Unit tests only: no Ray cluster, seconds.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not ray and not slow"

test-ray: $(STAMP)
	$(BIN)/python -m pytest -q -m "ray and not slow"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy engine

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/python -m bench

## cluster.yaml checked as `ray up` checks it (Ray's schema), plus token auth on every node.
check-cluster: $(STAMP)
	$(BIN)/python -m engine.jobs.cluster_config cluster.yaml

## A local multi-node cluster on this machine: head + 2 workers, token auth, 127.0.0.1.
cluster-up: $(STAMP)
	$(BIN)/python -m engine.jobs.local_cluster up --dir $(CLUSTER_DIR)

## Stops only the processes of `make cluster-up`'s cluster (never `ray stop`).
cluster-down: $(STAMP)
	$(BIN)/python -m engine.jobs.local_cluster down --dir $(CLUSTER_DIR)

clean:
	rm -rf $(VENV) runs .pytest_cache

# mlwaf: the two commands that matter are `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV      ?= .venv
PYTHON    ?= python3
BIN       := $(VENV)/bin
SCENARIOS ?= default trixie cluster
SPLIT     ?= halves
COLLECTIONS := $(CURDIR)/.collections
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: help host-deps venv collection demo demo-destroy test lint unit molecule wheel bench profile-bridge bench-analyzer fuzz bench-behaviour evaluate evaluate-appliance evaluate-tuning evaluate-tuning-appliance clean-cache

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

host-deps: ## Install the host packages the test hosts need (Debian, root)
	@scripts/install-host-deps.sh

$(BIN)/molecule: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

venv: $(BIN)/molecule ## Create the project virtualenv with the pinned tooling

collection: venv ## Build the Ansible collection mlwaf.appliance (dist/mlwaf-appliance-*.tar.gz, wheel and models inside) and install it afresh into .collections, where the playbooks and Molecule find it
	rm -rf dist $(COLLECTIONS)
	$(MAKE) --no-print-directory wheel
	$(BIN)/ansible-galaxy collection build --output-path dist .
	$(BIN)/ansible-galaxy collection install -p $(COLLECTIONS) dist/mlwaf-appliance-*.tar.gz

demo: host-deps venv collection ## Bring up the appliance on a throwaway local Debian 12 host and show it blocking attacks
	molecule converge -s default
	molecule side-effect -s default
	@scripts/demo-report.sh default

demo-destroy: venv ## Tear the demo host down
	molecule destroy -s default

test: host-deps venv lint unit molecule ## Everything: lint, unit tests, Molecule on Debian 12 and 13 and the cluster

lint: venv ## yamllint, ansible-lint (production profile), ruff
	yamllint --strict .
	ansible-lint --profile production
	ruff check .
	ruff format --check .

unit: venv ## Unit tests
	pytest

molecule: host-deps venv collection ## Molecule scenarios (Debian 12 docroot mode, Debian 13 proxy mode, two-node cluster); vagrant: syntax only
	@set -e; for s in $(SCENARIOS); do molecule test -s $$s; done
	molecule syntax -s vagrant

wheel: venv ## Build the mlwaf wheel into dist/ (for ml_analyzer_wheel on air-gapped controllers)
	SOURCE_DATE_EPOCH=315532800 $(BIN)/pip wheel --quiet --no-deps --wheel-dir dist .

bench: host-deps venv collection ## The appliance under wrk, stack by stack (Apache .. CRS + ML); writes bench/results.*
	molecule converge -s default
	$(BIN)/python scripts/bench-appliance.py

profile-bridge: host-deps venv collection ## Apache's CPU per request, step by step through the ML bridge; writes bench/bridge-profile.*
	molecule converge -s default
	$(BIN)/python scripts/profile-bridge.py

bench-analyzer: venv ## Analyzer alone: mlwaf score rate, socket round trips (closed loop and 2000/s), memory
	$(BIN)/python scripts/bench-analyzer.py --seconds 8
	$(BIN)/python scripts/bench-analyzer.py --seconds 8 --rate 2000

fuzz: venv ## A million fuzzed inputs through the protocol parser and the request decoder (atheris); prints the count and peak memory
	$(BIN)/python tests/fuzz/fuzz_decoder.py -runs=1000000 -print_final_stats=1

bench-behaviour: venv ## Behavioural layer: time to catch floods, scanners, stuffing; people blocked; cost per request
	$(BIN)/python scripts/bench-behaviour.py --data ../shared/datasets

evaluate: venv ## The model and libinjection on the untouched test split (needs ../shared/datasets); writes bench/detection.*
	$(BIN)/mlwaf evaluate --data ../shared/datasets --out bench

evaluate-appliance: host-deps venv collection ## CRS PL1/PL2, ML and CRS+ML through the live test host, same test split; writes bench/detection-appliance.*
	molecule converge -s default
	$(BIN)/python scripts/evaluate-appliance.py --data ../shared/datasets

evaluate-tuning: venv ## Site tuning on replayed real sites, the model's side (needs ../shared/datasets; SPLIT=alternate to learn on every other request); writes bench/tuning*.*
	$(BIN)/python scripts/evaluate-tuning.py --data ../shared/datasets --split $(SPLIT)

evaluate-tuning-appliance: host-deps venv collection ## Site tuning through the live test host: learning, mlwaf tune, replay (needs ../shared/datasets; SPLIT as above); writes bench/tuning-appliance*.*
	molecule converge -s default
	$(BIN)/python scripts/evaluate-tuning-appliance.py --data ../shared/datasets --split $(SPLIT)

clean-cache: ## Drop the cached Debian root filesystems and packages
	rm -rf "$${MLWAF_CACHE_DIR:-$${XDG_CACHE_HOME:-$$HOME/.cache}/mlwaf}"

# The front door: `make lab` (a local HA lab) and `make test` (every test this machine can run).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
COLLECTIONS := $(CURDIR)/build/collections
N ?= 3
export PATH := $(BIN):$(PATH)
export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
export ANSIBLE_HOME := $(CURDIR)/build/ansible-home

.PHONY: venv collection tools test test-unit test-mongosim test-integration test-api lint sanity lab lab-clean

venv: $(VENV)/.stamp collection

$(VENV)/.stamp: requirements/test.txt requirements/constraints.txt tests/mongosim/pyproject.toml $(wildcard apiserver/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements/test.txt -c requirements/constraints.txt
	$(BIN)/pip install --quiet --no-deps -e tests/mongosim
	if [ -f apiserver/pyproject.toml ]; then $(BIN)/pip install --quiet -e apiserver -c requirements/constraints.txt; fi
	touch $@

# ansible finds the collection at build/collections/ansible_collections/stateserver/ha (a link to this tree)
collection:
	mkdir -p $(COLLECTIONS)/ansible_collections/stateserver
	ln -sfn $(CURDIR) $(COLLECTIONS)/ansible_collections/stateserver/ha

# Test-only tools fetched into build/ once (nothing installed): promtool checks the shipped alert rules; awx.awx
# (from PyPI's ansible) lets lint and the AWX tests resolve playbooks/awx_configure.yml; the wheelhouse lets the
# installed-collection test build the API server's wheels with pip --no-index.
tools: venv
	bash scripts/fetch-promtool
	bash scripts/fetch-wheelhouse
	$(BIN)/python scripts/fetch-collections awx.awx

test: venv tools
	bash scripts/run-tests

test-unit: venv
	$(BIN)/pytest tests/unit

test-mongosim: venv
	$(BIN)/pytest tests/mongosim/tests

test-integration: venv
	$(BIN)/pytest tests/integration

test-api: venv tools
	$(BIN)/pytest apiserver/tests

lint: venv
	bash scripts/lint

lab: venv
	bash lab/lab-up $(N)

lab-clean:
	bash lab/lab-down

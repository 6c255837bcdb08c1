# flowerops: two commands matter.
#   make demo   bring up a local demo host and deploy the whole stack to it
#   make test   lint, unit tests, module sanity, Molecule on real systemd
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PY := python3
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_ROLES_PATH := $(CURDIR)/roles
export ANSIBLE_LIBRARY := $(CURDIR)/library
export ANSIBLE_MODULE_UTILS := $(CURDIR)/module_utils

.PHONY: help host-packages venv engine image-13 molecule-first checks demo demo-destroy lint unit sanity promtool promtool-checks molecule test test-all docs

help:
	@echo "make demo          local demo host with the whole stack (prints where to log in)"
	@echo "make demo-destroy  remove the demo host and its generated secrets"
	@echo "make test          lint + unit tests + module sanity + promtool + molecule test"
	@echo "make test-all      make test, then each scenario on the other Debian release too"
	@echo "make promtool      check the monitoring role's Prometheus rules and config, run their unit tests"
	@echo "make docs          regenerate the variable tables and defaults comments from the argument specs"

# Debian packages first (scripts/host-packages.txt is the one list), so a
# fresh machine needs nothing but `make demo` or `make test`.
host-packages:
	bash scripts/host-packages.sh

$(VENV)/.installed: requirements.txt | host-packages
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

venv: host-packages $(VENV)/.installed

# The engine and the Debian 12 base image (the default scenario and the demo
# run on it); image-13 adds Debian 13's (the split scenario's).
engine: host-packages
	bash scripts/prepare-engine.sh

image-13: engine
	FLOWEROPS_DEBIAN_RELEASE=13 bash scripts/prepare-engine.sh image

# The demo host runs Debian 12: only that image.
demo: venv engine
	bash scripts/demo.sh up

demo-destroy:
	bash scripts/demo.sh destroy

lint: venv
	bash scripts/timed.sh lint bash -c 'yamllint --strict . && ansible-lint && ruff check . && ruff format --check .'

unit: venv
	bash scripts/timed.sh unit pytest -q tests/unit

sanity: venv
	bash scripts/timed.sh sanity bash scripts/sanity.sh

# Debian's promtool, unpacked under .cache/prometheus (not installed), checks
# the monitoring role's rules and config rendered with its defaults, and runs
# the rules' unit tests (tests/promtool).
promtool: venv
	bash scripts/timed.sh promtool $(MAKE) --no-print-directory promtool-checks

promtool-checks:
	bash scripts/promtool.sh >/dev/null
	python scripts/render_monitoring.py --target flower-example=127.0.0.1:443,server_name=flower.example.com,queues >/dev/null
	bash scripts/promtool.sh check rules .cache/monitoring/flower.yml
	bash scripts/promtool.sh check config .cache/monitoring/prometheus.yml
	bash scripts/promtool.sh test rules tests/promtool/*.test.yml

# One scenario at a time (they share the machine's two cores); `make molecule
# SCENARIO=split` runs one alone.
SCENARIOS := default split
SCENARIO :=
molecule: venv engine image-13
	@for s in $(or $(SCENARIO),$(SCENARIOS)); do \
	  bash scripts/timed.sh molecule-$$s molecule test -s $$s || exit 1; \
	done

# The full matrix: make test, then each scenario on the other Debian release
# (default on 13, split on 12).
test-all: test
	FLOWEROPS_DEBIAN_RELEASE=13 bash scripts/timed.sh molecule-default-13 molecule test -s default
	FLOWEROPS_DEBIAN_RELEASE=12 bash scripts/timed.sh molecule-split-12 molecule test -s split

# Ends with how long each part took (.artifacts/timings.txt). First the
# virtualenv and the engine with its Debian 12 image, side by side. Then the
# default scenario, and beside it, one after another, the Debian 13 image build
# (debootstrap waits on the mirror much of the time) and the checks that need no
# container (lint, unit tests, module sanity, promtool: about 5 min, most of it
# CPU, which they take from default's first steps instead of running before
# them). Default's output streams (its recipe line starts with +); each check's
# output is printed whole when it ends. Then split, alone. Beware: because of
# that +, `make -n test` really runs the default scenario.
test:
	@bash scripts/timed.sh --reset
	@start=$$(date +%s); \
	  $(MAKE) --no-print-directory -j2 --output-sync=target venv engine \
	  && $(MAKE) --no-print-directory -j2 --output-sync=target molecule-first checks \
	  && $(MAKE) --no-print-directory molecule SCENARIO=split; rc=$$?; \
	  bash scripts/timed.sh --report; echo "  wall clock             $$(( $$(date +%s) - start ))"; exit $$rc

molecule-first: venv engine
	+@bash scripts/timed.sh molecule-default molecule test -s default

# One at a time beside default (make -j2 gives them the one other job slot).
checks: image-13 lint unit sanity promtool

docs: venv
	python scripts/role_docs.py --write

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

.PHONY: help venv engine demo demo-destroy lint unit sanity molecule test docs

help:
	@echo "make demo          local demo host with the whole stack (prints where to log in)"
	@echo "make demo-destroy  remove the demo host and its generated secrets"
	@echo "make test          lint + unit tests + module sanity + molecule test"
	@echo "make docs          regenerate the README's variable table from the argument specs"

$(VENV)/.installed: requirements.txt
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

venv: $(VENV)/.installed

engine:
	bash scripts/prepare-engine.sh

demo: venv engine
	bash scripts/demo.sh up

demo-destroy:
	bash scripts/demo.sh destroy

lint: venv
	yamllint --strict .
	ansible-lint
	ruff check .
	ruff format --check .

unit: venv
	pytest -q tests/unit

sanity: venv
	bash scripts/sanity.sh

molecule: venv engine
	molecule test --all

test: lint unit sanity molecule

docs: venv
	python scripts/variables_table.py --write README.md

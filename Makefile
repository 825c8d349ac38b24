# MuDuo Label — everything a fresh clone needs goes through these targets.
#   make serve   set up, prepare the demo, start the server (127.0.0.1:8000)
#   make test    set up, run the checks (make lint) and the test suite (CPU)
#   make lint    set up, run ruff (lint + format check) and mypy
#   make setup   set up only (.venv with pinned dependencies; idempotent, seconds when done)
#   make demo    set up + prepare the demo under sample-datasets/demo/ (synthetic cases)
#   make demo-student  re-make the shipped student (mudo_app/assets/student/) from the demo data (~1.5 h)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.muduo-setup
DEMO := sample-datasets/demo
DEMO_STAMP := $(DEMO)/.prepared
HOST ?= 127.0.0.1
PORT ?= 8000
AUTH_USERS ?=
PYTEST_ARGS ?=

.PHONY: setup lint format test demo demo-student serve clean-demo

setup: $(STAMP)

# Order matters (../shared/design/MONAILABEL_NOTES.md): the CPU torch first, then the runtime
# dependencies under the constraints file, then monailabel without its unusable declared extras.
$(STAMP): requirements.txt tests/requirements.txt constraints.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -r requirements.txt -r tests/requirements.txt
	$(PIP) install -q --no-deps monailabel==0.8.5
	$(PIP) install -q --no-deps --no-build-isolation -e .
	@$(PY) -c "import torch, monai, monailabel, mudo_app; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	@touch $(STAMP)
	@echo "set-up done: $(VENV) ($$($(PY) -c 'import torch; print("torch", torch.__version__)'))"

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# rewrite the tree the way `make lint` wants it (import order, pyupgrade, formatting)
format: setup
	$(VENV)/bin/ruff check --fix-only .
	$(VENV)/bin/ruff format .

test: setup lint
	PYTHONPATH= $(PY) -m pytest $(PYTEST_ARGS)

$(DEMO_STAMP): $(STAMP)
	rm -rf $(DEMO)/datastore
	$(VENV)/bin/muduo sample-data --out $(DEMO)/datastore --cases 12 --labelled 5 --seed 2026
	@touch $(DEMO_STAMP)

demo: setup $(DEMO_STAMP)
	@echo "demo ready: $(DEMO)/datastore (synthetic PET/CT); served student: mudo_app/assets/student/muduo_student.pt"

# The shipped student is package data; this re-makes it: MuDuo and supervised candidates trained on the
# demo data side by side (resumable), the better on validation cases stored as fp16 (see the script).
demo-student: setup $(DEMO_STAMP)
	$(PY) sample-datasets/scripts/ship_student.py --work $(DEMO)/student

# PYTHONPATH must be set (even empty) for MONAI Label's background training (MONAILABEL_NOTES.md).
serve: demo
	PYTHONPATH= MONAI_LABEL_TRACKING_ENABLED=false $(PY) -m monailabel.main start_server --app apps/muduo \
		--studies $(DEMO)/datastore --host $(HOST) --port $(PORT) $(if $(AUTH_USERS),--conf auth_users $(AUTH_USERS))

clean-demo:
	rm -rf $(DEMO)

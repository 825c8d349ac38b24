# MuDuo Label — everything a fresh clone needs goes through these targets.
#   make serve   set up, prepare the demo, start the server (127.0.0.1:8000)
#   make test    set up, run the checks (make lint) and the test suite (CPU)
#   make lint    set up, run ruff (lint + format check) and mypy
#   make setup   set up only (.venv with pinned dependencies; idempotent, seconds when done)
#   make demo    set up + prepare the demo under sample-datasets/demo/ (synthetic cases, MuDuo student)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.muduo-setup
DEMO := sample-datasets/demo
DEMO_STAMP := $(DEMO)/.prepared
DEMO_STUDENT := $(DEMO)/student/.done
HOST ?= 127.0.0.1
PORT ?= 8000
AUTH_USERS ?=
PYTEST_ARGS ?=

.PHONY: setup lint format test demo serve clean-demo

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

# The initial student: MuDuo on the 5 labelled demo cases (+ 7 unlabelled), stand-in teachers; ~3 min on 2 cores.
# An interrupted run (state.pt newer than the datastore) is resumed; otherwise training starts afresh.
$(DEMO_STUDENT): $(DEMO_STAMP) sample-datasets/configs/demo_student.json
	@if [ -f $(DEMO)/student/state.pt ] && [ ! $(DEMO)/student/state.pt -ot $(DEMO_STAMP) ]; then \
		resume=--resume; else rm -rf $(DEMO)/student; resume=; fi; \
	$(VENV)/bin/muduo train --config sample-datasets/configs/demo_student.json $$resume
	@touch $@

demo: setup $(DEMO_STAMP) $(DEMO_STUDENT)
	@echo "demo ready: $(DEMO)/datastore (synthetic PET/CT), student $(DEMO)/student/student.pt"

# PYTHONPATH must be set (even empty) for MONAI Label's background training (MONAILABEL_NOTES.md).
serve: demo
	PYTHONPATH= MONAI_LABEL_TRACKING_ENABLED=false $(PY) -m monailabel.main start_server --app apps/muduo \
		--studies $(DEMO)/datastore --host $(HOST) --port $(PORT) $(if $(AUTH_USERS),--conf auth_users $(AUTH_USERS))

clean-demo:
	rm -rf $(DEMO)

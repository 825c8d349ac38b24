# MuDuo Label — everything a fresh clone needs goes through these targets.
#   make serve   set up, prepare the demo, start the server (127.0.0.1:8000)
#   make test    set up, run the test suite (CPU)
#   make setup   set up only (.venv with pinned dependencies; idempotent, seconds when done)
#   make demo    set up + prepare the demo datastore under sample-datasets/demo/
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.muduo-setup
DEMO := sample-datasets/demo
DEMO_STAMP := $(DEMO)/.prepared
PYTEST_ARGS ?=

.PHONY: setup test demo serve clean-demo

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

test: setup
	PYTHONPATH= $(PY) -m pytest $(PYTEST_ARGS)

$(DEMO_STAMP): $(STAMP)
	rm -rf $(DEMO)/datastore
	$(VENV)/bin/muduo sample-data --out $(DEMO)/datastore --cases 12 --labelled 5 --seed 2026
	@touch $(DEMO_STAMP)

demo: setup $(DEMO_STAMP)
	@echo "demo datastore ready: $(DEMO)/datastore"

serve: demo
	@echo "The MONAI Label server app (apps/muduo) is not built yet: 'make serve' stops after preparing the demo."

clean-demo:
	rm -rf $(DEMO)

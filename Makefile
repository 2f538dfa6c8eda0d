# The README's two commands: `make run` (set up, then run the main job) and `make test` (set up, then test).
# Everything lives in .venv inside the project; nothing is installed system-wide.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.minirec-installed
CATEGORY ?= all
PRESET ?= tiny
PYTEST_ARGS ?=

export MLFLOW_DISABLE_TELEMETRY := true
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup run test test-slow ui clean

setup: $(STAMP)

# torch goes first and alone: pinned to the CPU build so pip does not pull the CUDA stack.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e .
	touch $(STAMP)

run: setup
	$(BIN)/mlflow run . -e main --env-manager local --experiment-name minirec-comparison \
		-P category=$(CATEGORY) -P preset=$(PRESET)

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-slow: setup
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

ui: setup
	$(BIN)/python -m minirec.ui

clean:
	rm -rf $(VENV) mlflow.db mlflow.db.lock mlartifacts mlruns outputs reports/latest .cache

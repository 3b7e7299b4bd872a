# lowbit: two commands do all the set-up.
#   make demo   creates or refreshes .venv, installs lowbit, runs `lowbit demo`
#   make test   same environment plus the test extras, runs the test suite
# Variables: PYTHON (interpreter that creates the venv), VENV (its folder), PYTEST_ARGS, TORCH_SPEC.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
BIN := $(VENV)/bin
STAMP_BASE := $(VENV)/.lowbit-installed
STAMP_TEST := $(VENV)/.lowbit-installed-test

.PHONY: demo test env env-test clean help

help:
	@echo "make demo   set up .venv and run the lowbit demo"
	@echo "make test   set up .venv (with test extras) and run the test suite"
	@echo "make clean  remove .venv and caches"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel

# torch first, pinned to the CPU build unless the venv already has a torch (a GPU user's own build).
$(VENV)/.torch: | $(BIN)/python
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	@touch $@

$(STAMP_BASE): pyproject.toml $(VENV)/.torch
	$(BIN)/python -m pip install -q -e .
	@touch $@

$(STAMP_TEST): pyproject.toml $(VENV)/.torch
	$(BIN)/python -m pip install -q -e ".[test]"
	@touch $@ $(STAMP_BASE)

env: $(STAMP_BASE)
env-test: $(STAMP_TEST)

demo: env
	$(BIN)/lowbit demo

# pytest exits 5 when it collects no test; that is a failure of the suite, not a pass.
test: env-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info

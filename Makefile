# Two entry points for a fresh machine: `make demo` (the main job) and `make test` (lint + tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# sleeping (not spinning) OpenMP waits: see src/rrseg/cli/main.py
export OMP_WAIT_POLICY ?= PASSIVE
STAMP := $(VENV)/.rrseg-installed

.PHONY: test lint pytest demo clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: $(STAMP) lint pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples

pytest: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/rrseg demo

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

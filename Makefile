# Two entry points for a fresh machine: `make demo` (the main job) and `make test` (lint + tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# sleeping (not spinning) OpenMP waits: see src/rrseg/cli/main.py
export OMP_WAIT_POLICY ?= PASSIVE
STAMP := $(VENV)/.rrseg-installed
# the fast tier: every test module, most tests, under a minute on 2 cores (markers in pyproject.toml), one
# pytest-xdist worker per core with one thread each (make test, what CI runs, stays one serial process)
FAST := -m "not slow and not multiprocess" -n auto
FAST_ENV := OMP_NUM_THREADS=1

# make test-min: a venv of its own with every dependency, and the hf extra, at exactly its floor in
# pyproject.toml (name>=X -> name==X); the test tools as `make test` has them
MIN_VENV ?= .venv-min
MIN_PY := $(MIN_VENV)/bin/python
MIN_STAMP := $(MIN_VENV)/.rrseg-installed
MIN_PINS = $(shell $(PYTHON) -c "import re; t = open('pyproject.toml').read(); deps = t.split('dependencies = [')[1].split(']')[0] + t.split('hf = [')[1].split(']')[0]; print(' '.join(n + '==' + v for n, v in re.findall(r'\"([A-Za-z0-9_.-]+)>=([0-9][^,\"]*)', deps)))")

.PHONY: test lint pytest test-fast test-min demo clean

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

test-fast: $(STAMP)
	$(FAST_ENV) $(PY) -m pytest -q $(FAST)

$(MIN_STAMP): pyproject.toml
	test -x $(MIN_PY) || $(PYTHON) -m venv $(MIN_VENV)
	$(MIN_PY) -m pip install -q --upgrade pip
	$(MIN_PY) -m pip install -q -e '.[dev]' $(MIN_PINS)
	touch $(MIN_STAMP)

test-min: $(MIN_STAMP)
	@echo "floors: $(MIN_PINS)"
	$(FAST_ENV) $(MIN_PY) -m pytest -q $(FAST)

demo: $(STAMP)
	$(VENV)/bin/rrseg demo

clean:
	rm -rf $(VENV) $(MIN_VENV) .pytest_cache .ruff_cache

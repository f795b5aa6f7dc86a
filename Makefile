# Two entry points for a fresh machine: `make demo` (the main job) and `make test` (lint + tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# sleeping (not spinning) OpenMP waits: see src/rrseg/cli/main.py
export OMP_WAIT_POLICY ?= PASSIVE
STAMP := $(VENV)/.rrseg-installed
BASE_STAMP := $(VENV)/.rrseg-base-installed
# the fast tier: every test module, most tests, under a minute on 2 cores (markers in pyproject.toml), one
# pytest-xdist worker per core with one thread each
FAST := -m "not slow and not multiprocess" -n auto
FAST_ENV := OMP_NUM_THREADS=1

# make test-min: a venv of its own with every dependency, and the hf extra, at exactly its floor in
# pyproject.toml (name>=X -> name==X); the test tools as `make test` has them
MIN_VENV ?= .venv-min
MIN_PY := $(MIN_VENV)/bin/python
MIN_STAMP := $(MIN_VENV)/.rrseg-installed
MIN_PINS = $(shell $(PYTHON) -c "import re; t = open('pyproject.toml').read(); deps = t.split('dependencies = [')[1].split(']')[0] + t.split('hf = [')[1].split(']')[0]; print(' '.join(n + '==' + v for n, v in re.findall(r'\"([A-Za-z0-9_.-]+)>=([0-9][^,\"]*)', deps)))")

# make test-mmseg: a venv of its own with rrseg's dev install plus mmsegmentation 1.2.2 (and mmpretrain, which
# holds the ConvNeXt that mmseg's upernet_convnext config names), for tests/reference (marker mmseg): comparisons
# against mmseg's own modules. The mm* packages go in with --no-deps, so that none of them moves torch (or pulls
# opencv-python with a GUI); MMSEG_DEPS are their pure-python dependencies, held to the torch, torchvision and
# numpy that '.[dev]' installed (pins.txt)
MMSEG_VENV ?= .venv-mmseg
MMSEG_PY := $(MMSEG_VENV)/bin/python
MMSEG_STAMP := $(MMSEG_VENV)/.rrseg-installed
MMSEG_PKGS := mmsegmentation==1.2.2 mmcv-lite==2.1.0 mmengine==0.10.7 mmpretrain==1.2.0
MMSEG_DEPS := addict yapf platformdirs termcolor prettytable ftfy wcwidth regex scipy opencv-python-headless \
	einops modelindex mat4py importlib-metadata

.PHONY: test lint pytest test-fast test-min test-mmseg demo clean

# the demo needs the package alone, the tests its dev extra too. --no-compile: pip would byte-compile every module
# it installs (torch's thousands; a third of the install's CPU time here), Python compiles what it imports, once
PIP_INSTALL := $(PY) -m pip install -q --no-compile
$(BASE_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PIP_INSTALL) -e .
	touch $(BASE_STAMP)

$(STAMP): $(BASE_STAMP)
	$(PIP_INSTALL) -e '.[dev]'
	touch $(STAMP)

test: $(STAMP) lint pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples

# every test: the single-process ones on one pytest-xdist worker per core, one thread each (as the fast tier), then
# the multiprocess ones (torchrun, gloo groups: processes of their own) alone. Fresh clones back to back on this
# 2-core machine, 2026-12-05: 11 min 15 s in all, against 15 min 0 s with every test in one process
pytest: $(STAMP)
	$(FAST_ENV) $(PY) -m pytest -q -m "not multiprocess" -n auto
	$(PY) -m pytest -q -m multiprocess

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

$(MMSEG_STAMP): pyproject.toml
	test -x $(MMSEG_PY) || $(PYTHON) -m venv $(MMSEG_VENV)
	$(MMSEG_PY) -m pip install -q --upgrade pip
	$(MMSEG_PY) -m pip install -q -e '.[dev]'
	$(MMSEG_PY) -m pip freeze | grep -iE '^(torch|torchvision|numpy)==' > $(MMSEG_VENV)/pins.txt
	$(MMSEG_PY) -m pip install -q --no-deps $(MMSEG_PKGS)
	$(MMSEG_PY) -m pip install -q -c $(MMSEG_VENV)/pins.txt $(MMSEG_DEPS)
	touch $(MMSEG_STAMP)

# the comparisons against mmseg's modules, then the golden files the fast tier checks without mmseg
# (tests/models/golden/, rewritten: a diff there means mmseg's outputs or the family table changed)
test-mmseg: $(MMSEG_STAMP)
	$(MMSEG_PY) -m pytest -q -m mmseg tests/reference tests/benchmarks/test_peers.py
	$(MMSEG_PY) -m tests.reference.write_golden
	$(MMSEG_PY) -m pytest -q tests/models/test_mmseg_golden.py

demo: $(BASE_STAMP)
	$(VENV)/bin/rrseg demo

clean:
	rm -rf $(VENV) $(MIN_VENV) $(MMSEG_VENV) .pytest_cache .ruff_cache

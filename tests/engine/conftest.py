"""Engine tests: the environment of CLI subprocesses (the tiny dataset and config are in tests/conftest.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture
def cli_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    env["CUDA_VISIBLE_DEVICES"] = ""  # bit-exactness and gloo DDP are CPU claims, also on a GPU machine
    return env


PYTHON = sys.executable

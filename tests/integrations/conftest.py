"""Shared fixtures of the integration tests: no hub access, one intra-op thread.

The models here are tiny; on the shared 2-core machine two intra-op threads per process mostly wait on
each other (10x slower under load), so each test runs with one and restores the setting afterwards.
"""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

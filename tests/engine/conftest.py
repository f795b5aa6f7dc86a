"""Shared fixtures for engine tests: a tiny synthetic dataset and a tiny training config."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    from rrseg.data.synthetic import make_synthetic

    return make_synthetic(tmp_path_factory.mktemp("data") / "synthetic", num_classes=6, num_train=24, num_val=8,
                          size=(48, 32), seed=0, workers=1, verbose=False)


@pytest.fixture
def tiny_config(tmp_path, tiny_dataset):
    """Write a tiny training config; keyword overrides are merged into its sections."""

    def make(name: str = "cfg", **sections) -> Path:
        cfg = {
            "model": {"name": "deeplabv3plus_tiny"},
            "data": {
                "train": {"type": "folder", "root": str(tiny_dataset), "split": "train"},
                "val": {"type": "folder", "root": str(tiny_dataset), "split": "val"},
                "batch_size": 4, "workers": 0, "crop_size": [32, 32], "scale": [48, 32], "ratio_range": [0.75, 1.5],
            },
            "optim": {"type": "adamw", "lr": 0.002},
            "schedule": {"iters": 6, "warmup_iters": 2},
            "loss": {"counts": str(tiny_dataset / "counts.json")},
            "eval": {"interval": 3, "batch_size": 4},
            "train": {"log_interval": 1, "checkpoint_interval": 2, "keep_last": 2, "progress": False},
            "work_dir": str(tmp_path / name),
        }
        for section, values in sections.items():
            if isinstance(values, dict):
                cfg[section].update(values)
            else:
                cfg[section] = values
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    return make


@pytest.fixture
def cli_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    env["CUDA_VISIBLE_DEVICES"] = ""  # bit-exactness and gloo DDP are CPU claims, also on a GPU machine
    return env


PYTHON = sys.executable

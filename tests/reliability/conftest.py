"""Fixtures for the reliability tests: the engine's tiny dataset and config, damaged copies, checkpoints,
a place that cannot be written to, and snapshots to prove that a failed command wrote nothing."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import cli_env as _cli_env


@pytest.fixture(autouse=True)
def _restore_torch_globals():
    """In-process ``rrseg train`` switches on deterministic algorithms and seeds the RNGs: undone after
    each test, so that other tests in the session see torch as they expect it. One intra-op thread while
    these tests run: the in-process training steps are tiny, and on a busy machine OpenMP threads spinning
    for each other made them 30x slower (OMP_WAIT_POLICY is read before rrseg.cli can set it)."""
    import torch

    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    state = torch.get_rng_state()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    torch.set_rng_state(state)


@pytest.fixture
def env() -> dict[str, str]:
    """Subprocess environment: this checkout's src, one OpenMP thread that sleeps while waiting."""
    e = _cli_env()
    e["OMP_NUM_THREADS"] = "1"
    e["OMP_WAIT_POLICY"] = "PASSIVE"
    return e


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` with a hash of its content (folders: "dir")."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Paths created, changed or removed between two snapshots."""
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


@pytest.fixture
def damaged(tiny_dataset, tmp_path) -> Callable[[Callable[[Path], object]], Path]:
    """``damaged(fn)``: a copy of the tiny dataset in tmp_path/data, changed in place by ``fn(root)``."""

    def make(fn: Callable[[Path], object]) -> Path:
        root = tmp_path / "data"
        shutil.copytree(tiny_dataset, root)
        fn(root)
        return root

    return make


def data_sections(root: Path) -> dict:
    """The ``data`` section overrides of ``tiny_config`` that point train and val at ``root``."""
    return {"train": {"type": "folder", "root": str(root), "split": "train"},
            "val": {"type": "folder", "root": str(root), "split": "val"}}


def save_model(path: Path, model_name: str, root: Path, num_classes: int = 6) -> Path:
    """A freshly initialised model saved as an rrseg checkpoint (weights + config in the metadata)."""
    import torch

    from rrseg.data import build_dataset
    from rrseg.engine.checkpoint import save_weights
    from rrseg.engine.components import model_metadata
    from rrseg.engine.config import parse_config
    from rrseg.models import build_model

    torch.manual_seed(0)
    cfg = parse_config({"model": {"name": model_name}, "data": {"scale": [48, 32]}})
    model = build_model(model_name, num_classes=num_classes)
    save_weights(path, model.inference_state_dict(), model_metadata(cfg, num_classes, build_dataset("folder", root)))
    return path


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory, tiny_dataset) -> dict[str, Path]:
    """Untrained rrseg checkpoints of the tiny dataset's 6 classes: the config's model and another one."""
    folder = tmp_path_factory.mktemp("checkpoints")
    return {
        "deeplab": save_model(folder / "deeplab.safetensors", "deeplabv3plus_tiny", tiny_dataset),
        "ocrnet": save_model(folder / "ocrnet.safetensors", "ocrnet_tiny", tiny_dataset),
    }


def _really_unwritable(folder: Path) -> bool:
    try:
        fd, name = tempfile.mkstemp(dir=folder)
    except OSError:
        return True
    os.close(fd)
    os.unlink(name)
    return False


@pytest.fixture
def unwritable(tmp_path) -> Path:
    """A folder this process cannot create files in: a read-only folder (as a normal user), else, for root
    (who may write anywhere), /proc/sys, where nobody can create files."""
    ro = tmp_path / "read_only"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        for folder in (ro, Path("/proc/sys")):
            if folder.is_dir() and _really_unwritable(folder):
                yield folder
                return
        pytest.skip("no folder that this user cannot write to")
    finally:
        ro.chmod(0o755)

"""Shared test helpers: the CLI as a real subprocess, label PNGs written to disk, a tiny synthetic dataset and
training config."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

SRC_DIR = Path(__file__).resolve().parents[1] / "src"


def cli_env() -> dict[str, str]:
    """The environment for subprocesses: this checkout's src first, so a worktree tests its own code."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC_DIR), env.get("PYTHONPATH", "")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    return cli_env()


@pytest.fixture
def run_rrseg() -> Callable[..., subprocess.CompletedProcess]:
    """``run_rrseg("stats", dir, "--num-classes", 5, cwd=...)``: ``python -m rrseg ...`` as a subprocess."""

    def run(*args: object, cwd: str | os.PathLike | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "rrseg", *map(str, args)],
            capture_output=True, text=True, env=cli_env(), cwd=cwd, timeout=timeout,
        )

    return run


@pytest.fixture
def call_rrseg(capsys) -> Callable[..., subprocess.CompletedProcess]:
    """Like ``run_rrseg`` but in this process (no interpreter start-up): for the many error cases."""
    from rrseg.cli.main import main

    def call(*args: object) -> subprocess.CompletedProcess:
        capsys.readouterr()
        argv = [str(a) for a in args]
        try:
            rc = main(argv)
        except SystemExit as e:  # --help, argparse errors
            rc = e.code if isinstance(e.code, int) else 1
        out = capsys.readouterr()
        return subprocess.CompletedProcess(argv, rc, out.out, out.err)

    return call


@pytest.fixture
def registries():
    """The model, dataset and loss registries as they were before the test: what a test registers (a module of
    its own imported, a doc's snippet run) is gone after it."""
    from rrseg.data import registry as data
    from rrseg.data.builder import DATASETS  # noqa: F401 - the built-in datasets registered before the snapshot
    from rrseg.models import registry as models
    from rrseg.rebalance import registry as losses

    tables = [models._MODELS, models._VARIANTS, data.DATASETS, data._ALIASES, data._DETECTORS,
              losses.PIXEL_LOSSES, losses.REGION_LOSSES]
    saved = [dict(table) for table in tables]
    yield
    for table, before in zip(tables, saved):
        table.clear()
        table.update(before)


@pytest.fixture
def write_label() -> Callable[..., Path]:
    """``write_label(path, array, mode="L")``: save an index PNG (mode L, P with a palette, or I;16)."""

    def write(path: str | os.PathLike, arr: np.ndarray, mode: str = "L") -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if mode == "L":
            im = Image.fromarray(np.asarray(arr, dtype=np.uint8), mode="L")
        elif mode == "P":
            a = np.ascontiguousarray(arr, dtype=np.uint8)
            im = Image.frombytes("P", (a.shape[1], a.shape[0]), a.tobytes())
            # any palette: the stored indices are the class ids, the colours only change how it looks
            im.putpalette(np.random.default_rng(0).integers(0, 256, 768, dtype=np.uint8).tolist())
        elif mode == "I;16":
            im = Image.fromarray(np.asarray(arr, dtype=np.uint16))
        else:
            raise ValueError(mode)
        im.save(path)
        return path

    return write


@pytest.fixture
def hf_hub_cache(tmp_path, monkeypatch) -> Callable[..., Path]:
    """An empty Hugging Face hub cache for this test, offline: ``HF_HOME`` / ``HF_HUB_CACHE`` /
    ``HF_HUB_OFFLINE=1`` in the environment (what subprocesses see), and the same in ``huggingface_hub``'s
    constants, which it reads once at import (what this process sees). Returns
    ``put(repo_id, state_dict) -> path``, which writes the hub's snapshot layout for ``repo_id``:
    ``models--{org}--{name}/refs/main`` naming a revision and ``snapshots/{rev}/model.safetensors``."""
    from huggingface_hub import constants
    from safetensors.torch import save_file

    home = tmp_path / "hf_home"
    cache = home / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    def put(repo_id: str, state_dict: dict, revision: str = "0123456789abcdef0123456789abcdef01234567") -> Path:
        repo = cache / f"models--{repo_id.replace('/', '--')}"
        snapshot = repo / "snapshots" / revision
        snapshot.mkdir(parents=True, exist_ok=True)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(revision)
        path = snapshot / "model.safetensors"
        save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path))
        return path

    put.cache = cache  # type: ignore[attr-defined]
    return put


# ---- ADE20K-Full in the layout of MaskFormer's datasets/prepare_ade20k_full_sem_seg.py ---------------------

ADE20K_FULL_IGNORE = 65535
# ids the fixture's labels use: ids above 255 (up to the last class, 846), 255 as a real class, 0
ADE20K_FULL_IDS = (0, 3, 254, 255, 256, 300, 511, 700, 846)


def write_ade20k_full(parent: Path, n_train: int = 4, n_val: int = 2, h: int = 48, w: int = 64,
                      seed: int = 0) -> Path:
    """``parent/ADE20K_2021_17_01`` with ``images_detectron2/{training,validation}/ADE_*.jpg`` and
    ``annotations_detectron2/{training,validation}/ADE_*.tif``: uint16 TIFFs written by PIL (mode I;16) as the
    MaskFormer script writes them (``Image.fromarray(uint16 array).save(...tif)``). Every label holds 8x8 blocks
    of ids from ADE20K_FULL_IDS and 65535 (not labelled), and at least 255, 300, 846 and 65535. Returns the
    ``ADE20K_2021_17_01`` folder."""
    rng = np.random.default_rng(seed)
    base = parent / "ADE20K_2021_17_01"
    values = np.array([*ADE20K_FULL_IDS, ADE20K_FULL_IGNORE], dtype=np.uint16)
    for folder, prefix, n in (("training", "ADE_train", n_train), ("validation", "ADE_val", n_val)):
        (base / "images_detectron2" / folder).mkdir(parents=True, exist_ok=True)
        (base / "annotations_detectron2" / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            blocks = rng.choice(values, size=(h // 8, w // 8))
            blocks.flat[:4] = [255, 300, 846, ADE20K_FULL_IGNORE]
            label = np.kron(blocks, np.ones((8, 8), dtype=np.uint16)).astype(np.uint16)
            image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            image[..., 0] = (label % 256).astype(np.uint8)  # a little signal: colour follows the class
            stem = f"{prefix}_{i + 1:08d}"
            Image.fromarray(image).save(base / "images_detectron2" / folder / f"{stem}.jpg", quality=95)
            tif = Image.fromarray(label)
            assert tif.mode == "I;16", tif.mode
            tif.save(base / "annotations_detectron2" / folder / f"{stem}.tif")
    return base


@pytest.fixture
def ade20k_full(tmp_path) -> Path:
    """A small ADE20K-Full dataset (4 training, 2 validation images of 64x48); the ``ADE20K_2021_17_01`` folder."""
    return write_ade20k_full(tmp_path / "data")


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

"""Fixtures for the data tests: real JPEG/PNG files on disk in each dataset layout."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def save_image(path: Path, arr: np.ndarray, quality: int = 95) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        Image.fromarray(arr).save(path, quality=quality)
    else:
        Image.fromarray(arr).save(path)
    return path


def save_label(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr, dtype=np.uint8), mode="L").save(path)
    return path


def random_pair(rng: np.random.Generator, h: int, w: int, values: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """A blocky label map using ``values`` and a matching noisy image."""
    blocks = rng.choice(values, size=(max(1, h // 8), max(1, w // 8)))
    label = np.kron(blocks, np.ones((8, 8), dtype=np.int64))[:h, :w]
    label = np.pad(label, ((0, h - label.shape[0]), (0, w - label.shape[1])), mode="edge")
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return image, label.astype(np.uint8)


@pytest.fixture
def folder_dataset(tmp_path: Path) -> Callable[..., Path]:
    """``folder_dataset(n_train=3, n_val=2, classes=4, yaml_extra="")``: a valid folder dataset."""

    def make(n_train: int = 3, n_val: int = 2, classes: int = 4, yaml_extra: str = "", h: int = 24, w: int = 32,
             root: Path | None = None) -> Path:
        root = root or tmp_path / "folder"
        names = ", ".join(f"c{i}" for i in range(classes))
        (root).mkdir(parents=True, exist_ok=True)
        (root / "dataset.yaml").write_text(f"name: tiny\nclasses: [{names}]\n{yaml_extra}")
        rng = np.random.default_rng(0)
        for split, n in (("train", n_train), ("val", n_val)):
            for i in range(n):
                image, label = random_pair(rng, h, w, [*range(classes), 255])
                save_image(root / "images" / split / f"s{i}.png", image)
                save_label(root / "labels" / split / f"s{i}.png", label)
        return root

    return make

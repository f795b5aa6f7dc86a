"""``build_dataset(name, root, split)``: the dataset registry, and recognising a dataset layout on disk."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rrseg.data.ade20k import ADE20KDataset
from rrseg.data.ade20k_full import ADE20KFullDataset
from rrseg.data.base import SegDataset
from rrseg.data.cityscapes import CityscapesDataset
from rrseg.data.coco_stuff import COCOStuff164kDataset
from rrseg.data.folder import IMAGES_DIR, LABEL_DIRS, SPEC_NAME, FolderDataset
from rrseg.errors import RRSegError

__all__ = ["DATASETS", "build_dataset", "dataset_at", "dataset_class", "detect_layout"]

DATASETS: dict[str, type[SegDataset]] = {
    "ade20k": ADE20KDataset,
    "ade20k_full": ADE20KFullDataset,
    "coco_stuff164k": COCOStuff164kDataset,
    "cityscapes": CityscapesDataset,
    "folder": FolderDataset,
}
_ALIASES = {
    "ade": "ade20k",
    "adechallengedata2016": "ade20k",
    "ade_full": "ade20k_full",
    "ade20kfull": "ade20k_full",
    "ade20k_2021_17_01": "ade20k_full",
    "coco_stuff": "coco_stuff164k",
    "cocostuff": "coco_stuff164k",
    "cocostuff164k": "coco_stuff164k",
    "coco_stuff_164k": "coco_stuff164k",
    "synthetic": "folder",
}


def dataset_class(name: str) -> type[SegDataset]:
    """The dataset class registered under ``name`` (case, ``-`` and ``_`` are forgiven)."""
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise RRSegError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[key]


def build_dataset(
    name: str,
    root: str | os.PathLike,
    split: str = "train",
    transforms: Callable[..., Any] | None = None,
    config_key: str = "",
    **options: Any,
) -> SegDataset:
    """A dataset by name: ``ade20k``, ``ade20k_full``, ``coco_stuff164k``, ``cityscapes``, ``folder`` (root: dir
    or YAML). ``config_key`` ("data.train"): the config section it comes from, which a dataset that takes it
    (``folder``) names in its messages."""
    cls = dataset_class(name)
    if config_key and "config_key" in inspect.signature(cls.__init__).parameters:
        options = {"config_key": config_key, **options}
    try:
        return cls(root, split=split, transforms=transforms, **options)
    except TypeError as e:
        raise RRSegError(f"dataset {name!r}: bad option ({e})") from None


def detect_layout(path: str | os.PathLike) -> tuple[str, Path]:
    """(dataset name, root) of the dataset at ``path``: a folder dataset (dataset.yaml), a known benchmark
    layout, or a folder dataset without dataset.yaml (an ``images/`` folder, usually beside ``masks/``,
    ``labels/`` or ``annotations/``; see :mod:`rrseg.data.folder`). Known layouts are tried first."""
    p = Path(path)
    if p.is_file():
        if p.suffix.lower() in (".yaml", ".yml"):
            return "folder", p
        raise RRSegError(f"{p}: expected a dataset folder or a dataset YAML file")
    if not p.is_dir():
        raise RRSegError(f"{p}: dataset folder not found (resolved to {p.absolute()})"
                         if not p.is_absolute() else f"{p}: dataset folder not found")
    if (p / SPEC_NAME).is_file():
        return "folder", p
    full = ADE20KFullDataset.resolve_root(p)
    if any((full / ADE20KFullDataset.IMAGES_DIR / f).is_dir() for f in ADE20KFullDataset.SPLITS.values()):
        return "ade20k_full", full
    ade = ADE20KDataset.resolve_root(p)
    if (ade / "images" / "training").is_dir() or (ade / "images" / "validation").is_dir():
        return "ade20k", ade
    if (p / "images" / "train2017").is_dir() or (p / "images" / "val2017").is_dir():
        return "coco_stuff164k", p
    if (p / "leftImg8bit").is_dir():
        return "cityscapes", p
    if (p / IMAGES_DIR).is_dir():
        return "folder", p
    beside = f"{'/, '.join(LABEL_DIRS[:-1])}/ or {LABEL_DIRS[-1]}/"
    raise RRSegError(
        f"{p}: not a known dataset layout (no {SPEC_NAME}, no {IMAGES_DIR}/ folder (beside {beside}), "
        "no ADEChallengeData2016 images/training, "
        "ADE20K_2021_17_01 images_detectron2/training, COCO images/train2017 or Cityscapes leftImg8bit); "
        "pass --dataset NAME"
    )


def dataset_at(path: str | os.PathLike, name: str | None = None, split: str = "train") -> SegDataset | None:
    """The ``split`` of the dataset at ``path`` (type ``name``, or recognised by :func:`detect_layout`), or None
    when ``path`` is not a dataset and no ``name`` is given (e.g. a plain folder of label files). Used by the
    commands that also take a folder of labels (``rrseg stats``, ``rrseg score``), so that a dataset brings its
    own classes, ignore index and label files."""
    if name:
        dataset_class(name)  # unknown name -> clear error
        kind, root = name, Path(path)
    else:
        try:
            kind, root = detect_layout(path)
        except RRSegError:
            return None
    return build_dataset(kind, root, split)

"""``build_dataset(name, root, split)`` and ``detect_layout(path)``: building and recognising the registered datasets
(:mod:`rrseg.data.registry`; every built-in one is registered when this module is imported)."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rrseg.data.base import SegDataset
from rrseg.data.folder import IMAGES_DIR, LABEL_DIRS, SPEC_NAME
from rrseg.data.registry import DATASETS, detectors, load_builtins, register_dataset, resolve_name
from rrseg.errors import RRSegError, own_name_hint

__all__ = ["DATASETS", "build_dataset", "dataset_at", "dataset_class", "detect_layout", "register_dataset"]

load_builtins()  # every built-in dataset registered, in DATASETS order, whatever was imported before


def dataset_class(name: str) -> type[SegDataset]:
    """The dataset class registered under ``name`` or an alias of it (case, ``-`` and ``_`` are forgiven)."""
    key = resolve_name(name)
    if key is None:
        raise RRSegError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}; {own_name_hint('dataset')}")
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
    or YAML), or another registered one (:func:`register_dataset`). ``config_key`` ("data.train"): the config
    section it comes from, which a dataset that takes it (``folder``) names in its messages."""
    cls = dataset_class(name)
    if config_key and "config_key" in inspect.signature(cls.__init__).parameters:
        options = {"config_key": config_key, **options}
    try:
        return cls(root, split=split, transforms=transforms, **options)
    except TypeError as e:  # named by the dataset's class, not the base class whose __init__ it inherits
        message = str(e).replace(f"{cls.__init__.__qualname__}()", f"{cls.__name__}.__init__()")
        raise RRSegError(f"dataset {name!r}: bad option ({message})") from None


def detect_layout(path: str | os.PathLike) -> tuple[str, Path]:
    """(dataset name, root) of the dataset at ``path``: a folder dataset (dataset.yaml), a registered dataset
    whose detector recognises the folder (``register_dataset(..., detect=...)``: the benchmark layouts), or a
    folder dataset without dataset.yaml (an ``images/`` folder, usually beside ``masks/``, ``labels/`` or
    ``annotations/``; see :mod:`rrseg.data.folder`), in this order."""
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
    tried = detectors()
    for name, detect in tried:
        root = detect(p)
        if root is not None:
            return name, Path(root)
    if (p / IMAGES_DIR).is_dir():
        return "folder", p
    beside = f"{'/, '.join(LABEL_DIRS[:-1])}/ or {LABEL_DIRS[-1]}/"
    with_detector = {name for name, _ in tried}
    layouts = [getattr(cls, "LAYOUT", "") or f"{name} layout"
               for name, cls in DATASETS.items() if name in with_detector]
    known = ", ".join(layouts[:-1]) + f" or {layouts[-1]}" if len(layouts) > 1 else "".join(layouts)
    raise RRSegError(
        f"{p}: not a known dataset layout (no {SPEC_NAME}, no {IMAGES_DIR}/ folder (beside {beside})"
        + (f", no {known}" if known else "") + "); pass --dataset NAME"
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

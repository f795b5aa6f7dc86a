"""Datasets, transforms, label reading, class statistics and the synthetic long-tailed dataset.

A dataset is one file: a :class:`LayoutDataset` subclass declaring its folders and classes, registered with
:func:`register_dataset` (see :mod:`rrseg.data.registry`); :func:`build_dataset` and :func:`detect_layout` then
know it.

Names are imported lazily (PEP 562) so that light modules such as ``rrseg.data.labels`` or
``rrseg.data.stats`` do not pull in torchvision when imported on their own (e.g. in worker processes).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "ADE20KDataset": "ade20k",
    "ADE20KFullDataset": "ade20k_full",
    "COCOStuff164kDataset": "coco_stuff",
    "CityscapesDataset": "cityscapes",
    "FolderDataset": "folder",
    "load_folder_spec": "folder",
    "inspect_folder": "folder",
    "FolderSummary": "folder",
    "SegDataset": "base",
    "LayoutDataset": "base",
    "Sample": "base",
    "read_image": "base",
    "scan_pairs": "base",
    "seg_collate": "base",
    "DATASETS": "builder",
    "build_dataset": "builder",
    "dataset_class": "builder",
    "detect_layout": "builder",
    "register_dataset": "registry",
    "DataError": "errors",
    "PROBLEM_KINDS": "errors",
    "IMAGENET_MEAN": "transforms",
    "IMAGENET_STD": "transforms",
    "train_transforms": "transforms",
    "test_transforms": "transforms",
    "check_dataset": "check",
    "make_synthetic": "synthetic",
}
__all__ = [
    "DATASETS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PROBLEM_KINDS",
    "ADE20KDataset",
    "ADE20KFullDataset",
    "COCOStuff164kDataset",
    "CityscapesDataset",
    "DataError",
    "FolderDataset",
    "FolderSummary",
    "LayoutDataset",
    "Sample",
    "SegDataset",
    "build_dataset",
    "check_dataset",
    "dataset_class",
    "detect_layout",
    "inspect_folder",
    "load_folder_spec",
    "make_synthetic",
    "read_image",
    "register_dataset",
    "scan_pairs",
    "seg_collate",
    "test_transforms",
    "train_transforms",
]

if TYPE_CHECKING:
    from rrseg.data.ade20k import ADE20KDataset
    from rrseg.data.ade20k_full import ADE20KFullDataset
    from rrseg.data.base import LayoutDataset, Sample, SegDataset, read_image, scan_pairs, seg_collate
    from rrseg.data.builder import DATASETS, build_dataset, dataset_class, detect_layout
    from rrseg.data.check import check_dataset
    from rrseg.data.cityscapes import CityscapesDataset
    from rrseg.data.coco_stuff import COCOStuff164kDataset
    from rrseg.data.errors import PROBLEM_KINDS, DataError
    from rrseg.data.folder import FolderDataset, FolderSummary, inspect_folder, load_folder_spec
    from rrseg.data.registry import register_dataset
    from rrseg.data.synthetic import make_synthetic
    from rrseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, test_transforms, train_transforms


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rrseg.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"rrseg.data.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

"""The benchmarks' class names and palettes, under the names they had here before each moved into its dataset's
module (a dataset is one file: :mod:`rrseg.data.ade20k`, :mod:`rrseg.data.coco_stuff`, ...). Kept for imports
of these names; a new dataset declares its classes in its own file and is not added here."""

from __future__ import annotations

from rrseg.data.ade20k import ADE20K_CLASSES, ADE20K_PALETTE
from rrseg.data.ade20k_full import ade20k_full_classes
from rrseg.data.base import default_palette
from rrseg.data.cityscapes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from rrseg.data.coco_stuff import COCO_STUFF_CLASSES, COCO_STUFF_PALETTE

__all__ = [
    "ADE20K_CLASSES",
    "ADE20K_PALETTE",
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_PALETTE",
    "COCO_STUFF_CLASSES",
    "COCO_STUFF_PALETTE",
    "ade20k_full_classes",
    "default_palette",
]

"""Cityscapes (fine annotations): 19 classes, ``*_gtFine_labelTrainIds.png`` with 255 = ignore."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from rrseg.data.base import LayoutDataset
from rrseg.data.registry import register_dataset

__all__ = ["CITYSCAPES_CLASSES", "CITYSCAPES_PALETTE", "CityscapesDataset"]

# the 19 training ids
CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)

CITYSCAPES_PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)


@register_dataset("cityscapes", detect=True)
class CityscapesDataset(LayoutDataset):
    """Images ``ROOT/leftImg8bit/SPLIT/CITY/*_leftImg8bit.png``, labels ``ROOT/gtFine/SPLIT/CITY/*``.

    Labels are the ``*_gtFine_labelTrainIds.png`` files; ``rrseg convert cityscapes`` makes them from the
    ``*_gtFine_labelIds.png`` files. Splits: ``train``, ``val``, ``test``. mmsegmentation trains it with base
    scale (2048, 1024) and 512x1024 crops (``data.scale``, ``data.crop_size``; no preset ships for it).
    """

    SPLITS: ClassVar[dict[str, str]] = {"train": "train", "val": "val", "test": "test"}
    IMAGES_DIR = "leftImg8bit"
    LABELS_DIR = "gtFine"
    IMAGE_SUFFIX = "_leftImg8bit.png"
    LABEL_SUFFIX = "_gtFine_labelTrainIds.png"
    CLASSES = CITYSCAPES_CLASSES
    PALETTE = CITYSCAPES_PALETTE
    LAYOUT = "Cityscapes leftImg8bit"

    @classmethod
    def detect(cls, path: Path) -> Path | None:
        # leftImg8bit alone names Cityscapes: a copy without split folders is recognised, and check-data says so
        return path if (path / cls.IMAGES_DIR).is_dir() else None

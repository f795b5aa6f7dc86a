"""Cityscapes (fine annotations): 19 classes, ``*_gtFine_labelTrainIds.png`` with 255 = ignore."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from rrseg.data.base import SegDataset, scan_pairs
from rrseg.data.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE

__all__ = ["CityscapesDataset"]


class CityscapesDataset(SegDataset):
    """Images ``ROOT/leftImg8bit/SPLIT/CITY/*_leftImg8bit.png``, labels ``ROOT/gtFine/SPLIT/CITY/*``.

    Labels are the ``*_gtFine_labelTrainIds.png`` files; ``rrseg convert cityscapes`` makes them from the
    ``*_gtFine_labelIds.png`` files. Splits: ``train``, ``val``, ``test``. Training transforms: base scale
    (2048, 1024), crop 512x1024 (``DEFAULTS``).
    """

    SPLITS = ("train", "val", "test")
    DEFAULTS: ClassVar[dict[str, tuple[int, int]]] = {"scale": (2048, 1024), "crop_size": (512, 1024)}
    IMAGE_SUFFIX = "_leftImg8bit.png"
    LABEL_SUFFIX = "_gtFine_labelTrainIds.png"

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transforms: Callable[..., Any] | None = None,
        strict: bool = True,
    ) -> None:
        root = Path(root)
        self.scan = scan_pairs(
            root / "leftImg8bit" / split,
            root / "gtFine" / split,
            (self.IMAGE_SUFFIX,),
            self.LABEL_SUFFIX,
            split,
        )
        if strict:
            self.scan.raise_first()
        super().__init__(
            self.scan.samples, CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, ignore_index=255,
            transforms=transforms, root=root, split=split, name="cityscapes",
        )

    @classmethod
    def available_splits(cls, root: str | os.PathLike) -> list[str]:
        return [s for s in cls.SPLITS if (Path(root) / "leftImg8bit" / s).is_dir()]

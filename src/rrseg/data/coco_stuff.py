"""COCO-Stuff-164k: 171 classes (80 things, 91 stuff), ``*_labelTrainIds.png`` with 0..170, 255 = ignore."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from rrseg.data.base import SegDataset, scan_pairs
from rrseg.data.classes import COCO_STUFF_CLASSES, COCO_STUFF_PALETTE

__all__ = ["COCOStuff164kDataset"]


class COCOStuff164kDataset(SegDataset):
    """``ROOT/images/{train2017,val2017}/*.jpg`` and ``ROOT/annotations/{split}/*_labelTrainIds.png``.

    Make the label files from the raw stuffthingmaps with ``rrseg convert coco-stuff``. ``split`` is
    ``train``/``val`` or the folder name. Training transforms: base scale (2048, 512), crop 512x512.
    """

    SPLITS: ClassVar[dict[str, str]] = {"train": "train2017", "val": "val2017"}
    DEFAULTS: ClassVar[dict[str, tuple[int, int]]] = {"scale": (2048, 512), "crop_size": (512, 512)}
    LABEL_SUFFIX = "_labelTrainIds.png"

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transforms: Callable[..., Any] | None = None,
        strict: bool = True,
    ) -> None:
        root = Path(root)
        folder = self.SPLITS.get(split, split)
        self.scan = scan_pairs(
            root / "images" / folder, root / "annotations" / folder, (".jpg",), self.LABEL_SUFFIX, split
        )
        if strict:
            self.scan.raise_first()
        super().__init__(
            self.scan.samples, COCO_STUFF_CLASSES, COCO_STUFF_PALETTE, ignore_index=255,
            transforms=transforms, root=root, split=split, name="coco_stuff164k",
        )

    @classmethod
    def available_splits(cls, root: str | os.PathLike) -> list[str]:
        return [s for s, folder in cls.SPLITS.items() if (Path(root) / "images" / folder).is_dir()]

"""ADE20K-Full: 847 classes, uint16 TIFF labels, 65535 = not labelled (the long-tail benchmark beyond ADE20K-150).

The layout is the one MaskFormer's ``datasets/prepare_ade20k_full_sem_seg.py`` writes from the ADE20K 2021
release (Mask2Former and the long-tail papers use the same files)::

    ADE20K_2021_17_01/images_detectron2/{training,validation}/*.jpg
    ADE20K_2021_17_01/annotations_detectron2/{training,validation}/*.tif   (uint16, mode I;16)

Label values are train ids 0..846 (the order of ``ADE20K_SEM_SEG_FULL_CATEGORIES``; class names in
:func:`rrseg.data.classes.ade20k_full_classes`) and 65535 where no class is labelled.

The ignore index is 65535, the value in the file itself: no id is remapped, so ids above 255 (and 255,
a real class here) stay what they are, and ``rrseg stats`` / ``rrseg score`` on the raw TIFFs, the
dataset and training all agree on the value. It lies outside 0..846, fits the files' uint16, and is not
negative (a negative value cannot be a uint16 pixel and breaks ``bincount``-style counting). Labels are
loaded as int64, so transforms pad with 65535 and the losses, RR and the confusion matrix drop it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rrseg.data.base import SegDataset, scan_pairs
from rrseg.data.classes import ade20k_full_classes

__all__ = ["ADE20K_FULL_IGNORE_INDEX", "ADE20KFullDataset"]

ADE20K_FULL_IGNORE_INDEX = 65535


class ADE20KFullDataset(SegDataset):
    """``ROOT/{images_detectron2,annotations_detectron2}/{training,validation}``: ``*.jpg`` images and
    ``*.tif`` uint16 labels of the same stem.

    ``root`` may be ``ADE20K_2021_17_01`` itself or the folder that holds it. ``split`` is ``train`` / ``val``
    or the folder name. A label that is not uint16 is an error (``label_dtype``), as is a value above 846
    other than 65535 (``label_range``). Training transforms as ADE20K: base scale (2048, 512), crop 512x512.
    """

    SPLITS: ClassVar[dict[str, str]] = {"train": "training", "val": "validation"}
    DEFAULTS: ClassVar[dict[str, tuple[int, int]]] = {"scale": (2048, 512), "crop_size": (512, 512)}
    ROOT_NAME: ClassVar[str] = "ADE20K_2021_17_01"
    IMAGES_DIR: ClassVar[str] = "images_detectron2"
    LABELS_DIR: ClassVar[str] = "annotations_detectron2"
    LABEL_DTYPE: ClassVar[np.dtype | None] = np.dtype(np.uint16)
    LABEL_DTYPE_HINT: ClassVar[str] = (
        "ADE20K-Full labels are uint16 TIFFs (mode I;16, as prepare_ade20k_full_sem_seg.py writes them)"
    )

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transforms: Callable[..., Any] | None = None,
        strict: bool = True,
    ) -> None:
        root = self.resolve_root(root)
        folder = self.SPLITS.get(split, split)
        self.scan = scan_pairs(
            root / self.IMAGES_DIR / folder, root / self.LABELS_DIR / folder, (".jpg",), ".tif", split
        )
        if strict:
            self.scan.raise_first()
        super().__init__(
            self.scan.samples, ade20k_full_classes(), None, ignore_index=ADE20K_FULL_IGNORE_INDEX,
            transforms=transforms, root=root, split=split, name="ade20k_full",
        )

    @classmethod
    def resolve_root(cls, root: str | os.PathLike) -> Path:
        root = Path(root)
        return root / cls.ROOT_NAME if (root / cls.ROOT_NAME).is_dir() else root

    @classmethod
    def available_splits(cls, root: str | os.PathLike) -> list[str]:
        root = cls.resolve_root(root)
        return [s for s, folder in cls.SPLITS.items() if (root / cls.IMAGES_DIR / folder).is_dir()]
